#include "agent/daemon/poll_schedule.hpp"

#include <doctest/doctest.h>

using namespace std::chrono_literals;
using tether::PollSchedule;

TEST_CASE("Backoff doubles from min(interval, 10s) up to max(interval, 5m), then resets") {
  PollSchedule schedule(60s, 0.0, [] { return 0.5; });
  CHECK(schedule.AfterSuccess() == 60s);
  const std::chrono::milliseconds expected[] = {10s, 20s, 40s, 80s, 160s, 300s, 300s, 300s};
  for (auto delay : expected) CHECK(schedule.AfterFailure() == delay);
  CHECK(schedule.consecutive_failures() == 8);
  CHECK(schedule.AfterSuccess() == 60s);  // back to the interval after a success
  CHECK(schedule.consecutive_failures() == 0);
  CHECK(schedule.AfterFailure() == 10s);
}

TEST_CASE("A short interval backs off from itself; a long one never backs off below it") {
  PollSchedule fast(2s, 0.0, [] { return 0.5; });
  CHECK(fast.AfterFailure() == 2s);
  CHECK(fast.AfterFailure() == 4s);
  PollSchedule slow(1h, 0.0, [] { return 0.5; });
  CHECK(slow.AfterFailure() == 10s);
  for (int i = 0; i < 20; ++i) (void)slow.AfterFailure();
  CHECK(slow.AfterFailure() == 1h);  // the cap is the interval itself
}

TEST_CASE("Jitter spreads every delay by up to +-jitter") {
  double r = 0.0;
  PollSchedule schedule(100s, 0.1, [&] { return r; });
  r = 0.0;
  CHECK(schedule.AfterSuccess() == 90s);
  r = 0.5;
  CHECK(schedule.AfterSuccess() == 100s);
  r = 0.999;
  CHECK(schedule.AfterSuccess() == 109'980ms);
  r = 0.0;
  CHECK(schedule.AfterFailure() == 9s);
}
