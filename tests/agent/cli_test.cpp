// The binaries' command lines: --help, --version, usage errors, exit codes.
#include <cstdlib>
#include <string>

#include <doctest/doctest.h>

#include "common/process.hpp"

namespace {

std::string Binary(const char* variable) {
  const char* path = std::getenv(variable);
  REQUIRE_MESSAGE(path != nullptr, variable << " is set by meson");
  return path;
}

tether::RunResult Invoke(const std::string& binary, std::vector<std::string> args) {
  tether::RunOptions options;
  options.argv = {binary};
  options.argv.insert(options.argv.end(), args.begin(), args.end());
  auto result = tether::Run(options);
  REQUIRE(result);
  return *result;
}

}  // namespace

TEST_CASE("tetherd and tetherctl answer --version with their name and the project version") {
  for (const char* name : {"tetherd", "tetherctl"}) {
    CAPTURE(name);
    const std::string variable = std::string(name) == "tetherd" ? "TETHERD" : "TETHERCTL";
    auto result = Invoke(Binary(variable.c_str()), {"--version"});
    CHECK(result.exit_code == 0);
    CHECK(result.out == std::string(name) + " " + std::getenv("TETHER_VERSION") + "\n");
  }
}

TEST_CASE("tetherd --help documents its options, files and exit status") {
  auto result = Invoke(Binary("TETHERD"), {"--help"});
  CHECK(result.exit_code == 0);
  for (const char* expected :
       {"Usage: tetherd [OPTIONS]", "--config FILE=/etc/tether/agent.toml", "--state-dir DIR",
        "--cache-dir DIR", "--socket PATH", "--root DIR", "--once", "--dry-run", "FILES",
        "/etc/tether/agent.d/*.toml", "EXIT STATUS"}) {
    CAPTURE(expected);
    CHECK(result.out.find(expected) != std::string::npos);
  }
}

TEST_CASE("tetherctl --help describes the tool") {
  auto result = Invoke(Binary("TETHERCTL"), {"--help"});
  CHECK(result.exit_code == 0);
  CHECK(result.out.find("Usage: tetherctl") != std::string::npos);
  CHECK(result.out.find("EXIT STATUS") != std::string::npos);
}

TEST_CASE("A usage error exits 2 and says what was wrong") {
  for (const char* variable : {"TETHERD", "TETHERCTL"}) {
    CAPTURE(variable);
    auto result = Invoke(Binary(variable), {"--no-such-flag"});
    CHECK(result.exit_code == 2);
    CHECK(result.err.find("--no-such-flag") != std::string::npos);
  }
  auto level = Invoke(Binary("TETHERD"), {"--log-level", "loud"});
  CHECK(level.exit_code == 2);
  CHECK(level.err.find("unknown log level 'loud'") != std::string::npos);
}
