#include "common/duration.hpp"

#include <cstdint>
#include <cstdlib>

namespace tether {

namespace {

struct Unit {
  std::string_view suffix;
  std::int64_t milliseconds;
};

// Longest suffix first, so "ms" is not read as "m" followed by garbage.
constexpr Unit kUnits[] = {
    {"ms", 1}, {"s", 1000}, {"m", 60'000}, {"h", 3'600'000}, {"d", 86'400'000}};
constexpr std::int64_t kMaxMilliseconds = 100LL * 365 * 86'400'000;

tl::unexpected<Error> BadDuration(std::string_view text) {
  return Fail(std::errc::invalid_argument, "invalid duration \"" + std::string(text) +
                                               "\" (use e.g. 500ms, 30s, 5m, 1h, 1h30m)");
}

}  // namespace

Result<std::chrono::milliseconds> ParseDuration(std::string_view text) {
  if (text.empty()) return BadDuration(text);
  std::int64_t total = 0;
  std::size_t pos = 0;
  while (pos < text.size()) {
    std::int64_t number = 0;
    const std::size_t digits_start = pos;
    while (pos < text.size() && text[pos] >= '0' && text[pos] <= '9') {
      number = number * 10 + (text[pos] - '0');
      if (number > kMaxMilliseconds) {
        return Fail(std::errc::result_out_of_range,
                    "duration \"" + std::string(text) + "\" is too long");
      }
      ++pos;
    }
    if (pos == digits_start) return BadDuration(text);
    const Unit* unit = nullptr;
    for (const auto& candidate : kUnits) {
      if (text.substr(pos, candidate.suffix.size()) == candidate.suffix &&
          (candidate.suffix != "m" || text.substr(pos, 2) != "ms")) {
        unit = &candidate;
        break;
      }
    }
    if (unit == nullptr) return BadDuration(text);
    pos += unit->suffix.size();
    if (number > (kMaxMilliseconds - total) / unit->milliseconds) {
      return Fail(std::errc::result_out_of_range,
                  "duration \"" + std::string(text) + "\" is too long");
    }
    total += number * unit->milliseconds;
  }
  return std::chrono::milliseconds(total);
}

std::string FormatDuration(std::chrono::milliseconds duration) {
  std::int64_t left = duration.count();
  if (left == 0) return "0s";
  std::string result;
  if (left < 0) {
    result = "-";
    left = -left;
  }
  for (const auto& unit : {kUnits[4], kUnits[3], kUnits[2], kUnits[1], kUnits[0]}) {
    if (left >= unit.milliseconds) {
      result += std::to_string(left / unit.milliseconds);
      result += unit.suffix;
      left %= unit.milliseconds;
    }
  }
  return result;
}

Result<double> ParsePercentage(std::string_view text) {
  const auto bad = [&] {
    return Fail(std::errc::invalid_argument,
                "invalid percentage \"" + std::string(text) + "\" (use e.g. 10%)");
  };
  if (text.size() < 2 || text.back() != '%') return bad();
  const std::string number(text.substr(0, text.size() - 1));
  if (number.find_first_not_of("0123456789.") != std::string::npos || number.front() == '.') {
    return bad();
  }
  char* end = nullptr;
  const double value = std::strtod(number.c_str(), &end);
  if (end != number.c_str() + number.size() || value < 0 || value > 100) return bad();
  return value / 100.0;
}

Result<std::uint64_t> ParseSize(std::string_view text) {
  const auto bad = [&] {
    return Fail(std::errc::invalid_argument,
                "invalid size \"" + std::string(text) + "\" (use e.g. 512MiB, 1GiB)");
  };
  const auto unit_at = text.find_first_not_of("0123456789");
  if (unit_at == 0 || unit_at == std::string_view::npos || unit_at > 18) return bad();
  const std::string_view unit = text.substr(unit_at);
  int shift = 0;
  if (unit == "B") {
    shift = 0;
  } else if (unit == "KiB") {
    shift = 10;
  } else if (unit == "MiB") {
    shift = 20;
  } else if (unit == "GiB") {
    shift = 30;
  } else {
    return bad();
  }
  const std::uint64_t number = std::stoull(std::string(text.substr(0, unit_at)));
  if (number > (std::uint64_t{1} << 62) >> shift) {
    return Fail(std::errc::result_out_of_range, "size \"" + std::string(text) + "\" is too large");
  }
  return number << shift;
}

}  // namespace tether
