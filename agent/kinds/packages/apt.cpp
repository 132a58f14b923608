#include "agent/kinds/packages/apt.hpp"

#include <fcntl.h>
#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <set>

#include "agent/kinds/packages/debian_version.hpp"
#include "common/filesystem.hpp"
#include "common/process.hpp"
#include "common/unique_fd.hpp"

namespace tether {

namespace {

// dpkg's status file of a large host is a few MB; this is far beyond any real one.
constexpr std::size_t kMaxStatusFile = 256 << 20;

std::string_view Trim(std::string_view text) {
  const auto first = text.find_first_not_of(" \t\r\n");
  if (first == std::string_view::npos) return {};
  const auto last = text.find_last_not_of(" \t\r\n");
  return text.substr(first, last - first + 1);
}

bool EqualsIgnoreCase(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (std::size_t i = 0; i < a.size(); ++i) {
    const auto lower = [](char c) { return c >= 'A' && c <= 'Z' ? char(c - 'A' + 'a') : c; };
    if (lower(a[i]) != lower(b[i])) return false;
  }
  return true;
}

// Calls `line` for each line of `text` (without its '\n').
template <typename Function>
void ForEachLine(std::string_view text, Function&& line) {
  while (!text.empty()) {
    const auto end = text.find('\n');
    line(text.substr(0, end));
    if (end == std::string_view::npos) break;
    text.remove_prefix(end + 1);
  }
}

bool StartsWith(std::string_view text, std::string_view prefix) {
  return text.substr(0, prefix.size()) == prefix;
}

// The indented lines that follow the line `heading` in apt's output, trimmed.
std::vector<std::string> Section(std::string_view out, std::string_view heading) {
  std::vector<std::string> lines;
  bool inside = false;
  ForEachLine(out, [&](std::string_view line) {
    if (inside && (line.empty() || (line[0] != ' ' && line[0] != '\t'))) inside = false;
    if (inside) lines.emplace_back(Trim(line));
    if (Trim(line) == heading) inside = true;
  });
  return lines;
}

std::string Join(const std::vector<std::string>& items, std::string_view separator) {
  std::string joined;
  for (const auto& item : items) {
    if (!joined.empty()) joined += separator;
    joined += item;
  }
  return joined;
}

std::string Quoted(const std::vector<std::string>& names) {
  std::vector<std::string> quoted;
  for (const auto& name : names) quoted.push_back("'" + name + "'");
  return Join(quoted, ", ");
}

// The text between `before` and `after` in `line` (after: to the end when empty).
std::string Between(std::string_view line, std::string_view before, std::string_view after) {
  const auto start = line.find(before);
  if (start == std::string_view::npos) return "";
  line.remove_prefix(start + before.size());
  return std::string(after.empty() ? line : line.substr(0, line.find(after)));
}

std::vector<std::string> AptEnvironment() {
  std::vector<std::string> env = kCleanEnvironment;
  env.push_back("DEBIAN_FRONTEND=noninteractive");
  env.push_back("DEBCONF_NONINTERACTIVE_SEEN=true");
  env.push_back("APT_LISTCHANGES_FRONTEND=none");
  return env;
}

}  // namespace

InstalledPackages ParseDpkgStatus(std::string_view text) {
  InstalledPackages installed;
  std::string package;
  std::string version;
  std::string status;
  auto finish = [&] {
    // "want flag status": e.g. "install ok installed", "hold ok installed".
    std::vector<std::string_view> words;
    std::string_view rest = status;
    while (!(rest = Trim(rest)).empty()) {
      const auto space = rest.find_first_of(" \t");
      words.push_back(rest.substr(0, space));
      if (space == std::string_view::npos) break;
      rest.remove_prefix(space);
    }
    if (!package.empty() && !version.empty() && words.size() == 3 && words[1] == "ok" &&
        words[2] == "installed") {
      installed[package] = version;
    }
    package.clear();
    version.clear();
    status.clear();
  };
  ForEachLine(text, [&](std::string_view line) {
    if (Trim(line).empty()) {
      finish();
      return;
    }
    if (line[0] == ' ' || line[0] == '\t') return;  // a continuation line
    const auto colon = line.find(':');
    if (colon == std::string_view::npos) return;
    const std::string_view field = Trim(line.substr(0, colon));
    const std::string value(Trim(line.substr(colon + 1)));
    if (EqualsIgnoreCase(field, "Package")) package = value;
    if (EqualsIgnoreCase(field, "Version")) version = value;
    if (EqualsIgnoreCase(field, "Status")) status = value;
  });
  finish();
  return installed;
}

std::map<std::string, std::vector<std::string>> ParseMadison(std::string_view out) {
  std::map<std::string, std::vector<std::string>> versions;
  ForEachLine(out, [&](std::string_view line) {
    const auto first = line.find('|');
    if (first == std::string_view::npos) return;
    const auto second = line.find('|', first + 1);
    if (second == std::string_view::npos) return;
    const std::string name(Trim(line.substr(0, first)));
    const std::string version(Trim(line.substr(first + 1, second - first - 1)));
    const std::string_view source = Trim(line.substr(second + 1));
    if (name.empty() || version.empty() || source.ends_with("Sources")) return;
    auto& list = versions[name];
    if (std::find(list.begin(), list.end(), version) == list.end()) list.push_back(version);
  });
  return versions;
}

std::vector<std::string> ParseSimulatedRemovals(std::string_view out) {
  std::vector<std::string> names;
  ForEachLine(out, [&](std::string_view line) {
    if (!StartsWith(line, "Remv ")) return;
    line.remove_prefix(5);
    std::string name(line.substr(0, line.find_first_of(" \t")));
    name = name.substr(0, name.find(':'));
    if (!name.empty()) names.push_back(std::move(name));
  });
  return names;
}

std::string DescribeLockHolder(const std::string& path) {
  UniqueFd fd(open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW));
  if (!fd.valid()) return "";
  struct flock lock {};
  lock.l_type = F_WRLCK;
  lock.l_whence = SEEK_SET;
  if (fcntl(fd.get(), F_GETLK, &lock) != 0 || lock.l_type == F_UNLCK || lock.l_pid <= 0) {
    return "";
  }
  const std::string pid = std::to_string(lock.l_pid);
  auto comm = ReadLocalFile("/proc/" + pid + "/comm", 256);
  const std::string name = comm ? std::string(Trim(*comm)) : "";
  return "process " + pid + (name.empty() ? "" : " (" + name + ")");
}

Error AptFailure(std::string_view out, std::string_view err, std::string_view what,
                 std::chrono::seconds lock_timeout, LockHolderLookup lock_holder) {
  std::vector<std::string> errors;
  ForEachLine(err, [&](std::string_view line) {
    if (StartsWith(line, "E: ")) errors.emplace_back(Trim(line.substr(3)));
  });
  const std::string prefix = std::string(what) + ": ";

  // The lock: "Could not get lock /var/lib/dpkg/lock-frontend. It is held by process 42
  // (python3)" when apt did not wait; after a wait only "Unable to acquire the dpkg
  // frontend lock (/var/lib/dpkg/lock-frontend), is another process using it?".
  const auto locked = std::find_if(errors.begin(), errors.end(), [](const std::string& line) {
    return StartsWith(line, "Could not get lock ") || StartsWith(line, "Unable to acquire") ||
           StartsWith(line, "Unable to lock");
  });
  if (locked != errors.end()) {
    std::string file;
    std::string holder;
    for (const auto& line : errors) {
      if (file.empty()) file = Between(line, "Could not get lock ", ". ");
      if (file.empty() && StartsWith(line, "Unable to acquire")) file = Between(line, "(", ")");
      if (holder.empty()) holder = Between(line, "It is held by ", "");
    }
    if (holder.empty() && !file.empty() && lock_holder != nullptr) holder = lock_holder(file);
    std::string message =
        file.empty() ? "the package database is locked" : "the dpkg lock '" + file + "' is held";
    if (!holder.empty()) message += " by " + holder;
    message += ", still after waiting " + std::to_string(lock_timeout.count()) +
               " s; it was left alone (never broken): try again once that process is done";
    return Error(std::errc::device_or_resource_busy, prefix + message);
  }

  std::vector<std::string> unknown;
  std::vector<std::string> missing_versions;
  for (const auto& line : errors) {
    if (StartsWith(line, "Unable to locate package ")) {
      unknown.push_back(line.substr(std::string_view("Unable to locate package ").size()));
    }
    // "Version '9.9-1' for 'tether-a' was not found"
    if (StartsWith(line, "Version '") && line.ends_with("' was not found")) {
      missing_versions.push_back("version " + Between(line, "Version '", "'") + " of '" +
                                 Between(line, "' for '", "'") + "'");
    }
  }
  if (!unknown.empty()) {
    return Error(std::errc::no_such_file_or_directory,
                 prefix + "unknown package" + (unknown.size() > 1 ? "s " : " ") + Quoted(unknown) +
                     ": no configured archive offers " + (unknown.size() > 1 ? "them" : "it"));
  }
  if (!missing_versions.empty()) {
    return Error(std::errc::no_such_file_or_directory,
                 prefix + Join(missing_versions, ", ") + " not available from any archive");
  }

  for (const auto& line : errors) {
    if (StartsWith(line, "Held packages were changed")) {
      const auto held = Section(out, "The following held packages will be changed:");
      std::vector<std::string> names;
      for (const auto& entry : held) {
        for (std::string_view rest = entry; !(rest = Trim(rest)).empty();) {
          const auto space = rest.find(' ');
          names.emplace_back(rest.substr(0, space));
          if (space == std::string_view::npos) break;
          rest.remove_prefix(space);
        }
      }
      return Error(std::errc::operation_not_permitted,
                   prefix + "refused: held package" + (names.size() > 1 ? "s " : " ") +
                       (names.empty() ? std::string("(see apt-mark showhold)") : Quoted(names)) +
                       " would change; tether never overrides a hold (apt-mark unhold it, or "
                       "change the profile)");
    }
  }

  const auto unmet = Section(out, "The following packages have unmet dependencies:");
  const auto broken = std::find_if(errors.begin(), errors.end(), [](const std::string& line) {
    return StartsWith(line, "Unable to correct problems") || StartsWith(line, "Unmet dependencies");
  });
  if (!unmet.empty() || broken != errors.end()) {
    return Error(std::errc::invalid_argument,
                 prefix + "broken dependencies: " + (unmet.empty() ? *broken : Join(unmet, "; ")));
  }

  // An archive that could not be reached: the network's failure, tried again later.
  const bool unreachable = std::any_of(errors.begin(), errors.end(), [](const std::string& line) {
    return StartsWith(line, "Failed to fetch") || StartsWith(line, "Unable to fetch some") ||
           line.find("Temporary failure resolving") != std::string::npos ||
           line.find("Could not connect") != std::string::npos;
  });
  if (unreachable) return Error(std::errc::network_unreachable, prefix + Join(errors, "; "));
  // dpkg failed (a maintainer script, a file conflict): the package's or the profile's
  // doing, not the moment's; the commit is quarantined.
  const bool dpkg = std::any_of(errors.begin(), errors.end(), [](const std::string& line) {
    return StartsWith(line, "Sub-process /usr/bin/dpkg returned an error code");
  });
  if (dpkg) return Error(std::errc::state_not_recoverable, prefix + Join(errors, "; "));
  if (!errors.empty()) return Error(std::errc::io_error, prefix + Join(errors, "; "));
  // No "E:" line: the last thing it said.
  std::string_view tail = Trim(err.empty() ? out : err);
  if (tail.size() > 500) tail = tail.substr(tail.size() - 500);
  return Error(std::errc::io_error,
               prefix + (tail.empty() ? std::string("failed, saying nothing") : std::string(tail)));
}

AptPackageManager::AptPackageManager(AptOptions options) : options_(std::move(options)) {}

VersionCompare AptPackageManager::version_order() const { return &CompareDebianVersions; }

Result<InstalledPackages> AptPackageManager::Installed() {
  struct stat st {};
  if (stat(options_.dpkg_status.c_str(), &st) != 0) {
    return FailErrno(errno, "read dpkg status '" + options_.dpkg_status + "'");
  }
  const StatusIdentity identity{
      static_cast<std::uint64_t>(st.st_dev), static_cast<std::uint64_t>(st.st_ino),
      static_cast<std::int64_t>(st.st_size), st.st_mtim.tv_sec * 1000000000LL + st.st_mtim.tv_nsec};
  if (identity == status_identity_) return installed_;
  auto text = ReadLocalFile(options_.dpkg_status, kMaxStatusFile);
  if (!text) return AddContext(text, "read dpkg status '" + options_.dpkg_status + "'");
  installed_ = ParseDpkgStatus(*text);
  status_identity_ = identity;
  return installed_;
}

Result<std::map<std::string, std::vector<std::string>>> AptPackageManager::Available(
    const std::vector<std::string>& names) {
  std::map<std::string, std::vector<std::string>> available;
  if (names.empty()) return available;
  std::vector<std::string> argv = {options_.apt_cache, "madison", "--"};
  for (const auto& name : names) {
    if (auto checked = CheckPackageRequest(name, std::nullopt); !checked) {
      return Fail(checked.error());
    }
    argv.push_back(name);
  }
  RunOptions run_options;
  run_options.argv = std::move(argv);
  run_options.env = AptEnvironment();
  run_options.timeout = options_.query_timeout;
  auto run = Run(run_options);
  if (!run) return AddContext(run, "apt-cache madison");
  if (run->timed_out) {
    return Fail(std::errc::timed_out,
                "apt-cache madison: " + run->Describe(options_.query_timeout));
  }
  if (!run->ok()) {
    return Fail(AptFailure(run->out, run->err, "apt-cache madison", options_.lock_timeout));
  }
  auto parsed = ParseMadison(run->out);
  for (const auto& name : names) {
    // apt-cache falls back to taking a name as a regular expression ('.' and '+' are
    // legal in names): only lines of that very name count.
    auto& list = available[name];
    if (auto found = parsed.find(name); found != parsed.end()) list = found->second;
    std::sort(list.begin(), list.end(), [](const std::string& a, const std::string& b) {
      return CompareDebianVersions(a, b) > 0;
    });
  }
  return available;
}

std::vector<std::string> AptPackageManager::InstallArguments(
    const std::vector<PackageChange>& changes, bool simulate) const {
  std::vector<std::string> args = {
      "install",
      "-y",
      "-q",
      options_.install_recommends ? "--install-recommends" : "--no-install-recommends",
      "--allow-downgrades",
      "-o",
      "Dpkg::Options::=--force-confdef",
      "-o",
      "Dpkg::Options::=--force-confold",
      "-o",
      "Dpkg::Use-Pty=0",
      "-o",
      "DPkg::Lock::Timeout=" + std::to_string(options_.lock_timeout.count()),
  };
  if (simulate) {
    // Only reads: it needs no lock (and must not wait for one).
    for (const char* arg : {"-s", "-o", "Debug::NoLocking=true"}) args.emplace_back(arg);
  }
  args.emplace_back("--");
  for (const auto& change : changes) {
    args.push_back(change.type == PackageChange::Type::kRemove
                       ? change.name + "-"
                       : change.name + "=" + change.version);
  }
  return args;
}

Status AptPackageManager::Apply(const std::vector<PackageChange>& requested,
                                std::chrono::milliseconds timeout) {
  for (const auto& change : requested) {
    if (auto checked = CheckPackageRequest(change.name, std::nullopt); !checked) return checked;
    if (change.type != PackageChange::Type::kRemove && !IsValidDebianVersion(change.version)) {
      return Fail(std::errc::invalid_argument,
                  "invalid version '" + change.version + "' for '" + change.name + "'");
    }
  }
  auto installed = Installed();
  if (!installed) return Fail(installed.error());

  // apt-get takes a name it does not know as a regular expression ("lib.c6" selects libc6):
  // every name passed must be one it knows exactly. A package to remove is installed (one
  // that is not is already gone); one to install is offered by an archive at that version.
  std::vector<PackageChange> changes;
  std::vector<std::string> to_install;
  for (const auto& change : requested) {
    const auto current = installed->find(change.name);
    if (change.type == PackageChange::Type::kRemove) {
      if (current != installed->end()) changes.push_back(change);
      continue;
    }
    if (current != installed->end() &&
        CompareDebianVersions(current->second, change.version) == 0) {
      continue;  // already there
    }
    changes.push_back(change);
    to_install.push_back(change.name);
  }
  if (changes.empty()) return {};
  auto available = Available(to_install);
  if (!available) return Fail(available.error());
  for (auto& change : changes) {
    if (change.type == PackageChange::Type::kRemove) continue;
    const auto& versions = (*available)[change.name];
    if (versions.empty()) {
      return Fail(std::errc::no_such_file_or_directory, "apt-get: unknown package '" + change.name +
                                                            "': no configured archive offers it");
    }
    const auto same = std::find_if(versions.begin(), versions.end(), [&](const std::string& v) {
      return CompareDebianVersions(v, change.version) == 0;
    });
    if (same == versions.end()) {
      return Fail(std::errc::no_such_file_or_directory,
                  "apt-get: version " + change.version + " of '" + change.name +
                      "' is not available (available: " + Join(versions, ", ") + ")");
    }
    change.version = *same;  // as the archive spells it
  }

  RunOptions run_options;
  run_options.env = AptEnvironment();

  // The simulation: every refusal apt would make, without the lock, and what it would
  // remove.
  run_options.argv = InstallArguments(changes, true);
  run_options.argv.insert(run_options.argv.begin(), options_.apt_get);
  run_options.timeout = options_.query_timeout;
  auto simulated = Run(run_options);
  if (!simulated) return AddContext(simulated, "apt-get");
  if (simulated->timed_out) {
    return Fail(std::errc::timed_out,
                "apt-get (simulation): " + simulated->Describe(options_.query_timeout));
  }
  if (!simulated->ok()) {
    return Fail(AptFailure(simulated->out, simulated->err, "apt-get", options_.lock_timeout));
  }
  std::set<std::string> asked_to_remove;
  for (const auto& change : changes) {
    if (change.type == PackageChange::Type::kRemove) asked_to_remove.insert(change.name);
  }
  std::vector<std::string> collateral;
  for (const auto& name : ParseSimulatedRemovals(simulated->out)) {
    if (asked_to_remove.count(name) == 0) collateral.push_back(name);
  }
  if (!collateral.empty()) {
    return Fail(std::errc::operation_not_permitted,
                "apt-get: refused: the transaction would also remove " + Quoted(collateral) +
                    ", which it was not asked to remove (a conflict, or a package that depends "
                    "on one removed or downgraded)");
  }

  run_options.argv = InstallArguments(changes, false);
  run_options.argv.insert(run_options.argv.begin(), options_.apt_get);
  run_options.timeout = timeout;
  auto run = Run(run_options);
  if (!run) return AddContext(run, "apt-get");
  if (run->timed_out) {
    return Fail(std::errc::timed_out,
                "apt-get: " + run->Describe(timeout) +
                    " and was killed; if dpkg was interrupted, `dpkg --configure -a` repairs it");
  }
  if (!run->ok()) {
    return Fail(
        AptFailure(run->out, run->err, "apt-get", options_.lock_timeout, &DescribeLockHolder));
  }
  return {};
}

}  // namespace tether
