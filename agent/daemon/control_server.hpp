// tetherd's control socket (docs/control-socket.md): the listening socket (or the one
// systemd passes), peer authorisation with SO_PEERCRED, and one Connection per client.
// Requests are size- and time-bounded and parsed with protocol::ParseRequest, which never
// throws; a request the peer's role does not allow is refused here, so the handler sees
// only requests it may act on.
//
// Threading: everything runs on the daemon's loop.
#pragma once

#include <sys/types.h>

#include <cstddef>
#include <cstdint>
#include <deque>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <boost/asio/io_context.hpp>
#include <boost/asio/local/stream_protocol.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/streambuf.hpp>
#include <nlohmann/json.hpp>

#include "agent/protocol/protocol.hpp"
#include "common/error.hpp"

namespace tether {

class Connection;

// What the daemon does with a request.
class RequestHandler {
 public:
  virtual ~RequestHandler() = default;
  // A request the peer may send. The handler answers with connection->Reply (now) or
  // Defer + ReplyDeferred (later).
  virtual void Handle(const std::shared_ptr<Connection>& connection,
                      const protocol::Request& request) = 0;
};

// Open connections, counted by the peer's uid, so that none can take all of tetherd's
// descriptors (cycles need theirs). A Connection holds a Ticket while it lives.
class ConnectionCount {
 public:
  // Non-root peers: this many in all, and this many each.
  static constexpr std::size_t kMaxOthers = 128;
  static constexpr std::size_t kMaxPerUser = 16;
  // root's own (tetherctl, scripts): apart, so that readers cannot lock root out.
  static constexpr std::size_t kMaxRoot = 64;

  class Ticket {
   public:
    Ticket(std::shared_ptr<ConnectionCount> count, uid_t uid)
        : count_(std::move(count)), uid_(uid) {}
    Ticket(const Ticket&) = delete;
    Ticket& operator=(const Ticket&) = delete;
    ~Ticket() { count_->Release(uid_); }

   private:
    std::shared_ptr<ConnectionCount> count_;
    uid_t uid_;
  };

  // A ticket for one more connection of `uid`, or none when it is over a limit.
  [[nodiscard]] static std::unique_ptr<Ticket> Take(const std::shared_ptr<ConnectionCount>& count,
                                                    uid_t uid);

 private:
  void Release(uid_t uid);

  std::size_t root_ = 0;
  std::size_t others_ = 0;
  std::vector<std::pair<uid_t, std::size_t>> per_user_;
};

// One control connection: requests in, replies out, in order. The next request is read
// once the reply to the last one is written (a client that sends and never reads holds
// one reply, not all of them), and a reply the client does not read within the request
// deadline ends the connection.
class Connection : public std::enable_shared_from_this<Connection> {
 public:
  using Socket = boost::asio::local::stream_protocol::socket;

  Connection(RequestHandler& handler, Socket socket, protocol::Role role,
             std::unique_ptr<ConnectionCount::Ticket> ticket = nullptr);

  void Start() { ReadRequest(); }
  void Reply(const nlohmann::json& reply);
  // A reply that comes later (sync --wait, plan), when a cycle is over: the request
  // deadline does not run while one is owed, however long the cycle takes.
  void Defer();
  void ReplyDeferred(const nlohmann::json& reply);
  // An events subscriber: no request deadline any more; a reader that falls too far
  // behind is dropped (its connection closed) rather than buffered without end.
  void Subscribe() { subscribed_ = true; }
  [[nodiscard]] protocol::Role role() const { return role_; }

 private:
  void ReadRequest();
  void OnRequest(std::string_view line);
  void ArmDeadline();
  void WriteNext();
  // Reads the next request when nothing is owed to the client any more.
  void ReadWhenAnswered();

  RequestHandler& handler_;
  Socket socket_;
  boost::asio::steady_timer timer_;
  boost::asio::steady_timer write_timer_;
  // Counts the reads and writes that completed: a deadline whose wait completed just as
  // its operation did (too late to be cancelled) sees the count moved, and closes nothing.
  std::uint64_t reads_done_ = 0;
  std::uint64_t writes_done_ = 0;
  boost::asio::streambuf input_;
  protocol::Role role_;
  bool subscribed_ = false;
  int deferred_ = 0;      // replies owed (Defer)
  bool waiting_ = false;  // the next request is read once the replies owed are written
  std::deque<std::string> outbox_;
  std::unique_ptr<ConnectionCount::Ticket> ticket_;
};

// Whether the peer of the Unix socket `socket` had group `gid` (primary or supplementary)
// when it connected (SO_PEERCRED, SO_PEERGROUPS). False when that cannot be told.
[[nodiscard]] bool PeerHasGroup(int socket, gid_t gid);

class ControlServer {
 public:
  // Members of `read_group` may send read-only commands; root may send every command.
  ControlServer(boost::asio::io_context& io, RequestHandler& handler, std::string read_group);

  // Listens on `passed`, the socket systemd passed (socket activation), or else binds
  // `socket_path` (mode 0660, group read_group; 0600 when there is no such group),
  // replacing a stale socket file.
  [[nodiscard]] Status Open(const std::string& socket_path, std::optional<int> passed);
  // Accepts connections until StopAccepting.
  void Start();
  // Stops accepting. Connections already open stay until their peers or the loop end them.
  void StopAccepting();
  // Stops accepting and removes the socket file tetherd bound itself (not one systemd
  // passed).
  void Close();

 private:
  void Accept();
  [[nodiscard]] protocol::Role RoleOf(Connection::Socket& socket) const;

  RequestHandler& handler_;
  boost::asio::local::stream_protocol::acceptor acceptor_;
  std::string read_group_;
  std::optional<gid_t> read_gid_;
  std::string bound_path_;  // "" with socket activation
  bool accepting_ = true;
  std::shared_ptr<ConnectionCount> count_ = std::make_shared<ConnectionCount>();
};

}  // namespace tether
