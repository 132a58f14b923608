// A plain-HTTP client that keeps its connection open between requests, on the caller's
// io_context: for a daemon that asks the same server the same small question every
// interval (source.poll_url) and should cost that server, and itself, as little as
// possible. No TLS: https:// requests are refused (EINVAL); they belong to HttpFetch in a
// child process, which keeps OpenSSL out of the daemon.
//
// A connection the server closed while idle is noticed when the next request fails
// before any answer arrived, and that request is sent once more on a new connection.
// Responses are bounded by HttpRequest::max_response_body, and each request by its
// connect_timeout and timeout.
//
// Threading: everything runs on the io_context it was made with; one request at a time.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>

#include <boost/asio/io_context.hpp>

#include "common/error.hpp"
#include "common/http_client.hpp"

namespace tether {

class HttpKeepAlive {
 public:
  using Done = std::function<void(Result<HttpResponse>)>;

  explicit HttpKeepAlive(boost::asio::io_context& io);
  // Closes the connection; a request in flight ends without its `done` being called.
  ~HttpKeepAlive();
  HttpKeepAlive(const HttpKeepAlive&) = delete;
  HttpKeepAlive& operator=(const HttpKeepAlive&) = delete;

  // Sends `request` (an http:// URL) and calls `done` on the loop with the response or the
  // error. One request at a time: another while one is in flight fails with EBUSY. A
  // Close() meanwhile ends it with ECANCELED.
  void Fetch(const HttpRequest& request, Done done);
  // Ends the request in flight, if any, and closes the connection.
  void Close();

  // How many connections have been opened, e.g. to see that one was kept.
  [[nodiscard]] std::uint64_t connections_opened() const;

  class Impl;

 private:
  std::shared_ptr<Impl> impl_;
};

}  // namespace tether
