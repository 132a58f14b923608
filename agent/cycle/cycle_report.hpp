// What a cycle is asked to do (CycleOptions) and what it did (CycleReport), as data: the
// course, every action with its diff, the outcome. Text for a person (FormatCourse), the
// daemon's log, the control socket's JSON and the status reports are all formatters of a
// CycleReport. This is what the daemon and tetherctl know of a cycle; they link no cycle.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "agent/config/agent_config.hpp"
#include "common/error.hpp"

namespace tether {

struct CycleOptions {
  AgentConfig config;
  std::string state_dir;
  std::string cache_dir;
  std::string root = "/";          // --root: every managed path is below it
  bool dry_run = false;            // plan only
  bool retry_quarantined = false;  // apply a quarantined commit once more
  bool root_checks = false;        // run [[check]]s even under --root
  // Apply this commit (full id, from the local mirror; no fetch, no anti-rewind check,
  // signature still verified): tetherctl rollback.
  std::string pin;
  // A drift repair: re-apply the last applied commit from the local mirror, without
  // asking the Git source (which may be slow or down, or have moved on: its head is the
  // polls' business). With nothing applied yet, the source is asked as usual.
  bool enforce_applied = false;
  // With enforce_applied, the resources the daemon's watches saw touched: only they, the
  // services (which may restart on them) and the resources whose drift is reported are
  // planned, as the rest is as the last cycle left it. Empty: everything is planned. A
  // full audit, when due, plans everything.
  std::vector<std::string> drifted;
  // The files the daemon's watches saw written in place since tether last replaced them:
  // a person's edit, whatever their stat (which tether may have taken after that edit).
  // Their content is read, whatever their fingerprint says.
  std::vector<std::string> written_in_place;
  // List each resource in sync too (tetherd --once --show-in-sync), not only changes.
  bool show_in_sync = false;
  // Another cycle on the same state dir: wait for it to end (the daemon, whose previous
  // cycle may outlive a crash of its own) instead of failing (tetherd --once).
  bool wait_for_lock = false;
  std::vector<std::string> worker_argv;  // how to start the git worker
  std::vector<std::string> http_argv;    // how to start tetherd-http, for HTTP checks
};

// How a cycle ended.
enum class Outcome {
  kInSync,      // the host was as the commit says
  kApplied,     // changes were made, and the health checks passed
  kDryRun,      // planned only (suspended, tetherctl plan)
  kRolledBack,  // a change or the health gate failed: the apply was undone
  kFailed,      // an error
  kRefused,     // a commit not signed by a trusted key, a rewind, a profile that does not render
};

// "in sync", "applied", "dry run", "rolled back", "failed", "refused": the names of the
// control socket, the history and the reports.
[[nodiscard]] std::string_view OutcomeName(Outcome outcome);
[[nodiscard]] std::optional<Outcome> OutcomeFromName(std::string_view name);
// Refused, rolled back or failed.
[[nodiscard]] bool IsFailure(Outcome outcome);

// One resource that was not in sync, as a cycle found or left it. Never its contents.
struct ResourceSummary {
  std::string id;       // "file:/etc/motd"
  std::string action;   // "create", "update", "delete", "conflict", or "drifted" (reported only)
  std::string changes;  // what differs: "content, mode 0644 -> 0600"
  bool ok = true;       // false: this change failed (the apply failed or was rolled back)
  std::string error{};
};

// What a cycle did, for the daemon's history, status, events and reports.
struct CycleSummary {
  std::string commit;  // the commit planned (the head, or the applied one when offline)
  std::string signer;  // its verified signer ("principal (key type fingerprint)"), if any
  std::size_t changes = 0;
  Outcome outcome = Outcome::kFailed;
  std::string error{};   // the first problem, when there was one
  bool offline = false;  // the Git source could not be reached; the applied commit was enforced
  // The desired state: resources per kind ("file" -> 12), and how many were in sync.
  std::map<std::string, std::size_t> kinds{};
  std::size_t in_sync = 0;
  std::size_t skipped = 0;  // of kinds not managed here (under --root: packages, services, ...)
  // Every resource not in sync, in plan order (at most kMaxResourcesListed).
  std::vector<ResourceSummary> resources{};
};

inline constexpr std::size_t kMaxResourcesListed = 1000;

// The summary as JSON, and back (for the daemon's cycle process): unknown or missing
// fields take their defaults.
[[nodiscard]] nlohmann::json CycleSummaryToJson(const CycleSummary& summary);
[[nodiscard]] CycleSummary CycleSummaryFromJson(const nlohmann::json& json);

// One line of a cycle's course before its plan, as data.
enum class StepKind {
  kWaitingForLock,    // another cycle on the state dir (`detail`) is running: waited for it
  kSource,            // the source's head: `detail` the url, `flag` fetched
  kPinned,            // pinned by tetherctl rollback, until resume
  kEnforced,          // a drift repair: the applied commit again, no fetch
  kOffline,           // the source could not be reached: the applied commit enforced
  kRetryQuarantined,  // a quarantined commit applied once more, as asked
  kQuarantinedHead,   // the head failed before (`detail` why): not applied again
  kEnforcingApplied,  // ... the applied commit is enforced instead
  kVerified,          // signed by `detail` ("principal (key-type fingerprint)")
  kAudit,             // a full audit: every managed path read and hashed
};

struct CourseStep {
  StepKind kind = StepKind::kSource;
  std::string commit;
  std::string detail;
  bool flag = false;
};

// What a plan or an apply did to one resource.
struct ReportedAction {
  std::string id;
  std::string type;     // "in sync", "create", "update", "delete", "conflict"
  std::string changes;  // "content, mode 0644 -> 0600"
  std::string diff;     // a unified diff of an update's content; a summary for secrets
  std::string reason;   // why, for a conflict
  bool ok = true;       // false: the apply of this change failed (or was undone)
  std::string error{};
};

// An inventory entry as a drift repair left it, for the daemon's watches: the repair read
// the inventory in part, and names here every entry it read (the others it wrote back as
// they were).
struct RecordedEntry {
  std::string id;
  std::string kind;  // "file", "directory", ...
  std::string path;  // the managed path or name (InventoryPath)
  // As the repair recorded it, or found it in sync: a repair that changed nothing but
  // fingerprints does not write the inventory, and names the newer ones, each of a stat
  // taken before the content it found in sync was read.
  std::string fingerprint;
};

struct CycleReport {
  Outcome outcome = Outcome::kFailed;
  std::string commit;  // the commit planned (the head, or the applied one when offline)
  std::string signer;  // its verified signer, if any
  bool offline = false;
  std::string error;  // the first problem, when there was one
  std::vector<CourseStep> course;
  // The plan, in order: changes, and resources in sync when the options asked for them.
  std::vector<ReportedAction> actions;
  std::vector<ReportedAction> drifted;  // found drifted, left as they are (drift = "report")
  std::vector<std::pair<std::string, std::string>> skipped;  // resource id, why
  std::size_t skipped_count = 0;  // resources of kinds not managed here (as `skipped`, and
                                  // one the cycle stopped at: systemd unreachable)
  std::size_t omitted = 0;        // changes not listed in `actions` (TrimReport)
  bool applied = false;           // the apply ran (not a dry run, nothing stopped the cycle before)
  bool apply_failed = false;      // ... and failed: rolled back, or failed as it was
  std::vector<std::string> undone;           // what a rollback undid (ids)
  bool quarantined = false;                  // this cycle quarantined its commit
  std::size_t changes = 0;                   // changes planned
  std::map<std::string, std::size_t> kinds;  // resources per kind
  std::size_t in_sync = 0;
  std::int64_t elapsed_ms = 0;
  std::vector<std::string> problems;  // for stderr and the log's warnings, in order
  // Set by a drift repair that read the inventory in part (up to 10,000 entries) and whose
  // apply committed with no failure: the entries it read, as they now stand. Not in
  // CycleReportToJson: the cycle's process gives it to the daemon beside the report.
  std::optional<std::vector<RecordedEntry>> recorded;
};

// The report of a cycle that could not run: outcome failed, `error` its problem.
[[nodiscard]] CycleReport FailedReport(const Error& error);

// tetherd --once's exit status for the report: 0 in sync, applied or a dry run; 1 failed,
// refused or rolled back.
[[nodiscard]] int ExitCode(const CycleReport& report);

// The compact summary (no diffs) of a report.
[[nodiscard]] CycleSummary Summarize(const CycleReport& report);

// The report as JSON, and back (for the daemon's cycle process and tetherctl). Unknown or
// missing fields take their defaults; wrong types too: reading never throws.
[[nodiscard]] nlohmann::json CycleReportToJson(const CycleReport& report);
[[nodiscard]] CycleReport CycleReportFromJson(const nlohmann::json& json);

// How a formatter marks a piece of text; a Painter turns it into colour (tetherctl on a
// terminal) or leaves it (everywhere else).
enum class Tone { kGood, kChange, kBad, kDim };
using Painter = std::function<std::string(std::string_view text, Tone tone)>;

// The course, as `tetherd --once` prints it on stdout: the source and checks, the plan
// ("create   file:/etc/motd (0644, 95 bytes)", "update   file:/etc/a: content" and its
// diff), drift left as it is, skipped resources, and the result.
// kPlan is what comes before the apply (the course, the plan, drift, skipped resources),
// kResult what comes after: the two make kAll.
enum class CoursePart { kAll, kPlan, kResult };
[[nodiscard]] std::string FormatCourse(const CycleReport& report, const Painter& paint = {},
                                       CoursePart part = CoursePart::kAll);
// The problems, one per line, as tetherd --once prints them on stderr; from the `first`.
[[nodiscard]] std::string FormatProblems(const CycleReport& report, std::size_t first = 0);

// Keeps a report within about `max_bytes` of JSON: cuts the largest diffs first (each
// replaced by a note), then, when the list of changes alone is larger, the changes at its
// end (counted in `omitted`).
void TrimReport(CycleReport& report, std::size_t max_bytes);

}  // namespace tether
