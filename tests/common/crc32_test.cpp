#include "common/crc32.hpp"

#include <string>

#include <doctest/doctest.h>

TEST_CASE("CRC-32 is the IEEE one, and sees a changed or missing byte") {
  // The check value of CRC-32/ISO-HDLC.
  CHECK(tether::Crc32("123456789") == tether::Crc32Bytes{0xcb, 0xf4, 0x39, 0x26});
  CHECK(tether::Crc32("") == tether::Crc32Bytes{0, 0, 0, 0});
  const std::string text(100000, 'x');
  const auto crc = tether::Crc32(text);
  CHECK(tether::Crc32(std::string_view(text).substr(0, text.size() - 1)) != crc);
  for (std::size_t at : {std::size_t{0}, text.size() / 2, text.size() - 1}) {
    std::string changed = text;
    changed[at] = 'y';
    CHECK(tether::Crc32(changed) != crc);
  }
}
