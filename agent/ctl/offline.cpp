#include "agent/ctl/offline.hpp"

#include <map>
#include <set>

#include "agent/config/agent_config.hpp"
#include "agent/desired/render.hpp"
#include "agent/desired/render_output.hpp"

namespace tether {

namespace {

// Everything a render needs that does not depend on the host.
struct Setup {
  std::unique_ptr<DirectoryTree> tree;
  std::string profile_pattern = SourceConfig{}.profile;
  std::vector<std::string> allowed_paths = ApplyConfig{}.allowed_paths;
  std::map<std::string, std::string> labels;
  bool labels_known = false;
};

std::optional<Setup> Prepare(const OfflineOptions& options, std::FILE* err) {
  Setup setup;
  auto tree = DirectoryTree::Open(options.dir);
  if (!tree) {
    std::fprintf(err, "tetherctl: %s\n", tree.error().message().c_str());
    return std::nullopt;
  }
  setup.tree = std::move(*tree);
  if (options.config) {
    auto config = LoadAgentConfig(*options.config, {.check_files = false});
    if (!config) {
      std::fprintf(err, "%s\n", config.error().message().c_str());
      return std::nullopt;
    }
    setup.profile_pattern = config->source.profile;
    setup.allowed_paths = config->apply.allowed_paths;
    setup.labels = config->labels;
    setup.labels_known = true;
  }
  for (const auto& label : options.labels) {
    const auto equals = label.find('=');
    if (equals == std::string::npos || equals == 0) {
      std::fprintf(err, "tetherctl: --label: expected NAME=VALUE, got '%s'\n", label.c_str());
      return std::nullopt;
    }
    setup.labels[label.substr(0, equals)] = label.substr(equals + 1);
    setup.labels_known = true;
  }
  return setup;
}

std::optional<HostFacts> Facts(const OfflineOptions& options, const std::string& host,
                               std::FILE* err) {
  HostFacts facts = FactsForHost(host);
  for (const auto& fact : options.facts) {
    if (auto set = SetFact(facts, fact); !set) {
      std::fprintf(err, "tetherctl: --fact: %s\n", set.error().message().c_str());
      return std::nullopt;
    }
  }
  return facts;
}

RenderOptions ForHost(const Setup& setup, const HostFacts& facts) {
  RenderOptions render;
  render.profile = ExpandProfilePath(setup.profile_pattern, facts);
  render.host = facts;
  render.labels = setup.labels;
  render.labels_known = setup.labels_known;
  render.allowed_paths = setup.allowed_paths;
  return render;
}

// The hosts that have a profile: files "<dir>/<name>.toml" where the pattern is
// "<dir>/{hostname}.toml" (or {fqdn}).
std::vector<std::string> DiscoverHosts(Tree& tree, const std::string& pattern) {
  std::vector<std::string> hosts;
  const auto placeholder = pattern.find('{');
  const auto slash = pattern.rfind('/', placeholder);
  const std::string directory = slash == std::string::npos ? "" : pattern.substr(0, slash);
  const auto close = pattern.find('}', placeholder);
  const std::string suffix = close == std::string::npos ? "" : pattern.substr(close + 1);
  if (placeholder == std::string::npos || suffix.find('/') != std::string::npos) return hosts;
  auto names = tree.List(directory);
  if (!names) return hosts;
  for (const auto& name : *names) {
    if (name.size() > suffix.size() &&
        name.compare(name.size() - suffix.size(), suffix.size(), suffix) == 0) {
      hosts.push_back(name.substr(0, name.size() - suffix.size()));
    }
  }
  return hosts;
}

// Diagnostics name repo files; show them as paths a user can open from here.
std::string ShownPath(const std::string& dir, const std::string& text) {
  if (dir == "." || dir.empty()) return text;
  return (dir.back() == '/' ? dir : dir + "/") + text;
}

}  // namespace

int RunValidate(const OfflineOptions& options, std::FILE* out, std::FILE* err) {
  auto setup = Prepare(options, err);
  if (!setup) return 2;
  std::vector<std::string> hosts = options.hosts;
  if (hosts.empty()) hosts = DiscoverHosts(*setup->tree, setup->profile_pattern);
  if (hosts.empty()) {
    std::fprintf(err, "tetherctl: no host profiles found in '%s' (pattern \"%s\")\n",
                 options.dir.c_str(), setup->profile_pattern.c_str());
    return 1;
  }
  std::set<std::string> printed;
  std::size_t errors = 0;
  std::size_t warnings = 0;
  std::size_t resources = 0;
  for (const auto& host : hosts) {
    auto facts = Facts(options, host, err);
    if (!facts) return 2;
    Diagnostics diagnostics;
    DesiredState state = RenderProfile(*setup->tree, ForHost(*setup, *facts), diagnostics);
    resources += state.resources.size();
    for (const auto& diagnostic : diagnostics.all()) {
      // A problem in a role shows once, not once per host that includes it.
      const std::string line = ShownPath(options.dir, diagnostic.ToString());
      if (!printed.insert(line).second) continue;
      std::fprintf(out, "%s\n", line.c_str());
      (diagnostic.warning ? warnings : errors) += 1;
    }
  }
  std::fprintf(out, "%zu %s checked, %zu resources: %zu %s, %zu %s\n", hosts.size(),
               hosts.size() == 1 ? "profile" : "profiles", resources, errors,
               errors == 1 ? "error" : "errors", warnings, warnings == 1 ? "warning" : "warnings");
  return errors > 0 ? 1 : 0;
}

int RunRender(const OfflineOptions& options, std::FILE* out, std::FILE* err) {
  if (options.hosts.size() != 1) {
    std::fprintf(err, "tetherctl render: name exactly one --host\n");
    return 2;
  }
  auto setup = Prepare(options, err);
  if (!setup) return 2;
  auto facts = Facts(options, options.hosts.front(), err);
  if (!facts) return 2;
  Diagnostics diagnostics;
  DesiredState state = RenderProfile(*setup->tree, ForHost(*setup, *facts), diagnostics);
  for (const auto& diagnostic : diagnostics.all()) {
    std::fprintf(err, "%s\n", ShownPath(options.dir, diagnostic.ToString()).c_str());
  }
  if (diagnostics.has_errors()) return 1;
  const std::string text =
      options.json
          ? DesiredStateToJson(state, *facts)
                    .dump(2, ' ', false, nlohmann::ordered_json::error_handler_t::replace) +
                "\n"
          : DesiredStateToText(state, *facts);
  std::fputs(text.c_str(), out);
  return 0;
}

}  // namespace tether
