#include "common/encoding.hpp"

#include <doctest/doctest.h>

TEST_CASE("IsValidUtf8 accepts well-formed UTF-8 only") {
  CHECK(tether::IsValidUtf8(""));
  CHECK(tether::IsValidUtf8("plain ascii\n"));
  CHECK(tether::IsValidUtf8("Zoë, ﻻ, 😀"));
  CHECK_FALSE(tether::IsValidUtf8("\xBE"));              // a lone continuation byte
  CHECK_FALSE(tether::IsValidUtf8("\xC3"));              // truncated
  CHECK_FALSE(tether::IsValidUtf8("\xC0\xAF"));          // overlong '/'
  CHECK_FALSE(tether::IsValidUtf8("\xED\xA0\x80"));      // a surrogate
  CHECK_FALSE(tether::IsValidUtf8("\xF4\x90\x80\x80"));  // past U+10FFFF
  CHECK_FALSE(tether::IsValidUtf8(std::string_view("\xFF\x00", 2)));
}

TEST_CASE("Base64Encode pads as RFC 4648 says") {
  CHECK(tether::Base64Encode("") == "");
  CHECK(tether::Base64Encode("f") == "Zg==");
  CHECK(tether::Base64Encode("fo") == "Zm8=");
  CHECK(tether::Base64Encode("foo") == "Zm9v");
  CHECK(tether::Base64Encode(std::string_view("\x00\xff", 2)) == "AP8=");
}

TEST_CASE("Base64Decode inverts Base64Encode and refuses malformed text") {
  for (std::string_view data : {std::string_view(""), std::string_view("f"), std::string_view("fo"),
                                std::string_view("foo"), std::string_view("\x00\xff\x10", 3)}) {
    CHECK(tether::Base64Decode(tether::Base64Encode(data)) == std::string(data));
  }
  CHECK_FALSE(tether::Base64Decode("Zg="));     // not a multiple of 4
  CHECK_FALSE(tether::Base64Decode("Z=g="));    // padding inside
  CHECK_FALSE(tether::Base64Decode("Zm9v\n"));  // whitespace
  CHECK_FALSE(tether::Base64Decode("Zm9*"));
}
