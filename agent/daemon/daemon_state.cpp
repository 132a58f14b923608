#include "agent/daemon/daemon_state.hpp"

namespace tether {

std::string_view TriggerName(Trigger trigger) {
  switch (trigger) {
    case Trigger::kStart:
      return "start";
    case Trigger::kPoll:
      return "poll";
    case Trigger::kManual:
      return "manual";
    case Trigger::kDrift:
      return "drift";
    case Trigger::kPlan:
      return "plan";
    case Trigger::kWebhook:
      return "webhook";
  }
  return "manual";
}

std::string_view StateName(DaemonState state) {
  switch (state) {
    case DaemonState::kStarting:
      return "starting";
    case DaemonState::kApplying:
      return "applying";
    case DaemonState::kPlanning:
      return "planning";
    case DaemonState::kSynced:
      return "synced";
    case DaemonState::kDrifted:
      return "drifted";
    case DaemonState::kOffline:
      return "offline";
    case DaemonState::kSuspended:
      return "suspended";
    case DaemonState::kRefused:
      return "refused";
    case DaemonState::kRolledBack:
      return "rolled-back";
    case DaemonState::kFailed:
      return "failed";
  }
  return "failed";
}

DaemonState StateAfterCycle(const CycleSummary& summary, int exit_code, bool suspended) {
  if (exit_code != 0 || IsFailure(summary.outcome)) {
    if (summary.outcome == Outcome::kRefused) return DaemonState::kRefused;
    if (summary.outcome == Outcome::kRolledBack) return DaemonState::kRolledBack;
    return DaemonState::kFailed;
  }
  if (suspended) return DaemonState::kSuspended;
  if (summary.offline) return DaemonState::kOffline;
  for (const auto& resource : summary.resources) {
    if (resource.action == "drifted") return DaemonState::kDrifted;
  }
  return DaemonState::kSynced;
}

DaemonState StateAfterDriftRepair(std::optional<DaemonState> before, DaemonState after) {
  if (after == DaemonState::kSynced && before &&
      (*before == DaemonState::kRefused || *before == DaemonState::kOffline ||
       *before == DaemonState::kRolledBack || *before == DaemonState::kFailed)) {
    return *before;
  }
  return after;
}

}  // namespace tether
