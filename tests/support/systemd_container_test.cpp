#include "tests/support/systemd_container.hpp"

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include <doctest/doctest.h>

#include "common/process.hpp"
#include "tests/support/temp_dir.hpp"
#include "tests/support/wait_for.hpp"

using namespace std::chrono_literals;
using tether::RunResult;
using tether::testing::ContainerOptions;
using tether::testing::SystemdContainer;
using tether::testing::WaitFor;

namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

const bool kNotRoot = geteuid() != 0;

long long MillisecondsSince(Clock::time_point start) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - start).count();
}

// Runs `argv` in the container; fails the test when it cannot be run at all.
RunResult MustRun(const SystemdContainer& container, const std::vector<std::string>& argv) {
  auto result = container.Run(argv, 30s);
  REQUIRE_MESSAGE(result.has_value(), (result ? "" : result.error().message()));
  return *result;
}

std::string Out(const SystemdContainer& container, const std::vector<std::string>& argv) {
  std::string out = MustRun(container, argv).out;
  while (!out.empty() && out.back() == '\n') out.pop_back();
  return out;
}

SystemdContainer MustStart(const ContainerOptions& options = {}) {
  const auto start = Clock::now();
  auto container = SystemdContainer::Start(options);
  REQUIRE_MESSAGE(container.has_value(), (container ? "" : container.error().message()));
  MESSAGE("container '" << container->name() << "' ready in " << MillisecondsSince(start) << " ms");
  return std::move(*container);
}

// A process is gone when it does not exist or is a zombie (its parent, perhaps the host's
// init, has not reaped it yet).
bool ProcessGone(pid_t pid) {
  std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
  std::string text((std::istreambuf_iterator<char>(stat)), std::istreambuf_iterator<char>());
  if (text.empty()) return true;
  const auto paren = text.rfind(')');
  return paren != std::string::npos && paren + 2 < text.size() && text[paren + 2] == 'Z';
}

bool Mounted(const std::string& dir) {
  std::ifstream mountinfo("/proc/self/mountinfo");
  std::string line;
  while (std::getline(mountinfo, line)) {
    if (line.find(" " + dir + "/") != std::string::npos ||
        line.find(" " + dir + " ") != std::string::npos) {
      return true;
    }
  }
  return false;
}

struct Leftovers {
  pid_t nspawn_pid;
  pid_t pid1;
  std::string name;
  std::string dir;
  std::vector<std::string> cgroup_dirs;
};

Leftovers Remember(const SystemdContainer& container) {
  return {container.nspawn_pid(), container.pid1(), container.name(), container.dir(),
          container.cgroup_dirs()};
}

// Everything a container makes on the host is gone.
void CheckNothingLeft(const Leftovers& left) {
  CHECK(WaitFor([&] { return ProcessGone(left.nspawn_pid) && ProcessGone(left.pid1); }, 10s));
  CHECK_FALSE(left.cgroup_dirs.empty());
  for (const auto& dir : left.cgroup_dirs) CHECK_FALSE(fs::exists(dir));
  CHECK_FALSE(fs::exists("/run/systemd/nspawn/propagate/" + left.name));
  CHECK_FALSE(Mounted(left.dir));
  CHECK_FALSE(fs::exists(left.dir));
}

const char kSleeperUnit[] = R"([Unit]
Description=tether test sleeper

[Service]
Type=simple
ExecStart=/bin/sleep infinity
)";

}  // namespace

TEST_SUITE("system") {
  TEST_CASE("a container boots systemd, runs units and leaves nothing behind" *
            doctest::skip(kNotRoot)) {
    SystemdContainer container = MustStart();
    const Leftovers left = Remember(container);
    CHECK(container.name().rfind("tether-test-" + std::to_string(getpid()) + "-", 0) == 0);
    CHECK(container.pid1() > 0);
    for (const auto& dir : container.cgroup_dirs()) CHECK(fs::is_directory(dir));

    const std::string state = Out(container, {"systemctl", "is-system-running"});
    CHECK((state == "running" || state == "degraded"));
    CHECK(Out(container, {"systemd-detect-virt", "--container"}) == "systemd-nspawn");
    CHECK(Out(container, {"cat", "/proc/1/comm"}) == "systemd");
    CHECK(fs::exists("/proc/" + std::to_string(container.pid1()) +
                     "/root/run/dbus/system_bus_socket"));
    CHECK(container.bus_address() == "unix:path=/proc/" + std::to_string(container.pid1()) +
                                         "/root/run/dbus/system_bus_socket");

    // A unit written from the host into the container's /etc, started and stopped inside.
    {
      std::ofstream unit(container.root() + "/etc/systemd/system/tether-sleeper.service");
      unit << kSleeperUnit;
    }
    CHECK(MustRun(container, {"systemctl", "daemon-reload"}).ok());
    CHECK(MustRun(container, {"systemctl", "start", "tether-sleeper.service"}).ok());
    CHECK(Out(container, {"systemctl", "is-active", "tether-sleeper.service"}) == "active");
    CHECK(Out(container, {"systemctl", "show", "-P", "ExecMainPID", "tether-sleeper.service"}) !=
          "0");
    CHECK(MustRun(container, {"systemctl", "stop", "tether-sleeper.service"}).ok());
    CHECK(Out(container, {"systemctl", "is-active", "tether-sleeper.service"}) == "inactive");

    // A host-built binary from the build dir runs inside: this test executable itself.
    const std::string self = fs::read_symlink("/proc/self/exe").string();
    CHECK(self.rfind(container.build_dir() + "/", 0) == 0);
    const RunResult listed = MustRun(container, {self, "--list-test-cases"});
    CHECK(listed.ok());
    CHECK(listed.out.find("a container boots systemd") != std::string::npos);

    // Run passes input, environment and working directory inside.
    auto piped = container.Run({.argv = {"sh", "-c", "cat; echo \" $GREETING\"; pwd"},
                                .env = {"PATH=/usr/sbin:/usr/bin", "GREETING=hi"},
                                .cwd = "/etc/systemd",
                                .input = "from stdin"});
    REQUIRE(piped);
    CHECK(piped->out == "from stdin hi\n/etc/systemd\n");

    // Deadlines hold inside too.
    auto slow = container.Run({"sh", "-c", "sleep 30 & sleep 31"}, 200ms);
    REQUIRE(slow);
    CHECK(slow->timed_out);
    // All of it killed (and reaped by the container's systemd: pgrep also lists zombies).
    CHECK(WaitFor([&] { return !MustRun(container, {"pgrep", "-x", "sleep"}).ok(); }, 10s));

    // The reaper leaves a container alone while its test process lives.
    auto reaped = tether::Run({.argv = {TETHER_REAP_SCRIPT}});
    REQUIRE(reaped);
    CHECK(reaped->ok());
    CHECK(Out(container, {"systemctl", "is-system-running"}) == state);

    const auto stopping = Clock::now();
    const auto stopped = container.Stop();
    CHECK_MESSAGE(stopped.has_value(), (stopped ? "" : stopped.error().message()));
    MESSAGE("stopped in " << MillisecondsSince(stopping) << " ms");
    CheckNothingLeft(left);
    CHECK(container.pid1() == -1);
    CHECK(container.Stop().has_value());  // idempotent
    auto after = container.Run({"true"});
    REQUIRE_FALSE(after);
    CHECK(after.error().Is(std::errc::no_such_process));
  }

  TEST_CASE("two containers run at once, each with its own root" * doctest::skip(kNotRoot)) {
    Leftovers left_a;
    Leftovers left_b;
    {
      SystemdContainer a = MustStart();
      SystemdContainer b = MustStart();
      left_a = Remember(a);
      left_b = Remember(b);
      CHECK(a.name() != b.name());
      CHECK(a.pid1() != b.pid1());
      std::ofstream(a.root() + "/etc/tether-marker") << "a\n";
      CHECK(MustRun(a, {"test", "-f", "/etc/tether-marker"}).ok());
      CHECK_FALSE(MustRun(b, {"test", "-f", "/etc/tether-marker"}).ok());
      CHECK(Out(a, {"hostname"}) == a.name());
      CHECK(Out(b, {"hostname"}) == b.name());
    }  // the destructors stop both
    CheckNothingLeft(left_a);
    CheckNothingLeft(left_b);
  }

  TEST_CASE("writable_usr gives the container its own /usr and dpkg database" *
            doctest::skip(kNotRoot)) {
    SystemdContainer container = MustStart({.writable_usr = true});
    const Leftovers left = Remember(container);
    const std::string probe = "/usr/share/tether-overlay-probe-" + container.name();
    CHECK(MustRun(container, {"touch", probe}).ok());
    CHECK(MustRun(container, {"test", "-f", probe}).ok());
    CHECK_FALSE(fs::exists(probe));  // not on the host
    CHECK(Out(container, {"dpkg-query", "-W", "-f", "${Status}", "coreutils"}) ==
          "install ok installed");
    CHECK(MustRun(container, {"touch", "/var/lib/dpkg/tether-probe"}).ok());
    CHECK_FALSE(fs::exists("/var/lib/dpkg/tether-probe"));
    CHECK(container.Stop().has_value());
    CheckNothingLeft(left);
  }

  TEST_CASE("Stop kills what does not halt in time" * doctest::skip(kNotRoot)) {
    // No time to halt: nspawn is SIGKILLed, which leaves the container's PID 1 running;
    // Stop must kill it through the cgroups.
    SystemdContainer container = MustStart({.stop_timeout = 0ms});
    const Leftovers left = Remember(container);
    const auto stopped = container.Stop();
    CHECK_MESSAGE(stopped.has_value(), (stopped ? "" : stopped.error().message()));
    CheckNothingLeft(left);
  }

  TEST_CASE("a failed start says why and leaves nothing behind" * doctest::skip(kNotRoot)) {
    const std::string name = "tether-test-" + std::to_string(getpid()) + "-broken";
    auto container = SystemdContainer::Start(
        {.name = name, .binds = {"/nonexistent/tether-test-source"}, .ready_timeout = 20s});
    REQUIRE_FALSE(container);
    const std::string& message = container.error().message();
    CHECK(message.find("start systemd container '" + name + "'") != std::string::npos);
    CHECK(message.find("systemd-nspawn exited") != std::string::npos);
    // The tail of the nspawn log names the problem.
    CHECK(message.find("/nonexistent/tether-test-source") != std::string::npos);
    for (const char* parent : {"/sys/fs/cgroup/systemd/", "/sys/fs/cgroup/unified/"}) {
      CHECK_FALSE(fs::exists(parent + name));
    }

    CHECK(SystemdContainer::Start({.name = "not-a-test-machine"})
              .error()
              .Is(std::errc::invalid_argument));
  }

  TEST_CASE("a container halts when its test process dies; the reaper sweeps the rest" *
            doctest::skip(kNotRoot)) {
    // A child process starts a container, reports it and is SIGKILLed: no destructor runs.
    int report[2];
    REQUIRE(pipe(report) == 0);
    const pid_t test_process = fork();
    REQUIRE(test_process >= 0);
    if (test_process == 0) {
      close(report[0]);
      auto container = SystemdContainer::Start();
      std::string line = container ? std::to_string(container->nspawn_pid()) + " " +
                                         std::to_string(container->pid1()) + " " +
                                         container->name() + " " + container->dir() + "\n"
                                   : "error " + container.error().message() + "\n";
      if (write(report[1], line.data(), line.size()) < 0) _exit(1);
      raise(SIGKILL);
    }
    close(report[1]);
    std::string line;
    char buffer[4096];
    for (ssize_t n; (n = read(report[0], buffer, sizeof(buffer))) > 0;) line.append(buffer, n);
    close(report[0]);
    int status = 0;
    REQUIRE(waitpid(test_process, &status, 0) == test_process);
    CHECK(WIFSIGNALED(status));
    REQUIRE_MESSAGE(line.rfind("error", 0) != 0, line);

    Leftovers left;
    std::istringstream fields(line);
    fields >> left.nspawn_pid >> left.pid1 >> left.name >> left.dir;
    REQUIRE(left.pid1 > 0);
    for (const char* parent : {"/sys/fs/cgroup/systemd/", "/sys/fs/cgroup/unified/"}) {
      left.cgroup_dirs.push_back(parent + left.name);
    }

    // nspawn got SIGTERM from the kernel and halted the container.
    CHECK(WaitFor([&] { return ProcessGone(left.nspawn_pid) && ProcessGone(left.pid1); }, 20s));
    for (const auto& dir : left.cgroup_dirs) CHECK(fs::exists(dir));  // nobody removed them

    // The sweep the test command runs after the suites.
    auto reaped = tether::Run({.argv = {TETHER_REAP_SCRIPT}});
    REQUIRE(reaped);
    CHECK(reaped->ok());
    CHECK(reaped->err.find("reaped leftover test container " + left.name) != std::string::npos);
    auto again = tether::Run({.argv = {TETHER_REAP_SCRIPT}});
    REQUIRE(again);
    CHECK(again->ok());
    CHECK(again->err.find(left.name) == std::string::npos);  // quiet: nothing more to do

    // The killed test's temp dir is its own TempDir's business; remove it here.
    REQUIRE_FALSE(Mounted(left.dir));
    fs::remove_all(left.dir);
    CheckNothingLeft(left);
  }
}
