#include "agent/toml_reader.hpp"

#include <algorithm>

#include "common/duration.hpp"

namespace tether {

std::optional<Location> FindNonAsciiOutsideStrings(std::string_view text, const std::string& file) {
  enum class State { kCode, kComment, kBasic, kLiteral, kMultiBasic, kMultiLiteral };
  State state = State::kCode;
  std::uint32_t line = 1;
  std::uint32_t column = 0;
  std::size_t i = text.substr(0, 3) == "\xEF\xBB\xBF" ? 3 : 0;  // a UTF-8 byte order mark
  for (; i < text.size(); ++i) {
    const unsigned char c = static_cast<unsigned char>(text[i]);
    // Columns count characters, not the continuation bytes of UTF-8 sequences.
    if ((c & 0xC0) != 0x80) ++column;
    const std::string_view rest = text.substr(i);
    switch (state) {
      case State::kCode:
        if (c >= 0x80) return Location{file, line, column};
        if (c == '#') {
          state = State::kComment;
        } else if (rest.substr(0, 3) == "\"\"\"") {
          state = State::kMultiBasic;
          i += 2;
          column += 2;
        } else if (rest.substr(0, 3) == "'''") {
          state = State::kMultiLiteral;
          i += 2;
          column += 2;
        } else if (c == '"') {
          state = State::kBasic;
        } else if (c == '\'') {
          state = State::kLiteral;
        }
        break;
      case State::kComment:
        if (c == '\n') state = State::kCode;
        break;
      case State::kBasic:
      case State::kMultiBasic:
        if (c == '\\' && i + 1 < text.size() && text[i + 1] != '\n') {
          ++i;  // an escaped character, e.g. \" (an escaped newline is a line break below)
          ++column;
        } else if (state == State::kBasic && (c == '"' || c == '\n')) {
          state = State::kCode;
        } else if (state == State::kMultiBasic && rest.substr(0, 3) == "\"\"\"") {
          // Up to two quotes may stand before the closing ones: """a "quote""""
          const std::size_t run = std::min<std::size_t>(rest.find_first_not_of('"'), rest.size());
          state = State::kCode;
          i += run - 1;
          column += static_cast<std::uint32_t>(run - 1);
        }
        break;
      case State::kLiteral:
        if (c == '\'' || c == '\n') state = State::kCode;
        break;
      case State::kMultiLiteral:
        if (rest.substr(0, 3) == "'''") {
          const std::size_t run = std::min<std::size_t>(rest.find_first_not_of('\''), rest.size());
          state = State::kCode;
          i += run - 1;
          column += static_cast<std::uint32_t>(run - 1);
        }
        break;
    }
    if (c == '\n') {
      ++line;
      column = 0;
    }
  }
  return std::nullopt;
}

std::optional<toml::table> ParseToml(std::string_view text, const std::string& file,
                                     Diagnostics& diagnostics) {
  // TOML allows non-ASCII text only in strings and comments. toml++ 3.3 (Debian 12) reaches
  // undefined behaviour on some non-ASCII characters elsewhere, so they never get to it.
  if (auto where = FindNonAsciiOutsideStrings(text, file)) {
    diagnostics.Error(*where,
                      "TOML syntax error: a non-ASCII character outside a string or comment");
    return std::nullopt;
  }
  try {
    return toml::parse(text, file);
  } catch (const toml::parse_error& error) {
    const auto& begin = error.source().begin;
    diagnostics.Error({file, begin.line, begin.column},
                      "TOML syntax error: " + std::string(error.description()));
    return std::nullopt;
  }
}

Location NodeLocation(const toml::node& node, const std::string& file) {
  const auto& begin = node.source().begin;
  return {file, begin.line, begin.column};
}

const char* TomlTypeName(toml::node_type type) {
  switch (type) {
    case toml::node_type::table:
      return "a table";
    case toml::node_type::array:
      return "an array";
    case toml::node_type::string:
      return "a string";
    case toml::node_type::integer:
      return "an integer";
    case toml::node_type::floating_point:
      return "a float";
    case toml::node_type::boolean:
      return "a boolean";
    case toml::node_type::date:
      return "a date";
    case toml::node_type::time:
      return "a time";
    case toml::node_type::date_time:
      return "a date-time";
    default:
      return "nothing";
  }
}

TomlTable::TomlTable(const toml::table& table, std::string file, std::string prefix,
                     Diagnostics& diagnostics)
    : table_(table),
      file_(std::move(file)),
      prefix_(std::move(prefix)),
      diagnostics_(diagnostics) {}

std::string TomlTable::Name(std::string_view key) const {
  return prefix_.empty() ? std::string(key) : prefix_ + "." + std::string(key);
}

Location TomlTable::Where(std::string_view key) const {
  if (const toml::node* node = table_.get(key)) return NodeLocation(*node, file_);
  return WhereTable();
}

std::vector<std::string> TomlTable::Keys() const {
  std::vector<std::string> keys;
  for (const auto& [key, node] : table_) keys.emplace_back(key.str());
  return keys;
}

Location TomlTable::WhereTable() const { return NodeLocation(table_, file_); }

void TomlTable::Error(std::string_view key, const std::string& message) {
  diagnostics_.Error(Where(key), Name(key) + ": " + message);
}

void TomlTable::Warning(std::string_view key, const std::string& message) {
  diagnostics_.Warning(Where(key), Name(key) + ": " + message);
}

const toml::node* TomlTable::Lookup(std::string_view key, toml::node_type type,
                                    const char* type_name) {
  read_.emplace(key);
  const toml::node* node = table_.get(key);
  if (node == nullptr) return nullptr;
  if (node->type() != type) {
    Error(key, std::string("expected ") + type_name + ", got " + TomlTypeName(node->type()));
    return nullptr;
  }
  return node;
}

std::optional<std::string> TomlTable::String(std::string_view key) {
  const toml::node* node = Lookup(key, toml::node_type::string, "a string");
  if (node == nullptr) return std::nullopt;
  return node->as_string()->get();
}

std::optional<bool> TomlTable::Bool(std::string_view key) {
  const toml::node* node = Lookup(key, toml::node_type::boolean, "a boolean (true or false)");
  if (node == nullptr) return std::nullopt;
  return node->as_boolean()->get();
}

std::optional<std::int64_t> TomlTable::Integer(std::string_view key) {
  const toml::node* node = Lookup(key, toml::node_type::integer, "an integer");
  if (node == nullptr) return std::nullopt;
  return node->as_integer()->get();
}

std::optional<std::vector<std::string>> TomlTable::Strings(std::string_view key) {
  const toml::node* node = Lookup(key, toml::node_type::array, "an array of strings");
  if (node == nullptr) return std::nullopt;
  std::vector<std::string> result;
  bool ok = true;
  std::size_t index = 0;
  for (const toml::node& element : *node->as_array()) {
    if (const auto* string = element.as_string()) {
      result.push_back(string->get());
    } else {
      diagnostics_.Error(NodeLocation(element, file_), Name(key) + "[" + std::to_string(index) +
                                                           "]: expected a string, got " +
                                                           TomlTypeName(element.type()));
      ok = false;
    }
    ++index;
  }
  if (!ok) return std::nullopt;
  return result;
}

std::optional<std::chrono::milliseconds> TomlTable::Duration(std::string_view key) {
  auto text = String(key);
  if (!text) return std::nullopt;
  auto duration = ParseDuration(*text);
  if (!duration) {
    Error(key, duration.error().message());
    return std::nullopt;
  }
  return *duration;
}

const toml::table* TomlTable::Table(std::string_view key) {
  const toml::node* node = Lookup(key, toml::node_type::table, "a table");
  return node == nullptr ? nullptr : node->as_table();
}

const toml::array* TomlTable::Array(std::string_view key) {
  const toml::node* node = Lookup(key, toml::node_type::array, "an array");
  return node == nullptr ? nullptr : node->as_array();
}

const toml::node* TomlTable::Node(std::string_view key) {
  read_.emplace(key);
  return table_.get(key);
}

void TomlTable::ReportUnknownKeys() {
  for (const auto& [key, node] : table_) {
    if (read_.count(key.str()) > 0) continue;
    const auto& begin = key.source().begin;
    diagnostics_.Error({file_, begin.line, begin.column}, "unknown key '" + Name(key.str()) + "'");
  }
}

}  // namespace tether
