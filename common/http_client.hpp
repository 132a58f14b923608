// A small HTTP(S) client for one request at a time: health checks now, status reports
// later. Synchronous for its caller, with a connect deadline and a total deadline; TLS
// verifies the peer against the system CAs or a given CA file, with the host name
// checked; redirects are never followed (a 3xx is returned as it is).
//
// Threading: thread-compatible; each call has its own I/O context.
#pragma once

#include <chrono>
#include <cstddef>
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

// Sends `request` and reads the response. Errors: EINVAL for a URL that is not http(s),
// ETIMEDOUT past a deadline, ECONNREFUSED and the like from the network, EPROTO for a TLS
// or HTTP protocol failure (certificate not trusted, wrong host name), EFBIG for a
// response body over the limit. Messages name the URL without its query string.
[[nodiscard]] Result<HttpResponse> HttpFetch(const HttpRequest& request);

}  // namespace tether
