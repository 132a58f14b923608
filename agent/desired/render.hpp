// Rendering: from a fleet repo tree and host facts to the host's desired state.
//
// Reads the profile and its includes (in order; later wins per resource id), merges
// [vars], expands templates, checks every resource (paths confined to the repo and to
// apply.allowed_paths, modes, owners, names, sizes) and returns the resources sorted by
// kind and id. Every problem is reported in the diagnostics with its file, line and
// column; the state is usable only when there is no error.
#pragma once

#include <cstddef>
#include <map>
#include <string>
#include <vector>

#include "agent/config/agent_config.hpp"
#include "agent/desired/desired_state.hpp"
#include "agent/desired/facts.hpp"
#include "agent/desired/tree.hpp"
#include "agent/toml/diagnostics.hpp"

namespace tether {

struct RenderLimits {
  std::size_t max_profile_size = 1 << 20;  // one profile TOML file
  std::size_t max_file_size = 4 << 20;     // one file's or unit's content
  std::size_t max_total_size = 64 << 20;   // all contents together
  std::size_t max_resources = 100'000;
  int max_include_depth = 16;
  // Profile files read, an include read twice counting twice, and their bytes together:
  // counted as they are read, so includes that repeat cannot multiply without bound.
  std::size_t max_profile_files = 1000;
  std::size_t max_profile_bytes = 8 << 20;
};

struct RenderOptions {
  std::string profile;  // repo path, e.g. "hosts/web-01.toml"
  HostFacts host;
  std::map<std::string, std::string> labels;
  bool labels_known = true;  // see TemplateContext::labels_known
  std::vector<std::string> allowed_paths = ApplyConfig{}.allowed_paths;
  RenderLimits limits;
  // The tree being rendered, shared (tetherd): the content of a file whose source is not
  // a template is then not kept in the desired state but read again from this tree when
  // needed (FileSpec::lazy). Unset: every content is held (tetherctl).
  std::shared_ptr<Tree> content_tree;
};

[[nodiscard]] DesiredState RenderProfile(Tree& tree, const RenderOptions& options,
                                         Diagnostics& diagnostics);

}  // namespace tether
