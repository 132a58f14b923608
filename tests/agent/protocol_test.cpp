// The control protocol's requests: every command parses, every malformed field is a clear
// refusal, and nothing a client sends makes the parser throw.
#include "agent/protocol/protocol.hpp"

#include <string>
#include <vector>

#include <doctest/doctest.h>

using tether::protocol::Command;
using tether::protocol::ParseRequest;
using tether::protocol::Role;

TEST_CASE("Every command of the table parses, and goes back to the same request") {
  for (const auto& info : tether::protocol::Commands()) {
    CAPTURE(info.name);
    auto parsed = ParseRequest(R"({"command": ")" + std::string(info.name) + "\"}");
    REQUIRE(parsed);
    CHECK(parsed->command == info.command);
    auto again = ParseRequest(tether::protocol::RequestJson(*parsed).dump());
    REQUIRE(again);
    CHECK(again->command == info.command);
  }
  auto sync = ParseRequest(R"({"command": "sync", "wait": true})");
  REQUIRE(sync);
  CHECK(sync->wait);
  auto detail = ParseRequest(R"({"command": "status", "detail": true})");
  REQUIRE(detail);
  CHECK(detail->detail);
  CHECK_FALSE(ParseRequest(R"({"command": "status"})")->detail);
  CHECK(RequestJson(*detail) == nlohmann::json{{"command", "status"}, {"detail", true}});
  auto show = ParseRequest(R"({"command": "show", "id": 42})");
  REQUIRE(show);
  CHECK(show->id == 42);
  auto rollback = ParseRequest(R"({"command": "rollback", "commit": "74e69f76"})");
  REQUIRE(rollback);
  CHECK(rollback->commit == "74e69f76");
  auto suspend = ParseRequest(R"({"command": "suspend", "reason": "maintenance"})");
  REQUIRE(suspend);
  CHECK(suspend->reason == "maintenance");
  // Members a command does not take are ignored, as they always were.
  CHECK(ParseRequest(R"({"command": "status", "wait": "x", "id": []})"));
}

TEST_CASE("Who may send what: root everything, the read group only reads") {
  using tether::protocol::Allows;
  for (const auto& info : tether::protocol::Commands()) {
    CAPTURE(info.name);
    CHECK(Allows(Role::kAdmin, info.command));
    CHECK_FALSE(Allows(Role::kNone, info.command));
  }
  for (Command read : {Command::kStatus, Command::kPlan, Command::kHistory, Command::kShow,
                       Command::kEvents, Command::kMetrics}) {
    CHECK(Allows(Role::kReader, read));
  }
  for (Command write : {Command::kSync, Command::kRollback, Command::kSuspend, Command::kResume}) {
    CHECK_FALSE(Allows(Role::kReader, write));
  }
}

TEST_CASE("Malformed requests are refused with a sentence, never an exception") {
  struct Case {
    std::string line;
    std::string error;  // part of the message
  };
  const std::vector<Case> cases = {
      {"", "one line of JSON"},
      {"{", "one line of JSON"},
      {"[1, 2]", "{\"command\": NAME"},
      {"\"status\"", "{\"command\": NAME"},
      {"5", "{\"command\": NAME"},
      {"null", "{\"command\": NAME"},
      {"{}", "{\"command\": NAME"},
      {R"({"command": ""})", "{\"command\": NAME"},
      {R"({"command": 5})", "'command' must be a string"},
      {R"({"command": null})", "'command' must be a string"},
      {R"({"command": ["status"]})", "'command' must be a string"},
      {R"({"command": {"status": 1}})", "'command' must be a string"},
      {R"({"command": true})", "'command' must be a string"},
      {R"({"command": "reboot"})", "unknown command 'reboot'"},
      {R"({"command": "sync", "wait": "yes"})", "'wait' must be true or false"},
      {R"({"command": "sync", "wait": 1})", "'wait' must be true or false"},
      {R"({"command": "status", "detail": "yes"})", "'detail' must be true or false"},
      {R"({"command": "show", "id": "abc"})", "'id' must be an integer"},
      {R"({"command": "show", "id": 1.5})", "'id' must be an integer"},
      {R"({"command": "show", "id": 18446744073709551615})", "'id' must be an integer in range"},
      {R"({"command": "show", "id": null})", "'id' must be an integer"},
      {R"({"command": "rollback", "commit": 1234})", "'commit' must be a string"},
      {R"({"command": "rollback", "commit": ["a"]})", "'commit' must be a string"},
      {R"({"command": "suspend", "reason": false})", "'reason' must be a string"},
      {R"({"command": "suspend", "reason": {}})", "'reason' must be a string"},
      {"{\"command\": \"suspend\", \"reason\": \"" + std::string(5000, 'x') + "\"}",
       "'reason' must be at most 4096 bytes"},
      {"{\"command\": \"" + std::string(1000, 'x') + "\"}", "unknown command 'xxxx"},
      {"{\"command\": \"\xff\xfe\"}", "one line of JSON"},  // not UTF-8
      {std::string(30000, '[') + std::string(30000, ']'), "{\"command\": NAME"},
  };
  for (const auto& c : cases) {
    CAPTURE(c.line.substr(0, 80));
    auto parsed = ParseRequest(c.line);
    REQUIRE_FALSE(parsed);
    CHECK_MESSAGE(parsed.error().message().find(c.error) != std::string::npos,
                  parsed.error().message());
    CHECK(parsed.error().message().size() < 200);  // an unknown name is cut short
  }
}

TEST_CASE("A reader is refused a command it may not send before its members are looked at") {
  auto refused = ParseRequest(R"({"command": "sync", "wait": "x"})", Role::kReader);
  REQUIRE_FALSE(refused);
  CHECK(refused.error().message() == "permission denied: 'sync' needs root");
  CHECK(ParseRequest(R"({"command": "status"})", Role::kReader));
  auto typed = ParseRequest(R"({"command": "show", "id": "x"})", Role::kReader);
  REQUIRE_FALSE(typed);
  CHECK(typed.error().message() == "'id' must be an integer");
}

TEST_CASE("Lenient reads of what a daemon sent take the fallback for a wrong type") {
  const auto json = nlohmann::json::parse(
      R"({"n": 5, "s": "x", "b": true, "f": 2.9, "big": 18446744073709551615, "null": null})");
  const tether::protocol::Fields fields(json);
  CHECK(fields.IntOr("n", 0) == 5);
  CHECK(fields.IntOr("f", 0) == 2);
  CHECK(fields.IntOr("s", 7) == 7);
  CHECK(fields.IntOr("big", 7) == 7);
  CHECK(fields.StringOr("s") == "x");
  CHECK(fields.StringOr("n", "d") == "d");
  CHECK(fields.StringOr("missing", "d") == "d");
  CHECK(fields.BoolOr("b", false));
  CHECK_FALSE(fields.BoolOr("null", false));
  const nlohmann::json array = nlohmann::json::array({1, 2});
  CHECK(tether::protocol::Fields(array).StringOr("s", "d") == "d");
}
