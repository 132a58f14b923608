// The pure parts of the package kind: Debian version order, choosing a version for a
// request, parsing dpkg's status database and apt's output. Real apt is in apt_test.cpp.
#include <cstdio>
#include <string>
#include <vector>

#include <doctest/doctest.h>

#include "agent/engine/engine.hpp"
#include "agent/kinds/packages/apt.hpp"
#include "agent/kinds/packages/debian_version.hpp"
#include "agent/kinds/packages/package_manager.hpp"
#include "agent/kinds/packages/package_plan.hpp"
#include "common/process.hpp"
#include "tests/support/temp_dir.hpp"
#include "tests/support/wait_for.hpp"

using namespace std::chrono_literals;

namespace tether {
namespace {

int Sign(int value) { return (value > 0) - (value < 0); }

struct VersionPair {
  const char* a;
  const char* b;
  int order;  // -1: a < b, 0: equal, 1: a > b
};

// Checked against `dpkg --compare-versions` below, so the table cannot be wrong quietly.
const std::vector<VersionPair> kVersionPairs = {
    {"1.0", "1.0", 0},
    {"1.0", "1.0-0", 0},  // no revision is revision "0"
    {"0:1.0", "1.0", 0},  // no epoch is epoch 0
    {"1.0", "1.1", -1},
    {"1.10", "1.9", 1},  // digits compare as numbers
    {"9", "10", -1},
    {"001", "1", 0},
    {"1.001", "1.1", 0},
    {"7.4.052-1", "7.4.52-1", 0},
    {"1.0~rc1", "1.0", -1},  // '~' sorts before the end
    {"1.0~rc1", "1.0~rc2", -1},
    {"1.0~beta", "1.0~alpha", 1},
    {"1.0~~", "1.0~", -1},
    {"1.0~", "1.0", -1},
    {"1.0", "1.0a", -1},
    {"1.0a", "1.0+", -1},  // letters before other characters
    {"1.0a1", "1.0a", 1},
    {"1.0+b1", "1.0", 1},
    {"1.0.1", "1.0+1", 1},  // '+' before '.'
    {"1.2.3", "1.2", 1},
    {"1.2", "1.2.0", -1},
    {"0.9.10", "0.9.9", 1},
    {"1:1.0", "2.0", 1},  // the epoch first
    {"2:0.1", "1:9.9", 1},
    {"10:1", "9:2", 1},
    {"1:1.0-1", "1:1.0-1", 0},
    {"1.0-1", "1.0-2", -1},
    {"1.0-10", "1.0-9", 1},
    {"1.0-1", "1.0-1.1", -1},
    {"1.0-1", "1.0", 1},
    {"1.0-1ubuntu1", "1.0-1", 1},
    {"1.0-1~bpo1", "1.0-1", -1},
    {"1.0-a", "1.0-b", -1},
    {"1.2-3-4", "1.2-3-5", -1},  // the last '-' starts the revision
    {"1.2-3-4", "1.2-4", 1},     // upstream "1.2-3" against "1.2"
    {"2.0-1+deb12u1", "2.0-1", 1},
    {"2.0-1+deb12u1", "2.0-1+deb12u2", -1},
    {"1.22.1-1", "1.22.1-1~bpo11+1", 1},
    {"3.0.11-1~deb12u2", "3.0.11-1", -1},
    {"1:2.38.1-5+deb12u3", "1:2.38.1-5+b1", 1},
};

TEST_CASE("Debian versions are ordered as dpkg orders them") {
  for (const auto& pair : kVersionPairs) {
    const std::string a = pair.a;
    const std::string b = pair.b;
    CAPTURE(a);
    CAPTURE(b);
    CHECK(Sign(CompareDebianVersions(pair.a, pair.b)) == pair.order);
    CHECK(Sign(CompareDebianVersions(pair.b, pair.a)) == -pair.order);
    CHECK(IsValidDebianVersion(pair.a));
    CHECK(IsValidDebianVersion(pair.b));
  }
}

TEST_CASE("The version table agrees with dpkg --compare-versions") {
  for (const auto& pair : kVersionPairs) {
    const std::string a = pair.a;
    const std::string b = pair.b;
    CAPTURE(a);
    CAPTURE(b);
    const char* relation = pair.order < 0 ? "lt" : pair.order == 0 ? "eq" : "gt";
    auto run = Run({.argv = {"dpkg", "--compare-versions", pair.a, relation, pair.b}});
    REQUIRE(run);
    CHECK_MESSAGE(run->exit_code == 0, run->err);
  }
}

TEST_CASE("Version comparison is total on malformed strings") {
  CHECK(CompareDebianVersions("", "") == 0);
  CHECK(CompareDebianVersions("", "0") == 0);
  CHECK(CompareDebianVersions("abc", "abd") < 0);
  CHECK(CompareDebianVersions("x:1", "1") == 0);  // a non-numeric epoch counts as 0
  CHECK(CompareDebianVersions("99999999999999999999999:1", "1:1") > 0);
  CHECK(CompareDebianVersions(std::string_view("1\0", 2), "1") > 0);
}

TEST_CASE("Only well-formed Debian versions are valid") {
  for (const char* valid : {"1", "1.0", "1:1.0-1", "1.0~rc1-1+b1", "2.0-1ubuntu0.1", "1.2-3-4",
                            "0:0", "1.0+dfsg", "1:2:3"}) {
    const std::string valid_text = valid;
    CAPTURE(valid_text);
    CHECK(IsValidDebianVersion(valid));
  }
  for (const char* invalid : {"", "a1.0", "1.0-", ":1.0", "x:1.0", "1.0 -1", "-1.0", "1.0_1",
                              "1:", "1.0-1_2", "1.0-1:2", "--force", "1;rm"}) {
    const std::string invalid_text = invalid;
    CAPTURE(invalid_text);
    CHECK_FALSE(IsValidDebianVersion(invalid));
  }
}

TEST_CASE("A version request: none, exact or a glob pattern") {
  const VersionCompare order = &CompareDebianVersions;
  CHECK(VersionSatisfies(std::nullopt, "0.1-1", order));
  CHECK(VersionSatisfies("1.22.1-1", "1.22.1-1", order));
  CHECK(VersionSatisfies("1.0", "1.0-0", order));  // equal as dpkg sees it
  CHECK_FALSE(VersionSatisfies("1.22.1-1", "1.22.1-2", order));
  CHECK_FALSE(VersionSatisfies("1.22", "1.22.1-1", order));  // exact is exact, not a prefix
  CHECK(VersionSatisfies("1.22.*", "1.22.1-1", order));
  CHECK_FALSE(VersionSatisfies("1.22.*", "1.23.0-1", order));
  CHECK_FALSE(VersionSatisfies("1.22.*", "11.22.0-1", order));
  CHECK(VersionSatisfies("1.2?-1", "1.22-1", order));
  CHECK(VersionSatisfies("1.2[0-3]*", "1.22.1-1", order));
  // A pattern without an epoch also matches the version without its epoch.
  CHECK(VersionSatisfies("1.22.*", "1:1.22.1-1", order));
  CHECK_FALSE(VersionSatisfies("2:1.22.*", "1:1.22.1-1", order));
  CHECK(VersionSatisfies("1:1.22.*", "1:1.22.1-1", order));
  CHECK(IsVersionPattern("1.*"));
  CHECK(IsVersionPattern("1.?"));
  CHECK(IsVersionPattern("1.[12]"));
  CHECK_FALSE(IsVersionPattern("1.0-1"));
}

TEST_CASE("The newest available version that satisfies the request is chosen") {
  const VersionCompare order = &CompareDebianVersions;
  const std::vector<std::string> available = {"1.0-1", "2.0-1", "1.10-1", "1.9-1", "1.1~rc1-1"};
  struct Row {
    std::optional<std::string> request;
    std::string chosen;
  };
  for (const auto& row : std::vector<Row>{
           {std::nullopt, "2.0-1"},
           {"1.*", "1.10-1"},  // numeric order, not text order
           {"1.9*", "1.9-1"},
           {"1.1*", "1.10-1"},
           {"1.1~*", "1.1~rc1-1"},
           {"1.0-1", "1.0-1"},
           {"1.0-01", "1.0-1"},  // equal to dpkg: the archive's spelling is what apt gets
           {"*", "2.0-1"},
       }) {
    CAPTURE(row.request.value_or("(none)"));
    auto chosen = ChooseVersion("nginx", row.request, available, order);
    REQUIRE_MESSAGE(chosen, (chosen ? "" : chosen.error().message()));
    CHECK(*chosen == row.chosen);
  }
  CHECK(*ChooseVersion("nginx", "1.22.*", {"1:1.22.1-1", "1:1.24.0-1"}, order) == "1:1.22.1-1");
}

TEST_CASE("No version satisfying the request is an error naming what is available") {
  const VersionCompare order = &CompareDebianVersions;
  auto none = ChooseVersion("nginx", "3.*", {"1.0-1", "2.0-1"}, order);
  REQUIRE_FALSE(none);
  CHECK(none.error().Is(std::errc::no_such_file_or_directory));
  CHECK(none.error().message() ==
        "no available version of 'nginx' matches '3.*' (available: 2.0-1, 1.0-1)");

  auto exact = ChooseVersion("nginx", "1.5-1", {"1.0-1"}, order);
  REQUIRE_FALSE(exact);
  CHECK(exact.error().message().find("'1.5-1'") != std::string::npos);

  auto unknown = ChooseVersion("nginx", std::nullopt, {}, order);
  REQUIRE_FALSE(unknown);
  CHECK(unknown.error().Is(std::errc::no_such_file_or_directory));
  CHECK(unknown.error().message() == "no archive offers package 'nginx' (unknown package)");

  std::vector<std::string> many;
  for (int i = 1; i <= 14; ++i) many.push_back(std::to_string(i) + ".0");
  auto long_list = ChooseVersion("x", "99", many, order);
  REQUIRE_FALSE(long_list);
  CHECK(long_list.error().message().find("(available: 14.0, 13.0, ") != std::string::npos);
  CHECK(long_list.error().message().find("5.0 and 4 more)") != std::string::npos);
}

TEST_CASE("Package names and version requests that could be options are refused") {
  CHECK(CheckPackageRequest("nginx", std::nullopt));
  CHECK(CheckPackageRequest("libstdc++6", "12.2.0-14"));
  CHECK(CheckPackageRequest("python3.11", "3.11.*"));
  CHECK(CheckPackageRequest("tether-a", "1:1.0~rc1-1+b1"));
  for (const char* name : {"", "-oAPT::Get::Simulate=1", "--purge", "a b", "nginx:amd64",
                           "nginx=1.0", "../x", "name\n"}) {
    const std::string name_text = name;
    CAPTURE(name_text);
    auto checked = CheckPackageRequest(name, std::nullopt);
    REQUIRE_FALSE(checked);
    CHECK(checked.error().Is(std::errc::invalid_argument));
  }
  for (const char* version : {"", "-1", "1.0 ", "1;rm -rf /", "$(id)", "1.0/2"}) {
    const std::string version_text = version;
    CAPTURE(version_text);
    CHECK_FALSE(CheckPackageRequest("nginx", std::string(version)));
  }
}

TEST_CASE("dpkg status: only packages that are installed, whatever their selection") {
  const std::string status =
      "Package: plain\n"
      "Status: install ok installed\n"
      "Priority: optional\n"
      "Version: 1.0-1\n"
      "Description: one line\n"
      " Version: 9.9 is in a continuation line and is not the version\n"
      " .\n"
      "\n"
      "Package: held\n"
      "Status: hold ok installed\n"
      "Version: 2:3.4-5\n"
      "\n"
      "Package: to-be-removed\n"
      "Status: deinstall ok installed\n"
      "Version: 1\n"
      "\n"
      "Package: removed-config-left\n"
      "Status: deinstall ok config-files\n"
      "Version: 1\n"
      "\n"
      "Package: half-configured\n"
      "Status: install ok half-configured\n"
      "Version: 1\n"
      "\n"
      "Package: unpacked\n"
      "Status: install ok unpacked\n"
      "Version: 1\n"
      "\n"
      "Package: broken\n"
      "Status: install reinstreq half-installed\n"
      "Version: 1\n"
      "\n"
      "Package: not-installed\n"
      "Status: purge ok not-installed\n"
      "\n"
      "Package: no-version\n"
      "Status: install ok installed\n"
      "\n"
      "package: lower-case\n"
      "status:   install  ok  installed  \n"
      "version: 0.1\n"
      "\n\n\n"
      "Package: last-without-newline\n"
      "Version: 7\n"
      "Status: install ok installed";
  const InstalledPackages installed = ParseDpkgStatus(status);
  CHECK(installed == InstalledPackages{{"plain", "1.0-1"},
                                       {"held", "2:3.4-5"},
                                       {"to-be-removed", "1"},
                                       {"lower-case", "0.1"},
                                       {"last-without-newline", "7"}});
  CHECK(ParseDpkgStatus("").empty());
  CHECK(ParseDpkgStatus("garbage\n\n: :\n").empty());
}

TEST_CASE("The real dpkg status of this host parses as dpkg-query reads it") {
  AptPackageManager apt;
  auto installed = apt.Installed();
  REQUIRE_MESSAGE(installed, (installed ? "" : installed.error().message()));
  auto query =
      Run({.argv = {"dpkg-query", "-W", "-f=${db:Status-Abbrev}|${Package}|${Version}\\n"}});
  REQUIRE(query);
  REQUIRE(query->ok());
  InstalledPackages expected;
  std::size_t pos = 0;
  for (std::size_t end; (end = query->out.find('\n', pos)) != std::string::npos; pos = end + 1) {
    const std::string line = query->out.substr(pos, end - pos);
    const auto bar = line.find('|');
    const auto second = line.find('|', bar + 1);
    // "ii " (or "hi ": held): installed, no error flag.
    if (line.substr(1, 2) == "i ") {
      expected[line.substr(bar + 1, second - bar - 1)] = line.substr(second + 1);
    }
  }
  CHECK(expected.count("dpkg") == 1);
  CHECK(*installed == expected);
}

TEST_CASE("The status file is parsed again only when dpkg replaced it") {
  testing::TempDir dir("packages");
  dir.WriteFile("status", "Package: a\nStatus: install ok installed\nVersion: 1\n");
  AptOptions options;
  options.dpkg_status = dir.Path("status");
  AptPackageManager apt(options);
  auto first = apt.Installed();
  REQUIRE(first);
  CHECK(*first == InstalledPackages{{"a", "1"}});
  // As dpkg does: a new file renamed over the old one.
  dir.WriteFile("status-new", "Package: a\nStatus: install ok installed\nVersion: 2\n");
  REQUIRE(std::rename(dir.Path("status-new").c_str(), dir.Path("status").c_str()) == 0);
  auto second = apt.Installed();
  REQUIRE(second);
  CHECK(*second == InstalledPackages{{"a", "2"}});

  options.dpkg_status = dir.Path("missing");
  auto missing = AptPackageManager(options).Installed();
  REQUIRE_FALSE(missing);
  CHECK(missing.error().Is(std::errc::no_such_file_or_directory));
  CHECK(missing.error().message().find(dir.Path("missing")) != std::string::npos);
}

TEST_CASE("apt-cache madison output: versions per name, binary packages only") {
  const std::string out =
      "  tether-a |      2.0-1 | file:/srv/repo ./ Packages\n"
      "  tether-a |      1.1-1 | file:/srv/repo ./ Packages\n"
      "  tether-a |      2.0-1 | http://deb.example.org/debian bookworm/main i386 Packages\n"
      "  tether-a |      3.0-1 | http://deb.example.org/debian bookworm/main Sources\n"
      "     nginx | 1:1.22.1-9 | http://deb.example.org/debian bookworm/main amd64 Packages\n"
      "N: Unable to locate package nope\n"
      "garbage line\n";
  const auto versions = ParseMadison(out);
  CHECK(versions.size() == 2);
  CHECK(versions.at("tether-a") == std::vector<std::string>{"2.0-1", "1.1-1"});
  CHECK(versions.at("nginx") == std::vector<std::string>{"1:1.22.1-9"});
  CHECK(ParseMadison("").empty());
}

TEST_CASE("apt-get -s output: the packages it would remove") {
  const std::string out =
      "Reading package lists...\n"
      "The following packages will be REMOVED:\n"
      "  tether-b\n"
      "Remv tether-b [2.0-1]\n"
      "Remv libfoo:i386 [1.0]\n"
      "Inst tether-c (1.0-1 localhost [all])\n"
      "Conf tether-c (1.0-1 localhost [all])\n";
  CHECK(ParseSimulatedRemovals(out) == std::vector<std::string>{"tether-b", "libfoo"});
  CHECK(ParseSimulatedRemovals("Inst a (1 x [all])\n").empty());
}

// The stdout of apt-get before its errors.
constexpr char kPreamble[] =
    "Reading package lists...\nBuilding dependency tree...\nReading state information...\n";

TEST_CASE("apt-get failures become clear errors") {
  using std::chrono::seconds;
  SUBCASE("unknown package") {
    const Error error =
        AptFailure(kPreamble, "E: Unable to locate package tether-nope\n", "apt-get", seconds(5));
    CHECK(error.Is(std::errc::no_such_file_or_directory));
    CHECK(error.message() ==
          "apt-get: unknown package 'tether-nope': no configured archive offers it");
  }
  SUBCASE("version not available") {
    const Error error = AptFailure(
        std::string(kPreamble) + "Package tether-a is not available, but is referred to by...\n",
        "E: Version '9.9-1' for 'tether-a' was not found\n", "apt-get", seconds(5));
    CHECK(error.Is(std::errc::no_such_file_or_directory));
    CHECK(error.message() == "apt-get: version 9.9-1 of 'tether-a' not available from any archive");
  }
  SUBCASE("broken dependencies") {
    const Error error = AptFailure(
        std::string(kPreamble) +
            "Some packages could not be installed. This may mean that you have\n"
            "The following information may help to resolve the situation:\n\n"
            "The following packages have unmet dependencies:\n"
            " tether-b : Depends: tether-a (>= 1.1) but 1.0-1 is to be installed\n",
        "E: Unable to correct problems, you have held broken packages.\n", "apt-get", seconds(5));
    CHECK(error.Is(std::errc::invalid_argument));
    CHECK(error.message() ==
          "apt-get: broken dependencies: tether-b : Depends: tether-a (>= 1.1) but 1.0-1 is to "
          "be installed");
  }
  SUBCASE("broken dependencies without details") {
    const Error error =
        AptFailure(kPreamble, "E: Unable to correct problems, you have held broken packages.\n",
                   "apt-get", seconds(5));
    CHECK(error.Is(std::errc::invalid_argument));
    CHECK(error.message().find("Unable to correct problems") != std::string::npos);
  }
  SUBCASE("a held package") {
    const Error error = AptFailure(
        std::string(kPreamble) +
            "The following held packages will be changed:\n  tether-a tether-b\n"
            "The following packages will be DOWNGRADED:\n  tether-a\n",
        "E: Held packages were changed and -y was used without --allow-change-held-packages.\n",
        "apt-get", seconds(5));
    CHECK(error.Is(std::errc::operation_not_permitted));
    CHECK(error.message().find("held packages 'tether-a', 'tether-b' would change") !=
          std::string::npos);
  }
  SUBCASE("the lock still held") {
    const Error error = AptFailure(
        kPreamble,
        "E: Could not get lock /var/lib/dpkg/lock-frontend. It is held by process 4242 "
        "(python3)\n"
        "E: Unable to acquire the dpkg frontend lock (/var/lib/dpkg/lock-frontend), is another "
        "process using it?\n",
        "apt-get", seconds(7));
    CHECK(error.Is(std::errc::device_or_resource_busy));
    CHECK(error.message() ==
          "apt-get: the dpkg lock '/var/lib/dpkg/lock-frontend' is held by process 4242 "
          "(python3), still after waiting 7 s; it was left alone (never broken): try again "
          "once that process is done");
  }
  SUBCASE("the lock still held after a wait: apt does not say by whom, the lookup does") {
    const std::string err =
        "E: Unable to acquire the dpkg frontend lock (/var/lib/dpkg/lock-frontend), is another "
        "process using it?\n";
    const Error error = AptFailure(
        kPreamble, err, "apt-get", seconds(3), +[](const std::string& path) {
          return path == "/var/lib/dpkg/lock-frontend" ? std::string("process 7 (apt)")
                                                       : std::string();
        });
    CHECK(error.Is(std::errc::device_or_resource_busy));
    CHECK(error.message().find("the dpkg lock '/var/lib/dpkg/lock-frontend' is held by process 7 "
                               "(apt), still after waiting 3 s") != std::string::npos);
    CHECK(AptFailure(kPreamble, err, "apt-get", seconds(3))
              .message()
              .find("the dpkg lock '/var/lib/dpkg/lock-frontend' is held, still after") !=
          std::string::npos);
  }
  SUBCASE("anything else: the E: lines") {
    const Error error = AptFailure(
        kPreamble,
        "W: a warning\nE: Sub-process /usr/bin/dpkg returned an error code (1)\nE: second\n",
        "apt-get", seconds(5));
    CHECK(error.Is(std::errc::state_not_recoverable));  // dpkg failed: not of the moment
    CHECK_FALSE(tether::IsTransient(error.code()));
    CHECK(error.message() ==
          "apt-get: Sub-process /usr/bin/dpkg returned an error code (1); second");
    const Error fetch =
        AptFailure(kPreamble,
                   "E: Failed to fetch http://deb.example/pool/a.deb  Temporary failure resolving "
                   "'deb.example'\nE: Unable to fetch some archives, maybe run apt-get update\n",
                   "apt-get", seconds(5));
    CHECK(fetch.Is(std::errc::network_unreachable));
    CHECK(tether::IsTransient(fetch.code()));  // tried again later, not quarantined
  }
  SUBCASE("no E: line at all") {
    CHECK(AptFailure("", "Segmentation fault\n", "apt-get", seconds(5)).message() ==
          "apt-get: Segmentation fault");
    CHECK(AptFailure("", "", "apt-get", seconds(5)).message() == "apt-get: failed, saying nothing");
  }
}

TEST_CASE("Who holds a lock is asked, never taken") {
  testing::TempDir dir("packages");
  dir.WriteFile("lock", "");
  CHECK(DescribeLockHolder(dir.Path("lock")).empty());
  CHECK(DescribeLockHolder(dir.Path("missing")).empty());
  SpawnOptions options;
  options.argv = {"python3", "-c",
                  "import fcntl, sys, time\n"
                  "f = open(sys.argv[1], 'w')\n"
                  "fcntl.lockf(f, fcntl.LOCK_EX)\n"
                  "print('locked', flush=True)\n"
                  "time.sleep(60)\n",
                  dir.Path("lock")};
  options.stdout_path = dir.Path("out");
  auto holder = Spawn(options);
  REQUIRE(holder);
  REQUIRE(testing::WaitFor([&] { return dir.ReadFile("out") == "locked\n"; }, 10s));
  CHECK(DescribeLockHolder(dir.Path("lock")) ==
        "process " + std::to_string(holder->pid()) + " (python3)");
  CHECK(DescribeLockHolder(dir.Path("lock")) != "");  // asked twice: still held by it
  CHECK_FALSE(holder->Wait(0ms));
}

TEST_CASE("One apt-get call: every change, no override of holds, the lock waited for") {
  AptOptions options;
  options.lock_timeout = std::chrono::seconds(7);
  AptPackageManager apt(options);
  const std::vector<PackageChange> changes = {
      {PackageChange::Type::kInstall, "tether-a", "1.0-1"},
      {PackageChange::Type::kDowngrade, "tether-b", "1:0.9-1"},
      {PackageChange::Type::kRemove, "tether-c"},
  };
  const auto args = apt.InstallArguments(changes, false);
  auto has = [&](const std::string& arg) {
    return std::find(args.begin(), args.end(), arg) != args.end();
  };
  CHECK(args.front() == "install");
  for (const char* expected : {"-y", "-q", "--no-install-recommends", "--allow-downgrades",
                               "Dpkg::Options::=--force-confdef", "Dpkg::Options::=--force-confold",
                               "DPkg::Lock::Timeout=7"}) {
    const std::string expected_text = expected;
    CAPTURE(expected_text);
    CHECK(has(expected));
  }
  CHECK_FALSE(has("--allow-change-held-packages"));
  CHECK_FALSE(has("-s"));
  // The packages last, after "--".
  REQUIRE(args.size() >= 4);
  CHECK(std::vector<std::string>(args.end() - 4, args.end()) ==
        std::vector<std::string>{"--", "tether-a=1.0-1", "tether-b=1:0.9-1", "tether-c-"});

  const auto simulated = apt.InstallArguments(changes, true);
  CHECK(std::find(simulated.begin(), simulated.end(), "-s") != simulated.end());
  CHECK(std::find(simulated.begin(), simulated.end(), "Debug::NoLocking=true") != simulated.end());

  options.install_recommends = true;
  const auto with = AptPackageManager(options).InstallArguments(changes, false);
  CHECK(std::find(with.begin(), with.end(), "--install-recommends") != with.end());
  CHECK(std::find(with.begin(), with.end(), "--no-install-recommends") == with.end());
}

TEST_CASE("A transaction refuses invalid names before running anything") {
  AptOptions options;
  options.apt_get = "/nonexistent/apt-get";  // would fail differently if it were run
  options.apt_cache = "/nonexistent/apt-cache";
  AptPackageManager apt(options);
  auto bad_name =
      apt.Apply({{PackageChange::Type::kRemove, "-oDebug::x=1"}}, std::chrono::seconds(5));
  REQUIRE_FALSE(bad_name);
  CHECK(bad_name.error().Is(std::errc::invalid_argument));
  auto bad_version =
      apt.Apply({{PackageChange::Type::kInstall, "tether-a", "1.0 -s"}}, std::chrono::seconds(5));
  REQUIRE_FALSE(bad_version);
  CHECK(bad_version.error().Is(std::errc::invalid_argument));
  // A missing apt-cache is an error, not an empty archive.
  auto available = apt.Available({"tether-a"});
  REQUIRE_FALSE(available);
  CHECK(available.error().message().find("/nonexistent/apt-cache") != std::string::npos);
  CHECK(apt.Available({}).value().empty());
}

}  // namespace
}  // namespace tether

TEST_CASE("A package's plan: install, upgrade, downgrade, remove, or in sync") {
  struct Row {
    bool present;
    std::optional<std::string> request;
    std::optional<std::string> installed;
    std::string wanted;  // what the archives would give ("" : none satisfies)
    tether::ActionType type;
    std::vector<std::string> changes;
  };
  const std::vector<Row> rows = {
      {true, std::nullopt, "1.22.1-1", "1.24.0-1", tether::ActionType::kInSync, {}},
      {true, "1.22.*", "1.22.1-1", "1.22.5-1", tether::ActionType::kInSync, {}},
      {true,
       std::nullopt,
       std::nullopt,
       "1.22.1-1",
       tether::ActionType::kCreate,
       {"install 1.22.1-1"}},
      {true,
       "1.24.*",
       "1.22.1-1",
       "1.24.0-1",
       tether::ActionType::kUpdate,
       {"upgrade 1.22.1-1 -> 1.24.0-1"}},
      {true,
       "1.20.0-1",
       "1.22.1-1",
       "1.20.0-1",
       tether::ActionType::kUpdate,
       {"downgrade 1.22.1-1 -> 1.20.0-1"}},
      {false, std::nullopt, "1.22.1-1", "", tether::ActionType::kDelete, {"remove 1.22.1-1"}},
      {false, std::nullopt, std::nullopt, "", tether::ActionType::kInSync, {}},
  };
  for (const auto& row : rows) {
    CAPTURE(row.request.value_or("(any)"));
    CAPTURE(row.installed.value_or("(none)"));
    tether::PackageSpec spec;
    spec.name = "nginx";
    spec.version = row.request;
    spec.present = row.present;
    bool asked = false;
    auto action = tether::PlanPackage("package:nginx", spec, row.installed,
                                      &tether::CompareDebianVersions, [&] {
                                        asked = true;
                                        return tether::Result<std::string>(row.wanted);
                                      });
    REQUIRE(action);
    CHECK(action->type == row.type);
    CHECK(action->changes == row.changes);
    // The archives are asked only when something must be installed.
    CHECK(asked ==
          (row.type == tether::ActionType::kCreate || row.type == tether::ActionType::kUpdate));
  }
  tether::PackageSpec missing;
  missing.name = "nginx";
  missing.version = "9.*";
  auto none = tether::PlanPackage(
      "package:nginx", missing, std::nullopt, &tether::CompareDebianVersions, [] {
        return tether::Result<std::string>(
            tether::Fail(std::errc::no_such_file_or_directory, "no version of nginx matches 9.*"));
      });
  REQUIRE_FALSE(none);
  CHECK(none.error().message() == "no version of nginx matches 9.*");
}

TEST_CASE("A dropped package is removed only when tether installed it") {
  CHECK(tether::PlanPackagePrune("package:jq", true, "1.6-2").changes ==
        std::vector<std::string>{"installed by tether, no longer in the profile: remove 1.6-2"});
  CHECK(tether::PlanPackagePrune("package:jq", false, "1.6-2").type == tether::ActionType::kInSync);
  CHECK(tether::PlanPackagePrune("package:jq", true, std::nullopt).type ==
        tether::ActionType::kInSync);
}
