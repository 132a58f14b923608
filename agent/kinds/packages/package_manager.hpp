// The package manager port: what tether asks of the host's packaging system (dpkg + apt
// today, rpm + dnf to follow), in tether's own words, with no library types. The real
// backend is AptPackageManager (agent/packages/apt.hpp); the package KindHandler uses only
// this interface.
//
// Errors (Error::code()) mean the same on every backend:
//  - std::errc::no_such_file_or_directory: an unknown package, or a version no archive has;
//  - std::errc::operation_not_permitted: refused, nothing changed: a held package would
//    change, or the transaction would remove a package it was not asked to remove;
//  - std::errc::invalid_argument: a malformed name or version, or dependencies the
//    archives cannot satisfy;
//  - std::errc::device_or_resource_busy: another process still held the package database's
//    lock when the bounded wait ended (the lock is never broken);
//  - std::errc::timed_out: the transaction's deadline passed (it was killed);
//  - std::errc::io_error: anything else the package manager reported.
// Messages name the packages they are about in single quotes: "'nginx'".
//
// Threading: one caller at a time.
#pragma once

#include <chrono>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/error.hpp"

namespace tether {

// Installed packages: name -> version.
using InstalledPackages = std::map<std::string, std::string>;

// A packaging system's version order: < 0, 0, > 0 as `a` sorts before, equals, or sorts
// after `b`.
using VersionCompare = int (*)(std::string_view a, std::string_view b);

struct PackageChange {
  enum class Type { kInstall, kUpgrade, kDowngrade, kRemove };
  Type type = Type::kInstall;
  std::string name;
  std::string version{};  // the exact version to end with; empty for kRemove
};

class PackageManager {
 public:
  virtual ~PackageManager() = default;

  // Every package installed now, with its version. Reads only. Fails when the package
  // database cannot be read.
  [[nodiscard]] virtual Result<InstalledPackages> Installed() = 0;

  // The versions the configured archives offer for each of `names`, newest first, each
  // once; a name no archive knows maps to an empty list. Reads only (no index refresh).
  [[nodiscard]] virtual Result<std::map<std::string, std::vector<std::string>>> Available(
      const std::vector<std::string>& names) = 0;

  // Makes every one of `changes` in ONE transaction: on success each package is at its
  // version (or removed); on failure, as far as the package manager can promise, none is
  // changed. Waits a bounded time for another process's lock, never breaks it. Killed at
  // `timeout` (which may leave the package database needing repair: the error says so).
  [[nodiscard]] virtual Status Apply(const std::vector<PackageChange>& changes,
                                     std::chrono::milliseconds timeout) = 0;

  // This packaging system's version order.
  [[nodiscard]] virtual VersionCompare version_order() const = 0;
};

// True when `request` is a pattern rather than an exact version: it has a glob character
// ('*', '?' or '[').
[[nodiscard]] bool IsVersionPattern(std::string_view request);

// True when an installed `version` satisfies `request`: no request, any version; a pattern,
// a glob match (fnmatch, '*' matching any characters, '.' included) of the whole version or,
// when the pattern has no ':', of the version without its epoch; an exact version, one that
// `compare` finds equal.
[[nodiscard]] bool VersionSatisfies(const std::optional<std::string>& request,
                                    std::string_view version, VersionCompare compare);

// The version to install for `request` among `available` (any order): the newest (by
// `compare`) that satisfies it; no request, the newest. Fails with
// no_such_file_or_directory, naming `name` and what is available, when none does.
[[nodiscard]] Result<std::string> ChooseVersion(std::string_view name,
                                                const std::optional<std::string>& request,
                                                const std::vector<std::string>& available,
                                                VersionCompare compare);

// Checks a package name and a version request from a profile before they go anywhere near a
// command line: a name starts with a letter or digit and has only letters, digits and
// "+ - . _" (no architecture suffix); a version request is non-empty, starts with a letter, digit
// or glob character, and has only letters, digits, "+ - . _ ~ :" and the glob characters "* ? [ ]
// !". Fails with invalid_argument.
[[nodiscard]] Status CheckPackageRequest(std::string_view name,
                                         const std::optional<std::string>& request);

}  // namespace tether
