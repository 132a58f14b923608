// The daemon's state machine in types: what started a cycle, and the state the daemon
// shows (tetherctl status, events, heartbeats, sd_notify STATUS=). Pure functions.
#pragma once

#include <optional>
#include <string_view>

#include "agent/cycle/cycle_report.hpp"

namespace tether {

// What started a cycle.
enum class Trigger {
  kStart,    // the daemon started
  kPoll,     // the poll interval
  kManual,   // tetherctl sync, rollback or resume
  kDrift,    // a managed path or service changed
  kPlan,     // tetherctl plan (a dry run)
  kWebhook,  // a push webhook (it wakes the poll)
};

// "start", "poll", "manual", "drift", "plan", "webhook".
[[nodiscard]] std::string_view TriggerName(Trigger trigger);

enum class DaemonState {
  kStarting,    // no cycle has ended yet
  kApplying,    // a cycle is running
  kPlanning,    // a `plan` is running
  kSynced,      // the host is as the commit says
  kDrifted,     // it differs where drift = "report" leaves it so
  kOffline,     // the source could not be reached; the applied commit was enforced
  kSuspended,   // a dry run while suspended
  kRefused,     // the head was refused (untrusted signature, rewind, invalid profile); the
                // last applied commit is still enforced
  kRolledBack,  // a change or the health gate failed; the apply was undone
  kFailed,      // anything else that went wrong
};

// "starting", "applying", "planning", "synced", "drifted", "offline", "suspended",
// "refused", "rolled-back", "failed".
[[nodiscard]] std::string_view StateName(DaemonState state);

// The state after a cycle. `exit_code` is the cycle's (0: in sync or applied).
[[nodiscard]] DaemonState StateAfterCycle(const CycleSummary& summary, int exit_code,
                                          bool suspended);

// The state after a drift repair, which re-applies the applied commit without asking the
// Git source: what the last cycle that did ask left (`before`: the head refused, the
// source offline, the head's apply rolled back or failed and quarantined) still stands
// when the repair leaves the host in sync (`after`: synced). Any other `after` wins.
// `before` is empty before any cycle asked the source.
[[nodiscard]] DaemonState StateAfterDriftRepair(std::optional<DaemonState> before,
                                                DaemonState after);

}  // namespace tether
