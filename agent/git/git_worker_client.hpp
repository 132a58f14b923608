// The parent's side of the git worker (see git_worker.hpp): requests with a deadline.
// Threading: one caller at a time.
#pragma once

#include <chrono>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/error.hpp"
#include "common/process.hpp"
#include "common/unique_fd.hpp"

namespace tether {

class GitWorkerClient {
 public:
  // `worker_argv` starts a worker, e.g. {"/usr/sbin/tetherd", "--git-worker"}.
  // `worker_argv` starts a worker with environment `env` (the whole of it).
  GitWorkerClient(std::vector<std::string> worker_argv, std::vector<std::string> env)
      : argv_(std::move(worker_argv)), env_(std::move(env)) {}

  // Sends `request` and returns the worker's answer. The worker is started on first use;
  // when it does not answer within `timeout` (or dies), it is killed, the call fails with
  // std::errc::timed_out (or io_error), and the next call starts a new one.
  [[nodiscard]] Result<nlohmann::json> Call(const nlohmann::json& request,
                                            std::chrono::milliseconds timeout);

  // Starts a worker now, when none runs, rather than at the next Call.
  [[nodiscard]] Status Start();

  // A worker is replaced after this many requests, so whatever a library leaks per
  // connection (libssh2 does, a little) cannot add up in a long-lived daemon.
  static constexpr int kRequestsPerWorker = 1000;

  // The running worker's pid, or -1.
  [[nodiscard]] pid_t worker_pid() const { return worker_.pid(); }

 private:
  void Kill();

  std::vector<std::string> argv_;
  std::vector<std::string> env_;
  Child worker_;
  UniqueFd to_worker_;
  UniqueFd from_worker_;
  std::string buffer_;
  int requests_ = 0;  // served by the current worker
};

}  // namespace tether
