// SHA-256 of a byte string, as lowercase hex or as bytes.
#pragma once

#include <string>
#include <string_view>

namespace tether {

[[nodiscard]] std::string Sha256Hex(std::string_view data);

// The 32 bytes of the digest itself.
[[nodiscard]] std::string Sha256(std::string_view data);

}  // namespace tether
