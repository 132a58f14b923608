// The daemon's cycles, each run in a process of its own: `tetherd-cycle --cycle-process` reads
// a job (the agent config's text and the cycle's options) on stdin, runs one cycle and
// writes what happened on stdout. The daemon stays small while idle: libgit2, OpenSSL,
// the desired state and the plan live and die with the cycle's process, never in the
// daemon. The daemon passes the config text it loaded, so a config file edited since
// (valid or not) changes nothing until the daemon reloads it.
//
// Threading: RunCycleProcess blocks until the cycle is over; call it from the worker
// thread, one at a time. StartCycleProcess may be called from another thread while no
// cycle runs.
#pragma once

#include <chrono>
#include <cstdio>
#include <string>
#include <vector>

#include "agent/config/agent_config.hpp"
#include "agent/cycle/cycle_report.hpp"
#include "common/process.hpp"
#include "common/unique_fd.hpp"

namespace tether {

// What one cycle did.
struct CycleOutput {
  int exit_code = -1;  // as tetherd --once: 0 in sync or applied, 1 failed, 2 config error
  CycleReport report;  // its diffs cut to about kMaxCycleOutput (TrimReport)
};

inline constexpr std::size_t kMaxCycleOutput = 256 << 10;

// A cycle's process started ahead of its job: it loads its libraries and starts libgit2
// and OpenSSL, then waits for the job on stdin. The daemon starts one at the first drift
// event, so that this start-up overlaps the wait for more events to settle. Destroying
// one that was not given a job kills it: `child` is declared last, so it is destroyed (killed
// and reaped) before its pipes close, and the process never reads an end of input as a job.
struct StartedCycle {
  UniqueFd to_child;    // its stdin
  UniqueFd from_child;  // its stdout
  Child child;
};

// Starts a cycle's process with `argv` (this program with --cycle-process) and `env`.
[[nodiscard]] Result<StartedCycle> StartCycleProcess(const std::vector<std::string>& argv,
                                                     const std::vector<std::string>& env);

// Runs a cycle in `started`, given `config_files` (the agent config as loaded) and `options`
// (whose `config` is ignored: the child parses `config_files`). The child's stderr (its
// log) is ours. A child that dies or says nothing readable is a failed cycle whose `err`
// says how it ended.
[[nodiscard]] CycleOutput RunCycleProcess(StartedCycle started,
                                          const std::vector<ConfigFile>& config_files,
                                          const CycleOptions& options);

// The same in a process started now.
[[nodiscard]] CycleOutput RunCycleProcess(const std::vector<std::string>& argv,
                                          const std::vector<std::string>& env,
                                          const std::vector<ConfigFile>& config_files,
                                          const CycleOptions& options);

}  // namespace tether
