// Typed, located reading of TOML tables for agent.toml and fleet-repo profiles.
//
// Every problem becomes a Diagnostic "file:line:col: KEY: message"; reading goes on, so a
// user sees all problems at once. A key never read is reported as unknown by
// ReportUnknownKeys(), which catches typos such as "intervall".
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include <toml++/toml.h>

#include "agent/toml/diagnostics.hpp"

namespace tether {

// Parses `text`; on a syntax error reports it (with toml++'s own location) and returns
// nothing.
[[nodiscard]] std::optional<toml::table> ParseToml(std::string_view text, const std::string& file,
                                                   Diagnostics& diagnostics);

// Text that toml++ 3.3 (Debian 12) must not be given: on it, the parser asks of a
// non-ASCII character whether it is blank, and that question reaches undefined behaviour
// (a __builtin_unreachable in its Unicode tables) instead of a syntax error. The first of:
// - a non-ASCII character outside strings and comments;
// - a quote after a bare value (toml++ reads a bare value up to its end, across quotes, so
//   a string that follows is not a string to it), e.g. `port = 80"é"`;
// - in a multi-line basic string, a non-ASCII character after a backslash and blanks
//   (not an escape), or first after a line-ending backslash: the one case here that is
//   valid TOML.
struct TomlHazard {
  Location where;
  std::string message;  // "a non-ASCII character outside a string or comment"
};
[[nodiscard]] std::optional<TomlHazard> FindTomlHazard(std::string_view text,
                                                       const std::string& file);

// The location of `node` in `file`.
[[nodiscard]] Location NodeLocation(const toml::node& node, const std::string& file);

class TomlTable {
 public:
  // `prefix` names the table in messages ("source", "file[2]"); empty for the top level.
  TomlTable(const toml::table& table, std::string file, std::string prefix,
            Diagnostics& diagnostics);

  [[nodiscard]] bool Has(std::string_view key) const { return table_.contains(key); }
  // Every key of the table, in document order.
  [[nodiscard]] std::vector<std::string> Keys() const;

  // Each returns nothing when the key is absent, or (reported) of the wrong type.
  std::optional<std::string> String(std::string_view key);
  std::optional<bool> Bool(std::string_view key);
  std::optional<std::int64_t> Integer(std::string_view key);
  std::optional<std::vector<std::string>> Strings(std::string_view key);
  std::optional<std::chrono::milliseconds> Duration(std::string_view key);
  const toml::table* Table(std::string_view key);
  const toml::array* Array(std::string_view key);
  // The raw node, marked as read; no type check.
  const toml::node* Node(std::string_view key);

  // Where the value of `key` is, or the table itself when the key is absent.
  [[nodiscard]] Location Where(std::string_view key) const;
  [[nodiscard]] Location WhereTable() const;
  // "prefix.key" (or "key" at the top level).
  [[nodiscard]] std::string Name(std::string_view key) const;
  [[nodiscard]] const std::string& file() const { return file_; }

  // Reports "Name(key): message" at Where(key).
  void Error(std::string_view key, const std::string& message);
  void Warning(std::string_view key, const std::string& message);

  // Reports every key of the table that no accessor read.
  void ReportUnknownKeys();

 private:
  const toml::node* Lookup(std::string_view key, toml::node_type type, const char* type_name);

  const toml::table& table_;
  std::string file_;
  std::string prefix_;
  Diagnostics& diagnostics_;
  std::set<std::string, std::less<>> read_;
};

// "a string", "an integer", ... for messages.
[[nodiscard]] const char* TomlTypeName(toml::node_type type);

}  // namespace tether
