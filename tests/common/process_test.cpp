#include "common/process.hpp"

#include <fcntl.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <thread>

#include <doctest/doctest.h>

#include "tests/support/temp_dir.hpp"
#include "tests/support/wait_for.hpp"

using namespace std::chrono_literals;
using tether::Run;
using tether::RunOptions;

namespace {

RunOptions Sh(const std::string& script) {
  RunOptions options;
  options.argv = {"sh", "-c", script};
  options.timeout = 10s;
  return options;
}

bool ProcessExists(pid_t pid) { return kill(pid, 0) == 0 || errno != ESRCH; }

}  // namespace

TEST_CASE("Run captures stdout, stderr and the exit status") {
  auto result = Run(Sh("echo out; echo err >&2; exit 3"));
  REQUIRE(result);
  CHECK(result->out == "out\n");
  CHECK(result->err == "err\n");
  CHECK(result->exit_code == 3);
  CHECK_FALSE(result->ok());
  CHECK(result->Describe(10s) == "exited with status 3");
}

TEST_CASE("Run feeds input to stdin, and /dev/null without input") {
  auto options = Sh("cat");
  options.input = std::string(1 << 20, 'x');  // more than a pipe buffer holds
  auto result = Run(options);
  REQUIRE(result);
  CHECK(result->ok());
  CHECK(result->out.size() == 1 << 20);

  auto no_input = Run(Sh("cat"));
  REQUIRE(no_input);
  CHECK(no_input->ok());
  CHECK(no_input->out.empty());
}

TEST_CASE("Run gives the child only the environment it was given") {
  setenv("TETHER_SECRET_FROM_PARENT", "hunter2", 1);
  RunOptions env;
  env.argv = {"env"};
  auto clean = Run(env);
  REQUIRE(clean);
  CHECK(clean->out == "PATH=/usr/sbin:/usr/bin:/sbin:/bin\nLANG=C.UTF-8\n");

  auto custom = Sh("echo \"$ONLY\"");
  custom.env = {"PATH=/usr/bin:/bin", "ONLY=this"};
  auto result = Run(custom);
  REQUIRE(result);
  CHECK(result->out == "this\n");
  unsetenv("TETHER_SECRET_FROM_PARENT");
}

TEST_CASE("Run resolves the program in the child's PATH and reports a missing one") {
  RunOptions options;
  options.argv = {"tether-no-such-program"};
  auto result = Run(options);
  REQUIRE_FALSE(result);
  CHECK(result.error().Is(std::errc::no_such_file_or_directory));
  CHECK(result.error().message().find("'tether-no-such-program'") != std::string::npos);

  options.argv = {};
  CHECK_FALSE(Run(options));
}

TEST_CASE("Run kills the whole process group at the deadline") {
  tether::testing::TempDir dir("process");
  const std::string pid_file = dir.Path("grandchild.pid");
  auto options = Sh("sleep 100 & echo $! > " + pid_file + "; wait");
  options.timeout = 300ms;
  const auto start = std::chrono::steady_clock::now();
  auto result = Run(options);
  REQUIRE(result);
  CHECK(result->timed_out);
  CHECK(result->signal == SIGKILL);
  CHECK(std::chrono::steady_clock::now() - start < 5s);
  CHECK(result->Describe(options.timeout) == "timed out after 300 ms");
  const pid_t grandchild = std::stoi(dir.ReadFile("grandchild.pid"));
  CHECK(tether::testing::WaitFor([&] { return !ProcessExists(grandchild); }, 5s));
}

TEST_CASE("Run ends at once, killing the process group, when its cancel fd is written") {
  tether::testing::TempDir dir("process");
  const std::string pid_file = dir.Path("grandchild.pid");
  auto options = Sh("sleep 100 & echo $! > " + pid_file + "; wait");
  options.timeout = 60s;
  const int cancel = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  REQUIRE(cancel >= 0);
  options.cancel_fd = cancel;
  std::thread canceller([&] {
    std::this_thread::sleep_for(300ms);
    const std::uint64_t one = 1;
    CHECK(write(cancel, &one, sizeof(one)) == sizeof(one));
  });
  const auto start = std::chrono::steady_clock::now();
  auto result = Run(options);
  canceller.join();
  close(cancel);
  REQUIRE(result);
  CHECK(result->cancelled);
  CHECK_FALSE(result->timed_out);
  CHECK_FALSE(result->ok());
  CHECK(result->signal == SIGKILL);
  CHECK(std::chrono::steady_clock::now() - start < 30s);  // not the 60 s deadline, nor 100 s
  CHECK(result->Describe(options.timeout) == "cancelled");
  const pid_t grandchild = std::stoi(dir.ReadFile("grandchild.pid"));
  CHECK(tether::testing::WaitFor([&] { return !ProcessExists(grandchild); }, 5s));
}

TEST_CASE("Run starts children with default signals and no inherited descriptors") {
  signal(SIGPIPE, SIG_IGN);                        // as the daemon does
  const int leaked = open("/dev/null", O_RDONLY);  // no O_CLOEXEC
  REQUIRE(leaked >= 0);
  auto result = Run(Sh("grep -E '^Sig(Ign|Blk)' /proc/self/status; ls /proc/self/fd"));
  close(leaked);
  signal(SIGPIPE, SIG_DFL);
  REQUIRE(result);
  CHECK(result->out.find("SigBlk:\t0000000000000000") != std::string::npos);
  // The standard signals (1-31) are all back to their defaults; glibc keeps its own two
  // real-time signals (32, 33) to itself.
  const auto ignored_at = result->out.find("SigIgn:\t");
  REQUIRE(ignored_at != std::string::npos);
  const unsigned long long ignored =
      std::stoull(result->out.substr(ignored_at + 8, 16), nullptr, 16);
  CHECK((ignored & 0x7fffffffULL) == 0);
  // grep's own descriptors are gone by the time ls runs: ls sees 0, 1, 2 and its own dir fd.
  CHECK(result->out.find("\n0\n1\n2\n3\n") != std::string::npos);
  CHECK(result->out.find("\n4\n") == std::string::npos);
}

TEST_CASE("Run truncates output beyond max_output and still reaps the child") {
  auto options = Sh("head -c 100000 /dev/zero");
  options.max_output = 1000;
  auto result = Run(options);
  REQUIRE(result);
  CHECK(result->ok());
  CHECK(result->truncated);
  CHECK(result->out.size() == 1000);
}

TEST_CASE("Spawn starts a background child that Stop ends, and Wait times out") {
  tether::testing::TempDir dir("spawn");
  tether::SpawnOptions options;
  options.argv = {"sh", "-c", "echo started; exec sleep 100"};
  options.stdout_path = dir.Path("out.log");
  auto child = tether::Spawn(options);
  REQUIRE(child);
  const pid_t pid = child->pid();
  CHECK(tether::testing::WaitFor([&] { return dir.ReadFile("out.log") == "started\n"; }, 5s));
  auto waited = child->Wait(50ms);
  REQUIRE_FALSE(waited);
  CHECK(waited.error().Is(std::errc::timed_out));
  const int status = child->Stop(SIGTERM, 5s);
  CHECK(WIFSIGNALED(status));
  CHECK(WTERMSIG(status) == SIGTERM);
  CHECK_FALSE(child->running());
  CHECK_FALSE(ProcessExists(pid));
}

TEST_CASE("A Child that goes out of scope takes its process with it") {
  pid_t pid = -1;
  {
    tether::SpawnOptions options;
    options.argv = {"sleep", "100"};
    auto child = tether::Spawn(options);
    REQUIRE(child);
    pid = child->pid();
    CHECK(ProcessExists(pid));
  }
  CHECK_FALSE(ProcessExists(pid));
}

TEST_CASE("Child::Wait returns the exit status of a finished child") {
  tether::SpawnOptions options;
  options.argv = {"sh", "-c", "exit 7"};
  auto child = tether::Spawn(options);
  REQUIRE(child);
  auto status = child->Wait(10s);
  REQUIRE(status);
  CHECK(WIFEXITED(*status));
  CHECK(WEXITSTATUS(*status) == 7);
}
