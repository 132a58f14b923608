#include "agent/daemon/daemon_reports.hpp"

#include <utility>

#include "agent/desired/facts.hpp"
#include "common/log.hpp"

namespace tether {

namespace {

bool Failed(const std::string& outcome) {
  return outcome == "refused" || outcome == "rolled back" || outcome == "failed";
}

// The report's state for a cycle's outcome: the daemon's, or what the event did
// ("applied", "reverted").
std::string StateOf(const std::string& trigger, const CycleSummary& summary) {
  if (Failed(summary.outcome)) return StateAfterCycle(summary, 1, false);
  if (summary.outcome == "dry run") return "suspended";
  if (trigger == "drift" && summary.changes > 0) return "reverted";
  const std::string state = StateAfterCycle(summary, 0, false);
  return state == "synced" && summary.outcome == "applied" ? "applied" : state;
}

}  // namespace

std::string StateAfterCycle(const CycleSummary& summary, int exit_code, bool suspended) {
  if (exit_code != 0 || Failed(summary.outcome)) {
    if (summary.outcome == "refused") return "refused";
    if (summary.outcome == "rolled back") return "rolled-back";
    return "failed";
  }
  if (suspended) return "suspended";
  if (summary.offline) return "offline";
  for (const auto& resource : summary.resources) {
    if (resource.action == "drifted") return "drifted";
  }
  return "synced";
}

std::string StateAfterDriftRepair(const std::string& before, const std::string& after) {
  if (after == "synced" && (before == "refused" || before == "offline" || before == "rolled-back" ||
                            before == "failed")) {
    return before;
  }
  return after;
}

Result<std::unique_ptr<DaemonReports>> DaemonReports::Start(const AgentConfig& config,
                                                            const std::string& state_dir,
                                                            const std::string& root,
                                                            HttpSender send) {
  ReporterOptions options = ReporterOptionsFrom(config.report, state_dir);
  options.send = std::move(send);
  auto reporter = Reporter::Start(std::move(options));
  if (!reporter) return Fail(reporter.error());
  return std::unique_ptr<DaemonReports>(new DaemonReports(config, root, std::move(*reporter)));
}

DaemonReports::DaemonReports(const AgentConfig& config, const std::string& root,
                             std::unique_ptr<Reporter> reporter)
    : reporter_(std::move(reporter)) {
  source_.url = config.source.url;
  source_.ref = config.source.ref;
  const HostFacts facts = GatherHostFacts(root);
  host_.hostname = facts.hostname;
  host_.machine_id = facts.machine_id;
  host_.labels = config.labels;
}

void DaemonReports::CycleDone(const CycleReportInput& cycle) {
  const CycleSummary& summary = cycle.summary;
  std::set<std::string> drifted;
  for (const auto& resource : summary.resources) {
    if (resource.action == "drifted") drifted.insert(resource.id);
  }
  std::string event;
  if (summary.outcome == "refused") {
    // A refused head is refused again at every poll: reported once.
    const std::string refusal = summary.commit + "\n" + summary.error;
    if (refusal != last_refused_) event = "refused";
    last_refused_ = refusal;
  } else if (cycle.trigger == "drift" && summary.changes > 0) {
    event = "drift";
  } else if (summary.outcome == "applied" || summary.outcome == "failed" ||
             summary.outcome == "rolled back") {
    event = cycle.trigger == "drift" ? "drift" : "apply";
  } else if (!drifted.empty() && drifted != last_drifted_) {
    event = "drift";  // drift = "report": found, left as it is
  }
  last_drifted_ = std::move(drifted);
  if (event.empty()) return;
  Submit(event, StateOf(cycle.trigger, summary), cycle.trigger, summary, cycle.started_ms,
         cycle.duration_ms);
}

void DaemonReports::Heartbeat(const std::string& daemon_state, const CycleSummary& last) {
  std::string state = daemon_state;
  if (state == "starting" || state == "planning") state = "applying";
  Submit("heartbeat", state, "heartbeat", last, 0, 0);
}

void DaemonReports::Submit(const std::string& event, const std::string& state,
                           const std::string& trigger, const CycleSummary& summary,
                           std::int64_t started_ms, std::int64_t duration_ms) {
  ReportInput input;
  input.event = event;
  input.state = state;
  input.trigger = trigger;
  input.source = source_;
  input.source.commit = summary.commit;
  // "principal (key type fingerprint)": the schema wants the principal.
  input.source.signer = summary.signer.substr(0, summary.signer.find(" ("));
  for (const auto& resource : summary.resources) {
    input.resources.push_back(
        {resource.id, resource.action, resource.ok, resource.changes, resource.error});
  }
  input.in_sync = summary.in_sync;
  input.timings = {started_ms, duration_ms};
  input.error = summary.error;
  if (auto submitted = reporter_->Submit(BuildReport(input, host_)); !submitted) {
    GetLogger("report")->error("Failed to queue a {} report: {}", event,
                               submitted.error().message());
  }
}

nlohmann::json DaemonReports::Status() const { return ReporterStatusToJson(reporter_->Snapshot()); }

}  // namespace tether
