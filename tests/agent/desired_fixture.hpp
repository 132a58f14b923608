// A desired state rendered from profile text (and repo files), as tetherd renders it: from
// a tree, with source contents read again from that tree when needed. For engine and
// handler tests.
#pragma once

#include <map>
#include <memory>
#include <string>

#include <doctest/doctest.h>

#include "agent/desired/render.hpp"
#include "agent/desired/tree.hpp"
#include "agent/toml/diagnostics.hpp"
#include "tests/support/temp_dir.hpp"

namespace tether::testing {

struct Desired {
  TempDir repo{"desired-repo"};
  DesiredState state;

  // `profile` is hosts/h.toml of the repo; `files` are more repo files (path -> content).
  explicit Desired(const std::string& profile,
                   const std::map<std::string, std::string>& files = {}) {
    repo.WriteFile("hosts/h.toml", profile);
    for (const auto& [path, content] : files) repo.WriteFile(path, content);
    auto opened = DirectoryTree::Open(repo.path());
    REQUIRE(opened);
    std::shared_ptr<Tree> tree = std::move(*opened);
    RenderOptions options;
    options.content_tree = tree;
    options.profile = "hosts/h.toml";
    options.host.hostname = "h";
    Diagnostics diagnostics;
    state = RenderProfile(*tree, options, diagnostics);
    REQUIRE_MESSAGE(!diagnostics.has_errors(), diagnostics.ToString());
  }
};

}  // namespace tether::testing
