#include "common/http_server.hpp"

#include <strings.h>
#include <sys/socket.h>

#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <list>
#include <map>
#include <optional>
#include <utility>

namespace tether {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;

std::string_view HttpServerRequest::Header(std::string_view name) const {
  for (const auto& [key, value] : headers) {
    if (key.size() == name.size() && strncasecmp(key.data(), name.data(), name.size()) == 0) {
      return value;
    }
  }
  return {};
}

namespace {

class Session;

}  // namespace

class HttpServer::Impl : public std::enable_shared_from_this<HttpServer::Impl> {
 public:
  Impl(asio::io_context& io, HttpServerLimits limits, Handler handler)
      : io_(io), acceptor_(io), retry_(io), limits_(limits), handler_(std::move(handler)) {}

  void Accept();
  void Close();
  // Whether a connection from `address` may be served now; may end an idle session to
  // make room.
  bool Admit(const std::string& address);

  asio::io_context& io_;
  tcp::acceptor acceptor_;
  asio::steady_timer retry_;  // after an accept error (EMFILE): a pause, not a spin
  HttpServerLimits limits_;
  Handler handler_;
  HttpServerCounts counts_;
  std::size_t open_ = 0;
  std::map<std::string, std::size_t> per_peer_;  // open connections by peer address
  bool closed_ = false;
  std::list<std::weak_ptr<Session>> sessions_;
};

namespace {

// One connection: read a request, answer it, again while the client keeps it alive.
class Session : public std::enable_shared_from_this<Session> {
 public:
  Session(std::shared_ptr<HttpServer::Impl> server, tcp::socket socket, std::string address)
      : server_(std::move(server)), stream_(std::move(socket)), address_(std::move(address)) {
    ++server_->open_;
    ++server_->per_peer_[address_];
    boost::system::error_code code;
    const auto remote = stream_.socket().remote_endpoint(code);
    const bool v6 = address_.find(':') != std::string::npos;
    peer_ = (v6 ? "[" + address_ + "]" : address_) + ":" +
            (code ? std::string("?") : std::to_string(remote.port()));
  }
  ~Session() {
    --server_->open_;
    if (auto found = server_->per_peer_.find(address_); found != server_->per_peer_.end()) {
      if (--found->second == 0) server_->per_peer_.erase(found);
    }
  }

  void Start() { ReadHeader(); }

  void Stop() {
    stopped_ = true;
    boost::system::error_code ignored;
    stream_.socket().shutdown(tcp::socket::shutdown_both, ignored);
    stream_.close();
  }

  // Waiting for the next request on a kept-alive connection: may give way to a new one.
  [[nodiscard]] bool idle() const { return idle_ && !stopped_; }

 private:
  void ReadHeader() {
    parser_.emplace();
    parser_->header_limit(static_cast<std::uint32_t>(server_->limits_.max_header_bytes));
    parser_->body_limit(server_->limits_.max_body_bytes);
    idle_ = served_ > 0 && buffer_.size() == 0;
    stream_.expires_after(idle_ ? server_->limits_.idle_timeout : server_->limits_.timeout);
    http::async_read_header(
        stream_, buffer_, *parser_,
        [self = shared_from_this()](beast::error_code code, std::size_t) { self->OnHeader(code); });
  }

  void OnHeader(beast::error_code code) {
    const bool was_idle = std::exchange(idle_, false);
    if (code == beast::error::timeout && was_idle) return;  // an idle connection is no fault
    if (code) return OnReadError(code);
    // A client that waits for "100 Continue" before it sends the body (curl does for
    // bodies over 1 KiB) gets it now rather than after its own timeout; a body over the
    // limit is refused before it is sent.
    const auto& header = parser_->get();
    if (beast::iequals(header[http::field::expect], "100-continue")) {
      if (parser_->content_length() &&
          *parser_->content_length() > server_->limits_.max_body_bytes) {
        return Refuse(http::status::payload_too_large, "request body too large");
      }
      continue_ = std::make_shared<std::string>("HTTP/1.1 100 Continue\r\n\r\n");
      asio::async_write(stream_, asio::buffer(*continue_),
                        [self = shared_from_this()](beast::error_code written, std::size_t) {
                          if (written) return;
                          self->ReadBody();
                        });
      return;
    }
    ReadBody();
  }

  void ReadBody() {
    http::async_read(stream_, buffer_, *parser_,
                     [self = shared_from_this()](beast::error_code code, std::size_t) {
                       if (code) return self->OnReadError(code);
                       self->OnRequest();
                     });
  }

  void OnReadError(beast::error_code code) {
    if (code == http::error::end_of_stream || code == asio::error::eof ||
        code == asio::error::connection_reset || code == asio::error::operation_aborted) {
      return;  // the client is gone, or the server closed
    }
    if (code == beast::error::timeout) {
      ++server_->counts_.timeouts;
      return;  // the stream is closed already
    }
    if (code == http::error::header_limit) {
      return Refuse(http::status::request_header_fields_too_large, "request header too large");
    }
    if (code == http::error::body_limit) {
      return Refuse(http::status::payload_too_large, "request body too large");
    }
    Refuse(http::status::bad_request, "malformed request");
  }

  // Answers a request that was not read to its end, and closes the connection.
  void Refuse(http::status status, const std::string& why) {
    ++server_->counts_.bad_requests;
    HttpServerReply reply;
    reply.status = static_cast<int>(status);
    reply.body = why + "\n";
    Write(reply, 11, false);
  }

  void OnRequest() {
    auto message = parser_->release();
    HttpServerRequest request;
    request.method = std::string(message.method_string());
    request.target = std::string(message.target());
    for (const auto& field : message) {
      request.headers.emplace_back(std::string(field.name_string()), std::string(field.value()));
    }
    request.body = std::move(message.body());
    request.peer = peer_;
    HttpServerReply reply;
    try {
      reply = server_->handler_(request);
    } catch (...) {
      reply = {500, "text/plain; charset=utf-8", "internal error\n"};
    }
    ++served_;
    const bool keep_alive =
        message.keep_alive() && served_ < server_->limits_.max_requests_per_connection;
    Write(reply, message.version(), keep_alive);
  }

  void Write(const HttpServerReply& reply, unsigned version, bool keep_alive) {
    auto response = std::make_shared<http::response<http::string_body>>(
        static_cast<http::status>(reply.status), version);
    response->set(http::field::server, "tetherd");
    response->set(http::field::content_type, reply.content_type);
    for (const auto& [name, value] : reply.headers) response->set(name, value);
    response->body() = reply.body;
    response->keep_alive(keep_alive);
    response->prepare_payload();
    stream_.expires_after(server_->limits_.timeout);
    http::async_write(stream_, *response,
                      [self = shared_from_this(), response](beast::error_code code, std::size_t) {
                        if (code) return;
                        if (!response->keep_alive() || self->server_->closed_) {
                          boost::system::error_code ignored;
                          self->stream_.socket().shutdown(tcp::socket::shutdown_send, ignored);
                          self->stream_.close();
                          return;
                        }
                        self->ReadHeader();
                      });
  }

  std::shared_ptr<HttpServer::Impl> server_;
  beast::tcp_stream stream_;
  beast::flat_buffer buffer_;
  std::optional<http::request_parser<http::string_body>> parser_;
  std::shared_ptr<std::string> continue_;
  std::string address_;  // the peer's address, for the per-peer count
  std::string peer_;     // "address:port", for the handler
  std::size_t served_ = 0;
  bool idle_ = false;
  bool stopped_ = false;
};

Result<tcp::endpoint> ParseListen(asio::io_context& io, const std::string& listen) {
  const auto colon = listen.rfind(':');
  if (colon == std::string::npos || colon == 0) {
    return Fail(std::errc::invalid_argument, "'" + listen + "': expected ADDRESS:PORT");
  }
  std::string host = listen.substr(0, colon);
  const std::string port = listen.substr(colon + 1);
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') {
    host = host.substr(1, host.size() - 2);
  }
  if (port.empty() || port.size() > 5 ||
      port.find_first_not_of("0123456789") != std::string::npos || std::stoul(port) > 65535) {
    return Fail(std::errc::invalid_argument, "'" + listen + "': bad port");
  }
  const auto number = static_cast<std::uint16_t>(std::stoul(port));
  boost::system::error_code code;
  const auto address = asio::ip::make_address(host, code);
  if (!code) return tcp::endpoint(address, number);
  tcp::resolver resolver(io);
  const auto found = resolver.resolve(host, port, tcp::resolver::numeric_service, code);
  if (code || found.empty()) {
    return Fail(std::errc::invalid_argument, "'" + listen + "': cannot resolve '" + host + "'" +
                                                 (code ? ": " + code.message() : std::string()));
  }
  return found.begin()->endpoint();
}

}  // namespace

bool HttpServer::Impl::Admit(const std::string& address) {
  if (const auto found = per_peer_.find(address);
      found != per_peer_.end() && found->second >= limits_.max_connections_per_peer) {
    return false;
  }
  sessions_.remove_if([](const std::weak_ptr<Session>& s) { return s.expired(); });
  if (open_ < limits_.max_connections) return true;
  // Full: the oldest connection idle between requests makes room (it is gone once its
  // handlers have run).
  for (const auto& weak : sessions_) {
    if (auto session = weak.lock(); session && session->idle()) {
      session->Stop();
      return true;
    }
  }
  return false;
}

void HttpServer::Impl::Accept() {
  acceptor_.async_accept(
      [self = shared_from_this()](boost::system::error_code code, tcp::socket socket) {
        if (self->closed_ || code == asio::error::operation_aborted) return;
        if (code) {
          // EMFILE and the like: again a little later, rather than spin on the loop.
          self->retry_.expires_after(std::chrono::milliseconds(200));
          self->retry_.async_wait([self](boost::system::error_code late) {
            if (!late && !self->closed_) self->Accept();
          });
          return;
        }
        boost::system::error_code no_peer;
        const auto remote = socket.remote_endpoint(no_peer);
        const std::string address = no_peer ? "" : remote.address().to_string();
        if (no_peer || !self->Admit(address)) {
          ++self->counts_.connections_refused;
          boost::system::error_code ignored;
          socket.close(ignored);
        } else {
          auto session = std::make_shared<Session>(self, std::move(socket), address);
          self->sessions_.push_back(session);
          session->Start();
        }
        self->Accept();
      });
}

void HttpServer::Impl::Close() {
  closed_ = true;
  boost::system::error_code ignored;
  retry_.cancel();
  acceptor_.close(ignored);
  for (auto& weak : sessions_) {
    if (auto session = weak.lock()) session->Stop();
  }
  sessions_.clear();
}

HttpServer::HttpServer(asio::io_context& io, HttpServerLimits limits, Handler handler)
    : impl_(std::make_shared<Impl>(io, limits, std::move(handler))) {}

HttpServer::~HttpServer() { impl_->Close(); }

Status HttpServer::Listen(const std::string& listen) {
  auto endpoint = ParseListen(impl_->io_, listen);
  if (!endpoint) return Fail(endpoint.error());
  boost::system::error_code code;
  auto& acceptor = impl_->acceptor_;
  acceptor.open(endpoint->protocol(), code);
  if (!code) acceptor.set_option(tcp::acceptor::reuse_address(true), code);
  if (!code) acceptor.bind(*endpoint, code);
  if (!code) acceptor.listen(128, code);
  if (code) {
    acceptor.close(code);
    return Fail(std::errc::address_not_available, "listen on " + listen + ": " + code.message());
  }
  return {};
}

Status HttpServer::Adopt(int fd) {
  sockaddr_storage address{};
  socklen_t length = sizeof(address);
  if (getsockname(fd, reinterpret_cast<sockaddr*>(&address), &length) != 0) {
    return FailErrno(errno, "the socket systemd passed");
  }
  int type = 0;
  int listening = 0;
  socklen_t size = sizeof(type);
  (void)getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &size);
  size = sizeof(listening);
  (void)getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &listening, &size);
  if ((address.ss_family != AF_INET && address.ss_family != AF_INET6) || type != SOCK_STREAM ||
      listening == 0) {
    return Fail(std::errc::address_family_not_supported,
                "the socket systemd passed is not a listening TCP socket");
  }
  boost::system::error_code code;
  impl_->acceptor_.assign(address.ss_family == AF_INET6 ? tcp::v6() : tcp::v4(), fd, code);
  if (code)
    return Fail(std::errc::bad_file_descriptor, "the socket systemd passed: " + code.message());
  return {};
}

void HttpServer::Start() { impl_->Accept(); }

void HttpServer::Close() { impl_->Close(); }

std::uint16_t HttpServer::port() const {
  boost::system::error_code code;
  const auto endpoint = impl_->acceptor_.local_endpoint(code);
  return code ? 0 : endpoint.port();
}

const HttpServerCounts& HttpServer::counts() const { return impl_->counts_; }

}  // namespace tether
