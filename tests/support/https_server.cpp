#include "tests/support/https_server.hpp"

#include <openssl/ssl.h>
#include <openssl/x509.h>

#include <algorithm>
#include <cctype>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <deque>
#include <exception>
#include <mutex>
#include <thread>
#include <type_traits>
#include <unordered_map>

// GCC 12 with -fsanitize=address reports a false "may be used uninitialized" (a
// boost::optional) inside Beast's parser, and -Werror turns it into a build failure.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif

namespace tether::testing {

namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
namespace ssl = asio::ssl;
using tcp = asio::ip::tcp;

constexpr std::uint64_t kMaxBody = 64 << 20;
constexpr std::uint32_t kMaxHeader = 64 << 10;
// How long Stop() lets connections wind down before it stops the io_context outright.
constexpr auto kStopGrace = std::chrono::seconds(2);

[[noreturn]] void Die(const std::string& message) {
  std::fprintf(stderr, "HttpsServer: %s\n", message.c_str());
  std::abort();
}

bool EqualsIgnoreCase(std::string_view a, std::string_view b) {
  return std::equal(a.begin(), a.end(), b.begin(), b.end(), [](char x, char y) {
    return std::tolower(static_cast<unsigned char>(x)) ==
           std::tolower(static_cast<unsigned char>(y));
  });
}

// The subject CN of the peer's certificate, or "" when there is none.
std::string PeerCommonName(SSL* ssl) {
  X509* cert = SSL_get1_peer_certificate(ssl);
  if (cert == nullptr) return {};
  std::string cn;
  X509_NAME* subject = X509_get_subject_name(cert);
  const int index = X509_NAME_get_index_by_NID(subject, NID_commonName, -1);
  if (index >= 0) {
    ASN1_STRING* data = X509_NAME_ENTRY_get_data(X509_NAME_get_entry(subject, index));
    unsigned char* utf8 = nullptr;
    const int length = ASN1_STRING_to_UTF8(&utf8, data);
    if (length >= 0) {
      cn.assign(reinterpret_cast<const char*>(utf8), static_cast<std::size_t>(length));
      OPENSSL_free(utf8);
    }
  }
  X509_free(cert);
  return cn;
}

}  // namespace

std::optional<std::string> RecordedRequest::Header(std::string_view name) const {
  for (const auto& [key, value] : headers) {
    if (EqualsIgnoreCase(key, name)) return value;
  }
  return std::nullopt;
}

ScriptedResponse ScriptedResponse::Respond(int status, std::string body, HttpHeaders headers) {
  ScriptedResponse response;
  response.status = status;
  response.body = std::move(body);
  response.headers = std::move(headers);
  return response;
}

ScriptedResponse ScriptedResponse::After(std::chrono::milliseconds wait) const {
  ScriptedResponse response = *this;
  response.delay = wait;
  return response;
}

ScriptedResponse ScriptedResponse::Close() {
  ScriptedResponse response;
  response.action = Action::kClose;
  return response;
}

ScriptedResponse ScriptedResponse::Hang() {
  ScriptedResponse response;
  response.action = Action::kHang;
  return response;
}

// Ownership: sessions are shared_ptr-owned by their pending handlers and register their
// socket and timer in live_ so that Stop can close them. Everything named "io thread only" is
// touched by the I/O thread alone while it runs, and by the owner after it has been joined.
class HttpsServer::Impl {
 public:
  explicit Impl(HttpsServerOptions options);
  Impl(const Impl&) = delete;
  Impl& operator=(const Impl&) = delete;
  ~Impl();

  void Stop();

  // The response for the next request; records it and wakes waiters.
  ScriptedResponse Record(RecordedRequest request);
  void CountFailedHandshake();

  struct Live {
    tcp::socket* socket;
    asio::steady_timer* timer;
  };

  const HttpsServerOptions options_;
  std::uint16_t port_ = 0;

  mutable std::mutex mutex_;
  mutable std::condition_variable changed_;
  std::vector<RecordedRequest> requests_;  // guarded by mutex_
  std::deque<ScriptedResponse> script_;    // guarded by mutex_
  ScriptedResponse default_response_;      // guarded by mutex_
  std::size_t failed_handshakes_ = 0;      // guarded by mutex_
  bool run_returned_ = false;              // guarded by mutex_

  std::uint64_t connections_ = 0;                 // io thread only
  std::unordered_map<std::uint64_t, Live> live_;  // io thread only
  bool stopping_ = false;                         // io thread only

  // Declared after everything the sessions use and destroyed (in ~Impl) before it: leftover
  // handlers, and the sessions they own, die with the io_context.
  std::optional<ssl::context> ssl_context_;
  std::optional<asio::io_context> io_;
  std::optional<tcp::acceptor> acceptor_;
  std::thread thread_;

 private:
  template <typename Stream>
  class Session;

  void Accept();
  void StopOnIoThread();
};

// One connection: optional TLS handshake, then requests until either side closes.
template <typename Stream>
class HttpsServer::Impl::Session : public std::enable_shared_from_this<Session<Stream>> {
 public:
  static constexpr bool kTls = !std::is_same_v<Stream, tcp::socket>;

  // `args` construct the stream: a socket, and for TLS the ssl::context.
  template <typename... Args>
  Session(Impl& server, std::uint64_t id, Args&&... args)
      : server_(server),
        stream_(std::forward<Args>(args)...),
        timer_(stream_.get_executor()),
        id_(id) {}

  Session(const Session&) = delete;
  Session& operator=(const Session&) = delete;

  ~Session() { server_.live_.erase(id_); }

  void Start() {
    if (server_.stopping_) return;
    server_.live_[id_] = {&beast::get_lowest_layer(stream_), &timer_};
    if constexpr (kTls) {
      stream_.async_handshake(
          ssl::stream_base::server,
          [self = this->shared_from_this()](beast::error_code ec) { self->OnHandshake(ec); });
    } else {
      ReadHeader();
    }
  }

 private:
  void OnHandshake([[maybe_unused]] beast::error_code ec) {
    if constexpr (kTls) {
      if (ec) {
        server_.CountFailedHandshake();
        return;
      }
      if (server_.stopping_) return;
      client_cn_ = PeerCommonName(stream_.native_handle());
      ReadHeader();
    }
  }

  void ReadHeader() {
    parser_.emplace();
    parser_->header_limit(kMaxHeader);
    parser_->body_limit(kMaxBody);
    http::async_read_header(stream_, buffer_, *parser_,
                            [self = this->shared_from_this()](beast::error_code ec, std::size_t) {
                              self->OnHeader(ec);
                            });
  }

  void OnHeader(beast::error_code ec) {
    if (ec || server_.stopping_) return;  // the client closed, or garbage; drop it
    const auto& header = parser_->get();
    const auto expect = header[http::field::expect];
    if (EqualsIgnoreCase(std::string_view(expect.data(), expect.size()), "100-continue")) {
      continue_ = http::response<http::empty_body>(http::status::continue_, header.version());
      http::async_write(stream_, continue_,
                        [self = this->shared_from_this()](beast::error_code ec, std::size_t) {
                          if (!ec) self->ReadBody();
                        });
      return;
    }
    ReadBody();
  }

  void ReadBody() {
    if (server_.stopping_) return;
    if (parser_->is_done()) {
      OnRequest({});
      return;
    }
    http::async_read(stream_, buffer_, *parser_,
                     [self = this->shared_from_this()](beast::error_code ec, std::size_t) {
                       self->OnRequest(ec);
                     });
  }

  void OnRequest(beast::error_code ec) {
    if (ec || server_.stopping_) return;
    http::request<http::string_body> request = parser_->release();
    parser_.reset();

    RecordedRequest recorded;
    recorded.method = std::string(request.method_string());
    recorded.target = std::string(request.target());
    for (const auto& field : request) {
      recorded.headers.emplace_back(std::string(field.name_string()), std::string(field.value()));
    }
    recorded.body = std::move(request.body());
    recorded.client_cn = client_cn_;
    recorded.connection = id_;
    recorded.arrival = std::chrono::steady_clock::now();
    script_ = server_.Record(std::move(recorded));

    if (script_.action == ScriptedResponse::Action::kHang) {
      timer_.expires_at(asio::steady_timer::time_point::max());
      timer_.async_wait([self = this->shared_from_this()](beast::error_code) {});
      return;
    }

    response_ = {};
    response_.version(request.version());
    response_.result(static_cast<unsigned>(std::clamp(script_.status, 100, 999)));
    response_.set(http::field::server, "tether-test");
    response_.keep_alive(request.keep_alive());
    response_.body() = script_.body;
    response_.prepare_payload();
    for (const auto& [name, value] : script_.headers) response_.erase(name);
    for (const auto& [name, value] : script_.headers) response_.insert(name, value);

    if (script_.delay.count() > 0) {
      timer_.expires_after(script_.delay);
      timer_.async_wait(
          [self = this->shared_from_this()](beast::error_code ec) { self->Answer(ec); });
      return;
    }
    Answer({});
  }

  void Answer(beast::error_code ec) {
    if (ec || server_.stopping_) return;
    if (script_.action == ScriptedResponse::Action::kClose) {
      beast::error_code ignored;
      beast::get_lowest_layer(stream_).shutdown(tcp::socket::shutdown_both, ignored);
      beast::get_lowest_layer(stream_).close(ignored);
      return;
    }
    http::async_write(stream_, response_,
                      [self = this->shared_from_this()](beast::error_code ec, std::size_t) {
                        self->OnWritten(ec);
                      });
  }

  void OnWritten(beast::error_code ec) {
    if (ec || server_.stopping_) return;
    if (!response_.need_eof()) {
      ReadHeader();
      return;
    }
    if constexpr (kTls) {
      // close_notify, then wait for the client's close (or its EOF) before closing.
      stream_.async_shutdown([self = this->shared_from_this()](beast::error_code) {
        beast::error_code ignored;
        beast::get_lowest_layer(self->stream_).close(ignored);
      });
    } else {
      beast::error_code ignored;
      stream_.shutdown(tcp::socket::shutdown_send, ignored);
    }
  }

  Impl& server_;
  Stream stream_;
  asio::steady_timer timer_;
  const std::uint64_t id_;
  std::string client_cn_;
  beast::flat_buffer buffer_;
  std::optional<http::request_parser<http::string_body>> parser_;
  http::response<http::empty_body> continue_;
  ScriptedResponse script_;
  http::response<http::string_body> response_;
};

HttpsServer::Impl::Impl(HttpsServerOptions options) : options_(std::move(options)) {
  default_response_ = ScriptedResponse::Respond(200);
  beast::error_code ec;
  if (!options_.plain_http) {
    ssl_context_.emplace(ssl::context::tls_server);
    ssl_context_->set_options(ssl::context::default_workarounds | ssl::context::no_sslv2 |
                              ssl::context::no_sslv3 | ssl::context::no_tlsv1 |
                              ssl::context::no_tlsv1_1);
    if (ssl_context_->use_certificate_chain_file(options_.certificate.cert, ec); ec) {
      Die("certificate '" + options_.certificate.cert + "': " + ec.message());
    }
    if (ssl_context_->use_private_key_file(options_.certificate.key, ssl::context::pem, ec); ec) {
      Die("key '" + options_.certificate.key + "': " + ec.message());
    }
    if (!options_.client_ca.empty()) {
      if (ssl_context_->load_verify_file(options_.client_ca, ec); ec) {
        Die("client CA '" + options_.client_ca + "': " + ec.message());
      }
      // Tell clients which CA to pick a certificate for.
      STACK_OF(X509_NAME)* names = SSL_load_client_CA_file(options_.client_ca.c_str());
      if (names == nullptr) Die("client CA '" + options_.client_ca + "': no certificates");
      SSL_CTX_set_client_CA_list(ssl_context_->native_handle(), names);
      ssl_context_->set_verify_mode(ssl::verify_peer | ssl::verify_fail_if_no_peer_cert);
    }
  }

  io_.emplace();
  acceptor_.emplace(*io_);
  const tcp::endpoint endpoint(asio::ip::make_address_v4("127.0.0.1"), 0);
  if (acceptor_->open(endpoint.protocol(), ec); ec) Die("socket: " + ec.message());
  if (acceptor_->bind(endpoint, ec); ec) Die("bind 127.0.0.1:0: " + ec.message());
  if (acceptor_->listen(asio::socket_base::max_listen_connections, ec); ec) {
    Die("listen: " + ec.message());
  }
  port_ = acceptor_->local_endpoint(ec).port();
  if (ec) Die("local_endpoint: " + ec.message());

  Accept();
  thread_ = std::thread([this] {
    try {
      io_->run();
    } catch (const std::exception& e) {
      Die(std::string("I/O thread: ") + e.what());
    }
    std::lock_guard lock(mutex_);
    run_returned_ = true;
    changed_.notify_all();
  });
}

HttpsServer::Impl::~Impl() {
  Stop();
  // Leftover handlers (only after a forced stop) own sessions that still use this object.
  acceptor_.reset();
  io_.reset();
}

void HttpsServer::Impl::Accept() {
  acceptor_->async_accept([this](beast::error_code ec, tcp::socket socket) {
    if (stopping_ || ec == asio::error::operation_aborted) return;
    if (!ec) {
      beast::error_code ignored;
      socket.set_option(tcp::no_delay(true), ignored);
      const std::uint64_t id = ++connections_;
      if (options_.plain_http) {
        std::make_shared<Session<tcp::socket>>(*this, id, std::move(socket))->Start();
      } else {
        std::make_shared<Session<ssl::stream<tcp::socket>>>(*this, id, std::move(socket),
                                                            *ssl_context_)
            ->Start();
      }
    }
    Accept();  // also after transient errors such as EMFILE
  });
}

void HttpsServer::Impl::StopOnIoThread() {
  stopping_ = true;
  beast::error_code ignored;
  acceptor_->close(ignored);
  for (auto& [id, live] : live_) {
    live.timer->cancel();
    live.socket->close(ignored);
  }
}

void HttpsServer::Impl::Stop() {
  if (!thread_.joinable()) return;
  asio::post(*io_, [this] { StopOnIoThread(); });
  {
    std::unique_lock lock(mutex_);
    if (!changed_.wait_for(lock, kStopGrace, [this] { return run_returned_; })) io_->stop();
  }
  thread_.join();
}

ScriptedResponse HttpsServer::Impl::Record(RecordedRequest request) {
  std::lock_guard lock(mutex_);
  requests_.push_back(std::move(request));
  changed_.notify_all();
  if (script_.empty()) return default_response_;
  ScriptedResponse next = std::move(script_.front());
  script_.pop_front();
  return next;
}

void HttpsServer::Impl::CountFailedHandshake() {
  std::lock_guard lock(mutex_);
  ++failed_handshakes_;
  changed_.notify_all();
}

HttpsServer::HttpsServer(HttpsServerOptions options)
    : impl_(std::make_unique<Impl>(std::move(options))) {}

HttpsServer::~HttpsServer() = default;

std::uint16_t HttpsServer::port() const { return impl_->port_; }

std::string HttpsServer::url(std::string_view path) const {
  std::string url = impl_->options_.plain_http ? "http://" : "https://";
  url += "localhost:" + std::to_string(impl_->port_);
  if (path.empty() || path.front() != '/') url += '/';
  url += path;
  return url;
}

void HttpsServer::Enqueue(ScriptedResponse response) {
  std::lock_guard lock(impl_->mutex_);
  impl_->script_.push_back(std::move(response));
}

void HttpsServer::SetDefaultResponse(ScriptedResponse response) {
  std::lock_guard lock(impl_->mutex_);
  impl_->default_response_ = std::move(response);
}

std::vector<RecordedRequest> HttpsServer::requests() const {
  std::lock_guard lock(impl_->mutex_);
  return impl_->requests_;
}

std::size_t HttpsServer::request_count() const {
  std::lock_guard lock(impl_->mutex_);
  return impl_->requests_.size();
}

bool HttpsServer::WaitForRequests(std::size_t count, std::chrono::milliseconds timeout) const {
  std::unique_lock lock(impl_->mutex_);
  return impl_->changed_.wait_for(lock, timeout, [&] { return impl_->requests_.size() >= count; });
}

std::size_t HttpsServer::failed_handshakes() const {
  std::lock_guard lock(impl_->mutex_);
  return impl_->failed_handshakes_;
}

void HttpsServer::Stop() { impl_->Stop(); }

}  // namespace tether::testing
