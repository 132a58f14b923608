// Benchmark: a push, its webhook, and the change applied on the host, as processes.
//
//   ninja -C build tests/bench/webhook_bench agent/tetherd agent/tetherd-daemon
//       agent/tetherd-cycle agent/tetherd-git agent/tetherd-http
//   TETHERD=build/agent/tetherd build/tests/bench/webhook_bench [PUSHES] [FILES]
//
// A fleet repo of FILES (default 100) managed files served by `git daemon`, tetherd as a
// daemon on it (a --root sandbox, poll interval 1 h: only the webhook brings a change),
// listening for webhooks. PUSHES times (default 50): a commit that changes 10 of the files
// lands in the repo (the push), curl sends the webhook as a forge does (X-Tether-Signature,
// HMAC-SHA256 of the body), and the clock stops when all 10 files on the host have their
// new content. Prints the median, p99 and max, and how many pushes were not applied within
// 10 s. Results go in docs/performance.md.
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "common/hmac.hpp"
#include "common/process.hpp"
#include "tests/support/git_repo.hpp"
#include "tests/support/git_server.hpp"
#include "tests/support/temp_dir.hpp"

namespace {

using Clock = std::chrono::steady_clock;

std::string Read(const std::string& path) {
  std::ifstream file(path, std::ios::binary);
  std::ostringstream text;
  text << file.rdbuf();
  return text.str();
}

double Percentile(std::vector<double> values, double fraction) {
  std::sort(values.begin(), values.end());
  const auto index = static_cast<std::size_t>(fraction * static_cast<double>(values.size() - 1));
  return values[index];
}

}  // namespace

int main(int argc, char** argv) {
  const int pushes = argc > 1 ? std::atoi(argv[1]) : 50;
  const int files = std::max(argc > 2 ? std::atoi(argv[2]) : 100, 10);
  const char* tetherd = std::getenv("TETHERD");
  signal(SIGPIPE, SIG_IGN);
  umask(022);
  tether::testing::TempDir git_root("webhook-bench-git");
  tether::testing::TempDir work("webhook-bench");
  const std::string repo = git_root.Path("fleet.git");
  tether::testing::CreateBareRepo(repo);
  std::map<std::string, std::string> tree;
  std::string profile = "[[directory]]\npath = \"/srv/app\"\n";
  for (int i = 0; i < files; ++i) {
    const std::string name = "f" + std::to_string(i);
    profile += "[[file]]\npath = \"/srv/app/" + name + "\"\nsource = \"files/" + name + "\"\n";
    tree["files/" + name] = "version 0 of " + name + "\n";
  }
  tree["hosts/bench.toml"] = profile;
  tether::testing::CommitFiles(repo, tree);
  tether::testing::GitDaemonServer server(git_root.path());

  const int port = tether::testing::PickFreePort();
  const std::string secret = "webhook-bench-secret";
  work.WriteFile("secret", secret + "\n");
  std::filesystem::create_directories(work.Path("root/srv"));
  work.WriteFile("agent.toml", "[source]\nurl = \"" + server.url("fleet.git") +
                                   "\"\nprofile = \"hosts/bench.toml\"\ninterval = \"1h\"\n"
                                   "[trust]\nrequire_signed = false\n"
                                   "[apply]\nallowed_paths = [\"/srv\"]\n"
                                   "[webhook]\nlisten = \"127.0.0.1:" +
                                   std::to_string(port) + "\"\nsecret_file = \"" +
                                   work.Path("secret") + "\"\n");
  tether::SpawnOptions spawn;
  spawn.argv = {tetherd != nullptr ? tetherd : "build/agent/tetherd",
                "--config",
                work.Path("agent.toml"),
                "--state-dir",
                work.Path("state"),
                "--cache-dir",
                work.Path("cache"),
                "--root",
                work.Path("root"),
                "--socket",
                work.Path("tether.sock")};
  spawn.stderr_path = work.Path("tetherd.log");
  auto daemon = tether::Spawn(spawn);
  if (!daemon) {
    std::fprintf(stderr, "tetherd: %s\n", daemon.error().message().c_str());
    return 1;
  }
  auto applied = [&](int version) {
    for (int i = 0; i < 10; ++i) {
      const std::string name = "f" + std::to_string(i);
      if (Read(work.Path("root/srv/app/" + name)) !=
          "version " + std::to_string(version) + " of " + name + "\n") {
        return false;
      }
    }
    return true;
  };
  const auto started = Clock::now();
  while (!applied(0)) {
    if (Clock::now() - started > std::chrono::seconds(60)) {
      std::fprintf(stderr, "the first apply did not happen:\n%s\n",
                   Read(work.Path("tetherd.log")).c_str());
      return 1;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(500));

  std::vector<double> latencies;
  int missed = 0;
  for (int push = 1; push <= pushes; ++push) {
    std::map<std::string, std::string> change;
    for (int i = 0; i < 10; ++i) {
      const std::string name = "f" + std::to_string(i);
      change["files/" + name] = "version " + std::to_string(push) + " of " + name + "\n";
    }
    tether::testing::CommitOptions commit;
    commit.replace_tree = false;
    commit.message = "push " + std::to_string(push);
    tether::testing::CommitFiles(repo, change, commit);
    const auto pushed = Clock::now();
    const std::string body = "{\"ref\":\"refs/heads/main\",\"push\":" + std::to_string(push) + "}";
    tether::RunOptions curl;
    curl.argv = {"curl",
                 "-sS",
                 "-o",
                 "/dev/null",
                 "-w",
                 "%{http_code}",
                 "-H",
                 "X-Tether-Signature: sha256=" + tether::HmacSha256Hex(secret, body),
                 "-H",
                 "Content-Type: application/json",
                 "--data-binary",
                 body,
                 "http://127.0.0.1:" + std::to_string(port) + "/hook"};
    auto sent = tether::Run(curl);
    if (!sent || sent->out != "202") {
      std::fprintf(stderr, "push %d: the webhook was not accepted: %s\n", push,
                   sent ? sent->out.c_str() : sent.error().message().c_str());
      ++missed;
      continue;
    }
    bool done = false;
    while (Clock::now() - pushed < std::chrono::seconds(10)) {
      if (applied(push)) {
        done = true;
        break;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    if (!done) {
      ++missed;
      continue;
    }
    latencies.push_back(std::chrono::duration<double, std::milli>(Clock::now() - pushed).count());
    // The next push after the cycle is over (its state written), as pushes come in practice.
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
  }
  daemon->Signal(SIGTERM);
  (void)daemon->Wait(std::chrono::seconds(20));
  if (latencies.empty()) {
    std::fprintf(stderr, "no push was applied\n%s\n", Read(work.Path("tetherd.log")).c_str());
    return 1;
  }
  std::printf(
      "| files | pushes | push -> applied: median | p99 | max | not applied within 10 s |\n"
      "|---:|---:|---:|---:|---:|---:|\n| %d | %d | %.0f ms | %.0f ms | %.0f ms | %d |\n",
      files, pushes, Percentile(latencies, 0.5), Percentile(latencies, 0.99),
      Percentile(latencies, 1.0), missed);
  return missed == 0 ? 0 : 1;
}
