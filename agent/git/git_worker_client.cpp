#include "agent/git/git_worker_client.hpp"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>

#include <cerrno>

namespace tether {

Status GitWorkerClient::Start() {
  if (worker_.running()) return {};
  auto spawned = SpawnPiped(argv_, env_);
  if (!spawned) return Fail(spawned.error().WithContext("start git worker"));
  worker_ = std::move(spawned->child);
  requests_ = 0;
  to_worker_.Reset(spawned->to_child);
  fcntl(to_worker_.get(), F_SETFL, fcntl(to_worker_.get(), F_GETFL) | O_NONBLOCK);
  from_worker_.Reset(spawned->from_child);
  buffer_.clear();
  return {};
}

void GitWorkerClient::Kill() {
  to_worker_.Reset();
  from_worker_.Reset();
  if (worker_.running()) worker_.Stop(SIGKILL, std::chrono::milliseconds(0));
  buffer_.clear();
}

Result<nlohmann::json> GitWorkerClient::Call(const nlohmann::json& request,
                                             std::chrono::milliseconds timeout) {
  using Clock = std::chrono::steady_clock;
  const auto deadline = Clock::now() + timeout;
  if (worker_.running() && requests_ >= kRequestsPerWorker) {
    to_worker_.Reset();  // EOF: the worker exits on its own
    if (!worker_.Wait(std::chrono::seconds(1))) Kill();
  }
  if (!worker_.running()) {
    if (auto started = Start(); !started) return Fail(started.error());
  }
  ++requests_;
  std::string line = request.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) + "\n";
  // The request is written within the same deadline: a worker that does not read (stuck
  // in a name lookup, say) must not hang us on a full pipe.
  std::string_view left = line;
  while (!left.empty()) {
    const ssize_t n = write(to_worker_.get(), left.data(), left.size());
    if (n >= 0) {
      left.remove_prefix(static_cast<std::size_t>(n));
      continue;
    }
    if (errno == EINTR) continue;
    if (errno != EAGAIN) {
      const int err = errno;
      Kill();
      return FailErrno(err, "send request to git worker");
    }
    const auto left_ms =
        std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
    pollfd fd = {to_worker_.get(), POLLOUT, 0};
    if (left_ms <= 0 || poll(&fd, 1, static_cast<int>(std::min<long long>(left_ms, 60'000))) == 0) {
      Kill();
      return Fail(std::errc::timed_out, "the git worker took no request within " +
                                            std::to_string(timeout.count()) +
                                            " ms (killed the worker)");
    }
  }
  while (true) {
    const auto newline = buffer_.find('\n');
    if (newline != std::string::npos) {
      const std::string answer = buffer_.substr(0, newline);
      buffer_.erase(0, newline + 1);
      auto parsed = nlohmann::json::parse(answer, nullptr, /*allow_exceptions=*/false);
      if (parsed.is_discarded()) {
        Kill();
        return Fail(std::errc::protocol_error, "git worker sent a malformed answer");
      }
      return parsed;
    }
    const auto left_ms =
        std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
    if (left_ms <= 0) {
      Kill();
      return Fail(std::errc::timed_out, "no answer within " + std::to_string(timeout.count()) +
                                            " ms (killed the worker)");
    }
    pollfd fd = {from_worker_.get(), POLLIN, 0};
    const int ready = poll(&fd, 1, static_cast<int>(std::min<long long>(left_ms, 60'000)));
    if (ready < 0 && errno != EINTR) {
      const int err = errno;
      Kill();
      return FailErrno(err, "wait for git worker");
    }
    if (ready <= 0) continue;
    char chunk[65536];
    const ssize_t n = read(from_worker_.get(), chunk, sizeof(chunk));
    if (n <= 0) {
      if (n < 0 && errno == EINTR) continue;
      Kill();
      return Fail(std::errc::io_error, "the git worker died");
    }
    buffer_.append(chunk, static_cast<std::size_t>(n));
    if (buffer_.size() > (16 << 20)) {
      Kill();
      return Fail(std::errc::message_size, "git worker answer too large");
    }
  }
}

}  // namespace tether
