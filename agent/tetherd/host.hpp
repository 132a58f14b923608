// The composition root of a cycle: the one place that names the concrete ports (the
// rooted filesystem, apt, the systemd bus, the Git source) and the kinds, builds a Host
// of them and runs the cycle (agent/cycle/cycle.hpp) on it. `tetherd --once` and the
// daemon's cycle processes both run cycles through here.
#pragma once

#include <functional>

#include "agent/cycle/cycle_report.hpp"

namespace tether {

// Makes the state and cache dirs (0700) and takes the state dir's lock (one cycle at a
// time per state dir: a second tetherd, even a dry run, must never recover, that is roll
// back, an apply still going on), then runs one cycle on this host. Whatever stops it is
// in the report (outcome failed), never lost.
// `planned` as for RunCycle.
[[nodiscard]] CycleReport RunCycleOnHost(
    const CycleOptions& options, const std::function<void(const CycleReport&)>& planned = {});

}  // namespace tether
