#include "agent/toml_reader.hpp"

#include <string>

#include <doctest/doctest.h>

using tether::Diagnostics;

namespace {

std::string Where(const std::string& text) {
  auto where = tether::FindNonAsciiOutsideStrings(text, "f.toml");
  return where ? where->ToString() : "none";
}

}  // namespace

TEST_CASE("Non-ASCII text is allowed in strings and comments only") {
  struct Case {
    const char* text;
    const char* where;
  };
  const Case cases[] = {
      {"a = \"café\"\n", "none"},
      {"# Café\nb = 1 # ünïcode\n", "none"},
      {"a = 'ç'\n", "none"},
      {"a = \"\"\"\nmulti ç\n\"\"\"\n", "none"},
      {"a = '''\nç\n'''\n", "none"},
      {"a = \"escaped \\\" ç\"\n", "none"},
      {"a = \"\"\"two quotes before the end \"\"\"\"\"\nb = 'ç'\n", "none"},
      {"\xEF\xBB\xBF"
       "a = 1\n",
       "none"},  // a byte order mark
      {"a = 1 ç\n", "f.toml:1:7"},
      {"a = \"x\"\nçb = 1\n", "f.toml:2:1"},
      {"a = \"ç\" ç\n", "f.toml:1:9"},
      {"a = 'x' \xEF\xBB\xBB\n", "f.toml:1:9"},
      {"a = \"\"\"\n\"\"\" ¡\n", "f.toml:2:5"},
  };
  for (const auto& c : cases) {
    CAPTURE(std::string(c.text));
    CHECK(Where(c.text) == std::string(c.where));
  }
}

TEST_CASE("ParseToml refuses such text before the TOML parser sees it") {
  // Found by the profile fuzzer: toml++ 3.3 reaches __builtin_unreachable on U+FEFB here.
  Diagnostics diagnostics;
  auto table =
      tether::ParseToml("\xEF\xBB\xBF# x\n\xEF\xBB\xBB = 1\n", "hosts/a.toml", diagnostics);
  CHECK_FALSE(table);
  CHECK(diagnostics.ToString() ==
        "hosts/a.toml:2:1: TOML syntax error: a non-ASCII character outside a string or "
        "comment\n");

  Diagnostics fine;
  auto parsed = tether::ParseToml("name = \"Zoë\" # ok\n", "a.toml", fine);
  REQUIRE(parsed);
  CHECK((*parsed)["name"].value<std::string>() == "Zoë");
}
