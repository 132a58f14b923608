// A small HTTP/1.1 server for the daemon's listeners (the webhook, /metrics), built to
// face hostile callers: every request is bounded in header and body size and in time,
// the number of connections is bounded, and nothing a client sends can throw or make
// the server hold more than its limits. Keep-alive is supported (a scraper reuses its
// connection); pipelined requests are answered in order.
//
// Plain HTTP only: the listeners are meant for a private network or a reverse proxy.
//
// Threading: everything runs on the io_context the server was made with, which must be
// run by one thread.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <boost/asio/io_context.hpp>

#include "common/error.hpp"

namespace tether {

struct HttpServerLimits {
  // Past it, a new connection takes the place of one idle between requests, or is closed
  // at once when none is.
  std::size_t max_connections = 32;
  std::size_t max_connections_per_peer = 8;  // by address: one caller cannot take them all
  std::size_t max_header_bytes = 8192;       // request line and headers: 431 past it
  std::size_t max_body_bytes = 1 << 20;      // 413 past it
  // How long reading one request (from the connection's start, or from the previous
  // reply on a kept-alive connection, to its last byte) and writing its reply may take:
  // a client that sends or reads slowly, or sits idle, is cut off here.
  std::chrono::milliseconds timeout{std::chrono::seconds(10)};
  // A kept-alive connection is closed when its next request has not come within this.
  std::chrono::milliseconds idle_timeout{std::chrono::seconds(5)};
  std::size_t max_requests_per_connection = 1000;
};

struct HttpServerRequest {
  std::string method;
  std::string target;
  std::vector<std::pair<std::string, std::string>> headers;
  std::string body;
  std::string peer;  // "address:port"

  // The first header named `name` (case-insensitive), or "".
  [[nodiscard]] std::string_view Header(std::string_view name) const;
};

struct HttpServerReply {
  int status = 200;
  std::string content_type = "text/plain; charset=utf-8";
  std::string body;
  std::vector<std::pair<std::string, std::string>> headers{};
};

// What the server refused before a handler saw a request, for metrics.
struct HttpServerCounts {
  std::uint64_t connections_refused = 0;  // over max_connections or the per-peer limit
  std::uint64_t bad_requests = 0;         // malformed, or over a size limit
  std::uint64_t timeouts = 0;             // too slow
};

// Accepts "ADDRESS:PORT": an IPv4 address, an IPv6 address in brackets ("[::1]:9420",
// "[::]:9420" for every address), or a host name that resolves to one. Port 0 takes a
// free port (tests).
class HttpServer {
 public:
  using Handler = std::function<HttpServerReply(const HttpServerRequest&)>;

  HttpServer(boost::asio::io_context& io, HttpServerLimits limits, Handler handler);
  ~HttpServer();
  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;

  // Binds and listens on `listen` ("address:port").
  [[nodiscard]] Status Listen(const std::string& listen);
  // Takes a listening TCP socket someone else made (systemd socket activation).
  [[nodiscard]] Status Adopt(int fd);
  // Accepts connections until Close.
  void Start();
  // Stops accepting and ends every open connection.
  void Close();

  // The port listened on (after Listen or Adopt), e.g. to learn the one port 0 chose.
  [[nodiscard]] std::uint16_t port() const;
  [[nodiscard]] const HttpServerCounts& counts() const;

  class Impl;

 private:
  std::shared_ptr<Impl> impl_;
};

}  // namespace tether
