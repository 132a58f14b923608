// The daemon's counters, and their Prometheus text format (tetherctl metrics).
//
// Threading: the daemon's loop only.
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <string>

#include "agent/cycle/cycle_report.hpp"
#include "agent/daemon/daemon_state.hpp"

namespace tether {

class DaemonMetrics {
 public:
  // Counts a cycle that ended at `now` (unix seconds).
  void CountCycle(Trigger trigger, Outcome outcome, bool ok, std::chrono::milliseconds duration,
                  std::int64_t now);

  // Every metric, in the Prometheus text exposition format.
  [[nodiscard]] std::string Text(bool suspended) const;

 private:
  std::map<Trigger, std::uint64_t> cycles_by_trigger_;
  std::map<Outcome, std::uint64_t> cycles_by_outcome_;
  std::uint64_t failures_ = 0;
  std::uint64_t cycle_count_ = 0;
  double cycle_seconds_ = 0;
  std::int64_t last_success_ = 0;
};

}  // namespace tether
