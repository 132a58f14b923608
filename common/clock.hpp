// The clock port: wall time (for signatures' validity and audit periods) and a steady
// clock (for durations). Tests pass a clock of their own.
#pragma once

#include <chrono>

namespace tether {

class Clock {
 public:
  virtual ~Clock() = default;
  [[nodiscard]] virtual std::chrono::system_clock::time_point Now() const = 0;
  [[nodiscard]] virtual std::chrono::steady_clock::time_point Steady() const = 0;
};

// The system's clocks.
[[nodiscard]] inline const Clock& SystemClock() {
  class Real final : public Clock {
   public:
    std::chrono::system_clock::time_point Now() const override {
      return std::chrono::system_clock::now();
    }
    std::chrono::steady_clock::time_point Steady() const override {
      return std::chrono::steady_clock::now();
    }
  };
  static const Real clock;
  return clock;
}

}  // namespace tether
