// Benchmark: tetherd as a daemon on the bundled example fleet (config/fleet, host web-01),
// from a local git server, under a --root sandbox.
//
//   ninja -C build tests/bench/daemon_bench agent/tetherd
//   TETHERD=build/agent/tetherd TETHER_SOURCE_ROOT=. build/tests/bench/daemon_bench
//
// Measures:
//   idle RSS      VmRSS of tetherd (and of its git worker) once the example is applied and
//                 the daemon waits for its next poll
//   idle wakeups  context switches of every tetherd thread over 10 s of idling (poll
//                 interval 1 h, no watchdog): what wakes the process besides its timers
//   status        latency of a status request over the control socket, while idle and
//                 while a cycle is running (its health check sleeps 3 s)
// Results go in docs/performance.md.
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include "agent/ctl/control_client.hpp"
#include "common/process.hpp"
#include "tests/support/git_repo.hpp"
#include "tests/support/git_server.hpp"
#include "tests/support/temp_dir.hpp"
#include "tests/support/wait_for.hpp"

namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

long Field(pid_t pid, const std::string& task, const char* name) {
  std::ifstream status("/proc/" + std::to_string(pid) + task + "/status");
  std::string line;
  while (std::getline(status, line)) {
    if (line.rfind(name, 0) == 0) return std::atol(line.c_str() + std::string(name).size());
  }
  return -1;
}

// Context switches of all threads of `pid`.
long Switches(pid_t pid) {
  long total = 0;
  for (const auto& task :
       std::filesystem::directory_iterator("/proc/" + std::to_string(pid) + "/task")) {
    const std::string id = "/task/" + task.path().filename().string();
    total +=
        Field(pid, id, "voluntary_ctxt_switches:") + Field(pid, id, "nonvoluntary_ctxt_switches:");
  }
  return total;
}

// The first child process of any thread of `pid` (the git worker), or 0.
pid_t ChildOf(pid_t pid) {
  for (const auto& task :
       std::filesystem::directory_iterator("/proc/" + std::to_string(pid) + "/task")) {
    std::ifstream children(task.path() / "children");
    pid_t child = 0;
    if (children >> child) return child;
  }
  return 0;
}

double StatusMs(const std::string& socket) {
  const auto start = Clock::now();
  auto reply = tether::CallDaemon(socket, {{"command", "status"}}, 10s);
  if (!reply) {
    std::fprintf(stderr, "status: %s\n", reply.error().message().c_str());
    std::exit(1);
  }
  return std::chrono::duration<double, std::milli>(Clock::now() - start).count();
}

void Percentiles(const char* what, std::vector<double> samples) {
  std::sort(samples.begin(), samples.end());
  std::printf("| %-28s | %6zu | %8.3f | %8.3f | %8.3f |\n", what, samples.size(),
              samples[samples.size() / 2], samples[samples.size() * 99 / 100], samples.back());
}

}  // namespace

int main() {
  const char* tetherd = std::getenv("TETHERD");
  const char* source_root = std::getenv("TETHER_SOURCE_ROOT");
  if (tetherd == nullptr || source_root == nullptr) {
    std::fprintf(stderr, "set TETHERD and TETHER_SOURCE_ROOT\n");
    return 2;
  }
  tether::testing::TempDir dir("daemon-bench");
  tether::testing::TempDir git_root("daemon-bench-git");
  const std::string repo = git_root.Path("fleet.git");
  tether::testing::CreateBareRepo(repo);
  std::map<std::string, std::string> files;
  const std::string fleet = std::string(source_root) + "/config/fleet";
  for (const auto& entry : std::filesystem::recursive_directory_iterator(fleet)) {
    if (!entry.is_regular_file()) continue;
    std::ifstream in(entry.path(), std::ios::binary);
    files[std::filesystem::relative(entry.path(), fleet).string()] =
        std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
  }
  // The example's own check asks nginx, which a --root sandbox does not run: left out, so
  // that checks may run (--root-checks) for the slow one below.
  std::string& web = files["roles/web.toml"];
  web = web.substr(0, web.find("[[check]]"));
  const std::string profile = files["hosts/web-01.toml"];
  tether::testing::CommitFiles(repo, files, {});
  tether::testing::GitDaemonServer server(git_root.path());
  for (const char* made : {"root/etc/nginx/conf.d", "root/etc/nginx/sites-enabled", "root/srv"}) {
    std::filesystem::create_directories(dir.Path(made));
  }
  auto config = [&](const std::string& extra) {
    dir.WriteFile("agent.toml", "[source]\nurl = \"" + server.url("fleet.git") +
                                    "\"\nprofile = \"hosts/web-01.toml\"\ninterval = \"1h\"\n"
                                    "[trust]\nrequire_signed = false\n[labels]\nenv = \"bench\"\n" +
                                    extra);
  };
  config("");
  const std::string socket = dir.Path("tether.sock");
  tether::SpawnOptions options;
  options.argv = {tetherd,
                  "--config",
                  dir.Path("agent.toml"),
                  "--state-dir",
                  dir.Path("state"),
                  "--cache-dir",
                  dir.Path("cache"),
                  "--root",
                  dir.Path("root"),
                  "--socket",
                  socket,
                  "--root-checks"};
  options.stderr_path = dir.Path("tetherd.log");
  auto child = tether::Spawn(options);
  if (!child) return 1;
  const pid_t pid = child->pid();
  if (!tether::testing::WaitFor(
          [&] {
            auto reply = tether::CallDaemon(socket, {{"command", "status"}}, 1s);
            return reply && reply->value("state", "") == "synced";
          },
          30s)) {
    std::fprintf(stderr, "not synced; see %s\n", dir.Path("tetherd.log").c_str());
    return 1;
  }
  std::this_thread::sleep_for(1s);
  const pid_t worker = ChildOf(pid);
  std::printf("| measure | value |\n|---|---:|\n");
  std::printf("| tetherd idle VmRSS, example applied | %ld KiB |\n", Field(pid, "", "VmRSS:"));
  std::printf("| of which anonymous (RssAnon) | %ld KiB |\n", Field(pid, "", "RssAnon:"));
  std::printf("| of which file-backed (RssFile: library and program pages) | %ld KiB |\n",
              Field(pid, "", "RssFile:"));
  std::printf("| tetherd peak VmHWM so far | %ld KiB |\n", Field(pid, "", "VmHWM:"));
  if (worker > 0) std::printf("| git worker VmRSS | %ld KiB |\n", Field(worker, "", "VmRSS:"));
  const long before = Switches(pid);
  std::this_thread::sleep_for(10s);
  std::printf("| tetherd context switches in 10 s idle | %ld |\n", Switches(pid) - before);

  std::vector<double> idle;
  for (int i = 0; i < 500; ++i) idle.push_back(StatusMs(socket));

  // A cycle that takes a while: a new commit whose check sleeps 3 s.
  files["hosts/web-01.toml"] =
      profile + "\n[[check]]\nname = \"slow\"\nexec = [\"/bin/sleep\", \"3\"]\ntimeout = \"10s\"\n";
  files["files/motd"] += "bench\n";
  tether::testing::CommitFiles(repo, files, {});
  if (!tether::CallDaemon(socket, {{"command", "sync"}}, 10s)) return 1;
  std::vector<double> busy;
  const auto until = Clock::now() + 2500ms;
  while (Clock::now() < until) busy.push_back(StatusMs(socket));
  auto state = tether::CallDaemon(socket, {{"command", "status"}}, 10s);
  std::printf(
      "\n| status request | n | median ms | p99 ms | max ms |\n|---|---:|---:|---:|---:|\n");
  Percentiles("idle", idle);
  Percentiles("during an apply (applying)", busy);
  child->Stop(SIGTERM, 30s);
  return state ? 0 : 1;
}
