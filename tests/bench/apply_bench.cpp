// Benchmark: the engine on N managed 1 KiB files, against two plain reference loops.
//
//   ninja -C build tests/bench/apply_bench && build/tests/bench/apply_bench [N...]
//
// For each N (default 100 1000 10000), in a fresh directory under $TMPDIR (a real disk,
// not tmpfs, so fsync costs what it costs; docs/performance.md says which), it measures:
//   loop (a)   lstat + read + SHA-256 compare of every file (what a naive no-op check costs)
//   loop (b)   write temp + fsync + rename of every file (a naive crash-safe write)
//   first apply      Plan + Apply of N files in N/100 directories, from nothing
//   no-op cycle      Plan (+ Apply, which has nothing to do) when nothing changed; the
//                    inventory stays in memory between cycles, as in the daemon
//   1% drift repair  Plan + Apply after 1% of the files were edited
//   drift latency    edit one file -> inotify -> plan that file -> reverted (median of 20)
//   peak RSS         of a child process that does all of the above for this N
// Results go in docs/performance.md.
#include <fcntl.h>
#include <malloc.h>
#include <poll.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "agent/daemon/drift_watcher.hpp"
#include "agent/desired/tree.hpp"
#include "agent/engine/engine.hpp"
#include "agent/kinds/checks/check_handler.hpp"
#include "agent/kinds/files/path_handler.hpp"
#include "common/sha256.hpp"
#include "tests/support/state_stores.hpp"
#include "tests/support/temp_dir.hpp"

namespace {

using Clock = std::chrono::steady_clock;

double Ms(Clock::time_point start) {
  return std::chrono::duration<double, std::milli>(Clock::now() - start).count();
}

// With APPLY_BENCH_STAGES set, the resident set (and its peak so far) and malloc's heap
// (its size, in use and free; and what is mapped apart) after each stage, on stderr: what
// the peak RSS column is made of.
void Stage(const char* what) {
  static const bool verbose = std::getenv("APPLY_BENCH_STAGES") != nullptr;
  if (!verbose) return;
  std::ifstream status("/proc/self/status");
  std::string line;
  std::string text = "  " + std::string(what) + ":";
  while (std::getline(status, line)) {
    for (const char* field : {"VmHWM:", "VmRSS:", "RssAnon:", "RssFile:"}) {
      if (line.rfind(field, 0) != 0) continue;
      const auto value = line.find_first_not_of(" \t", std::string(field).size());
      text += " " + line.substr(0, std::string(field).size()) + " " + line.substr(value);
    }
  }
  const struct mallinfo2 info = mallinfo2();
  text += " heap " + std::to_string(info.arena >> 10) + " kB (in use " +
          std::to_string(info.uordblks >> 10) + ", free " + std::to_string(info.fordblks >> 10) +
          ") mmap " + std::to_string(info.hblkhd >> 10) + " kB";
  std::fprintf(stderr, "%s\n", text.c_str());
}

std::string Content(int i) {
  std::string content = "file " + std::to_string(i) + "\n";
  content.resize(1024, 'x');
  return content;
}

std::string FilePath(int i) {
  return "/srv/bench/d" + std::to_string(i / 100) + "/f" + std::to_string(i);
}

// The desired state as tetherd renders it from a profile whose files have `source =`:
// contents are hashed, and read again from the repo tree only to be written or diffed.
tether::DesiredState MakeDesired(int n, const std::shared_ptr<tether::Tree>& tree) {
  tether::DesiredState state;
  state.resources.reserve(static_cast<std::size_t>(n + (n + 99) / 100));
  for (int d = 0; d < (n + 99) / 100; ++d) {
    tether::Resource resource;
    resource.kind = tether::ResourceKind::kDirectory;
    resource.id = "directory:/srv/bench/d" + std::to_string(d);
    tether::DirectorySpec spec;
    spec.path = "/srv/bench/d" + std::to_string(d);
    resource.spec = spec;
    state.resources.push_back(std::move(resource));
  }
  for (int i = 0; i < n; ++i) {
    tether::Resource resource;
    resource.kind = tether::ResourceKind::kFile;
    resource.id = "file:" + FilePath(i);
    tether::FileSpec spec;
    spec.path = FilePath(i);
    const std::string content = Content(i);
    spec.content_id = tether::ContentIdOf(content);
    spec.content_size = content.size();
    spec.source = "files/f" + std::to_string(i);
    spec.lazy = tree;
    resource.spec = spec;
    state.resources.push_back(std::move(resource));
  }
  return state;
}

void Bench(int n) {
  tether::testing::TempDir root("bench-apply-root");
  tether::testing::TempDir state("bench-apply-state");
  tether::testing::TempDir loops("bench-apply-loops");
  std::filesystem::create_directories(root.Path("srv/bench"));

  // Loop (b): write temp + fsync + rename, per file.
  auto start = Clock::now();
  for (int i = 0; i < n; ++i) {
    const std::string dir = loops.Path("d" + std::to_string(i / 100));
    if (i % 100 == 0) std::filesystem::create_directories(dir);
    const std::string path = dir + "/f" + std::to_string(i);
    const std::string content = Content(i);
    const int fd = open((path + ".tmp").c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (write(fd, content.data(), content.size()) < 0 || fsync(fd) != 0) std::abort();
    close(fd);
    std::rename((path + ".tmp").c_str(), path.c_str());
  }
  const double loop_b = Ms(start);

  // Loop (a): lstat + read + SHA-256 compare, per file.
  start = Clock::now();
  int same = 0;
  for (int i = 0; i < n; ++i) {
    const std::string path = loops.Path("d" + std::to_string(i / 100) + "/f" + std::to_string(i));
    struct stat st {};
    if (lstat(path.c_str(), &st) != 0) std::abort();
    std::ifstream file(path, std::ios::binary);
    const std::string content((std::istreambuf_iterator<char>(file)),
                              std::istreambuf_iterator<char>());
    same += tether::Sha256Hex(content) == tether::Sha256Hex(Content(i)) ? 1 : 0;
  }
  const double loop_a = Ms(start);
  if (same != n) std::abort();
  Stage("reference loops");

  auto fs = tether::RootedFilesystem::Open(root.path()).value();
  auto paths = tether::MakePathHandler(*fs);
  tether::Engine engine(tether::testing::HostStateStore(state.path()), tether::EngineOptions(),
                        {paths.get()});
  tether::testing::TempDir repo("bench-apply-repo");
  for (int i = 0; i < n; ++i) repo.WriteFile("files/f" + std::to_string(i), Content(i));
  std::shared_ptr<tether::Tree> tree = tether::DirectoryTree::Open(repo.path()).value();
  const tether::DesiredState desired = MakeDesired(n, tree);
  // The inventory stays in memory between cycles, as in the daemon.
  tether::Inventory inventory = engine.LoadInventory().value();
  Stage("desired state");
  auto converge = [&](const std::set<std::string>* only = nullptr) {
    auto plan = engine.Plan(desired, inventory, false, only).value();
    if (only == nullptr) Stage("plan");
    auto result = engine.Apply(plan, std::move(inventory), "c1");
    if (only == nullptr) Stage("apply");
    if (!result.ok) {
      std::fprintf(stderr, "apply: %s\n", result.error.c_str());
      std::exit(1);
    }
    inventory = std::move(result.inventory);
  };

  start = Clock::now();
  converge();
  const double first = Ms(start);
  Stage("first apply done");

  start = Clock::now();
  converge();
  const double noop = Ms(start);
  Stage("no-op cycle done");

  for (int i = 0; i < std::max(1, n / 100); ++i) {
    root.WriteFile(FilePath(i * 100 % n).substr(1), "edited\n");
  }
  start = Clock::now();
  converge();
  const double repair = Ms(start);
  Stage("1% repair done");

  // Drift latency: edit -> event -> plan of what the event names -> reverted.
  auto watcher = tether::DriftWatcher::Create(root.path()).value();
  {
    // Gone once watched, as in the daemon.
    std::map<std::string, std::string> watched;
    for (const auto& resource : desired.resources) {
      watched[resource.id.substr(resource.id.find(':') + 1)] = resource.id;
    }
    if (!watcher->Watch(watched)) std::abort();
  }
  std::vector<double> latencies;
  for (int k = 0; k < 20; ++k) {
    const int i = (k * 37) % n;
    start = Clock::now();
    root.WriteFile(FilePath(i).substr(1), "edited by hand\n");
    pollfd fd = {watcher->fd(), POLLIN, 0};
    if (poll(&fd, 1, 5000) != 1) std::abort();
    auto events = watcher->Read().value();
    converge(&events.ids);
    latencies.push_back(Ms(start));
    (void)watcher->Read();  // our own write
  }
  Stage("drift latency done");
  std::sort(latencies.begin(), latencies.end());
  if (root.ReadFile(FilePath(0).substr(1)) != Content(0)) std::abort();

  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  std::printf("| %6d | %9.1f | %9.1f | %11.1f | %11.1f | %13.1f | %12.2f | %8.1f |\n", n, loop_a,
              loop_b, first, noop, repair, latencies[latencies.size() / 2],
              static_cast<double>(usage.ru_maxrss) / 1024.0);
  std::fflush(stdout);
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<int> sizes;
  for (int i = 1; i < argc; ++i) sizes.push_back(std::atoi(argv[i]));
  if (sizes.empty()) sizes = {100, 1000, 10000};
  std::printf(
      "| files | loop (a) ms | loop (b) ms | first apply ms | no-op cycle ms | "
      "1%% repair ms | drift latency ms | peak RSS MiB |\n");
  std::printf("|---:|---:|---:|---:|---:|---:|---:|---:|\n");
  std::fflush(stdout);
  for (int n : sizes) {
    // One process per size, so peak RSS is this size's.
    const pid_t child = fork();
    if (child == 0) {
      Bench(n);
      std::_Exit(0);
    }
    int status = 0;
    waitpid(child, &status, 0);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) return 1;
  }
  return 0;
}
