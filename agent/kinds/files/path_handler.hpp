// The file kinds: [[file]], [[directory]] and [[symlink]].
#pragma once

#include <memory>

#include "agent/engine/engine.hpp"
#include "common/filesystem.hpp"

namespace tether {

// The handler of files, directories and symlinks, on a Filesystem (rooted at --root).
// Owners and groups are looked up in the root's /etc/passwd and /etc/group.
[[nodiscard]] std::unique_ptr<KindHandler> MakePathHandler(Filesystem& fs);

}  // namespace tether
