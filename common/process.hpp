// Running other programs: posix_spawn, a clean environment, captured output, deadlines.
//
// Every child starts with:
//  - only the environment given (by default kCleanEnvironment, never the caller's);
//  - argv[0] looked up in the PATH of that environment when it has no '/';
//  - no inherited descriptors besides 0, 1 and 2; default signal dispositions and an empty
//    signal mask (so an agent that ignores SIGPIPE does not pass that on);
//  - its own process group, so a deadline kills the child and everything it started.
//
// Threading: the functions are thread-safe; a Child object is not.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstddef>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/error.hpp"

namespace tether {

// PATH=/usr/sbin:/usr/bin:/sbin:/bin and LANG=C.UTF-8, nothing else.
extern const std::vector<std::string> kCleanEnvironment;

struct RunOptions {
  std::vector<std::string> argv;                     // argv[0] is the program; must not be empty
  std::vector<std::string> env = kCleanEnvironment;  // "NAME=value" entries, the whole set
  std::string cwd{};                                 // empty: the caller's
  std::optional<std::string> input{};                // written to stdin; none: /dev/null
  std::chrono::milliseconds timeout{std::chrono::seconds(60)};
  std::size_t max_output = 16 << 20;  // per stream; more is read and dropped (truncated)
  // When this fd (e.g. an eventfd another thread writes) becomes readable, the run ends as
  // at its deadline: the process group is killed, and the result says `cancelled`. -1: none.
  int cancel_fd = -1;
};

struct RunResult {
  int exit_code = -1;      // the exit status, or -1 when killed by a signal
  int signal = 0;          // the terminating signal, or 0
  bool timed_out = false;  // the deadline passed and the process group was killed
  bool cancelled = false;  // cancel_fd became readable and the process group was killed
  bool truncated = false;  // an output stream went past max_output
  std::string out;         // captured stdout
  std::string err;         // captured stderr

  [[nodiscard]] bool ok() const { return exit_code == 0 && !timed_out && !cancelled; }
  // "exited with status 3", "killed by signal 9 (Killed)", "timed out after 5000 ms",
  // "cancelled".
  [[nodiscard]] std::string Describe(std::chrono::milliseconds timeout) const;
};

// Runs a program to completion or to its deadline (SIGKILL to its process group then).
// Fails only when the program could not be started (e.g. not found: ENOENT, naming it);
// a non-zero exit is a successful Run with that exit_code.
[[nodiscard]] Result<RunResult> Run(const RunOptions& options);

struct SpawnOptions {
  std::vector<std::string> argv;
  std::vector<std::string> env = kCleanEnvironment;
  std::string cwd{};
  std::string stdout_path = "/dev/null";  // opened O_WRONLY|O_CREAT|O_APPEND, 0600
  std::string stderr_path = "/dev/null";
};

// A started child process. Move-only. Destroying a Child that is still running kills its
// process group with SIGKILL and reaps it, so a child never outlives its owner's scope.
class Child {
 public:
  Child() = default;
  explicit Child(pid_t pid) : pid_(pid) {}
  Child(Child&& other) noexcept;
  Child& operator=(Child&& other) noexcept;
  Child(const Child&) = delete;
  Child& operator=(const Child&) = delete;
  ~Child();

  [[nodiscard]] pid_t pid() const { return pid_; }
  [[nodiscard]] bool running() const { return pid_ > 0; }

  // Sends `signal` to the child's process group.
  void Signal(int signal) const;

  // Waits up to `timeout` for the child to exit and reaps it. On success returns the raw
  // wait status; fails with std::errc::timed_out (child still running) otherwise.
  [[nodiscard]] Result<int> Wait(std::chrono::milliseconds timeout);

  // Sends `signal` to the process group, waits up to `grace`, then SIGKILLs and reaps.
  // Returns the raw wait status.
  int Stop(int signal, std::chrono::milliseconds grace);

 private:
  pid_t pid_ = -1;
};

// Starts a program in the background with stdout/stderr sent to files.
[[nodiscard]] Result<Child> Spawn(const SpawnOptions& options);

// A child talked to over pipes: `to_child` is its stdin, `from_child` its stdout.
struct PipedChild {
  Child child;
  int to_child = -1;    // owned: close it (EOF for the child) when done
  int from_child = -1;  // owned
};

// Writes all of `data` to `fd` (a pipe), retrying after EINTR and short writes. False on
// an error (errno says which).
[[nodiscard]] bool WriteFully(int fd, std::string_view data);

// Appends what `fd` gives until its end. False on an error, or when more than `limit`
// bytes in all would be read (what was read stays in `data`).
[[nodiscard]] bool ReadToEnd(int fd, std::string& data, std::size_t limit);

// Starts a program with stdin and stdout connected to pipes (close-on-exec on our ends)
// and stderr shared with the caller's, for a long-lived worker process.
[[nodiscard]] Result<PipedChild> SpawnPiped(const std::vector<std::string>& argv,
                                            const std::vector<std::string>& env);

}  // namespace tether
