// A small HTTP(S) client for one request at a time: health checks, status reports.
// Synchronous for its caller, with a connect deadline and a total deadline; TLS verifies
// the peer against the system CAs or a given CA file, with the host name checked;
// redirects are never followed (a 3xx is returned as it is).
//
// HTTP/1.1 as servers of every age speak it: interim 1xx answers are skipped (with
// `Expect: 100-continue` on a large body, which is sent once the server says 100, or after
// a second without an answer, and not at all when the server answers first, e.g. 413);
// a body may come with Content-Length, chunked, or until the server closes; an answer that
// arrives while the request is still being sent stands. HttpClient keeps its connection
// between requests when the server allows it (one TLS handshake for a burst).
//
// Threading: thread-compatible; HttpFetch has its own I/O context per call, an HttpClient
// one of its own.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "common/error.hpp"

namespace tether {

struct HttpRequest {
  std::string method = "GET";
  std::string url;  // http://HOST[:PORT]/PATH or https://...
  std::vector<std::pair<std::string, std::string>> headers{};
  std::string body{};
  std::string ca_file{};      // PEM; empty: the system CAs
  std::string client_cert{};  // PEM files for mutual TLS; both or neither
  std::string client_key{};
  // The same, already read (PEM text), for a process that gave up the right to read
  // the files: each one set is used instead of its file (which then only names it in
  // messages).
  std::string ca_pem{};
  std::string client_cert_pem{};
  std::string client_key_pem{};
  std::chrono::milliseconds connect_timeout{std::chrono::seconds(5)};
  std::chrono::milliseconds timeout{std::chrono::seconds(10)};  // the whole exchange
  std::size_t max_response_body = 1 << 20;
  // For a sender that runs the request in a child process (the daemon's reports): when
  // this fd becomes readable, the attempt is given up at once (RunOptions::cancel_fd).
  // HttpFetch itself does not watch it. -1: none.
  int cancel_fd = -1;
};

struct HttpResponse {
  int status = 0;
  std::vector<std::pair<std::string, std::string>> headers{};
  std::string body{};
  // False when the status line and headers arrived but the whole body did not: the
  // connection ended first (a reset, an EOF, TLS closed without close_notify), the body
  // went over max_response_body, or the deadline passed. `body` holds what was read and
  // `incomplete` says why. Whoever needs the body treats that as a failure; whoever needs
  // only the status (a delivery: the receiver said 2xx) has its answer.
  bool complete = true;
  std::string incomplete{};

  // The first header named `name` (case-insensitive), or "".
  [[nodiscard]] std::string Header(std::string_view name) const;
};

// An http:// or https:// URL, taken apart.
struct HttpUrl {
  bool tls = false;
  std::string host;  // without brackets for IPv6
  std::string port;  // "80" or "443" when the URL has none
  std::string target;
  std::string shown;  // for messages: without the query string
};

// Errors: EINVAL for a URL that is not http(s)://, has no host, has credentials, or a
// malformed port.
[[nodiscard]] Result<HttpUrl> ParseHttpUrl(const std::string& url);

// A body at least this large is sent with `Expect: 100-continue`.
inline constexpr std::size_t kExpectContinueFrom = 1 << 20;

// Sends `request` and reads the response, on a connection of its own. Errors: EINVAL for a URL that
// is not http(s), ETIMEDOUT past a deadline, ECONNREFUSED and the like from the network, EPROTO for
// a TLS or HTTP protocol failure (certificate not trusted, wrong host name), EFBIG for a response
// body over the limit. Messages name the URL without its query string.
[[nodiscard]] Result<HttpResponse> HttpFetch(const HttpRequest& request);

// Sends one request and reads its response, as HttpFetch does: HttpFetch itself, or the
// same in a child process (agent/report/send_process.hpp, tetherd-http), which keeps
// OpenSSL out of the daemon and of a cycle's process.
using HttpSender = std::function<Result<HttpResponse>(const HttpRequest&)>;

// HttpFetch that keeps its connection open after an answer the server did not end with
// `Connection: close` (or HTTP/1.0), for the next request to the same scheme, host, port
// and TLS settings. A kept connection the server has closed meanwhile is noticed before it
// is used, or when the request fails before any answer arrived: that request is then sent
// once more, on a new connection (so a receiver may see it twice; reports carry an id for
// that). A request past its deadline drops the connection.
class HttpClient {
 public:
  HttpClient();
  // Close().
  ~HttpClient();
  HttpClient(const HttpClient&) = delete;
  HttpClient& operator=(const HttpClient&) = delete;

  // As HttpFetch.
  [[nodiscard]] Result<HttpResponse> Fetch(const HttpRequest& request);
  // Closes the kept connection, if any (with a TLS close_notify, waiting briefly).
  void Close();
  // How many connections have been opened, e.g. to see that one was kept.
  [[nodiscard]] std::uint64_t connections_opened() const;

  struct Impl;

 private:
  std::unique_ptr<Impl> impl_;
};

}  // namespace tether
