#include "common/http_client.hpp"

#include <openssl/ssl.h>
#include <poll.h>

#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>
#include <optional>

namespace tether {

namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;
using Clock = std::chrono::steady_clock;

// How long a request with `Expect: 100-continue` waits for the server's go-ahead before it
// sends the body anyway (as curl does): servers that predate the header never answer it.
constexpr auto kExpectWait = std::chrono::seconds(1);
// Interim (1xx) answers skipped before a final one; more is a protocol error.
constexpr int kMaxInterim = 16;
// How long a TLS close waits for the server's close_notify.
constexpr auto kTlsCloseWait = std::chrono::milliseconds(250);

Error NetworkError(const beast::error_code& code, const std::string& what, const HttpUrl& url) {
  const std::string message = what + " " + url.shown + ": " + code.message();
  if (code == beast::error::timeout || code == asio::error::operation_aborted) {
    return Error(std::make_error_code(std::errc::timed_out),
                 what + " " + url.shown + ": timed out");
  }
  if (code.category() == asio::error::get_ssl_category() ||
      code.category() == asio::ssl::error::get_stream_category() ||
      code.category() == http::make_error_code(http::error::end_of_stream).category()) {
    return Error(std::make_error_code(std::errc::protocol_error), message);
  }
  if (code.category() == asio::error::get_system_category()) {
    return Error(std::error_code(code.value(), std::generic_category()), message);
  }
  return Error(std::make_error_code(std::errc::io_error), message);
}

// The TLS material a request names, as a key: a kept connection serves only requests with
// the same.
std::string TlsKey(const HttpRequest& request) {
  return request.ca_file + '\n' + request.ca_pem + '\n' + request.client_cert + '\n' +
         request.client_cert_pem + '\n' + request.client_key + '\n' + request.client_key_pem;
}

Result<void> LoadTls(asio::ssl::context& tls, const HttpRequest& request) {
  beast::error_code code;
  tls.set_options(asio::ssl::context::default_workarounds | asio::ssl::context::no_sslv2 |
                  asio::ssl::context::no_sslv3 | asio::ssl::context::no_tlsv1 |
                  asio::ssl::context::no_tlsv1_1);
  tls.set_verify_mode(asio::ssl::verify_peer);
  if (!request.ca_pem.empty()) {
    tls.add_certificate_authority(asio::buffer(request.ca_pem), code);
  } else if (request.ca_file.empty()) {
    tls.set_default_verify_paths(code);
  } else {
    tls.load_verify_file(request.ca_file, code);
  }
  if (code) {
    return Fail(
        std::errc::invalid_argument,
        "load the CA certificates " +
            (request.ca_file.empty() ? std::string("of the system") : "'" + request.ca_file + "'") +
            ": " + code.message());
  }
  if (!request.client_cert_pem.empty()) {
    tls.use_certificate_chain(asio::buffer(request.client_cert_pem), code);
    if (!code) {
      tls.use_private_key(asio::buffer(request.client_key_pem), asio::ssl::context::pem, code);
    }
  } else if (!request.client_cert.empty()) {
    tls.use_certificate_chain_file(request.client_cert, code);
    if (!code) tls.use_private_key_file(request.client_key, asio::ssl::context::pem, code);
  }
  if (code) {
    return Fail(std::errc::invalid_argument,
                "load the client certificate '" + request.client_cert + "': " + code.message());
  }
  return {};
}

}  // namespace

// The client's I/O context, TLS context and kept connection.
struct HttpClient::Impl {
  Impl() { Reset(); }

  // Drops the connection and every operation in flight, without running their handlers.
  void Reset() {
    tls_stream.reset();
    tcp_stream.reset();
    io.reset();  // handlers in flight are destroyed, not called
    io = std::make_unique<asio::io_context>();
    buffer.clear();
    peer.clear();
  }

  [[nodiscard]] bool connected() const { return tcp_stream || tls_stream; }

  [[nodiscard]] int native_handle() {
    return tls_stream ? beast::get_lowest_layer(*tls_stream).socket().native_handle()
                      : tcp_stream->socket().native_handle();
  }

  // True when the server closed the kept connection or sent something unasked for: it
  // cannot carry a request.
  [[nodiscard]] bool Stale() {
    if (buffer.size() > 0) return true;
    pollfd fd = {native_handle(), POLLIN, 0};
    return poll(&fd, 1, 0) != 0;
  }

  // Closes the connection; over TLS, says close_notify first and waits briefly for the
  // server's.
  void Close() {
    if (tls_stream) {
      beast::get_lowest_layer(*tls_stream).expires_after(kTlsCloseWait);
      tls_stream->async_shutdown([](beast::error_code) {});
      io->restart();
      io->run_for(kTlsCloseWait + std::chrono::milliseconds(50));
    }
    Reset();
  }

  std::unique_ptr<asio::io_context> io;
  std::optional<asio::ssl::context> tls;
  std::string tls_key;  // what `tls` was loaded from
  std::string peer;     // the kept connection's scheme, host, port and TLS key; "" for none
  std::unique_ptr<beast::tcp_stream> tcp_stream;  // plain HTTP
  std::unique_ptr<beast::ssl_stream<beast::tcp_stream>> tls_stream;
  beast::flat_buffer buffer;
  std::uint64_t opened = 0;
};

namespace {

// One exchange, driven by completion handlers on the client's io_context: (resolve,
// connect, TLS handshake,) write the request while reading the answer. Each step ends the
// exchange with an error or starts the next one.
class Exchange {
 public:
  // `may_expect`: a large body may wait for 100 Continue (false after a 417).
  Exchange(HttpClient::Impl& client, const HttpRequest& request, const HttpUrl& url,
           Clock::time_point deadline, bool may_expect)
      : client_(client),
        request_(request),
        url_(url),
        deadline_(deadline),
        may_expect_(may_expect),
        resolver_(*client.io),
        expect_timer_(*client.io) {}

  // On the kept connection, or on a new one.
  void Start(bool reuse) {
    if (reuse) return Send();
    resolver_.async_resolve(url_.host, url_.port,
                            [this](beast::error_code code, tcp::resolver::results_type found) {
                              if (code) return Finish(NetworkError(code, "resolve", url_));
                              Connect(found);
                            });
  }

  [[nodiscard]] const std::optional<HttpResponse>& response() const { return response_; }
  [[nodiscard]] const std::optional<Error>& error() const { return error_; }
  // True when the connection can carry the next request.
  [[nodiscard]] bool reusable() const {
    return response_ && response_->complete && read_done_ && write_done_ && !write_error_ &&
           !body_skipped_ && !closed_ && parser_ && parser_->keep_alive();
  }
  // True when the answer came to the header alone: the body was never sent.
  [[nodiscard]] bool body_skipped() const { return body_skipped_; }
  // True when the answer is complete and the connection open: it may be closed politely.
  [[nodiscard]] bool graceful() const { return response_ && response_->complete && !closed_; }
  // True when the exchange failed before any byte of an answer arrived.
  [[nodiscard]] bool unanswered() const {
    return !response_ && interim_ == 0 && (!parser_ || !parser_->got_some());
  }

 private:
  void Connect(const tcp::resolver::results_type& endpoints) {
    client_.tcp_stream = std::make_unique<beast::tcp_stream>(*client_.io);
    ++client_.opened;
    client_.tcp_stream->expires_after(
        std::min<Clock::duration>(request_.connect_timeout, deadline_ - Clock::now()));
    client_.tcp_stream->async_connect(
        endpoints, [this](beast::error_code code, const tcp::endpoint&) {
          if (code) return Finish(NetworkError(code, "connect to", url_));
          beast::error_code ignored;
          client_.tcp_stream->socket().set_option(tcp::no_delay(true), ignored);
          if (!url_.tls) return Send();
          Handshake();
        });
  }

  void Handshake() {
    client_.tls_stream = std::make_unique<beast::ssl_stream<beast::tcp_stream>>(
        std::move(*client_.tcp_stream), *client_.tls);
    client_.tcp_stream.reset();
    auto& stream = *client_.tls_stream;
    beast::get_lowest_layer(stream).expires_at(deadline_);
    if (SSL_set_tlsext_host_name(stream.native_handle(), url_.host.c_str()) != 1) {
      return Finish(Error(std::make_error_code(std::errc::protocol_error),
                          "set the TLS server name for " + url_.shown));
    }
    stream.set_verify_callback(asio::ssl::host_name_verification(url_.host));
    stream.async_handshake(asio::ssl::stream_base::client, [this](beast::error_code code) {
      if (code) return Finish(NetworkError(code, "TLS handshake with", url_));
      Send();
    });
  }

  // Calls `step` with whichever stream carries the exchange.
  template <typename Step>
  void OnStream(Step&& step) {
    if (client_.tls_stream) {
      step(*client_.tls_stream);
    } else {
      step(*client_.tcp_stream);
    }
  }

  // Writes the request and, at the same time, reads the answer: a server may answer
  // before it has read the whole request (and then stop reading it).
  void Send() {
    if (client_.tls_stream) {
      beast::get_lowest_layer(*client_.tls_stream).expires_at(deadline_);
    } else {
      client_.tcp_stream->expires_at(deadline_);
    }
    message_ = {http::string_to_verb(request_.method), url_.target, 11};
    message_.set(http::field::host, url_.host);
    message_.set(http::field::user_agent, "tether");
    for (const auto& [name, value] : request_.headers) message_.set(name, value);
    if (!request_.body.empty() || request_.method == "POST" || request_.method == "PUT") {
      message_.body() = request_.body;
      message_.prepare_payload();
    }
    expect_ = may_expect_ && request_.body.size() >= kExpectContinueFrom;
    if (expect_) message_.set(http::field::expect, "100-continue");
    serializer_.emplace(message_);
    if (!expect_) {
      WriteBody();
    } else {
      OnStream([this](auto& stream) {
        http::async_write_header(stream, *serializer_, [this](beast::error_code code, std::size_t) {
          header_written_ = true;
          if (code) return WriteDone(code);
          if (go_ahead_) return WriteBody();
          if (body_skipped_ || read_done_) return WriteDone({});
          expect_timer_.expires_after(kExpectWait);
          expect_timer_.async_wait([this](beast::error_code timer) {
            if (!timer && !body_started_ && !read_done_ && !body_skipped_) WriteBody();
          });
        });
      });
    }
    ReadHeader();
  }

  void WriteBody() {
    body_started_ = true;
    OnStream([this](auto& stream) {
      http::async_write(stream, *serializer_,
                        [this](beast::error_code code, std::size_t) { WriteDone(code); });
    });
  }

  void WriteDone(const beast::error_code& code) {
    write_done_ = true;
    // An answer that arrived before the request failed stands. Without one, the read
    // fails too (the connection is gone) and says this error.
    if (code) write_error_ = code;
  }

  void ReadHeader() {
    parser_.emplace();
    parser_->body_limit(request_.max_response_body);
    OnStream([this](auto& stream) {
      http::async_read_header(stream, client_.buffer, *parser_,
                              [this](beast::error_code code, std::size_t) { HeaderRead(code); });
    });
  }

  void HeaderRead(beast::error_code code) {
    if (code) return ReadFailed(code);
    const int status = static_cast<int>(parser_->get().result_int());
    if (status >= 100 && status < 200 && status != 101) {  // interim: the answer follows
      if (++interim_ > kMaxInterim) {
        return ReadFailed(http::make_error_code(http::error::bad_status));
      }
      if (expect_ && status == 100 && !body_started_ && !go_ahead_) {
        expect_timer_.cancel();
        if (header_written_) {
          WriteBody();
        } else {
          go_ahead_ = true;  // once the header is out
        }
      }
      return ReadHeader();
    }
    if (expect_ && !body_started_ && !go_ahead_) {  // an answer to the header alone
      body_skipped_ = true;
      expect_timer_.cancel();
    }
    // Boost 1.74's parser does not hold a Content-Length to its body limit (chunked and
    // close-delimited bodies it does): checked here, before the body is read.
    if (parser_->content_length() && *parser_->content_length() > request_.max_response_body) {
      return ReadFailed(http::make_error_code(http::error::body_limit));
    }
    OnStream([this](auto& stream) {
      http::async_read(stream, client_.buffer, *parser_,
                       [this](beast::error_code code, std::size_t) {
                         if (code) return ReadFailed(code);
                         read_done_ = true;
                         response_ = Response();
                         AfterAnswer();
                       });
    });
  }

  // The answer as parsed so far: the status line and headers, and the body read.
  [[nodiscard]] HttpResponse Response() const {
    HttpResponse response;
    const auto& answer = parser_->get();
    response.status = static_cast<int>(answer.result_int());
    for (const auto& field : answer) {
      response.headers.emplace_back(std::string(field.name_string()), std::string(field.value()));
    }
    response.body = answer.body();
    return response;
  }

  // A failed read. Once the status line and headers are in, the answer stands, marked
  // incomplete: the server has spoken, however the connection ends.
  void ReadFailed(const beast::error_code& code) {
    read_done_ = true;
    expect_timer_.cancel();
    if (!parser_->is_header_done()) {
      // A request that could not be sent says more than the read that followed it.
      const Error error = write_error_ ? NetworkError(*write_error_, "send to", url_)
                                       : NetworkError(code, "read from", url_);
      CloseSocket();
      return Finish(error);
    }
    const Error error = code == http::error::body_limit
                            ? Error(std::make_error_code(std::errc::file_too_large),
                                    url_.shown + " answered with more than " +
                                        std::to_string(request_.max_response_body) + " bytes")
                            : NetworkError(code, "read from", url_);
    HttpResponse response = Response();
    response.complete = false;
    response.incomplete = error.message();
    response_ = std::move(response);
    CloseSocket();
  }

  // The answer is in: a request still being sent is given up (the server has answered
  // without reading it all); the connection cannot be kept then.
  void AfterAnswer() {
    expect_timer_.cancel();
    if (!write_done_) CloseSocket();
  }

  void CloseSocket() {
    closed_ = true;
    beast::error_code ignored;
    if (client_.tls_stream) {
      beast::get_lowest_layer(*client_.tls_stream).socket().close(ignored);
    } else if (client_.tcp_stream) {
      client_.tcp_stream->socket().close(ignored);
    }
  }

  void Finish(Error error) {
    expect_timer_.cancel();
    error_ = std::move(error);
  }

  HttpClient::Impl& client_;
  const HttpRequest& request_;
  const HttpUrl& url_;
  Clock::time_point deadline_;
  const bool may_expect_;
  tcp::resolver resolver_;
  asio::steady_timer expect_timer_;
  http::request<http::string_body> message_;
  std::optional<http::request_serializer<http::string_body>> serializer_;
  std::optional<http::response_parser<http::string_body>> parser_;
  bool expect_ = false;  // sent with Expect: 100-continue
  bool header_written_ = false;
  bool go_ahead_ = false;      // 100 Continue came before the header was written
  bool body_started_ = false;  // the body is being (or was) written
  bool body_skipped_ = false;  // a final answer came before the body was sent
  bool write_done_ = false;
  bool read_done_ = false;
  bool closed_ = false;  // the socket was closed here
  int interim_ = 0;
  std::optional<beast::error_code> write_error_;
  std::optional<HttpResponse> response_;
  std::optional<Error> error_;
};

}  // namespace

HttpClient::HttpClient() : impl_(std::make_unique<Impl>()) {}

HttpClient::~HttpClient() { Close(); }

void HttpClient::Close() {
  if (impl_->connected()) impl_->Close();
}

std::uint64_t HttpClient::connections_opened() const { return impl_->opened; }

Result<HttpResponse> HttpClient::Fetch(const HttpRequest& request) {
  auto url = ParseHttpUrl(request.url);
  if (!url) return Fail(url.error());
  if (request.client_cert.empty() != request.client_key.empty()) {
    return Fail(std::errc::invalid_argument, "a client certificate needs its key, and back");
  }
  Impl& client = *impl_;
  const std::string tls_key = TlsKey(request);
  const std::string peer =
      std::string(url->tls ? "https://" : "http://") + url->host + ':' + url->port + '\n' + tls_key;
  if (client.connected() && (client.peer != peer || client.Stale())) client.Close();
  if (url->tls && (!client.tls || client.tls_key != tls_key)) {
    if (client.connected()) client.Close();
    client.tls.emplace(asio::ssl::context::tls_client);
    client.tls_key.clear();
    if (auto loaded = LoadTls(*client.tls, request); !loaded) {
      client.tls.reset();
      return Fail(loaded.error());
    }
    client.tls_key = tls_key;
  }

  const auto deadline = Clock::now() + request.timeout;
  bool may_expect = true;
  for (int attempt = 0;; ++attempt) {
    const bool reuse = client.connected();
    std::optional<HttpResponse> response;
    std::optional<Error> error;
    bool finished = false;
    bool unanswered = false;
    bool reusable = false;
    bool graceful = false;
    bool body_skipped = false;
    {
      Exchange exchange(client, request, *url, deadline, may_expect);
      client.io->restart();
      exchange.Start(reuse);
      // The stream deadlines bound every network step; this bounds name resolution too.
      client.io->run_until(deadline + std::chrono::milliseconds(200));
      finished = client.io->stopped();
      response = exchange.response();
      error = exchange.error();
      unanswered = exchange.unanswered();
      reusable = exchange.reusable();
      graceful = exchange.graceful();
      body_skipped = exchange.body_skipped();
    }  // the exchange goes before the I/O context its timers and resolver use
    if (!finished) {
      client.Reset();  // the handlers still in flight are dropped, not called
      return Fail(std::errc::timed_out, "request to " + url->shown + ": timed out");
    }
    if (reusable) {
      client.peer = peer;
    } else if (graceful) {
      client.Close();
    } else {
      client.Reset();
    }
    // 417 Expectation Failed to the header alone: a server (or a proxy) that does not do
    // Expect. Once more without it, the body right after the header (RFC 9110 10.1.1).
    if (response && response->status == 417 && body_skipped && may_expect &&
        Clock::now() < deadline) {
      may_expect = false;
      continue;
    }
    if (response) return std::move(*response);
    // The kept connection was closed by the server as the request went out: once more
    // on a new one.
    if (reuse && unanswered && attempt == 0 && Clock::now() < deadline) continue;
    if (error) return Fail(*error);
    return Fail(std::errc::io_error, "request to " + url->shown + ": no response");
  }
}

Result<HttpResponse> HttpFetch(const HttpRequest& request) {
  HttpClient client;
  return client.Fetch(request);
}

}  // namespace tether
