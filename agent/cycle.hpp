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
  std::string root = "/";                // --root: every managed path is below it
  bool dry_run = false;                  // plan only
  bool retry_quarantined = false;        // apply a quarantined commit once more
  bool show_in_sync = true;              // list resources in sync too (not in the daemon's log)
  std::vector<std::string> worker_argv;  // how to start the git worker
};

// Runs one cycle and prints its course on `out` (problems on `err`). Returns the exit
// status of `tetherd --once`: 0 in sync or applied, 1 failed, refused or rolled back.
[[nodiscard]] int RunCycleOnce(const CycleOptions& options, std::FILE* out, std::FILE* err);

}  // namespace tether
