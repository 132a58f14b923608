// The fleet repo as a read-only tree of files, so the renderer reads a checkout
// directory (tetherctl validate) and a Git commit's tree (tetherd) with the same code.
//
// Paths are relative to the repo's top, '/'-separated, without '.' or '..' components
// and without a leading '/': "hosts/web-01.toml".
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/content_id.hpp"
#include "common/error.hpp"
#include "common/filesystem.hpp"

namespace tether {

enum class TreeEntryType { kFile, kDirectory, kSymlink, kOther };

// A regular file as a tree records it, unread: its content id and size.
struct TreeBlob {
  ContentId id{};
  std::uint64_t size = 0;
};

class Tree {
 public:
  virtual ~Tree() = default;

  // The type of `path` itself (a symlink is not followed). ENOENT when missing.
  [[nodiscard]] virtual Result<TreeEntryType> Type(std::string_view path) = 0;
  // Contents of the regular file `path`; EFBIG past `max_size`.
  [[nodiscard]] virtual Result<std::string> ReadFile(std::string_view path,
                                                     std::size_t max_size) = 0;
  // The target of the symlink `path`, as stored.
  [[nodiscard]] virtual Result<std::string> ReadSymlink(std::string_view path) = 0;
  // Names in directory `path` ("" for the top), sorted.
  [[nodiscard]] virtual Result<std::vector<std::string>> List(std::string_view path) = 0;
  // The content of the regular file `path`, whose id Blob() gave as `id`: a tree that can
  // read a content by its id alone does so (a Git tree: no directory of the path is
  // read); any other reads `path` (ReadTreeFile). EFBIG past `max_size`.
  [[nodiscard]] virtual Result<std::string> ReadBlob(std::string_view path, const ContentId& id,
                                                     std::size_t max_size);
  // The id and size of the regular file `path` when the tree records them, so that the
  // file need not be read to know them (a Git tree does); nullopt when it does not.
  [[nodiscard]] virtual Result<std::optional<TreeBlob>> Blob(std::string_view /*path*/) {
    return std::optional<TreeBlob>();
  }
};

// A checkout in a local directory. Symlinks are never followed by the directory walk
// itself; ResolveInTree decides which ones may be.
class DirectoryTree final : public Tree {
 public:
  [[nodiscard]] static Result<std::unique_ptr<DirectoryTree>> Open(const std::string& directory);

  Result<TreeEntryType> Type(std::string_view path) override;
  Result<std::string> ReadFile(std::string_view path, std::size_t max_size) override;
  Result<std::string> ReadSymlink(std::string_view path) override;
  Result<std::vector<std::string>> List(std::string_view path) override;

 private:
  explicit DirectoryTree(std::unique_ptr<RootedFilesystem> fs) : fs_(std::move(fs)) {}
  std::unique_ptr<RootedFilesystem> fs_;
};

// Checks a repo path written by a user (an include, a source =): relative, no '..' or '.'
// components, no empty components, no NUL. Returns it unchanged on success.
[[nodiscard]] Result<std::string> CheckRepoPath(std::string_view path);

// Follows symlinks in `path` as long as they stay inside the repo (at most 16 of them)
// and returns the path of what it names. A symlink that points outside the repo, or an
// absolute one, is refused (EPERM).
[[nodiscard]] Result<std::string> ResolveInTree(Tree& tree, std::string_view path);

// ResolveInTree, then ReadFile.
[[nodiscard]] Result<std::string> ReadTreeFile(Tree& tree, std::string_view path,
                                               std::size_t max_size);

}  // namespace tether
