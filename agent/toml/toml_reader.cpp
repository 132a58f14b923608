#include "agent/toml/toml_reader.hpp"

#include <algorithm>

#include "common/duration.hpp"

namespace tether {

namespace {

constexpr std::string_view kBom = "\xEF\xBB\xBF";  // a UTF-8 byte order mark

// The line and column of byte `offset` of `text`; columns count characters, not the
// continuation bytes of UTF-8 sequences, nor a byte order mark.
Location Locate(std::string_view text, std::size_t offset, const std::string& file) {
  Location where{file, 1, 1};
  std::size_t i = text.substr(0, 3) == kBom ? 3 : 0;
  for (; i < offset && i < text.size(); ++i) {
    const auto c = static_cast<unsigned char>(text[i]);
    if (c == '\n') {
      ++where.line;
      where.column = 1;
    } else if ((c & 0xC0) != 0x80) {
      ++where.column;
    }
  }
  return where;
}

bool IsBlank(char c) { return c == ' ' || c == '\t'; }
bool IsNonAscii(char c) { return static_cast<unsigned char>(c) >= 0x80; }

}  // namespace

std::optional<TomlHazard> FindTomlHazard(std::string_view text, const std::string& file) {
  enum class State { kCode, kComment, kBasic, kLiteral, kMultiBasic, kMultiLiteral };
  State state = State::kCode;
  // Whether a value may start here (after "=", in an array), and the arrays ('[') and
  // inline tables ('{') open around it.
  bool expect_value = false;
  std::string open;
  auto hazard = [&](std::size_t at, std::string message) {
    return TomlHazard{Locate(text, at, file), std::move(message)};
  };
  const std::string non_ascii = "a non-ASCII character outside a string or comment";
  for (std::size_t i = text.substr(0, 3) == kBom ? 3 : 0; i < text.size(); ++i) {
    const char c = text[i];
    const std::string_view rest = text.substr(i);
    switch (state) {
      case State::kCode:
        if (IsNonAscii(c)) return hazard(i, non_ascii);
        if (c == '#') {
          state = State::kComment;
        } else if (c == '"' || c == '\'') {
          const bool multi = rest.substr(0, 3) == std::string(3, c);
          if (c == '"') {
            state = multi ? State::kMultiBasic : State::kBasic;
          } else {
            state = multi ? State::kMultiLiteral : State::kLiteral;
          }
          if (multi) i += 2;
          expect_value = false;
        } else if (c == '\n') {
          if (open.empty()) expect_value = false;
        } else if (IsBlank(c) || c == '\r') {
          // nothing changes
        } else if (c == '=') {
          expect_value = true;
        } else if (c == '[' || c == '{') {
          if (expect_value) open.push_back(c);  // else a table header
          expect_value = c == '[' && !open.empty() && open.back() == '[';
        } else if (c == ']' || c == '}') {
          if (!open.empty() && open.back() == (c == ']' ? '[' : '{')) open.pop_back();
          expect_value = false;
        } else if (c == ',') {
          expect_value = !open.empty() && open.back() == '[';
        } else if (expect_value) {
          // A bare value: a number, a boolean, a date and time (which may hold a space).
          // toml++ reads on to the value's end whatever comes, asking of each character
          // whether it ends the value.
          std::size_t end = i;
          for (; end < text.size(); ++end) {
            const char v = text[end];
            if (v == '\n' || v == ',' || v == ']' || v == '}' || v == '#') break;
            if (IsNonAscii(v)) return hazard(end, non_ascii);
            if (v == '"' || v == '\'') return hazard(end, "unexpected quote after a value");
          }
          i = end - 1;
          expect_value = false;
        }
        break;
      case State::kComment:
        if (c == '\n') state = State::kCode;
        break;
      case State::kBasic:
      case State::kMultiBasic:
        if (c == '\\' && state == State::kMultiBasic) {
          // After a backslash, toml++ skips blanks (a line-ending backslash may have some
          // after it), asking of each character whether it is blank.
          std::size_t next = i + 1;
          while (next < text.size() && IsBlank(text[next])) ++next;
          if (next < text.size() && IsNonAscii(text[next])) {
            return hazard(next, "a backslash before a non-ASCII character, which is no escape");
          }
          // A line-ending backslash: the same after the line breaks too.
          if (next < text.size() && (text[next] == '\n' || text[next] == '\r')) {
            while (next < text.size() &&
                   (IsBlank(text[next]) || text[next] == '\n' || text[next] == '\r')) {
              ++next;
            }
            if (next < text.size() && IsNonAscii(text[next])) {
              return hazard(next,
                            "a non-ASCII character right after a line-ending backslash, which "
                            "this TOML parser cannot read: write it as a \\u escape, or put an "
                            "ASCII character before it");
            }
            i = next - 1;
            break;
          }
        }
        if (c == '\\' && i + 1 < text.size() && text[i + 1] != '\n') {
          ++i;  // an escaped character, e.g. \"
        } else if (state == State::kBasic && (c == '"' || c == '\n')) {
          state = State::kCode;
        } else if (state == State::kMultiBasic && rest.substr(0, 3) == "\"\"\"") {
          // Up to two quotes may stand before the closing ones: """a "quote""""
          const std::size_t run = std::min<std::size_t>(rest.find_first_not_of('"'), rest.size());
          state = State::kCode;
          i += run - 1;
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
        }
        break;
    }
  }
  return std::nullopt;
}

std::optional<toml::table> ParseToml(std::string_view text, const std::string& file,
                                     Diagnostics& diagnostics) {
  // toml++ 3.3 (Debian 12) reaches undefined behaviour on some non-ASCII characters where
  // it asks whether they are blank: such text never gets to it.
  if (auto found = FindTomlHazard(text, file)) {
    diagnostics.Error(found->where, "TOML syntax error: " + found->message);
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
