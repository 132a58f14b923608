// Strict templates for file and unit contents.
//
//   {{ vars.NAME }}    a variable from the profile's [vars] (after includes are merged)
//   {{ host.FACT }}    hostname, fqdn, machine_id, os_id, os_version, arch
//   {{ labels.NAME }}  a label from the host's agent.toml [labels]
//   {{ "text" }}       the text as is: {{ "{{" }} writes a literal "{{"
//
// Spaces inside the braces are optional. Nothing else is understood: no filters, no
// conditions, no code. An unknown variable is an error with its location, never an empty
// string.
#pragma once

#include <map>
#include <optional>
#include <string>
#include <string_view>

#include "agent/desired/facts.hpp"
#include "agent/toml/diagnostics.hpp"

namespace tether {

struct TemplateContext {
  const std::map<std::string, std::string>& vars;
  const HostFacts& host;
  const std::map<std::string, std::string>& labels;
  // False when the host's labels are not known (tetherctl validate without --label): an
  // unknown label is then a warning and expands to "<labels.NAME>".
  bool labels_known = true;
};

// Expands `text`. `origin` locates its first character, so diagnostics point at the line
// and column of the expression; for text from a TOML string, `inline_origin` reports the
// string's own location instead (escapes make offsets unreliable). Returns nothing when
// any error was reported, or when the result would pass `max_size` bytes (checked as it
// grows: an error at the expression that would pass it).
[[nodiscard]] std::optional<std::string> ExpandTemplate(
    std::string_view text, const Location& origin, const TemplateContext& context,
    Diagnostics& diagnostics, bool inline_origin = false,
    std::size_t max_size = static_cast<std::size_t>(-1));

}  // namespace tether
