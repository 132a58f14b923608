#include "agent/desired/template.hpp"

#include <algorithm>

namespace tether {

namespace {

std::string_view TrimSpaces(std::string_view text) {
  const auto begin = text.find_first_not_of(" \t");
  if (begin == std::string_view::npos) return {};
  const auto end = text.find_last_not_of(" \t");
  return text.substr(begin, end - begin + 1);
}

// Where offsets of `text` are, counting from `origin`; asked for increasing offsets, it
// reads each character once.
class Locator {
 public:
  Locator(std::string_view text, const Location& origin, bool inline_origin)
      : text_(text), where_(origin), inline_(inline_origin) {
    if (where_.line == 0) where_.line = 1;
    if (where_.column == 0) where_.column = 1;
    if (inline_) where_ = origin;
  }

  Location At(std::size_t offset) {
    if (inline_) return where_;
    for (; offset_ < offset && offset_ < text_.size(); ++offset_) {
      if (text_[offset_] == '\n') {
        ++where_.line;
        where_.column = 1;
      } else {
        ++where_.column;
      }
    }
    return where_;
  }

 private:
  std::string_view text_;
  Location where_;
  bool inline_;
  std::size_t offset_ = 0;
};

}  // namespace

std::optional<std::string> ExpandTemplate(std::string_view text, const Location& origin,
                                          const TemplateContext& context, Diagnostics& diagnostics,
                                          bool inline_origin, std::size_t max_size) {
  Locator locator(text, origin, inline_origin);
  std::string result;
  result.reserve(std::min(text.size(), max_size));
  bool ok = true;
  // Appends `piece`, unless that would pass max_size: then says so at `where` (counted as
  // it goes, so a variable used a million times never takes memory it is not allowed).
  const auto append = [&](std::string_view piece, const Location& where) {
    if (piece.size() > max_size - result.size()) {
      diagnostics.Error(where, "the expanded content would pass " + std::to_string(max_size) +
                                   " bytes (the limit)");
      return false;
    }
    result += piece;
    return true;
  };
  std::size_t pos = 0;
  while (pos < text.size()) {
    const auto open = text.find("{{", pos);
    const Location where = locator.At(open == std::string_view::npos ? pos : open);
    if (open == std::string_view::npos) {
      if (!append(text.substr(pos), where)) return std::nullopt;
      break;
    }
    if (!append(text.substr(pos, open - pos), where)) return std::nullopt;
    const auto close = text.find("}}", open + 2);
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
        if (!append(literal, where)) return std::nullopt;
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
      } else if (!append(it->second, where)) {
        return std::nullopt;
      }
    } else if (scope == "host") {
      const std::string* fact = FindFact(context.host, name);
      if (fact == nullptr) {
        diagnostics.Error(where, "unknown host fact " + quoted +
                                     " (known: hostname, fqdn, machine_id, os_id, os_version, "
                                     "arch)");
        ok = false;
      } else if (!append(*fact, where)) {
        return std::nullopt;
      }
    } else {
      auto it = context.labels.find(std::string(name));
      if (it != context.labels.end()) {
        if (!append(it->second, where)) return std::nullopt;
      } else if (!context.labels_known) {
        diagnostics.Warning(where, "label " + quoted +
                                       " is not known here (labels are set in each host's "
                                       "agent.toml; pass --label to check it)");
        if (!append("<" + std::string(expression) + ">", where)) return std::nullopt;
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
