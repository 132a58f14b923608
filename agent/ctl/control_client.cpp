#include "agent/ctl/control_client.hpp"

#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "common/unique_fd.hpp"

namespace tether {

Status StreamDaemon(const std::string& socket_path, const nlohmann::json& request,
                    std::chrono::milliseconds first_timeout,
                    const std::function<bool(const nlohmann::json&)>& on_reply) {
  sockaddr_un address{};
  address.sun_family = AF_UNIX;
  if (socket_path.size() >= sizeof(address.sun_path)) {
    return Fail(std::errc::filename_too_long, "socket path '" + socket_path + "' is too long");
  }
  std::memcpy(address.sun_path, socket_path.c_str(), socket_path.size() + 1);
  UniqueFd fd(socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!fd.valid()) return FailErrno(errno, "socket");
  if (connect(fd.get(), reinterpret_cast<const sockaddr*>(&address), sizeof(address)) != 0) {
    const int err = errno;
    if (err == ENOENT || err == ECONNREFUSED) {
      return Fail(std::errc::connection_refused,
                  "tetherd is not running (nothing listens on '" + socket_path + "')");
    }
    if (err == EACCES) {
      return Fail(std::errc::permission_denied,
                  "permission denied on '" + socket_path + "': root or the group 'tether' only");
    }
    return FailErrno(err, "connect to '" + socket_path + "'");
  }
  const std::string line = request.dump() + "\n";
  std::string_view left = line;
  // A refused peer gets its answer at once and the connection closed, perhaps before
  // the request is sent: a failed send still reads what the daemon said.
  int send_error = 0;
  while (!left.empty()) {
    const ssize_t n = send(fd.get(), left.data(), left.size(), MSG_NOSIGNAL);
    if (n < 0) {
      if (errno == EINTR) continue;
      send_error = errno;
      break;
    }
    left.remove_prefix(static_cast<std::size_t>(n));
  }
  const auto deadline = std::chrono::steady_clock::now() + first_timeout;
  bool first = true;
  std::string pending;
  char buffer[65536];
  while (true) {
    for (std::size_t end; (end = pending.find('\n')) != std::string::npos;) {
      auto parsed = nlohmann::json::parse(pending.substr(0, end), nullptr, false);
      pending.erase(0, end + 1);
      if (parsed.is_discarded() || !parsed.is_object()) {
        return Fail(std::errc::bad_message, "tetherd's reply is not JSON");
      }
      first = false;
      if (!on_reply(parsed)) return {};
    }
    int wait_ms = -1;  // after the first reply: as long as it takes
    if (first) {
      const auto left_ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                               deadline - std::chrono::steady_clock::now())
                               .count();
      if (left_ms <= 0) return Fail(std::errc::timed_out, "tetherd did not answer in time");
      wait_ms = static_cast<int>(left_ms);
    }
    pollfd ready{fd.get(), POLLIN, 0};
    const int polled = poll(&ready, 1, wait_ms);
    if (polled < 0 && errno == EINTR) continue;
    if (polled < 0) return FailErrno(errno, "wait for tetherd");
    if (polled == 0) continue;
    const ssize_t n = read(fd.get(), buffer, sizeof(buffer));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0 && send_error != 0) return FailErrno(send_error, "send to tetherd");
    if (n < 0) return FailErrno(errno, "read from tetherd");
    if (n == 0) return Fail(std::errc::connection_reset, "tetherd closed the connection");
    pending.append(buffer, static_cast<std::size_t>(n));
    if (pending.size() > (64u << 20)) return Fail(std::errc::message_size, "reply too long");
  }
}

Result<nlohmann::json> CallDaemon(const std::string& socket_path, const nlohmann::json& request,
                                  std::chrono::milliseconds timeout) {
  nlohmann::json reply;
  auto done = StreamDaemon(socket_path, request, timeout, [&](const nlohmann::json& line) {
    reply = line;
    return false;
  });
  if (!done) return Fail(done.error());
  return reply;
}

}  // namespace tether
