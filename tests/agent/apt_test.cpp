// The package kind against a real apt and dpkg: a systemd container with its own writable
// /usr and /var/lib/dpkg (overlays: nothing reaches the host), a local archive of tiny
// packages built here with dpkg-deb and indexed with dpkg-scanpackages, bound into the
// container as its only apt source (no network).
//
// Each "apt:" test case below runs on the host and re-runs this binary inside the
// container, with TETHER_APT_INSIDE=1 and a filter for one "inside:" test case: the code
// under test runs next to the real apt-get and dpkg. The container is started once, by the
// first test case that needs it, and stopped at exit.
//
// The archive:
//   tether-a  1.0-1, 1.1-1, 2.0-1    (a conffile /etc/tether-a.conf)
//   tether-b  1.0-1, 2.0-1           (2.0-1 depends on tether-a >= 1.1)
//   tether-c  1.0~rc1-1, 1.0-1       (1.0-1 conflicts with tether-b)
// and, outside it, tether-a 0.5-1 (/srv/tether-repo/extra), installed by hand with dpkg -i.
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <memory>
#include <optional>
#include <regex>
#include <sstream>
#include <string>
#include <vector>

#include <doctest/doctest.h>

#include "agent/engine/engine.hpp"
#include "agent/kinds/packages/apt.hpp"
#include "agent/kinds/packages/package_handler.hpp"
#include "common/process.hpp"
#include "tests/support/state_stores.hpp"
#include "tests/support/systemd_container.hpp"
#include "tests/support/temp_dir.hpp"
#include "tests/support/wait_for.hpp"

using namespace std::chrono_literals;

namespace tether {
namespace {

const bool kInside = std::getenv("TETHER_APT_INSIDE") != nullptr;
constexpr char kRepoInContainer[] = "/srv/tether-repo";

// ---------------------------------------------------------------------------------------
// On the host: the archive and the container.

struct DebSpec {
  std::string name;
  std::string version;
  std::string control_extra{};  // more DEBIAN/control fields
  bool in_archive = true;
};

const std::vector<DebSpec> kPackages = {
    {"tether-a", "1.0-1"},     {"tether-a", "1.1-1"},
    {"tether-a", "2.0-1"},     {"tether-a", "0.5-1", "", false},
    {"tether-b", "1.0-1"},     {"tether-b", "2.0-1", "Depends: tether-a (>= 1.1)\n"},
    {"tether-c", "1.0~rc1-1"}, {"tether-c", "1.0-1", "Conflicts: tether-b\n"},
};

Status RunOk(const std::vector<std::string>& argv, const std::string& cwd = "") {
  RunOptions options;
  options.argv = argv;
  options.cwd = cwd;
  auto run = Run(options);
  if (!run) return Fail(run.error());
  if (!run->ok()) {
    return Fail(std::errc::io_error,
                argv[0] + ": " + run->Describe(options.timeout) + ": " + run->err);
  }
  return {};
}

// Builds the packages into dir/repo (indexed) and dir/extra.
Status BuildArchive(const testing::TempDir& dir) {
  for (const auto& deb : kPackages) {
    const std::string tree = "build/" + deb.name + "_" + deb.version;
    dir.WriteFile(tree + "/DEBIAN/control",
                  "Package: " + deb.name + "\nVersion: " + deb.version +
                      "\nArchitecture: all\nMaintainer: tether tests <tests@example.org>\n" +
                      deb.control_extra + "Description: a tiny package for tether's tests\n");
    dir.WriteFile(tree + "/usr/share/tether-test/" + deb.name + "/version", deb.version + "\n");
    if (deb.name == "tether-a") {
      dir.WriteFile(tree + "/etc/tether-a.conf", "shipped by " + deb.version + "\n");
      dir.WriteFile(tree + "/DEBIAN/conffiles", "/etc/tether-a.conf\n");
    }
    const std::string out = dir.Path(deb.in_archive ? "repo" : "extra");
    std::filesystem::create_directories(out);
    if (auto built = RunOk({"dpkg-deb", "--root-owner-group", "--build", dir.Path(tree),
                            out + "/" + deb.name + "_" + deb.version + "_all.deb"});
        !built) {
      return built;
    }
  }
  RunOptions scan;
  scan.argv = {"dpkg-scanpackages", "--multiversion", ".", "/dev/null"};
  scan.cwd = dir.Path("repo");
  auto index = Run(scan);
  if (!index) return Fail(index.error());
  if (!index->ok()) return Fail(std::errc::io_error, "dpkg-scanpackages: " + index->err);
  dir.WriteFile("repo/Packages", index->out);
  // apt reads the archive as its unprivileged _apt user.
  std::filesystem::permissions(dir.path(), std::filesystem::perms(0755));
  return {};
}

// Inside the container: the archive as the only source, and what apt needs in /var.
constexpr char kContainerSetup[] = R"(set -e
rm -rf /etc/apt/sources.list.d/* /etc/apt/preferences.d/* /etc/apt/preferences
echo 'deb [trusted=yes] file:/srv/tether-repo/repo ./' > /etc/apt/sources.list
mkdir -p /var/lib/apt/lists/partial /var/cache/apt/archives/partial /var/log/apt \
  /var/cache/debconf
apt-get update -q
apt-cache madison tether-a
)";

struct Fixture {
  std::unique_ptr<testing::TempDir> archive;  // outlives the container
  std::optional<testing::SystemdContainer> container;
  std::string error;
};

Fixture& Shared() {
  static Fixture fixture;
  static bool started = false;
  if (started) return fixture;
  started = true;
  fixture.archive = std::make_unique<testing::TempDir>("apt-archive");
  if (auto built = BuildArchive(*fixture.archive); !built) {
    fixture.error = "build the archive: " + built.error().message();
    return fixture;
  }
  testing::ContainerOptions options;
  options.writable_usr = true;
  options.read_only_binds = {fixture.archive->path() + ":" + kRepoInContainer};
  auto container = testing::SystemdContainer::Start(options);
  if (!container) {
    fixture.error = container.error().message();
    return fixture;
  }
  auto setup = container->Run({"sh", "-c", kContainerSetup}, 120s);
  if (!setup || !setup->ok() || setup->out.find("2.0-1") == std::string::npos) {
    fixture.error = "set up apt in the container: " +
                    (setup ? setup->out + setup->err : setup.error().message());
    return fixture;
  }
  fixture.container.emplace(std::move(*container));
  return fixture;
}

std::string SelfPath() { return std::filesystem::read_symlink("/proc/self/exe").string(); }

// Runs the test case `name` of this binary inside the container; it must pass.
void RunInside(const std::string& name) {
  Fixture& fixture = Shared();
  REQUIRE_MESSAGE(fixture.container, fixture.error);
  RunOptions options;
  options.argv = {SelfPath(), "--test-case=" + name, "--no-colors=true"};
  options.env.push_back("TETHER_APT_INSIDE=1");
  options.timeout = 300s;
  auto run = fixture.container->Run(options);
  REQUIRE_MESSAGE(run, (run ? "" : run.error().message()));
  const std::string output = run->out + run->err;
  INFO(output);
  CHECK(run->exit_code == 0);
  // Exactly that one test case ran (a filter that matches nothing passes too).
  CHECK(std::regex_search(run->out, std::regex(R"(test cases: +1 \| +1 passed \| +0 failed)")));
}

const bool kSkipOutside = kInside || geteuid() != 0;

TEST_CASE("apt: install" * doctest::skip(kSkipOutside)) { RunInside("inside: install"); }
TEST_CASE("apt: upgrade and downgrade" * doctest::skip(kSkipOutside)) {
  RunInside("inside: upgrade and downgrade");
}
TEST_CASE("apt: remove" * doctest::skip(kSkipOutside)) { RunInside("inside: remove"); }
TEST_CASE("apt: unknown package" * doctest::skip(kSkipOutside)) {
  RunInside("inside: unknown package");
}
TEST_CASE("apt: version not available" * doctest::skip(kSkipOutside)) {
  RunInside("inside: version not available");
}
TEST_CASE("apt: pattern" * doctest::skip(kSkipOutside)) { RunInside("inside: pattern"); }
TEST_CASE("apt: one transaction" * doctest::skip(kSkipOutside)) {
  RunInside("inside: one transaction");
}
TEST_CASE("apt: broken dependencies" * doctest::skip(kSkipOutside)) {
  RunInside("inside: broken dependencies");
}
TEST_CASE("apt: no removal that was not asked for" * doctest::skip(kSkipOutside)) {
  RunInside("inside: no removal that was not asked for");
}
TEST_CASE("apt: prune" * doctest::skip(kSkipOutside)) { RunInside("inside: prune"); }
TEST_CASE("apt: undo" * doctest::skip(kSkipOutside)) { RunInside("inside: undo"); }
TEST_CASE("apt: undo without the previous version" * doctest::skip(kSkipOutside)) {
  RunInside("inside: undo without the previous version");
}
TEST_CASE("apt: held package" * doctest::skip(kSkipOutside)) { RunInside("inside: held package"); }
TEST_CASE("apt: lock released in time" * doctest::skip(kSkipOutside)) {
  RunInside("inside: lock released in time");
}
TEST_CASE("apt: lock held too long" * doctest::skip(kSkipOutside)) {
  RunInside("inside: lock held too long");
}

TEST_CASE("apt: nothing reached the host" * doctest::skip(kSkipOutside)) {
  Fixture& fixture = Shared();
  REQUIRE_MESSAGE(fixture.container, fixture.error);
  // dpkg inside wrote to the overlay's upper dir, in the container's temp dir...
  CHECK(std::filesystem::exists(fixture.container->dir() + "/dpkg-upper/status"));
  // ... and the host knows no test package.
  auto host = Run({.argv = {"dpkg-query", "-W", "tether-a", "tether-b", "tether-c"}});
  REQUIRE(host);
  CHECK(host->out.empty());
  CHECK_FALSE(std::filesystem::exists("/usr/share/tether-test"));
  CHECK_FALSE(std::filesystem::exists("/etc/tether-a.conf"));
}

// ---------------------------------------------------------------------------------------
// Inside the container.

const std::vector<std::string> kNames = {"tether-a", "tether-b", "tether-c"};

std::string Sh(const std::string& script) {
  auto run = Run({.argv = {"sh", "-c", script}, .timeout = 120s});
  REQUIRE(run);
  INFO(script);
  const std::string output = run->out + run->err;
  INFO(output);
  REQUIRE(run->ok());
  return run->out;
}

// The installed version of `name`, as dpkg-query sees it.
std::optional<std::string> Version(const std::string& name) {
  auto run = Run({.argv = {"dpkg-query", "-W", "-f=${db:Status-Abbrev}|${Version}", name}});
  REQUIRE(run);
  if (!run->ok() || run->out.substr(1, 2) != "i ") return std::nullopt;
  return run->out.substr(run->out.find('|') + 1);
}

// No test package installed, none held.
void Reset() {
  Sh("apt-mark unhold tether-a tether-b tether-c >/dev/null 2>&1 || true; "
     "dpkg --force-hold --force-depends --purge tether-a tether-b tether-c >/dev/null 2>&1");
  for (const auto& name : kNames) REQUIRE_FALSE(Version(name));
}

// Puts packages in place with apt itself, not with the code under test.
void AptGetInstall(const std::string& packages) {
  Sh("DEBIAN_FRONTEND=noninteractive apt-get install -y -q --allow-downgrades " + packages);
}

// The number of apt runs in apt's history.
int AptRuns() {
  std::ifstream history("/var/log/apt/history.log");
  std::string line;
  int runs = 0;
  while (std::getline(history, line)) runs += line.rfind("Start-Date:", 0) == 0 ? 1 : 0;
  return runs;
}

std::string LastAptCommandLine() {
  std::ifstream history("/var/log/apt/history.log");
  std::string line;
  std::string last;
  while (std::getline(history, line)) {
    if (line.rfind("Commandline:", 0) == 0) last = line;
  }
  return last;
}

Resource Package(const std::string& name, std::optional<std::string> version = std::nullopt,
                 bool present = true) {
  Resource resource;
  resource.kind = ResourceKind::kPackage;
  resource.id = "package:" + name;
  resource.spec = PackageSpec{name, std::move(version), present};
  return resource;
}

// A file kind that fails to apply: a transaction that goes wrong after its packages.
class FailingHandler final : public KindHandler {
 public:
  bool Handles(ResourceKind kind) const override { return kind == ResourceKind::kFile; }
  Result<Action> Plan(const Resource& resource, const InventoryEntry*, bool,
                      const PlanContext&) override {
    Action action;
    action.id = resource.id;
    action.type = ActionType::kCreate;
    return action;
  }
  Result<Action> PlanPrune(const std::string& id, const InventoryEntry&) override {
    Action action;
    action.id = id;
    return action;
  }
  Result<nlohmann::json> Begin(const PlannedAction&, const std::string&) override {
    return nlohmann::json::object();
  }
  Status Apply(std::vector<Change>& changes, Transaction&) override {
    changes.front().failed = true;
    return Fail(std::errc::io_error, "injected failure");
  }
  Status Undo(const JournalStep&) override { return {}; }
  Status Discard(const JournalStep&) override { return {}; }
};

Resource FailingFile() {
  Resource resource;
  resource.kind = ResourceKind::kFile;
  resource.id = "file:/failing";
  FileSpec file;
  file.path = "/failing";
  resource.spec = file;
  return resource;
}

// The engine with the package handler (and more handlers), on a state dir of its own.
struct Harness {
  explicit Harness(AptOptions options = {}, std::vector<KindHandler*> more = {})
      : apt(std::move(options)), handler(MakePackageHandler(apt, 120s)) {
    std::vector<KindHandler*> handlers = {handler.get()};
    handlers.insert(handlers.end(), more.begin(), more.end());
    engine = std::make_unique<Engine>(tether::testing::HostStateStore(state.path()),
                                      EngineOptions(), handlers);
  }

  Result<std::vector<PlannedAction>> Plan(const std::vector<Resource>& resources) {
    desired.resources = resources;
    return engine->Plan(desired, inventory);
  }

  // Plans and applies `resources`; the plan must succeed. Keeps the new inventory.
  ApplyResult Converge(const std::vector<Resource>& resources) {
    auto plan = Plan(resources);
    REQUIRE_MESSAGE(plan, (plan ? "" : plan.error().message()));
    ApplyResult result = engine->Apply(*plan, inventory, "commit", &desired);
    if (result.ok) inventory = result.inventory;
    return result;
  }

  testing::TempDir state{"apt-state"};
  AptPackageManager apt;
  std::unique_ptr<KindHandler> handler;
  std::unique_ptr<Engine> engine;
  DesiredState desired;
  Inventory inventory;
};

const Action& ActionOf(const std::vector<PlannedAction>& plan, const std::string& id) {
  for (const auto& planned : plan) {
    if (planned.action.id == id) return planned.action;
  }
  FAIL("no action for " << id);
  static Action none;
  return none;
}

TEST_CASE("inside: install" * doctest::skip(!kInside)) {
  Reset();
  Harness harness;
  // An exact version; and no version: the newest, 1.0-1 (after 1.0~rc1-1).
  auto plan = harness.Plan({Package("tether-a", "1.0-1"), Package("tether-c")});
  REQUIRE_MESSAGE(plan, (plan ? "" : plan.error().message()));
  CHECK(ActionOf(*plan, "package:tether-a").type == ActionType::kCreate);
  CHECK(ActionOf(*plan, "package:tether-a").changes == std::vector<std::string>{"install 1.0-1"});
  CHECK(ActionOf(*plan, "package:tether-c").changes == std::vector<std::string>{"install 1.0-1"});
  CHECK(Version("tether-a") == std::nullopt);  // planning changes nothing

  const int runs = AptRuns();
  ApplyResult result = harness.Converge({Package("tether-a", "1.0-1"), Package("tether-c")});
  REQUIRE_MESSAGE(result.ok, result.error);
  CHECK(Version("tether-a") == "1.0-1");
  CHECK(Version("tether-c") == "1.0-1");
  CHECK(AptRuns() == runs + 1);
  const InventoryEntry& entry = result.inventory.entries.at("package:tether-a");
  CHECK(entry.kind == ResourceKind::kPackage);
  CHECK(tether::InventoryPath("package:tether-a", entry) == "tether-a");
  CHECK(entry.created);  // tether installed it
  CHECK(entry.fingerprint == "1.0-1");

  // Converged: the next plan is in sync and the next apply runs no apt at all.
  auto again = harness.Plan({Package("tether-a", "1.0-1"), Package("tether-c")});
  REQUIRE(again);
  for (const auto& planned : *again) CHECK(planned.action.type == ActionType::kInSync);
  REQUIRE(harness.Converge({Package("tether-a", "1.0-1"), Package("tether-c")}).ok);
  CHECK(AptRuns() == runs + 1);
  CHECK(harness.inventory.entries.at("package:tether-a").created);
}

TEST_CASE("inside: upgrade and downgrade" * doctest::skip(!kInside)) {
  Reset();
  AptGetInstall("tether-a=1.0-1");
  Sh("echo 'changed here' > /etc/tether-a.conf");
  Harness harness;

  auto plan = harness.Plan({Package("tether-a", "2.0-1")});
  REQUIRE(plan);
  CHECK(ActionOf(*plan, "package:tether-a").type == ActionType::kUpdate);
  CHECK(ActionOf(*plan, "package:tether-a").changes ==
        std::vector<std::string>{"upgrade 1.0-1 -> 2.0-1"});
  ApplyResult up = harness.Converge({Package("tether-a", "2.0-1")});
  REQUIRE_MESSAGE(up.ok, up.error);
  CHECK(Version("tether-a") == "2.0-1");
  // The changed configuration file is kept, without a question asked.
  CHECK(Sh("cat /etc/tether-a.conf") == "changed here\n");
  CHECK(Sh("cat /etc/tether-a.conf.dpkg-dist") == "shipped by 2.0-1\n");
  const InventoryEntry& entry = up.inventory.entries.at("package:tether-a");
  CHECK_FALSE(entry.created);  // it was there before tether
  CHECK(entry.original == nlohmann::json{{"version", "1.0-1"}});

  plan = harness.Plan({Package("tether-a", "1.0-1")});
  REQUIRE(plan);
  CHECK(ActionOf(*plan, "package:tether-a").changes ==
        std::vector<std::string>{"downgrade 2.0-1 -> 1.0-1"});
  ApplyResult down = harness.Converge({Package("tether-a", "1.0-1")});
  REQUIRE_MESSAGE(down.ok, down.error);
  CHECK(Version("tether-a") == "1.0-1");
  CHECK_FALSE(down.inventory.entries.at("package:tether-a").created);
}

TEST_CASE("inside: remove" * doctest::skip(!kInside)) {
  Reset();
  AptGetInstall("tether-a=1.1-1");
  Harness harness;
  auto plan = harness.Plan({Package("tether-a", std::nullopt, false)});
  REQUIRE(plan);
  CHECK(ActionOf(*plan, "package:tether-a").type == ActionType::kDelete);
  CHECK(ActionOf(*plan, "package:tether-a").changes == std::vector<std::string>{"remove 1.1-1"});
  ApplyResult result = harness.Converge({Package("tether-a", std::nullopt, false)});
  REQUIRE_MESSAGE(result.ok, result.error);
  CHECK(Version("tether-a") == std::nullopt);
  CHECK(result.inventory.entries.count("package:tether-a") == 0);
  auto again = harness.Plan({Package("tether-a", std::nullopt, false)});
  REQUIRE(again);
  CHECK(ActionOf(*again, "package:tether-a").type == ActionType::kInSync);
}

TEST_CASE("inside: unknown package" * doctest::skip(!kInside)) {
  Reset();
  Harness harness;
  // Refused alone: the other package is planned.
  auto plan = harness.Plan({Package("tether-a"), Package("tether-nope")});
  REQUIRE(plan);
  CHECK(ActionOf(*plan, "package:tether-nope").type == ActionType::kConflict);
  CHECK(ActionOf(*plan, "package:tether-nope").reason.str() ==
        "cannot plan it: no archive offers package 'tether-nope' (unknown package)");
  CHECK(ActionOf(*plan, "package:tether-a").type == ActionType::kCreate);

  AptPackageManager apt;
  auto made = apt.Apply({{PackageChange::Type::kInstall, "tether-a", "1.0-1"},
                         {PackageChange::Type::kInstall, "tether-nope", "1.0-1"}},
                        60s);
  REQUIRE_FALSE(made);
  CHECK(made.error().Is(std::errc::no_such_file_or_directory));
  CHECK(made.error().message().find("unknown package 'tether-nope'") != std::string::npos);
  CHECK(Version("tether-a") == std::nullopt);  // nothing of the transaction was made

  // apt-get takes an unknown name with a '.' as a regular expression ("tether.a" would
  // select tether-a): never passed one.
  auto regex = apt.Apply({{PackageChange::Type::kInstall, "tether.a", "1.0-1"}}, 60s);
  REQUIRE_FALSE(regex);
  CHECK(regex.error().Is(std::errc::no_such_file_or_directory));
  CHECK(Version("tether-a") == std::nullopt);
  AptGetInstall("tether-b=1.0-1");
  REQUIRE(apt.Apply({{PackageChange::Type::kRemove, "tether.b"}}, 60s));  // not installed
  CHECK(Version("tether-b") == "1.0-1");

  // apt's own words for it, parsed.
  auto raw = Run({.argv = {"apt-get", "install", "-s", "-q", "tether-nope"}});
  REQUIRE(raw);
  const Error error = AptFailure(raw->out, raw->err, "apt-get", 5s);
  CHECK(error.Is(std::errc::no_such_file_or_directory));
  CHECK(error.message() ==
        "apt-get: unknown package 'tether-nope': no configured archive offers it");
}

TEST_CASE("inside: version not available" * doctest::skip(!kInside)) {
  Reset();
  Harness harness;
  auto plan = harness.Plan({Package("tether-a", "9.9-1")});
  REQUIRE(plan);
  CHECK(ActionOf(*plan, "package:tether-a").type == ActionType::kConflict);
  CHECK(ActionOf(*plan, "package:tether-a").reason.str() ==
        "cannot plan it: no available version of 'tether-a' matches '9.9-1' "
        "(available: 2.0-1, 1.1-1, 1.0-1)");
  auto pattern = harness.Plan({Package("tether-b", "3.*")});
  REQUIRE(pattern);
  CHECK(ActionOf(*pattern, "package:tether-b")
            .reason.str()
            .find("matches '3.*' (available: 2.0-1, 1.0-1)") != std::string::npos);

  AptPackageManager apt;
  auto made = apt.Apply({{PackageChange::Type::kInstall, "tether-a", "9.9-1"}}, 60s);
  REQUIRE_FALSE(made);
  CHECK(made.error().Is(std::errc::no_such_file_or_directory));
  CHECK(made.error().message() ==
        "apt-get: version 9.9-1 of 'tether-a' is not available (available: 2.0-1, 1.1-1, 1.0-1)");

  auto raw = Run({.argv = {"apt-get", "install", "-s", "-q", "tether-a=9.9-1"}});
  REQUIRE(raw);
  const Error error = AptFailure(raw->out, raw->err, "apt-get", 5s);
  CHECK(error.Is(std::errc::no_such_file_or_directory));
  CHECK(error.message() == "apt-get: version 9.9-1 of 'tether-a' not available from any archive");
}

TEST_CASE("inside: pattern" * doctest::skip(!kInside)) {
  Reset();
  AptGetInstall("tether-a=2.0-1");
  Harness harness;
  // 2.0-1 does not match: the newest that does, 1.1-1.
  auto plan = harness.Plan({Package("tether-a", "1.*")});
  REQUIRE(plan);
  CHECK(ActionOf(*plan, "package:tether-a").changes ==
        std::vector<std::string>{"downgrade 2.0-1 -> 1.1-1"});
  ApplyResult result = harness.Converge({Package("tether-a", "1.*")});
  REQUIRE_MESSAGE(result.ok, result.error);
  CHECK(Version("tether-a") == "1.1-1");

  // An installed version that matches is in sync, even with a newer match available.
  AptGetInstall("tether-a=1.0-1");
  auto again = harness.Plan({Package("tether-a", "1.*")});
  REQUIRE(again);
  CHECK(ActionOf(*again, "package:tether-a").type == ActionType::kInSync);
  // Not installed: the newest match.
  Reset();
  auto fresh = harness.Plan({Package("tether-c", "1.0~*")});
  REQUIRE(fresh);
  CHECK(ActionOf(*fresh, "package:tether-c").changes ==
        std::vector<std::string>{"install 1.0~rc1-1"});
}

TEST_CASE("inside: one transaction" * doctest::skip(!kInside)) {
  Reset();
  AptGetInstall("tether-c=1.0~rc1-1");
  Harness harness;
  const std::vector<Resource> resources = {Package("tether-a", "1.1-1"),
                                           Package("tether-b", "2.0-1"),
                                           Package("tether-c", std::nullopt, false)};
  const int runs = AptRuns();
  ApplyResult result = harness.Converge(resources);
  REQUIRE_MESSAGE(result.ok, result.error);
  CHECK(Version("tether-a") == "1.1-1");
  CHECK(Version("tether-b") == "2.0-1");
  CHECK(Version("tether-c") == std::nullopt);
  // One apt run, with every change.
  CHECK(AptRuns() == runs + 1);
  const std::string command = LastAptCommandLine();
  CHECK(command.find("tether-a=1.1-1 tether-b=2.0-1 tether-c-") != std::string::npos);
  CHECK(command.find("--allow-change-held-packages") == std::string::npos);
  CHECK(result.outcomes.empty());  // every planned change was made
}

TEST_CASE("inside: broken dependencies" * doctest::skip(!kInside)) {
  Reset();
  Harness harness;
  // Each available, together impossible: tether-b 2.0-1 needs tether-a >= 1.1.
  ApplyResult result =
      harness.Converge({Package("tether-a", "1.0-1"), Package("tether-b", "2.0-1")});
  CHECK_FALSE(result.ok);
  CHECK(result.rolled_back);
  CHECK(result.error.find("broken dependencies: tether-b : Depends: tether-a (>= 1.1) but 1.0-1 is "
                          "to be installed") != std::string::npos);
  CHECK(Version("tether-a") == std::nullopt);
  CHECK(Version("tether-b") == std::nullopt);

  AptPackageManager apt;
  auto made = apt.Apply({{PackageChange::Type::kInstall, "tether-a", "1.0-1"},
                         {PackageChange::Type::kInstall, "tether-b", "2.0-1"}},
                        60s);
  REQUIRE_FALSE(made);
  CHECK(made.error().Is(std::errc::invalid_argument));
}

TEST_CASE("inside: no removal that was not asked for" * doctest::skip(!kInside)) {
  Reset();
  AptGetInstall("tether-b=1.0-1");
  Harness harness;
  // tether-c 1.0-1 conflicts with tether-b: apt would remove tether-b to install it.
  ApplyResult result = harness.Converge({Package("tether-c", "1.0-1")});
  CHECK_FALSE(result.ok);
  CHECK(result.error.find("would also remove 'tether-b'") != std::string::npos);
  CHECK(Version("tether-b") == "1.0-1");
  CHECK(Version("tether-c") == std::nullopt);

  // Nor a dependant of a downgraded package.
  Reset();
  AptGetInstall("tether-a=2.0-1 tether-b=2.0-1");
  AptPackageManager apt;
  auto made = apt.Apply({{PackageChange::Type::kDowngrade, "tether-a", "1.0-1"}}, 60s);
  REQUIRE_FALSE(made);
  CHECK(made.error().Is(std::errc::operation_not_permitted));
  CHECK(made.error().message().find("'tether-b'") != std::string::npos);
  CHECK(Version("tether-a") == "2.0-1");
  CHECK(Version("tether-b") == "2.0-1");
}

TEST_CASE("inside: prune" * doctest::skip(!kInside)) {
  Reset();
  AptGetInstall("tether-c=1.0~rc1-1");
  Harness harness;
  ApplyResult first = harness.Converge({Package("tether-a"), Package("tether-c")});
  REQUIRE_MESSAGE(first.ok, first.error);
  CHECK(first.inventory.entries.at("package:tether-a").created);
  CHECK_FALSE(first.inventory.entries.at("package:tether-c").created);  // found installed
  CHECK(Version("tether-a") == "2.0-1");
  CHECK(Version("tether-c") == "1.0~rc1-1");

  // Both dropped from the profile: what tether installed goes, what it found stays.
  auto plan = harness.Plan({});
  REQUIRE(plan);
  CHECK(ActionOf(*plan, "package:tether-a").type == ActionType::kDelete);
  CHECK(ActionOf(*plan, "package:tether-c").type == ActionType::kInSync);
  ApplyResult pruned = harness.Converge({});
  REQUIRE_MESSAGE(pruned.ok, pruned.error);
  CHECK(Version("tether-a") == std::nullopt);
  CHECK(Version("tether-c") == "1.0~rc1-1");
  CHECK(pruned.inventory.entries.empty());
}

TEST_CASE("inside: undo" * doctest::skip(!kInside)) {
  Reset();
  AptGetInstall("tether-a=1.0-1");
  FailingHandler failing;
  Harness harness({}, {&failing});
  // The packages are made, then the file fails: both package changes are undone.
  ApplyResult result =
      harness.Converge({Package("tether-a", "2.0-1"), Package("tether-c", "1.0-1"), FailingFile()});
  CHECK_FALSE(result.ok);
  CHECK(result.rolled_back);
  CHECK(result.error.find("injected failure") != std::string::npos);
  CHECK(Version("tether-a") == "1.0-1");       // the previous version again
  CHECK(Version("tether-c") == std::nullopt);  // not installed before: removed

  // Undo is harmless when the change was never made: no apt run at all.
  const int runs = AptRuns();
  auto handler = MakePackageHandler(harness.apt);
  CHECK(handler->Undo({"package:tether-a",
                       ResourceKind::kPackage,
                       {{"name", "tether-a"}, {"before", "1.0-1"}, {"want", "2.0-1"}}}));
  CHECK(handler->Undo({"package:tether-b",
                       ResourceKind::kPackage,
                       {{"name", "tether-b"}, {"before", nullptr}, {"want", "1.0-1"}}}));
  CHECK(AptRuns() == runs);
  CHECK(Version("tether-a") == "1.0-1");
  CHECK(Version("tether-b") == std::nullopt);
}

TEST_CASE("inside: undo without the previous version" * doctest::skip(!kInside)) {
  Reset();
  Sh(std::string("dpkg -i ") + kRepoInContainer + "/extra/tether-a_0.5-1_all.deb >/dev/null");
  REQUIRE(Version("tether-a") == "0.5-1");
  FailingHandler failing;
  Harness harness({}, {&failing});
  ApplyResult result = harness.Converge({Package("tether-a", "2.0-1"), FailingFile()});
  CHECK_FALSE(result.ok);
  CHECK_FALSE(result.rolled_back);
  CHECK(result.error.find("cannot reinstall the previous version 0.5-1 of 'tether-a': no archive "
                          "offers it any longer (available: 2.0-1, 1.1-1, 1.0-1); 'tether-a' "
                          "stays at 2.0-1") != std::string::npos);
  CHECK(Version("tether-a") == "2.0-1");
}

TEST_CASE("inside: held package" * doctest::skip(!kInside)) {
  Reset();
  AptGetInstall("tether-a=1.0-1");
  Sh("apt-mark hold tether-a");
  Harness harness;
  auto plan = harness.Plan({Package("tether-a", "2.0-1")});
  REQUIRE(plan);  // a held package is installed
  CHECK(ActionOf(*plan, "package:tether-a").changes ==
        std::vector<std::string>{"upgrade 1.0-1 -> 2.0-1"});
  ApplyResult result = harness.Converge({Package("tether-a", "2.0-1")});
  CHECK_FALSE(result.ok);
  CHECK(result.error.find("refused: held package 'tether-a' would change; tether never overrides "
                          "a hold") != std::string::npos);
  CHECK(Version("tether-a") == "1.0-1");
  CHECK(Sh("apt-mark showhold") == "tether-a\n");

  AptPackageManager apt;
  auto made = apt.Apply({{PackageChange::Type::kUpgrade, "tether-a", "2.0-1"}}, 60s);
  REQUIRE_FALSE(made);
  CHECK(made.error().Is(std::errc::operation_not_permitted));
}

// Holds dpkg's frontend lock, as apt and dpkg take it (fcntl), for `seconds`.
Child HoldDpkgLock(const testing::TempDir& dir, int seconds) {
  SpawnOptions options;
  options.argv = {"python3", "-c",
                  "import fcntl, sys, time\n"
                  "f = open('/var/lib/dpkg/lock-frontend', 'w')\n"
                  "fcntl.lockf(f, fcntl.LOCK_EX | fcntl.LOCK_NB)\n"
                  "print('locked', flush=True)\n"
                  "time.sleep(float(sys.argv[1]))\n",
                  std::to_string(seconds)};
  options.stdout_path = dir.Path("lock.out");
  options.stderr_path = dir.Path("lock.err");
  auto child = Spawn(options);
  REQUIRE(child);
  const bool locked = testing::WaitFor(
      [&] {
        std::ifstream out(dir.Path("lock.out"));
        std::string word;
        return static_cast<bool>(out >> word) && word == "locked";
      },
      10s);
  REQUIRE_MESSAGE(locked, "the lock holder did not get the lock");
  return std::move(*child);
}

TEST_CASE("inside: lock released in time" * doctest::skip(!kInside)) {
  Reset();
  testing::TempDir dir("apt-lock");
  AptOptions options;
  options.lock_timeout = 60s;
  Harness harness(options);
  Child holder = HoldDpkgLock(dir, 3);
  const auto start = std::chrono::steady_clock::now();
  ApplyResult result = harness.Converge({Package("tether-a", "1.0-1")});
  const auto waited = std::chrono::steady_clock::now() - start;
  REQUIRE_MESSAGE(result.ok, result.error);
  CHECK(Version("tether-a") == "1.0-1");
  CHECK(waited >= 2s);      // it did wait for the lock
  CHECK(holder.Wait(10s));  // which was released, not broken
}

TEST_CASE("inside: lock held too long" * doctest::skip(!kInside)) {
  Reset();
  testing::TempDir dir("apt-lock");
  AptOptions options;
  options.lock_timeout = 2s;
  AptPackageManager apt(options);
  Child holder = HoldDpkgLock(dir, 120);
  const auto start = std::chrono::steady_clock::now();
  auto made = apt.Apply({{PackageChange::Type::kInstall, "tether-a", "1.0-1"}}, 60s);
  const auto waited = std::chrono::steady_clock::now() - start;
  REQUIRE_FALSE(made);
  CHECK(made.error().Is(std::errc::device_or_resource_busy));
  const std::string message = made.error().message();
  INFO(message);
  CHECK(message.find("the dpkg lock '/var/lib/dpkg/lock-frontend' is held by process " +
                     std::to_string(holder.pid()) + " (python3), still after waiting 2 s") !=
        std::string::npos);
  CHECK(message.find("never broken") != std::string::npos);
  CHECK(waited >= 2s);
  CHECK(waited < 30s);
  CHECK(holder.running());
  CHECK_FALSE(holder.Wait(0ms));  // still holding it: never broken
  CHECK(Version("tether-a") == std::nullopt);

  // apt's own words for it, parsed.
  auto raw = Run({.argv = {"apt-get", "install", "-y", "-q", "-o", "DPkg::Lock::Timeout=1",
                           "tether-a=1.0-1"}});
  REQUIRE(raw);
  INFO(raw->err);
  const Error error = AptFailure(raw->out, raw->err, "apt-get", 1s, &DescribeLockHolder);
  CHECK(error.Is(std::errc::device_or_resource_busy));
  CHECK(error.message().find("is held by process " + std::to_string(holder.pid()) +
                             " (python3), still after waiting 1 s") != std::string::npos);

  // Through the handler: the same error, the transaction rolled back.
  Harness harness(options);
  ApplyResult result = harness.Converge({Package("tether-a", "1.0-1")});
  CHECK_FALSE(result.ok);
  INFO(result.error);
  CHECK(result.error.find("is held by process") != std::string::npos);
  CHECK(Version("tether-a") == std::nullopt);
}

}  // namespace
}  // namespace tether
