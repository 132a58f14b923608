// The daemon's counters, and their Prometheus text format (tetherctl metrics).
//
// Threading: the daemon's loop only.
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "agent/cycle/cycle_report.hpp"
#include "agent/daemon/daemon_state.hpp"
#include "common/http_server.hpp"

namespace tether {

class DaemonMetrics {
 public:
  // Counts a cycle that ended at `now` (unix seconds).
  void CountCycle(Trigger trigger, Outcome outcome, bool ok, std::chrono::milliseconds duration,
                  std::int64_t now);

  // Counts a webhook request by its verdict (WebhookVerdictName).
  void CountWebhook(const std::string& verdict) { ++webhooks_[verdict]; }

  // Counts a change-signal check: "unchanged" (304), "changed" or "error".
  void CountChangeSignal(const std::string& result) { ++change_signals_[result]; }

  // Every metric, in the Prometheus text exposition format; `listeners`: what each HTTP
  // listener ("webhook", "metrics") refused.
  [[nodiscard]] std::string Text(
      bool suspended,
      const std::vector<std::pair<std::string, HttpServerCounts>>& listeners = {}) const;

 private:
  std::map<Trigger, std::uint64_t> cycles_by_trigger_;
  std::map<Outcome, std::uint64_t> cycles_by_outcome_;
  std::uint64_t failures_ = 0;
  std::uint64_t cycle_count_ = 0;
  double cycle_seconds_ = 0;
  std::int64_t last_success_ = 0;
  std::map<std::string, std::uint64_t> webhooks_;
  std::map<std::string, std::uint64_t> change_signals_;
};

}  // namespace tether
