// The HTTP(S) client against the real HTTPS server of the test harness.
#include "common/http_client.hpp"

#include <chrono>
#include <optional>
#include <string>
#include <thread>

#include <boost/asio/io_context.hpp>

#include <doctest/doctest.h>

#include "common/http_keepalive.hpp"
#include "tests/support/git_server.hpp"
#include "tests/support/https_server.hpp"
#include "tests/support/temp_dir.hpp"
#include "tests/support/test_ca.hpp"

using namespace std::chrono_literals;
using tether::HttpFetch;
using tether::HttpRequest;
using tether::testing::HttpsServer;
using tether::testing::HttpsServerOptions;
using tether::testing::ScriptedResponse;
using tether::testing::TempDir;
using tether::testing::TestCa;

namespace {

// Keys are slow to make: one CA for the whole program.
struct Pki {
  TempDir dir{"http-client-pki"};
  TestCa ca{dir.path()};
  TempDir other_dir{"http-client-other"};
  TestCa other{other_dir.path()};
  tether::testing::CertificateFiles server = ca.Issue("server", {"localhost"});
  tether::testing::CertificateFiles client = ca.Issue("agent", {"agent"});
};

Pki& Certs() {
  static Pki pki;
  return pki;
}

HttpRequest Get(const std::string& url) {
  HttpRequest request;
  request.url = url;
  request.ca_file = Certs().ca.cert();
  request.timeout = 5s;
  return request;
}

}  // namespace

TEST_CASE("An HTTPS GET verified against a CA file returns status, headers and body") {
  HttpsServer server({Certs().server, "", false});
  server.Enqueue(ScriptedResponse::Respond(503, "busy\n", {{"Retry-After", "7"}}));
  auto response = HttpFetch(Get(server.url("/health?token=secret")));
  REQUIRE_MESSAGE(response, (response ? "" : response.error().message()));
  CHECK(response->status == 503);
  CHECK(response->body == "busy\n");
  CHECK(response->Header("retry-after") == "7");
  REQUIRE(server.request_count() == 1);
  CHECK(server.requests()[0].method == "GET");
  CHECK(server.requests()[0].target == "/health?token=secret");
}

TEST_CASE("A POST carries its headers and body") {
  HttpsServer server({Certs().server, "", false});
  HttpRequest request = Get(server.url("/v1/reports"));
  request.method = "POST";
  request.headers = {{"Authorization", "Bearer t0ken"}, {"Content-Type", "application/json"}};
  request.body = "{\"a\":1}";
  auto response = HttpFetch(request);
  REQUIRE(response);
  CHECK(response->status == 200);
  const auto recorded = server.requests().at(0);
  CHECK(recorded.body == "{\"a\":1}");
  CHECK(recorded.Header("authorization") == "Bearer t0ken");
}

TEST_CASE("An untrusted certificate or a wrong host name is refused") {
  HttpsServer server({Certs().server, "", false});
  HttpRequest wrong_ca = Get(server.url("/"));
  wrong_ca.ca_file = Certs().other.cert();
  auto refused = HttpFetch(wrong_ca);
  REQUIRE_FALSE(refused);
  CHECK(refused.error().Is(std::errc::protocol_error));
  CHECK(refused.error().message().find("TLS handshake with https://localhost:") == 0);

  // The certificate names "localhost"; 127.0.0.1 is the same server under another name.
  HttpRequest wrong_name = Get("https://127.0.0.1:" + std::to_string(server.port()) + "/");
  auto mismatch = HttpFetch(wrong_name);
  REQUIRE_FALSE(mismatch);
  CHECK(mismatch.error().Is(std::errc::protocol_error));
  CHECK(server.request_count() == 0);
}

TEST_CASE("Mutual TLS presents the client certificate") {
  HttpsServer server({Certs().server, Certs().ca.cert(), false});
  HttpRequest request = Get(server.url("/"));
  CHECK_FALSE(HttpFetch(request));  // no client certificate: refused by the server
  request.client_cert = Certs().client.cert;
  request.client_key = Certs().client.key;
  auto response = HttpFetch(request);
  REQUIRE_MESSAGE(response, (response ? "" : response.error().message()));
  CHECK(server.requests().back().client_cn == "agent");
}

TEST_CASE("Deadlines: a silent server times out, a dead port is refused") {
  HttpsServer server({Certs().server, "", false});
  server.Enqueue(ScriptedResponse::Hang());
  HttpRequest request = Get(server.url("/"));
  request.timeout = 500ms;
  const auto start = std::chrono::steady_clock::now();
  auto hung = HttpFetch(request);
  const auto took = std::chrono::steady_clock::now() - start;
  REQUIRE_FALSE(hung);
  CHECK(hung.error().Is(std::errc::timed_out));
  CHECK(took < 2s);

  const std::string dead = server.url("/");
  server.Stop();
  auto refused = HttpFetch(Get(dead));
  REQUIRE_FALSE(refused);
  CHECK(refused.error().Is(std::errc::connection_refused));
}

TEST_CASE("Plain http, no redirects followed, bad URLs and oversized bodies") {
  HttpsServer server({{}, "", true});
  server.Enqueue(ScriptedResponse::Respond(302, "", {{"Location", "http://elsewhere/"}}));
  auto redirect = HttpFetch(Get(server.url("/")));
  REQUIRE(redirect);
  CHECK(redirect->status == 302);
  CHECK(server.request_count() == 1);

  server.Enqueue(ScriptedResponse::Respond(200, std::string(2048, 'x')));
  HttpRequest small = Get(server.url("/"));
  small.max_response_body = 1024;
  // The answer stands, its body cut at the limit and marked incomplete.
  auto big = HttpFetch(small);
  REQUIRE(big);
  CHECK(big->status == 200);
  CHECK_FALSE(big->complete);
  CHECK(big->incomplete.find("answered with more than 1024 bytes") != std::string::npos);
  CHECK(big->body.size() <= 1024);

  for (const char* url : {"ftp://x/", "https://", "http://user:pw@host/", "http://h:port/"}) {
    CAPTURE(url);
    auto bad = HttpFetch(Get(url));
    REQUIRE_FALSE(bad);
    CHECK(bad.error().Is(std::errc::invalid_argument));
  }
}

TEST_CASE("HttpKeepAlive keeps its connection, and replaces one the server closed") {
  TempDir root("keepalive-root");
  root.WriteFile("signal", "abc refs/heads/main\n");
  tether::testing::StaticHttpServer web(root.path(), "1s");
  boost::asio::io_context io;
  tether::HttpKeepAlive client(io);
  auto fetch = [&](const std::string& path) {
    std::optional<tether::Result<tether::HttpResponse>> answer;
    HttpRequest request;
    request.url = web.url(path);
    client.Fetch(request, [&](tether::Result<tether::HttpResponse> response) {
      answer = std::move(response);
    });
    io.restart();
    io.run_for(10s);
    REQUIRE(answer.has_value());
    return std::move(*answer);
  };
  for (int i = 0; i < 3; ++i) {
    const auto answer = fetch("signal");
    REQUIRE_MESSAGE(answer, (answer ? "" : answer.error().message()));
    CHECK(answer->status == 200);
    CHECK(answer->body == "abc refs/heads/main\n");
  }
  CHECK(client.connections_opened() == 1);
  // nginx closes an idle connection after 1 s: the next request goes out on a new one,
  // and the caller sees nothing of it.
  std::this_thread::sleep_for(2500ms);
  const auto after_idle = fetch("signal");
  REQUIRE_MESSAGE(after_idle, (after_idle ? "" : after_idle.error().message()));
  CHECK(after_idle->status == 200);
  CHECK(client.connections_opened() == 2);
  CHECK(fetch("missing")->status == 404);
  // https:// is not this client's: refused, never sent in clear.
  HttpRequest tls;
  tls.url = "https://127.0.0.1:1/x";
  std::optional<tether::Result<tether::HttpResponse>> refused;
  client.Fetch(tls, [&](tether::Result<tether::HttpResponse> r) { refused = std::move(r); });
  REQUIRE(refused.has_value());
  CHECK_FALSE(refused->has_value());
  // A server that is gone: a clear error, not a hang.
  web.Stop();
  const auto gone = fetch("signal");
  CHECK_FALSE(gone.has_value());
}
