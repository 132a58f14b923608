// The services kind's planner, pure: from a service's declared spec and the state systemd
// reports, what must change (PlanService), and what Apply does (DecideWork, PruneWork).
// Table-tested in the unit suite; the handler (service_handler.hpp) does the I/O.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "agent/desired/desired_state.hpp"
#include "agent/engine/action.hpp"
#include "common/systemd_bus.hpp"

namespace tether {

// How a planned restart or reload shows in Action::changes (and is found again by Apply).
inline constexpr std::string_view kRestartPrefix = "restart: ";
inline constexpr std::string_view kReloadPrefix = "reload: ";

// Unit states, as systemctl's is-active and is-enabled name them.
[[nodiscard]] bool IsActive(const std::string& active_state);
[[nodiscard]] bool IsStopped(const std::string& active_state);
// Running or on its way there: what a rollback must bring back.
[[nodiscard]] bool WasRunning(const std::string& active_state);
[[nodiscard]] bool IsMasked(const std::string& unit_file_state);
// Nothing to enable: enabled already, or a unit that cannot be enabled (no [Install]
// section, an alias, generated, transient, or enabled through another unit's Also=).
[[nodiscard]] bool CountsAsEnabled(const std::string& unit_file_state);

// The resource ids whose change means `spec` must restart, with how each is shown: its unit
// files ("unit:app.service"), their drop-ins (the prefix "unit:app.service.d/"), and its
// restart_on paths as file, symlink or directory.
[[nodiscard]] std::vector<std::pair<std::string, std::string>> Triggers(const ServiceSpec& spec);
// Whether the resource `id` is `trigger` (or below it, for a prefix ending in '/').
[[nodiscard]] bool Triggered(const std::string& trigger, std::string_view id);

// What changed of `spec`'s triggers (its unit files and their drop-ins, an instance's
// template, its restart_on paths) among the resource ids `ids` of a plan:
// "unit app.service, /etc/app.conf"; "" when none did.
[[nodiscard]] std::string WhatChanged(const ServiceSpec& spec,
                                      const std::vector<std::string_view>& ids);

// The plan of one service: unmask, enable or disable, start or stop, restart or reload
// when a trigger changed in the same plan (`changed`); in sync when none of it is needed.
[[nodiscard]] Action PlanService(const std::string& id, const ServiceSpec& spec,
                                 const UnitState& state,
                                 const std::vector<std::string_view>& changed);

// What Apply does to one service, decided from the desired spec (null for a prune) and
// the state Begin observed.
struct ServiceWork {
  bool unmask = false;
  bool enable = false;
  bool disable = false;
  bool mask = false;
  bool mask_runtime = false;
  std::optional<UnitJob> job;
};

// The planned restart or reload, if any, in an action's changes.
[[nodiscard]] std::optional<UnitJob> PlannedRestart(const Action& action);

// What Apply does to a declared service whose plan was `planned`, in the state observed
// just before (Begin).
[[nodiscard]] ServiceWork DecideWork(const ServiceSpec& spec, const Action& planned,
                                     const std::string& active_state,
                                     const std::string& unit_file_state);

// What pruning a service tether started from nothing does: stop it, disable it when
// tether enabled it, mask it again when it was masked (`before`: its unit file state
// before tether took it over).
[[nodiscard]] ServiceWork PruneWork(const std::string& before, const std::string& active_state,
                                    const std::string& unit_file_state);

}  // namespace tether
