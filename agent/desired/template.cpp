#include "agent/desired/template.hpp"

namespace tether {

namespace {

std::string_view TrimSpaces(std::string_view text) {
  const auto begin = text.find_first_not_of(" \t");
  if (begin == std::string_view::npos) return {};
  const auto end = text.find_last_not_of(" \t");
  return text.substr(begin, end - begin + 1);
}

// Where offset `offset` of `text` is, counting from `origin`.
Location LocationAt(std::string_view text, std::size_t offset, const Location& origin,
                    bool inline_origin) {
  if (inline_origin) return origin;
  Location where = origin;
  if (where.line == 0) where.line = 1;
  if (where.column == 0) where.column = 1;
  for (std::size_t i = 0; i < offset && i < text.size(); ++i) {
    if (text[i] == '\n') {
      ++where.line;
      where.column = 1;
    } else {
      ++where.column;
    }
  }
  return where;
}

}  // namespace

std::optional<std::string> ExpandTemplate(std::string_view text, const Location& origin,
                                          const TemplateContext& context, Diagnostics& diagnostics,
                                          bool inline_origin) {
  std::string result;
  result.reserve(text.size());
  bool ok = true;
  std::size_t pos = 0;
  while (pos < text.size()) {
    const auto open = text.find("{{", pos);
    if (open == std::string_view::npos) {
      result += text.substr(pos);
      break;
    }
    result += text.substr(pos, open - pos);
    const auto close = text.find("}}", open + 2);
    const Location where = LocationAt(text, open, origin, inline_origin);
    if (close == std::string_view::npos) {
      diagnostics.Error(where,
                        "unterminated '{{' (no '}}' follows; write {{ \"{{\" }} for a "
                        "literal '{{')");
      return std::nullopt;
    }
    const std::string_view expression = TrimSpaces(text.substr(open + 2, close - open - 2));
    pos = close + 2;

    if (expression.size() >= 2 && (expression.front() == '"' || expression.front() == '\'') &&
        expression.back() == expression.front()) {
      const std::string_view literal = expression.substr(1, expression.size() - 2);
      if (literal.find(expression.front()) == std::string_view::npos) {
        result += literal;
        continue;
      }
    }
    const auto dot = expression.find('.');
    const std::string_view scope = expression.substr(0, dot);
    const std::string_view name =
        dot == std::string_view::npos ? std::string_view() : expression.substr(dot + 1);
    const std::string quoted = "'" + std::string(expression) + "'";
    if (name.empty() || (scope != "vars" && scope != "host" && scope != "labels")) {
      diagnostics.Error(where, "unknown template expression " + quoted +
                                   " (use vars.NAME, host.FACT, labels.NAME or \"text\")");
      ok = false;
      continue;
    }
    if (scope == "vars") {
      auto it = context.vars.find(std::string(name));
      if (it == context.vars.end()) {
        diagnostics.Error(where, "unknown variable " + quoted + " (not set in any [vars])");
        ok = false;
      } else {
        result += it->second;
      }
    } else if (scope == "host") {
      const std::string* fact = FindFact(context.host, name);
      if (fact == nullptr) {
        diagnostics.Error(where, "unknown host fact " + quoted +
                                     " (known: hostname, fqdn, machine_id, os_id, os_version, "
                                     "arch)");
        ok = false;
      } else {
        result += *fact;
      }
    } else {
      auto it = context.labels.find(std::string(name));
      if (it != context.labels.end()) {
        result += it->second;
      } else if (!context.labels_known) {
        diagnostics.Warning(where, "label " + quoted +
                                       " is not known here (labels are set in each host's "
                                       "agent.toml; pass --label to check it)");
        result += "<" + std::string(expression) + ">";
      } else {
        diagnostics.Error(where, "unknown label " + quoted + " (not in [labels] of agent.toml)");
        ok = false;
      }
    }
  }
  if (!ok) return std::nullopt;
  return result;
}

}  // namespace tether
