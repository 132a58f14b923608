// A Filesystem that forwards every call to another one: the base of the fault-injecting
// wrappers in tests, which override only the calls they break (like leveldb's EnvWrapper).
#pragma once

#include "common/filesystem.hpp"

namespace tether::testing {

class ForwardingFilesystem : public Filesystem {
 public:
  explicit ForwardingFilesystem(Filesystem& real) : real_(real) {}

  Result<FileStat> Stat(std::string_view p) override { return real_.Stat(p); }
  Result<std::string> ReadFile(std::string_view p, std::size_t max) override {
    return real_.ReadFile(p, max);
  }
  Result<std::string> ReadSymlink(std::string_view p) override { return real_.ReadSymlink(p); }
  Result<std::vector<std::string>> ListDirectory(std::string_view p) override {
    return real_.ListDirectory(p);
  }
  Status WriteFileAtomic(std::string_view p, std::string_view c, const WriteOptions& o) override {
    return real_.WriteFileAtomic(p, c, o);
  }
  Result<std::string> WriteTemporary(std::string_view p, std::string_view c,
                                     const WriteOptions& o) override {
    return real_.WriteTemporary(p, c, o);
  }
  Status SyncFilesystems(const std::vector<std::string>& p) override {
    return real_.SyncFilesystems(p);
  }
  Status CreateDirectory(std::string_view p, std::uint32_t m) override {
    return real_.CreateDirectory(p, m);
  }
  Status CreateSymlink(std::string_view p, std::string_view t) override {
    return real_.CreateSymlink(p, t);
  }
  Status SetAttributes(std::string_view p, std::uint32_t m, std::optional<std::uint32_t> u,
                       std::optional<std::uint32_t> g) override {
    return real_.SetAttributes(p, m, u, g);
  }
  Status Remove(std::string_view p) override { return real_.Remove(p); }
  Status Rename(std::string_view a, std::string_view b) override { return real_.Rename(a, b); }
  Status Link(std::string_view a, std::string_view b) override { return real_.Link(a, b); }
  Status SyncDirectory(std::string_view p) override { return real_.SyncDirectory(p); }
  Status AppendFile(std::string_view p, std::string_view d, const AppendOptions& o) override {
    return real_.AppendFile(p, d, o);
  }
  Result<std::string> ReadFileRange(std::string_view p, std::uint64_t o, std::size_t max) override {
    return real_.ReadFileRange(p, o, max);
  }
  Result<std::unique_ptr<FileLock>> LockFile(std::string_view p, bool wait) override {
    return real_.LockFile(p, wait);
  }

 protected:
  Filesystem& real_;
};

}  // namespace tether::testing
