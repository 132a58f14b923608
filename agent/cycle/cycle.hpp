// One cycle of the agent as a library call: recover, fetch, verify, render, plan, apply,
// check, and a CycleReport of what happened. Everything it acts on comes in through Host,
// which the composition root builds (agent/tetherd/host.hpp): the cycle names no concrete
// filesystem, package manager, systemd bus or kind.
//
// Threading: one cycle at a time per state dir (the caller holds its lock).
#pragma once

#include <functional>
#include <memory>
#include <optional>
#include <vector>

#include "agent/cycle/cycle_report.hpp"
#include "agent/engine/engine.hpp"
#include "agent/git/git_source.hpp"
#include "agent/state/state_store.hpp"
#include "common/clock.hpp"
#include "common/error.hpp"

namespace tether {

// The ports of a cycle.
struct Host {
  explicit Host(StateStore& state_store) : state(state_store) {}

  // The state dir (inventory, journal, quarantine, audit record), its lock held.
  StateStore& state;
  // Opens the fleet repo's source (its mirror, credentials and worker). Called once the
  // interrupted apply, if any, was recovered: that apply may have been changing the very
  // files the source reads (a token, a key, a CA). `will_poll`: the cycle asks the source
  // for its head (not a drift repair, nor a rollback).
  std::function<Result<std::unique_ptr<GitSource>>(bool will_poll)> open_source;
  // The kinds' handlers, in apply order (packages, paths, units and services, checks):
  // what is not handled here is skipped.
  std::vector<KindHandler*> kinds;
  // False under --root: the host's packages, units, services and checks are not managed.
  bool whole_host = true;
  // Why units and services cannot be managed (systemd unreachable); a profile that
  // declares any then fails.
  std::optional<Error> no_systemd;
  const Clock* clock = &SystemClock();
};

// Runs one cycle on `host` with `options` (state_dir and cache_dir absolute). A cycle that
// ran is a report, whatever its outcome (failures, refusals and rollbacks are data); an
// Error means none could run (recovery of an interrupted apply failed, the state or the
// trust policy cannot be read, the source cannot be set up).
// `planned`, when set, is called with the report so far once the plan is made, before
// anything is applied (tetherd --once prints the plan then: an apply and its health checks
// may take minutes).
[[nodiscard]] Result<CycleReport> RunCycle(
    Host& host, const CycleOptions& options,
    const std::function<void(const CycleReport&)>& planned = {});

}  // namespace tether
