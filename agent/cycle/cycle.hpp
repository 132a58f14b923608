// One cycle of the agent, as `tetherd --once` runs it: recover, fetch, verify, render,
// plan, apply, and say what happened. The daemon loop will run the same cycle.
#pragma once

#include <cstddef>
#include <cstdio>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "agent/config/agent_config.hpp"

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
  bool show_in_sync = true;  // list resources in sync too (not in the daemon's log)
  // Another cycle on the same state dir: wait for it to end (the daemon, whose previous
  // cycle may outlive a crash of its own) instead of failing (tetherd --once).
  bool wait_for_lock = false;
  std::vector<std::string> worker_argv;  // how to start the git worker
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

// Runs one cycle and prints its course on `out` (problems on `err`). Returns the exit
// status of `tetherd --once`: 0 in sync or applied, 1 failed, refused or rolled back.
// `summary`, when given, is filled as the cycle goes.
[[nodiscard]] int RunCycleOnce(const CycleOptions& options, std::FILE* out, std::FILE* err,
                               CycleSummary* summary = nullptr);

}  // namespace tether
