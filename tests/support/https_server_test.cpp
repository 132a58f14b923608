// HttpsServer against a real, independent client: curl.
#include "tests/support/https_server.hpp"

#include <sys/wait.h>

#include <chrono>
#include <string>
#include <vector>

#include <doctest/doctest.h>

#include "common/process.hpp"
#include "tests/support/temp_dir.hpp"
#include "tests/support/test_ca.hpp"
#include "tests/support/wait_for.hpp"

using namespace std::chrono_literals;
using tether::Run;
using tether::RunOptions;
using tether::RunResult;
using tether::testing::CertificateFiles;
using tether::testing::HttpsServer;
using tether::testing::HttpsServerOptions;
using tether::testing::ScriptedResponse;
using tether::testing::TempDir;
using tether::testing::TestCa;
using tether::testing::WaitFor;

namespace {

using Clock = std::chrono::steady_clock;

// curl's exit codes (man curl).
constexpr int kCurlTimedOut = 28;
constexpr int kCurlSslConnectError = 35;
constexpr int kCurlEmptyReply = 52;
constexpr int kCurlReceiveError = 56;
constexpr int kCurlPeerFailedVerification = 60;

// Keys are slow to make: one CA and its certificates for the whole program.
struct Pki {
  TempDir dir{"https-server"};
  TestCa ca{dir.path()};
  CertificateFiles server = ca.Issue("server", {"localhost"}, {"127.0.0.1"});
  CertificateFiles client = ca.Issue("reporter-01", {});
  TempDir other_dir{"https-server-other"};
  TestCa other_ca{other_dir.path()};
  CertificateFiles stranger = other_ca.Issue("stranger", {});
};

const Pki& SharedPki() {
  static const Pki pki;
  return pki;
}

HttpsServerOptions TlsOptions() {
  HttpsServerOptions options;
  options.certificate = SharedPki().server;
  return options;
}

struct Curl {
  RunResult result;
  Clock::duration elapsed;
};

// curl with no config file, no proxy and a deadline; `args` follow the fixed options.
Curl RunCurl(const std::vector<std::string>& args, std::chrono::milliseconds timeout = 10s) {
  RunOptions options;
  options.argv = {"curl", "-q", "--silent", "--show-error", "--noproxy", "*", "--max-time", "8"};
  options.argv.insert(options.argv.end(), args.begin(), args.end());
  options.timeout = timeout;
  const auto start = Clock::now();
  auto result = Run(options);
  REQUIRE_MESSAGE(result.has_value(), (result ? "" : result.error().message()));
  return {*result, Clock::now() - start};
}

}  // namespace

TEST_SUITE("integration") {
  TEST_CASE("a client that trusts the CA is served, and its request is recorded") {
    HttpsServer server(TlsOptions());
    server.Enqueue(ScriptedResponse::Respond(201, "created", {{"X-Request-Id", "42"}}));
    CHECK(server.url("/v1/status?x=1") ==
          "https://localhost:" + std::to_string(server.port()) + "/v1/status?x=1");

    const auto curl =
        RunCurl({"--cacert", SharedPki().ca.cert(), "-H", "Authorization: Bearer t0k", "-H",
                 "Content-Type: application/json", "--data-binary", R"({"ok":true})", "-w",
                 " %{http_code} %header{x-request-id}", server.url("/v1/status?x=1")});
    INFO(curl.result.err);
    REQUIRE(curl.result.ok());
    CHECK(curl.result.out == "created 201 42");

    const auto requests = server.requests();
    REQUIRE(requests.size() == 1);
    CHECK(requests[0].method == "POST");
    CHECK(requests[0].target == "/v1/status?x=1");
    CHECK(requests[0].Header("authorization") == "Bearer t0k");
    CHECK(requests[0].Header("CONTENT-TYPE") == "application/json");
    CHECK(requests[0].Header("X-Missing") == std::nullopt);
    CHECK(requests[0].body == R"({"ok":true})");
    CHECK(requests[0].client_cn.empty());
    CHECK(requests[0].connection == 1);
    CHECK(server.failed_handshakes() == 0);
  }

  TEST_CASE("the certificate also verifies for 127.0.0.1; chunked bodies are de-chunked") {
    HttpsServer server(TlsOptions());
    const auto curl = RunCurl({"--cacert", SharedPki().ca.cert(), "-H",
                               "Transfer-Encoding: chunked", "--data-binary", "chunky",
                               "https://127.0.0.1:" + std::to_string(server.port()) + "/ip"});
    INFO(curl.result.err);
    REQUIRE(curl.result.ok());
    REQUIRE(server.request_count() == 1);
    CHECK(server.requests()[0].target == "/ip");
    CHECK(server.requests()[0].body == "chunky");
  }

  TEST_CASE("a client without the CA refuses the server") {
    HttpsServer server(TlsOptions());
    const auto curl = RunCurl({server.url("/")});
    CHECK(curl.result.exit_code == kCurlPeerFailedVerification);
    CHECK(WaitFor([&] { return server.failed_handshakes() == 1; }, 5s));
    CHECK(server.request_count() == 0);
  }

  TEST_CASE("a client that expects another host name refuses the server") {
    HttpsServer server(TlsOptions());
    const std::string port = std::to_string(server.port());
    const auto curl = RunCurl({"--cacert", SharedPki().ca.cert(), "--resolve",
                               "status.example.com:" + port + ":127.0.0.1",
                               "https://status.example.com:" + port + "/"});
    CHECK(curl.result.exit_code == kCurlPeerFailedVerification);
    CHECK(server.request_count() == 0);
  }

  TEST_CASE("scripted responses are used in order, then the default; keep-alive until closed") {
    HttpsServer server(TlsOptions());
    server.Enqueue(ScriptedResponse::Respond(503, "busy", {{"Retry-After", "2"}}));
    server.Enqueue(ScriptedResponse::Respond(200, "ok", {{"Connection", "close"}}));
    server.SetDefaultResponse(ScriptedResponse::Respond(204));

    const std::string format = "%{http_code} [%header{retry-after}] %{num_connects}\n";
    const auto curl =
        RunCurl({"--cacert", SharedPki().ca.cert(), "-o", "/dev/null", "-o", "/dev/null", "-o",
                 "/dev/null", "-o", "/dev/null", "-w", format, server.url("/a"), server.url("/b"),
                 server.url("/c"), server.url("/d")});
    INFO(curl.result.err);
    REQUIRE(curl.result.ok());
    // num_connects: 1 for a new connection, 0 for a reused one.
    CHECK(curl.result.out == "503 [2] 1\n200 [] 0\n204 [] 1\n204 [] 0\n");

    const auto requests = server.requests();
    REQUIRE(requests.size() == 4);
    CHECK(requests[0].target == "/a");
    CHECK(requests[1].target == "/b");
    CHECK(requests[2].target == "/c");
    CHECK(requests[0].arrival <= requests[1].arrival);
    CHECK(requests[1].connection == requests[0].connection);
    CHECK(requests[2].connection == requests[0].connection + 1);
    CHECK(requests[3].connection == requests[2].connection);
  }

  TEST_CASE("a delayed response makes a client with a shorter deadline time out") {
    HttpsServer server(TlsOptions());
    server.Enqueue(ScriptedResponse::Respond(200).After(3s));
    const auto curl =
        RunCurl({"--cacert", SharedPki().ca.cert(), "--max-time", "0.5", server.url("/slow")});
    CHECK(curl.result.exit_code == kCurlTimedOut);
    CHECK(curl.elapsed < 2s);
    CHECK(server.request_count() == 1);  // read before the delay started

    server.Enqueue(ScriptedResponse::Respond(202).After(300ms));
    const auto patient = RunCurl({"--cacert", SharedPki().ca.cert(), "-o", "/dev/null", "-w",
                                  "%{http_code}", server.url("/slow")});
    CHECK(patient.result.out == "202");
    CHECK(patient.elapsed >= 300ms);
  }  // the first request's delay is still pending here: Stop must cut it short

  TEST_CASE("a scripted close drops the connection without an answer") {
    HttpsServer server(TlsOptions());
    server.Enqueue(ScriptedResponse::Close());
    const auto dropped = RunCurl({"--cacert", SharedPki().ca.cert(), server.url("/")});
    INFO(dropped.result.err);
    CHECK(dropped.result.exit_code == kCurlEmptyReply);
    const auto next = RunCurl({"--cacert", SharedPki().ca.cert(), server.url("/")});
    CHECK(next.result.ok());
    const auto requests = server.requests();
    REQUIRE(requests.size() == 2);
    CHECK(requests[1].connection == requests[0].connection + 1);
  }

  TEST_CASE("Stop returns promptly while a client hangs on an unanswered request") {
    TempDir dir("https-hang");
    HttpsServer server(TlsOptions());
    server.Enqueue(ScriptedResponse::Hang());
    tether::SpawnOptions spawn;
    spawn.argv = {"curl",       "-q", "--silent", "--show-error",        "--noproxy",        "*",
                  "--max-time", "20", "--cacert", SharedPki().ca.cert(), server.url("/hang")};
    spawn.stderr_path = dir.Path("curl.err");
    auto child = tether::Spawn(spawn);
    REQUIRE(child.has_value());
    REQUIRE(server.WaitForRequests(1, 5s));
    CHECK_FALSE(server.WaitForRequests(2, 100ms));  // bounded: nothing else is coming

    const auto start = Clock::now();
    server.Stop();
    CHECK(Clock::now() - start < 1s);
    const auto status = child->Wait(5s);  // curl sees the connection go away
    REQUIRE(status.has_value());
    CHECK(WIFEXITED(*status));
    CHECK(WEXITSTATUS(*status) == kCurlEmptyReply);
    server.Stop();  // idempotent
    CHECK(server.request_count() == 1);
  }

  TEST_CASE("mTLS: a client certificate from the CA is required, verified and recorded") {
    const Pki& pki = SharedPki();
    HttpsServerOptions options = TlsOptions();
    options.client_ca = pki.ca.cert();
    HttpsServer server(options);

    const auto with_cert = RunCurl({"--cacert", pki.ca.cert(), "--cert", pki.client.cert, "--key",
                                    pki.client.key, server.url("/mtls")});
    INFO(with_cert.result.err);
    CHECK(with_cert.result.ok());
    REQUIRE(server.request_count() == 1);
    CHECK(server.requests()[0].client_cn == "reporter-01");

    // TLS 1.3: the client finishes its handshake first and learns of the refusal on reading.
    const auto without = RunCurl({"--cacert", pki.ca.cert(), server.url("/mtls")});
    CHECK(without.result.exit_code == kCurlReceiveError);
    const auto stranger = RunCurl({"--cacert", pki.ca.cert(), "--cert", pki.stranger.cert, "--key",
                                   pki.stranger.key, server.url("/mtls")});
    CHECK(stranger.result.exit_code == kCurlReceiveError);
    CHECK(WaitFor([&] { return server.failed_handshakes() == 2; }, 5s));

    // TLS 1.2: the handshake itself fails.
    const auto without_12 =
        RunCurl({"--cacert", pki.ca.cert(), "--tls-max", "1.2", server.url("/mtls")});
    CHECK(without_12.result.exit_code == kCurlSslConnectError);
    CHECK(WaitFor([&] { return server.failed_handshakes() == 3; }, 5s));
    CHECK(server.request_count() == 1);
  }

  TEST_CASE("plain HTTP mode serves http:// and refuses TLS") {
    HttpsServerOptions options;
    options.plain_http = true;
    HttpsServer server(options);
    server.Enqueue(ScriptedResponse::Respond(200, "plain"));
    CHECK(server.url("/x") == "http://localhost:" + std::to_string(server.port()) + "/x");
    const auto curl = RunCurl({"--data-binary", "hello", server.url("/x")});
    INFO(curl.result.err);
    REQUIRE(curl.result.ok());
    CHECK(curl.result.out == "plain");
    REQUIRE(server.request_count() == 1);
    CHECK(server.requests()[0].body == "hello");

    server.Enqueue(ScriptedResponse::Close());
    CHECK(RunCurl({server.url("/")}).result.exit_code == kCurlEmptyReply);

    const std::string https = "https://localhost:" + std::to_string(server.port()) + "/";
    CHECK(RunCurl({"--cacert", SharedPki().ca.cert(), https}).result.exit_code ==
          kCurlSslConnectError);
  }

  TEST_CASE("Expect: 100-continue is answered at once") {
    HttpsServer server(TlsOptions());
    const auto curl = RunCurl({"--cacert", SharedPki().ca.cert(), "--expect100-timeout", "5", "-H",
                               "Expect: 100-continue", "--data-binary", "body", server.url("/")});
    INFO(curl.result.err);
    CHECK(curl.result.ok());
    CHECK(curl.elapsed < 3s);
    REQUIRE(server.request_count() == 1);
    CHECK(server.requests()[0].body == "body");
  }
}
