// The child's side of the daemon's cycle processes (agent/cycle/cycle_process.hpp):
// `tetherd-cycle --cycle-process` reads a job, runs one cycle and writes what happened.
#pragma once

#include <cstdio>
#include <string>
#include <vector>

#include "agent/cycle/cycle_process.hpp"

namespace tether {

// The child's side: reads the job from `in`, runs the cycle with `worker_argv` for its
// git worker and `http_argv` for its HTTP checks, writes the result on `out`. Returns the process's
// exit status (0 whenever a result was written, whatever the cycle's outcome; 2 for a job it cannot
// read).
[[nodiscard]] int ServeCycleProcess(std::FILE* in, std::FILE* out,
                                    const std::vector<std::string>& worker_argv,
                                    const std::vector<std::string>& http_argv);

}  // namespace tether
