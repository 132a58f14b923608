#include "common/http_keepalive.hpp"

#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <optional>

namespace tether {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;

class HttpKeepAlive::Impl : public std::enable_shared_from_this<HttpKeepAlive::Impl> {
 public:
  explicit Impl(asio::io_context& io) : resolver_(io), resolve_deadline_(io), stream_(io) {}

  void Fetch(const HttpRequest& request, Done done) {
    if (done_) return done(Fail(std::errc::device_or_resource_busy, "a request is in flight"));
    auto url = ParseHttpUrl(request.url);
    if (!url || url->tls) {
      return done(
          Fail(std::errc::invalid_argument,
               url ? "'" + url->shown + "': only http:// is kept alive" : url.error().message()));
    }
    url_ = std::move(*url);
    request_ = request;
    done_ = std::move(done);
    const std::string peer = url_.host + ":" + url_.port;
    if (stream_.socket().is_open() && peer == connected_to_) {
      reused_ = true;
      return Write();
    }
    CloseSocket();
    Connect();
  }

  void Close() {
    resolver_.cancel();
    resolve_deadline_.cancel();
    CloseSocket();
    if (done_) Finish(Fail(std::errc::operation_canceled, "cancelled"));
  }

  // As Close, without calling back: its owner is going away.
  void Abandon() {
    done_ = nullptr;
    Close();
  }

  std::uint64_t opened_ = 0;

 private:
  void Connect() {
    reused_ = false;
    // The resolver has no deadline of its own.
    resolve_deadline_.expires_after(request_.connect_timeout);
    resolve_deadline_.async_wait([self = shared_from_this()](beast::error_code code) {
      if (!code) self->resolver_.cancel();
    });
    resolver_.async_resolve(
        url_.host, url_.port,
        [self = shared_from_this()](beast::error_code code, tcp::resolver::results_type found) {
          self->resolve_deadline_.cancel();
          if (!self->done_) return;
          if (code == asio::error::operation_aborted) {
            return self->Finish(
                Fail(std::errc::timed_out, "resolve " + self->url_.shown + ": timed out"));
          }
          if (code) return self->Failed(code, "resolve");
          self->stream_.expires_after(self->request_.connect_timeout);
          self->stream_.async_connect(
              found, [self](beast::error_code connected, const tcp::endpoint&) {
                if (!self->done_) return;
                if (connected) return self->Failed(connected, "connect to");
                ++self->opened_;
                self->connected_to_ = self->url_.host + ":" + self->url_.port;
                beast::error_code ignored;
                self->stream_.socket().set_option(tcp::no_delay(true), ignored);
                self->Write();
              });
        });
  }

  void Write() {
    message_ = {};
    message_.method_string(request_.method);
    message_.target(url_.target);
    message_.version(11);
    const std::string host =
        url_.host.find(':') != std::string::npos ? "[" + url_.host + "]" : url_.host;  // IPv6
    message_.set(http::field::host, url_.port == "80" ? host : host + ":" + url_.port);
    for (const auto& [name, value] : request_.headers) message_.set(name, value);
    message_.keep_alive(true);
    message_.body() = request_.body;
    message_.prepare_payload();
    stream_.expires_after(request_.timeout);
    http::async_write(stream_, message_,
                      [self = shared_from_this()](beast::error_code code, std::size_t) {
                        if (!self->done_) return;
                        if (code) return self->Failed(code, "send to");
                        self->Read();
                      });
  }

  void Read() {
    parser_.emplace();
    parser_->body_limit(request_.max_response_body);
    buffer_.clear();
    http::async_read(stream_, buffer_, *parser_,
                     [self = shared_from_this()](beast::error_code code, std::size_t) {
                       if (!self->done_) return;
                       if (code) return self->Failed(code, "read from");
                       self->Answered();
                     });
  }

  void Answered() {
    auto message = parser_->release();
    HttpResponse response;
    response.status = static_cast<int>(message.result_int());
    for (const auto& field : message) {
      response.headers.emplace_back(std::string(field.name_string()), std::string(field.value()));
    }
    response.body = std::move(message.body());
    if (!message.keep_alive()) CloseSocket();
    stream_.expires_never();
    Finish(std::move(response));
  }

  void Failed(beast::error_code code, const char* what) {
    // A kept connection the server closed while idle: once more on a new one, unless
    // some of an answer had come.
    const bool stale = reused_ && (!parser_ || !parser_->got_some()) &&
                       (code == http::error::end_of_stream || code == asio::error::eof ||
                        code == asio::error::connection_reset || code == asio::error::broken_pipe);
    CloseSocket();
    if (stale) return Connect();
    if (code == beast::error::timeout) {
      return Finish(
          Fail(std::errc::timed_out, std::string(what) + " " + url_.shown + ": timed out"));
    }
    if (code == http::error::body_limit) {
      return Finish(Fail(std::errc::file_too_large,
                         std::string(what) + " " + url_.shown + ": response body too large"));
    }
    Finish(Fail(code.category() == asio::error::get_system_category() ? std::errc(code.value())
                                                                      : std::errc::protocol_error,
                std::string(what) + " " + url_.shown + ": " + code.message()));
  }

  void Finish(Result<HttpResponse> result) {
    parser_.reset();
    auto done = std::move(done_);
    done_ = nullptr;
    if (done) done(std::move(result));
  }

  void CloseSocket() {
    beast::error_code ignored;
    stream_.socket().shutdown(tcp::socket::shutdown_both, ignored);
    stream_.close();
    connected_to_.clear();
  }

  tcp::resolver resolver_;
  asio::steady_timer resolve_deadline_;
  beast::tcp_stream stream_;
  std::string connected_to_;  // "host:port" of the open connection
  bool reused_ = false;       // the request went out on a kept connection
  HttpUrl url_;
  HttpRequest request_;
  Done done_;
  http::request<http::string_body> message_;
  beast::flat_buffer buffer_;
  std::optional<http::response_parser<http::string_body>> parser_;
};

HttpKeepAlive::HttpKeepAlive(asio::io_context& io) : impl_(std::make_shared<Impl>(io)) {}

HttpKeepAlive::~HttpKeepAlive() { impl_->Abandon(); }

void HttpKeepAlive::Fetch(const HttpRequest& request, Done done) {
  impl_->Fetch(request, std::move(done));
}

void HttpKeepAlive::Close() { impl_->Close(); }

std::uint64_t HttpKeepAlive::connections_opened() const { return impl_->opened_; }

}  // namespace tether
