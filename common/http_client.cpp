#include "common/http_client.hpp"

#include <openssl/ssl.h>

#include <strings.h>
#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl.hpp>
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

// The outcome of the exchange, set by the coroutine.
struct Outcome {
  std::optional<HttpResponse> response;
  std::optional<Error> error;
};

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

// One exchange, driven by completion handlers on one io_context: resolve, connect,
// (TLS handshake,) write, read the header, read the body (, TLS shutdown). Each step ends
// the exchange with an error in `outcome` or starts the next one.
class Session {
 public:
  Session(asio::io_context& io, asio::ssl::context& tls, const HttpRequest& request,
          const HttpUrl& url, std::chrono::steady_clock::time_point deadline)
      : tls_(tls), request_(request), url_(url), deadline_(deadline), resolver_(io), tcp_(io) {}

  void Start() {
    resolver_.async_resolve(url_.host, url_.port,
                            [this](beast::error_code code, tcp::resolver::results_type found) {
                              if (code) return Finish(NetworkError(code, "resolve", url_));
                              Connect(found);
                            });
  }

  Outcome& outcome() { return outcome_; }

 private:
  void Connect(const tcp::resolver::results_type& endpoints) {
    tcp_.expires_after(std::min<std::chrono::steady_clock::duration>(
        request_.connect_timeout, deadline_ - std::chrono::steady_clock::now()));
    tcp_.async_connect(endpoints, [this](beast::error_code code, const tcp::endpoint&) {
      if (code) return Finish(NetworkError(code, "connect to", url_));
      tcp_.expires_at(deadline_);
      beast::error_code ignored;
      tcp_.socket().set_option(tcp::no_delay(true), ignored);
      if (!url_.tls) return Write();
      Handshake();
    });
  }

  void Handshake() {
    tls_stream_.emplace(std::move(tcp_), tls_);
    if (SSL_set_tlsext_host_name(tls_stream_->native_handle(), url_.host.c_str()) != 1) {
      return Finish(Error(std::make_error_code(std::errc::protocol_error),
                          "set the TLS server name for " + url_.shown));
    }
    tls_stream_->set_verify_callback(asio::ssl::host_name_verification(url_.host));
    tls_stream_->async_handshake(asio::ssl::stream_base::client, [this](beast::error_code code) {
      if (code) return Finish(NetworkError(code, "TLS handshake with", url_));
      Write();
    });
  }

  // Calls `step` with whichever stream carries the exchange.
  template <typename Step>
  void OnStream(Step&& step) {
    if (tls_stream_) {
      step(*tls_stream_);
    } else {
      step(tcp_);
    }
  }

  void Write() {
    message_ = {http::string_to_verb(request_.method), url_.target, 11};
    message_.set(http::field::host, url_.host);
    message_.set(http::field::user_agent, "tether");
    for (const auto& [name, value] : request_.headers) message_.set(name, value);
    if (!request_.body.empty() || request_.method == "POST" || request_.method == "PUT") {
      message_.body() = request_.body;
      message_.prepare_payload();
    }
    OnStream([this](auto& stream) {
      http::async_write(stream, message_, [this](beast::error_code code, std::size_t) {
        if (code) return Finish(NetworkError(code, "send to", url_));
        ReadHeader();
      });
    });
  }

  void ReadHeader() {
    parser_.body_limit(request_.max_response_body);
    OnStream([this](auto& stream) {
      http::async_read_header(stream, buffer_, parser_,
                              [this](beast::error_code code, std::size_t) {
                                // Boost 1.74's parser does not hold a Content-Length to its body
                                // limit (chunked and close-delimited bodies it does): checked here,
                                // before the body is read.
                                if (!code && parser_.content_length() &&
                                    *parser_.content_length() > request_.max_response_body) {
                                  code = http::error::body_limit;
                                }
                                if (code) return ReadFailed(code);
                                ReadBody();
                              });
    });
  }

  void ReadBody() {
    OnStream([this](auto& stream) {
      http::async_read(stream, buffer_, parser_, [this](beast::error_code code, std::size_t) {
        if (code) return ReadFailed(code);
        outcome_.response = Response();
        if (!tls_stream_) return;
        beast::get_lowest_layer(*tls_stream_).expires_after(std::chrono::seconds(1));
        tls_stream_->async_shutdown([](beast::error_code) {});
      });
    });
  }

  // The answer as parsed so far: the status line and headers, and the body read.
  HttpResponse Response() const {
    HttpResponse response;
    const auto& answer = parser_.get();
    response.status = static_cast<int>(answer.result_int());
    for (const auto& field : answer) {
      response.headers.emplace_back(std::string(field.name_string()), std::string(field.value()));
    }
    response.body = answer.body();
    return response;
  }

  // A failed read. Once the status line and headers are in, the answer stands, marked
  // incomplete: the receiver has spoken, however the connection ends.
  void ReadFailed(const beast::error_code& code) {
    const Error error = code == http::error::body_limit
                            ? Error(std::make_error_code(std::errc::file_too_large),
                                    url_.shown + " answered with more than " +
                                        std::to_string(request_.max_response_body) + " bytes")
                            : NetworkError(code, "read from", url_);
    if (!parser_.is_header_done()) return Finish(error);
    HttpResponse response = Response();
    response.complete = false;
    response.incomplete = error.message();
    outcome_.response = std::move(response);
  }

  void Finish(Error error) { outcome_.error = std::move(error); }

  asio::ssl::context& tls_;
  const HttpRequest& request_;
  const HttpUrl& url_;
  std::chrono::steady_clock::time_point deadline_;
  tcp::resolver resolver_;
  beast::tcp_stream tcp_;
  std::optional<beast::ssl_stream<beast::tcp_stream>> tls_stream_;
  http::request<http::string_body> message_;
  beast::flat_buffer buffer_;
  http::response_parser<http::string_body> parser_;
  Outcome outcome_;
};

}  // namespace

Result<HttpResponse> HttpFetch(const HttpRequest& request) {
  auto url = ParseHttpUrl(request.url);
  if (!url) return Fail(url.error());
  if (request.client_cert.empty() != request.client_key.empty()) {
    return Fail(std::errc::invalid_argument, "a client certificate needs its key, and back");
  }
  asio::io_context io;
  asio::ssl::context tls(asio::ssl::context::tls_client);
  if (url->tls) {
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
      return Fail(std::errc::invalid_argument,
                  "load the CA certificates " +
                      (request.ca_file.empty() ? std::string("of the system")
                                               : "'" + request.ca_file + "'") +
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
      if (code) {
        return Fail(std::errc::invalid_argument,
                    "load the client certificate '" + request.client_cert + "': " + code.message());
      }
    }
  }

  const auto deadline = std::chrono::steady_clock::now() + request.timeout;
  Session session(io, tls, request, *url, deadline);
  session.Start();
  // The stream deadlines bound every network step; this bounds name resolution too.
  io.run_until(deadline + std::chrono::milliseconds(200));
  if (!io.stopped()) {
    io.stop();
    return Fail(std::errc::timed_out, "request to " + url->shown + ": timed out");
  }
  Outcome& outcome = session.outcome();
  if (outcome.error) return Fail(*outcome.error);
  if (!outcome.response) {
    return Fail(std::errc::io_error, "request to " + url->shown + ": no response");
  }
  return std::move(*outcome.response);
}

}  // namespace tether
