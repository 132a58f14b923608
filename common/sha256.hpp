// SHA-256 of a byte string, as lowercase hex or as bytes.
#pragma once

#include <array>
#include <string>
#include <string_view>

namespace tether {

// The 32 bytes of a digest, held inline: half of its hex, and no allocation.
using Sha256Digest = std::array<unsigned char, 32>;

// Starts the digest's library (libgcrypt) now, rather than at the first hash: for a
// process that starts ahead of its work.
void PrepareSha256();

[[nodiscard]] std::string Sha256Hex(std::string_view data);

// The 32 bytes of the digest itself.
[[nodiscard]] std::string Sha256(std::string_view data);
[[nodiscard]] Sha256Digest Sha256Bytes(std::string_view data);

// A digest as lowercase hex (64 characters).
[[nodiscard]] std::string Sha256Hex(const Sha256Digest& digest);

}  // namespace tether
