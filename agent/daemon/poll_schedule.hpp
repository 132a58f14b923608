// When to poll next: the interval with jitter after a success; exponential backoff with a
// cap after failures, back to the interval after the next success. Pure: the randomness
// is injected, so tests see exact numbers.
#pragma once

#include <chrono>
#include <functional>

namespace tether {

class PollSchedule {
 public:
  // `random` returns a number in [0, 1); every delay is spread by +-`jitter` (0.1: +-10%).
  // Backoff starts at min(interval, 10s), doubles per failure, and stops growing at
  // max(interval, 5min).
  PollSchedule(std::chrono::milliseconds interval, double jitter, std::function<double()> random);

  // The delay before the next poll, after a poll that succeeded.
  [[nodiscard]] std::chrono::milliseconds AfterSuccess();
  // The delay before the next poll, after one that failed.
  [[nodiscard]] std::chrono::milliseconds AfterFailure();

  [[nodiscard]] int consecutive_failures() const { return failures_; }

 private:
  std::chrono::milliseconds Spread(std::chrono::milliseconds base);

  std::chrono::milliseconds interval_;
  double jitter_;
  std::function<double()> random_;
  int failures_ = 0;
};

}  // namespace tether
