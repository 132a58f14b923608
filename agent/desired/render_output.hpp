// Showing a desired state to people (text) and to scripts (JSON, schema tether.desired/v1).
// Secret contents are never shown: only their size.
#pragma once

#include <string>

#include <nlohmann/json.hpp>

#include "agent/desired/desired_state.hpp"
#include "agent/desired/facts.hpp"

namespace tether {

[[nodiscard]] std::string DesiredStateToText(const DesiredState& state, const HostFacts& host);

[[nodiscard]] nlohmann::ordered_json DesiredStateToJson(const DesiredState& state,
                                                        const HostFacts& host);

// "0644"
[[nodiscard]] std::string FormatMode(std::uint32_t mode);

}  // namespace tether
