#include "agent/daemon/control_server.hpp"

#include <grp.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <vector>

#include <boost/asio/read_until.hpp>
#include <boost/asio/write.hpp>

namespace tether {

namespace {

namespace asio = boost::asio;
using Local = asio::local::stream_protocol;
using Json = nlohmann::json;

constexpr auto kRequestTimeout = std::chrono::seconds(10);
// Events not yet written to a subscriber before it is dropped.
constexpr std::size_t kMaxEventsQueued = 1024;

}  // namespace

bool PeerHasGroup(int socket, gid_t gid) {
  ucred peer{};
  socklen_t length = sizeof(peer);
  if (getsockopt(socket, SOL_SOCKET, SO_PEERCRED, &peer, &length) != 0) return false;
  if (peer.gid == gid) return true;
  // The supplementary groups as the kernel recorded them at connect(): not read from
  // /proc/PID, whose process may have exited and its pid been reused meanwhile.
  std::vector<gid_t> groups(64);
  while (true) {
    length = static_cast<socklen_t>(groups.size() * sizeof(gid_t));
    if (getsockopt(socket, SOL_SOCKET, SO_PEERGROUPS, groups.data(), &length) == 0) break;
    if (errno != ERANGE || length <= groups.size() * sizeof(gid_t)) return false;
    groups.resize(length / sizeof(gid_t));
  }
  groups.resize(length / sizeof(gid_t));
  return std::find(groups.begin(), groups.end(), gid) != groups.end();
}

std::unique_ptr<ConnectionCount::Ticket> ConnectionCount::Take(
    const std::shared_ptr<ConnectionCount>& count, uid_t uid) {
  if (uid == 0) {
    if (count->root_ >= kMaxRoot) return nullptr;
    ++count->root_;
    return std::make_unique<Ticket>(count, uid);
  }
  auto user = std::find_if(count->per_user_.begin(), count->per_user_.end(),
                           [uid](const auto& item) { return item.first == uid; });
  if (count->others_ >= kMaxOthers ||
      (user != count->per_user_.end() && user->second >= kMaxPerUser)) {
    return nullptr;
  }
  ++count->others_;
  if (user == count->per_user_.end()) {
    count->per_user_.emplace_back(uid, 1);
  } else {
    ++user->second;
  }
  return std::make_unique<Ticket>(count, uid);
}

void ConnectionCount::Release(uid_t uid) {
  if (uid == 0) {
    --root_;
    return;
  }
  --others_;
  auto user = std::find_if(per_user_.begin(), per_user_.end(),
                           [uid](const auto& item) { return item.first == uid; });
  if (user != per_user_.end() && --user->second == 0) per_user_.erase(user);
}

Connection::Connection(RequestHandler& handler, Socket socket, protocol::Role role,
                       std::unique_ptr<ConnectionCount::Ticket> ticket)
    : handler_(handler),
      socket_(std::move(socket)),
      timer_(socket_.get_executor()),
      write_timer_(socket_.get_executor()),
      input_(protocol::kMaxRequest),
      role_(role),
      ticket_(std::move(ticket)) {}

void Connection::Defer() {
  ++deferred_;
  timer_.cancel();
}

void Connection::ReplyDeferred(const Json& reply) {
  if (deferred_ > 0) --deferred_;
  Reply(reply);
}

// A client that sends no request for kRequestTimeout is disconnected.
void Connection::ArmDeadline() {
  auto self = shared_from_this();
  timer_.expires_after(kRequestTimeout);
  timer_.async_wait([self, reads = reads_done_](boost::system::error_code code) {
    if (!code && reads == self->reads_done_) {
      boost::system::error_code ignored;
      self->socket_.close(ignored);  // too slow: the read in progress ends with an error
    }
  });
}

void Connection::ReadRequest() {
  auto self = shared_from_this();
  if (!subscribed_ && deferred_ == 0) ArmDeadline();
  asio::async_read_until(
      socket_, input_, '\n', [self](boost::system::error_code code, std::size_t length) {
        ++self->reads_done_;
        self->timer_.cancel();
        if (code == asio::error::not_found) {
          return self->Reply(protocol::Refusal("request too long (the limit is 64 KiB)"));
        }
        if (code) return;  // closed, or too slow
        const std::string line(
            asio::buffers_begin(self->input_.data()),
            asio::buffers_begin(self->input_.data()) + static_cast<std::ptrdiff_t>(length));
        self->input_.consume(length);
        self->OnRequest(line);
        // An events subscriber is read on (its replies are events, bounded below);
        // anyone else once its reply is written.
        if (self->subscribed_) return self->ReadRequest();
        self->waiting_ = true;
        self->ReadWhenAnswered();
      });
}

void Connection::ReadWhenAnswered() {
  if (!waiting_ || !outbox_.empty() || deferred_ > 0 || !socket_.is_open()) return;
  waiting_ = false;
  ReadRequest();
}

void Connection::OnRequest(std::string_view line) {
  auto request = protocol::ParseRequest(line, role_);
  if (!request) return Reply(protocol::Refusal(request.error().message()));
  handler_.Handle(shared_from_this(), *request);
}

void Connection::Reply(const Json& reply) {
  if (!socket_.is_open()) return;
  if (subscribed_ && outbox_.size() >= kMaxEventsQueued) {
    boost::system::error_code ignored;
    socket_.close(ignored);  // a subscriber that does not read: dropped
    outbox_.clear();
    return;
  }
  const bool idle = outbox_.empty();
  outbox_.push_back(reply.dump(-1, ' ', false, Json::error_handler_t::replace) + "\n");
  if (idle) WriteNext();
}

void Connection::WriteNext() {
  auto self = shared_from_this();
  // A client that does not read what it asked for is disconnected.
  write_timer_.expires_after(kRequestTimeout);
  write_timer_.async_wait([self, writes = writes_done_](boost::system::error_code code) {
    if (code || writes != self->writes_done_) return;
    boost::system::error_code ignored;
    self->socket_.close(ignored);
  });
  asio::async_write(socket_, asio::buffer(outbox_.front()),
                    [self](boost::system::error_code code, std::size_t) {
                      ++self->writes_done_;
                      self->write_timer_.cancel();
                      if (code) return;
                      self->outbox_.pop_front();
                      if (!self->outbox_.empty()) return self->WriteNext();
                      self->ReadWhenAnswered();
                    });
}

ControlServer::ControlServer(asio::io_context& io, RequestHandler& handler, std::string read_group)
    : handler_(handler), acceptor_(io), read_group_(std::move(read_group)) {}

Status ControlServer::Open(const std::string& socket_path, std::optional<int> passed) {
  if (group* found = getgrnam(read_group_.c_str())) read_gid_ = found->gr_gid;
  // Socket activation: systemd passes the listening socket.
  if (passed) {
    boost::system::error_code code;
    acceptor_.assign(Local(), *passed, code);
    if (code) {
      return Fail(std::errc::bad_file_descriptor, "the socket systemd passed: " + code.message());
    }
    return {};
  }
  const std::string& path = socket_path;
  const auto slash = path.rfind('/');
  if (slash != std::string::npos && slash > 0) mkdir(path.substr(0, slash).c_str(), 0755);
  unlink(path.c_str());  // a socket left by a killed tetherd
  boost::system::error_code code;
  acceptor_.open(Local(), code);
  if (!code) acceptor_.bind(Local::endpoint(path), code);
  if (!code) acceptor_.listen(64, code);
  if (code) return Fail(std::errc::address_in_use, "bind '" + path + "': " + code.message());
  bound_path_ = path;
  // Readers (group tether) may connect; the peer check decides what they may do.
  if (read_gid_ && chown(path.c_str(), 0, *read_gid_) != 0) read_gid_.reset();
  if (chmod(path.c_str(), read_gid_ ? 0660 : 0600) != 0) {
    const std::error_code error(errno, std::generic_category());
    return Fail(Error(error, "chmod '" + path + "': " + error.message()));
  }
  return {};
}

void ControlServer::Start() { Accept(); }

void ControlServer::StopAccepting() {
  accepting_ = false;
  boost::system::error_code ignored;
  acceptor_.close(ignored);
}

void ControlServer::Close() {
  StopAccepting();
  if (!bound_path_.empty()) unlink(bound_path_.c_str());
  bound_path_.clear();
}

protocol::Role ControlServer::RoleOf(Connection::Socket& socket) const {
  ucred peer{};
  socklen_t length = sizeof(peer);
  if (getsockopt(socket.native_handle(), SOL_SOCKET, SO_PEERCRED, &peer, &length) != 0) {
    return protocol::Role::kNone;
  }
  if (peer.uid == 0) return protocol::Role::kAdmin;
  if (read_gid_ && PeerHasGroup(socket.native_handle(), *read_gid_)) {
    return protocol::Role::kReader;
  }
  return protocol::Role::kNone;
}

void ControlServer::Accept() {
  acceptor_.async_accept([this](boost::system::error_code code, Local::socket socket) {
    if (code == asio::error::operation_aborted || !accepting_) return;
    if (!code) {
      const protocol::Role role = RoleOf(socket);
      ucred peer{};
      socklen_t length = sizeof(peer);
      auto ticket = role == protocol::Role::kNone || getsockopt(socket.native_handle(), SOL_SOCKET,
                                                                SO_PEERCRED, &peer, &length) != 0
                        ? nullptr
                        : ConnectionCount::Take(count_, peer.uid);
      const bool admitted = ticket != nullptr;
      auto connection =
          std::make_shared<Connection>(handler_, std::move(socket), role, std::move(ticket));
      if (role == protocol::Role::kNone) {
        connection->Reply(
            protocol::Refusal("permission denied: root or the group '" + read_group_ + "' only"));
      } else if (!admitted) {
        // Said, then closed: the refusal is small, and nothing more is read.
        connection->Reply(protocol::Refusal(
            "too many connections to tetherd from this user; close some and try again"));
      } else {
        connection->Start();
      }
    }
    Accept();
  });
}

}  // namespace tether
