// The HTTP(S) client against the real HTTPS server of the test harness.
#include "common/http_client.hpp"

#include <chrono>
#include <string>

#include <doctest/doctest.h>

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
  auto big = HttpFetch(small);
  REQUIRE_FALSE(big);
  CHECK(big.error().Is(std::errc::file_too_large));

  for (const char* url : {"ftp://x/", "https://", "http://user:pw@host/", "http://h:port/"}) {
    CAPTURE(url);
    auto bad = HttpFetch(Get(url));
    REQUIRE_FALSE(bad);
    CHECK(bad.error().Is(std::errc::invalid_argument));
  }
}
