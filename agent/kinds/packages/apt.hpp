// The dpkg + apt backend of the package manager port. It runs apt-get and apt-cache on the
// host (through common/process: clean environment, deadlines) and reads dpkg's status
// database itself.
//
// A transaction is one `apt-get install` of every change ("NAME=VERSION" to install,
// upgrade or downgrade, "NAME-" to remove), non-interactive, keeping changed configuration
// files (--force-confdef, --force-confold), with downgrades allowed and held packages never
// changed (no --allow-change-held-packages: apt's refusal is the error). It is simulated
// first (`apt-get -s`, without the lock): a transaction that would remove a package it was
// not asked to remove (a conflict, or a dependant of a removed or downgraded package) is
// refused before anything changes. The dpkg lock is waited for up to `lock_timeout`
// (apt's DPkg::Lock::Timeout) and never broken.
//
// Package lists are not refreshed here: what the archives offer is what the last
// `apt-get update` fetched.
//
// REQUIRES: root for Apply. Threading: one caller at a time.
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "agent/kinds/packages/package_manager.hpp"
#include "common/error.hpp"

namespace tether {

struct AptOptions {
  std::string apt_get = "apt-get";      // looked up in the clean PATH unless it has a '/'
  std::string apt_cache = "apt-cache";  //
  std::string dpkg_status = "/var/lib/dpkg/status";
  bool install_recommends = false;  // false: --no-install-recommends
  // How long a transaction waits for another process's dpkg lock before it gives up.
  std::chrono::seconds lock_timeout{120};
  // Deadline of a read-only apt-cache query and of a transaction's simulation.
  std::chrono::milliseconds query_timeout{std::chrono::minutes(2)};
};

class AptPackageManager final : public PackageManager {
 public:
  explicit AptPackageManager(AptOptions options = {});

  // Parses options.dpkg_status; parsed again only when the file changed (another inode,
  // size or modification time: dpkg replaces it by a rename on every change).
  [[nodiscard]] Result<InstalledPackages> Installed() override;
  // One `apt-cache madison` for all of `names`.
  [[nodiscard]] Result<std::map<std::string, std::vector<std::string>>> Available(
      const std::vector<std::string>& names) override;
  [[nodiscard]] Status Apply(const std::vector<PackageChange>& changes,
                             std::chrono::milliseconds timeout) override;
  [[nodiscard]] VersionCompare version_order() const override;

  // The arguments of the apt-get call for `changes` (after argv[0]), for a simulation or
  // the real thing. Exposed for tests.
  [[nodiscard]] std::vector<std::string> InstallArguments(const std::vector<PackageChange>& changes,
                                                          bool simulate) const;

 private:
  AptOptions options_;
  struct StatusIdentity {
    std::uint64_t device = 0;
    std::uint64_t inode = 0;
    std::int64_t size = -1;
    std::int64_t mtime_ns = 0;
    bool operator==(const StatusIdentity&) const = default;
  };
  StatusIdentity status_identity_;
  InstalledPackages installed_;
};

// The installed packages of a dpkg status database (/var/lib/dpkg/status): every stanza
// whose Status is "<want> ok installed" (want "install", "hold", or "deinstall"/"purge" not
// yet done), name -> Version. Half-installed, unpacked, config-files and the like are not
// installed. Field names are matched case-insensitively; continuation lines are skipped.
[[nodiscard]] InstalledPackages ParseDpkgStatus(std::string_view text);

// The versions in `apt-cache madison` output ("  NAME | VERSION | SOURCE"), per name, each
// once, in the order listed; lines of source packages ("... Sources") are skipped.
[[nodiscard]] std::map<std::string, std::vector<std::string>> ParseMadison(std::string_view out);

// The packages an `apt-get -s` run would remove: its "Remv NAME [VERSION]" lines, names
// without an ":ARCH" suffix.
[[nodiscard]] std::vector<std::string> ParseSimulatedRemovals(std::string_view out);

// Says who holds an fcntl lock on the file `path` ("process 42 (python3)"), or "" when
// nobody does or it cannot be told. Only asks (F_GETLK): never takes or breaks the lock.
using LockHolderLookup = std::string (*)(const std::string& path);
[[nodiscard]] std::string DescribeLockHolder(const std::string& path);

// The error of a failed apt-get run, from its "E: " lines (stderr) and the details apt
// prints on stdout (unmet dependencies, held packages), with a code from the table of
// package_manager.hpp. `lock_timeout` is the wait that was allowed for the lock; when apt
// does not say who held it, `lock_holder` (if any) is asked.
[[nodiscard]] Error AptFailure(std::string_view out, std::string_view err, std::string_view what,
                               std::chrono::seconds lock_timeout,
                               LockHolderLookup lock_holder = nullptr);

}  // namespace tether
