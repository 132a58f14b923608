// Benchmark: the programs as a user runs them, on a fleet repo of N files of 1 KiB each,
// declared with `source =` (require_signed = false, a file:// source, a --root sandbox).
// Each tether figure is beside a reference measured in the same run, as a ratio.
//
//   ninja -C build tests/bench/fleet_bench tests/bench/fleet_ref agent/tetherd
//       agent/tetherd-daemon agent/tetherd-cycle agent/tetherd-git agent/tetherd-http
//   TETHERD=build/agent/tetherd build/tests/bench/fleet_bench
//       [--sizes 1000,10000,50000] [--layouts flat,nested] [--edits 200] [--dir DIR]
//       [--rounds 9] [--first-rounds 3] [--no-daemon] [--keep] [--timeout SECONDS]
//
// For each layout (flat: every source in files/; nested: 100 per folder) and size:
//   first apply  tetherd --once into an empty root, against a C loop that writes each file
//                (write + fsync + rename) into another empty directory
//   no-op        tetherd --once again, against lstat + read + SHA-256 over the applied files
//                (what any agent must at least do to know nothing changed), twice: as a
//                loop in a fork of this benchmark (no exec, nothing to load), and as a C
//                program (fleet_ref.c, libgcrypt's SHA-256 as tetherd's), a process as
//                tetherd is
//   1% drift     1% of the files edited by hand, then tetherd --once, against the same two
//   daemon       tetherd as a daemon (poll interval 1 h): a managed file edited by hand
//                until it is back, --edits times, each once the daemon is idle but every
//                10th while a repair of another file runs; median, p99, max and edits not
//                back within 10 s. Then --edits more back to back (each as soon as the
//                last is back: during the tail of its repair); median and p99. The
//                daemon's idle RSS and peak RSS
// Wall times are medians of --rounds runs (first apply: of --first-rounds, each into roots,
// state and cache dirs of its own; each run of tetherd beside its reference run, so that a
// noisy machine disturbs both alike); peak RSS is ru_maxrss of the process
// and everything it waited for (tetherd --once is tetherd-cycle, which runs
// the git worker). A last table has each process's own peak (VmHWM: tetherd, the cycle,
// the git worker; of a first apply, of a no-op and drift --once, and of the daemon),
// sampled every millisecond in untimed runs. An edit not back within 10 s is printed to stderr with
// the time. --keep leaves each work dir (repo, root, state) in place. --dir puts the trees on
// another filesystem (default: $TMPDIR or /tmp); on ext4, one where nothing was deleted in the last
// five minutes (its allocator passes over recently freed inodes, slowly: the first applies would
// measure that). Results go in docs/performance.md.
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/inotify.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <optional>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "agent/ctl/control_client.hpp"
#include "common/sha256.hpp"

extern char** environ;

namespace {

using Clock = std::chrono::steady_clock;
using namespace std::chrono_literals;
namespace fs = std::filesystem;

struct Options {
  std::vector<std::size_t> sizes = {1000, 10000};
  std::vector<std::string> layouts = {"flat", "nested"};
  std::size_t edits = 200;
  // Of the no-op and drift cycles: a no-op at 1,000 files is a few milliseconds, as is
  // the C program beside it, and the ratio of medians of 3 moved by a tenth between runs.
  int rounds = 9;
  int first_rounds = 3;  // of the first apply
  std::string dir;
  bool daemon = true;
  bool keep = false;  // leave each work dir (repo, root, state) for a profiler
  int timeout_s = 600;
};

struct Run {
  double seconds = -1;  // -1: did not finish in time
  long max_rss_kib = 0;
  int exit_code = -1;
};

[[noreturn]] void Die(const std::string& message) {
  std::fprintf(stderr, "fleet_bench: %s\n", message.c_str());
  std::exit(1);
}

std::vector<std::string> Split(const std::string& text) {
  std::vector<std::string> parts;
  std::stringstream stream(text);
  std::string part;
  while (std::getline(stream, part, ',')) parts.push_back(part);
  return parts;
}

// Runs argv as a process, waits at most `timeout`, with its output to `log`. Its
// ru_maxrss is at least the benchmark's own peak RSS at the time: a spawned child takes its
// parent's memory high-water mark with it through exec. main() prints that floor.
struct TreePeaks;
void SamplePeaks(TreePeaks& peaks, pid_t root);

Run RunProcess(const std::vector<std::string>& argv, const std::string& log, int timeout_s,
               TreePeaks* peaks = nullptr) {
  std::vector<char*> args;
  for (const auto& arg : argv) args.push_back(const_cast<char*>(arg.c_str()));
  args.push_back(nullptr);
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, 1, log.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
  posix_spawn_file_actions_adddup2(&actions, 1, 2);
  pid_t pid = 0;
  const auto start = Clock::now();
  if (posix_spawn(&pid, args[0], &actions, nullptr, args.data(), environ) != 0) {
    Die("cannot start " + argv[0]);
  }
  posix_spawn_file_actions_destroy(&actions);
  Run run;
  int status = 0;
  rusage usage{};
  // Unsampled, its end is waited for as it comes (a pidfd), not found by a poll that adds
  // up to a millisecond to each run.
  const int pidfd = peaks == nullptr ? static_cast<int>(syscall(SYS_pidfd_open, pid, 0)) : -1;
  while (true) {
    if (pidfd >= 0) {
      pollfd exited{pidfd, POLLIN, 0};
      const auto left = std::chrono::seconds(timeout_s) - (Clock::now() - start);
      poll(&exited, 1,
           static_cast<int>(std::max<long>(
               0, std::chrono::duration_cast<std::chrono::milliseconds>(left).count())));
    }
    const pid_t done = wait4(pid, &status, WNOHANG, &usage);
    if (done == pid) break;
    if (peaks != nullptr) SamplePeaks(*peaks, pid);
    if (Clock::now() - start > std::chrono::seconds(timeout_s)) {
      kill(pid, SIGKILL);
      wait4(pid, &status, 0, &usage);
      if (pidfd >= 0) close(pidfd);
      run.max_rss_kib = usage.ru_maxrss;
      return run;
    }
    if (pidfd < 0) std::this_thread::sleep_for(1ms);  // the benchmark's own wait
  }
  run.seconds = std::chrono::duration<double>(Clock::now() - start).count();
  if (pidfd >= 0) close(pidfd);
  run.max_rss_kib = usage.ru_maxrss;
  run.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  return run;
}

// Runs `work` in a child process (a reference loop), like RunProcess.
Run RunReference(const std::function<void()>& work) {
  const auto start = Clock::now();
  const pid_t pid = fork();
  if (pid < 0) Die("fork");
  if (pid == 0) {
    work();
    _exit(0);
  }
  Run run;
  int status = 0;
  rusage usage{};
  wait4(pid, &status, 0, &usage);
  run.seconds = std::chrono::duration<double>(Clock::now() - start).count();
  run.max_rss_kib = usage.ru_maxrss;
  run.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128;
  return run;
}

std::string Content(std::size_t i) {
  std::mt19937 random(static_cast<unsigned>(i));
  std::string text = "file " + std::to_string(i) + "\n";
  while (text.size() < 1023) text += static_cast<char>('a' + random() % 26);
  return text + "\n";
}

// The repo-relative name of file i: flat "f/00042", nested "f/d000/00042".
std::string NameOf(const std::string& layout, std::size_t i) {
  char name[32];
  if (layout == "flat") {
    std::snprintf(name, sizeof(name), "f/%05zu", i);
  } else {
    std::snprintf(name, sizeof(name), "f/d%03zu/%05zu", i / 100, i);
  }
  return name;
}

// A fleet repo with `n` files and hosts/bench.toml declaring them (in roles of 1,000, as a
// profile file may hold at most 1 MiB), made with git fast-import.
void MakeRepo(const std::string& repo, const std::string& layout, std::size_t n) {
  fs::remove_all(repo);
  if (std::system(("git init -q -b main '" + repo + "'").c_str()) != 0) Die("git init");
  // Written as it is made: held whole, the stream of 50,000 files would be the bench's
  // largest memory, and each child's ru_maxrss starts at its parent's peak (see RunProcess).
  const std::string import = repo + "/import";
  std::ofstream stream(import);
  stream << "commit refs/heads/main\ncommitter bench <b@example.com> 0 +0000\ndata 5\nbench\n";
  auto add = [&](const std::string& path, const std::string& data) {
    stream << "M 100644 inline " << path << "\ndata " << data.size() << "\n" << data << "\n";
  };
  std::string host = "include = [";
  for (std::size_t role = 0; role * 1000 < n; ++role) {
    std::string text;
    for (std::size_t i = role * 1000; i < std::min(n, (role + 1) * 1000); ++i) {
      const std::string name = NameOf(layout, i);
      text += "[[file]]\npath = \"/srv/b/" + name + "\"\nsource = \"" + name + "\"\n";
      add(name, Content(i));
    }
    char role_name[32];
    std::snprintf(role_name, sizeof(role_name), "roles/r%03zu.toml", role);
    add(role_name, text);
    host += std::string(role == 0 ? "" : ", ") + "\"" + role_name + "\"";
  }
  // The directories (/srv itself is there: the root is made with it).
  host += "]\n[[directory]]\npath = \"/srv/b\"\n[[directory]]\npath = \"/srv/b/f\"\n";
  if (layout != "flat") {
    for (std::size_t d = 0; d * 100 < n; ++d) {
      char dir[32];
      std::snprintf(dir, sizeof(dir), "/srv/b/f/d%03zu", d);
      host += "[[directory]]\npath = \"" + std::string(dir) + "\"\n";
    }
  }
  add("hosts/bench.toml", host);
  stream.close();
  if (std::system(("git -C '" + repo + "' fast-import --quiet < '" + import + "'").c_str()) != 0) {
    Die("git fast-import");
  }
  fs::remove(import);
}

std::string Config(const std::string& repo) {
  return "[source]\nurl = \"file://" + repo +
         "\"\nref = \"refs/heads/main\"\nprofile = \"hosts/bench.toml\"\ninterval = \"1h\"\n"
         "timeout = \"600s\"\n[trust]\nrequire_signed = false\n"
         "[apply]\nallowed_paths = [\"/srv\"]\n";
}

// The reference of a no-op: lstat, read and SHA-256 of every file.
void HashAll(const std::vector<std::string>& paths) {
  std::string buffer;
  for (const auto& path : paths) {
    struct stat st {};
    if (lstat(path.c_str(), &st) != 0) _exit(1);
    const int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) _exit(1);
    buffer.resize(static_cast<std::size_t>(st.st_size));
    if (read(fd, buffer.data(), buffer.size()) != st.st_size) _exit(1);
    close(fd);
    volatile auto digest = tether::Sha256Bytes(buffer)[0];
    (void)digest;
  }
}

// The reference of a first apply: write + fsync + rename of every file, then fsync of
// each directory.
void WriteAll(const std::string& root, const std::string& layout, std::size_t n) {
  std::string last_dir;
  for (std::size_t i = 0; i < n; ++i) {
    const std::string path = root + "/" + NameOf(layout, i);
    const std::string dir = path.substr(0, path.rfind('/'));
    if (dir != last_dir) {
      fs::create_directories(dir);
      last_dir = dir;
    }
    const std::string temp = path + ".tmp";
    const int fd = open(temp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    const std::string data = Content(i);
    if (fd < 0 || write(fd, data.data(), data.size()) != static_cast<ssize_t>(data.size()) ||
        fsync(fd) != 0) {
      _exit(1);
    }
    close(fd);
    if (rename(temp.c_str(), path.c_str()) != 0) _exit(1);
  }
  for (const auto& entry : fs::recursive_directory_iterator(root)) {
    if (!entry.is_directory()) continue;
    const int fd = open(entry.path().c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    fsync(fd);
    close(fd);
  }
}

double Median(std::vector<double> values) {
  std::sort(values.begin(), values.end());
  return values.empty() ? -1 : values[values.size() / 2];
}

double Percentile(std::vector<double> values, double p) {
  if (values.empty()) return -1;
  std::sort(values.begin(), values.end());
  const auto index = static_cast<std::size_t>(p * static_cast<double>(values.size() - 1) + 0.5);
  return values[std::min(index, values.size() - 1)];
}

std::string Seconds(double s) {
  char text[32];
  if (s < 0) return "timed out";
  std::snprintf(text, sizeof(text), s < 1 ? "%.0f ms" : "%.2f s", s < 1 ? s * 1000 : s);
  return text;
}

std::string Ratio(double tether, double reference) {
  char text[32];
  if (tether < 0 || reference <= 0) return "-";
  std::snprintf(text, sizeof(text), "%.2fx", tether / reference);
  return text;
}

std::string MiB(long kib) {
  char text[32];
  std::snprintf(text, sizeof(text), "%.1f MiB", static_cast<double>(kib) / 1024);
  return text;
}

long StatusField(pid_t pid, const char* name) {
  std::ifstream status("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(status, line)) {
    if (line.rfind(name, 0) == 0) return std::atol(line.c_str() + std::strlen(name));
  }
  return -1;
}

// The peak RSS (VmHWM) of each process of a tree, by role: "tetherd" (the daemon),
// "cycle" (tetherd-cycle: tetherd --once, a cycle of the daemon's), "git worker". Sampled: a
// process's peak up to the last sample before it ended. Sampling costs the machine a
// little, so the timed runs are not sampled.
struct TreePeaks {
  std::map<std::string, long> kib;

  void Sample(pid_t root) { Visit(root); }

 private:
  static std::string RoleOf(pid_t pid) {
    std::ifstream in("/proc/" + std::to_string(pid) + "/cmdline", std::ios::binary);
    std::vector<std::string> args;
    for (std::string arg; std::getline(in, arg, '\0');) args.push_back(arg);
    if (args.empty()) return "";
    for (const auto& arg : args) {
      if (arg == "--git-worker") return "git worker";
    }
    // The program, not argv[0]: tetherd is a link to tetherd-cycle.
    std::error_code error;
    const auto exe = fs::read_symlink("/proc/" + std::to_string(pid) + "/exe", error);
    const std::string program = (error ? fs::path(args[0]) : exe).filename().string();
    // tetherd becomes tetherd-daemon in place (exec): the same process, the user's tetherd.
    if (program == "tetherd-daemon") return "tetherd";
    return program == "tetherd-cycle" ? "cycle" : program;
  }

  void Visit(pid_t pid) {
    const long peak = StatusField(pid, "VmHWM:");
    const std::string role = RoleOf(pid);
    if (peak > 0 && !role.empty()) kib[role] = std::max(kib[role], peak);
    // Every thread's children: the daemon starts cycles from a worker thread.
    std::error_code error;
    for (const auto& task :
         fs::directory_iterator("/proc/" + std::to_string(pid) + "/task", error)) {
      std::ifstream children(task.path() / "children");
      for (pid_t child = 0; children >> child;) Visit(child);
    }
  }
};

void SamplePeaks(TreePeaks& peaks, pid_t root) { peaks.Sample(root); }

std::string PeakOf(const TreePeaks& peaks, const std::string& role) {
  auto it = peaks.kib.find(role);
  return it == peaks.kib.end() ? "-" : MiB(it->second);
}

// Waits until `path` holds `want` (watching its directory), at most `limit`.
bool WaitForContent(int inotify, const std::string& path, const std::string& want,
                    std::chrono::milliseconds limit) {
  const auto deadline = Clock::now() + limit;
  auto matches = [&] {
    std::ifstream in(path, std::ios::binary);
    std::stringstream text;
    text << in.rdbuf();
    return text.str() == want;
  };
  while (true) {
    if (matches()) return true;
    const auto left =
        std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
    if (left <= 0ms) return false;
    pollfd ready{inotify, POLLIN, 0};
    if (poll(&ready, 1, static_cast<int>(std::min<long>(left.count(), 50))) == 1) {
      char buffer[4096];
      (void)read(inotify, buffer, sizeof(buffer));
    }
  }
}

// The wall clock, to find a missed edit in the daemon's log.
std::string Stamp() {
  const auto now = std::chrono::system_clock::now();
  const std::time_t seconds = std::chrono::system_clock::to_time_t(now);
  char text[32];
  std::strftime(text, sizeof(text), "%H:%M:%S", std::gmtime(&seconds));
  return text;
}

struct DaemonFigures {
  std::vector<double> latencies;  // seconds, of the edits that came back
  std::size_t missed = 0;
  // Of as many edits more, each made as soon as the last was back (its repair still
  // writing the state and the daemon taking stock): a person who edits files one after
  // another, faster than anyone types.
  std::vector<double> back_to_back;
  std::size_t back_to_back_missed = 0;
  long idle_rss_kib = 0;
  long peak_rss_kib = 0;
  TreePeaks peaks;  // sampled at the start and over 20 more edits, untimed
};

// Samples the tree under `root` every millisecond while it lives.
class Sampler {
 public:
  Sampler(TreePeaks& peaks, pid_t root)
      : thread_([this, &peaks, root] {
          while (!stop_) {
            peaks.Sample(root);
            std::this_thread::sleep_for(1ms);
          }
        }) {}
  ~Sampler() {
    stop_ = true;
    thread_.join();
  }

 private:
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

DaemonFigures MeasureDaemon(const std::string& tetherd, const std::string& work,
                            const std::string& layout, std::size_t n, std::size_t edits) {
  DaemonFigures figures;
  const std::string socket = work + "/tether.sock";
  std::vector<std::string> argv = {tetherd,         "--config",      work + "/agent.toml",
                                   "--state-dir",   work + "/state", "--cache-dir",
                                   work + "/cache", "--root",        work + "/root",
                                   "--socket",      socket};
  std::vector<char*> args;
  for (const auto& arg : argv) args.push_back(const_cast<char*>(arg.c_str()));
  args.push_back(nullptr);
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  const std::string log = work + "/daemon.log";
  posix_spawn_file_actions_addopen(&actions, 2, log.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
  pid_t pid = 0;
  if (posix_spawn(&pid, args[0], &actions, nullptr, args.data(), environ) != 0) Die("tetherd");
  posix_spawn_file_actions_destroy(&actions);
  // Synced, and idle: no cycle running.
  {
    Sampler sampler(figures.peaks, pid);  // the start cycle
    const auto until = Clock::now() + 600s;
    while (Clock::now() < until) {
      auto status = tether::CallDaemon(socket, {{"command", "status"}}, 10s);
      if (status && status->value("state", "") == "synced") break;
      std::this_thread::sleep_for(50ms);
    }
  }
  std::this_thread::sleep_for(2s);
  figures.idle_rss_kib = StatusField(pid, "VmRSS:");
  const int inotify = inotify_init1(IN_CLOEXEC | IN_NONBLOCK);
  std::mt19937 random(7);
  // Until the daemon has no cycle running (the benchmark's wait, not the product's).
  auto wait_idle = [&] {
    const auto until = Clock::now() + 10s;
    while (Clock::now() < until) {
      auto status = tether::CallDaemon(socket, {{"command", "status"}}, 10s);
      if (status && status->value("state", "") != "applying") return;
      std::this_thread::sleep_for(2ms);
    }
  };
  // `count` edits, each of a file picked at random, timed until it is back. With
  // `settled`, each waits for the daemon to be idle, but every 10th comes while the repair
  // of another file is under way; without, each comes as soon as the last is back.
  auto run_edits = [&](std::size_t count, bool settled, std::vector<double>* latencies,
                       std::size_t* missed) {
    for (std::size_t e = 0; e < count; ++e) {
      const std::size_t i = random() % n;
      const std::string path = work + "/root/srv/b/" + NameOf(layout, i);
      const int watch = inotify_add_watch(inotify, fs::path(path).parent_path().c_str(),
                                          IN_CLOSE_WRITE | IN_MOVED_TO | IN_ATTRIB);
      const std::string want = Content(i);
      if (settled) wait_idle();
      if (settled && e % 10 == 9) {
        const std::size_t j = (i + 1) % n;
        std::ofstream(work + "/root/srv/b/" + NameOf(layout, j)) << "edited by hand first\n";
        std::this_thread::sleep_for(20ms);
      }
      const auto start = Clock::now();
      std::ofstream(path) << "edited by hand\n";
      const bool back = WaitForContent(inotify, path, want, 10s);
      inotify_rm_watch(inotify, watch);
      if (latencies == nullptr) continue;
      if (back) {
        latencies->push_back(std::chrono::duration<double>(Clock::now() - start).count());
      } else {
        ++*missed;
        std::fprintf(stderr, "fleet_bench: edit %zu of %s not back within 10 s (at %s)\n", e,
                     path.c_str(), Stamp().c_str());
      }
    }
  };
  run_edits(edits, true, &figures.latencies, &figures.missed);
  run_edits(edits, false, &figures.back_to_back, &figures.back_to_back_missed);
  std::optional<Sampler> sampler;
  sampler.emplace(figures.peaks, pid);
  run_edits(20, true, nullptr, nullptr);  // 20 more, not timed
  sampler.reset();
  close(inotify);
  figures.peak_rss_kib = StatusField(pid, "VmHWM:");
  kill(pid, SIGTERM);
  int status = 0;
  waitpid(pid, &status, 0);
  return figures;
}

std::string WorkDir(const Options& options, const std::string& layout, std::size_t n) {
  return options.dir + "/fleet-bench-" + layout + "-" + std::to_string(n);
}

void Bench(const Options& options, const std::string& tetherd, const std::string& fleet_ref) {
  // What an earlier run left (--keep), removed before anything is measured.
  for (const auto& layout : options.layouts) {
    for (const std::size_t n : options.sizes) fs::remove_all(WorkDir(options, layout, n));
  }
  std::printf(
      "| layout | files | first apply (ref) | ratio | no-op (loop / C program) | ratio | "
      "1%% drift (loop / C program) | ratio | peak RSS --once |\n"
      "|---|---|---|---|---|---|---|---|---|\n");
  std::vector<std::string> daemon_rows;
  std::vector<std::string> peak_rows;
  for (const auto& layout : options.layouts) {
    for (const std::size_t n : options.sizes) {
      const std::string work = WorkDir(options, layout, n);
      fs::create_directories(work + "/root/srv");
      MakeRepo(work + "/repo", layout, n);
      std::ofstream(work + "/agent.toml") << Config(work + "/repo");
      const std::vector<std::string> once = {
          tetherd,         "--once", "--config",     work + "/agent.toml", "--state-dir",
          work + "/state", "--root", work + "/root", "--cache-dir",        work + "/cache"};
      const std::string log = work + "/once.log";
      std::vector<std::string> paths;
      for (std::size_t i = 0; i < n; ++i)
        paths.push_back(work + "/root/srv/b/" + NameOf(layout, i));
      // The C program's list of what to hash (as tetherd's inventory lists what it wrote).
      {
        std::ofstream list(work + "/paths");
        for (const auto& path : paths) list << path << '\n';
      }
      const std::vector<std::string> hash_program = {fleet_ref, work + "/paths"};
      auto program = [&] {
        const Run run = RunProcess(hash_program, log, options.timeout_s);
        if (run.exit_code != 0) Die("fleet_ref failed: see " + log);
        return run.seconds;
      };

      // tetherd --once into the empty state, root and cache dirs of `into`.
      auto first_apply_into = [&](const std::string& into) {
        fs::create_directories(into + "/root/srv");
        std::vector<std::string> argv = once;
        for (std::size_t i = 0; i + 1 < argv.size(); ++i) {
          for (const char* dir : {"/state", "/root", "/cache"}) {
            if (argv[i + 1] == work + dir) argv[i + 1] = into + dir;
          }
        }
        return argv;
      };
      // The first applies: each into empty dirs of its own (the last into those the runs
      // below use), beside a reference run into another empty one.
      std::vector<double> first, write_ref;
      long peak = 0;
      bool failed = false;
      for (int round = options.first_rounds - 1; round >= 0 && !failed; --round) {
        const std::string into = round == 0 ? work : work + "/first-" + std::to_string(round);
        const Run run = RunProcess(first_apply_into(into), log, options.timeout_s);
        failed = run.exit_code != 0;
        first.push_back(run.seconds);
        peak = std::max(peak, run.max_rss_kib);
        write_ref.push_back(RunReference([&] { WriteAll(into + "/ref", layout, n); }).seconds);
      }
      if (failed) {  // the other sizes' figures are still worth having
        std::printf("| %s | %zu | first apply failed: see %s |\n", layout.c_str(), n, log.c_str());
        continue;
      }
      std::vector<double> noop, noop_ref, noop_program, drift, drift_ref, drift_program;
      for (int round = 0; round < options.rounds; ++round) {
        const Run run = RunProcess(once, log, options.timeout_s);
        noop.push_back(run.seconds);
        peak = std::max(peak, run.max_rss_kib);
        noop_ref.push_back(RunReference([&] { HashAll(paths); }).seconds);
        noop_program.push_back(program());
      }
      for (int round = 0; round < options.rounds; ++round) {
        for (std::size_t i = round % 100; i < n; i += 100) std::ofstream(paths[i]) << "drift\n";
        const Run run = RunProcess(once, log, options.timeout_s);
        drift.push_back(run.seconds);
        peak = std::max(peak, run.max_rss_kib);
        drift_ref.push_back(RunReference([&] { HashAll(paths); }).seconds);
        drift_program.push_back(program());
      }
      // Each process's peak, sampled in one more first apply (the only run whose git
      // worker fetches: it reads every object of the repo), no-op and drift run (untimed).
      TreePeaks first_peaks;
      (void)RunProcess(first_apply_into(work + "/first-sampled"), log, options.timeout_s,
                       &first_peaks);
      TreePeaks once_peaks;
      (void)RunProcess(once, log, options.timeout_s, &once_peaks);
      for (std::size_t i = 3; i < n; i += 100) std::ofstream(paths[i]) << "drift\n";
      (void)RunProcess(once, log, options.timeout_s, &once_peaks);
      // "8 ms (6 ms / 7 ms) | 1.42x / 1.10x": tether, the loop, the C program; the ratios.
      auto beside = [](const std::vector<double>& ours, const std::vector<double>& loop,
                       const std::vector<double>& c_program) {
        return Seconds(Median(ours)) + " (" + Seconds(Median(loop)) + " / " +
               Seconds(Median(c_program)) + ") | " + Ratio(Median(ours), Median(loop)) + " / " +
               Ratio(Median(ours), Median(c_program));
      };
      std::printf("| %s | %zu | %s (%s) | %s | %s | %s | %s |\n", layout.c_str(), n,
                  Seconds(Median(first)).c_str(), Seconds(Median(write_ref)).c_str(),
                  Ratio(Median(first), Median(write_ref)).c_str(),
                  beside(noop, noop_ref, noop_program).c_str(),
                  beside(drift, drift_ref, drift_program).c_str(), MiB(peak).c_str());
      std::fflush(stdout);
      char peaks_row[256];
      std::snprintf(peaks_row, sizeof(peaks_row), "| %s | %zu | %s | %s | %s | %s |",
                    layout.c_str(), n, PeakOf(first_peaks, "cycle").c_str(),
                    PeakOf(first_peaks, "git worker").c_str(), PeakOf(once_peaks, "cycle").c_str(),
                    PeakOf(once_peaks, "git worker").c_str());
      std::string peaks_line = peaks_row;
      if (options.daemon) {
        const DaemonFigures daemon = MeasureDaemon(tetherd, work, layout, n, options.edits);
        std::snprintf(peaks_row, sizeof(peaks_row), " %s | %s | %s |",
                      PeakOf(daemon.peaks, "tetherd").c_str(),
                      PeakOf(daemon.peaks, "cycle").c_str(),
                      PeakOf(daemon.peaks, "git worker").c_str());
        peaks_line += peaks_row;
        char row[384];
        std::snprintf(row, sizeof(row),
                      "| %s | %zu | %s | %s | %s | %zu of %zu | %s | %s | %zu of %zu | %s | %s |",
                      layout.c_str(), n, Seconds(Median(daemon.latencies)).c_str(),
                      Seconds(Percentile(daemon.latencies, 0.99)).c_str(),
                      Seconds(Percentile(daemon.latencies, 1.0)).c_str(), daemon.missed,
                      options.edits, Seconds(Median(daemon.back_to_back)).c_str(),
                      Seconds(Percentile(daemon.back_to_back, 0.99)).c_str(),
                      daemon.back_to_back_missed, options.edits, MiB(daemon.idle_rss_kib).c_str(),
                      MiB(daemon.peak_rss_kib).c_str());
        daemon_rows.push_back(row);
      }
      peak_rows.push_back(peaks_line);
    }
  }
  // Removed at the end, not between sizes: ext4 passes over the inodes freed in the last
  // minutes when it allocates new ones, which would slow whatever is measured next.
  if (!options.keep) {
    for (const auto& layout : options.layouts) {
      for (const std::size_t n : options.sizes) fs::remove_all(WorkDir(options, layout, n));
    }
  }
  if (!daemon_rows.empty()) {
    std::printf(
        "\n| layout | files | edit reverted: median | p99 | max | missed | back to back: median | "
        "p99 | missed | daemon idle RSS | daemon peak RSS |\n"
        "|---|---|---|---|---|---|---|---|---|---|---|\n");
    for (const auto& row : daemon_rows) std::printf("%s\n", row.c_str());
  }
  std::printf(
      "\nPeak RSS (VmHWM) of each process, sampled every millisecond in one more first apply, "
      "no-op\nand 1%% drift run of tetherd --once (which is the cycle process), and in the "
      "daemon's start\nand 20 more edits:\n\n"
      "| layout | files | first apply: cycle | git worker | no-op, drift: cycle | git worker "
      "|%s\n|---|---|---|---|---|---|%s\n",
      options.daemon ? " daemon: tetherd | cycle | git worker |" : "",
      options.daemon ? "---|---|---|" : "");
  for (const auto& row : peak_rows) std::printf("%s\n", row.c_str());
}

}  // namespace

int main(int argc, char** argv) {
  Options options;
  const char* tmp = std::getenv("TMPDIR");
  options.dir = tmp != nullptr ? tmp : "/tmp";
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) Die(arg + " needs a value");
      return argv[++i];
    };
    if (arg == "--sizes") {
      options.sizes.clear();
      for (const auto& size : Split(value())) options.sizes.push_back(std::stoul(size));
    } else if (arg == "--layouts") {
      options.layouts = Split(value());
    } else if (arg == "--edits") {
      options.edits = std::stoul(value());
    } else if (arg == "--rounds") {
      options.rounds = std::max(1, std::stoi(value()));
    } else if (arg == "--first-rounds") {
      options.first_rounds = std::max(1, std::stoi(value()));
    } else if (arg == "--dir") {
      options.dir = value();
    } else if (arg == "--no-daemon") {
      options.daemon = false;
    } else if (arg == "--keep") {
      options.keep = true;
    } else if (arg == "--timeout") {
      options.timeout_s = std::stoi(value());
    } else {
      Die("unknown argument " + arg + " (see the comment at the top of fleet_bench.cpp)");
    }
  }
  const char* tetherd = std::getenv("TETHERD");
  if (tetherd == nullptr) Die("set TETHERD to the built tetherd");
  const std::string fleet_ref = (fs::read_symlink("/proc/self/exe").parent_path() / "fleet_ref");
  if (access(fleet_ref.c_str(), X_OK) != 0) Die("build " + fleet_ref + " too");
  Bench(options, fs::absolute(tetherd).string(), fleet_ref);
  std::printf("\nThe benchmark's own peak RSS, under which a --once peak is not measured: %s\n",
              MiB(StatusField(getpid(), "VmHWM:")).c_str());
  return 0;
}
