#include "common/filesystem.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <linux/openat2.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <set>
#include <utility>

#include "common/unique_fd.hpp"

namespace tether {

namespace {

// The parent directory of a path, opened without following any symlink, and the last
// component's name. For "/" itself the parent is the root and the name is ".".
struct Located {
  UniqueFd parent;
  std::string name;
  std::string path;  // the normalised host path, for messages
};

std::string Quote(std::string_view path) { return "'" + std::string(path) + "'"; }

FileStat ToFileStat(const struct stat& st) {
  FileStat result;
  if (S_ISREG(st.st_mode)) {
    result.type = FileType::kRegular;
  } else if (S_ISDIR(st.st_mode)) {
    result.type = FileType::kDirectory;
  } else if (S_ISLNK(st.st_mode)) {
    result.type = FileType::kSymlink;
  }
  result.mode = st.st_mode & 07777;
  result.uid = st.st_uid;
  result.gid = st.st_gid;
  result.size = static_cast<std::uint64_t>(st.st_size);
  result.mtime_ns =
      static_cast<std::int64_t>(st.st_mtim.tv_sec) * 1'000'000'000 + st.st_mtim.tv_nsec;
  result.ctime_ns =
      static_cast<std::int64_t>(st.st_ctim.tv_sec) * 1'000'000'000 + st.st_ctim.tv_nsec;
  result.inode = st.st_ino;
  result.device = st.st_dev;
  return result;
}

// A name for a temporary file next to `name`, unlikely to collide (O_EXCL catches the rest).
std::string TempName(std::string_view name) {
  unsigned char bytes[6];
  if (getrandom(bytes, sizeof(bytes), 0) != static_cast<ssize_t>(sizeof(bytes))) {
    // getrandom on 6 bytes cannot fail short once the pool is initialised; fall back to pid.
    const pid_t pid = getpid();
    std::copy_n(reinterpret_cast<const unsigned char*>(&pid), std::min(sizeof(pid), sizeof(bytes)),
                bytes);
  }
  static constexpr char kHex[] = "0123456789abcdef";
  std::string result = TemporaryPrefix(name);
  for (unsigned char b : bytes) {
    result += kHex[b >> 4];
    result += kHex[b & 0xf];
  }
  return result;
}

// Refuses to put a `what` ("file", "symlink") where a directory (or '/') is.
Status RefuseDirectory(const Located& at, const char* what) {
  if (at.name == ".") return Fail(std::errc::is_a_directory, "'/' is a directory");
  struct stat existing {};
  if (fstatat(at.parent.get(), at.name.c_str(), &existing, AT_SYMLINK_NOFOLLOW) == 0 &&
      S_ISDIR(existing.st_mode)) {
    return Fail(std::errc::is_a_directory,
                Quote(at.path) + " is a directory; refusing to replace it with a " + what);
  }
  return {};
}

}  // namespace

std::string TemporaryPrefix(std::string_view name) {
  // Long names are hashed, not cut: two names must never share a prefix. 128 bits of two
  // FNV-1a hashes, not SHA-256: the daemon writes state files too, and must not link
  // OpenSSL for it (it stays small; docs/performance.md). The names come from signed
  // commits, not from an attacker choosing collisions.
  if (name.size() > 160) {
    std::uint64_t first = 0xcbf29ce484222325ULL;  // FNV-1a 64 offset basis
    std::uint64_t second = 0x84222325cbf29ce4ULL;
    for (const char c : name) {
      first = (first ^ static_cast<unsigned char>(c)) * 0x100000001b3ULL;
      second = (second ^ static_cast<unsigned char>(c)) * 0x100000001b3ULL;
      second ^= second >> 29;
    }
    char hex[33];
    std::snprintf(hex, sizeof(hex), "%016llx%016llx", static_cast<unsigned long long>(first),
                  static_cast<unsigned long long>(second));
    return "." + std::string(hex) + ".tether-";
  }
  return "." + std::string(name) + ".tether-";
}

bool IsTemporaryName(std::string_view candidate, std::string_view name) {
  const std::string prefix = TemporaryPrefix(name);
  if (candidate.substr(0, prefix.size()) != prefix) return false;
  const std::string_view rest = candidate.substr(prefix.size());
  return rest.size() == 12 && rest.find_first_not_of("0123456789abcdef") == std::string_view::npos;
}

Result<std::string> NormalizePath(std::string_view path) {
  if (path.empty()) return Fail(std::errc::invalid_argument, "empty path");
  if (path.find('\0') != std::string_view::npos) {
    return Fail(std::errc::invalid_argument, "path contains a NUL byte");
  }
  if (path.front() != '/') {
    return Fail(std::errc::invalid_argument, Quote(path) + " is not an absolute path");
  }
  std::string result;
  std::size_t pos = 0;
  while (pos < path.size()) {
    while (pos < path.size() && path[pos] == '/') ++pos;
    if (pos == path.size()) break;
    const std::size_t end = std::min(path.find('/', pos), path.size());
    const std::string_view component = path.substr(pos, end - pos);
    if (component == "." || component == "..") {
      return Fail(std::errc::invalid_argument,
                  Quote(path) + " contains a '" + std::string(component) + "' component");
    }
    result += '/';
    result += component;
    pos = end;
  }
  if (result.empty()) result = "/";
  return result;
}

namespace {

// Opens the directory `dirs` (relative, normalised) below `root_fd` in one call, refusing
// any symlink on the way and any escape from the root. Invalid when it cannot: the caller
// then walks the path itself (for its error message, or on a kernel without openat2).
UniqueFd OpenBeneath(int root_fd, std::string_view dirs, bool readable) {
  static std::atomic<bool> unsupported{false};
  if (unsupported.load(std::memory_order_relaxed)) return UniqueFd();
  open_how how{};
  how.flags = O_DIRECTORY | O_CLOEXEC | (readable ? O_RDONLY : O_PATH);
  how.resolve = RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS | RESOLVE_BENEATH;
  const std::string relative(dirs);
  const long fd = syscall(SYS_openat2, root_fd, relative.c_str(), &how, sizeof(how));
  if (fd < 0 && (errno == ENOSYS || errno == EPERM || errno == E2BIG)) {
    unsupported.store(true, std::memory_order_relaxed);  // e.g. an old kernel, or seccomp
  }
  return UniqueFd(fd < 0 ? -1 : static_cast<int>(fd));
}

// Opens the parent of `path` below `root_fd`, refusing symlinks and non-directories on
// the way. `readable_parent` opens the parent O_RDONLY (so it can be fsync'ed) rather
// than O_PATH. A missing parent is named (the first missing directory) unless
// `name_missing` is false: then it is ENOENT for the whole parent, without the walk that
// finds which (a plan stats every file of a directory not made yet).
Result<Located> Locate(int root_fd, std::string_view raw_path, bool readable_parent,
                       bool name_missing = true) {
  auto path = NormalizePath(raw_path);
  if (!path) return Fail(path.error());
  Located located;
  located.path = *path;
  if (*path == "/") {
    located.parent = UniqueFd(fcntl(root_fd, F_DUPFD_CLOEXEC, 0));
    located.name = ".";
    if (!located.parent.valid()) return FailErrno(errno, "dup root");
    return located;
  }
  const std::size_t last_slash = path->rfind('/');
  located.name = path->substr(last_slash + 1);
  std::string_view dirs = std::string_view(*path).substr(1, last_slash == 0 ? 0 : last_slash - 1);

  if (!dirs.empty()) {
    // One openat2() walks the whole parent path and refuses any symlink in it; the
    // component-by-component walk below is the fallback (a kernel without openat2), and
    // names the offending symlink when there is one.
    UniqueFd parent = OpenBeneath(root_fd, dirs, readable_parent);
    if (parent.valid()) {
      located.parent = std::move(parent);
      return located;
    }
    if (errno == ENOENT && !name_missing) {
      return FailErrno(ENOENT, "open " + Quote(path->substr(0, last_slash)));
    }
  }
  UniqueFd current(fcntl(root_fd, F_DUPFD_CLOEXEC, 0));
  if (!current.valid()) return FailErrno(errno, "dup root");
  std::string walked;
  while (!dirs.empty()) {
    const std::size_t slash = dirs.find('/');
    const std::string component(dirs.substr(0, slash));
    dirs = slash == std::string_view::npos ? std::string_view() : dirs.substr(slash + 1);
    walked += "/" + component;
    const int flags = O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC |
                      (dirs.empty() && readable_parent ? O_RDONLY : O_PATH);
    UniqueFd next(openat(current.get(), component.c_str(), flags));
    if (!next.valid()) {
      const int err = errno;
      struct stat st {};
      if ((err == ENOTDIR || err == ELOOP) &&
          fstatat(current.get(), component.c_str(), &st, AT_SYMLINK_NOFOLLOW) == 0 &&
          S_ISLNK(st.st_mode)) {
        return Fail(std::errc::too_many_symbolic_link_levels,
                    Quote(walked) + " is a symlink; refusing to follow it for " + Quote(*path));
      }
      return FailErrno(err, "open " + Quote(walked));
    }
    current = std::move(next);
  }
  if (readable_parent && last_slash == 0) {
    // The parent is the root itself: reopen it readable.
    UniqueFd readable(openat(root_fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    if (!readable.valid()) return FailErrno(errno, "open '/'");
    current = std::move(readable);
  }
  located.parent = std::move(current);
  return located;
}

}  // namespace

Result<std::unique_ptr<RootedFilesystem>> RootedFilesystem::Open(const std::string& root) {
  const int fd = open(root.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return FailErrno(errno, "open root " + Quote(root));
  return std::unique_ptr<RootedFilesystem>(new RootedFilesystem(root, fd));
}

RootedFilesystem::~RootedFilesystem() { close(root_fd_); }

namespace {

// True when NormalizePath gives `path` back as it is (most paths of a profile): then it
// need not be copied.
bool IsNormal(std::string_view path) {
  if (path == "/") return true;
  if (path.size() < 2 || path.front() != '/' || path.back() == '/' ||
      path.find('\0') != std::string_view::npos) {
    return false;
  }
  for (std::size_t slash = 0; slash < path.size();) {
    const std::size_t end = std::min(path.find('/', slash + 1), path.size());
    const std::string_view component = path.substr(slash + 1, end - slash - 1);
    if (component.empty() || component == "." || component == "..") return false;
    slash = end;
  }
  return true;
}

}  // namespace

Result<FileStat> RootedFilesystem::Stat(std::string_view path) {
  std::string normalized;
  if (!IsNormal(path)) {
    auto normal = NormalizePath(path);
    if (!normal) return Fail(normal.error());
    normalized = std::move(*normal);
    path = normalized;
  }
  const std::size_t last_slash = path.rfind('/');
  struct stat st {};
  if (last_slash > 0 && stat_dir_fd_.valid() && path.substr(0, last_slash) == stat_dir_) {
    const std::string name(path.substr(last_slash + 1));
    if (fstatat(stat_dir_fd_.get(), name.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) {
      return FailErrno(errno, "stat " + Quote(path));
    }
    return ToFileStat(st);
  }
  auto at = Locate(root_fd_, path, false, /*name_missing=*/false);
  if (!at) return Fail(at.error());
  if (fstatat(at->parent.get(), at->name.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) {
    return FailErrno(errno, "stat " + Quote(at->path));
  }
  if (last_slash > 0) {
    stat_dir_ = path.substr(0, last_slash);
    stat_dir_fd_ = std::move(at->parent);
  }
  return ToFileStat(st);
}

namespace {

// A regular file below `root_fd`, opened for reading without following a symlink.
struct OpenedFile {
  std::string path;  // as the caller's errors show it
  UniqueFd fd;
  struct stat st;
};

Result<OpenedFile> OpenRegular(int root_fd, std::string_view path) {
  auto at = Locate(root_fd, path, false);
  if (!at) return Fail(at.error());
  UniqueFd fd(openat(at->parent.get(), at->name.c_str(),
                     O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY | O_CLOEXEC));
  if (!fd.valid()) return FailErrno(errno, "open " + Quote(at->path));
  struct stat st {};
  if (fstat(fd.get(), &st) != 0) return FailErrno(errno, "stat " + Quote(at->path));
  if (!S_ISREG(st.st_mode)) {
    return Fail(std::errc::invalid_argument, Quote(at->path) + " is not a regular file");
  }
  return OpenedFile{at->path, std::move(fd), st};
}

// Below this, a buffer's pages are left to fault in one at a time.
constexpr std::size_t kPopulateAbove = 64 << 10;

// Sizes `buffer` to `size` bytes, its pages made present by one call rather than by a
// fault each: in a virtual machine a fault costs tens of microseconds, and a cycle reads
// the inventory and the kept render (megabytes at 10,000 files) into fresh memory. When
// the call fails (an older kernel), the pages fault in as before.
void ResizePopulated(std::string& buffer, std::size_t size) {
  if (size > kPopulateAbove && size > buffer.capacity()) {
    buffer.reserve(size);
    const auto page = static_cast<std::uintptr_t>(sysconf(_SC_PAGESIZE));
    const auto data = reinterpret_cast<std::uintptr_t>(buffer.data());
    const std::uintptr_t begin = (data + page - 1) & ~(page - 1);
    const std::uintptr_t end = (data + size) & ~(page - 1);
#ifdef MADV_POPULATE_WRITE  // Linux 5.14 (glibc 2.35)
    if (end > begin) {
      (void)madvise(reinterpret_cast<void*>(begin), end - begin, MADV_POPULATE_WRITE);
    }
#endif
  }
  buffer.resize(size);
}

}  // namespace

namespace {

// The content of a file OpenRegular opened, up to `max_size` bytes.
Result<std::string> ReadOpened(const OpenedFile& opened, std::size_t max_size) {
  const std::string& shown = opened.path;
  const UniqueFd& fd = opened.fd;
  const struct stat& st = opened.st;
  if (static_cast<std::uint64_t>(st.st_size) > max_size) {
    return Fail(std::errc::file_too_large,
                Quote(shown) + " is larger than " + std::to_string(max_size) + " bytes");
  }
  // A byte more than fstat said, so that the read that finds the end needs no larger
  // buffer (growing one copies it, and each new page costs a fault: a 1 MB inventory
  // read twice over). A file that says 0 bytes (procfs, sysfs) may have more: a page at
  // once, since some of them answer only the first read.
  std::string content;
  ResizePopulated(
      content, std::min<std::size_t>(
                   st.st_size > 0 ? static_cast<std::size_t>(st.st_size) + 1 : 4096, max_size + 1));
  std::size_t done = 0;
  while (true) {
    if (done == content.size()) {
      // The file may have grown since fstat; read until EOF within the limit.
      if (content.size() >= max_size + 1) break;
      content.resize(std::min<std::size_t>(max_size + 1, content.size() + 4096));
    }
    const ssize_t n = read(fd.get(), content.data() + done, content.size() - done);
    if (n < 0) {
      if (errno == EINTR) continue;
      return FailErrno(errno, "read " + Quote(shown));
    }
    if (n == 0) break;
    done += static_cast<std::size_t>(n);
  }
  if (done > max_size) {
    return Fail(std::errc::file_too_large,
                Quote(shown) + " is larger than " + std::to_string(max_size) + " bytes");
  }
  content.resize(done);
  return content;
}

}  // namespace

Result<std::string> RootedFilesystem::ReadFile(std::string_view path, std::size_t max_size) {
  auto opened = OpenRegular(root_fd_, path);
  if (!opened) return Fail(opened.error());
  return ReadOpened(*opened, max_size);
}

FileBytes::FileBytes(FileBytes&& other) noexcept
    : copy_(std::move(other.copy_)),
      mapped_(std::exchange(other.mapped_, nullptr)),
      size_(std::exchange(other.size_, 0)) {}

FileBytes& FileBytes::operator=(FileBytes&& other) noexcept {
  if (this != &other) {
    if (mapped_ != nullptr) munmap(mapped_, size_);
    copy_ = std::move(other.copy_);
    mapped_ = std::exchange(other.mapped_, nullptr);
    size_ = std::exchange(other.size_, 0);
  }
  return *this;
}

FileBytes::~FileBytes() {
  if (mapped_ != nullptr) munmap(mapped_, size_);
}

Result<FileBytes> Filesystem::ReadBytes(std::string_view path, std::size_t max_size, bool) {
  auto text = ReadFile(path, max_size);
  if (!text) return Fail(text.error());
  return FileBytes(std::move(*text));
}

Result<FileBytes> RootedFilesystem::ReadBytes(std::string_view path, std::size_t max_size,
                                              bool map) {
  // Smaller files are read: a mapping costs more than it saves.
  constexpr std::size_t kMapAbove = 64 << 10;
  if (!map) return Filesystem::ReadBytes(path, max_size, map);
  auto opened = OpenRegular(root_fd_, path);
  if (!opened) return Fail(opened.error());
  const auto size = static_cast<std::uint64_t>(opened->st.st_size);
  if (size > max_size) {
    return Fail(std::errc::file_too_large,
                Quote(opened->path) + " is larger than " + std::to_string(max_size) + " bytes");
  }
  // Every page is read: mapped all at once. A file that cannot be mapped is read.
  void* mapped = size > kMapAbove ? mmap(nullptr, static_cast<std::size_t>(size), PROT_READ,
                                         MAP_PRIVATE | MAP_POPULATE, opened->fd.get(), 0)
                                  : MAP_FAILED;
  if (mapped == MAP_FAILED) {
    auto text = ReadOpened(*opened, max_size);
    if (!text) return Fail(text.error());
    return FileBytes(std::move(*text));
  }
  FileBytes bytes;
  bytes.mapped_ = mapped;
  bytes.size_ = static_cast<std::size_t>(size);
  return bytes;
}

Result<std::string> RootedFilesystem::ReadSymlink(std::string_view path) {
  auto at = Locate(root_fd_, path, false);
  if (!at) return Fail(at.error());
  std::string target(4096, '\0');
  const ssize_t n = readlinkat(at->parent.get(), at->name.c_str(), target.data(), target.size());
  if (n < 0) return FailErrno(errno, "readlink " + Quote(at->path));
  target.resize(static_cast<std::size_t>(n));
  return target;
}

Result<std::vector<std::string>> RootedFilesystem::ListDirectory(std::string_view path) {
  auto at = Locate(root_fd_, path, false);
  if (!at) return Fail(at.error());
  const int fd =
      openat(at->parent.get(), at->name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
  if (fd < 0) return FailErrno(errno, "open directory " + Quote(at->path));
  DIR* dir = fdopendir(fd);
  if (dir == nullptr) {
    const int err = errno;
    close(fd);
    return FailErrno(err, "open directory " + Quote(at->path));
  }
  std::vector<std::string> names;
  errno = 0;
  while (const dirent* entry = readdir(dir)) {
    const std::string_view name = entry->d_name;
    if (name != "." && name != "..") names.emplace_back(name);
  }
  const int err = errno;
  closedir(dir);
  if (err != 0) return FailErrno(err, "read directory " + Quote(at->path));
  std::sort(names.begin(), names.end());
  return names;
}

namespace {

// Writes `content` to a new temporary file for `at` (created with no permissions beyond
// the owner's; the final mode and owner are set before any content is written). Returns
// its name in `at.parent`; on failure none is left.
Result<std::string> WriteTemporaryAt(const Located& at, std::string_view content,
                                     const WriteOptions& options) {
  const std::string temp = TempName(at.name);
  UniqueFd fd(openat(at.parent.get(), temp.c_str(),
                     O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, options.mode & 0700));
  if (!fd.valid()) return FailErrno(errno, "create temporary file for " + Quote(at.path));
  auto fail = [&](int err, const std::string& what) {
    unlinkat(at.parent.get(), temp.c_str(), 0);
    return FailErrno(err, what + " " + Quote(at.path));
  };
  if ((options.uid || options.gid) &&
      fchown(fd.get(), options.uid.value_or(static_cast<std::uint32_t>(-1)),
             options.gid.value_or(static_cast<std::uint32_t>(-1))) != 0) {
    return fail(errno, "chown");
  }
  if (fchmod(fd.get(), options.mode & 07777) != 0) return fail(errno, "chmod");
  std::string_view left = content;
  while (!left.empty()) {
    const ssize_t n = write(fd.get(), left.data(), left.size());
    if (n < 0) {
      if (errno == EINTR) continue;
      return fail(errno, "write");
    }
    left.remove_prefix(static_cast<std::size_t>(n));
  }
  if (options.sync && fsync(fd.get()) != 0) return fail(errno, "fsync");
  if (close(fd.Release()) != 0) return fail(errno, "close");
  return temp;
}

}  // namespace

Status RootedFilesystem::WriteFileAtomic(std::string_view path, std::string_view content,
                                         const WriteOptions& options) {
  auto at = Locate(root_fd_, path, options.sync);
  if (!at) return Fail(at.error());
  if (auto refused = RefuseDirectory(*at, "file"); !refused) return refused;
  auto temp = WriteTemporaryAt(*at, content, options);
  if (!temp) return Fail(temp.error());
  if (renameat(at->parent.get(), temp->c_str(), at->parent.get(), at->name.c_str()) != 0) {
    const int err = errno;
    unlinkat(at->parent.get(), temp->c_str(), 0);
    return FailErrno(err, "rename into place " + Quote(at->path));
  }
  if (options.sync && fsync(at->parent.get()) != 0) {
    return FailErrno(errno, "fsync directory of " + Quote(at->path));
  }
  return {};
}

Result<std::string> RootedFilesystem::WriteTemporary(std::string_view path,
                                                     std::string_view content,
                                                     const WriteOptions& options) {
  auto at = Locate(root_fd_, path, false);
  if (!at) return Fail(at.error());
  if (auto refused = RefuseDirectory(*at, "file"); !refused) return Fail(refused.error());
  WriteOptions unsynced = options;
  unsynced.sync = false;
  auto temp = WriteTemporaryAt(*at, content, unsynced);
  if (!temp) return Fail(temp.error());
  const auto slash = at->path.rfind('/');
  return at->path.substr(0, slash + 1) + *temp;
}

// Up to this many paths are synced each (fsync): a repair of a few files does not wait
// for whatever else was written to their filesystem. More share one syncfs per filesystem.
constexpr std::size_t kSyncEachUpTo = 16;

Status RootedFilesystem::SyncFilesystems(const std::vector<std::string>& paths) {
  const bool each = paths.size() <= kSyncEachUpTo;
  std::set<dev_t> synced;
  // Paths in one directory come together (the temporaries of a run of files): its
  // descriptor and filesystem are looked up once for all of them.
  std::string parent_path;
  UniqueFd parent;
  dev_t parent_device = 0;
  for (const auto& path : paths) {
    auto normal = NormalizePath(path);
    if (!normal) return Fail(normal.error());
    const std::string_view dir = std::string_view(*normal).substr(0, normal->rfind('/'));
    std::string name = normal->substr(normal->rfind('/') + 1);
    if (!parent.valid() || dir != parent_path || *normal == "/") {
      auto at = Locate(root_fd_, *normal, true);
      if (!at) return Fail(at.error());
      struct stat st {};
      if (fstat(at->parent.get(), &st) != 0) return FailErrno(errno, "stat " + Quote(at->path));
      parent = std::move(at->parent);
      parent_path = dir;
      parent_device = st.st_dev;
      name = at->name;
    }
    // A directory is synced on its own filesystem (it may be a mount point); anything
    // else on its parent's.
    UniqueFd own(
        openat(parent.get(), name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
    if (each) {
      // A file's content and inode, or a directory's entries and inode; what is not
      // there (or is a symlink) is its directory's entry. A file that cannot be opened
      // for another reason (its mode, no descriptors left) is synced with its whole
      // filesystem, below.
      UniqueFd file;
      if (!own.valid()) {
        file.Reset(openat(parent.get(), name.c_str(),
                          O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY | O_CLOEXEC));
      }
      if (own.valid() || file.valid() || errno == ENOENT || errno == ELOOP) {
        const int fd = own.valid() ? own.get() : file.valid() ? file.get() : parent.get();
        if (fsync(fd) != 0) return FailErrno(errno, "sync " + Quote(*normal));
        continue;
      }
    }
    dev_t device = parent_device;
    if (own.valid()) {
      struct stat st {};
      if (fstat(own.get(), &st) != 0) return FailErrno(errno, "stat " + Quote(*normal));
      device = st.st_dev;
    }
    if (!synced.insert(device).second) continue;
    if (syncfs(own.valid() ? own.get() : parent.get()) != 0) {
      return FailErrno(errno, "sync the filesystem of " + Quote(*normal));
    }
  }
  return {};
}

Status RootedFilesystem::CreateDirectory(std::string_view path, std::uint32_t mode) {
  ForgetStatDirectory();
  auto at = Locate(root_fd_, path, false);
  if (!at) return Fail(at.error());
  if (mkdirat(at->parent.get(), at->name.c_str(), mode & 0700) != 0) {
    return FailErrno(errno, "mkdir " + Quote(at->path));
  }
  UniqueFd fd(
      openat(at->parent.get(), at->name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
  if (!fd.valid() || fchmod(fd.get(), mode & 07777) != 0) {
    return FailErrno(errno, "chmod " + Quote(at->path));
  }
  return {};
}

Status RootedFilesystem::CreateSymlink(std::string_view path, std::string_view target) {
  ForgetStatDirectory();
  auto at = Locate(root_fd_, path, false);
  if (!at) return Fail(at.error());
  if (auto refused = RefuseDirectory(*at, "symlink"); !refused) return refused;
  const std::string temp = TempName(at->name);
  const std::string target_string(target);
  if (symlinkat(target_string.c_str(), at->parent.get(), temp.c_str()) != 0) {
    return FailErrno(errno, "symlink " + Quote(at->path));
  }
  if (renameat(at->parent.get(), temp.c_str(), at->parent.get(), at->name.c_str()) != 0) {
    const int err = errno;
    unlinkat(at->parent.get(), temp.c_str(), 0);
    return FailErrno(err, "rename symlink into place " + Quote(at->path));
  }
  return {};
}

Status RootedFilesystem::SetAttributes(std::string_view path, std::uint32_t mode,
                                       std::optional<std::uint32_t> uid,
                                       std::optional<std::uint32_t> gid) {
  auto at = Locate(root_fd_, path, false);
  if (!at) return Fail(at.error());
  struct stat st {};
  if (fstatat(at->parent.get(), at->name.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) {
    return FailErrno(errno, "stat " + Quote(at->path));
  }
  const auto owner = uid.value_or(static_cast<std::uint32_t>(-1));
  const auto group = gid.value_or(static_cast<std::uint32_t>(-1));
  if (S_ISLNK(st.st_mode)) {
    if ((uid || gid) &&
        fchownat(at->parent.get(), at->name.c_str(), owner, group, AT_SYMLINK_NOFOLLOW) != 0) {
      return FailErrno(errno, "chown " + Quote(at->path));
    }
    return {};
  }
  // Opened without following a symlink swapped in since the fstatat above.
  UniqueFd fd(openat(at->parent.get(), at->name.c_str(),
                     O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY | O_CLOEXEC));
  if (!fd.valid()) return FailErrno(errno, "open " + Quote(at->path));
  if ((uid || gid) && fchown(fd.get(), owner, group) != 0) {
    return FailErrno(errno, "chown " + Quote(at->path));
  }
  // After chown, which may clear setuid and setgid bits.
  if (fchmod(fd.get(), mode & 07777) != 0) return FailErrno(errno, "chmod " + Quote(at->path));
  return {};
}

Status RootedFilesystem::Remove(std::string_view path) {
  ForgetStatDirectory();
  auto at = Locate(root_fd_, path, false);
  if (!at) return Fail(at.error());
  if (at->name == ".") return Fail(std::errc::permission_denied, "refusing to remove '/'");
  if (unlinkat(at->parent.get(), at->name.c_str(), 0) == 0) return {};
  if (errno == EISDIR && unlinkat(at->parent.get(), at->name.c_str(), AT_REMOVEDIR) == 0) {
    return {};
  }
  return FailErrno(errno, "remove " + Quote(at->path));
}

void RootedFilesystem::ForgetStatDirectoryAt(std::string_view path) {
  if (stat_dir_.empty()) return;
  auto normal = NormalizePath(path);
  if (!normal || *normal == "/" ||
      (stat_dir_.starts_with(*normal) &&
       (stat_dir_.size() == normal->size() || stat_dir_[normal->size()] == '/'))) {
    ForgetStatDirectory();
  }
}

Status RootedFilesystem::Rename(std::string_view from, std::string_view to) {
  ForgetStatDirectoryAt(from);
  ForgetStatDirectoryAt(to);
  auto source = Locate(root_fd_, from, false);
  if (!source) return Fail(source.error());
  auto normal_to = NormalizePath(to);
  if (!normal_to) return Fail(normal_to.error());
  if (source->name == "." || *normal_to == "/") {
    return Fail(std::errc::permission_denied, "refusing to rename '/'");
  }
  // Within one directory (a temporary onto its file), its descriptor serves both names.
  const std::size_t from_slash = source->path.rfind('/');
  const std::size_t to_slash = normal_to->rfind('/');
  int to_parent = source->parent.get();
  std::string to_name = normal_to->substr(to_slash + 1);
  UniqueFd other_parent;
  if (from_slash != to_slash || source->path.compare(0, from_slash, *normal_to, 0, to_slash) != 0) {
    auto destination = Locate(root_fd_, *normal_to, false);
    if (!destination) return Fail(destination.error());
    other_parent = std::move(destination->parent);
    to_parent = other_parent.get();
  }
  if (renameat(source->parent.get(), source->name.c_str(), to_parent, to_name.c_str()) != 0) {
    return FailErrno(errno, "rename " + Quote(source->path) + " to " + Quote(*normal_to));
  }
  return {};
}

Status RootedFilesystem::Link(std::string_view from, std::string_view to) {
  ForgetStatDirectory();
  auto source = Locate(root_fd_, from, false);
  if (!source) return Fail(source.error());
  auto destination = Locate(root_fd_, to, false);
  if (!destination) return Fail(destination.error());
  if (linkat(source->parent.get(), source->name.c_str(), destination->parent.get(),
             destination->name.c_str(), 0) != 0) {
    return FailErrno(errno, "link " + Quote(source->path) + " to " + Quote(destination->path));
  }
  return {};
}

Status RootedFilesystem::SyncDirectory(std::string_view path) {
  auto at = Locate(root_fd_, path, false);
  if (!at) return Fail(at.error());
  UniqueFd fd(
      openat(at->parent.get(), at->name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
  if (!fd.valid()) return FailErrno(errno, "open directory " + Quote(at->path));
  if (fsync(fd.get()) != 0) return FailErrno(errno, "fsync directory " + Quote(at->path));
  return {};
}

Status RootedFilesystem::AppendFile(std::string_view path, std::string_view data,
                                    const AppendOptions& options) {
  auto at = Locate(root_fd_, path, options.create);
  if (!at) return Fail(at.error());
  if (at->name == ".") return Fail(std::errc::is_a_directory, "'/' is a directory");
  const int flags = O_WRONLY | O_APPEND | O_NOFOLLOW | O_NOCTTY | O_CLOEXEC |
                    (options.create ? O_CREAT | O_EXCL : 0);
  UniqueFd fd(openat(at->parent.get(), at->name.c_str(), flags, options.mode & 07777));
  if (!fd.valid()) {
    return FailErrno(errno, (options.create ? "create " : "open ") + Quote(at->path));
  }
  if (options.create) {
    // Exactly the mode asked, whatever the umask.
    if (fchmod(fd.get(), options.mode & 07777) != 0) {
      return FailErrno(errno, "chmod " + Quote(at->path));
    }
  } else {
    struct stat st {};
    if (fstat(fd.get(), &st) != 0) return FailErrno(errno, "stat " + Quote(at->path));
    if (!S_ISREG(st.st_mode)) {
      return Fail(std::errc::invalid_argument, Quote(at->path) + " is not a regular file");
    }
  }
  std::string_view left = data;
  while (!left.empty()) {
    const ssize_t n = write(fd.get(), left.data(), left.size());
    if (n < 0) {
      if (errno == EINTR) continue;
      return FailErrno(errno, "write " + Quote(at->path));
    }
    left.remove_prefix(static_cast<std::size_t>(n));
  }
  if (options.sync && fdatasync(fd.get()) != 0) return FailErrno(errno, "sync " + Quote(at->path));
  if (close(fd.Release()) != 0) return FailErrno(errno, "close " + Quote(at->path));
  if (options.create && fsync(at->parent.get()) != 0) {
    return FailErrno(errno, "fsync directory of " + Quote(at->path));
  }
  return {};
}

Result<std::string> RootedFilesystem::ReadFileRange(std::string_view path, std::uint64_t offset,
                                                    std::size_t max_size) {
  auto opened = OpenRegular(root_fd_, path);
  if (!opened) return Fail(opened.error());
  const std::string& shown = opened->path;
  const UniqueFd& fd = opened->fd;
  std::string content(max_size, '\0');
  std::size_t done = 0;
  while (done < max_size) {
    const ssize_t n =
        pread(fd.get(), content.data() + done, max_size - done, static_cast<off_t>(offset + done));
    if (n < 0) {
      if (errno == EINTR) continue;
      return FailErrno(errno, "read " + Quote(shown));
    }
    if (n == 0) break;
    done += static_cast<std::size_t>(n);
  }
  content.resize(done);
  return content;
}

namespace {

class FlockLock final : public FileLock {
 public:
  explicit FlockLock(UniqueFd fd) : fd_(std::move(fd)) {}

 private:
  UniqueFd fd_;  // closing it releases the lock
};

}  // namespace

Result<std::unique_ptr<FileLock>> RootedFilesystem::LockFile(std::string_view path, bool wait) {
  auto at = Locate(root_fd_, path, false);
  if (!at) return Fail(at.error());
  UniqueFd fd(openat(at->parent.get(), at->name.c_str(),
                     O_RDWR | O_CREAT | O_NOFOLLOW | O_NOCTTY | O_CLOEXEC, 0600));
  if (!fd.valid()) return FailErrno(errno, "open " + Quote(at->path));
  int locked;
  while ((locked = flock(fd.get(), LOCK_EX | (wait ? 0 : LOCK_NB))) != 0 && errno == EINTR) {
  }
  if (locked != 0) return FailErrno(errno, "lock " + Quote(at->path));
  return std::unique_ptr<FileLock>(new FlockLock(std::move(fd)));
}

}  // namespace tether

namespace tether {

Result<std::string> ReadLocalFile(const std::string& path, std::size_t max_size) {
  UniqueFd fd(open(path.c_str(), O_RDONLY | O_NONBLOCK | O_NOCTTY | O_CLOEXEC));
  if (!fd.valid()) return FailErrno(errno, "open " + Quote(path));
  struct stat st {};
  if (fstat(fd.get(), &st) != 0) return FailErrno(errno, "stat " + Quote(path));
  if (!S_ISREG(st.st_mode)) {
    return Fail(std::errc::invalid_argument, Quote(path) + " is not a regular file");
  }
  std::string content;
  char buffer[65536];
  while (true) {
    const ssize_t n = read(fd.get(), buffer, sizeof(buffer));
    if (n < 0) {
      if (errno == EINTR) continue;
      return FailErrno(errno, "read " + Quote(path));
    }
    if (n == 0) break;
    if (content.size() + static_cast<std::size_t>(n) > max_size) {
      return Fail(std::errc::file_too_large,
                  Quote(path) + " is larger than " + std::to_string(max_size) + " bytes");
    }
    content.append(buffer, static_cast<std::size_t>(n));
  }
  return content;
}

Result<std::string> ReadSecretFile(const std::string& path) {
  auto content = ReadLocalFile(path, 64 << 10);
  if (!content) return content;
  while (!content->empty() && (content->back() == '\n' || content->back() == '\r')) {
    content->pop_back();
  }
  return content;
}

}  // namespace tether
