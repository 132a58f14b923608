// CRC-32 (IEEE 802.3) of a byte string: a check against accidental damage (a file cut
// short or left with zeros by a crash), at several GB/s. Not a digest: whoever can write
// what it checks can write its CRC too.
#pragma once

#include <array>
#include <string_view>

namespace tether {

// Its 4 bytes, most significant first.
using Crc32Bytes = std::array<unsigned char, 4>;

[[nodiscard]] Crc32Bytes Crc32(std::string_view data);

}  // namespace tether
