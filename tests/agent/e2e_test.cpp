// The whole agent as a user runs it, on the bundled example: tetherd as the systemd service
// of systemd/tetherd.service (Type=notify, the watchdog) inside a throwaway systemd
// container, a real git server holding a signed copy of config/fleet plus the host profile
// config/demo/hosts/demo.toml, tetherctl over the real control socket
// /run/tether/tether.sock. The scenario of scripts/demo, with assertions.
//
// The container shares the host's network (the git server runs on the host's loopback) and
// sees the host's /usr and, read-only, its package database: the example's package (curl)
// is installed, its service (the example app) is a unit file from the fleet repo.
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <thread>
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

const bool kNotRoot = geteuid() != 0;

// The daemon's poll period: short, so that a pushed commit is applied without asking.
constexpr char kInterval[] = "1s";
// The watchdog, short enough that a main loop that stopped pinging would be caught (and
// the unit restarted, which the test would see) within the test.
constexpr char kWatchdog[] = "3s";

// Every file of the bundled example fleet repo, plus the demo host's profile, as
// scripts/demo has them: path in the repo -> content.
std::map<std::string, std::string> ExampleFleet() {
  const fs::path config = fs::path(std::getenv("TETHER_SOURCE_ROOT")) / "config";
  std::map<std::string, std::string> files;
  for (const auto& root : {config / "fleet", config / "demo"}) {
    for (const auto& entry : fs::recursive_directory_iterator(root)) {
      if (entry.is_regular_file()) {
        files[fs::relative(entry.path(), root).string()] = ReadText(entry.path().string());
      }
    }
  }
  REQUIRE(files.count("hosts/demo.toml") == 1);
  return files;
}

SystemdContainer StartContainer() {
  tether::testing::ContainerOptions options;
  // The host's package database, read-only: the profile's packages are found installed.
  options.read_only_binds = {"/var/lib/dpkg"};
  auto started = SystemdContainer::Start(options);
  REQUIRE_MESSAGE(started, (started ? "" : started.error().message()));
  return std::move(*started);
}

struct Host {
  TempDir dir{"e2e"};
  TempDir git_root{"e2e-git"};
  std::string repo = git_root.Path("fleet.git");
  tether::testing::SshKeyPair key;
  std::unique_ptr<tether::testing::GitDaemonServer> server;
  SystemdContainer container = StartContainer();
  std::string first;

  Host() {
    tether::testing::CreateBareRepo(repo);
    key = tether::testing::GenerateSshKey(dir.Path("ops"));
    first = Commit(ExampleFleet(), "The example fleet", true);
    server = std::make_unique<tether::testing::GitDaemonServer>(git_root.path());

    // The host's name picks its profile: hosts/{hostname}.toml.
    REQUIRE(Inside({"hostname", "demo"}) == "");
    WriteText(Path("/etc/tether/agent.toml"),
              "[source]\nurl = \"" + server->url("fleet.git") +
                  "\"\nprofile = \"hosts/{hostname}.toml\"\ninterval = \"" + kInterval +
                  "\"\ntimeout = \"10s\"\n"
                  "[trust]\nrequire_signed = true\n"
                  "allowed_signers = \"/etc/tether/allowed_signers\"\n"
                  "[apply]\nhealth_timeout = \"30s\"\n"
                  "[labels]\nenv = \"test\"\n");
    WriteText(Path("/etc/tether/allowed_signers"), "ops@example.com " + key.public_line + "\n");
    // The unit as shipped, with a drop-in for what differs here: the binary from the build
    // dir, and a short watchdog.
    WriteText(
        Path("/etc/systemd/system/tetherd.service"),
        ReadText(std::string(std::getenv("TETHER_SOURCE_ROOT")) + "/systemd/tetherd.service"));
    WriteText(Path("/etc/systemd/system/tetherd.service.d/test.conf"),
              std::string("[Service]\nExecStart=\nExecStart=") + std::getenv("TETHERD") +
                  "\nWatchdogSec=" + kWatchdog + "\n");
    REQUIRE(Inside({"systemctl", "daemon-reload"}) == "");
  }

  // A path in the container, as the host sees it.
  std::string Path(const std::string& path) const { return container.root() + path; }

  std::string Commit(const std::map<std::string, std::string>& files, const std::string& message,
                     bool whole_tree = false) {
    tether::testing::CommitOptions options;
    options.signing_key = key.private_key;
    options.message = message;
    options.replace_tree = whole_tree;
    return tether::testing::CommitFiles(repo, files, options);
  }

  tether::RunResult Run(const std::vector<std::string>& argv) const {
    auto run = container.Run(argv, 90s);
    REQUIRE_MESSAGE(run, (run ? "" : run.error().message()));
    return *run;
  }

  // What a command inside prints, trimmed; it must succeed.
  std::string Inside(const std::vector<std::string>& argv) const {
    const auto run = Run(argv);
    REQUIRE_MESSAGE(
        run.ok(), argv[0] << " " << (argv.size() > 1 ? argv[1] : "") << ": " << run.out << run.err);
    std::string out = run.out;
    while (!out.empty() && out.back() == '\n') out.pop_back();
    return out;
  }

  // tetherctl ARGS... inside, on the default control socket.
  tether::RunResult Ctl(std::vector<std::string> args) const {
    args.insert(args.begin(), std::getenv("TETHERCTL"));
    return Run(args);
  }

  nlohmann::json Status() const {
    const auto run = Ctl({"status", "--json"});
    auto parsed = nlohmann::json::parse(run.out, nullptr, false);
    return run.ok() && parsed.is_object() ? parsed : nlohmann::json::object();
  }

  std::string Show(const std::string& property, const std::string& unit = "tetherd") const {
    return Inside({"systemctl", "show", "-P", property, unit});
  }
  std::string IsActive(const std::string& unit) const {
    std::string out = Run({"systemctl", "is-active", unit}).out;
    while (!out.empty() && out.back() == '\n') out.pop_back();
    return out;
  }

  // For failure messages: the daemon's journal.
  std::string Journal() const {
    return Run({"journalctl", "-u", "tetherd", "--no-pager", "-o", "cat", "-n", "60"}).out;
  }

  // Until the daemon reports `commit` applied and is done with it.
  bool SyncedAt(const std::string& commit, std::chrono::milliseconds timeout = 60s) const {
    return WaitFor(
        [&] {
          const auto status = Status();
          return status.value("commit", "") == commit && status.value("state", "") == "synced";
        },
        timeout);
  }
};

std::string MotdFor(const std::string& env, const std::string& questions) {
  return "demo (" + env + ") is managed by tether.\nManual changes are reverted. " + questions +
         " ops@example.com\n";
}

}  // namespace

TEST_CASE("e2e: tetherd under systemd applies the example fleet, reverts drift, rolls back" *
          doctest::skip(kNotRoot)) {
  Host host;
  const std::string first_motd = MotdFor("test", "Questions:");

  // Started under systemd: `systemctl start` returns once tetherd said READY=1.
  const auto started = host.Run({"systemctl", "start", "tetherd"});
  REQUIRE_MESSAGE(started.ok(), started.err << host.Journal());
  CHECK(host.IsActive("tetherd") == "active");
  CHECK(host.Show("Type") == "notify");
  CHECK(host.Show("WatchdogUSec") == kWatchdog);

  // The first cycle applies the head: the example's files, its service, its package.
  REQUIRE_MESSAGE(host.SyncedAt(host.first), host.Journal());
  CHECK(ReadText(host.Path("/etc/motd")) == first_motd);
  CHECK(ReadText(host.Path("/etc/tether-example/api-token")) == "not-a-real-token\n");
  const auto token_mode = fs::status(host.Path("/etc/tether-example/api-token")).permissions();
  CHECK((token_mode & fs::perms::all) == (fs::perms::owner_read | fs::perms::owner_write));
  CHECK(host.IsActive("example-app.service") == "active");
  CHECK(host.Inside({"systemctl", "is-enabled", "example-app.service"}) == "enabled");
  auto status = host.Status();
  CHECK(status["source"] == host.server->url("fleet.git"));
  CHECK(status["pinned"].is_null());
  // STATUS= for `systemctl status tetherd`.
  CHECK(host.Show("StatusText").find("synced at " + host.first.substr(0, 12)) != std::string::npos);
  const auto human = host.Ctl({"status"});
  CHECK(human.ok());
  CHECK(human.out.find("state      synced\ncommit     " + host.first) != std::string::npos);

  // A signed commit pushed to the git server is applied by the next poll, unasked.
  std::string motd_template = ExampleFleet().at("files/motd");
  const auto questions = motd_template.find("Questions:");
  REQUIRE(questions != std::string::npos);
  motd_template.replace(questions, 10, "Questions? Ask");
  const std::string second = host.Commit({{"files/motd", motd_template}}, "Friendlier motd");
  const std::string second_motd = MotdFor("test", "Questions? Ask");
  CHECK_MESSAGE(host.SyncedAt(second), host.Journal());
  CHECK(ReadText(host.Path("/etc/motd")) == second_motd);

  // A hand edit of a managed file is reverted as it happens (inotify), well before a poll
  // would matter.
  const auto edited = host.Run({"sh", "-c", "echo 'edited by hand' >> /etc/motd"});
  REQUIRE(edited.ok());
  CHECK_MESSAGE(WaitFor([&] { return ReadText(host.Path("/etc/motd")) == second_motd; }, 10s),
                host.Journal());
  CHECK(WaitFor([&] { return host.Status()["last_cycle"].value("trigger", "") == "drift"; }, 10s));
  CHECK(host.IsActive("example-app.service") == "active");

  // The repair's own write starts no other cycle, though the service watch is open beside
  // the path watch: one more hand edit costs one drift cycle.
  auto drift_cycles = [&] {
    const std::string out = host.Ctl({"metrics"}).out;
    const std::string name = "tether_cycles_total{trigger=\"drift\"} ";
    const auto at = out.find(name);
    return at == std::string::npos ? -1 : std::stoi(out.substr(at + name.size()));
  };
  // Settled: any cycle the repair's own write could start has started (events settle in
  // milliseconds) and is over. A poll runs every second, so the state is "applying" now
  // and then even when no drift cycle runs: wait for "synced" rather than sample it.
  auto is_synced = [&] { return host.Status().value("state", "") == "synced"; };
  auto settled = [&] {
    REQUIRE(WaitFor(is_synced, 20s));
    std::this_thread::sleep_for(std::chrono::milliseconds(1500));
    REQUIRE(WaitFor(is_synced, 20s));
  };
  settled();
  const int repairs = drift_cycles();
  REQUIRE(repairs >= 1);
  // This edit replaces the file (one event, as an editor that saves by rename makes). An
  // edit in place makes two, the write and the close, and a loaded machine may deliver
  // the close after the repair has started: the daemon rightly takes it for one more edit
  // (a write in place within the same clock tick leaves the stat as it was), and looks
  // once more.
  REQUIRE(host.Run({"sh", "-c",
                    "cp /etc/motd /etc/.motd.edit && echo 'edited by hand again' >> "
                    "/etc/.motd.edit && mv /etc/.motd.edit /etc/motd"})
              .ok());
  CHECK_MESSAGE(WaitFor([&] { return ReadText(host.Path("/etc/motd")) == second_motd; }, 10s),
                host.Journal());
  settled();
  CHECK_MESSAGE(drift_cycles() == repairs + 1, host.Journal());

  // The history lists the applies: the start, the poll, the repair.
  const auto history = host.Ctl({"history", "--json"});
  REQUIRE_MESSAGE(history.ok(), history.err);
  const auto entries = nlohmann::json::parse(history.out)["entries"];
  REQUIRE(entries.size() >= 3);
  CHECK(entries[0]["commit"] == host.first);
  CHECK(entries[0]["trigger"] == "start");
  CHECK(entries[0]["outcome"] == "applied");
  CHECK(entries[0]["signer"].get<std::string>().find("ops@example.com") == 0);
  CHECK(entries[1]["commit"] == second);
  CHECK(entries[1]["trigger"] == "poll");
  CHECK(entries[1]["outcome"] == "applied");
  CHECK(entries.back()["trigger"] == "drift");
  CHECK(host.Ctl({"history"}).out.find("TRIGGER COMMIT") != std::string::npos);

  // Rollback to the first commit: applied from the local history and pinned there, though
  // the fleet repo's head is the second.
  const auto rolled = host.Ctl({"rollback", host.first.substr(0, 12)});
  CHECK_MESSAGE(rolled.ok(), rolled.err);
  CHECK(rolled.out == "pinned to " + host.first + " until tetherctl resume\n");
  CHECK_MESSAGE(host.SyncedAt(host.first), host.Journal());
  CHECK(ReadText(host.Path("/etc/motd")) == first_motd);
  CHECK(host.Status()["pinned"] == host.first);

  // The pin survives a restart of the service; polls keep it there.
  const auto restarted = host.Run({"systemctl", "restart", "tetherd"});
  REQUIRE_MESSAGE(restarted.ok(), restarted.err << host.Journal());
  CHECK(host.IsActive("tetherd") == "active");
  CHECK(host.Show("NRestarts") == "0");  // restarted by hand, never by the watchdog
  CHECK(WaitFor([&] { return host.Status()["last_cycle"].is_object(); }, 30s));
  const auto synced = host.Ctl({"sync", "--wait"});
  CHECK_MESSAGE(synced.ok(), synced.out << synced.err);
  status = host.Status();
  CHECK(status["pinned"] == host.first);
  CHECK(status["commit"] == host.first);
  CHECK(ReadText(host.Path("/etc/motd")) == first_motd);

  // Resume: back to the fleet repo's head.
  const auto resumed = host.Ctl({"resume"});
  CHECK_MESSAGE(resumed.ok(), resumed.err);
  CHECK_MESSAGE(host.SyncedAt(second), host.Journal());
  CHECK(host.Status()["pinned"].is_null());
  CHECK(ReadText(host.Path("/etc/motd")) == second_motd);
  CHECK(host.IsActive("example-app.service") == "active");

  // A service stopped by hand is started again at once, from systemd's signals, without
  // waiting for a poll: polls are made rare first (systemctl reload: SIGHUP).
  std::string config = ReadText(host.Path("/etc/tether/agent.toml"));
  const std::string interval = std::string("interval = \"") + kInterval + "\"";
  REQUIRE(config.find(interval) != std::string::npos);
  config.replace(config.find(interval), interval.size(), "interval = \"1h\"");
  WriteText(host.Path("/etc/tether/agent.toml"), config);
  REQUIRE(host.Run({"systemctl", "reload", "tetherd"}).ok());
  CHECK(WaitFor(
      [&] {
        const auto next = host.Status()["next_poll_ms"];
        return next.is_number() && next.get<std::int64_t>() > 60000;
      },
      20s));
  const auto stopped_app = host.Run({"systemctl", "stop", "example-app.service"});
  REQUIRE_MESSAGE(stopped_app.ok(), stopped_app.err);
  CHECK_MESSAGE(WaitFor([&] { return host.IsActive("example-app.service") == "active"; }, 20s),
                host.Journal());
  CHECK(WaitFor(
      [&] {
        auto now = host.Status();
        return now.value("state", "") == "synced" &&
               now["last_cycle"].value("trigger", "") == "drift";
      },
      20s));

  // A clean stop: SIGTERM from systemd, the unit inactive (not failed), no transaction
  // left open, the socket gone. The watchdog never fired.
  CHECK(host.Show("NRestarts") == "0");
  const auto stopped = host.Run({"systemctl", "stop", "tetherd"});
  CHECK_MESSAGE(stopped.ok(), stopped.err << host.Journal());
  CHECK(host.IsActive("tetherd") == "inactive");
  CHECK(host.Show("Result") == "success");
  CHECK(host.Show("ExecMainStatus") == "0");
  CHECK(fs::is_directory(host.Path("/var/lib/tether")));
  CHECK_FALSE(fs::exists(host.Path("/var/lib/tether/journal")));
  CHECK_FALSE(fs::exists(host.Path("/run/tether/tether.sock")));
  // What it applied stays: stopping the agent changes nothing on the host.
  CHECK(ReadText(host.Path("/etc/motd")) == second_motd);
  CHECK(host.IsActive("example-app.service") == "active");
  const std::string journal = host.Journal();
  CHECK_MESSAGE(journal.find("Watchdog timeout") == std::string::npos, journal);
}
