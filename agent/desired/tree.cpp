#include "agent/desired/tree.hpp"

#include <vector>

namespace tether {

namespace {

std::string Quote(std::string_view path) { return "'" + std::string(path) + "'"; }

std::vector<std::string> Split(std::string_view path) {
  std::vector<std::string> parts;
  std::size_t pos = 0;
  while (pos <= path.size()) {
    const std::size_t end = std::min(path.find('/', pos), path.size());
    parts.emplace_back(path.substr(pos, end - pos));
    pos = end + 1;
  }
  return parts;
}

std::string Join(const std::vector<std::string>& parts) {
  std::string result;
  for (const auto& part : parts) {
    if (!result.empty()) result += '/';
    result += part;
  }
  return result;
}

// The filesystem names paths as "/x" below the tree's root; users know them as "x".
template <typename T>
Result<T> RepoRelative(Result<T> result, std::string_view path) {
  if (result) return result;
  std::string message = result.error().message();
  const std::string absolute = "'/" + std::string(path) + "'";
  for (auto pos = message.find(absolute); pos != std::string::npos;
       pos = message.find(absolute, pos)) {
    message.replace(pos, absolute.size(), Quote(path));
  }
  return Fail(Error(result.error().code(), std::move(message)));
}

}  // namespace

Result<std::unique_ptr<DirectoryTree>> DirectoryTree::Open(const std::string& directory) {
  auto fs = RootedFilesystem::Open(directory);
  if (!fs) return Fail(fs.error());
  return std::unique_ptr<DirectoryTree>(new DirectoryTree(std::move(*fs)));
}

Result<TreeEntryType> DirectoryTree::Type(std::string_view path) {
  auto stat = RepoRelative(fs_->Stat("/" + std::string(path)), path);
  if (!stat) return Fail(stat.error());
  switch (stat->type) {
    case FileType::kRegular:
      return TreeEntryType::kFile;
    case FileType::kDirectory:
      return TreeEntryType::kDirectory;
    case FileType::kSymlink:
      return TreeEntryType::kSymlink;
    default:
      return TreeEntryType::kOther;
  }
}

Result<std::string> DirectoryTree::ReadFile(std::string_view path, std::size_t max_size) {
  return RepoRelative(fs_->ReadFile("/" + std::string(path), max_size), path);
}

Result<std::string> DirectoryTree::ReadSymlink(std::string_view path) {
  return RepoRelative(fs_->ReadSymlink("/" + std::string(path)), path);
}

Result<std::vector<std::string>> DirectoryTree::List(std::string_view path) {
  return RepoRelative(fs_->ListDirectory("/" + std::string(path)), path);
}

Result<std::string> CheckRepoPath(std::string_view path) {
  if (path.empty()) return Fail(std::errc::invalid_argument, "empty path");
  if (path.find('\0') != std::string_view::npos) {
    return Fail(std::errc::invalid_argument, "path contains a NUL byte");
  }
  if (path.front() == '/') {
    return Fail(std::errc::invalid_argument,
                Quote(path) + " is absolute; paths in the repo are relative to its top");
  }
  for (const auto& part : Split(path)) {
    if (part == "..") {
      return Fail(std::errc::invalid_argument, Quote(path) + " leaves the repo ('..')");
    }
    if (part.empty() || part == ".") {
      return Fail(std::errc::invalid_argument, Quote(path) + " is not normalised");
    }
  }
  return std::string(path);
}

Result<std::string> ResolveInTree(Tree& tree, std::string_view path) {
  auto checked = CheckRepoPath(path);
  if (!checked) return Fail(checked.error());
  std::vector<std::string> pending = Split(path);
  std::vector<std::string> resolved;
  int hops = 0;
  std::size_t next = 0;
  while (next < pending.size()) {
    const std::string part = pending[next++];
    if (part == "..") {  // only from a symlink's target; user paths were checked
      if (resolved.empty()) {
        return Fail(std::errc::operation_not_permitted,
                    "a symlink in " + Quote(path) + " points outside the repo");
      }
      resolved.pop_back();
      continue;
    }
    resolved.push_back(part);
    const std::string current = Join(resolved);
    auto type = tree.Type(current);
    if (!type) return Fail(type.error());
    if (*type != TreeEntryType::kSymlink) {
      if (next < pending.size() && *type != TreeEntryType::kDirectory) {
        return Fail(std::errc::not_a_directory, Quote(current) + " is not a directory");
      }
      continue;
    }
    if (++hops > 16) {
      return Fail(std::errc::too_many_symbolic_link_levels,
                  Quote(path) + ": more than 16 symlinks to follow");
    }
    auto target = tree.ReadSymlink(current);
    if (!target) return Fail(target.error());
    if (target->empty() || target->front() == '/') {
      return Fail(
          std::errc::operation_not_permitted,
          "symlink " + Quote(current) + " -> " + Quote(*target) + " points outside the repo");
    }
    // Replace the link by its target, relative to the link's directory.
    resolved.pop_back();
    std::vector<std::string> expanded;
    for (auto& target_part : Split(*target)) {
      if (!target_part.empty() && target_part != ".") expanded.push_back(std::move(target_part));
    }
    expanded.insert(expanded.end(), pending.begin() + static_cast<std::ptrdiff_t>(next),
                    pending.end());
    pending = std::move(expanded);
    next = 0;
  }
  if (resolved.empty()) return Fail(std::errc::is_a_directory, Quote(path) + " is the repo top");
  return Join(resolved);
}

Result<std::string> Tree::ReadBlob(std::string_view path, const ContentId& /*id*/,
                                   std::size_t max_size) {
  return ReadTreeFile(*this, path, max_size);
}

Result<std::string> ReadTreeFile(Tree& tree, std::string_view path, std::size_t max_size) {
  auto resolved = ResolveInTree(tree, path);
  if (!resolved) return Fail(resolved.error());
  auto type = tree.Type(*resolved);
  if (!type) return Fail(type.error());
  if (*type != TreeEntryType::kFile) {
    return Fail(std::errc::invalid_argument, Quote(path) + " is not a regular file");
  }
  return tree.ReadFile(*resolved, max_size);
}

}  // namespace tether
