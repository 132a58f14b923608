// The parent's side of a long-lived worker process that answers one JSON request a line
// with one JSON answer a line, on its stdin and stdout (tetherd's git worker, its HTTP
// child): requests with a deadline, and a way to cut one short.
//
// Threading: one caller at a time.
#pragma once

#include <chrono>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/error.hpp"
#include "common/process.hpp"
#include "common/unique_fd.hpp"

namespace tether {

class WorkerClient {
 public:
  // `name` is for messages ("git worker"); `argv` starts a worker with environment `env`
  // (the whole of it).
  WorkerClient(std::string name, std::vector<std::string> argv, std::vector<std::string> env)
      : name_(std::move(name)), argv_(std::move(argv)), env_(std::move(env)) {}
  // Close().
  ~WorkerClient() { Close(); }
  WorkerClient(const WorkerClient&) = delete;
  WorkerClient& operator=(const WorkerClient&) = delete;

  // Sends `request` and returns the worker's answer. The worker is started on first use
  // (and again after it exited). When it does not answer within `timeout` (or dies), it is
  // killed, the call fails with std::errc::timed_out (or io_error), and the next call
  // starts a new one. When `cancel_fd` (e.g. an eventfd) becomes readable meanwhile, the
  // worker is killed too and the call fails with std::errc::operation_canceled.
  [[nodiscard]] Result<nlohmann::json> Call(const nlohmann::json& request,
                                            std::chrono::milliseconds timeout, int cancel_fd = -1);

  // Ends the worker, if one runs: EOF on its stdin, then a second to exit before it is
  // killed. The next Call starts a new one.
  void Close();

  // Starts a worker now, when none runs, rather than at the next Call.
  [[nodiscard]] Status Start();

  // A worker is replaced after this many requests, so whatever a library leaks per
  // connection (libssh2 does, a little) cannot add up in a long-lived daemon.
  static constexpr int kRequestsPerWorker = 1000;

  // A worker older than `age` is replaced at the next Call (none by default): one that
  // read files as root before it gave root up (a client certificate) reads them again.
  void set_max_age(std::chrono::milliseconds age) { max_age_ = age; }

  // The running worker's pid, or -1.
  [[nodiscard]] pid_t worker_pid() const { return worker_.pid(); }
  // How many workers were started, e.g. to see that one was kept.
  [[nodiscard]] int workers_started() const { return started_; }

 private:
  void Kill();
  // Reaps a worker that ended while idle (its stdout at EOF: it crashed, or was killed),
  // so that the next request goes to a new one rather than fail.
  void ReapIfGone();

  std::string name_;
  std::vector<std::string> argv_;
  std::vector<std::string> env_;
  Child worker_;
  UniqueFd to_worker_;
  UniqueFd from_worker_;
  std::string buffer_;
  int requests_ = 0;  // served by the current worker
  int started_ = 0;
  std::chrono::steady_clock::time_point started_at_;  // the current worker's
  std::optional<std::chrono::milliseconds> max_age_;
};

}  // namespace tether
