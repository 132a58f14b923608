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
#include "agent/cycle/cycle_report.hpp"
#include "agent/daemon/daemon_state.hpp"
#include "agent/report/report.hpp"
#include "agent/report/reporter.hpp"

namespace tether {

struct CycleReportInput {
  Trigger trigger = Trigger::kPoll;
  CycleSummary summary;
  std::int64_t started_ms = 0;
  std::int64_t duration_ms = 0;
};

class DaemonReports {
 public:
  // Starts the Reporter for `config.report` (REQUIRES: its url is set), with the outbox in
  // `outbox_dir` (StateStore::OutboxDir), `send` for each attempt and `release` when idle
  // (ReporterOptions).
  [[nodiscard]] static Result<std::unique_ptr<DaemonReports>> Start(
      const AgentConfig& config, const std::string& outbox_dir, const std::string& root,
      HttpSender send, std::function<void()> release = {});

  // Reports the cycle when it is worth a report (see above). Errors are logged, never
  // passed on: a report that cannot be queued must not fail the daemon.
  void CycleDone(const CycleReportInput& cycle);
  // A heartbeat: the daemon's state and the last cycle's summary.
  void Heartbeat(DaemonState daemon_state, const CycleSummary& last);
  // For tetherctl status: the endpoint's state (ReporterStatusToJson).
  [[nodiscard]] nlohmann::json Status() const;
  // Ends a backoff wait: the next attempt starts now.
  void RetryNow() { reporter_->RetryNow(); }
  void Stop() { reporter_->Stop(); }

 private:
  DaemonReports(const AgentConfig& config, const std::string& root,
                std::unique_ptr<Reporter> reporter);
  void Submit(const std::string& event, std::string_view state, std::string_view trigger,
              const CycleSummary& summary, std::int64_t started_ms, std::int64_t duration_ms);

  ReportSource source_;
  HostIdentity host_;
  std::unique_ptr<Reporter> reporter_;
  std::string last_refused_;            // commit and reason of the last refusal reported
  std::set<std::string> last_drifted_;  // resources last reported drifted (drift = "report")
};

}  // namespace tether
