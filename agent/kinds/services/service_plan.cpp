#include "agent/kinds/services/service_plan.hpp"

#include <algorithm>
#include <set>
#include <utility>

namespace tether {

namespace {

bool EndsWith(std::string_view text, std::string_view suffix) {
  return text.size() >= suffix.size() && text.substr(text.size() - suffix.size()) == suffix;
}

bool StartsWith(std::string_view text, std::string_view prefix) {
  return text.substr(0, prefix.size()) == prefix;
}

// The unit files a service runs from: its own, and its template's for an instance
// ("app@x.service" runs from "app@.service").
std::vector<std::string> UnitFilesOf(const std::string& service) {
  std::vector<std::string> names = {service};
  const auto at = service.find('@');
  const auto dot = service.rfind('.');
  if (at != std::string::npos && dot != std::string::npos && dot > at + 1) {
    names.push_back(service.substr(0, at + 1) + service.substr(dot));
  }
  return names;
}

}  // namespace

bool IsActive(const std::string& active_state) {
  return active_state == "active" || active_state == "reloading";
}
bool IsStopped(const std::string& active_state) {
  return active_state == "inactive" || active_state == "failed" || active_state.empty();
}
bool WasRunning(const std::string& active_state) {
  return IsActive(active_state) || active_state == "activating";
}
bool IsMasked(const std::string& unit_file_state) {
  return unit_file_state == "masked" || unit_file_state == "masked-runtime";
}
// Nothing to enable: enabled already, or a unit that cannot be enabled (no [Install]
// section, an alias, generated, transient, or enabled through another unit's Also=).
bool CountsAsEnabled(const std::string& unit_file_state) {
  static const std::set<std::string> kStates = {"enabled",  "enabled-runtime", "static",   "alias",
                                                "indirect", "generated",       "transient"};
  return kStates.count(unit_file_state) > 0;
}

std::vector<std::pair<std::string, std::string>> Triggers(const ServiceSpec& spec) {
  std::vector<std::pair<std::string, std::string>> triggers;
  for (const auto& name : UnitFilesOf(spec.name)) {
    triggers.emplace_back("unit:" + name, "unit " + name);
    triggers.emplace_back("unit:" + name + ".d/", "a drop-in of " + name);  // a prefix
  }
  for (const auto& path : spec.restart_on) {
    for (const char* kind : {"file:", "symlink:", "directory:"}) {
      triggers.emplace_back(kind + path, path);
    }
  }
  return triggers;
}

bool Triggered(const std::string& trigger, std::string_view id) {
  return EndsWith(trigger, "/") ? StartsWith(id, trigger) : id == trigger;
}

// What changed of `spec`'s triggers among `ids`: "unit app.service, /etc/app.conf".
std::string WhatChanged(const ServiceSpec& spec, const std::vector<std::string_view>& ids) {
  std::vector<std::string> seen;
  for (const auto& pair : Triggers(spec)) {
    const std::string& trigger = pair.first;  // not a structured binding: clang 14 cannot
    const std::string& label = pair.second;   // capture one in the lambda below
    const bool hit = std::any_of(ids.begin(), ids.end(),
                                 [&](std::string_view id) { return Triggered(trigger, id); });
    if (hit && std::find(seen.begin(), seen.end(), label) == seen.end()) seen.push_back(label);
  }
  std::string text;
  for (std::size_t i = 0; i < seen.size(); ++i) text += (i == 0 ? "" : ", ") + seen[i];
  return text;
}

// The planned restart or reload, if any, in an action's changes.
std::optional<UnitJob> PlannedRestart(const Action& action) {
  for (const auto& change : action.changes) {
    if (StartsWith(change, kRestartPrefix)) return UnitJob::kRestart;
    if (StartsWith(change, kReloadPrefix)) return UnitJob::kReload;
  }
  return std::nullopt;
}

Action PlanService(const std::string& id, const ServiceSpec& spec, const UnitState& state,
                   const std::vector<std::string_view>& changed) {
  Action action;
  action.id = id;
  const std::string& file_state = state.unit_file_state;
  if ((IsMasked(file_state) || state.load_state == "masked") && (spec.running || spec.enabled)) {
    action.changes.push_back("unmask");
  }
  if (spec.enabled && !CountsAsEnabled(file_state)) {
    action.changes.push_back(file_state.empty() ? "enable" : "enable (now " + file_state + ")");
  }
  if (!spec.enabled && file_state == "enabled") action.changes.push_back("disable");
  if (spec.running && !IsActive(state.active_state)) {
    action.changes.push_back("start (now " + state.active_state + ")");
  } else if (spec.running) {
    const std::string why = WhatChanged(spec, changed);
    if (!why.empty()) {
      action.changes.push_back(std::string(spec.reload ? kReloadPrefix : kRestartPrefix) + why +
                               " changed");
    }
  } else if (!IsStopped(state.active_state)) {
    action.changes.push_back("stop (now " + state.active_state + ")");
  }
  action.type = action.changes.empty() ? ActionType::kInSync : ActionType::kUpdate;
  return action;
}

ServiceWork DecideWork(const ServiceSpec& spec, const Action& planned,
                       const std::string& active_state, const std::string& file_state) {
  ServiceWork work;
  work.unmask = IsMasked(file_state) && (spec.running || spec.enabled);
  work.enable = spec.enabled && !CountsAsEnabled(file_state);
  work.disable = !spec.enabled && file_state == "enabled";
  if (spec.running) {
    if (!IsActive(active_state)) {
      work.job = UnitJob::kStart;
    } else {
      work.job = PlannedRestart(planned);
    }
  } else if (!IsStopped(active_state)) {
    work.job = UnitJob::kStop;
  }
  return work;
}

ServiceWork PruneWork(const std::string& before, const std::string& active_state,
                      const std::string& unit_file_state) {
  ServiceWork work;
  if (!IsStopped(active_state)) work.job = UnitJob::kStop;
  work.disable = unit_file_state == "enabled" && before != "enabled";
  work.mask = IsMasked(before) && !IsMasked(unit_file_state);
  work.mask_runtime = before == "masked-runtime";
  return work;
}

}  // namespace tether
