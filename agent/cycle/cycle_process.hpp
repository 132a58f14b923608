// The daemon's cycles, each run in a process of its own: `tetherd-cycle --cycle-process` reads
// a job (the agent config's text and the cycle's options) on stdin, runs one cycle and
// writes what happened on stdout. The daemon stays small while idle: libgit2, OpenSSL,
// the desired state and the plan live and die with the cycle's process, never in the
// daemon. The daemon passes the config text it loaded, so a config file edited since
// (valid or not) changes nothing until the daemon reloads it.
//
// Threading: RunCycleProcess blocks until the cycle is over; call it from the worker
// thread, one at a time.
#pragma once

#include <chrono>
#include <cstdio>
#include <string>
#include <vector>

#include "agent/config/agent_config.hpp"
#include "agent/cycle/cycle_report.hpp"

namespace tether {

// What one cycle did.
struct CycleOutput {
  int exit_code = -1;  // as tetherd --once: 0 in sync or applied, 1 failed, 2 config error
  CycleReport report;  // its diffs cut to about kMaxCycleOutput (TrimReport)
};

inline constexpr std::size_t kMaxCycleOutput = 256 << 10;

// Runs a cycle in a child process started with `argv` (this program with
// --cycle-process), given `config_files` (the agent config as loaded) and `options`
// (whose `config` is ignored: the child parses `config_files`). The child's stderr (its
// log) is ours. A child that dies or says nothing readable is a failed cycle whose `err`
// says how it ended.
[[nodiscard]] CycleOutput RunCycleProcess(const std::vector<std::string>& argv,
                                          const std::vector<std::string>& env,
                                          const std::vector<ConfigFile>& config_files,
                                          const CycleOptions& options);

}  // namespace tether
