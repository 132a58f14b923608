// container_run: runs one command inside a throwaway systemd container (SystemdContainer:
// a real systemd as PID 1, the host's /usr bound read-only, the build dir bound in) and
// always stops the container afterwards. For scripts (scripts/demo) that want the
// container of the system tests without writing C++.
//
//   container_run [OPTION]... -- COMMAND [ARG]...
//
//   --bind PATH[:PATH]      bind a host dir into the container, read-write (repeatable)
//   --bind-ro PATH[:PATH]   the same, read-only (repeatable)
//   --writable-usr          /usr and /var/lib/dpkg as overlays (for apt and dpkg inside)
//   --setenv NAME=VALUE     set for COMMAND (repeatable); COMMAND otherwise gets only
//                           PATH=/usr/sbin:/usr/bin:/sbin:/bin and LANG=C.UTF-8
//   --timeout SECONDS       COMMAND's deadline (default 900); it is SIGKILLed then
//
// COMMAND runs as root in all the container's namespaces, with "/" as its working
// directory, its stdout and stderr those of container_run (streamed as it runs), stdin
// /dev/null. SIGINT, SIGTERM and SIGHUP stop COMMAND and the container.
//
// Exit status: COMMAND's (124 when it timed out, 128+N when killed by signal N); 125 when
// the container could not be started or stopped cleanly, 2 on a usage error.
// REQUIRES: root (see tests/support/systemd_container.hpp).
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>
#include <vector>

#include "common/process.hpp"
#include "tests/support/systemd_container.hpp"

namespace {

using namespace std::chrono_literals;

constexpr int kUsage = 2;
constexpr int kHarnessFailed = 125;

volatile std::sig_atomic_t stop_signal = 0;

void OnSignal(int signal) { stop_signal = signal; }

struct Arguments {
  tether::testing::ContainerOptions container;
  std::vector<std::string> env;
  std::vector<std::string> command;
  long timeout_seconds = 900;
};

void Usage() {
  std::fprintf(stderr,
               "usage: container_run [--bind PATH[:PATH]]... [--bind-ro PATH[:PATH]]... "
               "[--writable-usr] [--setenv NAME=VALUE]... [--timeout SECONDS] -- COMMAND "
               "[ARG]...\n");
}

bool Parse(int argc, char** argv, Arguments& arguments) {
  for (int i = 1; i < argc; ++i) {
    const std::string_view arg = argv[i];
    const bool has_value = i + 1 < argc;
    if (arg == "--") {
      arguments.command.assign(argv + i + 1, argv + argc);
      return !arguments.command.empty();
    }
    if (arg == "--writable-usr") {
      arguments.container.writable_usr = true;
    } else if (arg == "--bind" && has_value) {
      arguments.container.binds.emplace_back(argv[++i]);
    } else if (arg == "--bind-ro" && has_value) {
      arguments.container.read_only_binds.emplace_back(argv[++i]);
    } else if (arg == "--setenv" && has_value &&
               std::string_view(argv[i + 1]).find('=') != std::string_view::npos) {
      arguments.env.emplace_back(argv[++i]);
    } else if (arg == "--timeout" && has_value) {
      char* end = nullptr;
      arguments.timeout_seconds = std::strtol(argv[++i], &end, 10);
      if (*end != '\0' || arguments.timeout_seconds <= 0) return false;
    } else {
      return false;
    }
  }
  return false;  // no "--"
}

// The nsenter command line that runs `command` in the container with its deadline
// enforced inside (as SystemdContainer::Run does: a deadline enforced from the host could
// leave the command running inside, reparented to the host's init).
std::vector<std::string> InsideArgv(const tether::testing::SystemdContainer& container,
                                    const Arguments& arguments) {
  std::vector<std::string> argv = {"/usr/bin/nsenter",
                                   "--target",
                                   std::to_string(container.pid1()),
                                   "--all",
                                   "--",
                                   "/usr/bin/timeout",
                                   "--signal=KILL",
                                   std::to_string(arguments.timeout_seconds),
                                   "/usr/bin/env",
                                   "--chdir=/"};
  argv.insert(argv.end(), arguments.env.begin(), arguments.env.end());
  argv.insert(argv.end(), arguments.command.begin(), arguments.command.end());
  return argv;
}

// Starts `argv` with our own stdout and stderr (inherited, not reopened: a reopened file
// would have an offset of its own, and the output of `container_run ... > file` would be
// overwritten by what the caller writes next), stdin /dev/null, in its own process group.
tether::Result<pid_t> SpawnSharingOutput(const std::vector<std::string>& argv) {
  std::vector<char*> args;
  for (const auto& arg : argv) args.push_back(const_cast<char*>(arg.c_str()));
  args.push_back(nullptr);
  std::vector<char*> env;
  for (const auto& entry : tether::kCleanEnvironment) {
    env.push_back(const_cast<char*>(entry.c_str()));
  }
  env.push_back(nullptr);

  posix_spawn_file_actions_t actions;
  posix_spawnattr_t attr;
  posix_spawn_file_actions_init(&actions);
  posix_spawnattr_init(&attr);
  posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0);
  sigset_t signals;
  sigemptyset(&signals);
  posix_spawnattr_setsigmask(&attr, &signals);
  sigfillset(&signals);
  posix_spawnattr_setsigdefault(&attr, &signals);
  posix_spawnattr_setpgroup(&attr, 0);
  posix_spawnattr_setflags(&attr,
                           POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETPGROUP);
  pid_t pid = -1;
  const int rc = posix_spawn(&pid, args[0], &actions, &attr, args.data(), env.data());
  posix_spawn_file_actions_destroy(&actions);
  posix_spawnattr_destroy(&attr);
  if (rc != 0) return tether::FailErrno(rc, "spawn '" + argv[0] + "'");
  return pid;
}

// Runs the command and waits for it, or for a stop signal. Returns the exit status.
int RunInside(const tether::testing::SystemdContainer& container, const Arguments& arguments) {
  auto spawned = SpawnSharingOutput(InsideArgv(container, arguments));
  if (!spawned) {
    std::fprintf(stderr, "container_run: %s\n", spawned.error().message().c_str());
    return kHarnessFailed;
  }
  tether::Child child(*spawned);  // owns it: killed (its group) and reaped on every return
  // The host-side backstop, past the deadline enforced inside.
  const auto deadline =
      std::chrono::steady_clock::now() + std::chrono::seconds(arguments.timeout_seconds) + 30s;
  while (true) {
    // Short waits, so that a stop signal is acted on at once.
    auto status = child.Wait(200ms);
    if (status) {
      if (WIFEXITED(*status)) {
        const int code = WEXITSTATUS(*status);
        // timeout(1) with --signal=KILL: the command's SIGKILL shows as 137.
        return code == 137 ? 124 : code;
      }
      return 128 + WTERMSIG(*status);
    }
    if (stop_signal != 0) {
      std::fprintf(stderr, "container_run: got signal %d, stopping the container\n",
                   static_cast<int>(stop_signal));
      child.Stop(SIGKILL, 0ms);
      return 128 + stop_signal;
    }
    if (std::chrono::steady_clock::now() > deadline) {
      std::fprintf(stderr, "container_run: the command did not end after its deadline\n");
      child.Stop(SIGKILL, 0ms);
      return 124;
    }
  }
}

}  // namespace

int main(int argc, char** argv) {
  Arguments arguments;
  if (!Parse(argc, argv, arguments)) {
    Usage();
    return kUsage;
  }
  struct sigaction action {};
  action.sa_handler = OnSignal;
  sigemptyset(&action.sa_mask);
  for (const int signal : {SIGINT, SIGTERM, SIGHUP}) sigaction(signal, &action, nullptr);

  auto container = tether::testing::SystemdContainer::Start(arguments.container);
  if (!container) {
    std::fprintf(stderr, "container_run: %s\n", container.error().message().c_str());
    return kHarnessFailed;
  }
  const int status = stop_signal != 0 ? 128 + stop_signal : RunInside(*container, arguments);
  if (auto stopped = container->Stop(); !stopped) {
    std::fprintf(stderr, "container_run: %s\n", stopped.error().message().c_str());
    return kHarnessFailed;
  }
  return status;
}
