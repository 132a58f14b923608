// HMAC-SHA256 (RFC 2104) and a comparison that takes the same time whatever the inputs
// hold, for checking webhook signatures. From libgcrypt (common/gcrypt_start.hpp).
//
// Threading: thread-safe.
#pragma once

#include <string>
#include <string_view>

namespace tether {

// HMAC-SHA256 of `data` under `key`, as 64 lowercase hex digits; "" only if libgcrypt
// cannot run at all.
[[nodiscard]] std::string HmacSha256Hex(std::string_view key, std::string_view data);

// True when `a` and `b` are equal. The time taken depends on their lengths only, never on
// where they differ.
[[nodiscard]] bool ConstantTimeEqual(std::string_view a, std::string_view b);

}  // namespace tether
