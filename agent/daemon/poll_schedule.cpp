#include "agent/daemon/poll_schedule.hpp"

#include <algorithm>
#include <cmath>

namespace tether {

namespace {

constexpr std::chrono::milliseconds kFirstBackoff = std::chrono::seconds(10);
constexpr std::chrono::milliseconds kBackoffCap = std::chrono::minutes(5);

}  // namespace

PollSchedule::PollSchedule(std::chrono::milliseconds interval, double jitter,
                           std::function<double()> random)
    : interval_(interval), jitter_(std::clamp(jitter, 0.0, 1.0)), random_(std::move(random)) {}

std::chrono::milliseconds PollSchedule::Spread(std::chrono::milliseconds base) {
  const double factor = 1.0 + jitter_ * (2.0 * random_() - 1.0);
  return std::chrono::milliseconds(
      std::max<long long>(1, std::llround(static_cast<double>(base.count()) * factor)));
}

std::chrono::milliseconds PollSchedule::AfterSuccess() {
  failures_ = 0;
  return Spread(interval_);
}

std::chrono::milliseconds PollSchedule::AfterFailure() {
  ++failures_;
  const auto first = std::min(interval_, kFirstBackoff);
  const auto cap = std::max(interval_, kBackoffCap);
  auto delay = first;
  for (int i = 1; i < failures_ && delay < cap; ++i) delay *= 2;
  return Spread(std::min(delay, cap));
}

}  // namespace tether
