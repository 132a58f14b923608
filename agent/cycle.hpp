// One cycle of the agent, as `tetherd --once` runs it: recover, fetch, verify, render,
// plan, apply, and say what happened. The daemon loop will run the same cycle.
#pragma once

#include <cstdio>
#include <string>
#include <vector>

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
  bool show_in_sync = true;              // list resources in sync too (not in the daemon's log)
  std::vector<std::string> worker_argv;  // how to start the git worker
};

// What a cycle did, for the daemon's history and status.
struct CycleSummary {
  std::string commit;  // the commit planned (the head, or the applied one when offline)
  std::string signer;  // its verified signer ("principal (key type fingerprint)"), if any
  std::size_t changes = 0;
  // "in sync", "applied", "dry run", "rolled back", "failed" (also refused and errors)
  std::string outcome = "failed";
};

// Runs one cycle and prints its course on `out` (problems on `err`). Returns the exit
// status of `tetherd --once`: 0 in sync or applied, 1 failed, refused or rolled back.
// `summary`, when given, is filled as the cycle goes.
[[nodiscard]] int RunCycleOnce(const CycleOptions& options, std::FILE* out, std::FILE* err,
                               CycleSummary* summary = nullptr);

}  // namespace tether
