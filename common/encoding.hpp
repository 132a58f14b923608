// Text encodings: UTF-8 validity and base64, for putting arbitrary bytes into JSON.
#pragma once

#include <string>
#include <string_view>

namespace tether {

// True when `text` is well-formed UTF-8 (no overlong forms, surrogates or values past
// U+10FFFF).
[[nodiscard]] bool IsValidUtf8(std::string_view text);

// Standard base64 with padding.
[[nodiscard]] std::string Base64Encode(std::string_view data);

}  // namespace tether
