// A rendered desired state kept for the next cycle: rendering a profile of many resources
// parses its TOML and walks the commit's trees, which costs more than everything else a
// no-op or a drift repair does. A render depends only on the commit, the host's facts and
// the agent's configuration (RenderKey); while they stay the same, the next cycle reads
// the desired state back (a compact binary form, in the state dir) instead of rendering.
//
// The form is this program's own: a version's cache is only read by the same version (the
// key holds it). Anything unexpected in it (cut short, another key, a wrong checksum)
// makes it unreadable, never an error: the profile is then rendered.
#pragma once

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "agent/desired/desired_state.hpp"
#include "agent/desired/render.hpp"

namespace tether {

// What a render of `commit` with `options` depends on, as 64 hex digits.
[[nodiscard]] std::string RenderKey(std::string_view commit, const RenderOptions& options);

// The host's name when a render was made, and the FQDN the resolver gave it then.
struct RenderedName {
  std::string hostname;
  std::string fqdn;

  bool operator==(const RenderedName&) const = default;
};

// A desired state with the problems its render reported (warnings: a cache holds only a
// render without errors).
struct CachedRender {
  DesiredState desired;
  std::vector<std::string> problems;
  RenderedName name = {};
  // Files of the render left out of `desired` by a decode's filter (DecodeRender).
  std::size_t files_left_out = 0;
};

// Which files a decode keeps, by id and drift mode (unset: the agent's default); every
// resource of another kind is kept. A drift repair of a few files of thousands decodes
// those few.
using FileFilter = std::function<bool(std::string_view id, std::optional<DriftMode> drift)>;

// The name kept with the render `bytes` hold, read without checking the rest: a drift
// repair takes its FQDN from there instead of asking the resolver again (the key it
// makes with it must still be the render's, see DecodeRender). nullopt when `bytes` are
// not a render.
[[nodiscard]] std::optional<RenderedName> RenderedNameOf(std::string_view bytes);

// `render` as bytes, under `key`.
[[nodiscard]] std::string EncodeRender(std::string_view key, const CachedRender& render);

// The render `bytes` hold when they hold one under `key`; else nullopt. The contents its
// files read again from their commit's tree (FileSpec::lazy) are read from `tree`. With
// `keep`, only the files it accepts are decoded; the others are counted (files_left_out).
[[nodiscard]] std::optional<CachedRender> DecodeRender(std::string_view bytes, std::string_view key,
                                                       const std::shared_ptr<Tree>& tree,
                                                       const FileFilter& keep = nullptr);

}  // namespace tether
