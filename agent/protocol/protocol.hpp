// The control protocol (`tether.ctl/v1`, docs/control-socket.md), shared by tetherd's
// control server and tetherctl: the command table (name, who may send it), requests as
// typed values, and typed reads of JSON that never throw.
//
// Everything here reads input a client or a daemon sent: no function throws, whatever the
// JSON holds; a wrong type or value is an Error that says which field and what it takes.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include "common/error.hpp"
#include "common/json_fields.hpp"

namespace tether::protocol {

inline constexpr char kSchema[] = "tether.ctl/v1";

// The longest request line tetherd reads.
inline constexpr std::size_t kMaxRequest = 64 << 10;

enum class Command {
  kStatus,
  kSync,
  kPlan,
  kHistory,
  kShow,
  kEvents,
  kMetrics,
  kRollback,
  kSuspend,
  kResume
};

// Who may send a command: root (kAdmin) may send every command, members of the read
// group only kReader ones, anyone else none.
enum class Role { kNone, kReader, kAdmin };

struct CommandInfo {
  Command command;
  std::string_view name;  // on the wire: {"command": NAME}
  Role needs;             // the least role that may send it
};

// Every command, in the order docs/control-socket.md lists them.
[[nodiscard]] std::span<const CommandInfo> Commands();
[[nodiscard]] const CommandInfo& InfoOf(Command command);
[[nodiscard]] std::optional<Command> FindCommand(std::string_view name);
// Whether `role` may send `command`.
[[nodiscard]] bool Allows(Role role, Command command);

// A request, as tetherd acts on it. Fields a command does not take keep their defaults.
struct Request {
  Command command = Command::kStatus;
  bool wait = false;    // sync: reply when the cycle this request starts is over
  bool detail = false;  // status: the last cycle's output and report too
  std::int64_t id = 0;  // show: the history entry
  std::string commit;   // rollback: an applied commit, or a prefix of at least 4 characters
  std::string reason;   // suspend: why (may be empty)
};

// Parses one request line from a peer of `role`. On failure, the error is a sentence for
// the client: "a request is one line of JSON", "unknown command 'x'", "permission denied:
// 'sync' needs root" (checked before the command's members), "'id' must be an integer".
[[nodiscard]] Result<Request> ParseRequest(std::string_view line, Role role = Role::kAdmin);

// The request as tetherctl sends it.
[[nodiscard]] nlohmann::json RequestJson(const Request& request);

// Typed, non-throwing reads of JSON (common/json_fields.hpp).
using Fields = ::tether::JsonFields;

// A reply refusing a request: {"ok": false, "schema": ..., "error": ERROR}.
[[nodiscard]] nlohmann::json Refusal(std::string_view error);

}  // namespace tether::protocol
