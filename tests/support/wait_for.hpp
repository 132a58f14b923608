// WaitFor: the one way tests wait for something to happen. Polls `predicate` with a short,
// growing pause until it returns true or `timeout` passes. Never an unbounded loop.
#pragma once

#include <algorithm>
#include <chrono>
#include <thread>

namespace tether::testing {

// Returns true as soon as predicate() is true; false when `timeout` passed first.
// The predicate is always called at least once, and once more at the deadline.
template <typename Predicate>
[[nodiscard]] bool WaitFor(Predicate&& predicate, std::chrono::milliseconds timeout) {
  using Clock = std::chrono::steady_clock;
  const auto deadline = Clock::now() + timeout;
  auto pause = std::chrono::milliseconds(1);
  while (true) {
    if (predicate()) return true;
    const auto now = Clock::now();
    if (now >= deadline) return false;
    std::this_thread::sleep_for(std::min<Clock::duration>(pause, deadline - now));
    pause = std::min(pause * 2, std::chrono::milliseconds(50));
  }
}

}  // namespace tether::testing
