#include "common/content_id.hpp"

#include <chrono>
#include <string>

#include <doctest/doctest.h>

#include "common/process.hpp"

using namespace std::chrono_literals;

namespace {

// What git itself says the blob id of `content` is.
std::string GitHashObject(const std::string& content) {
  tether::RunOptions options;
  options.argv = {"git", "hash-object", "--stdin"};
  options.input = content;
  options.timeout = 10s;
  auto run = tether::Run(options);
  REQUIRE(run);
  REQUIRE(run->out.size() == 41);
  return run->out.substr(0, 40);
}

}  // namespace

TEST_CASE("a content id is the blob id git gives the same bytes") {
  std::string binary("\0\x01\xff\n", 4);
  std::string large(70000, 'x');
  for (const std::string& content : {std::string(), std::string("hello\n"), binary, large}) {
    CHECK(tether::ContentIdHex(tether::ContentIdOf(content)) == GitHashObject(content));
  }
  CHECK(tether::ContentIdOf("a") != tether::ContentIdOf("b"));
}
