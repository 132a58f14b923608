// Benchmark: the cost of a no-change poll per transport, and memory over many polls.
//
//   ninja -C build tests/bench/poll_bench && build/tests/bench/poll_bench [POLLS] [TRANSPORTS]
//
// For each transport it starts a real server on loopback, makes one GitSource, polls
// once to warm up, then POLLS times more (default 1000; the ref never moves) and prints
// the wall time and client CPU per poll (tetherd's process plus its git worker's, from
// getrusage and /proc/PID/stat) and both processes' RSS before and after (the worker is
// replaced every 1000 requests, so "after" is the RSS of the worker running then).
// TRANSPORTS is a comma-separated subset of git,http,https,ssh,file (default: all).
// Results go in docs/performance.md.
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>

#include "agent/git/git_source.hpp"
#include "tests/bench/cpu_time.hpp"
#include "tests/support/git_repo.hpp"
#include "tests/support/git_server.hpp"
#include "tests/support/temp_dir.hpp"

namespace {

using Clock = std::chrono::steady_clock;

long RssKb(pid_t pid) {
  std::ifstream status("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(status, line)) {
    if (line.rfind("VmRSS:", 0) == 0) return std::atol(line.c_str() + 6);
  }
  return -1;
}

void Run(const std::string& name, const std::string& url, tether::GitSourceOptions options,
         int polls) {
  options.source.url = url;
  tether::testing::TempDir cache("bench-cache");
  options.cache_dir = cache.path();
  auto source = tether::GitSource::Create(options);
  if (!source) {
    std::fprintf(stderr, "%s: %s\n", name.c_str(), source.error().message().c_str());
    std::exit(1);
  }
  if (auto first = (*source)->Update(); !first) {
    std::fprintf(stderr, "%s: %s\n", name.c_str(), first.error().message().c_str());
    std::exit(1);
  }
  const pid_t worker = (*source)->worker_pid();
  const long parent_rss_before = RssKb(getpid());
  const long worker_rss_before = RssKb(worker);
  const double cpu_before =
      tether::bench::SelfCpuSeconds() + tether::bench::ProcessCpuSeconds(worker);
  const auto start = Clock::now();
  for (int i = 0; i < polls; ++i) {
    auto polled = (*source)->Poll();
    if (!polled) {
      std::fprintf(stderr, "%s: poll %d: %s\n", name.c_str(), i, polled.error().message().c_str());
      std::exit(1);
    }
  }
  const double wall = std::chrono::duration<double>(Clock::now() - start).count();
  const pid_t last_worker = (*source)->worker_pid();
  const double cpu =
      tether::bench::SelfCpuSeconds() + tether::bench::ProcessCpuSeconds(last_worker) - cpu_before;
  std::printf("| %-6s | %6d | %8.3f | %8.3f | %6ld -> %6ld | %6ld -> %6ld |\n", name.c_str(), polls,
              wall * 1000 / polls, cpu * 1000 / polls, parent_rss_before, RssKb(getpid()),
              worker_rss_before, RssKb(last_worker));
  std::fflush(stdout);
}

}  // namespace

int main(int argc, char** argv) {
  const int polls = argc > 1 ? std::atoi(argv[1]) : 1000;
  const std::string wanted = argc > 2 ? argv[2] : "git,http,https,ssh,file";
  const char* tetherd = std::getenv("TETHERD");
  auto want = [&](const char* name) {
    return ("," + wanted + ",").find(std::string(",") + name + ",") != std::string::npos;
  };
  umask(022);
  tether::testing::TempDir root("bench-root");
  const std::string repo = root.Path("fleet.git");
  tether::testing::CreateBareRepo(repo);
  std::map<std::string, std::string> files;
  for (int i = 0; i < 20; ++i) files["hosts/host-" + std::to_string(i) + ".toml"] = "# host\n";
  tether::testing::CommitFiles(repo, files);

  tether::GitSourceOptions options;
  options.worker_argv = {tetherd != nullptr ? tetherd : "build/agent/tetherd", "--git-worker"};
  options.source.timeout = std::chrono::seconds(30);
  std::printf(
      "| transport | polls | wall ms/poll | client CPU ms/poll | tetherd RSS KiB | worker RSS KiB "
      "|\n");
  std::printf("|---|---:|---:|---:|---|---|\n");
  if (want("git")) {
    tether::testing::GitDaemonServer server(root.path());
    Run("git", server.url("fleet.git"), options, polls);
  }
  if (want("http")) {
    tether::testing::GitHttpServer server(root.path());
    Run("http", server.url("fleet.git"), options, polls);
  }
  if (want("https")) {
    tether::testing::GitHttpOptions tls;
    tls.tls = true;
    tether::testing::GitHttpServer server(root.path(), tls);
    auto with_ca = options;
    with_ca.source.ca_file = server.ca_file();
    Run("https", server.url("fleet.git"), with_ca, polls);
  }
  if (want("ssh")) {
    tether::testing::GitSshServer server(root.path());
    auto with_key = options;
    with_key.source.ssh_key = server.client_key();
    with_key.source.known_hosts = server.known_hosts();
    Run("ssh", server.url("fleet.git"), with_key, polls);
  }
  if (want("file")) Run("file", "file://" + repo, options, polls);
  return 0;
}
