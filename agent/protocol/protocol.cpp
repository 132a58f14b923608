#include "agent/protocol/protocol.hpp"

#include <array>
#include <limits>

namespace tether::protocol {

namespace {

using Json = nlohmann::json;

constexpr std::array kCommands = {
    CommandInfo{Command::kStatus, "status", Role::kReader},
    CommandInfo{Command::kSync, "sync", Role::kAdmin},
    CommandInfo{Command::kPlan, "plan", Role::kReader},
    CommandInfo{Command::kHistory, "history", Role::kReader},
    CommandInfo{Command::kShow, "show", Role::kReader},
    CommandInfo{Command::kEvents, "events", Role::kReader},
    CommandInfo{Command::kMetrics, "metrics", Role::kReader},
    CommandInfo{Command::kRollback, "rollback", Role::kAdmin},
    CommandInfo{Command::kSuspend, "suspend", Role::kAdmin},
    CommandInfo{Command::kResume, "resume", Role::kAdmin},
};

// The longest string field a request may carry (a commit id, a reason).
constexpr std::size_t kMaxField = 4096;

tl::unexpected<Error> WrongType(std::string_view key, const char* wanted) {
  return Fail(std::errc::invalid_argument, "'" + std::string(key) + "' must be " + wanted);
}

}  // namespace

std::span<const CommandInfo> Commands() { return kCommands; }

const CommandInfo& InfoOf(Command command) {
  for (const auto& info : kCommands) {
    if (info.command == command) return info;
  }
  std::abort();  // every enumerator is in the table
}

std::optional<Command> FindCommand(std::string_view name) {
  for (const auto& info : kCommands) {
    if (info.name == name) return info.command;
  }
  return std::nullopt;
}

bool Allows(Role role, Command command) {
  const Role needs = InfoOf(command).needs;
  return role == Role::kAdmin || (role == Role::kReader && needs == Role::kReader);
}

Result<Request> ParseRequest(std::string_view line, Role role) {
  const Json json = Json::parse(line, nullptr, false);
  if (json.is_discarded()) {
    return Fail(std::errc::invalid_argument, "a request is one line of JSON");
  }
  const Fields fields(json);
  auto name = fields.String("command");
  if (!name) return Fail(name.error());
  if (!json.is_object() || name->empty()) {
    return Fail(std::errc::invalid_argument, "a request is {\"command\": NAME, ...}");
  }
  const auto command = FindCommand(*name);
  if (!command) {
    return Fail(std::errc::invalid_argument,
                "unknown command '" + name->substr(0, 64) + (name->size() > 64 ? "...'" : "'"));
  }
  // Who may send it, before what it carries: a reader learns no more than that.
  if (!Allows(role, *command)) {
    return Fail(std::errc::permission_denied,
                "permission denied: '" + std::string(InfoOf(*command).name) + "' needs root");
  }
  Request request;
  request.command = *command;
  switch (*command) {
    case Command::kStatus: {
      auto detail = fields.Bool("detail", false);
      if (!detail) return Fail(detail.error());
      request.detail = *detail;
      break;
    }
    case Command::kSync: {
      auto wait = fields.Bool("wait", false);
      if (!wait) return Fail(wait.error());
      request.wait = *wait;
      break;
    }
    case Command::kShow: {
      auto id = fields.Int("id", 0);
      if (!id) return Fail(id.error());
      request.id = *id;
      break;
    }
    case Command::kRollback: {
      auto commit = fields.String("commit");
      if (!commit) return Fail(commit.error());
      if (commit->size() > kMaxField) return WrongType("commit", "a commit id");
      request.commit = std::move(*commit);
      break;
    }
    case Command::kSuspend: {
      auto reason = fields.String("reason");
      if (!reason) return Fail(reason.error());
      if (reason->size() > kMaxField) return WrongType("reason", "at most 4096 bytes");
      request.reason = std::move(*reason);
      break;
    }
    default:
      break;
  }
  return request;
}

Json RequestJson(const Request& request) {
  Json json = {{"command", InfoOf(request.command).name}};
  switch (request.command) {
    case Command::kStatus:
      if (request.detail) json["detail"] = true;
      break;
    case Command::kSync:
      json["wait"] = request.wait;
      break;
    case Command::kShow:
      json["id"] = request.id;
      break;
    case Command::kRollback:
      json["commit"] = request.commit;
      break;
    case Command::kSuspend:
      if (!request.reason.empty()) json["reason"] = request.reason;
      break;
    default:
      break;
  }
  return json;
}

Json Refusal(std::string_view error) {
  return Json{{"ok", false}, {"schema", kSchema}, {"error", error}};
}

}  // namespace tether::protocol
