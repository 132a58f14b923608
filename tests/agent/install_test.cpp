// The Debian package as a fleet installs it: on a fresh systemd container (its own
// writable /usr and /var/lib/dpkg, overlays of this machine's, so the package's
// dependencies are found installed and nothing reaches the host), `apt-get install
// ./tether_*.deb`, an agent.toml pointing at a git:// fleet repo on the host's loopback,
// `systemctl enable --now tetherd`, the host converges; tetherctl as root, as a member of
// the group tether and as anyone else; `man tetherctl`; an upgrade to the same package
// with a bumped version keeps the state and the applied commit and restarts tetherd once;
// `apt-get purge` leaves nothing tether made.
//
// The .deb is the one scripts/package built: TETHER_DEB (scripts/test builds it and sets
// it before the suites). Without it, the test is skipped.
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include <doctest/doctest.h>
#include <nlohmann/json.hpp>

#include "common/process.hpp"
#include "tests/support/git_repo.hpp"
#include "tests/support/git_server.hpp"
#include "tests/support/systemd_container.hpp"
#include "tests/support/temp_dir.hpp"
#include "tests/support/text_files.hpp"
#include "tests/support/wait_for.hpp"

using namespace std::chrono_literals;
using tether::testing::ReadText;
using tether::testing::SystemdContainer;
using tether::testing::TempDir;
using tether::testing::WaitFor;
using tether::testing::WriteText;

namespace {

namespace fs = std::filesystem;

const char* const kDeb = std::getenv("TETHER_DEB");
const bool kCannotRun = geteuid() != 0 || kDeb == nullptr || *kDeb == '\0';

// Where the packages wait inside the container.
constexpr char kDebDir[] = "/srv/tether-debs";

std::string Trim(std::string text) {
  while (!text.empty() && (text.back() == '\n' || text.back() == ' ')) text.pop_back();
  return text;
}

tether::Result<tether::RunResult> RunArgv(std::vector<std::string> argv) {
  tether::RunOptions options;
  options.argv = std::move(argv);
  return tether::Run(options);
}

// The same package with version VERSION+1: unpacked, its control file's Version bumped,
// packed again. What an upgrade needs from a newer release: dpkg sees a newer version of
// every file.
std::string BumpedPackage(const std::string& deb, const TempDir& dir, std::string& version) {
  const std::string tree = dir.Path("bumped");
  auto unpacked = RunArgv({"dpkg-deb", "-R", deb, tree});
  REQUIRE_MESSAGE((unpacked && unpacked->ok()), (unpacked ? unpacked->err : ""));
  std::string control = ReadText(tree + "/DEBIAN/control");
  const auto at = control.find("\nVersion: ");
  REQUIRE(at != std::string::npos);
  const auto end = control.find('\n', at + 1);
  version = control.substr(at + 10, end - at - 10) + "+1";
  control.replace(at + 10, end - at - 10, version);
  WriteText(tree + "/DEBIAN/control", control);
  const std::string out = dir.Path("tether_" + version + "_bumped.deb");
  auto built = RunArgv({"dpkg-deb", "--root-owner-group", "-b", tree, out});
  REQUIRE_MESSAGE((built && built->ok()), (built ? built->err : ""));
  return out;
}

// Inside the container before anything is installed: no apt source (the package's
// dependencies are installed already; nothing is downloaded), what apt needs in /var, and
// no trace of a tether of this machine.
constexpr char kSetup[] = R"(set -e
rm -rf /etc/apt/sources.list.d/* /etc/tether /var/lib/tether /var/cache/tether
rm -f /etc/dpkg/dpkg.cfg.d/excludes  # a minimal image's: it would leave out the man pages
rm -f /usr/sbin/policy-rc.d  # a container image's "start no service": a host has none
: > /etc/apt/sources.list
mkdir -p /var/lib/apt/lists/partial /var/cache/apt/archives/partial /var/log/apt \
  /var/cache/debconf
userdel tether-git 2>/dev/null || true
groupdel tether-git 2>/dev/null || true
groupdel tether 2>/dev/null || true
)";

// Every file and directory that a package's life could touch, with owner and mode, minus
// what changes by itself (logs, the journal, runtime state, apt's and dpkg's own records
// and shadow's backup files).
constexpr char kListFiles[] = R"(
find /etc /usr /var /srv /opt /run /lib -path /run/systemd -prune -o -path /run/user -prune \
  -o -path /var/log -prune -o -path /var/lib/dpkg -prune -o -path /var/lib/apt -prune \
  -o -path /var/cache/apt -prune -o -path /var/cache/debconf -prune -o -path /var/cache/man -prune \
  -o -path /var/lib/systemd -prune -o -path /run/dbus -prune -o -path /var/tmp -prune \
  -o -path /run/tether-test -prune -o -path /etc/ld.so.cache -prune -o -path /srv/tether-debs -prune \
  -o -path /var/lib/PackageKit -prune \
  -o ! -name '*-' ! -name '.pwd.lock' -printf '%p %u %g %m\n' | sort
getent passwd | sort
getent group | sort
)";

struct Installed {
  TempDir dir{"install"};
  TempDir git_root{"install-git"};
  std::string repo = git_root.Path("fleet.git");
  std::unique_ptr<tether::testing::GitDaemonServer> server;
  std::unique_ptr<SystemdContainer> container;
  std::string commit;

  Installed() {
    tether::testing::CreateBareRepo(repo);
    tether::testing::CommitOptions commit_options;
    commit_options.message = "The fleet";
    commit = tether::testing::CommitFiles(
        repo,
        {{"hosts/install-test.toml",
          "[[directory]]\npath = \"/srv/tether-install\"\n"
          "[[file]]\npath = \"/srv/tether-install/motd\"\ncontent = \"managed by tether\\n\"\n"
          "[[directory]]\npath = \"/srv/tether-install/data\"\nmode = \"0750\"\n"}},
        commit_options);
    server = std::make_unique<tether::testing::GitDaemonServer>(git_root.path());
    fs::create_directories(dir.Path("debs"));
    fs::copy_file(kDeb, dir.Path("debs/tether.deb"));
    fs::permissions(dir.path(), fs::perms(0755));

    tether::testing::ContainerOptions options;
    options.writable_usr = true;
    options.read_only_binds = {dir.Path("debs") + ":" + kDebDir};
    auto started = SystemdContainer::Start(options);
    REQUIRE_MESSAGE(started, (started ? "" : started.error().message()));
    container = std::make_unique<SystemdContainer>(std::move(*started));
    REQUIRE(Inside({"hostname", "install-test"}) == "");
    Inside({"sh", "-c", kSetup});
  }

  std::string Path(const std::string& path) const { return container->root() + path; }

  tether::RunResult Run(const std::vector<std::string>& argv,
                        std::chrono::milliseconds timeout = 120s) const {
    auto run = container->Run(argv, timeout);
    REQUIRE_MESSAGE(run, (run ? "" : run.error().message()));
    return *run;
  }

  // What a command inside prints, trimmed; it must succeed.
  std::string Inside(const std::vector<std::string>& argv) const {
    const auto run = Run(argv);
    REQUIRE_MESSAGE(run.ok(), argv[0] << " " << (argv.size() > 1 ? argv[1] : "") << ": " << run.out
                                      << run.err << Journal());
    return Trim(run.out);
  }

  std::string Journal() const {
    return "\njournal:\n" +
           Run({"journalctl", "-u", "tetherd", "--no-pager", "-o", "cat", "-n", "40"}).out;
  }

  std::string Apt(const std::vector<std::string>& args) const {
    std::vector<std::string> argv = {"env", "DEBIAN_FRONTEND=noninteractive", "apt-get", "-y",
                                     "-q"};
    argv.insert(argv.end(), args.begin(), args.end());
    return Inside(argv);
  }

  nlohmann::json Status() const {
    const auto run = Run({"tetherctl", "status", "--json"});
    auto parsed = nlohmann::json::parse(run.out, nullptr, false);
    return run.ok() && parsed.is_object() ? parsed : nlohmann::json::object();
  }

  bool Synced(const std::string& at) const {
    return WaitFor(
        [&] {
          const auto status = Status();
          return status.value("commit", "") == at && status.value("state", "") == "synced";
        },
        60s);
  }
};

}  // namespace

TEST_CASE("install: the package installs, converges a host, upgrades and purges cleanly" *
          doctest::skip(kCannotRun)) {
  Installed host;
  const std::string before = host.Inside({"sh", "-c", kListFiles});

  // Installed: the programs, the units (disabled), an agent.toml that applies nothing.
  host.Apt({"install", "--no-install-recommends", std::string(kDebDir) + "/tether.deb"});
  CHECK(host.Inside({"dpkg-query", "-W", "-f", "${db:Status-Status}", "tether"}) == "installed");
  for (const auto* program :
       {"/usr/sbin/tetherd", "/usr/bin/tetherctl", "/usr/libexec/tether/tetherd-daemon",
        "/usr/libexec/tether/tetherd-cycle", "/usr/libexec/tether/tetherd-git",
        "/usr/libexec/tether/tetherd-http"}) {
    CHECK_MESSAGE(host.Run({"test", "-x", program}).ok(), program);
  }
  CHECK(host.Inside({"getent", "group", "tether"}).rfind("tether:", 0) == 0);
  CHECK(host.Inside({"getent", "passwd", "tether-git"}).rfind("tether-git:", 0) == 0);
  CHECK(host.Run({"systemctl", "is-enabled", "tetherd.service"}).out == "disabled\n");
  CHECK(host.Run({"systemctl", "is-active", "tetherd.service"}).out == "inactive\n");
  CHECK(host.Inside({"sh", "-c", "cat /var/lib/dpkg/info/tether.conffiles"}) ==
        "/etc/tether/agent.toml");
  // As installed, agent.toml sets nothing, and tetherd says what is missing.
  const auto unset = host.Run({"tetherd", "--once", "--dry-run"});
  CHECK(unset.exit_code == 2);
  CHECK_MESSAGE(unset.err.find("source.url") != std::string::npos, unset.err);
  CHECK(host.Inside({"sh", "-c", "grep -c '^[^#]' /etc/tether/agent.toml || true"}) == "0");
  // The man pages and the completion are where man and bash look.
  const std::string page = host.Inside({"env", "MANPAGER=cat", "MANWIDTH=80", "man", "tetherctl"});
  CHECK(page.find("tetherctl - control the tether agent") != std::string::npos);
  CHECK(host.Inside({"env", "MANPAGER=cat", "man", "5", "tether-agent.toml"}).find("[source]") !=
        std::string::npos);
  CHECK(host.Run({"test", "-r", "/usr/share/bash-completion/completions/tetherctl"}).ok());

  // Configured and enabled: the host converges.
  WriteText(host.Path("/etc/tether/agent.toml"),
            "[source]\nurl = \"" + host.server->url("fleet.git") +
                "\"\ninterval = \"2s\"\n[trust]\nrequire_signed = false\n");
  const auto enabled = host.Run({"systemctl", "enable", "--now", "tetherd"});
  REQUIRE_MESSAGE(enabled.ok(), enabled.err << host.Journal());
  REQUIRE_MESSAGE(host.Synced(host.commit), host.Journal());
  CHECK(ReadText(host.Path("/srv/tether-install/motd")) == "managed by tether\n");
  // Bounded memory: nothing tether runs can take the host's; a child over it is killed,
  // not tetherd's service.
  CHECK(host.Inside({"systemctl", "show", "-P", "MemoryMax", "tetherd"}) == "1073741824");
  CHECK(host.Inside({"systemctl", "show", "-P", "OOMPolicy", "tetherd"}) == "continue");

  // tetherctl: root, a member of the group tether, anyone else.
  host.Inside({"useradd", "--no-create-home", "-G", "tether", "reader"});
  host.Inside({"useradd", "--no-create-home", "stranger"});
  const auto as_member = host.Run({"runuser", "-u", "reader", "--", "tetherctl", "status"});
  CHECK_MESSAGE(as_member.ok(), as_member.err);
  CHECK(as_member.out.find("synced") != std::string::npos);
  const auto member_sync = host.Run({"runuser", "-u", "reader", "--", "tetherctl", "sync"});
  CHECK_FALSE(member_sync.ok());
  const auto as_stranger = host.Run({"runuser", "-u", "stranger", "--", "tetherctl", "status"});
  CHECK(as_stranger.exit_code == 1);
  CHECK_MESSAGE(as_stranger.err.find("ermission denied") != std::string::npos, as_stranger.err);
  host.Inside({"userdel", "reader"});
  host.Inside({"userdel", "stranger"});

  // Upgrade: tetherd restarted once, the state and the applied commit kept.
  const std::string pid = host.Inside({"systemctl", "show", "-P", "MainPID", "tetherd"});
  const auto history = host.Inside({"tetherctl", "history", "--json"});
  std::string version;
  const std::string bumped = BumpedPackage(kDeb, host.dir, version);
  fs::copy_file(bumped, host.dir.Path("debs/tether-bumped.deb"));
  host.Apt({"install", std::string(kDebDir) + "/tether-bumped.deb"});
  CHECK(host.Inside({"dpkg-query", "-W", "-f", "${Version}", "tether"}) == version);
  CHECK(host.Run({"systemctl", "is-active", "tetherd"}).out == "active\n");
  CHECK(host.Inside({"systemctl", "show", "-P", "MainPID", "tetherd"}) != pid);
  CHECK(host.Inside({"systemctl", "show", "-P", "NRestarts", "tetherd"}) == "0");
  REQUIRE_MESSAGE(host.Synced(host.commit), host.Journal());
  // The first apply is still the only one: the new tetherd found the host in sync.
  const auto after = nlohmann::json::parse(host.Inside({"tetherctl", "history", "--json"}));
  CHECK(after["entries"] == nlohmann::json::parse(history)["entries"]);
  CHECK(after["entries"].size() == 1);
  CHECK(ReadText(host.Path("/etc/tether/agent.toml")).find(host.server->url("fleet.git")) !=
        std::string::npos);

  // Remove: stopped, config and state kept.
  host.Apt({"remove", "tether"});
  CHECK(host.Run({"systemctl", "is-active", "tetherd"}).out != "active\n");
  CHECK(fs::exists(host.Path("/etc/tether/agent.toml")));
  CHECK(fs::exists(host.Path("/var/lib/tether")));
  CHECK_FALSE(fs::exists(host.Path("/usr/sbin/tetherd")));

  // Purge: nothing tether made is left; what it applied to the host stays.
  host.Apt({"purge", "tether"});
  host.Inside({"systemctl", "daemon-reload"});
  CHECK(ReadText(host.Path("/srv/tether-install/motd")) == "managed by tether\n");
  host.Inside({"rm", "-r", "/srv/tether-install"});
  const std::string left = host.Inside({"sh", "-c", kListFiles});
  WriteText(host.dir.Path("before"), before);
  WriteText(host.dir.Path("after"), left);
  const auto diff = RunArgv({"diff", host.dir.Path("before"), host.dir.Path("after")});
  REQUIRE(diff);
  CHECK_MESSAGE(diff->exit_code == 0, "files before install (<) and after purge (>):\n"
                                          << diff->out);
}
