#include "agent/daemon/daemon_reports.hpp"

#include <utility>

#include "agent/desired/facts.hpp"
#include "common/log.hpp"

namespace tether {

namespace {

// The report's state for a cycle's outcome: the daemon's, or what the event did
// ("applied", "reverted").
std::string_view StateOf(Trigger trigger, const CycleSummary& summary) {
  if (IsFailure(summary.outcome)) return StateName(StateAfterCycle(summary, 1, false));
  if (summary.outcome == Outcome::kDryRun) return "suspended";
  if (trigger == Trigger::kDrift && summary.changes > 0) return "reverted";
  const DaemonState state = StateAfterCycle(summary, 0, false);
  return state == DaemonState::kSynced && summary.outcome == Outcome::kApplied ? "applied"
                                                                               : StateName(state);
}

}  // namespace

Result<std::unique_ptr<DaemonReports>> DaemonReports::Start(const AgentConfig& config,
                                                            const std::string& outbox_dir,
                                                            const std::string& root,
                                                            HttpSender send,
                                                            std::function<void()> release) {
  ReporterOptions options = ReporterOptionsFrom(config.report, outbox_dir);
  options.send = std::move(send);
  options.release = std::move(release);
  auto reporter = Reporter::Start(std::move(options));
  if (!reporter) return Fail(reporter.error());
  return std::unique_ptr<DaemonReports>(new DaemonReports(config, root, std::move(*reporter)));
}

DaemonReports::DaemonReports(const AgentConfig& config, const std::string& root,
                             std::unique_ptr<Reporter> reporter)
    : reporter_(std::move(reporter)) {
  source_.url = config.source.url;
  source_.ref = config.source.ref;
  const HostFacts facts = LocalHostFacts(root);  // no FQDN: the resolver is not asked
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
  if (summary.outcome == Outcome::kRefused) {
    // A refused head is refused again at every poll: reported once.
    const std::string refusal = summary.commit + "\n" + summary.error;
    if (refusal != last_refused_) event = "refused";
    last_refused_ = refusal;
  } else if (cycle.trigger == Trigger::kDrift && summary.changes > 0) {
    event = "drift";
  } else if (summary.outcome == Outcome::kApplied || summary.outcome == Outcome::kFailed ||
             summary.outcome == Outcome::kRolledBack) {
    event = cycle.trigger == Trigger::kDrift ? "drift" : "apply";
  } else if (!drifted.empty() && drifted != last_drifted_) {
    event = "drift";  // drift = "report": found, left as it is
  }
  last_drifted_ = std::move(drifted);
  if (event.empty()) return;
  Submit(event, StateOf(cycle.trigger, summary), TriggerName(cycle.trigger), summary,
         cycle.started_ms, cycle.duration_ms);
}

void DaemonReports::Heartbeat(DaemonState daemon_state, const CycleSummary& last) {
  const bool busy =
      daemon_state == DaemonState::kStarting || daemon_state == DaemonState::kPlanning;
  Submit("heartbeat", StateName(busy ? DaemonState::kApplying : daemon_state), "heartbeat", last, 0,
         0);
}

void DaemonReports::Submit(const std::string& event, std::string_view state,
                           std::string_view trigger, const CycleSummary& summary,
                           std::int64_t started_ms, std::int64_t duration_ms) {
  ReportInput input;
  input.event = event;
  input.state = std::string(state);
  input.trigger = std::string(trigger);
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
