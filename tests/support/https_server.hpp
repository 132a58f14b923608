// HttpsServer: a real HTTPS (or plain HTTP) server on 127.0.0.1 with a kernel-chosen port, for
// tests of clients. It records every request it reads and answers from a script: a queue of
// responses consumed one per request (status, headers, body, a delay, or dropping / hanging the
// connection), then a default response.
//
// Built on Boost.Beast + OpenSSL; no Boost type appears here. TLS 1.2 and 1.3, HTTP/1.1 with
// keep-alive and "Expect: 100-continue"; no HTTP/2 (ALPN is not offered).
//
// Threading: the server runs its own I/O thread. Every public method is thread-safe.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "tests/support/test_ca.hpp"

namespace tether::testing {

using HttpHeaders = std::vector<std::pair<std::string, std::string>>;

// One request as the server read it.
struct RecordedRequest {
  std::string method;            // "POST"
  std::string target;            // "/v1/status?x=1", as sent
  HttpHeaders headers;           // in arrival order, names as sent
  std::string body;              // de-chunked when sent chunked
  std::string client_cn;         // subject CN of the verified client certificate; empty without one
  std::uint64_t connection = 0;  // 1 for the first accepted connection, 2 for the next, ...
  std::chrono::steady_clock::time_point arrival;  // when the whole request had been read

  // The value of the first header named `name` (case-insensitive), or nullopt.
  [[nodiscard]] std::optional<std::string> Header(std::string_view name) const;
};

// What the server does with one request.
struct ScriptedResponse {
  enum class Action {
    kRespond,  // send status/headers/body after `delay`
    kClose,    // close the TCP connection after `delay` without answering (no TLS close_notify)
    kHang,     // never answer; the connection stays open until the server stops
  };

  Action action = Action::kRespond;
  int status = 200;
  // Sent after Content-Length has been computed, replacing fields of the same name (a name may
  // repeat), so a script may send e.g. a wrong Content-Length or "Connection: close" (the
  // server then closes after the response).
  HttpHeaders headers;
  std::string body;
  std::chrono::milliseconds delay{0};  // before answering or closing; the timer starts when
                                       // the request has been read

  [[nodiscard]] static ScriptedResponse Respond(int status, std::string body = {},
                                                HttpHeaders headers = {});
  [[nodiscard]] static ScriptedResponse Close();
  // This response with `delay` set to `wait`.
  [[nodiscard]] ScriptedResponse After(std::chrono::milliseconds wait) const;
  [[nodiscard]] static ScriptedResponse Hang();
};

struct HttpsServerOptions {
  CertificateFiles certificate;  // the server's PEM certificate (chain) and key; unused for
                                 // plain HTTP
  std::string client_ca;         // non-empty: REQUIRE a client certificate that verifies
                                 // against this PEM CA file (mTLS); handshakes without fail
  bool plain_http = false;       // serve http:// without TLS
};

class HttpsServer {
 public:
  // Loads the certificate, binds 127.0.0.1:0 and starts serving before returning. Aborts the
  // test program on failure (unreadable certificate or key, no socket).
  explicit HttpsServer(HttpsServerOptions options);
  HttpsServer(const HttpsServer&) = delete;
  HttpsServer& operator=(const HttpsServer&) = delete;
  // Stop().
  ~HttpsServer();

  [[nodiscard]] std::uint16_t port() const;
  // "https://localhost:PORT" + path ("http://" in plain mode). The server listens on
  // 127.0.0.1 only: a client that tries ::1 for "localhost" first must fall back to IPv4.
  [[nodiscard]] std::string url(std::string_view path = "/") const;

  // Appends to the script. Each request read takes the oldest entry, or the default response
  // when the script is empty.
  void Enqueue(ScriptedResponse response);
  // The answer when the script is empty; initially Respond(200).
  void SetDefaultResponse(ScriptedResponse response);

  // A copy of every request read so far, in arrival order.
  [[nodiscard]] std::vector<RecordedRequest> requests() const;
  [[nodiscard]] std::size_t request_count() const;
  // Waits until at least `count` requests have been read; false when `timeout` passed first.
  [[nodiscard]] bool WaitForRequests(std::size_t count, std::chrono::milliseconds timeout) const;
  // TLS handshakes that failed: an untrusted server certificate on the client side, a
  // missing or unverifiable client certificate, a client speaking plain HTTP, ...
  [[nodiscard]] std::size_t failed_handshakes() const;

  // Stops accepting, closes every connection (also delayed and hanging ones) and joins the
  // I/O thread; returns within about two seconds in any case. Idempotent. The recorded
  // requests stay readable.
  void Stop();

 private:
  class Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace tether::testing
