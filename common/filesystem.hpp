// The Filesystem port: every read and write of a managed path goes through it.
//
// Paths are absolute, normalised host paths ("/etc/motd"): see NormalizePath. An
// implementation may map them below another root (RootedFilesystem, for --root and tests).
//
// Safety contract of every implementation:
//  - No operation follows a symlink, neither in the parent directories of a path (refused
//    with ELOOP) nor in its last component (the symlink itself is read, replaced or removed).
//  - WriteFileAtomic never exposes a half-written file or a file with wider permissions
//    or another owner than asked: the temporary file is created with the final mode and
//    owner before any content is written, then renamed over the path.
//  - A directory is never replaced by a file or a symlink (EISDIR), nor removed unless empty.
//
// Errors carry the errno value as their code and name the path.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/error.hpp"
#include "common/unique_fd.hpp"

namespace tether {

enum class FileType { kRegular, kDirectory, kSymlink, kOther };

struct FileStat {
  FileType type = FileType::kOther;
  std::uint32_t mode = 0;  // permission bits, including setuid/setgid/sticky (07777)
  std::uint32_t uid = 0;
  std::uint32_t gid = 0;
  std::uint64_t size = 0;
  std::int64_t mtime_ns = 0;  // nanoseconds since the epoch
  std::int64_t ctime_ns = 0;
  std::uint64_t inode = 0;
  std::uint64_t device = 0;
};

struct WriteOptions {
  std::uint32_t mode = 0644;         // exact permission bits (the umask does not apply)
  std::optional<std::uint32_t> uid;  // owner; unset: the writing process's
  std::optional<std::uint32_t> gid;  // group; unset: the writing process's
  bool sync = true;                  // fsync the file and its directory (durable on return)
};

struct AppendOptions {
  std::uint32_t mode = 0600;  // exact permission bits of a file this call creates
  // Creates the file, which must not exist (EEXIST), and syncs its directory: the new
  // name is durable on return. Otherwise the file must exist (ENOENT).
  bool create = false;
  bool sync = true;  // fdatasync: the appended bytes (and the size) durable on return
};

// A file's bytes (Filesystem::ReadBytes): a copy, or the file mapped read-only.
class FileBytes {
 public:
  FileBytes() = default;
  explicit FileBytes(std::string copy) : copy_(std::move(copy)) {}
  FileBytes(FileBytes&& other) noexcept;
  FileBytes& operator=(FileBytes&& other) noexcept;
  FileBytes(const FileBytes&) = delete;
  FileBytes& operator=(const FileBytes&) = delete;
  ~FileBytes();

  [[nodiscard]] std::string_view view() const {
    return mapped_ != nullptr ? std::string_view(static_cast<const char*>(mapped_), size_)
                              : std::string_view(copy_);
  }
  [[nodiscard]] bool mapped() const { return mapped_ != nullptr; }

 private:
  friend class RootedFilesystem;
  std::string copy_;
  void* mapped_ = nullptr;
  std::size_t size_ = 0;
};

// A lock held on a file (flock), released when this object is destroyed.
class FileLock {
 public:
  virtual ~FileLock() = default;
};

class Filesystem {
 public:
  virtual ~Filesystem() = default;

  // Metadata of `path` itself (lstat). ENOENT when it does not exist.
  [[nodiscard]] virtual Result<FileStat> Stat(std::string_view path) = 0;

  // Contents of the regular file `path`. EFBIG when larger than `max_size`; EINVAL when it
  // is not a regular file (a FIFO never blocks the caller); ELOOP when it is a symlink.
  [[nodiscard]] virtual Result<std::string> ReadFile(std::string_view path,
                                                     std::size_t max_size) = 0;

  // The same, read for a pass over the bytes. With `map`, a large file may be mapped
  // instead of copied (RootedFilesystem: over 64 KiB): no copy, and a page fault for many
  // pages, not one for each. Only for a program that may die of SIGBUS should the file be
  // cut short in place while mapped (files replaced by a rename, never rewritten, are
  // safe: the mapping keeps the file it mapped). By default, a copy (ReadFile).
  [[nodiscard]] virtual Result<FileBytes> ReadBytes(std::string_view path, std::size_t max_size,
                                                    bool map);

  // Target of the symlink `path`, unresolved.
  [[nodiscard]] virtual Result<std::string> ReadSymlink(std::string_view path) = 0;

  // Names in directory `path`, sorted, without "." and "..".
  [[nodiscard]] virtual Result<std::vector<std::string>> ListDirectory(std::string_view path) = 0;

  // Atomically replaces (or creates) the file `path` with `content`. The parent directory
  // must exist. On failure the old file, if any, is untouched and no temporary file is left.
  [[nodiscard]] virtual Status WriteFileAtomic(std::string_view path, std::string_view content,
                                               const WriteOptions& options) = 0;

  // The first half of an atomic write, for many files at once: writes `content` to a new
  // temporary file next to `path` (final mode and owner set before any content is
  // written; not synced) and returns the temporary's path, for SyncFilesystems and then
  // Rename onto `path`. On failure no temporary file is left.
  [[nodiscard]] virtual Result<std::string> WriteTemporary(std::string_view path,
                                                           std::string_view content,
                                                           const WriteOptions& options) = 0;

  // Makes `paths` durable (a file's content, a directory's entries): an fsync(2) of each
  // when they are few (a path that is not there, or a symlink, syncs its directory);
  // else everything written so far to the filesystems holding them, with one syncfs(2)
  // per filesystem, however many paths each holds.
  [[nodiscard]] virtual Status SyncFilesystems(const std::vector<std::string>& paths) = 0;

  // Creates directory `path` with exactly `mode`; EEXIST when something is there.
  [[nodiscard]] virtual Status CreateDirectory(std::string_view path, std::uint32_t mode) = 0;

  // Atomically creates or replaces the symlink `path` -> `target` (a file or symlink there
  // is replaced; a directory is not: EISDIR).
  [[nodiscard]] virtual Status CreateSymlink(std::string_view path, std::string_view target) = 0;

  // Sets mode (ignored for symlinks), and owner and group when given, on `path` itself.
  [[nodiscard]] virtual Status SetAttributes(std::string_view path, std::uint32_t mode,
                                             std::optional<std::uint32_t> uid,
                                             std::optional<std::uint32_t> gid) = 0;

  // Removes the file, symlink or empty directory `path`. ENOENT when it does not exist.
  [[nodiscard]] virtual Status Remove(std::string_view path) = 0;

  // Atomically renames `from` to `to` (same filesystem).
  [[nodiscard]] virtual Status Rename(std::string_view from, std::string_view to) = 0;

  // Makes `to` a hard link to `from` itself (a symlink is linked, not followed); EEXIST
  // when `to` exists. A backup that costs no copy: a later atomic replace of `from` leaves
  // the old inode to `to`.
  [[nodiscard]] virtual Status Link(std::string_view from, std::string_view to) = 0;

  // Makes what was renamed or created in directory `path` durable (fsync of the
  // directory).
  [[nodiscard]] virtual Status SyncDirectory(std::string_view path) = 0;

  // Appends `data` to the regular file `path`, as one write in the order of the calls (a
  // log, or a large file written a chunk at a time). Not atomic: a crash may leave a
  // prefix of `data`; readers must tolerate a torn end.
  [[nodiscard]] virtual Status AppendFile(std::string_view path, std::string_view data,
                                          const AppendOptions& options) = 0;

  // Up to `max_size` bytes of the regular file `path` from byte `offset` on: fewer at its
  // end, none past it. For reading a large file a chunk at a time.
  [[nodiscard]] virtual Result<std::string> ReadFileRange(std::string_view path,
                                                          std::uint64_t offset,
                                                          std::size_t max_size) = 0;

  // Takes an exclusive lock on `path` (created with mode 0600 when missing), held until
  // the returned object is destroyed. When another process holds it: waits for it with
  // `wait`, else fails at once with EWOULDBLOCK (std::errc::operation_would_block).
  [[nodiscard]] virtual Result<std::unique_ptr<FileLock>> LockFile(std::string_view path,
                                                                   bool wait) = 0;
};

// Temporary files of WriteFileAtomic and CreateSymlink for `name` are named
// TemporaryPrefix(name) + random characters, in the same directory, so that recovery
// after a crash can find and remove them.
[[nodiscard]] std::string TemporaryPrefix(std::string_view name);

// True when `candidate` is exactly a temporary file name of WriteFileAtomic or
// CreateSymlink for `name` (the prefix and 12 hex digits), and so safe to remove after
// a crash; an operator's own ".NAME.tether-notes" is not.
[[nodiscard]] bool IsTemporaryName(std::string_view candidate, std::string_view name);

// Checks that `path` is absolute and returns it normalised: repeated and trailing '/'
// removed. "." and ".." components, NUL bytes and empty paths are refused (EINVAL), so a
// normalised path can never climb out of a root.
[[nodiscard]] Result<std::string> NormalizePath(std::string_view path);

// The real filesystem, with every path taken relative to a root directory ("/" for the
// host itself, a temp dir in tests, DIR for --root DIR). Thread-safe.
class RootedFilesystem final : public Filesystem {
 public:
  // `root` must be an existing directory; it is opened once and held.
  [[nodiscard]] static Result<std::unique_ptr<RootedFilesystem>> Open(const std::string& root);
  ~RootedFilesystem() override;

  [[nodiscard]] const std::string& root() const { return root_; }

  Result<FileStat> Stat(std::string_view path) override;
  Result<std::string> ReadFile(std::string_view path, std::size_t max_size) override;
  Result<FileBytes> ReadBytes(std::string_view path, std::size_t max_size, bool map) override;
  Result<std::string> ReadSymlink(std::string_view path) override;
  Result<std::vector<std::string>> ListDirectory(std::string_view path) override;
  Status WriteFileAtomic(std::string_view path, std::string_view content,
                         const WriteOptions& options) override;
  Result<std::string> WriteTemporary(std::string_view path, std::string_view content,
                                     const WriteOptions& options) override;
  Status SyncFilesystems(const std::vector<std::string>& paths) override;
  Status CreateDirectory(std::string_view path, std::uint32_t mode) override;
  Status CreateSymlink(std::string_view path, std::string_view target) override;
  Status SetAttributes(std::string_view path, std::uint32_t mode, std::optional<std::uint32_t> uid,
                       std::optional<std::uint32_t> gid) override;
  Status Remove(std::string_view path) override;
  Status Rename(std::string_view from, std::string_view to) override;
  Status Link(std::string_view from, std::string_view to) override;
  Status SyncDirectory(std::string_view path) override;
  Status AppendFile(std::string_view path, std::string_view data,
                    const AppendOptions& options) override;
  Result<std::string> ReadFileRange(std::string_view path, std::uint64_t offset,
                                    std::size_t max_size) override;
  Result<std::unique_ptr<FileLock>> LockFile(std::string_view path, bool wait) override;

 private:
  RootedFilesystem(std::string root, int root_fd) : root_(std::move(root)), root_fd_(root_fd) {}
  // Forgets Stat's directory: called by whatever may move or replace a directory.
  void ForgetStatDirectory() {
    stat_dir_.clear();
    stat_dir_fd_.Reset();
  }
  // Forgets it when `path` is that directory or one above it (a rename of a file, such as
  // a temporary onto its file, leaves it).
  void ForgetStatDirectoryAt(std::string_view path);

  std::string root_;
  int root_fd_;
  // The directory of the last Stat, kept open: a plan stats many paths in one directory in
  // a row, and each then costs one fstatat() rather than an openat2(), fstatat() and close().
  std::string stat_dir_;
  UniqueFd stat_dir_fd_;
};

}  // namespace tether

namespace tether {

// Reads a whole local file that is not a managed path (a config file, a key, a template
// given on the command line), following symlinks as any tool would. EFBIG past
// `max_size`; EINVAL when it is not a regular file.
[[nodiscard]] Result<std::string> ReadLocalFile(const std::string& path, std::size_t max_size);

// A secret or token file (ReadLocalFile, at most 64 KiB) without its trailing newlines,
// which an editor adds and which are not part of the secret.
[[nodiscard]] Result<std::string> ReadSecretFile(const std::string& path);

}  // namespace tether
