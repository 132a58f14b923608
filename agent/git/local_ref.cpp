#include "agent/git/local_ref.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <string_view>

#include "common/unique_fd.hpp"

namespace tether {

namespace {

constexpr std::size_t kIdLength = 40;
constexpr off_t kMaxPackedRefs = off_t{64} << 20;

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

enum class Read { kOk, kMissing, kUnsure };

// The whole of a regular file, at most `limit` bytes; kMissing only when the path does not
// exist at all.
Read ReadRegularFile(const std::string& path, off_t limit, std::string& out) {
  // This process may be root, and the repository anyone's: nothing but a regular file is
  // opened (opening a device can do something), and it is still that file once open.
  struct stat before {};
  if (lstat(path.c_str(), &before) != 0) return errno == ENOENT ? Read::kMissing : Read::kUnsure;
  if (!S_ISREG(before.st_mode) || before.st_size > limit) return Read::kUnsure;
  UniqueFd fd(open(path.c_str(), O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC | O_NOCTTY));
  if (!fd.valid()) return Read::kUnsure;
  struct stat st {};
  if (fstat(fd.get(), &st) != 0 || !S_ISREG(st.st_mode) || st.st_ino != before.st_ino ||
      st.st_dev != before.st_dev || st.st_size > limit) {
    return Read::kUnsure;
  }
  out.resize(static_cast<std::size_t>(st.st_size));
  std::size_t done = 0;
  while (done < out.size()) {
    const ssize_t n = read(fd.get(), out.data() + done, out.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return Read::kUnsure;  // it shrank, or failed: let the worker look
    done += static_cast<std::size_t>(n);
  }
  return Read::kOk;
}

bool IsDirectory(const std::string& path) {
  struct stat st {};
  return lstat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}

bool Exists(const std::string& path) {
  struct stat st {};
  return lstat(path.c_str(), &st) == 0 || errno != ENOENT;
}

// The git dir libgit2 opens for `path`: path/.git when it is a directory, else path itself
// when nothing is at path/.git. A .git file (a worktree or submodule's link) is not ours.
std::optional<std::string> GitDir(const std::string& path) {
  const std::string dot_git = path + "/.git";
  std::string dir;
  if (IsDirectory(dot_git)) {
    dir = dot_git;
  } else if (!Exists(dot_git) && IsDirectory(path)) {
    dir = path;
  } else {
    return std::nullopt;
  }
  // A linked worktree's refs live in another git dir.
  if (Exists(dir + "/commondir")) return std::nullopt;
  return dir;
}

// The id packed-refs gives `ref`, or nothing. Lines are "<id> <name>", "^<id>" (the
// peeled object of the line before) and "# ..." (the file's traits).
std::optional<std::string> FindPacked(std::string_view packed, std::string_view ref) {
  std::size_t start = 0;
  while (start < packed.size()) {
    auto end = packed.find('\n', start);
    if (end == std::string_view::npos) end = packed.size();
    const auto line = packed.substr(start, end - start);
    start = end + 1;
    if (line.size() == kIdLength + 1 + ref.size() && line[kIdLength] == ' ' &&
        line.substr(kIdLength + 1) == ref) {
      const auto id = line.substr(0, kIdLength);
      return IsObjectId(id) ? std::optional<std::string>(id) : std::nullopt;
    }
  }
  return std::nullopt;
}

}  // namespace

std::optional<std::string> ReadLocalRef(const std::string& url, const std::string& ref) {
  // file:///path only: no host part, and no %-escape to decode as libgit2 would.
  constexpr std::string_view kScheme = "file://";
  if (url.rfind(kScheme, 0) != 0 || url.size() <= kScheme.size() || url[kScheme.size()] != '/' ||
      url.find('%') != std::string::npos || !IsPlainRefName(ref)) {
    return std::nullopt;
  }
  std::string path = url.substr(kScheme.size());
  while (path.size() > 1 && path.back() == '/') path.pop_back();
  const auto dir = GitDir(path);
  if (!dir) return std::nullopt;

  std::string text;
  switch (ReadRegularFile(*dir + "/" + ref, 4096, text)) {
    case Read::kOk: {
      // What git writes: the id and a newline. A symbolic ref ("ref: ...") is the worker's.
      std::string_view id(text);
      if (id.ends_with('\n')) id.remove_suffix(1);
      return IsObjectId(id) ? std::optional<std::string>(id) : std::nullopt;
    }
    case Read::kMissing:
      break;
    case Read::kUnsure:
      return std::nullopt;
  }
  if (ReadRegularFile(*dir + "/packed-refs", kMaxPackedRefs, text) != Read::kOk) {
    return std::nullopt;
  }
  return FindPacked(text, ref);
}

}  // namespace tether
