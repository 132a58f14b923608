// tetherd as a daemon, end to end: a real git server, signed commits, a --root sandbox,
// the control socket through tetherctl, sd_notify through a NOTIFY_SOCKET of our own.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <set>
#include <sstream>
#include <string>
#include <thread>

#include <doctest/doctest.h>
#include <nlohmann/json.hpp>

#include "common/filesystem.hpp"
#include "common/process.hpp"
#include "common/stat_mark.hpp"
#include "common/unique_fd.hpp"
#include "tests/support/git_repo.hpp"
#include "tests/support/git_server.hpp"
#include "tests/support/https_server.hpp"
#include "tests/support/report_receiver.hpp"
#include "tests/support/report_schema.hpp"
#include "tests/support/temp_dir.hpp"
#include "tests/support/test_ca.hpp"
#include "tests/support/wait_for.hpp"

using namespace std::chrono_literals;
using tether::testing::CommitFiles;
using tether::testing::TempDir;
using tether::testing::WaitFor;

namespace {

// A datagram socket standing in for systemd's notify socket: collects what tetherd says,
// reading all along as systemd does (a full queue would block sd_notify).
class NotifySocket {
 public:
  explicit NotifySocket(const std::string& path) : path_(path) {
    fd_.Reset(socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0));
    sockaddr_un address{};
    address.sun_family = AF_UNIX;
    std::snprintf(address.sun_path, sizeof(address.sun_path), "%s", path.c_str());
    REQUIRE(bind(fd_.get(), reinterpret_cast<sockaddr*>(&address), sizeof(address)) == 0);
    reader_ = std::thread([this] {
      char buffer[4096];
      while (!stop_) {
        pollfd ready{fd_.get(), POLLIN, 0};
        if (poll(&ready, 1, 100) != 1) continue;
        const ssize_t n = recv(fd_.get(), buffer, sizeof(buffer), 0);
        if (n <= 0) continue;
        std::lock_guard lock(mutex_);
        received_.append(buffer, static_cast<std::size_t>(n));
        received_ += '\n';
      }
    });
  }
  ~NotifySocket() {
    stop_ = true;
    reader_.join();
  }
  // Everything received so far, one message per line.
  std::string Messages() {
    std::lock_guard lock(mutex_);
    return received_;
  }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
  tether::UniqueFd fd_;
  std::mutex mutex_;
  std::string received_;
  std::atomic<bool> stop_{false};
  std::thread reader_;
};

struct Fleet {
  TempDir dir{"daemon"};
  TempDir git_root{"daemon-git"};
  std::string repo = git_root.Path("fleet.git");
  tether::testing::SshKeyPair key;
  std::unique_ptr<tether::testing::GitDaemonServer> server;
  std::string socket = dir.Path("tether.sock");
  NotifySocket notify{dir.Path("notify.sock")};
  tether::Child tetherd;

  Fleet() {
    tether::testing::CreateBareRepo(repo);
    key = tether::testing::GenerateSshKey(dir.Path("ops"));
    dir.WriteFile("allowed_signers", "ops@example.com " + key.public_line + "\n");
    server = std::make_unique<tether::testing::GitDaemonServer>(git_root.path());
    std::filesystem::create_directories(dir.Path("root/etc"));
  }

  std::string interval = "1s";
  std::string extra_config;             // appended to agent.toml
  std::string extra_source;             // appended to its [source]
  std::vector<std::string> extra_args;  // for tetherd

  std::string Config() const {
    return "[source]\nurl = \"" + server->url("fleet.git") +
           "\"\nprofile = \"hosts/h.toml\"\ntimeout = \"5s\"\ninterval = \"" + interval + "\"\n" +
           extra_source + "[trust]\nallowed_signers = \"" + dir.Path("allowed_signers") + "\"\n" +
           extra_config;
  }

  // A signed commit of a profile with /etc/motd, and `checks` (TOML) after it.
  std::string Commit(const std::string& motd, const std::string& checks = "") {
    tether::testing::CommitOptions options;
    options.signing_key = key.private_key;
    return CommitFiles(
        repo,
        {{"hosts/h.toml", "[[file]]\npath = \"/etc/motd\"\nsource = \"motd\"\n" + checks},
         {"motd", motd}},
        options);
  }

  // tetherd on this fleet's config, state, cache and root, with `socket_path`.
  std::vector<std::string> TetherdArgv(const std::string& socket_path) const {
    return {std::getenv("TETHERD"),
            "--config",
            dir.Path("agent.toml"),
            "--state-dir",
            dir.Path("state"),
            "--cache-dir",
            dir.Path("cache"),
            "--root",
            dir.Path("root"),
            "--socket",
            socket_path};
  }

  // Writes agent.toml (Config(), with the settings above) and starts tetherd.
  void Start() {
    dir.WriteFile("agent.toml", Config());
    tether::SpawnOptions options;
    options.argv = TetherdArgv(socket);
    options.argv.insert(options.argv.end(), extra_args.begin(), extra_args.end());
    options.env = tether::kCleanEnvironment;
    options.env.push_back("NOTIFY_SOCKET=" + notify.path());
    options.stderr_path = dir.Path("tetherd.log");
    auto spawned = tether::Spawn(options);
    REQUIRE(spawned);
    tetherd = std::move(*spawned);
  }

  // Starts tetherd the way tetherd.socket does: systemd-socket-activate listens on
  // `socket`, starts tetherd at the first connection and passes the socket (LISTEN_FDS);
  // tetherd's own --socket is `tetherd_socket`.
  void StartActivated(const std::string& tetherd_socket) {
    tether::SpawnOptions options;
    options.argv = {"systemd-socket-activate", "-l", socket, "-E",
                    "NOTIFY_SOCKET=" + notify.path()};
    const auto argv = TetherdArgv(tetherd_socket);
    options.argv.insert(options.argv.end(), argv.begin(), argv.end());
    options.stderr_path = dir.Path("tetherd.log");
    auto activator = tether::Spawn(options);
    REQUIRE(activator);
    tetherd = std::move(*activator);
  }

  // tetherctl ARGS... as root.
  tether::RunResult Ctl(std::vector<std::string> args) const {
    tether::RunOptions options;
    options.argv = {std::getenv("TETHERCTL"), "--socket", socket};
    options.argv.insert(options.argv.end(), args.begin(), args.end());
    options.timeout = 60s;
    auto result = tether::Run(options);
    REQUIRE(result);
    return *result;
  }

  nlohmann::json Status(bool detail = false) const {
    auto result = Ctl(detail ? std::vector<std::string>{"status", "--json", "--detail"}
                             : std::vector<std::string>{"status", "--json"});
    auto parsed = nlohmann::json::parse(result.out, nullptr, false);
    return result.ok() && parsed.is_object() ? parsed : nlohmann::json::object();
  }

  std::string Log() const { return dir.ReadFile("tetherd.log"); }

  // Commits `motd` (see Commit), starts tetherd and waits until it has applied that
  // commit, which it returns.
  std::string StartApplied(const std::string& motd) {
    const std::string commit = Commit(motd);
    Start();
    REQUIRE_MESSAGE(WaitFor([&] { return Status().value("commit", "") == commit; }, 30s), Log());
    return commit;
  }
};

}  // namespace

TEST_CASE("tetherd runs as a daemon: applies, polls, syncs, reloads and stops cleanly") {
  Fleet fleet;
  const std::string first = fleet.Commit("hello\n");
  fleet.Start();

  // Started: READY, then the first cycle applies the head.
  REQUIRE_MESSAGE(WaitFor([&] { return fleet.Status().value("commit", "") == first; }, 30s),
                  fleet.Log());
  CHECK(fleet.dir.ReadFile("root/etc/motd") == "hello\n");
  auto status = fleet.Status();
  CHECK(status["schema"] == "tether.ctl/v1");
  CHECK(status["state"] == "synced");
  CHECK(status["last_cycle"]["exit"] == 0);
  CHECK(fleet.notify.Messages().find("READY=1") != std::string::npos);
  CHECK(fleet.notify.Messages().find("STATUS=synced at " + first.substr(0, 12)) !=
        std::string::npos);
  const auto human = fleet.Ctl({"status"});
  CHECK(human.ok());
  CHECK(human.out.find("state      synced\ncommit     " + first) != std::string::npos);

  // A pushed commit is applied by the next poll (interval 1s), without being asked.
  const std::string second = fleet.Commit("second\n");
  CHECK_MESSAGE(WaitFor([&] { return fleet.dir.ReadFile("root/etc/motd") == "second\n"; }, 30s),
                fleet.Log());
  CHECK(WaitFor([&] { return fleet.Status().value("commit", "") == second; }, 10s));

  // tetherctl sync --wait: a cycle now, its outcome printed; a hand edit is reverted, by
  // that cycle or by the drift cycle the edit started (the sync's cycle then finds the
  // file in sync). The diff is in the log either way.
  fleet.dir.WriteFile("root/etc/motd", "edited by hand\n");
  const auto synced = fleet.Ctl({"sync", "--wait"});
  CHECK_MESSAGE(synced.exit_code == 0, (synced.out + synced.err));
  CHECK(fleet.dir.ReadFile("root/etc/motd") == "second\n");
  CHECK(fleet.Log().find("-edited by hand") != std::string::npos);
  CHECK(fleet.Log().find("in sync  file:/etc/motd") == std::string::npos);  // changes only

  // SIGHUP with a broken agent.toml: logged, the old configuration kept, still serving.
  fleet.dir.WriteFile("agent.toml", "[source]\nurl = \"ftp://nowhere/\"\n");
  fleet.tetherd.Signal(SIGHUP);
  CHECK(WaitFor(
      [&] { return fleet.Log().find("keeping the configuration in use") != std::string::npos; },
      10s));
  CHECK(WaitFor([&] { return fleet.notify.Messages().find("RELOADING=1") != std::string::npos; },
                10s));
  CHECK(fleet.Ctl({"sync", "--wait"}).exit_code == 0);
  fleet.dir.WriteFile("agent.toml", fleet.Config());
  fleet.tetherd.Signal(SIGHUP);
  CHECK(WaitFor([&] { return fleet.Log().find("reloaded ") != std::string::npos; }, 10s));

  // SIGTERM: a clean stop, the socket gone.
  fleet.tetherd.Signal(SIGTERM);
  auto stopped = fleet.tetherd.Wait(20s);
  REQUIRE(stopped);
  CHECK(WIFEXITED(*stopped));
  CHECK(WEXITSTATUS(*stopped) == 0);
  CHECK(fleet.notify.Messages().find("STOPPING=1") != std::string::npos);
  CHECK_FALSE(std::filesystem::exists(fleet.socket));
  const auto gone = fleet.Ctl({"status"});
  CHECK(gone.exit_code == 1);
  CHECK(gone.err.find("tetherd is not running") != std::string::npos);
}

TEST_CASE("The control socket refuses peers that are neither root nor in the group tether" *
          doctest::skip(geteuid() != 0)) {
  Fleet fleet;
  fleet.Commit("hello\n");
  fleet.Start();
  REQUIRE_MESSAGE(WaitFor([&] { return fleet.Status().value("state", "") == "synced"; }, 30s),
                  fleet.Log());
  // nobody may not even connect (the socket is 0600 without a group tether, 0660 with it);
  // with the permission bits opened, the peer check still refuses.
  std::filesystem::permissions(fleet.dir.path(), std::filesystem::perms::all,
                               std::filesystem::perm_options::add);
  std::filesystem::permissions(fleet.socket, std::filesystem::perms::all,
                               std::filesystem::perm_options::add);
  tether::RunOptions options;
  options.argv = {
      "setpriv",  "--reuid=nobody", "--regid=nogroup", "--clear-groups", std::getenv("TETHERCTL"),
      "--socket", fleet.socket,     "status"};
  auto refused = tether::Run(options);
  REQUIRE(refused);
  CHECK(refused->exit_code == 1);
  CHECK_MESSAGE(refused->err.find("permission denied") != std::string::npos, refused->err);

  // The daemon keeps serving root.
  CHECK(fleet.Ctl({"status", "--json"}).ok());
}

TEST_CASE("Malformed requests of every type are refused; tetherd stays up and serving") {
  Fleet fleet;
  fleet.interval = "1h";
  fleet.StartApplied("hello\n");
  // 10,000 malformed requests from a client that is not ours: every one is refused.
  tether::RunOptions options;
  options.argv = {"python3", std::getenv("TETHER_CONTROL_GARBAGE"), fleet.socket, "10000"};
  options.timeout = 240s;
  auto sent = tether::Run(options);
  REQUIRE(sent);
  REQUIRE_MESSAGE(sent->ok(), (sent->err + fleet.Log()));
  const auto result = nlohmann::json::parse(sent->out, nullptr, false);
  REQUIRE_MESSAGE(result.is_object(), sent->out);
  CHECK(result["sent"] == 10000);
  CHECK_MESSAGE(result["refused"] == 10000, result["bad"].dump());
  CHECK(result["too_long_refused"] == true);
  // The two requests that aborted tetherd before, sent by tetherd's own client code path.
  for (const char* line : {R"({"command":5})", R"({"command":"show","id":"abc"})"}) {
    options.argv = {"python3", "-c",
                    "import socket,sys; s=socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]); "
                    "s.sendall(sys.argv[2].encode()+b'\\n'); print(s.makefile().readline())",
                    fleet.socket, line};
    auto reply = tether::Run(options);
    REQUIRE(reply);
    CHECK_MESSAGE(reply->out.find("\"ok\":false") != std::string::npos, reply->out);
  }
  // Still the same process, still serving, nothing changed by any of it.
  CHECK(kill(fleet.tetherd.pid(), 0) == 0);
  auto status = fleet.Status();
  CHECK(status["state"] == "synced");
  CHECK(status["suspended"].is_null());
  CHECK(status["pinned"].is_null());
  CHECK(fleet.dir.ReadFile("root/etc/motd") == "hello\n");
  CHECK(fleet.Ctl({"sync", "--wait"}).ok());
}

// The daemon's resident memory, in kB.
long DaemonRss(const Fleet& fleet) {
  std::ifstream status("/proc/" + std::to_string(fleet.tetherd.pid()) + "/status");
  std::string line;
  while (std::getline(status, line)) {
    if (line.rfind("VmRSS:", 0) == 0) return std::stol(line.substr(6));
  }
  return -1L;
}

TEST_CASE("Control clients that flood or hoard connections are bounded; cycles go on") {
  Fleet fleet;
  fleet.interval = "1h";
  fleet.StartApplied("hello\n");
  const char* flood = std::getenv("TETHER_CONTROL_FLOOD");
  REQUIRE_MESSAGE(flood != nullptr, "TETHER_CONTROL_FLOOD is set by meson");
  const long rss_before = DaemonRss(fleet);

  // 200,000 status requests in one go, no reply read: tetherd reads the next request once
  // its reply is written, so it holds one reply, not 200,000, and drops the client that
  // does not read it.
  tether::RunOptions options;
  options.argv = {"/usr/bin/python3", flood, fleet.socket, "pipeline", "200000"};
  options.timeout = 60s;
  auto flooded = tether::Run(options);
  REQUIRE(flooded);
  REQUIRE_MESSAGE(flooded->ok(), flooded->err);
  const auto result = nlohmann::json::parse(flooded->out, nullptr, false);
  REQUIRE_MESSAGE(result.is_object(), flooded->out);
  INFO(result.dump());
  CHECK(result["requests_sent"].get<long>() < 200000);
  CHECK(result["closed"] == true);
  CHECK(result["closed_after_s"].get<double>() <= 15);
  CHECK_MESSAGE(DaemonRss(fleet) < rss_before + 4096,
                "VmRSS " << rss_before << " kB -> " << DaemonRss(fleet) << " kB");

  // 1,100 events subscriptions held (root's, as the worst case): 64 admitted, the rest
  // told why and closed; descriptors are left for cycles, so a hand edit is still
  // reverted.
  tether::SpawnOptions spawn;
  spawn.argv = {"/usr/bin/python3", flood, fleet.socket, "hold", "1100", "60"};
  spawn.stdout_path = fleet.dir.Path("hold.out");
  spawn.stderr_path = fleet.dir.Path("hold.err");
  auto holder = tether::Spawn(spawn);
  REQUIRE(holder);
  REQUIRE_MESSAGE(
      WaitFor([&] { return fleet.dir.ReadFile("hold.out").find('\n') != std::string::npos; }, 60s),
      fleet.dir.ReadFile("hold.err"));
  const auto held = nlohmann::json::parse(fleet.dir.ReadFile("hold.out"), nullptr, false);
  REQUIRE_MESSAGE(held.is_object(), fleet.dir.ReadFile("hold.out"));
  CHECK_MESSAGE(held["admitted"] == 64, held.dump());
  CHECK_MESSAGE(held["refused"] == 1100 - 64, held.dump());
  const auto locked_out = fleet.Ctl({"status"});
  CHECK_FALSE(locked_out.ok());
  CHECK_MESSAGE(locked_out.err.find("too many connections") != std::string::npos, locked_out.err);
  fleet.dir.WriteFile("root/etc/motd", "edited by hand\n");
  CHECK_MESSAGE(WaitFor([&] { return fleet.dir.ReadFile("root/etc/motd") == "hello\n"; }, 20s),
                fleet.Log());
  holder->Stop(SIGKILL, 0ms);
  CHECK(WaitFor([&] { return fleet.Ctl({"status"}).ok(); }, 10s));
  CHECK(kill(fleet.tetherd.pid(), 0) == 0);
}

TEST_CASE("A hand edit is reverted as it happens, without waiting for a poll") {
  Fleet fleet;
  fleet.interval = "1h";
  const std::string first = fleet.StartApplied("hello\n");
  for (const char* edit : {"edited by hand\n", "and again\n"}) {
    REQUIRE(WaitFor([&] { return fleet.Status().value("state", "") == "synced"; }, 10s));
    fleet.dir.WriteFile("root/etc/motd", edit);
    CHECK_MESSAGE(WaitFor([&] { return fleet.dir.ReadFile("root/etc/motd") == "hello\n"; }, 10s),
                  fleet.Log());
  }
  // One repair per edit: the repair's own write is told from a person's by its stat, and
  // starts no cycle (nor did the first apply's). Then the log settles. (A third cycle
  // only if one edit's write and chmod came more than the settle apart.)
  REQUIRE(WaitFor([&] { return fleet.Status().value("state", "") == "synced"; }, 10s));
  const std::string log = fleet.Log();
  std::this_thread::sleep_for(1500ms);
  CHECK(fleet.Log() == log);
  const auto metrics = fleet.Ctl({"metrics"});
  REQUIRE(metrics.ok());
  const std::string drift_cycles = "tether_cycles_total{trigger=\"drift\"} ";
  const auto at = metrics.out.find(drift_cycles);
  REQUIRE_MESSAGE(at != std::string::npos, metrics.out);
  const int repairs = std::stoi(metrics.out.substr(at + drift_cycles.size()));
  CHECK_MESSAGE((repairs == 2 || repairs == 3), metrics.out);
  CHECK(fleet.Status()["last_cycle"].value("trigger", "") == "drift");
  // Each repair's process, started at the edit ahead of its job, was given one and is gone.
  std::string children;
  for (const auto& task : std::filesystem::directory_iterator(
           "/proc/" + std::to_string(fleet.tetherd.pid()) + "/task")) {
    std::ifstream in(task.path() / "children");
    std::string pids;
    std::getline(in, pids);
    children += pids;
  }
  CHECK_MESSAGE(children.empty(), children);
}

TEST_CASE("A file seen written in place is read by the cycles after, until one commits") {
  Fleet fleet;
  fleet.interval = "1h";
  fleet.StartApplied("hello\n");
  REQUIRE(WaitFor([&] { return fleet.Status().value("state", "") == "synced"; }, 10s));
  auto drift_cycles = [&] {
    const auto metrics = fleet.Ctl({"metrics"});
    const std::string name = "tether_cycles_total{trigger=\"drift\"} ";
    const auto at = metrics.out.find(name);
    return at == std::string::npos ? 0 : std::stoi(metrics.out.substr(at + name.size()));
  };
  // Suspended, the repair of an edit in place only plans: nothing is committed.
  REQUIRE(fleet.Ctl({"suspend", "--reason", "maintenance"}).ok());
  const int before = drift_cycles();
  std::ofstream(fleet.dir.Path("root/etc/motd"), std::ios::app) << "a person's line\n";
  REQUIRE_MESSAGE(WaitFor([&] { return drift_cycles() > before; }, 10s), fleet.Log());
  REQUIRE(WaitFor([&] { return fleet.Status().value("state", "") != "applying"; }, 10s));
  CHECK(fleet.Status()["last_cycle"].value("outcome", "") == "dry run");
  CHECK(fleet.dir.ReadFile("root/etc/motd") == "hello\na person's line\n");
  // The fingerprint recorded is the edited file's stat, as when the edit came between a
  // repair's rename and its stat, in one tick of the file system's clock.
  auto root = tether::RootedFilesystem::Open(fleet.dir.Path("root"));
  REQUIRE(root);
  const auto stat = (*root)->Stat("/etc/motd");
  REQUIRE(stat);
  std::string inventory = fleet.dir.ReadFile("state/inventory.json");
  const std::string recorded =
      nlohmann::json::parse(inventory)["entries"]["file:/etc/motd"]["fingerprint"];
  REQUIRE(recorded.size() > tether::kStatMarkSize);
  inventory.replace(inventory.find(recorded), tether::kStatMarkSize, tether::StatMark(*stat));
  fleet.dir.WriteFile("state/inventory.json", inventory, 0600);
  std::filesystem::remove(fleet.dir.Path("state/inventory.delta"));
  // Resumed, the next cycle reads the file the watches saw written in place, whatever its
  // fingerprint says, and puts it back.
  REQUIRE(fleet.Ctl({"resume"}).ok());
  REQUIRE(fleet.Ctl({"sync", "--wait"}).exit_code == 0);
  CHECK_MESSAGE(WaitFor([&] { return fleet.dir.ReadFile("root/etc/motd") == "hello\n"; }, 10s),
                fleet.Log());
}

TEST_CASE("A hand edit made while a cycle runs, after the cycle wrote that file, is reverted") {
  Fleet fleet;
  fleet.interval = "1h";
  fleet.extra_args = {"--root-checks"};
  fleet.Commit("hello\n");
  fleet.Start();
  REQUIRE(WaitFor([&] { return fleet.Status().value("state", "") == "synced"; }, 30s));
  // The next commit's health check runs 3 s after its files are written: the edit lands
  // then, and the cycle's own writes must not hide it.
  fleet.Commit("second\n", "[[check]]\nname = \"slow\"\nexec = [\"/bin/sleep\", \"3\"]\n");
  int synced = -1;
  std::thread sync([&] { synced = fleet.Ctl({"sync", "--wait"}).exit_code; });
  const bool written =
      WaitFor([&] { return fleet.dir.ReadFile("root/etc/motd") == "second\n"; }, 20s);
  fleet.dir.WriteFile("root/etc/motd", "edited during the check\n");
  sync.join();
  REQUIRE_MESSAGE(written, fleet.Log());
  CHECK(synced == 0);
  CHECK_MESSAGE(WaitFor(
                    [&] {
                      auto status = fleet.Status();
                      return fleet.dir.ReadFile("root/etc/motd") == "second\n" &&
                             status["last_cycle"].value("trigger", "") == "drift";
                    },
                    20s),
                fleet.Log());
  fleet.tetherd.Signal(SIGTERM);
  REQUIRE(fleet.tetherd.Wait(40s));
}

TEST_CASE("A drift repair plans what was touched; the next full cycle plans the rest") {
  Fleet fleet;
  fleet.interval = "1h";
  fleet.Commit("hello\n",
               "[[file]]\npath = \"/etc/issue\"\ncontent = \"issue\\n\"\n"
               "[[file]]\npath = \"/etc/hosts\"\ncontent = \"hosts\\n\"\ndrift = \"report\"\n");
  fleet.Start();
  REQUIRE(WaitFor([&] { return fleet.Status().value("state", "") == "synced"; }, 30s));
  REQUIRE(fleet.dir.ReadFile("root/etc/issue") == "issue\n");
  // /etc/issue and /etc/hosts changed where no watch sees it: through hard links in
  // another directory.
  for (const std::string name : {"issue", "hosts"}) {
    const std::string link = fleet.dir.Path(name + "-link");
    REQUIRE(::link(fleet.dir.Path("root/etc/" + name).c_str(), link.c_str()) == 0);
    std::ofstream(link, std::ios::app) << "unseen\n";
  }
  // A hand edit of /etc/motd: its repair plans motd, counts issue as the last cycle left
  // it, and does not touch it; /etc/hosts, whose drift is reported, is looked at, and
  // reported as drifted.
  fleet.dir.WriteFile("root/etc/motd", "edited by hand\n");
  REQUIRE(WaitFor([&] { return fleet.dir.ReadFile("root/etc/motd") == "hello\n"; }, 20s));
  // Drifted, not synced: the drift of /etc/hosts is reported, not repaired.
  REQUIRE(WaitFor([&] { return fleet.Status().value("state", "") == "drifted"; }, 20s));
  auto status = fleet.Status();
  CHECK(status["last_cycle"]["trigger"] == "drift");
  const auto& summary = status["last_cycle"]["summary"];
  CHECK_MESSAGE(summary["changes"] == 1, status.dump());
  CHECK(summary["in_sync"] == 1);
  CHECK(summary["kinds"]["file"] == 3);
  bool hosts_drifted = false;
  for (const auto& resource : summary["resources"]) {
    if (resource["id"] == "file:/etc/hosts") hosts_drifted = resource["action"] == "drifted";
  }
  CHECK_MESSAGE(hosts_drifted, summary.dump());
  CHECK(fleet.dir.ReadFile("root/etc/issue") == "issue\nunseen\n");
  CHECK(fleet.dir.ReadFile("root/etc/hosts") == "hosts\nunseen\n");
  // A cycle asked for plans everything.
  CHECK(fleet.Ctl({"sync", "--wait"}).exit_code == 0);
  CHECK(fleet.dir.ReadFile("root/etc/issue") == "issue\n");
  fleet.tetherd.Signal(SIGTERM);
  REQUIRE(fleet.tetherd.Wait(40s));
}

TEST_CASE("A suspension is kept through a symlinked state dir; one unreadable stays suspended") {
  Fleet fleet;
  fleet.interval = "1h";
  std::filesystem::create_directories(fleet.dir.Path("state-real"));
  std::filesystem::create_directory_symlink(fleet.dir.Path("state-real"), fleet.dir.Path("state"));
  fleet.StartApplied("hello\n");
  const std::string reason(4096, 'r');  // the longest the control socket takes
  auto suspended = fleet.Ctl({"suspend", "--reason", reason});
  REQUIRE_MESSAGE(suspended.ok(), suspended.err);
  auto restart = [&] {
    fleet.tetherd.Signal(SIGTERM);
    REQUIRE(fleet.tetherd.Wait(20s));
    fleet.Start();
    REQUIRE(WaitFor([&] { return !fleet.Status().empty(); }, 30s));
  };
  restart();
  CHECK(WaitFor([&] { return fleet.Status().value("state", "") == "suspended"; }, 30s));
  auto status = fleet.Status();
  CHECK(status["suspended"]["reason"] == reason);

  // A suspension file that cannot be read (here a symlink, which is never followed):
  // still suspended, and said so; a new commit is not applied.
  std::filesystem::remove(fleet.dir.Path("state-real/suspended"));
  std::filesystem::create_symlink("/etc/hostname", fleet.dir.Path("state-real/suspended"));
  restart();
  CHECK(WaitFor([&] { return fleet.Status().value("state", "") == "suspended"; }, 30s));
  status = fleet.Status();
  CHECK(status["suspended"]["reason"].get<std::string>().find(
            "the suspension could not be read back") != std::string::npos);
  const std::string second = fleet.Commit("second\n");
  const auto planned = fleet.Ctl({"sync", "--wait"});
  CHECK(planned.out.find("dry run: 1 change planned, nothing changed") != std::string::npos);
  CHECK(fleet.dir.ReadFile("root/etc/motd") == "hello\n");

  // resume ends it, for good.
  const auto resumed = fleet.Ctl({"resume"});
  CHECK_MESSAGE(resumed.ok(), resumed.err);
  CHECK(WaitFor([&] { return fleet.Status().value("commit", "") == second; }, 30s));
  CHECK_FALSE(std::filesystem::is_symlink(fleet.dir.Path("state-real/suspended")));
  restart();
  CHECK(WaitFor([&] { return fleet.Status().value("state", "") == "synced"; }, 30s));
}

TEST_CASE("History, show, suspend, resume and metrics over the control socket") {
  Fleet fleet;
  fleet.interval = "1h";
  const std::string first = fleet.StartApplied("hello\n");

  // tetherctl plan: what the next cycle would do, changing nothing.
  const std::string pending = fleet.Commit("pending\n");
  const auto plan = fleet.Ctl({"plan"});
  CHECK_MESSAGE(plan.ok(), plan.err);
  CHECK(plan.out.find("-hello\n+pending\n") != std::string::npos);
  CHECK(plan.out.find("dry run: 1 change planned, nothing changed") != std::string::npos);
  CHECK(fleet.dir.ReadFile("root/etc/motd") == "hello\n");
  CHECK(fleet.Status()["state"] == "synced");

  // Suspended: cycles only plan; a new commit waits; the suspension survives a restart.
  auto suspended = fleet.Ctl({"suspend", "--reason", "maintenance window"});
  CHECK_MESSAGE(suspended.ok(), suspended.err);
  const std::string second = fleet.Commit("second\n");
  const auto planned = fleet.Ctl({"sync", "--wait"});
  CHECK(planned.exit_code == 0);
  CHECK(planned.out.find("dry run: 1 change planned, nothing changed") != std::string::npos);
  CHECK(fleet.dir.ReadFile("root/etc/motd") == "hello\n");
  (void)pending;
  auto status = fleet.Status();
  CHECK(status["state"] == "suspended");
  CHECK(status["suspended"]["reason"] == "maintenance window");
  fleet.tetherd.Signal(SIGTERM);
  REQUIRE(fleet.tetherd.Wait(20s));
  fleet.Start();
  REQUIRE(WaitFor([&] { return fleet.Status().value("state", "") == "suspended"; }, 30s));
  CHECK(fleet.dir.ReadFile("root/etc/motd") == "hello\n");

  // Resumed: applied at once.
  const auto resumed = fleet.Ctl({"resume"});
  CHECK_MESSAGE(resumed.ok(), (resumed.out + resumed.err + fleet.Log()));
  CHECK(WaitFor([&] { return fleet.Status().value("commit", "") == second; }, 30s));
  CHECK(fleet.dir.ReadFile("root/etc/motd") == "second\n");

  // Every apply is in the history, with its plan.
  const auto history = fleet.Ctl({"history", "--json"});
  REQUIRE(history.ok());
  const auto entries = nlohmann::json::parse(history.out)["entries"];
  REQUIRE(entries.size() == 2);
  CHECK(entries[0]["commit"] == first);
  CHECK(entries[0]["outcome"] == "applied");
  CHECK(entries[0]["signer"].get<std::string>().find("ops@example.com") == 0);
  CHECK(entries[1]["commit"] == second);
  CHECK(entries[1]["trigger"] == "manual");
  const auto human = fleet.Ctl({"history"});
  CHECK(human.out.find("ID    STARTED             TRIGGER COMMIT       CHANGES  OUTCOME") == 0);
  const auto shown = fleet.Ctl({"show", std::to_string(entries[1]["id"].get<int>())});
  CHECK(shown.ok());
  CHECK(shown.out.find("-hello\n+second\n") != std::string::npos);
  CHECK(fleet.Ctl({"show", "999"}).err.find("no apply 999 in the history") != std::string::npos);

  // tetherctl rollback: the first commit again, from the local history, with Git down;
  // pinned (kept across restarts) until resume.
  fleet.server.reset();
  const auto rolled = fleet.Ctl({"rollback", first.substr(0, 10)});
  CHECK_MESSAGE(rolled.ok(), rolled.err);
  CHECK(rolled.out == "pinned to " + first + " until tetherctl resume\n");
  CHECK(WaitFor([&] { return fleet.dir.ReadFile("root/etc/motd") == "hello\n"; }, 30s));
  CHECK(WaitFor([&] { return fleet.Status().value("commit", "") == first; }, 10s));
  CHECK(fleet.Ctl({"rollback", "0123abcd"}).err.find("no applied commit '0123abcd'") !=
        std::string::npos);
  fleet.server = std::make_unique<tether::testing::GitDaemonServer>(fleet.git_root.path());
  fleet.dir.WriteFile("agent.toml", fleet.Config());
  fleet.tetherd.Signal(SIGHUP);
  CHECK(fleet.Ctl({"sync", "--wait"}).ok());
  CHECK(fleet.dir.ReadFile("root/etc/motd") == "hello\n");  // still pinned
  CHECK(fleet.Status()["pinned"] == first);
  CHECK(fleet.Ctl({"resume"}).ok());
  CHECK_MESSAGE(WaitFor([&] { return fleet.Status().value("commit", "") == second; }, 30s),
                fleet.Log());
  CHECK(fleet.dir.ReadFile("root/etc/motd") == "second\n");

  // Metrics in Prometheus text format.
  const auto metrics = fleet.Ctl({"metrics"});
  REQUIRE(metrics.ok());
  CHECK(metrics.out.find("# TYPE tether_cycles_total counter\n") != std::string::npos);
  CHECK(metrics.out.find("tether_cycles_total{trigger=\"manual\"} ") != std::string::npos);
  CHECK(metrics.out.find("tether_cycle_outcomes_total{outcome=\"applied\"} ") != std::string::npos);
  CHECK(metrics.out.find("tether_suspended 0\n") != std::string::npos);
  CHECK(metrics.out.find("tether_last_success_timestamp_seconds ") != std::string::npos);
}

TEST_CASE("Socket activation: tetherd serves the socket systemd passes") {
  Fleet fleet;
  fleet.dir.WriteFile("agent.toml", fleet.Config());  // started here, not by Start()
  const std::string first = fleet.Commit("hello\n");
  // systemd-socket-activate listens like tetherd.socket and starts tetherd on the first
  // connection, passing the socket (LISTEN_FDS).
  fleet.StartActivated(fleet.dir.Path("unused.sock"));
  REQUIRE(WaitFor([&] { return std::filesystem::exists(fleet.socket); }, 10s));
  CHECK_MESSAGE(WaitFor([&] { return fleet.Status().value("commit", "") == first; }, 30s),
                fleet.Log());
  CHECK_FALSE(std::filesystem::exists(fleet.dir.Path("unused.sock")));
  fleet.tetherd.Signal(SIGTERM);
  CHECK(fleet.tetherd.Wait(20s));
}

TEST_CASE("Under socket activation, a stop leaves systemd's socket in place") {
  // The unit and the socket unit name the same path: tetherd must not remove the socket
  // systemd listens on, or tetherctl finds nothing after the next restart.
  Fleet fleet;
  fleet.dir.WriteFile("agent.toml", fleet.Config());
  fleet.Commit("hello\n");
  fleet.StartActivated(fleet.socket);
  REQUIRE(WaitFor([&] { return std::filesystem::exists(fleet.socket); }, 10s));
  REQUIRE_MESSAGE(WaitFor([&] { return fleet.Status().value("state", "") == "synced"; }, 30s),
                  fleet.Log());
  fleet.tetherd.Signal(SIGTERM);
  REQUIRE(fleet.tetherd.Wait(20s));
  CHECK_MESSAGE(std::filesystem::exists(fleet.socket), fleet.Log());
}

namespace {

using tether::testing::HttpsServer;
using tether::testing::RecordedRequest;
using tether::testing::ScriptedResponse;

nlohmann::json Body(const RecordedRequest& request) {
  return nlohmann::json::parse(request.body, nullptr, false);
}

// The reports received with `event`.
std::vector<nlohmann::json> Reports(const HttpsServer& server, const std::string& event) {
  std::vector<nlohmann::json> reports;
  for (const auto& request : server.requests()) {
    auto body = Body(request);
    if (body.is_object() && body.value("event", "") == event) reports.push_back(body);
  }
  return reports;
}

struct ReportEndpoint {
  TempDir pki{"daemon-pki"};
  tether::testing::TestCa ca{pki.path()};
  HttpsServer server{{ca.Issue("server", {"localhost"}), "", false}};

  std::string Config(const TempDir& dir) {
    dir.WriteFile("report-token", "s3cret-token\n");
    return "[report]\nurl = \"" + server.url("/v1/reports") + "\"\nca_file = \"" + ca.cert() +
           "\"\ntoken_file = \"" + dir.Path("report-token") + "\"\nheartbeat = \"1s\"\n";
  }
};

}  // namespace

TEST_CASE(
    "tetherd reports applies, drift, refusals and heartbeats; a slow endpoint delays nothing") {
  Fleet fleet;
  ReportEndpoint endpoint;
  fleet.extra_config = endpoint.Config(fleet.dir);
  fleet.interval = "1h";
  const std::string first = fleet.Commit("hello\n");
  fleet.Start();

  // The first apply.
  REQUIRE_MESSAGE(WaitFor([&] { return !Reports(endpoint.server, "apply").empty(); }, 30s),
                  fleet.Log());
  auto apply = Reports(endpoint.server, "apply").front();
  CHECK(apply["state"] == "applied");
  CHECK(apply["source"]["commit"] == first);
  CHECK(apply["source"]["signer"] == "ops@example.com");
  CHECK(apply["resources"].dump().find("file:/etc/motd") != std::string::npos);
  CHECK(apply["resources"].dump().find("hello") == std::string::npos);  // never contents
  const auto requests = endpoint.server.requests();
  REQUIRE_FALSE(requests.empty());
  CHECK(requests.front().Header("Authorization").value_or("") == "Bearer s3cret-token");
  CHECK(fleet.Log().find("s3cret-token") == std::string::npos);

  // A hand edit: reverted and reported as drift.
  REQUIRE(WaitFor([&] { return fleet.Status().value("state", "") == "synced"; }, 20s));
  fleet.dir.WriteFile("root/etc/motd", "hand edit\n");
  REQUIRE(WaitFor([&] { return !Reports(endpoint.server, "drift").empty(); }, 20s));
  CHECK(Reports(endpoint.server, "drift").front()["state"] == "reverted");
  CHECK(fleet.dir.ReadFile("root/etc/motd") == "hello\n");

  // An unsigned commit: refused, reported once however many polls see it.
  tether::testing::CommitFiles(fleet.repo, {{"motd", "unsigned\n"}});
  REQUIRE(fleet.Ctl({"sync", "--wait"}).exit_code == 1);
  REQUIRE(fleet.Ctl({"sync", "--wait"}).exit_code == 1);
  REQUIRE(WaitFor([&] { return !Reports(endpoint.server, "refused").empty(); }, 20s));
  CHECK(Reports(endpoint.server, "refused").size() == 1);
  // ... and recorded once in the history.
  const auto history = nlohmann::json::parse(fleet.Ctl({"history", "--json"}).out);
  std::size_t refusals = 0;
  for (const auto& entry : history["entries"]) refusals += entry["outcome"] == "refused" ? 1 : 0;
  CHECK(refusals == 1);
  CHECK(Reports(endpoint.server, "refused").front()["state"] == "refused");
  // The daemon says so too, while it goes on enforcing the last applied commit.
  CHECK(fleet.Status()["state"] == "refused");
  CHECK(fleet.Status()["commit"] == first);

  // Heartbeats, every second here.
  REQUIRE(WaitFor([&] { return Reports(endpoint.server, "heartbeat").size() >= 2; }, 20s));

  // The endpoint state in status.
  auto status = fleet.Status();
  REQUIRE(status["endpoint"].is_object());
  CHECK(status["endpoint"]["last_delivery"].is_number());

  // A hanging endpoint: an apply and the control socket go on regardless.
  endpoint.server.SetDefaultResponse(ScriptedResponse::Hang());
  fleet.Commit("third\n");
  const auto before = std::chrono::steady_clock::now();
  auto synced = fleet.Ctl({"sync", "--wait"});
  CHECK(synced.exit_code == 0);
  CHECK(fleet.dir.ReadFile("root/etc/motd") == "third\n");
  const auto ask = std::chrono::steady_clock::now();
  CHECK(fleet.Ctl({"status"}).exit_code == 0);
  CHECK(std::chrono::steady_clock::now() - ask < 2s);
  CHECK(std::chrono::steady_clock::now() - before < 10s);

  // Every report delivered is valid against docs/report-schema.json.
  std::vector<nlohmann::json> bodies;
  for (const auto& request : endpoint.server.requests()) bodies.push_back(Body(request));
  const std::string problems = tether::testing::ReportSchemaProblems(bodies);
  CHECK_MESSAGE(problems.empty(), problems);

  // The stop does not wait for the hanging attempt (15 s, its own deadline): it is cut
  // short, and its report stays queued.
  const auto stopping = std::chrono::steady_clock::now();
  fleet.tetherd.Signal(SIGTERM);
  auto stopped = fleet.tetherd.Wait(40s);
  REQUIRE(stopped);
  CHECK(WIFEXITED(*stopped));
  CHECK(std::chrono::steady_clock::now() - stopping < 8s);
}

TEST_CASE("reports queued when tetherd is killed with SIGKILL are delivered after a restart") {
  Fleet fleet;
  ReportEndpoint endpoint;
  fleet.extra_config = endpoint.Config(fleet.dir);
  fleet.interval = "1h";
  // The endpoint is down (503) while tetherd applies and changes its mind.
  endpoint.server.SetDefaultResponse(ScriptedResponse::Respond(503, "down"));
  const std::string one = fleet.Commit("one\n");
  fleet.Start();
  REQUIRE(WaitFor([&] { return fleet.Status().value("state", "") == "synced"; }, 30s));
  const std::string two = fleet.Commit("two\n");
  REQUIRE(fleet.Ctl({"sync", "--wait"}).exit_code == 0);
  nlohmann::json status;
  REQUIRE_MESSAGE(WaitFor(
                      [&] {
                        status = fleet.Status();
                        return status["endpoint"].is_object() &&
                               status["endpoint"].value("queued", 0) >= 2 &&
                               status["endpoint"]["last_error"].is_string();
                      },
                      20s),
                  (status.dump() + fleet.Log()));
  CHECK(status["endpoint"]["last_error"].get<std::string>().find("503") != std::string::npos);
  fleet.tetherd.Signal(SIGKILL);
  REQUIRE(fleet.tetherd.Wait(10s));

  // Up again, and tetherd restarted: the queued reports arrive, in order, each once.
  endpoint.server.SetDefaultResponse(ScriptedResponse::Respond(200));
  const std::size_t before = endpoint.server.request_count();
  fleet.Start();
  auto applies_since_restart = [&] {
    std::size_t count = 0;
    const auto requests = endpoint.server.requests();
    for (std::size_t i = before; i < requests.size(); ++i) {
      if (Body(requests[i]).value("event", "") == "apply") ++count;
    }
    return count;
  };
  REQUIRE_MESSAGE(WaitFor([&] { return applies_since_restart() >= 2; }, 30s), fleet.Log());
  std::vector<std::string> delivered;  // ids of the apply reports after the restart
  std::vector<std::string> commits;
  const auto requests = endpoint.server.requests();
  for (std::size_t i = before; i < requests.size(); ++i) {
    auto body = Body(requests[i]);
    if (body.value("event", "") != "apply") continue;
    delivered.push_back(body.value("id", ""));
    commits.push_back(body["source"]["commit"].get<std::string>());
  }
  // In order, each once.
  std::string seen;
  for (const auto& commit : commits) seen += commit.substr(0, 8) + " ";
  CHECK_MESSAGE((commits == std::vector<std::string>{one, two}),
                (seen + "; expected " + one.substr(0, 8) + " " + two.substr(0, 8)));
  std::set<std::string> unique(delivered.begin(), delivered.end());
  CHECK(unique.size() == delivered.size());
  fleet.tetherd.Signal(SIGTERM);
  REQUIRE(fleet.tetherd.Wait(40s));
}

TEST_CASE("Python's http.server as the endpoint: an outage, a SIGKILL, a restart, no report lost") {
  Fleet fleet;
  TempDir pki("daemon-pki");
  tether::testing::TestCa ca(pki.path());
  const auto certificate = ca.Issue("server", {"localhost"});
  // The receiver's port, chosen now; the receiver starts only after the outage.
  const int port = tether::testing::PickFreePort();
  fleet.extra_config = "[report]\nurl = \"" + tether::testing::PythonReceiver::UrlFor(port) +
                       "\"\nca_file = \"" + ca.cert() + "\"\nheartbeat = \"1s\"\n";
  fleet.interval = "1h";
  const std::string one = fleet.Commit("one\n");
  fleet.Start();
  REQUIRE(WaitFor([&] { return fleet.Status().value("state", "") == "synced"; }, 30s));
  const std::string two = fleet.Commit("two\n");
  REQUIRE(fleet.Ctl({"sync", "--wait"}).exit_code == 0);
  // Down: nothing listens. Applies and heartbeats wait in the outbox.
  nlohmann::json status;
  REQUIRE_MESSAGE(WaitFor(
                      [&] {
                        status = fleet.Status();
                        return status["endpoint"].is_object() &&
                               status["endpoint"].value("queued", 0) >= 4;
                      },
                      20s),
                  (status.dump() + fleet.Log()));
  fleet.tetherd.Signal(SIGKILL);
  REQUIRE(fleet.tetherd.Wait(10s));
  // What the outbox held at the kill: every one of these must arrive.
  std::vector<std::string> queued;
  for (const auto& entry : std::filesystem::directory_iterator(fleet.dir.Path("state/outbox"))) {
    if (entry.path().extension() != ".json" || entry.path().filename() == "dropped.json") continue;
    std::ifstream file(entry.path());
    queued.push_back(nlohmann::json::parse(file).value("id", ""));
  }
  REQUIRE(queued.size() >= 4);

  // Restarted, and the receiver up: everything queued arrives, the applies in order.
  fleet.Start();
  tether::testing::ReceiverOptions options;
  options.port = [port] { return port; };
  tether::testing::PythonReceiver receiver(certificate, options);
  auto received_ids = [&] {
    std::multiset<std::string> ids;
    for (const auto& report : receiver.Received()) ids.insert(report.value("id", ""));
    return ids;
  };
  REQUIRE_MESSAGE(WaitFor(
                      [&] {
                        const auto ids = received_ids();
                        for (const auto& id : queued) {
                          if (ids.count(id) == 0) return false;
                        }
                        return true;
                      },
                      30s),
                  fleet.Log());
  const auto ids = received_ids();
  for (const auto& id : ids) CHECK_MESSAGE(ids.count(id) == 1, id);  // no copy: no crash mid-send
  std::vector<std::string> created;
  for (const auto& report : receiver.Received()) created.push_back(report.value("created_at", ""));
  CHECK(std::is_sorted(created.begin(), created.end()));  // in order
  fleet.tetherd.Signal(SIGTERM);
  REQUIRE(fleet.tetherd.Wait(40s));
}

TEST_CASE("tetherctl events streams what tetherd does; status summarises the resources") {
  Fleet fleet;
  fleet.interval = "1h";
  const std::string first = fleet.Commit("hello\n");
  fleet.Start();
  REQUIRE(WaitFor([&] { return fleet.Status().value("state", "") == "synced"; }, 30s));

  // A subscriber, as a person would run it.
  tether::SpawnOptions events;
  events.argv = {std::getenv("TETHERCTL"), "--socket", fleet.socket, "events", "--json"};
  events.stdout_path = fleet.dir.Path("events.jsonl");
  auto subscriber = tether::Spawn(events);
  REQUIRE(subscriber);
  auto lines = [&] {
    std::vector<nlohmann::json> parsed;
    std::istringstream text(fleet.dir.ReadFile("events.jsonl"));
    for (std::string line; std::getline(text, line);) {
      parsed.push_back(nlohmann::json::parse(line, nullptr, false));
    }
    return parsed;
  };
  auto seen = [&](const std::string& name) {
    for (const auto& event : lines()) {
      if (event.is_object() && event.value("event", "") == name) return true;
    }
    return false;
  };
  // Subscribed once the daemon answers a sync with events.
  REQUIRE(WaitFor(
      [&] {
        (void)fleet.Ctl({"sync"});
        return seen("cycle-started");
      },
      20s));
  REQUIRE(WaitFor([&] { return seen("cycle-finished"); }, 20s));
  // No cycle running (an edit during one is repaired by it when it comes before its plan,
  // and is then no drift).
  auto last_cycle_event = [&] {
    std::string last;
    for (const auto& event : lines()) {
      const std::string name = event.is_object() ? event.value("event", "") : "";
      if (name == "cycle-started" || name == "cycle-finished") last = name;
    }
    return last;
  };
  REQUIRE(WaitFor(
      [&] {
        return fleet.Status().value("state", "") == "synced" &&
               last_cycle_event() == "cycle-finished";
      },
      20s));

  // A hand edit: drift detected, then the repair, named.
  fleet.dir.WriteFile("root/etc/motd", "hand edit\n");
  REQUIRE(WaitFor([&] { return seen("drift-detected"); }, 20s));
  REQUIRE(WaitFor(
      [&] {
        for (const auto& event : lines()) {
          if (event.value("event", "") == "cycle-finished" &&
              event["resources"].dump().find("file:/etc/motd") != std::string::npos) {
            return true;
          }
        }
        return false;
      },
      20s));
  CHECK(fleet.Ctl({"suspend", "--reason", "maintenance"}).exit_code == 0);
  REQUIRE(WaitFor([&] { return seen("suspended"); }, 10s));
  CHECK(fleet.Ctl({"resume"}).exit_code == 0);
  REQUIRE(WaitFor([&] { return seen("resumed"); }, 10s));

  // Status: the last cycle's resources, per kind and state.
  REQUIRE(WaitFor([&] { return fleet.Status().value("state", "") == "synced"; }, 20s));
  auto status = fleet.Status();
  const auto& summary = status["last_cycle"]["summary"];
  REQUIRE(summary.is_object());
  CHECK(summary["kinds"]["file"] == 1);
  CHECK(summary["in_sync"] == 1);
  auto human = fleet.Ctl({"status"});
  CHECK(human.out.find("resources  1 (1 file): 1 in sync") != std::string::npos);
  CHECK(human.out.find("\033[") == std::string::npos);  // no colour off a terminal

  // The subscriber's stream ends when tetherd stops, with success.
  fleet.tetherd.Signal(SIGTERM);
  REQUIRE(fleet.tetherd.Wait(40s));
  auto ended = subscriber->Wait(10s);
  REQUIRE(ended);
  CHECK(WIFEXITED(*ended));
  CHECK(WEXITSTATUS(*ended) == 0);
  CHECK(seen("stopping"));
}

TEST_CASE("a hand edit made while a repair is still running is reverted too") {
  Fleet fleet;
  fleet.interval = "1h";  // no poll comes to the rescue
  fleet.extra_args = {"--root-checks"};
  // A check that takes 2 s: each apply that changes something runs it after its writes.
  fleet.Commit("hello\n", "[[check]]\nname = \"slow\"\nexec = [\"/bin/sleep\", \"2\"]\n");
  fleet.Start();
  REQUIRE(WaitFor([&] { return fleet.Status().value("state", "") == "synced"; }, 30s));

  fleet.dir.WriteFile("root/etc/motd", "first edit\n");
  // The repair has written the file back and is now waiting for its check ...
  REQUIRE(WaitFor([&] { return fleet.dir.ReadFile("root/etc/motd") == "hello\n"; }, 20s));
  CHECK(fleet.Status().value("state", "") == "applying");
  // ... when a second edit comes.
  fleet.dir.WriteFile("root/etc/motd", "second edit\n");
  REQUIRE(WaitFor([&] { return fleet.Status().value("state", "") == "synced"; }, 20s));
  CHECK(WaitFor([&] { return fleet.dir.ReadFile("root/etc/motd") == "hello\n"; }, 20s));
  fleet.tetherd.Signal(SIGTERM);
  REQUIRE(fleet.tetherd.Wait(40s));
}

// The daemon's children that run (or wait to run) a cycle.
std::size_t CycleChildren(pid_t daemon) {
  std::size_t count = 0;
  for (const auto& entry : std::filesystem::directory_iterator("/proc")) {
    std::ifstream stat(entry.path() / "stat");
    std::string pid;
    std::string comm;
    std::string state;
    pid_t parent = 0;
    if (stat >> pid >> comm >> state >> parent && parent == daemon && comm == "(tetherd-cycle)") {
      ++count;
    }
  }
  return count;
}

TEST_CASE("a hand edit of another file during a repair gets its process at once; none idles") {
  Fleet fleet;
  fleet.interval = "1h";
  fleet.extra_args = {"--root-checks"};
  fleet.Commit("hello\n",
               "[[file]]\npath = \"/etc/issue\"\ncontent = \"issue\\n\"\n"
               "[[check]]\nname = \"slow\"\nexec = [\"/bin/sleep\", \"2\"]\n");
  fleet.Start();
  REQUIRE(WaitFor([&] { return fleet.Status().value("state", "") == "synced"; }, 30s));
  const pid_t daemon = fleet.tetherd.pid();
  CHECK(CycleChildren(daemon) == 0);

  fleet.dir.WriteFile("root/etc/motd", "first edit\n");
  REQUIRE(WaitFor([&] { return fleet.dir.ReadFile("root/etc/motd") == "hello\n"; }, 20s));
  REQUIRE(fleet.Status().value("state", "") == "applying");  // its check runs for 2 s
  CHECK(CycleChildren(daemon) == 1);
  // Not a file this repair writes: someone else's edit. The next repair's process is
  // started now, and waits for the repair under way to end.
  fleet.dir.WriteFile("root/etc/issue", "edited by hand\n");
  CHECK(WaitFor([&] { return CycleChildren(daemon) == 2; }, 5s));
  CHECK(fleet.Status().value("state", "") == "applying");
  REQUIRE(WaitFor([&] { return fleet.dir.ReadFile("root/etc/issue") == "issue\n"; }, 20s));
  REQUIRE(WaitFor([&] { return fleet.Status().value("state", "") == "synced"; }, 20s));
  // Idle: no process is left waiting, and none read its closed input as a job.
  CHECK(WaitFor([&] { return CycleChildren(daemon) == 0; }, 5s));
  CHECK(fleet.Log().find("--cycle-process:") == std::string::npos);
  fleet.tetherd.Signal(SIGTERM);
  REQUIRE(fleet.tetherd.Wait(40s));
}

TEST_CASE("a drift repair re-applies the applied commit, without asking the Git source") {
  Fleet fleet;
  fleet.interval = "1h";
  const std::string first = fleet.Commit("hello\n");
  fleet.Start();
  auto settled = [&](const std::string& state) {
    return WaitFor(
        [&] {
          auto status = fleet.Status();
          return status.value("state", "") == state &&
                 status["last_cycle"].value("trigger", "") == "drift";
        },
        20s);
  };
  REQUIRE(WaitFor([&] { return fleet.Status().value("state", "") == "synced"; }, 30s));

  // A commit is pushed, then a hand edit: the repair puts back the applied commit's
  // file; the pushed commit waits for a poll or a sync.
  fleet.Commit("pushed\n");
  fleet.dir.WriteFile("root/etc/motd", "hand edit\n");
  REQUIRE(WaitFor([&] { return fleet.dir.ReadFile("root/etc/motd") == "hello\n"; }, 20s));
  REQUIRE_MESSAGE(settled("synced"), fleet.Log());
  auto status = fleet.Status(true);
  CHECK(status["commit"] == first);
  CHECK(status["last_cycle"].value("output", "").find("drift repair: no fetch") !=
        std::string::npos);
  CHECK(status["last_cycle"]["report"].is_object());
  // Without --detail, the summary alone: no output, no report.
  const auto summary = fleet.Status();
  CHECK(summary["last_cycle"]["summary"].is_object());
  CHECK_FALSE(summary["last_cycle"].contains("output"));
  CHECK_FALSE(summary["last_cycle"].contains("report"));
  const auto human = fleet.Ctl({"status", "--detail"});
  CHECK(human.out.find("drift repair: no fetch") != std::string::npos);
  CHECK(fleet.dir.ReadFile("root/etc/motd") == "hello\n");

  // The Git server gone: a sync finds the host offline, and a repair leaves it so.
  fleet.server.reset();
  fleet.Ctl({"sync", "--wait"});
  REQUIRE(fleet.Status().value("state", "") == "offline");
  fleet.dir.WriteFile("root/etc/motd", "second edit\n");
  REQUIRE(WaitFor([&] { return fleet.dir.ReadFile("root/etc/motd") == "hello\n"; }, 20s));
  CHECK_MESSAGE(settled("offline"), fleet.Log());

  // The server back: the pushed commit comes with the next sync.
  fleet.server = std::make_unique<tether::testing::GitDaemonServer>(fleet.git_root.path());
  fleet.dir.WriteFile("agent.toml", fleet.Config());
  fleet.tetherd.Signal(SIGHUP);
  REQUIRE(WaitFor([&] { return fleet.Log().find("reloaded ") != std::string::npos; }, 10s));
  CHECK(fleet.Ctl({"sync", "--wait"}).exit_code == 0);
  CHECK(fleet.dir.ReadFile("root/etc/motd") == "pushed\n");
  // (A drift cycle may follow: the apply's own writes, confirmed.)
  CHECK(WaitFor([&] { return fleet.Status().value("state", "") == "synced"; }, 20s));
  fleet.tetherd.Signal(SIGTERM);
  REQUIRE(fleet.tetherd.Wait(40s));
}

TEST_CASE("polls go on while drift repairs keep coming") {
  Fleet fleet;
  fleet.interval = "2s";
  fleet.Commit("hello\n");
  fleet.Start();
  REQUIRE(WaitFor([&] { return fleet.Status().value("state", "") == "synced"; }, 30s));
  // A pushed commit, and a file edited by hand again each time it is put back: the
  // repairs (which do not fetch) must not push the poll that brings the commit away.
  const std::string pushed = fleet.Commit("pushed\n");
  std::size_t edits = 0;
  CHECK_MESSAGE(WaitFor(
                    [&] {
                      if (fleet.dir.ReadFile("root/etc/motd") != "hand edit\n") {
                        fleet.dir.WriteFile("root/etc/motd", "hand edit\n");
                        ++edits;
                      }
                      return fleet.Status().value("commit", "") == pushed;
                    },
                    20s),
                fleet.Log());
  CHECK(edits >= 2);
  CHECK(WaitFor([&] { return fleet.dir.ReadFile("root/etc/motd") == "pushed\n"; }, 20s));
  fleet.tetherd.Signal(SIGTERM);
  REQUIRE(fleet.tetherd.Wait(40s));
}

TEST_CASE("a rolled-back head stays the daemon's state through drift repairs") {
  Fleet fleet;
  fleet.interval = "1h";
  fleet.extra_args = {"--root-checks"};
  fleet.extra_config = "[apply]\nhealth_timeout = \"1s\"\n";
  const std::string first = fleet.Commit("hello\n");
  fleet.Start();
  REQUIRE(WaitFor([&] { return fleet.Status().value("state", "") == "synced"; }, 30s));

  // A head whose health check fails: applied, rolled back, quarantined.
  const std::string broken =
      fleet.Commit("broken\n", "[[check]]\nname = \"never\"\nexec = [\"/bin/false\"]\n");
  CHECK(fleet.Ctl({"sync", "--wait"}).exit_code == 1);
  CHECK(fleet.dir.ReadFile("root/etc/motd") == "hello\n");

  // A hand edit: the repair (and the one confirming the rollback's own writes) finds the
  // host in sync with the first commit, and the state still tells of the head.
  fleet.dir.WriteFile("root/etc/motd", "hand edit\n");
  REQUIRE(WaitFor([&] { return fleet.dir.ReadFile("root/etc/motd") == "hello\n"; }, 20s));
  REQUIRE_MESSAGE(WaitFor(
                      [&] {
                        auto status = fleet.Status();
                        return status["last_cycle"].value("trigger", "") == "drift" &&
                               status.value("state", "") != "applying";
                      },
                      20s),
                  fleet.Log());
  auto status = fleet.Status();
  CHECK(status["state"] == "rolled-back");
  CHECK(status["commit"] == first);
  CHECK(status["quarantined"] == broken);
  REQUIRE(status["state_error"].is_string());
  CHECK(status["state_error"].get<std::string>().find("never") != std::string::npos);
  CHECK(fleet.Ctl({"status"}).out.find("because") != std::string::npos);
  fleet.tetherd.Signal(SIGTERM);
  REQUIRE(fleet.tetherd.Wait(40s));
}

TEST_CASE("sync --wait waits for a cycle longer than the request deadline (10 s)") {
  Fleet fleet;
  fleet.interval = "1h";
  fleet.extra_args = {"--root-checks"};
  fleet.Commit("hello\n");
  fleet.Start();
  REQUIRE(WaitFor([&] { return fleet.Status().value("state", "") == "synced"; }, 30s));
  // An apply whose health check takes 11 s.
  fleet.Commit("slow\n",
               "[[check]]\nname = \"slow\"\nexec = [\"/bin/sleep\", \"11\"]\ntimeout = \"20s\"\n");
  const auto synced = fleet.Ctl({"sync", "--wait"});
  CHECK_MESSAGE(synced.exit_code == 0, synced.err);
  CHECK(synced.out.find("-hello\n+slow\n") != std::string::npos);
  CHECK(fleet.dir.ReadFile("root/etc/motd") == "slow\n");
  fleet.tetherd.Signal(SIGTERM);
  REQUIRE(fleet.tetherd.Wait(40s));
}

TEST_CASE("sync --wait answers with the cycle it started, not one already running") {
  Fleet fleet;
  fleet.interval = "1h";
  fleet.extra_args = {"--root-checks"};
  const std::string slow = "[[check]]\nname = \"slow\"\nexec = [\"/bin/sleep\", \"4\"]\n";
  fleet.Commit("hello\n", slow);
  fleet.Start();
  REQUIRE(WaitFor([&] { return fleet.Status().value("state", "") == "synced"; }, 30s));

  // A repair is running (it waits 4 s for its check) when a new commit is pushed and a
  // sync asked for.
  fleet.dir.WriteFile("root/etc/motd", "hand edit\n");
  REQUIRE(WaitFor([&] { return fleet.dir.ReadFile("root/etc/motd") == "hello\n"; }, 20s));
  REQUIRE(fleet.Status().value("state", "") == "applying");
  const std::string pushed = fleet.Commit("pushed\n", slow);
  auto synced = fleet.Ctl({"sync", "--wait", "--json"});
  CHECK(synced.exit_code == 0);
  // The answer is the manual cycle's, which applied the pushed commit.
  const auto reply = nlohmann::json::parse(synced.out);
  CHECK(reply["cycle"]["trigger"] == "manual");
  CHECK(reply["cycle"]["summary"]["commit"] == pushed);
  CHECK(reply["cycle"]["output"].get<std::string>().find("-hello\n+pushed\n") != std::string::npos);
  CHECK(fleet.dir.ReadFile("root/etc/motd") == "pushed\n");
  fleet.tetherd.Signal(SIGTERM);
  REQUIRE(fleet.tetherd.Wait(40s));
}

namespace {

// The content of the file at `path`, or "" when it cannot be read (not there yet).
std::string ContentOf(const std::string& path) {
  std::ifstream file(path, std::ios::binary);
  std::ostringstream text;
  text << file.rdbuf();
  return text.str();
}

// tests/agent/http_clients.py ARGS... with Debian's python3 (python3-prometheus-client).
tether::RunResult HttpClients(std::vector<std::string> args) {
  tether::RunOptions options;
  options.argv = {"/usr/bin/python3", std::getenv("TETHER_HTTP_CLIENTS")};
  options.argv.insert(options.argv.end(), args.begin(), args.end());
  options.timeout = 120s;
  auto result = tether::Run(options);
  REQUIRE(result);
  return *result;
}

// The value of the sample `name` (with its labels, as printed) in `tetherctl metrics`.
double Metric(const Fleet& fleet, const std::string& sample) {
  const std::string text = fleet.Ctl({"metrics"}).out;
  const auto at = text.find("\n" + sample + " ");
  return at == std::string::npos ? -1 : std::stod(text.substr(at + sample.size() + 2));
}

struct WebhookFleet : Fleet {
  int webhook_port = tether::testing::PickFreePort();
  int metrics_port = tether::testing::PickFreePort();
  std::string hook = "http://127.0.0.1:" + std::to_string(webhook_port) + "/hook";
  std::string secret = "s3cret-for-the-hook";

  WebhookFleet() {
    interval = "1h";  // no poll during the test: only a webhook brings a new commit
    dir.WriteFile("webhook-secret", secret + "\n");
    extra_config = "[webhook]\nlisten = \"127.0.0.1:" + std::to_string(webhook_port) +
                   "\"\nsecret_file = \"" + dir.Path("webhook-secret") +
                   "\"\n[metrics]\nlisten = \"127.0.0.1:" + std::to_string(metrics_port) + "\"\n";
  }

  std::string Send(const std::string& form, bool wrong = false,
                   const std::string& ref = "refs/heads/main") {
    std::vector<std::string> args = {"send", form, hook, secret, ref};
    if (wrong) args.emplace_back("--wrong");
    const auto sent = HttpClients(args);
    REQUIRE_MESSAGE(sent.ok(), sent.err);
    std::string status = sent.out;
    while (!status.empty() && status.back() == '\n') status.pop_back();
    return status;
  }

  bool Applied(const std::string& motd) const {
    return WaitFor([&] { return ContentOf(dir.Path("root/etc/motd")) == motd; }, 20s);
  }
};

}  // namespace

TEST_CASE("A push webhook from each forge's format wakes the poll; curl and Python send them") {
  WebhookFleet fleet;
  fleet.Commit("hello\n");
  fleet.Start();
  REQUIRE_MESSAGE(fleet.Applied("hello\n"), fleet.Log());
  REQUIRE(WaitFor([&] { return fleet.Status().value("state", "") == "synced"; }, 20s));

  // GitHub's form, sent by curl; the signature from openssl, as a forge computes it.
  fleet.Commit("from github\n");
  const std::string body = R"({"ref":"refs/heads/main","after":"0000"})";
  fleet.dir.WriteFile("push.json", body);
  tether::RunOptions sign;
  sign.argv = {"sh", "-c",         "openssl dgst -sha256 -hmac \"$1\" < \"$2\" | sed 's/.*= //'",
               "sh", fleet.secret, fleet.dir.Path("push.json")};
  const auto signature = tether::Run(sign);
  REQUIRE((signature && signature->ok()));
  std::string digest = signature->out;
  while (!digest.empty() && digest.back() == '\n') digest.pop_back();
  REQUIRE(digest.size() == 64);
  tether::RunOptions curl;
  curl.argv = {"curl",
               "-sS",
               "-o",
               "/dev/null",
               "-w",
               "%{http_code}",
               "-H",
               "Content-Type: application/json",
               "-H",
               "X-GitHub-Event: push",
               "-H",
               "X-Hub-Signature-256: sha256=" + digest,
               "--data-binary",
               "@" + fleet.dir.Path("push.json"),
               fleet.hook};
  curl.timeout = 30s;
  auto sent = tether::Run(curl);
  REQUIRE(sent);
  CHECK_MESSAGE(sent->out == "202", sent->out << sent->err);
  CHECK_MESSAGE(fleet.Applied("from github\n"), fleet.Log());
  CHECK(
      WaitFor([&] { return fleet.Status()["last_cycle"].value("trigger", "") == "webhook"; }, 10s));

  // The other forms, sent by Python's urllib with Python's hmac.
  for (const std::string form : {"gitlab", "gitea", "forgejo", "tether"}) {
    CAPTURE(form);
    REQUIRE(WaitFor([&] { return fleet.Status().value("state", "") == "synced"; }, 20s));
    fleet.Commit("from " + form + "\n");
    CHECK(fleet.Send(form) == "202");
    CHECK_MESSAGE(fleet.Applied("from " + form + "\n"), fleet.Log());
  }
  CHECK(Metric(fleet, "tether_webhook_requests_total{result=\"trigger\"}") == 5);
  const double cycles = Metric(fleet, "tether_cycles_total{trigger=\"webhook\"}");
  CHECK(cycles >= 1);
  CHECK(cycles <= 5);  // triggers close together make one cycle

  // Wrong secrets, a push to another branch, a GET: nothing applied, each counted.
  REQUIRE(WaitFor([&] { return fleet.Status().value("state", "") == "synced"; }, 20s));
  fleet.Commit("not yet\n");
  for (const std::string form : {"github", "gitlab", "gitea", "tether"}) {
    CHECK(fleet.Send(form, true) == "401");
  }
  CHECK(fleet.Send("github", false, "refs/heads/feature") == "200");
  curl.argv = {"curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}", fleet.hook};
  sent = tether::Run(curl);
  REQUIRE(sent);
  CHECK(sent->out == "405");
  std::this_thread::sleep_for(2s);
  CHECK(fleet.dir.ReadFile("root/etc/motd") == "from tether\n");
  CHECK(Metric(fleet, "tether_webhook_requests_total{result=\"unauthorized\"}") == 4);
  CHECK(Metric(fleet, "tether_webhook_requests_total{result=\"ignored\"}") == 1);
  CHECK(Metric(fleet, "tether_webhook_requests_total{result=\"bad_method\"}") == 1);
  // The secret is never logged.
  CHECK(fleet.Log().find(fleet.secret) == std::string::npos);
  // The right secret still works.
  CHECK(fleet.Send("github") == "202");
  CHECK_MESSAGE(fleet.Applied("not yet\n"), fleet.Log());

  // A burst of 30 webhooks at once (a forge replaying its queue, a script in a loop):
  // every one accepted, a couple of cycles run.
  REQUIRE(WaitFor([&] { return fleet.Status().value("state", "") == "synced"; }, 20s));
  const double before_burst = Metric(fleet, "tether_cycles_total{trigger=\"webhook\"}");
  fleet.Commit("after the burst\n");
  const auto burst =
      HttpClients({"burst", "30", "github", fleet.hook, fleet.secret, "refs/heads/main"});
  REQUIRE_MESSAGE(burst.ok(), burst.err);
  CHECK(burst.out == [] {
    std::string all;
    for (int i = 0; i < 30; ++i) all += "202\n";
    return all;
  }());
  CHECK_MESSAGE(fleet.Applied("after the burst\n"), fleet.Log());
  std::this_thread::sleep_for(1s);
  REQUIRE(WaitFor([&] { return fleet.Status().value("state", "") == "synced"; }, 20s));
  const double burst_cycles =
      Metric(fleet, "tether_cycles_total{trigger=\"webhook\"}") - before_burst;
  CHECK(burst_cycles >= 1);
  CHECK_MESSAGE(burst_cycles <= 3, burst_cycles);

  // /metrics, parsed by the Prometheus client library's own parser.
  const auto scraped = HttpClients(
      {"metrics", "http://127.0.0.1:" + std::to_string(fleet.metrics_port) + "/metrics"});
  REQUIRE_MESSAGE(scraped.ok(), scraped.err);
  const auto families = nlohmann::json::parse(scraped.out, nullptr, false);
  REQUIRE_MESSAGE(families.is_object(), scraped.out);
  CHECK(families["content_type"] == "text/plain; version=0.0.4; charset=utf-8");
  CHECK(families["families"]["tether_cycles"]["type"] == "counter");
  CHECK(families["families"]["tether_webhook_requests"]["type"] == "counter");
  CHECK(families["families"]["tether_last_success_timestamp_seconds"]["type"] == "gauge");
  CHECK(families["families"]["tether_http_refused"]["type"] == "counter");

  // A new secret, and SIGHUP: the old one is refused from then on.
  const std::string rotated = "a-rotated-secret";
  fleet.dir.WriteFile("webhook-secret", rotated + "\n");
  fleet.tetherd.Signal(SIGHUP);
  REQUIRE(WaitFor([&] { return fleet.Log().find("reloaded ") != std::string::npos; }, 10s));
  CHECK(fleet.Send("github") == "401");  // signed with the old secret
  fleet.secret = rotated;
  CHECK(fleet.Send("github") == "202");
  fleet.tetherd.Signal(SIGTERM);
  CHECK(fleet.tetherd.Wait(20s));
}

TEST_CASE("Hostile HTTP on the webhook and metrics ports: refused, bounded, the daemon unmoved") {
  WebhookFleet fleet;
  fleet.Commit("hello\n");
  fleet.Start();
  REQUIRE_MESSAGE(fleet.Applied("hello\n"), fleet.Log());
  REQUIRE(WaitFor([&] { return fleet.Status().value("state", "") == "synced"; }, 20s));
  const auto rss = [&] { return DaemonRss(fleet); };
  const long rss_before = rss();

  for (const int port : {fleet.webhook_port, fleet.metrics_port}) {
    CAPTURE(port);
    const auto run = HttpClients({"hostile", "127.0.0.1", std::to_string(port)});
    REQUIRE_MESSAGE(run.ok(), run.err << fleet.Log());
    const auto results = nlohmann::json::parse(run.out, nullptr, false);
    REQUIRE_MESSAGE(results.is_object(), run.out);
    INFO(results.dump());
    for (const auto& garbage : results["garbage"]) {
      CHECK((garbage == 400 || garbage == "closed"));
    }
    CHECK(results["not_http"] == 400);
    CHECK(results["bad_version"] == 400);
    CHECK(results["huge_header"] == 431);
    CHECK(results["huge_body"] == 413);
    CHECK(results["bad_length"] == 400);
    CHECK(results["bad_chunk"] == 400);
    CHECK(results["held_connections"] == 100);  // the kernel takes them; tetherd closes extras
    CHECK(results["pipelined_replies"] == 51);
    CHECK(results["slow"] == "closed");
    CHECK(results["slow_cut_after_s"] <= 12);  // the 10 s request limit
  }
  // The connection limits, seen from several callers: 8 per address; a newcomer takes the
  // place of a connection idle between requests, and is turned away when all are busy.
  const auto limited = HttpClients({"limits", "127.0.0.1", std::to_string(fleet.metrics_port)});
  REQUIRE_MESSAGE(limited.ok(), limited.err << fleet.Log());
  const auto limits = nlohmann::json::parse(limited.out, nullptr, false);
  REQUIRE_MESSAGE(limits.is_object(), limited.out);
  CHECK_MESSAGE(limits["per_peer_open"] == 8, limits.dump());
  CHECK_MESSAGE(limits["idle_served"] == 32, limits.dump());
  CHECK_MESSAGE(limits["full_of_idle"] == 200, limits.dump());
  CHECK_MESSAGE(limits["full_of_busy"] == "closed", limits.dump());

  // Still the same process; a hand edit is still reverted; a webhook still works.
  CHECK(kill(fleet.tetherd.pid(), 0) == 0);
  fleet.dir.WriteFile("root/etc/motd", "edited by hand\n");
  CHECK_MESSAGE(fleet.Applied("hello\n"), fleet.Log());
  REQUIRE(WaitFor([&] { return fleet.Status().value("state", "") == "synced"; }, 20s));
  fleet.Commit("after the storm\n");
  CHECK(fleet.Send("github") == "202");
  CHECK_MESSAGE(fleet.Applied("after the storm\n"), fleet.Log());
  CHECK(Metric(fleet, "tether_http_refused_total{listener=\"webhook\",reason=\"connections\"}") >
        0);
  CHECK(Metric(fleet, "tether_http_refused_total{listener=\"webhook\",reason=\"bad_request\"}") >=
        25);
  CHECK(Metric(fleet, "tether_http_refused_total{listener=\"metrics\",reason=\"timeout\"}") >= 1);
  // Nothing it was sent stayed in its memory.
  CHECK_MESSAGE(rss() < rss_before + 4096, "VmRSS " << rss_before << " kB -> " << rss() << " kB");
  fleet.tetherd.Signal(SIGTERM);
  CHECK(fleet.tetherd.Wait(20s));
}

TEST_CASE("Socket activation passes the webhook socket by name beside the control socket") {
  WebhookFleet fleet;
  fleet.extra_config = "[webhook]\nsecret_file = \"" + fleet.dir.Path("webhook-secret") + "\"\n";
  fleet.dir.WriteFile("agent.toml", fleet.Config());  // no webhook.listen: the socket is passed
  fleet.Commit("hello\n");
  // As tetherd.socket and tetherd-webhook.socket (FileDescriptorName=webhook) would.
  tether::SpawnOptions options;
  options.argv = {"systemd-socket-activate",
                  "-l",
                  fleet.socket,
                  "-l",
                  "127.0.0.1:" + std::to_string(fleet.webhook_port),
                  "--fdname=control:webhook",
                  "-E",
                  "NOTIFY_SOCKET=" + fleet.notify.path()};
  const auto argv = fleet.TetherdArgv(fleet.dir.Path("unused.sock"));
  options.argv.insert(options.argv.end(), argv.begin(), argv.end());
  options.stderr_path = fleet.dir.Path("tetherd.log");
  auto activator = tether::Spawn(options);
  REQUIRE(activator);
  fleet.tetherd = std::move(*activator);
  REQUIRE(WaitFor([&] { return std::filesystem::exists(fleet.socket); }, 10s));
  // The first connection starts tetherd.
  REQUIRE_MESSAGE(WaitFor([&] { return fleet.Status().value("state", "") == "synced"; }, 30s),
                  fleet.Log());
  REQUIRE(fleet.Applied("hello\n"));
  fleet.Commit("pushed\n");
  CHECK(fleet.Send("gitea") == "202");
  CHECK_MESSAGE(fleet.Applied("pushed\n"), fleet.Log());
  CHECK(fleet.Log().find("webhook listener on the socket systemd passed") != std::string::npos);
  fleet.tetherd.Signal(SIGTERM);
  CHECK(fleet.tetherd.Wait(20s));
}

TEST_CASE("source.poll_url: a static info/refs answers 304 and no Git is talked; changes apply") {
  Fleet fleet;  // polls every second
  tether::testing::StaticHttpServer web(fleet.git_root.path());
  // What a post-receive hook does for dumb HTTP: info/refs made current.
  auto announce = [&] {
    tether::RunOptions options;
    options.argv = {"git", "--git-dir", fleet.repo, "update-server-info"};
    auto ran = tether::Run(options);
    REQUIRE((ran && ran->ok()));
  };
  fleet.extra_source = "poll_url = \"" + web.url("fleet.git/info/refs") + "\"\n";
  fleet.Commit("hello\n");
  announce();
  fleet.Start();
  auto motd_is = [&](const std::string& motd) {
    return ContentOf(fleet.dir.Path("root/etc/motd")) == motd;
  };
  REQUIRE_MESSAGE(WaitFor([&] { return motd_is("hello\n"); }, 30s), fleet.Log());

  // Polls go on, answered 304 by the web server: no cycle after the first that followed the
  // signal.
  const std::string unchanged = "tether_change_signal_checks_total{result=\"unchanged\"}";
  REQUIRE_MESSAGE(WaitFor([&] { return Metric(fleet, unchanged) >= 2; }, 20s), fleet.Log());
  const double poll_cycles = Metric(fleet, "tether_cycles_total{trigger=\"poll\"}");
  const double checks = Metric(fleet, unchanged);
  std::this_thread::sleep_for(3s);
  CHECK(Metric(fleet, unchanged) >= checks + 2);
  CHECK(Metric(fleet, "tether_cycles_total{trigger=\"poll\"}") == poll_cycles);
  const std::string accesses = ContentOf(web.access_log());
  CHECK_MESSAGE(accesses.find("GET /fleet.git/info/refs 304") != std::string::npos, accesses);
  // Over http://, the checks share a kept-alive connection: fewer connections than checks.
  std::set<std::string> connections;
  std::size_t requests = 0;
  std::istringstream lines(accesses);
  for (std::string line; std::getline(lines, line); ++requests) {
    connections.insert(line.substr(line.rfind(' ') + 1));
  }
  CHECK_MESSAGE(connections.size() * 2 <= requests, accesses);

  // A commit the signal does not announce is not fetched: proof that no Git is talked.
  fleet.Commit("second\n");
  std::this_thread::sleep_for(3s);
  CHECK(motd_is("hello\n"));
  // Announced, it is applied at the next poll.
  announce();
  CHECK_MESSAGE(WaitFor([&] { return motd_is("second\n"); }, 20s), fleet.Log());
  CHECK(Metric(fleet, "tether_change_signal_checks_total{result=\"changed\"}") >= 2);

  // The Git server unreachable when the signal announces a change: the cycle after it
  // enforces the applied commit (offline, and exits 0) and must not count as having
  // seen the change, or the signal's next 304 would hide it.
  const int git_port = fleet.server->port();
  fleet.server->Stop();
  fleet.Commit("offline meanwhile\n");
  announce();
  REQUIRE_MESSAGE(
      WaitFor([&] { return fleet.Status()["last_cycle"]["summary"].value("offline", false); }, 20s),
      fleet.Log());
  fleet.server = std::make_unique<tether::testing::GitDaemonServer>(
      fleet.git_root.path(), [git_port] { return git_port; });
  CHECK_MESSAGE(WaitFor([&] { return motd_is("offline meanwhile\n"); }, 20s), fleet.Log());

  // The signal's server down: every poll asks the Git source again, and says so once.
  web.Stop();
  fleet.Commit("third\n");
  CHECK_MESSAGE(WaitFor([&] { return motd_is("third\n"); }, 20s), fleet.Log());
  CHECK(Metric(fleet, "tether_change_signal_checks_total{result=\"error\"}") >= 1);
  const std::string log = fleet.Log();
  const auto said = log.find("source.poll_url: ");
  CHECK(said != std::string::npos);
  CHECK(log.find("source.poll_url: ", said + 1) == std::string::npos);
  fleet.tetherd.Signal(SIGTERM);
  CHECK(fleet.tetherd.Wait(20s));
}

TEST_CASE("webhook.listen on IPv6 loopback") {
  {
    // Not every machine has IPv6 (a container may have it off).
    tether::UniqueFd probe(socket(AF_INET6, SOCK_STREAM | SOCK_CLOEXEC, 0));
    sockaddr_in6 loopback{};
    loopback.sin6_family = AF_INET6;
    loopback.sin6_addr = in6addr_loopback;
    if (!probe.valid() ||
        bind(probe.get(), reinterpret_cast<sockaddr*>(&loopback), sizeof(loopback)) != 0) {
      MESSAGE("no IPv6 loopback here: not tested");
      return;
    }
  }
  WebhookFleet fleet;
  fleet.hook = "http://[::1]:" + std::to_string(fleet.webhook_port) + "/";
  fleet.extra_config = "[webhook]\nlisten = \"[::1]:" + std::to_string(fleet.webhook_port) +
                       "\"\nsecret_file = \"" + fleet.dir.Path("webhook-secret") + "\"\n";
  fleet.Commit("hello\n");
  fleet.Start();
  REQUIRE_MESSAGE(fleet.Applied("hello\n"), fleet.Log());
  REQUIRE(WaitFor([&] { return fleet.Status().value("state", "") == "synced"; }, 20s));
  fleet.Commit("over ipv6\n");
  CHECK(fleet.Send("gitlab") == "202");
  CHECK_MESSAGE(fleet.Applied("over ipv6\n"), fleet.Log());
  fleet.tetherd.Signal(SIGTERM);
  CHECK(fleet.tetherd.Wait(20s));
}

TEST_CASE("source.poll_url: a forge's commits API (GitHub's form) answers 304 by ETag") {
  Fleet fleet;  // polls every second
  tether::SpawnOptions api;
  api.argv = {"/usr/bin/python3", std::getenv("TETHER_FORGE_API"), fleet.repo,
              fleet.dir.Path("api.port")};
  api.stdout_path = fleet.dir.Path("api.log");
  api.stderr_path = fleet.dir.Path("api.err");
  auto server = tether::Spawn(api);
  REQUIRE(server);
  REQUIRE(WaitFor([&] { return std::filesystem::exists(fleet.dir.Path("api.port")); }, 10s));
  const std::string url =
      "http://127.0.0.1:" + fleet.dir.ReadFile("api.port") + "/repos/acme/fleet/commits/main";
  fleet.extra_source = "poll_url = \"" + url + "\"\n";
  fleet.Commit("hello\n");
  fleet.Start();
  auto motd_is = [&](const std::string& motd) {
    return ContentOf(fleet.dir.Path("root/etc/motd")) == motd;
  };
  REQUIRE_MESSAGE(WaitFor([&] { return motd_is("hello\n"); }, 30s), fleet.Log());
  const std::string unchanged = "tether_change_signal_checks_total{result=\"unchanged\"}";
  REQUIRE_MESSAGE(WaitFor([&] { return Metric(fleet, unchanged) >= 2; }, 20s),
                  fleet.Log() << fleet.dir.ReadFile("api.log"));
  // The API answered with the bare commit id (tetherd asked for that type), then 304s.
  const std::string log = fleet.dir.ReadFile("api.log");
  CHECK_MESSAGE(log.find("GET /repos/acme/fleet/commits/main 200") != std::string::npos, log);
  CHECK_MESSAGE(log.find("GET /repos/acme/fleet/commits/main 304") != std::string::npos, log);
  // A push moves the ref: the API's answer changes, and the commit is applied.
  fleet.Commit("pushed\n");
  CHECK_MESSAGE(WaitFor([&] { return motd_is("pushed\n"); }, 20s), fleet.Log());
  fleet.tetherd.Signal(SIGTERM);
  CHECK(fleet.tetherd.Wait(20s));
}
