// Text encodings: UTF-8 validity and base64, for putting arbitrary bytes into JSON.
#pragma once

#include <optional>
#include <string>
#include <string_view>

namespace tether {

// True when `text` is well-formed UTF-8 (no overlong forms, surrogates or values past
// U+10FFFF).
[[nodiscard]] bool IsValidUtf8(std::string_view text);

// Standard base64 with padding.
[[nodiscard]] std::string Base64Encode(std::string_view data);
// The same into `out`, which has room for 4 characters per 3 bytes (rounded up): for a
// few bytes encoded many times over, without a string each time.
void Base64EncodeInto(std::string_view data, char* out);

// Decodes standard base64 (padding required, no whitespace); nothing when malformed.
[[nodiscard]] std::optional<std::string> Base64Decode(std::string_view text);

}  // namespace tether
