#include <utility>  // before Boost.Asio 1.74, whose awaitable.hpp uses std::exchange

#include "common/http_client.hpp"

#include <openssl/ssl.h>

#include <strings.h>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/connect.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/asio/use_awaitable.hpp>
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

struct Url {
  bool tls = false;
  std::string host;
  std::string port;
  std::string target;
  std::string shown;  // for messages: without the query string
};

Result<Url> ParseUrl(const std::string& url) {
  Url parsed;
  std::string_view rest = url;
  if (rest.rfind("https://", 0) == 0) {
    parsed.tls = true;
    rest.remove_prefix(8);
  } else if (rest.rfind("http://", 0) == 0) {
    rest.remove_prefix(7);
  } else {
    return Fail(std::errc::invalid_argument, "'" + url + "' is not an http:// or https:// URL");
  }
  const auto slash = rest.find('/');
  std::string_view authority = rest.substr(0, slash);
  parsed.target = slash == std::string_view::npos ? "/" : std::string(rest.substr(slash));
  if (authority.empty() || authority.find('@') != std::string_view::npos) {
    return Fail(std::errc::invalid_argument, "'" + url + "' has no host (or has credentials)");
  }
  std::string_view host = authority;
  std::string_view port = parsed.tls ? "443" : "80";
  if (authority.front() == '[') {  // [::1]:8080
    const auto close = authority.find(']');
    if (close == std::string_view::npos) {
      return Fail(std::errc::invalid_argument, "'" + url + "' has a malformed host");
    }
    host = authority.substr(1, close - 1);
    if (close + 1 < authority.size() && authority[close + 1] == ':') {
      port = authority.substr(close + 2);
    }
  } else if (const auto colon = authority.rfind(':'); colon != std::string_view::npos) {
    host = authority.substr(0, colon);
    port = authority.substr(colon + 1);
  }
  if (host.empty() || port.empty() ||
      port.find_first_not_of("0123456789") != std::string_view::npos) {
    return Fail(std::errc::invalid_argument, "'" + url + "' has a malformed host or port");
  }
  parsed.host = host;
  parsed.port = port;
  const auto query = url.find('?');
  parsed.shown = query == std::string::npos ? url : url.substr(0, query);
  return parsed;
}

// The outcome of the exchange, set by the coroutine.
struct Outcome {
  std::optional<HttpResponse> response;
  std::optional<Error> error;
};

Error NetworkError(const beast::error_code& code, const std::string& what, const Url& url) {
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

template <typename Stream>
asio::awaitable<void> Exchange(Stream& stream, const HttpRequest& request, const Url& url,
                               Outcome& outcome) {
  http::request<http::string_body> message{http::string_to_verb(request.method), url.target, 11};
  message.set(http::field::host, url.host);
  message.set(http::field::user_agent, "tether");
  for (const auto& [name, value] : request.headers) message.set(name, value);
  if (!request.body.empty() || request.method == "POST" || request.method == "PUT") {
    message.body() = request.body;
    message.prepare_payload();
  }
  beast::error_code write_error;
  co_await http::async_write(stream, message,
                             asio::redirect_error(asio::use_awaitable, write_error));
  if (write_error) {
    outcome.error = NetworkError(write_error, "send to", url);
    co_return;
  }
  beast::flat_buffer buffer;
  http::response_parser<http::string_body> parser;
  parser.body_limit(request.max_response_body);
  beast::error_code read_error;
  co_await http::async_read_header(stream, buffer, parser,
                                   asio::redirect_error(asio::use_awaitable, read_error));
  // Boost 1.74's parser does not hold a Content-Length to its body limit (chunked and
  // close-delimited bodies it does): checked here, before the body is read.
  if (!read_error && parser.content_length() &&
      *parser.content_length() > request.max_response_body) {
    read_error = http::error::body_limit;
  }
  if (!read_error) {
    co_await http::async_read(stream, buffer, parser,
                              asio::redirect_error(asio::use_awaitable, read_error));
  }
  if (read_error == http::error::body_limit) {
    outcome.error = Error(std::make_error_code(std::errc::file_too_large),
                          url.shown + " answered with more than " +
                              std::to_string(request.max_response_body) + " bytes");
    co_return;
  }
  if (read_error) {
    outcome.error = NetworkError(read_error, "read from", url);
    co_return;
  }
  HttpResponse response;
  const auto& answer = parser.get();
  response.status = static_cast<int>(answer.result_int());
  for (const auto& field : answer) {
    response.headers.emplace_back(std::string(field.name_string()), std::string(field.value()));
  }
  response.body = answer.body();
  outcome.response = std::move(response);
}

}  // namespace

std::string HttpResponse::Header(std::string_view name) const {
  for (const auto& [key, value] : headers) {
    if (key.size() == name.size() && strncasecmp(key.data(), name.data(), key.size()) == 0) {
      return value;
    }
  }
  return "";
}

Result<HttpResponse> HttpFetch(const HttpRequest& request) {
  auto url = ParseUrl(request.url);
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
    if (request.ca_file.empty()) {
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
    if (!request.client_cert.empty()) {
      tls.use_certificate_chain_file(request.client_cert, code);
      if (!code) tls.use_private_key_file(request.client_key, asio::ssl::context::pem, code);
      if (code) {
        return Fail(std::errc::invalid_argument,
                    "load the client certificate '" + request.client_cert + "': " + code.message());
      }
    }
  }

  Outcome outcome;
  const auto deadline = std::chrono::steady_clock::now() + request.timeout;
  auto run = [&]() -> asio::awaitable<void> {
    tcp::resolver resolver(io);
    beast::error_code resolve_error;
    auto endpoints = co_await resolver.async_resolve(
        url->host, url->port, asio::redirect_error(asio::use_awaitable, resolve_error));
    if (resolve_error) {
      outcome.error = NetworkError(resolve_error, "resolve", *url);
      co_return;
    }
    beast::tcp_stream tcp(io);
    tcp.expires_after(std::min<std::chrono::steady_clock::duration>(
        request.connect_timeout, deadline - std::chrono::steady_clock::now()));
    beast::error_code connect_error;
    co_await tcp.async_connect(endpoints, asio::redirect_error(asio::use_awaitable, connect_error));
    if (connect_error) {
      outcome.error = NetworkError(connect_error, "connect to", *url);
      co_return;
    }
    tcp.expires_at(deadline);
    tcp.socket().set_option(tcp::no_delay(true));
    if (!url->tls) {
      co_await Exchange(tcp, request, *url, outcome);
      co_return;
    }
    beast::ssl_stream<beast::tcp_stream> stream(std::move(tcp), tls);
    if (SSL_set_tlsext_host_name(stream.native_handle(), url->host.c_str()) != 1) {
      outcome.error = Error(std::make_error_code(std::errc::protocol_error),
                            "set the TLS server name for " + url->shown);
      co_return;
    }
    stream.set_verify_callback(asio::ssl::host_name_verification(url->host));
    beast::error_code handshake_error;
    co_await stream.async_handshake(asio::ssl::stream_base::client,
                                    asio::redirect_error(asio::use_awaitable, handshake_error));
    if (handshake_error) {
      outcome.error = NetworkError(handshake_error, "TLS handshake with", *url);
      co_return;
    }
    co_await Exchange(stream, request, *url, outcome);
    beast::get_lowest_layer(stream).expires_after(std::chrono::seconds(1));
    beast::error_code ignored;
    co_await stream.async_shutdown(asio::redirect_error(asio::use_awaitable, ignored));
  };
  asio::co_spawn(io, run, asio::detached);
  // The stream deadlines bound every network step; this bounds name resolution too.
  io.run_until(deadline + std::chrono::milliseconds(200));
  if (!io.stopped()) {
    io.stop();
    return Fail(std::errc::timed_out, "request to " + url->shown + ": timed out");
  }
  if (outcome.error) return Fail(*outcome.error);
  if (!outcome.response) {
    return Fail(std::errc::io_error, "request to " + url->shown + ": no response");
  }
  return std::move(*outcome.response);
}

}  // namespace tether
