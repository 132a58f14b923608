// What a ref of a file:// source points to, read from the source repository's own ref
// files: a poll that needs no git worker. Only the plain cases are answered (a loose ref
// holding a commit id, or a line of packed-refs, in a repository with its own git dir);
// anything else (a symbolic ref, a worktree, an odd URL or file) is left to the worker,
// which lists the refs as any transport does.
#pragma once

#include <optional>
#include <string>

namespace tether {

// The object id `ref` (a full ref name, e.g. refs/heads/main) names in the repository at
// `url`, when `url` is a file:/// URL of a repository libgit2 would open there and the
// answer is certain; nothing otherwise. Follows no symlink below the repository's path,
// reads nothing but regular files (a FIFO is never waited on), and at most 64 MiB of
// packed-refs.
[[nodiscard]] std::optional<std::string> ReadLocalRef(const std::string& url,
                                                      const std::string& ref);

}  // namespace tether
