// tetherctl's offline commands: validate and render a fleet repo checkout, with no daemon.
#pragma once

#include <cstdio>
#include <optional>
#include <string>
#include <vector>

namespace tether {

struct OfflineOptions {
  std::string dir;                    // the fleet repo checkout
  std::vector<std::string> hosts;     // host names; validate: none means every hosts/*.toml
  std::vector<std::string> facts;     // "name=value" overrides of host facts
  std::vector<std::string> labels;    // "name=value" host labels
  std::optional<std::string> config;  // an agent.toml: profile pattern, labels, allowed_paths
  bool json = false;
};

// Checks every profile; prints each problem as "file:line:col: message" and a summary.
// Returns the exit status: 0 valid (warnings allowed), 1 errors, 2 usage error.
[[nodiscard]] int RunValidate(const OfflineOptions& options, std::FILE* out, std::FILE* err);

// Prints the desired state of options.hosts[0] (text, or JSON with options.json).
// Returns the exit status: 0 rendered, 1 errors, 2 usage error.
[[nodiscard]] int RunRender(const OfflineOptions& options, std::FILE* out, std::FILE* err);

}  // namespace tether
