#include "common/error.hpp"

#include <cerrno>

#include <doctest/doctest.h>

using tether::Error;
using tether::Result;

namespace {

Result<int> ParsePort(int value) {
  if (value <= 0) return tether::Fail(std::errc::invalid_argument, "port must be positive");
  return value;
}

Result<int> LoadConfig(int value) {
  auto port = ParsePort(value);
  if (!port) return tether::AddContext(port, "agent.toml:3:1: key 'listen'");
  return *port;
}

}  // namespace

TEST_CASE("Error keeps its code and puts each layer's context in front") {
  auto result = LoadConfig(-1);
  REQUIRE_FALSE(result);
  CHECK(result.error().Is(std::errc::invalid_argument));
  CHECK(result.error().message() == "agent.toml:3:1: key 'listen': port must be positive");

  const Error outer = result.error().WithContext("reload");
  CHECK(outer.message() == "reload: agent.toml:3:1: key 'listen': port must be positive");
  CHECK(result.error().message() == "agent.toml:3:1: key 'listen': port must be positive");
  CHECK(LoadConfig(8080).value() == 8080);
}

TEST_CASE("Error::FromErrno names the operation and the system's reason") {
  const Error error = Error::FromErrno(ENOSPC, "write '/etc/motd'");
  CHECK(error.Is(std::errc::no_space_on_device));
  CHECK(error.message() == "write '/etc/motd': No space left on device");
}
