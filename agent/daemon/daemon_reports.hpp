// What the daemon reports to report.url, and when: after every apply (applied, failed,
// rolled back), every drift repaired or found (drift = "report"), every refused commit
// (once per commit and reason, not at every poll), and a heartbeat. Delivery is the
// Reporter's (agent/report/reporter.hpp): a durable outbox, retries with backoff, in order.
//
// Threading: used from the daemon's loop only; the Reporter delivers on its own thread.
#pragma once

#include <chrono>
#include <memory>
#include <set>
#include <string>

#include <nlohmann/json.hpp>

#include "agent/config/agent_config.hpp"
#include "agent/cycle.hpp"
#include "agent/report/report.hpp"
#include "agent/report/reporter.hpp"

namespace tether {

// The daemon's state after a cycle, as `tetherctl status`, events and heartbeats show it:
//   synced       the host is as the commit says
//   drifted      it differs where drift = "report" leaves it so
//   offline      the source could not be reached; the applied commit was enforced
//   suspended    a dry run while suspended
//   refused      the head was refused (untrusted signature, rewind, invalid profile); the
//                last applied commit is still enforced
//   rolled-back  a change or the health gate failed; the apply was undone
//   failed       anything else that went wrong
// `exit_code` is the cycle's (0: in sync or applied).
[[nodiscard]] std::string StateAfterCycle(const CycleSummary& summary, int exit_code,
                                          bool suspended);

// The state after a drift repair, which re-applies the applied commit without asking the
// Git source: what the last cycle that did ask left (`before`: the head refused, the
// source offline, the head's apply rolled back or failed and quarantined) still stands
// when the repair leaves the host in sync (`after`: synced). Any other `after` wins.
[[nodiscard]] std::string StateAfterDriftRepair(const std::string& before,
                                                const std::string& after);

struct CycleReportInput {
  std::string trigger;  // "start", "poll", "manual", "drift"
  CycleSummary summary;
  std::int64_t started_ms = 0;
  std::int64_t duration_ms = 0;
};

class DaemonReports {
 public:
  // Starts the Reporter for `config.report` (REQUIRES: its url is set), with the outbox in
  // state_dir/outbox and `send` for each attempt.
  [[nodiscard]] static Result<std::unique_ptr<DaemonReports>> Start(const AgentConfig& config,
                                                                    const std::string& state_dir,
                                                                    const std::string& root,
                                                                    HttpSender send);

  // Reports the cycle when it is worth a report (see above). Errors are logged, never
  // passed on: a report that cannot be queued must not fail the daemon.
  void CycleDone(const CycleReportInput& cycle);
  // A heartbeat: the daemon's state (StateAfterCycle's, or "applying") and the last
  // cycle's summary.
  void Heartbeat(const std::string& daemon_state, const CycleSummary& last);
  // For tetherctl status: the endpoint's state (ReporterStatusToJson).
  [[nodiscard]] nlohmann::json Status() const;
  // Ends a backoff wait: the next attempt starts now.
  void RetryNow() { reporter_->RetryNow(); }
  void Stop() { reporter_->Stop(); }

 private:
  DaemonReports(const AgentConfig& config, const std::string& root,
                std::unique_ptr<Reporter> reporter);
  void Submit(const std::string& event, const std::string& state, const std::string& trigger,
              const CycleSummary& summary, std::int64_t started_ms, std::int64_t duration_ms);

  ReportSource source_;
  HostIdentity host_;
  std::unique_ptr<Reporter> reporter_;
  std::string last_refused_;            // commit and reason of the last refusal reported
  std::set<std::string> last_drifted_;  // resources last reported drifted (drift = "report")
};

}  // namespace tether
