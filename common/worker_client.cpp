#include "common/worker_client.hpp"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>

#include <cerrno>

namespace tether {

namespace {

using Clock = std::chrono::steady_clock;

constexpr std::size_t kMaxAnswer = 16 << 20;

long long MillisecondsLeft(Clock::time_point deadline) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
}

}  // namespace

Status WorkerClient::Start() {
  if (worker_.running()) return {};
  auto spawned = SpawnPiped(argv_, env_);
  if (!spawned) return Fail(spawned.error().WithContext("start " + name_));
  worker_ = std::move(spawned->child);
  requests_ = 0;
  ++started_;
  started_at_ = Clock::now();
  to_worker_.Reset(spawned->to_child);
  fcntl(to_worker_.get(), F_SETFL, fcntl(to_worker_.get(), F_GETFL) | O_NONBLOCK);
  from_worker_.Reset(spawned->from_child);
  buffer_.clear();
  return {};
}

void WorkerClient::Kill() {
  to_worker_.Reset();
  from_worker_.Reset();
  if (worker_.running()) worker_.Stop(SIGKILL, std::chrono::milliseconds(0));
  buffer_.clear();
}

void WorkerClient::ReapIfGone() {
  if (!worker_.running()) return;
  if (!buffer_.empty()) {  // an answer left over, unasked for: start afresh
    Kill();
    return;
  }
  pollfd fd = {from_worker_.get(), POLLIN, 0};
  if (poll(&fd, 1, 0) <= 0) return;
  char byte = 0;
  if (read(from_worker_.get(), &byte, 1) != 0) {  // something unasked for: start afresh
    Kill();
  } else {
    Close();
  }
}

Result<nlohmann::json> WorkerClient::Call(const nlohmann::json& request,
                                          std::chrono::milliseconds timeout, int cancel_fd) {
  const auto deadline = Clock::now() + timeout;
  if (worker_.running() &&
      (requests_ >= kRequestsPerWorker || (max_age_ && Clock::now() - started_at_ >= *max_age_))) {
    Close();
  }
  ReapIfGone();
  if (!worker_.running()) {
    if (auto started = Start(); !started) return Fail(started.error());
  }
  ++requests_;
  const std::string line =
      request.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) + "\n";
  auto cancelled = [&] {
    Kill();
    return Fail(std::errc::operation_canceled, "cancelled (killed the " + name_ + ")");
  };
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
      return FailErrno(err, "send request to the " + name_);
    }
    const auto left_ms = MillisecondsLeft(deadline);
    if (left_ms <= 0) {
      Kill();
      return Fail(std::errc::timed_out, "the " + name_ + " took no request within " +
                                            std::to_string(timeout.count()) + " ms (killed it)");
    }
    pollfd fds[2] = {{to_worker_.get(), POLLOUT, 0}, {cancel_fd, POLLIN, 0}};
    // A minute at most per wait: the deadline is checked again after each.
    if (poll(fds, cancel_fd >= 0 ? 2 : 1, static_cast<int>(std::min(left_ms, 60'000LL))) <= 0) {
      continue;
    }
    if (cancel_fd >= 0 && fds[1].revents != 0) return cancelled();
  }
  while (true) {
    const auto newline = buffer_.find('\n');
    if (newline != std::string::npos) {
      const std::string answer = buffer_.substr(0, newline);
      buffer_.erase(0, newline + 1);
      auto parsed = nlohmann::json::parse(answer, nullptr, /*allow_exceptions=*/false);
      if (parsed.is_discarded()) {
        Kill();
        return Fail(std::errc::protocol_error, "the " + name_ + " sent a malformed answer");
      }
      return parsed;
    }
    const auto left_ms = MillisecondsLeft(deadline);
    if (left_ms <= 0) {
      Kill();
      return Fail(std::errc::timed_out, "no answer from the " + name_ + " within " +
                                            std::to_string(timeout.count()) + " ms (killed it)");
    }
    pollfd fds[2] = {{from_worker_.get(), POLLIN, 0}, {cancel_fd, POLLIN, 0}};
    const int ready =
        poll(fds, cancel_fd >= 0 ? 2 : 1, static_cast<int>(std::min(left_ms, 60'000LL)));
    if (ready < 0 && errno != EINTR) {
      const int err = errno;
      Kill();
      return FailErrno(err, "wait for the " + name_);
    }
    if (ready <= 0) continue;
    if (cancel_fd >= 0 && fds[1].revents != 0) return cancelled();
    char chunk[65536];
    const ssize_t n = read(from_worker_.get(), chunk, sizeof(chunk));
    if (n <= 0) {
      if (n < 0 && errno == EINTR) continue;
      Kill();
      return Fail(std::errc::io_error, "the " + name_ + " died");
    }
    buffer_.append(chunk, static_cast<std::size_t>(n));
    if (buffer_.size() > kMaxAnswer) {
      Kill();
      return Fail(std::errc::message_size, "the " + name_ + "'s answer is too large");
    }
  }
}

void WorkerClient::Close() {
  if (!worker_.running()) return;
  to_worker_.Reset();  // EOF: the worker ends on its own
  from_worker_.Reset();
  if (!worker_.Wait(std::chrono::seconds(1))) Kill();
  buffer_.clear();
}

}  // namespace tether
