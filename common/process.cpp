#include "common/process.hpp"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <string_view>

#include "common/unique_fd.hpp"

namespace tether {

const std::vector<std::string> kCleanEnvironment = {"PATH=/usr/sbin:/usr/bin:/sbin:/bin",
                                                    "LANG=C.UTF-8"};

namespace {

using Clock = std::chrono::steady_clock;

using Fd = UniqueFd;

Result<std::pair<Fd, Fd>> MakePipe() {
  int fds[2];
  if (pipe2(fds, O_CLOEXEC) != 0) return FailErrno(errno, "pipe");
  return std::make_pair(Fd(fds[0]), Fd(fds[1]));
}

std::string_view EnvValue(const std::vector<std::string>& env, std::string_view name) {
  for (const auto& entry : env) {
    if (entry.size() > name.size() && entry.compare(0, name.size(), name) == 0 &&
        entry[name.size()] == '=') {
      return std::string_view(entry).substr(name.size() + 1);
    }
  }
  return {};
}

// Resolves a program name against the PATH of the child's environment (posix_spawnp would
// use the caller's PATH instead).
Result<std::string> ResolveProgram(const std::string& program,
                                   const std::vector<std::string>& env) {
  if (program.empty()) return Fail(std::errc::invalid_argument, "empty program name");
  if (program.find('/') != std::string::npos) return program;
  std::string_view path = EnvValue(env, "PATH");
  while (!path.empty()) {
    const auto colon = path.find(':');
    const std::string_view dir = path.substr(0, colon);
    path = colon == std::string_view::npos ? std::string_view() : path.substr(colon + 1);
    if (dir.empty()) continue;
    std::string candidate = std::string(dir) + "/" + program;
    if (access(candidate.c_str(), X_OK) == 0) return candidate;
  }
  return Fail(std::errc::no_such_file_or_directory,
              "'" + program + "': not found in PATH of the child environment");
}

std::vector<char*> CStrings(const std::vector<std::string>& strings) {
  std::vector<char*> result;
  result.reserve(strings.size() + 1);
  for (const auto& s : strings) result.push_back(const_cast<char*>(s.c_str()));
  result.push_back(nullptr);
  return result;
}

// Spawns with the common settings of this file; `setup` adds the stdio file actions.
template <typename Setup>
Result<pid_t> SpawnWith(const std::vector<std::string>& argv, const std::vector<std::string>& env,
                        const std::string& cwd, Setup&& setup) {
  if (argv.empty()) return Fail(std::errc::invalid_argument, "empty argv");
  auto program = ResolveProgram(argv[0], env);
  if (!program) return Fail(program.error());

  posix_spawn_file_actions_t actions;
  posix_spawnattr_t attr;
  posix_spawn_file_actions_init(&actions);
  posix_spawnattr_init(&attr);
  setup(&actions);
  posix_spawn_file_actions_addclosefrom_np(&actions, 3);
  if (!cwd.empty()) posix_spawn_file_actions_addchdir_np(&actions, cwd.c_str());

  sigset_t empty_mask;
  sigemptyset(&empty_mask);
  sigset_t all_signals;
  sigfillset(&all_signals);
  posix_spawnattr_setsigmask(&attr, &empty_mask);
  posix_spawnattr_setsigdefault(&attr, &all_signals);
  posix_spawnattr_setpgroup(&attr, 0);
  posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF |
                                      POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_USEVFORK);

  auto child_argv = CStrings(argv);
  auto child_env = CStrings(env);
  pid_t pid = -1;
  const int rc =
      posix_spawn(&pid, program->c_str(), &actions, &attr, child_argv.data(), child_env.data());
  posix_spawn_file_actions_destroy(&actions);
  posix_spawnattr_destroy(&attr);
  if (rc != 0) return FailErrno(rc, "spawn '" + argv[0] + "'");
  return pid;
}

void KillGroup(pid_t pid, int signal) {
  if (pid <= 0) return;
  if (kill(-pid, signal) != 0) kill(pid, signal);
}

// Reaps `pid`, retrying on EINTR. Returns the wait status.
int Reap(pid_t pid) {
  int status = 0;
  while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  return status;
}

}  // namespace

std::string RunResult::Describe(std::chrono::milliseconds timeout) const {
  if (timed_out) return "timed out after " + std::to_string(timeout.count()) + " ms";
  if (cancelled) return "cancelled";
  if (signal != 0) {
    return "killed by signal " + std::to_string(signal) + " (" + strsignal(signal) + ")";
  }
  return "exited with status " + std::to_string(exit_code);
}

Result<RunResult> Run(const RunOptions& options) {
  auto out_pipe = MakePipe();
  if (!out_pipe) return Fail(out_pipe.error());
  auto err_pipe = MakePipe();
  if (!err_pipe) return Fail(err_pipe.error());
  std::optional<std::pair<Fd, Fd>> in_pipe;
  if (options.input) {
    auto made = MakePipe();
    if (!made) return Fail(made.error());
    in_pipe = std::move(*made);
  }

  auto pid = SpawnWith(options.argv, options.env, options.cwd, [&](auto* actions) {
    if (in_pipe) {
      posix_spawn_file_actions_adddup2(actions, in_pipe->first.get(), 0);
    } else {
      posix_spawn_file_actions_addopen(actions, 0, "/dev/null", O_RDONLY, 0);
    }
    posix_spawn_file_actions_adddup2(actions, out_pipe->second.get(), 1);
    posix_spawn_file_actions_adddup2(actions, err_pipe->second.get(), 2);
  });
  if (!pid) return Fail(pid.error());

  out_pipe->second.Reset();
  err_pipe->second.Reset();
  Fd in_fd;
  if (in_pipe) {
    in_pipe->first.Reset();
    in_fd = std::move(in_pipe->second);
    fcntl(in_fd.get(), F_SETFL, fcntl(in_fd.get(), F_GETFL) | O_NONBLOCK);
  }
  std::string_view pending_input = options.input ? std::string_view(*options.input) : "";
  if (in_fd.get() >= 0 && pending_input.empty()) in_fd.Reset();

  RunResult result;
  Fd out_fd = std::move(out_pipe->first);
  Fd err_fd = std::move(err_pipe->first);
  const auto deadline = Clock::now() + options.timeout;
  char buffer[16384];

  while (out_fd.get() >= 0 || err_fd.get() >= 0 || in_fd.get() >= 0) {
    const auto left =
        std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
    if (left.count() <= 0) {
      result.timed_out = true;
      break;
    }
    pollfd fds[4] = {{out_fd.get(), POLLIN, 0},
                     {err_fd.get(), POLLIN, 0},
                     {in_fd.get(), POLLOUT, 0},
                     {options.cancel_fd, POLLIN, 0}};
    const int ready = poll(fds, 4, static_cast<int>(std::min<long long>(left.count() + 1, 60000)));
    if (ready < 0) {
      if (errno == EINTR) continue;
      const int err = errno;
      KillGroup(*pid, SIGKILL);
      Reap(*pid);
      return FailErrno(err, "poll");
    }
    if (fds[3].revents != 0) {
      result.cancelled = true;
      break;
    }
    for (int i = 0; i < 2; ++i) {
      if (fds[i].revents == 0) continue;
      Fd& fd = i == 0 ? out_fd : err_fd;
      std::string& sink = i == 0 ? result.out : result.err;
      const ssize_t n = read(fd.get(), buffer, sizeof(buffer));
      if (n > 0) {
        const std::size_t room = options.max_output - std::min(options.max_output, sink.size());
        const std::size_t keep = std::min(room, static_cast<std::size_t>(n));
        sink.append(buffer, keep);
        if (keep < static_cast<std::size_t>(n)) result.truncated = true;
      } else if (n == 0 || (errno != EINTR && errno != EAGAIN)) {
        fd.Reset();
      }
    }
    if (fds[2].revents != 0) {
      const ssize_t n = write(in_fd.get(), pending_input.data(), pending_input.size());
      if (n > 0) pending_input.remove_prefix(static_cast<std::size_t>(n));
      if ((n < 0 && errno != EINTR && errno != EAGAIN) || pending_input.empty()) in_fd.Reset();
    }
  }

  if (result.timed_out || result.cancelled) {
    KillGroup(*pid, SIGKILL);
  }
  const int status = Reap(*pid);
  if (WIFEXITED(status)) {
    result.exit_code = WEXITSTATUS(status);
  } else if (WIFSIGNALED(status)) {
    result.signal = WTERMSIG(status);
  }
  return result;
}

Result<Child> Spawn(const SpawnOptions& options) {
  auto pid = SpawnWith(options.argv, options.env, options.cwd, [&](auto* actions) {
    posix_spawn_file_actions_addopen(actions, 0, "/dev/null", O_RDONLY, 0);
    posix_spawn_file_actions_addopen(actions, 1, options.stdout_path.c_str(),
                                     O_WRONLY | O_CREAT | O_APPEND, 0600);
    posix_spawn_file_actions_addopen(actions, 2, options.stderr_path.c_str(),
                                     O_WRONLY | O_CREAT | O_APPEND, 0600);
  });
  if (!pid) return Fail(pid.error());
  return Child(*pid);
}

bool WriteFully(int fd, std::string_view data) {
  while (!data.empty()) {
    const ssize_t n = write(fd, data.data(), data.size());
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    data.remove_prefix(static_cast<std::size_t>(n));
  }
  return true;
}

bool ReadToEnd(int fd, std::string& data, std::size_t limit) {
  char buffer[65536];
  while (true) {
    const ssize_t n = read(fd, buffer, sizeof(buffer));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return false;
    if (n == 0) return true;
    if (data.size() + static_cast<std::size_t>(n) > limit) return false;
    data.append(buffer, static_cast<std::size_t>(n));
  }
}

Result<PipedChild> SpawnPiped(const std::vector<std::string>& argv,
                              const std::vector<std::string>& env) {
  auto in_pipe = MakePipe();
  if (!in_pipe) return Fail(in_pipe.error());
  auto out_pipe = MakePipe();
  if (!out_pipe) return Fail(out_pipe.error());
  auto pid = SpawnWith(argv, env, "", [&](auto* actions) {
    posix_spawn_file_actions_adddup2(actions, in_pipe->first.get(), 0);
    posix_spawn_file_actions_adddup2(actions, out_pipe->second.get(), 1);
  });
  if (!pid) return Fail(pid.error());
  PipedChild result;
  result.child = Child(*pid);
  result.to_child = in_pipe->second.Release();
  result.from_child = out_pipe->first.Release();
  return result;
}

Child::Child(Child&& other) noexcept : pid_(std::exchange(other.pid_, -1)) {}

Child& Child::operator=(Child&& other) noexcept {
  if (this != &other) {
    if (running()) Stop(SIGKILL, std::chrono::milliseconds(0));
    pid_ = std::exchange(other.pid_, -1);
  }
  return *this;
}

Child::~Child() {
  if (running()) Stop(SIGKILL, std::chrono::milliseconds(0));
}

void Child::Signal(int signal) const { KillGroup(pid_, signal); }

Result<int> Child::Wait(std::chrono::milliseconds timeout) {
  if (!running()) return Fail(std::errc::no_child_process, "no child to wait for");
  // A pidfd becomes readable when the process exits: no polling of waitpid.
  Fd pidfd(static_cast<int>(syscall(SYS_pidfd_open, pid_, 0)));
  if (pidfd.get() < 0) return FailErrno(errno, "pidfd_open");
  const auto deadline = Clock::now() + timeout;
  while (true) {
    int status = 0;
    const pid_t rc = waitpid(pid_, &status, WNOHANG);
    if (rc == pid_) {
      pid_ = -1;
      return status;
    }
    if (rc < 0 && errno != EINTR) {
      const int err = errno;
      pid_ = -1;
      return FailErrno(err, "waitpid");
    }
    const auto left =
        std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
    if (left.count() <= 0) {
      return Fail(std::errc::timed_out, "process " + std::to_string(pid_) + " still running");
    }
    pollfd fd = {pidfd.get(), POLLIN, 0};
    poll(&fd, 1, static_cast<int>(std::min<long long>(left.count() + 1, 60000)));
  }
}

int Child::Stop(int signal, std::chrono::milliseconds grace) {
  if (!running()) return 0;
  Signal(signal);
  if (auto status = Wait(grace)) return *status;
  Signal(SIGKILL);
  const int status = Reap(pid_);
  pid_ = -1;
  return status;
}

}  // namespace tether
