// The KindHandler of systemd units and services: one handler for both kinds, so that the
// unit files and the services of a plan arrive in one Apply batch (one daemon reload for
// all of them, before any service job).
//
// Units ([[unit]]): the file at /etc/systemd/system/NAME (or a drop-in NAME.d/X.conf,
// its directory made when missing), written atomically, 0644 root:root. An update is
// planned with a unified diff; the file it replaces is kept as a hard link until the
// commit. Prune removes what tether created and gives back a unit file it took over.
//
// Services ([[service]]): enabled or disabled, running or stopped (a service masked by
// hand is unmasked when it must run or be enabled). Restarted (reloaded with
// `reload = true`) when its unit file, a drop-in of it, or a path of its restart_on
// changes in the same plan (PlanContext::changed). A service stopped, disabled or masked
// by hand is planned back to its declared state. Prune leaves a service as it is, unless
// tether started or enabled it from nothing (its inventory entry is `created`): it is then
// stopped and disabled again.
//
// Apply writes every unit file of its batch first, enables and disables, reloads systemd
// once, then runs the service jobs in order, each waited for and its result checked.
// Rollback (Undo per step, then Settle once) puts the unit files back, stops what was not
// running, reloads once, and restarts what ran before on the old configuration.
//
// Threading: one caller at a time (the engine's).
#pragma once

#include <chrono>
#include <memory>

#include "agent/engine/engine.hpp"
#include "agent/kinds/paths/path_plan.hpp"
#include "common/filesystem.hpp"
#include "common/systemd_bus.hpp"

namespace tether {

struct ServiceHandlerOptions {
  // How long one systemd job (start, stop, restart, reload) may take; systemd's own
  // default start timeout is 90 s.
  std::chrono::milliseconds job_timeout = std::chrono::seconds(120);
  // How long a daemon reload or a unit file operation may take.
  std::chrono::milliseconds call_timeout = std::chrono::seconds(60);
  // The health gate after an apply that started or restarted services: each must be seen
  // in its declared state, the same process run throughout, for this long (a service
  // that crashes a moment after it started fails the gate).
  std::chrono::milliseconds stable_for = std::chrono::seconds(2);
  // Pause between two looks at the services' states in the health gate.
  std::chrono::milliseconds poll_interval = std::chrono::milliseconds(100);
};

// `fs` holds the unit files (rooted like the other managed paths); `bus` is the systemd
// those files are for. Both must outlive the handler.
[[nodiscard]] std::unique_ptr<KindHandler> MakeServiceHandler(Filesystem& fs, SystemdBus& bus,
                                                              ServiceHandlerOptions options = {});

}  // namespace tether
