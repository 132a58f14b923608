// Benchmark: a fleet polling one Git server, with and without source.poll_url.
//
//   ninja -C build tests/bench/signal_bench agent/tetherd agent/tetherd-daemon
//       agent/tetherd-cycle agent/tetherd-git agent/tetherd-http
//   TETHERD=build/agent/tetherd build/tests/bench/signal_bench
//       [--hosts 10000] [--interval 60] [--seconds 60] [--git-hosts 1000]
//       [--modes signal,signal-process,git,http]
//
// Simulated hosts, each with its own phase and a 10% jitter on every poll (as tetherd's
// schedule spreads a fleet), poll on loopback for --seconds, running the code path
// tetherd runs for a poll:
//   signal  source.poll_url over http://: the ChangeSignal request on each host's own
//           kept-alive connection (HttpKeepAlive, the daemon's client for http://; all
//           hosts on one event loop, as each daemon runs its checks on its loop), to nginx
//           serving the repo's dumb-HTTP info/refs as a static file; a 304 is the answer
//           while nothing changed
//   signal-process  the same, sent as for an https:// poll_url: by the HTTP child process
//           (tetherd-http --http-fetch), a process and a connection per check
//   git     a Git poll (ref advertisement) by the git worker, against `git daemon`
//   http    the same against smart HTTP (lighttpd + git-http-backend)
// After --seconds, a commit is pushed (and info/refs updated, as a post-receive hook would),
// and the hosts poll one interval more: every host that sees it is counted, with how long
// after the push the last one saw it.
// The Git modes run --git-hosts hosts (a Git poll costs the client far more: 10,000 hosts
// at 60 s would saturate this machine's client side, not measure the server); their
// server cost per poll is what scales.
//
// Reported per mode: polls, the server's CPU per poll (utime + stime of the server process
// and the children it reaped: git daemon's and lighttpd's per-request processes) and as a
// share of one core at the simulated rate and at 10,000 hosts every 60 s, the hosts' CPU
// per poll (this process and every child it ran), and the time until every host had seen
// the push. Results go in docs/performance.md (and the sizing guide, docs/scaling.md).
#include <signal.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <queue>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "agent/daemon/change_signal.hpp"
#include "agent/git/git_source.hpp"
#include "agent/report/send_process.hpp"
#include "common/http_keepalive.hpp"
#include "common/process.hpp"
#include "tests/bench/cpu_time.hpp"
#include "tests/support/git_repo.hpp"
#include "tests/support/git_server.hpp"
#include "tests/support/temp_dir.hpp"

namespace {

using Clock = std::chrono::steady_clock;
using Seconds = std::chrono::duration<double>;

struct Options {
  int hosts = 10000;
  double interval = 60;
  double seconds = 60;
  int git_hosts = 1000;
  std::string modes = "signal,signal-process,git,http";
  std::string tetherd = "build/agent/tetherd";
};

struct Figures {
  long polls = 0;
  long errors = 0;
  double server_cpu = 0;  // seconds
  double hosts_cpu = 0;   // seconds, for all hosts
  double elapsed = 0;     // seconds
  int saw_push = 0;       // hosts
  double last_saw = 0;    // seconds after the push
};

// One simulated host's poll: returns 1 when it saw a change, 0 when not, -1 on error.
using PollFn = std::function<int(int host, int thread)>;

// Runs `hosts` simulated hosts with `threads` polling threads: `seconds` of polling, then
// `push`, then one interval (and its jitter) more.
Figures Simulate(int hosts, double interval, double seconds, int threads, const PollFn& poll,
                 const std::function<void()>& push) {
  struct Due {
    Clock::time_point when;
    int host;
    bool operator>(const Due& other) const { return when > other.when; }
  };
  std::mt19937 random(20261204);
  std::uniform_real_distribution<double> phase(0, interval);
  std::uniform_real_distribution<double> jitter(-0.1, 0.1);
  std::priority_queue<Due, std::vector<Due>, std::greater<>> queue;
  const auto start = Clock::now();
  for (int host = 0; host < hosts; ++host) {
    queue.push({start + std::chrono::duration_cast<Clock::duration>(Seconds(phase(random))), host});
  }
  std::mutex mutex;
  std::condition_variable wake;
  // The push after `seconds`, then long enough for every host to poll once more.
  const auto push_at = start + std::chrono::duration_cast<Clock::duration>(Seconds(seconds));
  const auto end =
      push_at + std::chrono::duration_cast<Clock::duration>(Seconds(interval * 1.1 + 1));
  std::atomic<bool> pushed{false};
  Clock::time_point pushed_at;
  std::vector<char> saw(static_cast<std::size_t>(hosts), 0);
  Figures figures;
  auto worker = [&](int thread) {
    std::unique_lock lock(mutex);
    while (true) {
      if (queue.empty()) return;
      const Due due = queue.top();
      if (due.when >= end) return;
      if (Clock::now() < due.when) {
        wake.wait_until(lock, due.when);
        continue;
      }
      queue.pop();
      if (!pushed && Clock::now() >= push_at) {
        push();
        pushed_at = Clock::now();
        pushed = true;
      }
      lock.unlock();
      const int result = poll(due.host, thread);
      const auto now = Clock::now();
      lock.lock();
      ++figures.polls;
      if (result < 0) ++figures.errors;
      if (result == 1 && pushed && !saw[static_cast<std::size_t>(due.host)]) {
        saw[static_cast<std::size_t>(due.host)] = 1;
        ++figures.saw_push;
        figures.last_saw = std::max(figures.last_saw, Seconds(now - pushed_at).count());
      }
      const double next = interval * (1 + jitter(random));
      queue.push({due.when + std::chrono::duration_cast<Clock::duration>(Seconds(next)), due.host});
      wake.notify_one();
    }
  };
  std::vector<std::thread> pool;
  for (int i = 0; i < threads; ++i) pool.emplace_back(worker, i);
  for (auto& thread : pool) thread.join();
  figures.elapsed = Seconds(Clock::now() - start).count();
  return figures;
}

// The same fleet as Simulate, event-driven on one loop: each host its own HttpKeepAlive
// and timer. `check(host, done)` starts a host's check; `done(result)` as for PollFn.
Figures SimulateOnLoop(boost::asio::io_context& io, int hosts, double interval, double seconds,
                       const std::function<void(int, std::function<void(int)>)>& check,
                       const std::function<void()>& push) {
  std::mt19937 random(20261204);
  std::uniform_real_distribution<double> phase(0, interval);
  std::uniform_real_distribution<double> jitter(-0.1, 0.1);
  const auto start = Clock::now();
  const auto push_at = start + std::chrono::duration_cast<Clock::duration>(Seconds(seconds));
  const auto end =
      push_at + std::chrono::duration_cast<Clock::duration>(Seconds(interval * 1.1 + 1));
  Figures figures;
  bool pushed = false;
  Clock::time_point pushed_at;
  std::vector<char> saw(static_cast<std::size_t>(hosts), 0);
  std::vector<std::unique_ptr<boost::asio::steady_timer>> timers;
  std::function<void(int, Clock::time_point)> arm = [&](int host, Clock::time_point when) {
    if (when >= end) return;
    auto& timer = *timers[static_cast<std::size_t>(host)];
    timer.expires_at(when);
    timer.async_wait([&, host, when](boost::system::error_code code) {
      if (code) return;
      if (!pushed && Clock::now() >= push_at) {
        push();
        pushed_at = Clock::now();
        pushed = true;
      }
      check(host, [&, host, when](int result) {
        ++figures.polls;
        if (result < 0) ++figures.errors;
        if (result == 1 && pushed && !saw[static_cast<std::size_t>(host)]) {
          saw[static_cast<std::size_t>(host)] = 1;
          ++figures.saw_push;
          figures.last_saw = std::max(figures.last_saw, Seconds(Clock::now() - pushed_at).count());
        }
        arm(host, when + std::chrono::duration_cast<Clock::duration>(
                             Seconds(interval * (1 + jitter(random)))));
      });
    });
  };
  for (int host = 0; host < hosts; ++host) {
    timers.push_back(std::make_unique<boost::asio::steady_timer>(io));
    arm(host, start + std::chrono::duration_cast<Clock::duration>(Seconds(phase(random))));
  }
  io.run();
  figures.elapsed = Seconds(Clock::now() - start).count();
  return figures;
}

void Print(const char* mode, int hosts, double interval, const Figures& f) {
  const double rate = static_cast<double>(f.polls) / f.elapsed;
  const double server_ms = f.server_cpu * 1000 / static_cast<double>(f.polls);
  const double share = f.server_cpu / f.elapsed * 100;
  const double at_10k = server_ms / 1000 * (10000.0 / 60.0) * 100;
  std::printf(
      "| %-6s | %6d | %4.0f s | %7ld | %6.1f | %8.3f | %6.1f%% | %6.1f%% | %7.2f | %5d of %-5d "
      "| %6.1f s | %ld |\n",
      mode, hosts, interval, f.polls, rate, server_ms, share, at_10k,
      f.hosts_cpu * 1000 / static_cast<double>(f.polls), f.saw_push, hosts, f.last_saw, f.errors);
  std::fflush(stdout);
}

}  // namespace

int main(int argc, char** argv) {
  Options options;
  if (const char* tetherd = std::getenv("TETHERD")) options.tetherd = tetherd;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string flag = argv[i];
    const std::string value = argv[i + 1];
    if (flag == "--hosts") {
      options.hosts = std::stoi(value);
    } else if (flag == "--interval") {
      options.interval = std::stod(value);
    } else if (flag == "--seconds") {
      options.seconds = std::stod(value);
    } else if (flag == "--git-hosts") {
      options.git_hosts = std::stoi(value);
    } else if (flag == "--modes") {
      options.modes = value;
    } else {
      std::fprintf(stderr, "signal_bench: unknown flag %s (see the comment at the top)\n",
                   flag.c_str());
      return 2;
    }
  }
  auto want = [&](const char* mode) {
    return ("," + options.modes + ",").find(std::string(",") + mode + ",") != std::string::npos;
  };
  signal(SIGPIPE, SIG_IGN);
  umask(022);
  tether::testing::TempDir root("signal-bench");
  const std::string repo = root.Path("fleet.git");
  tether::testing::CreateBareRepo(repo);
  int generation = 0;
  auto commit = [&] {
    tether::testing::CommitFiles(
        repo, {{"hosts/h.toml", "# generation " + std::to_string(++generation) + "\n"}});
    tether::RunOptions update;
    update.argv = {"git", "--git-dir", repo, "update-server-info"};
    auto ran = tether::Run(update);
    if (!ran || !ran->ok()) {
      std::fprintf(stderr, "git update-server-info failed\n");
      std::exit(1);
    }
  };
  commit();
  const std::string http = std::filesystem::path(options.tetherd).parent_path() / "tetherd-http";
  const std::string git_worker =
      std::filesystem::path(options.tetherd).parent_path() / "tetherd-git";

  std::printf(
      "| mode | hosts | interval | polls | polls/s | server CPU ms/poll | server share "
      "of a core | at 10,000 hosts / 60 s | hosts CPU ms/poll | saw the push | all "
      "within | errors |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|\n");
  std::fflush(stdout);

  if (want("signal")) {
    // One connection per host: as many descriptors as hosts.
    rlimit files{};
    getrlimit(RLIMIT_NOFILE, &files);
    files.rlim_cur = files.rlim_max;
    setrlimit(RLIMIT_NOFILE, &files);
    tether::testing::StaticHttpServer web(root.path());
    tether::SourceConfig source;
    source.url = "git://127.0.0.1/fleet.git";
    source.poll_url = web.url("fleet.git/info/refs");
    source.timeout = std::chrono::seconds(30);
    boost::asio::io_context io;
    std::vector<std::unique_ptr<tether::HttpKeepAlive>> clients;
    std::vector<tether::ChangeSignal> hosts(static_cast<std::size_t>(options.hosts));
    std::vector<std::uint64_t> cycles(hosts.size(), 1);
    for (int i = 0; i < options.hosts; ++i) {
      clients.push_back(std::make_unique<tether::HttpKeepAlive>(io));
    }
    // Every host starts where a running fleet is: the last answer confirmed (its first
    // check, which opens its connection, before the clock starts).
    int confirmed = 0;
    for (int i = 0; i < options.hosts; ++i) {
      auto& signal = hosts[static_cast<std::size_t>(i)];
      clients[static_cast<std::size_t>(i)]->Fetch(
          signal.Request(source, ""), [&, i](tether::Result<tether::HttpResponse> response) {
            auto& host = hosts[static_cast<std::size_t>(i)];
            if (host.Read(response, 0) == tether::SignalAnswer::kChanged) {
              host.CycleEnded(1, true);
              ++confirmed;
            }
          });
    }
    io.run();
    io.restart();
    if (confirmed != options.hosts) {
      std::fprintf(stderr, "signal: %d of %d first checks failed\n", options.hosts - confirmed,
                   options.hosts);
      return 1;
    }
    const double server_before = tether::bench::ProcessCpuSeconds(web.pid(), true);
    const double self_before = tether::bench::SelfCpuSeconds();
    auto figures = SimulateOnLoop(
        io, options.hosts, options.interval, options.seconds,
        [&](int host, std::function<void(int)> done) {
          auto& signal = hosts[static_cast<std::size_t>(host)];
          clients[static_cast<std::size_t>(host)]->Fetch(
              signal.Request(source, ""),
              [&, host, done](tether::Result<tether::HttpResponse> response) {
                auto& signal = hosts[static_cast<std::size_t>(host)];
                auto& count = cycles[static_cast<std::size_t>(host)];
                const auto answer = signal.Read(response, count);
                if (answer == tether::SignalAnswer::kUnchanged) return done(0);
                if (answer == tether::SignalAnswer::kError) return done(-1);
                signal.CycleEnded(++count, true);  // the Git poll that follows (not simulated)
                done(1);
              });
        },
        commit);
    figures.server_cpu = tether::bench::ProcessCpuSeconds(web.pid(), true) - server_before;
    figures.hosts_cpu = tether::bench::SelfCpuSeconds() - self_before;
    Print("signal", options.hosts, options.interval, figures);
    std::uint64_t opened = 0;
    for (auto& client : clients) opened += client->connections_opened();
    std::fprintf(stderr, "signal: %llu connections for %ld checks\n",
                 static_cast<unsigned long long>(opened), figures.polls + options.hosts);
  }

  if (want("signal-process")) {
    tether::testing::StaticHttpServer web(root.path());
    tether::SourceConfig source;
    source.url = "git://127.0.0.1/fleet.git";
    source.poll_url = web.url("fleet.git/info/refs");
    source.timeout = std::chrono::seconds(30);
    const auto send = tether::MakeProcessSender({http, "--http-fetch"}, {});
    // Every host starts where a running fleet is: the last answer confirmed.
    tether::ChangeSignal confirmed;
    auto first = send(confirmed.Request(source, ""));
    if (!first || confirmed.Read(first, 0) != tether::SignalAnswer::kChanged) {
      std::fprintf(stderr, "signal: the first check failed\n");
      return 1;
    }
    confirmed.CycleEnded(1, true);
    std::vector<tether::ChangeSignal> hosts(static_cast<std::size_t>(options.hosts), confirmed);
    std::vector<std::uint64_t> cycles(hosts.size(), 1);
    const double server_before = tether::bench::ProcessCpuSeconds(web.pid(), true);
    const double self_before = tether::bench::SelfCpuSeconds();
    auto figures = Simulate(
        options.hosts, options.interval, options.seconds, 16,
        [&](int host, int) {
          auto& signal = hosts[static_cast<std::size_t>(host)];
          auto& count = cycles[static_cast<std::size_t>(host)];
          const auto answer = signal.Read(send(signal.Request(source, "")), count);
          if (answer == tether::SignalAnswer::kUnchanged) return 0;
          if (answer == tether::SignalAnswer::kError) return -1;
          signal.CycleEnded(++count, true);  // the Git poll that follows (not simulated)
          return 1;
        },
        commit);
    figures.server_cpu = tether::bench::ProcessCpuSeconds(web.pid(), true) - server_before;
    figures.hosts_cpu = tether::bench::SelfCpuSeconds() - self_before;
    Print("signal-process", options.hosts, options.interval, figures);
  }

  auto git_mode = [&](const char* mode, const std::string& url, pid_t server) {
    const int threads = 4;
    std::vector<std::unique_ptr<tether::GitSource>> sources;
    std::vector<std::unique_ptr<tether::testing::TempDir>> caches;
    for (int i = 0; i < threads; ++i) {
      caches.push_back(std::make_unique<tether::testing::TempDir>("signal-bench-cache"));
    }
    for (int i = 0; i < threads; ++i) {
      tether::GitSourceOptions git;
      git.worker_argv = {git_worker, "--git-worker"};
      git.source.url = url;
      git.source.timeout = std::chrono::seconds(30);
      git.cache_dir = caches[static_cast<std::size_t>(i)]->path();
      auto made = tether::GitSource::Create(git);
      if (!made || !(*made)->Update()) {
        std::fprintf(stderr, "%s: cannot poll %s\n", mode, url.c_str());
        std::exit(1);
      }
      sources.push_back(std::move(*made));
    }
    std::string head;
    if (auto polled = sources[0]->Poll()) head = polled->commit;
    std::vector<std::string> seen(static_cast<std::size_t>(options.git_hosts), head);
    std::mutex seen_mutex;
    double workers_before = 0;
    for (auto& source : sources)
      workers_before += tether::bench::ProcessCpuSeconds(source->worker_pid(), false);
    const double server_before = tether::bench::ProcessCpuSeconds(server, true);
    const double self_before = tether::bench::SelfCpuSeconds();
    auto figures = Simulate(
        options.git_hosts, options.interval, options.seconds, threads,
        [&](int host, int thread) {
          auto polled = sources[static_cast<std::size_t>(thread)]->Poll();
          if (!polled) return -1;
          std::lock_guard lock(seen_mutex);
          auto& last = seen[static_cast<std::size_t>(host)];
          if (polled->commit == last) return 0;
          last = polled->commit;
          return 1;
        },
        commit);
    figures.server_cpu = tether::bench::ProcessCpuSeconds(server, true) - server_before;
    double workers = 0;
    for (auto& source : sources)
      workers += tether::bench::ProcessCpuSeconds(source->worker_pid(), false);
    figures.hosts_cpu = tether::bench::SelfCpuSeconds() - self_before + workers - workers_before;
    Print(mode, options.git_hosts, options.interval, figures);
  };
  if (want("git")) {
    tether::testing::GitDaemonServer server(root.path());
    git_mode("git", server.url("fleet.git"), server.pid());
  }
  if (want("http")) {
    tether::testing::GitHttpServer server(root.path());
    git_mode("http", server.url("fleet.git"), server.pid());
  }
  return 0;
}
