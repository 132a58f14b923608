#include "common/duration.hpp"

#include <doctest/doctest.h>

using namespace std::chrono_literals;

TEST_CASE("ParseDuration reads units and sums, and refuses anything else") {
  struct Case {
    const char* text;
    long long milliseconds;  // -1: refused
  };
  const Case cases[] = {
      {"500ms", 500},
      {"30s", 30'000},
      {"5m", 300'000},
      {"1h", 3'600'000},
      {"2d", 172'800'000},
      {"1h30m", 5'400'000},
      {"1m30s500ms", 90'500},
      {"0s", 0},
      {"", -1},
      {"30", -1},
      {"s", -1},
      {"5x", -1},
      {"-5s", -1},
      {"1.5h", -1},
      {" 5s", -1},
      {"5s ", -1},
      {"5 s", -1},
      {"5mss", -1},
  };
  for (const auto& c : cases) {
    CAPTURE(c.text);
    auto result = tether::ParseDuration(c.text);
    if (c.milliseconds < 0) {
      REQUIRE_FALSE(result);
      CHECK(result.error().message() == std::string("invalid duration \"") + c.text +
                                            "\" (use e.g. 500ms, 30s, 5m, 1h, 1h30m)");
    } else {
      REQUIRE(result);
      CHECK(result->count() == c.milliseconds);
    }
  }
  auto huge = tether::ParseDuration("99999999999999999999d");
  REQUIRE_FALSE(huge);
  CHECK(huge.error().Is(std::errc::result_out_of_range));
}

TEST_CASE("FormatDuration spells durations shortest-first and round-trips") {
  CHECK(tether::FormatDuration(0ms) == "0s");
  CHECK(tether::FormatDuration(90'500ms) == "1m30s500ms");
  CHECK(tether::FormatDuration(3'600'000ms) == "1h");
  for (const char* text : {"10m", "1d2h", "45s", "250ms"}) {
    CHECK(tether::FormatDuration(tether::ParseDuration(text).value()) == text);
  }
}

TEST_CASE("ParsePercentage reads 0% to 100%") {
  CHECK(tether::ParsePercentage("10%").value() == doctest::Approx(0.10));
  CHECK(tether::ParsePercentage("12.5%").value() == doctest::Approx(0.125));
  CHECK(tether::ParsePercentage("0%").value() == 0.0);
  CHECK(tether::ParsePercentage("100%").value() == 1.0);
  for (const char* bad : {"10", "%", "101%", "-1%", "ten%", ".5%", "1e2%"}) {
    CAPTURE(bad);
    CHECK_FALSE(tether::ParsePercentage(bad));
  }
}
