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

TEST_CASE("Base64 agrees with Python's on every byte value, at every length") {
  // Every byte value, then each prefix of it: every remainder of a length divided by 3.
  std::string all;
  for (int i = 0; i < 256; ++i) all += static_cast<char>(255 - i);
  // As Python's base64.b64encode writes it.
  const std::string expected =
      "//79/Pv6+fj39vX08/Lx8O/u7ezr6uno5+bl5OPi4eDf3t3c29rZ2NfW1dTT0tHQz87NzMvKycjHxsXEw8LBwL"
      "++vby7urm4t7a1tLOysbCvrq2sq6qpqKempaSjoqGgn56dnJuamZiXlpWUk5KRkI+OjYyLiomIh4aFhIOCgYB/"
      "fn18e3p5eHd2dXRzcnFwb25tbGtqaWhnZmVkY2JhYF9eXVxbWllYV1ZVVFNSUVBPTk1MS0pJSEdGRURDQkFAPz"
      "49PDs6OTg3NjU0MzIxMC8uLSwrKikoJyYlJCMiISAfHh0cGxoZGBcWFRQTEhEQDw4NDAsKCQgHBgUEAwIBAA==";
  CHECK(tether::Base64Encode(all) == expected);
  CHECK(tether::Base64Decode(expected) == all);
  for (std::size_t n = 0; n <= all.size(); ++n) {
    const std::string data = all.substr(0, n);
    const std::string text = tether::Base64Encode(data);
    CHECK(text.size() == 4 * ((n + 2) / 3));
    CHECK(tether::Base64Decode(text) == data);
  }
  CHECK_FALSE(tether::Base64Decode("===="));
  CHECK_FALSE(tether::Base64Decode("Z==="));
  CHECK_FALSE(tether::Base64Decode("Zm9v====").has_value());
}
