// Parsing of the human-friendly quantities used in configuration files.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>
#include <string_view>

#include "common/error.hpp"

namespace tether {

// "500ms", "30s", "5m", "1h", "2d", and sums such as "1h30m". At least one unit; no sign,
// no fraction, no spaces. Fails with EINVAL and a message that quotes the input; values
// past 100 years overflow (ERANGE).
[[nodiscard]] Result<std::chrono::milliseconds> ParseDuration(std::string_view text);

// The shortest exact spelling: 90000ms -> "1m30s", 0 -> "0s".
[[nodiscard]] std::string FormatDuration(std::chrono::milliseconds duration);

// "10%", "0%", "12.5%" -> a fraction in [0, 1]; EINVAL otherwise.
[[nodiscard]] Result<double> ParsePercentage(std::string_view text);

// A size: an integer and a unit, "512MiB", "1GiB", "64KiB" or "100B". Errors: EINVAL
// naming the text; ERANGE past 2^62 bytes.
[[nodiscard]] Result<std::uint64_t> ParseSize(std::string_view text);

}  // namespace tether
