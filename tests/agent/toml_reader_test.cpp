#include "agent/toml/toml_reader.hpp"

#include <string>

#include <doctest/doctest.h>

using tether::Diagnostics;

namespace {

std::string Where(const std::string& text) {
  auto found = tether::FindTomlHazard(text, "f.toml");
  return found ? found->where.ToString() : "none";
}

std::string Hazard(const std::string& text) {
  auto found = tether::FindTomlHazard(text, "f.toml");
  return found ? found->where.ToString() + ": " + found->message : "none";
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

TEST_CASE("A quote after a bare value is refused: toml++ would read on into the string") {
  // Found by the profile fuzzer: toml++ 3.3 reads '808"""' and on as one value, and asks
  // of U+FEFB whether it ends it: undefined behaviour.
  const std::string quote = "unexpected quote after a value";
  const std::string non_ascii = "a non-ASCII character outside a string or comment";
  struct Case {
    std::string text;
    std::string hazard;
  };
  const Case cases[] = {
      {"a = 808\"\"\"\xEF\xBB\xBB\n", "f.toml:1:8: " + quote},
      {"a = 808\"\xC3\xA9\"\n", "f.toml:1:8: " + quote},
      {"a = 808'\xC3\xA9'\n", "f.toml:1:8: " + quote},
      {"a = -\"\xC3\xA9\"\n", "f.toml:1:6: " + quote},
      {"a = [1\"\xC3\xA9\"]\n", "f.toml:1:7: " + quote},
      {"a = [\n  1,\n  2\"\xC3\xA9\"\n]\n", "f.toml:3:4: " + quote},
      {"a = {b = 1\"\xC3\xA9\"}\n", "f.toml:1:11: " + quote},
      {"a = 1979-05-27\"\xC3\xA9\"\n", "f.toml:1:15: " + quote},
      {"a = 1979-05-27 07:32:00\"\xC3\xA9\"\n", "f.toml:1:24: " + quote},
      {"a = 808[\"\xC3\xA9\"]\n", "f.toml:1:9: " + quote},
      {"a = 808\xC3\xA9\n", "f.toml:1:8: " + non_ascii},
      // Valid TOML is left to the parser.
      {"a = [1, \"\xC3\xA9\", 'x', [2, \"y\"], {b = \"\xC3\xA9\"}]\n", "none"},
      {"[t.\"k\xC3\xA9y\"]\nb = 1979-05-27 07:32:00 # \xC3\xA9\nc = \"\xC3\xA9\"\n", "none"},
      {"[[a]]\nb = [ # \"\xC3\xA9\n  1, # x\n  \"\xC3\xA9\"\n]\nc = { d = true, e = '\xC3\xA9' }\n",
       "none"},
      {"a.\"b\" . 'c' = 1\n\"d\" = \"\xC3\xA9\"\n", "none"},
  };
  for (const auto& c : cases) {
    CAPTURE(c.text);
    CHECK(Hazard(c.text) == c.hazard);
  }
}

TEST_CASE("A non-ASCII character first after a line-ending backslash is refused") {
  // toml++ 3.3 skips the blanks after the backslash, asking of each character whether it
  // is blank; of U+00A7, that is undefined behaviour (valid TOML all the same).
  CHECK(Hazard("s = \"\"\"\\\n\xC2\xA7\"\"\"\n") ==
        "f.toml:2:1: a non-ASCII character right after a line-ending backslash, which this "
        "TOML parser cannot read: write it as a \\u escape, or put an ASCII character before "
        "it");
  CHECK(Where("s = \"\"\"a \\  \r\n\n   \t\xC2\xA7\"\"\"\n") == "f.toml:3:5");
  // An ASCII character first, or an escape, and all is well.
  CHECK(Where("s = \"\"\"\\\n  x\xC2\xA7\"\"\"\n") == "none");
  CHECK(Where("s = \"\"\"\\\n\\u00A7\"\"\"\n") == "none");
  CHECK(Where("s = \"\"\"\\\\\n\xC2\xA7\"\"\"\n") == "none");  // an escaped backslash
  CHECK(Where("s = '''\\\n\xC2\xA7'''\n") == "none");          // no escapes in literal strings

  Diagnostics diagnostics;
  CHECK_FALSE(tether::ParseToml("s = \"\"\"\\\n\xC2\xA7\"\"\"\n", "a.toml", diagnostics));
  CHECK(diagnostics.ToString().find("a.toml:2:1: TOML syntax error: a non-ASCII character right "
                                    "after a line-ending backslash") == 0);
  Diagnostics fine;
  auto parsed = tether::ParseToml("s = \"\"\"\\\n  x\xC2\xA7\"\"\"\n", "a.toml", fine);
  REQUIRE(parsed);
  CHECK((*parsed)["s"].value<std::string>() == "x\xC2\xA7");
}

TEST_CASE("A backslash before a non-ASCII character in a multi-line string is refused") {
  // Found by the profile fuzzer: toml++ 3.3 skips the blanks after the backslash, asking
  // of U+00A7 whether it is one. It is no escape either.
  const std::string no_escape = "a backslash before a non-ASCII character, which is no escape";
  CHECK(Hazard("s = \"\"\"\\\xC2\xA7\"\"\"\n") == "f.toml:1:9: " + no_escape);
  CHECK(Hazard("s = \"\"\"x\\ \t\xC2\xA7\"\"\"\n") == "f.toml:1:12: " + no_escape);
  // In a one-line basic string toml++ does not ask (and reports the bad escape itself).
  CHECK(Where("s = \"\\\xC2\xA7\"\n") == "none");
  Diagnostics diagnostics;
  CHECK_FALSE(tether::ParseToml("s = \"\\\xC2\xA7\"\n", "a.toml", diagnostics));
  CHECK(diagnostics.ToString().find("a.toml:1:") == 0);
}
