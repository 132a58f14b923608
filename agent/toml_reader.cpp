#include "agent/toml_reader.hpp"

#include "common/duration.hpp"

namespace tether {

std::optional<toml::table> ParseToml(std::string_view text, const std::string& file,
                                     Diagnostics& diagnostics) {
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
