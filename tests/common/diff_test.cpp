#include "common/diff.hpp"

#include <string>

#include <doctest/doctest.h>

#include "common/process.hpp"
#include "tests/support/temp_dir.hpp"

namespace {

// What GNU diff -u says, for comparison.
std::string GnuDiff(const std::string& before, const std::string& after) {
  tether::testing::TempDir dir("diff");
  dir.WriteFile("a", before);
  dir.WriteFile("b", after);
  tether::RunOptions options;
  options.argv = {"diff", "-u", "--label", "old", "--label", "new", dir.Path("a"), dir.Path("b")};
  auto result = tether::Run(options);
  REQUIRE(result);
  return result->out;
}

std::string Numbered(int from, int to, const std::string& tag = "") {
  std::string text;
  for (int i = from; i <= to; ++i) text += "line " + std::to_string(i) + tag + "\n";
  return text;
}

}  // namespace

TEST_CASE("UnifiedDiff matches GNU diff -u") {
  struct Case {
    const char* name;
    std::string before;
    std::string after;
  };
  const Case cases[] = {
      {"one line changed", "a\nb\nc\n", "a\nB\nc\n"},
      {"from nothing", "", "new\nfile\n"},
      {"to nothing", "old\nfile\n", ""},
      {"append", Numbered(1, 10), Numbered(1, 12)},
      {"prepend", Numbered(3, 10), Numbered(1, 10)},
      {"two distant hunks", Numbered(1, 30),
       "line 1\nline two\n" + Numbered(3, 27) + "line 28 changed\nline 29\nline 30\n"},
      {"two close hunks merge", Numbered(1, 20),
       Numbered(1, 4) + "x\n" + Numbered(6, 10) + "y\n" + Numbered(12, 20)},
      {"no newline at end", "a\nb", "a\nc"},
      {"newline added at end", "a\nb", "a\nb\n"},
      {"everything differs", Numbered(1, 5, "a"), Numbered(1, 7, "b")},
  };
  for (const auto& c : cases) {
    CAPTURE(std::string(c.name));
    CHECK(tether::UnifiedDiff(c.before, c.after, "old", "new") == GnuDiff(c.before, c.after));
  }
}

TEST_CASE("UnifiedDiff: equal texts give nothing, huge ones a summary") {
  CHECK(tether::UnifiedDiff("same\n", "same\n", "a", "b") == "");
  CHECK(tether::UnifiedDiff(Numbered(1, 100, "x"), Numbered(1, 100, "y"), "a", "b", 1000) ==
        "--- a\n+++ b\n@@ (100 lines -> 100 lines: too large to diff) @@\n");
}
