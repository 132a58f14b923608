#include "agent/git/local_ref.hpp"

#include <string_view>

#include "common/filesystem.hpp"

namespace tether {

namespace {

constexpr std::size_t kIdLength = 40;
constexpr std::size_t kMaxPackedRefs = std::size_t{64} << 20;

bool IsObjectId(std::string_view text) {
  return text.size() == kIdLength &&
         text.find_first_not_of("0123456789abcdef") == std::string_view::npos;
}

// A ref name whose loose file is the path it spells: refs/..., no "." or ".." part, no
// empty part, nothing but the characters branch and tag names are usually made of.
bool IsPlainRefName(std::string_view ref) {
  if (ref.rfind("refs/", 0) != 0 || ref.back() == '/' || ref.ends_with(".lock")) return false;
  if (ref.find_first_not_of("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._/-") !=
      std::string_view::npos) {
    return false;
  }
  std::size_t start = 0;
  while (start <= ref.size()) {
    const auto end = std::min(ref.find('/', start), ref.size());
    const auto part = ref.substr(start, end - start);
    if (part.empty() || part.front() == '.') return false;
    start = end + 1;
  }
  return true;
}

// What is at `path` below the repository, without following a symlink; nothing when it
// cannot be looked at.
std::optional<FileType> TypeAt(Filesystem& fs, const std::string& path) {
  auto stat = fs.Stat(path);
  if (!stat) return std::nullopt;
  return stat->type;
}

bool Missing(Filesystem& fs, const std::string& path) {
  auto stat = fs.Stat(path);
  return !stat && stat.error().Is(std::errc::no_such_file_or_directory);
}

// A git dir as libgit2 tells one: a HEAD file and the objects and refs directories.
bool IsGitDir(Filesystem& fs, const std::string& dir) {
  return TypeAt(fs, dir + "/HEAD") == FileType::kRegular &&
         TypeAt(fs, dir + "/objects") == FileType::kDirectory &&
         TypeAt(fs, dir + "/refs") == FileType::kDirectory;
}

// The git dir libgit2 opens for the repository ("" for the repository's own directory,
// "/.git" for its .git directory). Anything else at .git (a worktree or submodule's
// link, a symlink, a directory that is no git dir) and a linked worktree's git dir (its
// refs are in another) are the worker's.
std::optional<std::string> GitDir(Filesystem& fs) {
  std::string dir;
  if (Missing(fs, "/.git")) {
    dir = "";
  } else if (TypeAt(fs, "/.git") == FileType::kDirectory) {
    dir = "/.git";
  } else {
    return std::nullopt;
  }
  if (!IsGitDir(fs, dir) || !Missing(fs, dir + "/commondir")) return std::nullopt;
  return dir;
}

// The id packed-refs gives `ref`, or nothing (also when it names the ref twice). Lines are
// "<id> <name>", "^<id>" (the peeled object of the line before) and "# ..." (traits).
std::optional<std::string> FindPacked(std::string_view packed, std::string_view ref) {
  std::optional<std::string> found;
  std::size_t start = 0;
  while (start < packed.size()) {
    auto end = packed.find('\n', start);
    if (end == std::string_view::npos) end = packed.size();
    const auto line = packed.substr(start, end - start);
    start = end + 1;
    if (line.size() == kIdLength + 1 + ref.size() && line[kIdLength] == ' ' &&
        line.substr(kIdLength + 1) == ref) {
      const auto id = line.substr(0, kIdLength);
      if (found || !IsObjectId(id)) return std::nullopt;
      found = std::string(id);
    }
  }
  return found;
}

}  // namespace

std::optional<std::string> ReadLocalRef(const std::string& url, const std::string& ref) {
  // file:///path only: no host part, and no %-escape to decode as libgit2 would.
  constexpr std::string_view kScheme = "file://";
  if (url.rfind(kScheme, 0) != 0 || url.size() <= kScheme.size() + 1 ||
      url[kScheme.size()] != '/' || url[kScheme.size() + 1] == '/' ||
      url.find('%') != std::string::npos || !IsPlainRefName(ref)) {
    return std::nullopt;
  }
  // Every read below the repository refuses a symlink anywhere in its path and anything
  // but a regular file: this process may be root, and the repository anyone's.
  auto fs = RootedFilesystem::Open(url.substr(kScheme.size()));
  if (!fs) return std::nullopt;
  const auto dir = GitDir(**fs);
  if (!dir) return std::nullopt;

  if (auto loose = (*fs)->ReadFile(*dir + "/" + ref, 4096)) {
    // What git writes: the id and a newline. A symbolic ref ("ref: ...") is the worker's.
    std::string_view id(*loose);
    if (id.ends_with('\n')) id.remove_suffix(1);
    return IsObjectId(id) ? std::optional<std::string>(id) : std::nullopt;
  } else if (!loose.error().Is(std::errc::no_such_file_or_directory)) {
    return std::nullopt;
  }
  auto packed = (*fs)->ReadFile(*dir + "/packed-refs", kMaxPackedRefs);
  if (!packed) return std::nullopt;
  return FindPacked(*packed, ref);
}

}  // namespace tether
