// Status reports: the report, the durable outbox and the Reporter, against the real HTTPS
// server of the test harness. Every report a server receives is validated against
// docs/report-schema.json with python3-jsonschema.
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include <doctest/doctest.h>
#include <spdlog/sinks/ringbuffer_sink.h>
#include <nlohmann/json.hpp>

#include "agent/report/outbox.hpp"
#include "agent/report/report.hpp"
#include "agent/report/reporter.hpp"
#include "agent/report/send_process.hpp"
#include "common/log.hpp"
#include "common/process.hpp"
#include "tests/support/https_server.hpp"
#include "tests/support/report_receiver.hpp"
#include "tests/support/report_schema.hpp"
#include "tests/support/temp_dir.hpp"
#include "tests/support/test_ca.hpp"
#include "tests/support/wait_for.hpp"

using namespace std::chrono_literals;
using Json = nlohmann::json;
using tether::BuildReport;
using tether::Outbox;
using tether::OutboxLimits;
using tether::Reporter;
using tether::ReporterOptions;
using tether::ReporterStatus;
using tether::testing::HttpsServer;
using tether::testing::PythonReceiver;
using tether::testing::RecordedRequest;
using tether::testing::ScriptedResponse;
using tether::testing::TempDir;
using tether::testing::TestCa;
using tether::testing::WaitFor;

namespace {

// Keys are slow to make: one set for the whole program.
struct Pki {
  TempDir dir{"report-pki"};
  TestCa ca{dir.path()};
  TempDir other_dir{"report-other-ca"};
  TestCa other{other_dir.path()};
  tether::testing::CertificateFiles server = ca.Issue("server", {"localhost"});
  tether::testing::CertificateFiles elsewhere = ca.Issue("elsewhere", {"elsewhere.example"});
  tether::testing::CertificateFiles client = ca.Issue("agent", {"agent"});
};

Pki& Certs() {
  static Pki pki;
  return pki;
}

tether::HostIdentity Host() {
  return {"web-01", "0123456789abcdef0123456789abcdef", {{"env", "test"}, {"role", "web"}}};
}

// A report of an apply of commit number `n`.
Json ApplyReport(int n) {
  tether::ReportInput input;
  input.event = "apply";
  input.state = "applied";
  input.trigger = "poll";
  input.source = {"https://deploy:hunter2@git.example.com/fleet/config.git?private_token=x",
                  "refs/heads/main", std::string(39, 'a') + std::to_string(n % 10),
                  "ops@example.com"};
  input.resources = {{"file:/etc/motd", "update", true, "content, mode", ""},
                     {"service:nginx.service", "restart", true, "", ""}};
  input.in_sync = 7;
  input.timings = {tether::NowUnixMs() - 1500, 1500};
  return BuildReport(input, Host());
}

ReporterOptions Options(const std::string& url, const TempDir& state) {
  ReporterOptions options;
  options.send = tether::HttpFetch;
  options.url = url;
  options.ca_file = Certs().ca.cert();
  options.outbox_dir = state.Path("outbox");
  options.connect_timeout = 1s;
  options.timeout = 2s;
  options.initial_backoff = 20ms;
  options.max_backoff = 200ms;
  options.jitter = 0;
  return options;
}

std::unique_ptr<Reporter> Start(const ReporterOptions& options) {
  auto reporter = Reporter::Start(options);
  REQUIRE_MESSAGE(reporter, (reporter ? "" : reporter.error().message()));
  return std::move(*reporter);
}

void Submit(Reporter& reporter, const Json& report) {
  auto submitted = reporter.Submit(report);
  REQUIRE_MESSAGE(submitted, (submitted ? "" : submitted.error().message()));
}

Json Body(const RecordedRequest& request) { return Json::parse(request.body); }

std::vector<std::string> Ids(const std::vector<RecordedRequest>& requests) {
  std::vector<std::string> ids;
  for (const auto& request : requests) ids.push_back(Body(request).value("id", ""));
  return ids;
}

std::vector<std::string> Ids(const std::vector<Json>& reports) {
  std::vector<std::string> ids;
  for (const auto& report : reports) ids.push_back(report.value("id", ""));
  return ids;
}

// Checks every body received against docs/report-schema.json (draft 2020-12).
void CheckSchema(const std::vector<RecordedRequest>& requests) {
  REQUIRE_FALSE(requests.empty());
  std::vector<Json> bodies;
  for (const auto& request : requests) bodies.push_back(Body(request));
  const std::string problems = tether::testing::ReportSchemaProblems(bodies);
  CHECK_MESSAGE(problems.empty(), problems);
}

ReporterStatus WaitForStatus(const Reporter& reporter, bool (*done)(const ReporterStatus&),
                             std::chrono::milliseconds timeout = 10s) {
  ReporterStatus status;
  const bool reached = WaitFor(
      [&] {
        status = reporter.Snapshot();
        return done(status);
      },
      timeout);
  CHECK_MESSAGE(reached, ReporterStatusToJson(status).dump());
  return status;
}

}  // namespace

TEST_CASE("A report names the host, the agent, the source without credentials, and outcomes") {
  const Json report = ApplyReport(1);
  CHECK(report["schema"] == "tether.report/v1");
  CHECK(report["event"] == "apply");
  CHECK(report["state"] == "applied");
  CHECK(report["host"]["hostname"] == "web-01");
  CHECK(report["host"]["machine_id"] == "0123456789abcdef0123456789abcdef");
  CHECK(report["host"]["labels"] == Json({{"env", "test"}, {"role", "web"}}));
  CHECK(report["agent"]["version"] == std::string(std::getenv("TETHER_VERSION")));
  CHECK(report["source"]["url"] == "https://git.example.com/fleet/config.git");
  CHECK(report["source"]["signer"] == "ops@example.com");
  CHECK(report["resources"].size() == 2);
  CHECK(report["resources"][0]["changes"] == "content, mode");
  CHECK(report["resources"][1]["changes"].is_null());
  CHECK(report["summary"] == Json({{"changed", 2}, {"failed", 0}, {"in_sync", 7}, {"total", 9}}));
  CHECK(report["timings"]["duration_ms"] == 1500);
  CHECK(report["error"].is_null());
  const std::string text = report.dump();
  CHECK(text.find("hunter2") == std::string::npos);
  CHECK(text.find("private_token") == std::string::npos);

  // Every report has its own id, a UUID v4.
  const std::string id = report["id"];
  CHECK(id.size() == 36);
  CHECK(id[14] == '4');
  CHECK(ApplyReport(1)["id"] != id);

  CHECK(tether::UrlWithoutCredentials("ssh://git@git.example.com:2222/fleet.git") ==
        "ssh://git.example.com:2222/fleet.git");
  CHECK(tether::UrlWithoutCredentials("https://h.example/p#frag") == "https://h.example/p");
  CHECK(tether::UrlWithoutCredentials("https://t0ken@h.example") == "https://h.example");
  CHECK(tether::UrlWithoutCredentials("/srv/fleet.git") == "/srv/fleet.git");
  CHECK(tether::FormatReportTime(1714564800123) == "2024-05-01T12:00:00.123Z");

  // Free text is bounded.
  tether::ReportInput failed;
  failed.event = "apply";
  failed.state = "failed";
  failed.error = std::string(100000, 'x');
  failed.resources = {{"package:nginx", "install", false, "", "apt-get failed"}};
  const Json bounded = BuildReport(failed, Host());
  CHECK(bounded["error"].get<std::string>().size() < tether::kReportTextLimit + 4);
  CHECK(bounded["summary"]["failed"] == 1);
  CHECK(bounded["source"]["commit"].is_null());
}

TEST_CASE("Reports are delivered in order over verified HTTPS with the bearer token") {
  HttpsServer server({Certs().server, "", false});
  TempDir state("report-state");
  state.WriteFile("report-token", "s3cret-t0ken\n", 0600);
  ReporterOptions options = Options(server.url("/v1/reports"), state);
  options.token_file = state.Path("report-token");
  auto reporter = Start(options);
  std::vector<Json> sent;
  for (int i = 0; i < 3; ++i) {
    sent.push_back(ApplyReport(i));
    Submit(*reporter, sent.back());
  }
  REQUIRE(server.WaitForRequests(3, 10s));
  const auto requests = server.requests();
  CHECK(Ids(requests) == Ids(sent));
  for (const auto& request : requests) {
    CHECK(request.method == "POST");
    CHECK(request.target == "/v1/reports");
    CHECK(request.Header("authorization") == "Bearer s3cret-t0ken");
    CHECK(request.Header("content-type") == "application/json");
    CHECK(Body(request)["dropped_reports"] == 0);
  }
  const auto status = WaitForStatus(*reporter, [](const ReporterStatus& s) {
    return s.delivered == 3 && s.queued == 0 && s.state == "idle";
  });
  CHECK(status.last_delivery > 0);
  CHECK(status.last_error.empty());
  CHECK(status.url == server.url("/v1/reports"));
  CHECK(ReporterStatusToJson(status).dump().find("s3cret") == std::string::npos);
  CheckSchema(requests);
}

TEST_CASE("An untrusted certificate or a wrong host name is refused; the report stays queued") {
  TempDir state("report-state");
  const Json report = ApplyReport(1);
  {
    INFO("a certificate from another CA");
    HttpsServer server({Certs().server, "", false});
    ReporterOptions options = Options(server.url("/"), state);
    options.ca_file = Certs().other.cert();
    auto reporter = Start(options);
    Submit(*reporter, report);
    const auto status =
        WaitForStatus(*reporter, [](const ReporterStatus& s) { return s.failed_attempts >= 2; });
    CHECK(status.last_error.find("TLS handshake") != std::string::npos);
    CHECK(status.queued == 1);
    CHECK(server.request_count() == 0);
    CHECK(server.failed_handshakes() >= 1);
  }
  {
    INFO("a certificate for another host name, from the trusted CA");
    HttpsServer server({Certs().elsewhere, "", false});
    auto reporter = Start(Options(server.url("/"), state));
    const auto status =
        WaitForStatus(*reporter, [](const ReporterStatus& s) { return s.failed_attempts >= 2; });
    CHECK(status.last_error.find("TLS handshake") != std::string::npos);
    CHECK(status.queued == 1);
    CHECK(server.request_count() == 0);
  }
  {
    INFO("the right server at last gets the report, once");
    HttpsServer server({Certs().server, "", false});
    auto reporter = Start(Options(server.url("/"), state));
    WaitForStatus(*reporter, [](const ReporterStatus& s) { return s.delivered == 1; });
    CHECK(Ids(server.requests()) == std::vector<std::string>{report["id"]});
    CheckSchema(server.requests());
  }
}

TEST_CASE("Mutual TLS presents the client certificate") {
  HttpsServer server({Certs().server, Certs().ca.cert(), false});
  TempDir state("report-state");
  ReporterOptions options = Options(server.url("/"), state);
  options.client_cert = Certs().client.cert;
  options.client_key = Certs().client.key;
  auto reporter = Start(options);
  Submit(*reporter, ApplyReport(1));
  REQUIRE(server.WaitForRequests(1, 10s));
  CHECK(server.requests()[0].client_cn == "agent");
  CHECK_FALSE(server.requests()[0].Header("authorization").has_value());
  CheckSchema(server.requests());
}

TEST_CASE("Plain http:// is used when configured; other schemes are refused") {
  HttpsServer server({{}, "", true});
  TempDir state("report-state");
  auto reporter = Start(Options(server.url("/"), state));
  Submit(*reporter, ApplyReport(1));
  REQUIRE(server.WaitForRequests(1, 10s));
  CheckSchema(server.requests());

  ReporterOptions ftp = Options("ftp://reports.example/", state);
  auto refused = Reporter::Start(ftp);
  REQUIRE_FALSE(refused);
  CHECK(refused.error().Is(std::errc::invalid_argument));
}

TEST_CASE("An endpoint down for a while: every queued report delivered once, in order") {
  HttpsServer server({Certs().server, "", false});
  // Down: connections dropped without an answer, then errors; up after that.
  server.Enqueue(ScriptedResponse::Close());
  server.Enqueue(ScriptedResponse::Close());
  server.Enqueue(ScriptedResponse::Respond(502));
  server.Enqueue(ScriptedResponse::Close());
  server.Enqueue(ScriptedResponse::Respond(503, "maintenance"));
  TempDir state("report-state");
  auto reporter = Start(Options(server.url("/"), state));
  std::vector<Json> sent;
  sent.push_back(ApplyReport(0));
  Submit(*reporter, sent.back());
  const auto down =
      WaitForStatus(*reporter, [](const ReporterStatus& s) { return s.failed_attempts >= 2; });
  CHECK(down.last_error_at > 0);
  for (int i = 1; i < 5; ++i) {
    sent.push_back(ApplyReport(i));
    Submit(*reporter, sent.back());
  }
  WaitForStatus(*reporter, [](const ReporterStatus& s) { return s.delivered == 5; });
  const auto requests = server.requests();
  REQUIRE(requests.size() == 10);
  const auto ids = Ids(requests);
  // The first five attempts were for the oldest report, but for at most one probe of the
  // report behind it (after kMoveBackAfter failures; when it was queued by then), which
  // failed too: nothing overtook it.
  int probes = 0;
  for (int i = 0; i < 5; ++i) {
    const auto& id = ids[static_cast<std::size_t>(i)];
    if (id != sent[0]["id"]) {
      ++probes;
      CHECK(id == sent[1]["id"]);
    }
  }
  CHECK(probes <= 1);
  // Answered: each report exactly once, in order.
  CHECK(std::vector<std::string>(ids.begin() + 5, ids.end()) == Ids(sent));
  const auto status = reporter->Snapshot();
  CHECK(status.failed_attempts == 0);
  CHECK(status.queued == 0);
  CHECK(status.last_error.find("503") != std::string::npos);  // kept after the recovery
  CHECK(status.moved_back == 0);  // the probe failed too: an outage, order kept
  CheckSchema(requests);
}

TEST_CASE("Reports queued when tetherd is killed with SIGKILL are delivered after a restart") {
  TempDir state("report-state");
  HttpsServer hanging({Certs().server, "", false});
  hanging.SetDefaultResponse(ScriptedResponse::Hang());
  int ids_pipe[2];
  REQUIRE(pipe(ids_pipe) == 0);
  const ReporterOptions child_options = Options(hanging.url("/"), state);
  const pid_t child = fork();
  REQUIRE(child >= 0);
  if (child == 0) {
    // The "daemon": queues three reports (the first goes out and hangs), tells their ids,
    // and waits to be killed.
    close(ids_pipe[0]);
    auto reporter = Reporter::Start(child_options);
    if (!reporter) _exit(2);
    std::string ids;
    for (int i = 0; i < 3; ++i) {
      const Json report = ApplyReport(i);
      if (!(*reporter)->Submit(report)) _exit(3);
      ids += report["id"].get<std::string>() + "\n";
    }
    if (write(ids_pipe[1], ids.data(), ids.size()) != static_cast<ssize_t>(ids.size())) _exit(4);
    while (true) pause();
  }
  close(ids_pipe[1]);
  std::string told;
  char buffer[256];
  ssize_t got = 0;
  while (told.size() < 3 * 37 && (got = read(ids_pipe[0], buffer, sizeof(buffer))) > 0) {
    told.append(buffer, static_cast<std::size_t>(got));
  }
  close(ids_pipe[0]);
  const bool in_flight = hanging.WaitForRequests(1, 10s);
  kill(child, SIGKILL);
  int wait_status = 0;
  REQUIRE(waitpid(child, &wait_status, 0) == child);
  CHECK(WIFSIGNALED(wait_status));
  REQUIRE(in_flight);
  REQUIRE(told.size() == 3 * 37);
  const std::vector<std::string> queued = {told.substr(0, 36), told.substr(37, 36),
                                           told.substr(74, 36)};
  CHECK(Ids(hanging.requests()).front() == queued[0]);

  HttpsServer server({Certs().server, "", false});
  auto reporter = Start(Options(server.url("/"), state));
  WaitForStatus(*reporter, [](const ReporterStatus& s) { return s.delivered == 3; });
  // All three, in order; the one in flight at the kill again, with the same id.
  CHECK(Ids(server.requests()) == queued);
  CheckSchema(server.requests());
}

TEST_CASE("A 5xx with Retry-After is retried, not before Retry-After") {
  HttpsServer server({Certs().server, "", false});
  server.Enqueue(ScriptedResponse::Respond(503, "busy", {{"Retry-After", "1"}}));
  TempDir state("report-state");
  auto reporter = Start(Options(server.url("/"), state));
  const Json report = ApplyReport(1);
  Submit(*reporter, report);
  const auto waiting =
      WaitForStatus(*reporter, [](const ReporterStatus& s) { return s.state == "retrying"; });
  CHECK(waiting.last_error.find("HTTP 503") != std::string::npos);
  CHECK(waiting.next_attempt > 0);
  REQUIRE(server.WaitForRequests(2, 10s));
  const auto requests = server.requests();
  // Without Retry-After the retry would come after the 20 ms backoff.
  CHECK(requests[1].arrival - requests[0].arrival >= 1s);
  CHECK(Ids(requests) == std::vector<std::string>{report["id"], report["id"]});
  WaitForStatus(*reporter, [](const ReporterStatus& s) { return s.delivered == 1; });
  CheckSchema(requests);
}

TEST_CASE("A 400 is not retried; the reports after it are delivered") {
  HttpsServer server({Certs().server, "", false});
  server.Enqueue(ScriptedResponse::Respond(400, "schema violation: state"));
  TempDir state("report-state");
  auto reporter = Start(Options(server.url("/"), state));
  std::vector<Json> sent = {ApplyReport(1), ApplyReport(2)};
  for (const auto& report : sent) Submit(*reporter, report);
  auto status = WaitForStatus(*reporter, [](const ReporterStatus& s) {
    return s.delivered == 1 && s.rejected == 1 && s.queued == 0;
  });
  CHECK(status.last_error.find("HTTP 400") != std::string::npos);
  CHECK(status.last_error.find("schema violation: state") != std::string::npos);
  CHECK(status.last_error.find(sent[0]["id"].get<std::string>()) != std::string::npos);
  // Even when asked to retry now, the refused report is gone: the next request is a new one.
  reporter->RetryNow();
  sent.push_back(ApplyReport(3));
  Submit(*reporter, sent.back());
  REQUIRE(server.WaitForRequests(3, 10s));
  WaitForStatus(*reporter, [](const ReporterStatus& s) { return s.delivered == 2; });
  CHECK(Ids(server.requests()) == Ids(sent));
  CheckSchema(server.requests());
}

TEST_CASE("The outbox is bounded: the oldest are dropped, counted, and the count is reported") {
  TempDir state("report-state");
  std::vector<Json> sent;
  {
    std::vector<tether::Error> problems;
    auto outbox = Outbox::Open(state.Path("outbox"), OutboxLimits{3, 1 << 20}, problems);
    REQUIRE(outbox);
    CHECK(problems.empty());
    std::vector<std::size_t> drops;
    for (int i = 0; i < 5; ++i) {
      sent.push_back(ApplyReport(i));
      auto appended = (*outbox)->Append(sent.back().dump());
      REQUIRE(appended);
      drops.push_back(*appended);
    }
    CHECK(drops == std::vector<std::size_t>{0, 0, 0, 1, 1});
    CHECK((*outbox)->size() == 3);
    CHECK((*outbox)->dropped() == 2);
  }
  {
    INFO("the count survives a restart");
    std::vector<tether::Error> problems;
    auto outbox = Outbox::Open(state.Path("outbox"), OutboxLimits{3, 1 << 20}, problems);
    REQUIRE(outbox);
    CHECK((*outbox)->dropped() == 2);
    CHECK((*outbox)->size() == 3);
    auto front = (*outbox)->Front(problems);
    REQUIRE(front);
    REQUIRE(*front);
    CHECK(Json::parse((*front)->body)["id"] == sent[2]["id"]);
  }
  {
    INFO("the byte bound, and a report too big for the outbox");
    TempDir small("report-state");
    std::vector<tether::Error> problems;
    auto outbox = Outbox::Open(small.Path("outbox"), OutboxLimits{100, 250}, problems);
    REQUIRE(outbox);
    for (int i = 0; i < 3; ++i) REQUIRE((*outbox)->Append(std::string(100, ' ') + "{}"));
    CHECK((*outbox)->size() == 2);
    CHECK((*outbox)->bytes() == 204);
    CHECK((*outbox)->dropped() == 1);
    auto too_big = (*outbox)->Append(std::string(300, ' ') + "{}");
    REQUIRE_FALSE(too_big);
    CHECK(too_big.error().Is(std::errc::file_too_large));
    CHECK((*outbox)->size() == 2);
  }

  HttpsServer server({Certs().server, "", false});
  ReporterOptions options = Options(server.url("/"), state);
  options.limits = OutboxLimits{3, 1 << 20};
  auto reporter = Start(options);
  CHECK(reporter->Snapshot().dropped == 2);
  WaitForStatus(*reporter, [](const ReporterStatus& s) { return s.delivered == 3; });
  const auto requests = server.requests();
  CHECK(Ids(requests) == std::vector<std::string>{sent[2]["id"], sent[3]["id"], sent[4]["id"]});
  CHECK(Body(requests[0])["dropped_reports"] == 2);
  CHECK(Body(requests[1])["dropped_reports"] == 0);
  CHECK(Body(requests[2])["dropped_reports"] == 0);
  CHECK(reporter->Snapshot().dropped == 0);
  CHECK_FALSE(std::filesystem::exists(state.Path("outbox/dropped.json")));
  CheckSchema(requests);
}

TEST_CASE("Corrupt outbox entries are set aside; the others are delivered") {
  TempDir state("report-state");
  std::vector<Json> sent = {ApplyReport(1), ApplyReport(2), ApplyReport(3)};
  {
    std::vector<tether::Error> problems;
    auto outbox = Outbox::Open(state.Path("outbox"), OutboxLimits{}, problems);
    REQUIRE(outbox);
    for (const auto& report : sent) REQUIRE((*outbox)->Append(report.dump()));
  }
  state.WriteFile("outbox/00000000000000000002.json", "{\"id\": \"trunc", 0600);
  state.WriteFile("outbox/.00000000000000000004.json.tether-0123456789ab", "{\"half", 0600);
  state.WriteFile("outbox/notes.txt", "an operator's file", 0600);

  HttpsServer server({Certs().server, "", false});
  auto reporter = Start(Options(server.url("/"), state));
  WaitForStatus(*reporter, [](const ReporterStatus& s) { return s.delivered == 2; });
  CHECK(Ids(server.requests()) == std::vector<std::string>{sent[0]["id"], sent[2]["id"]});
  CHECK(std::filesystem::exists(state.Path("outbox/00000000000000000002.json.corrupt")));
  CHECK_FALSE(
      std::filesystem::exists(state.Path("outbox/.00000000000000000004.json.tether-0123456789ab")));
  CHECK(std::filesystem::exists(state.Path("outbox/notes.txt")));

  // A new report does not reuse the set-aside entry's number.
  sent.push_back(ApplyReport(4));
  Submit(*reporter, sent.back());
  WaitForStatus(*reporter, [](const ReporterStatus& s) { return s.delivered == 3; });
  CHECK(std::filesystem::exists(state.Path("outbox/00000000000000000002.json.corrupt")));
  CheckSchema(server.requests());
}

TEST_CASE("A hanging endpoint never makes Submit wait, and Stop returns within the deadline") {
  HttpsServer server({Certs().server, "", false});
  server.SetDefaultResponse(ScriptedResponse::Hang());
  TempDir state("report-state");
  ReporterOptions options = Options(server.url("/"), state);
  options.timeout = 3s;
  auto reporter = Start(options);
  Submit(*reporter, ApplyReport(0));
  REQUIRE(server.WaitForRequests(1, 10s));
  CHECK(reporter->Snapshot().state == "sending");

  const auto submitting = std::chrono::steady_clock::now();
  for (int i = 1; i <= 10; ++i) Submit(*reporter, ApplyReport(i));
  const auto status = reporter->Snapshot();
  // Had Submit waited for the delivery, it would have waited for the 3 s deadline, and the
  // first attempt would be over.
  CHECK(std::chrono::steady_clock::now() - submitting < 2s);
  CHECK(status.state == "sending");
  CHECK(status.failed_attempts == 0);
  CHECK(status.queued == 11);
  CHECK(server.request_count() == 1);

  const auto stopping = std::chrono::steady_clock::now();
  reporter->Stop();
  CHECK(std::chrono::steady_clock::now() - stopping < options.timeout + 1s);
  CHECK(reporter->Snapshot().state == "stopped");
  CHECK(reporter->Snapshot().queued == 11);
  CheckSchema(server.requests());
}

TEST_CASE("With the daemon's child-process sender, Stop cuts a hanging attempt short") {
  const char* http = std::getenv("TETHERD_HTTP");
  REQUIRE_MESSAGE(http != nullptr, "TETHERD_HTTP is set by meson");
  HttpsServer hanging({Certs().server, "", false});
  hanging.SetDefaultResponse(ScriptedResponse::Hang());
  TempDir state("report-state");
  ReporterOptions options = Options(hanging.url("/"), state);
  options.send = tether::MakeProcessSender({http, "--http-fetch"}, tether::kCleanEnvironment);
  options.timeout = 60s;  // the child would be waited for 60 s and more
  auto reporter = Start(options);
  const Json report = ApplyReport(0);
  Submit(*reporter, report);
  REQUIRE(hanging.WaitForRequests(1, 10s));
  const auto stopping = std::chrono::steady_clock::now();
  reporter->Stop();
  CHECK(std::chrono::steady_clock::now() - stopping < 20s);
  CHECK(reporter->Snapshot().queued == 1);         // still queued
  CHECK(reporter->Snapshot().last_error.empty());  // cut short by the stop, not a failure

  // The next start delivers it, with the same id.
  HttpsServer server({Certs().server, "", false});
  options.url = server.url("/");
  auto next = Start(options);
  WaitForStatus(*next, [](const ReporterStatus& s) { return s.delivered == 1; });
  CHECK(Ids(server.requests()) == std::vector<std::string>{report["id"].get<std::string>()});
}

TEST_CASE("Python's http.server over TLS, HTTP/1.0 without close_notify: each report once") {
  const char* http = std::getenv("TETHERD_HTTP");
  REQUIRE_MESSAGE(http != nullptr, "TETHERD_HTTP is set by meson");
  PythonReceiver receiver(Certs().server);
  TempDir state("report-state");
  ReporterOptions options = Options(receiver.url(), state);
  // As tetherd sends them: from its child process.
  options.send = tether::MakeProcessSender({http, "--http-fetch"}, tether::kCleanEnvironment);
  auto reporter = Start(options);
  std::vector<std::string> sent;
  for (int n = 0; n < 4; ++n) {
    const Json report = ApplyReport(n);
    sent.push_back(report["id"].get<std::string>());
    Submit(*reporter, report);
  }
  WaitForStatus(*reporter, [](const ReporterStatus& s) { return s.delivered == 4; });
  const auto status = reporter->Snapshot();
  CHECK(status.queued == 0);
  CHECK(status.last_error == "");
  CHECK(status.failed_attempts == 0);
  const auto received = receiver.Received();
  std::vector<std::string> ids;
  for (const auto& report : received) {
    ids.push_back(report["id"].get<std::string>());
    CHECK(report["idempotency_key"] == report["id"]);
  }
  CHECK(ids == sent);  // each once, in order
}

TEST_CASE("tetherd-cycle --http-fetch, as a daemon of the previous release runs it, still sends") {
  // During a package upgrade, the daemon still running starts the new tetherd-cycle for its
  // requests: it hands them over to tetherd-http.
  const char* cycle = std::getenv("TETHERD_CYCLE");
  REQUIRE_MESSAGE(cycle != nullptr, "TETHERD_CYCLE is set by meson");
  PythonReceiver receiver(Certs().server);
  TempDir state("report-state");
  ReporterOptions options = Options(receiver.url(), state);
  options.send = tether::MakeProcessSender({cycle, "--http-fetch"}, tether::kCleanEnvironment);
  auto reporter = Start(options);
  const Json report = ApplyReport(0);
  Submit(*reporter, report);
  WaitForStatus(*reporter, [](const ReporterStatus& s) { return s.delivered == 1; });
  const auto received = receiver.Received();
  REQUIRE(received.size() == 1);
  CHECK(received[0]["id"] == report["id"]);
}

// Delivers three reports to `url` through the daemon's HTTP child; returns their ids.
std::vector<std::string> DeliverThree(const std::string& url) {
  const char* http = std::getenv("TETHERD_HTTP");
  REQUIRE_MESSAGE(http != nullptr, "TETHERD_HTTP is set by meson");
  TempDir state("report-state");
  ReporterOptions options = Options(url, state);
  options.send = tether::MakeProcessSender({http, "--http-fetch"}, tether::kCleanEnvironment);
  auto reporter = Start(options);
  std::vector<std::string> sent;
  for (int n = 0; n < 3; ++n) {
    const Json report = ApplyReport(n);
    sent.push_back(report["id"].get<std::string>());
    Submit(*reporter, report);
  }
  WaitForStatus(*reporter, [](const ReporterStatus& s) { return s.delivered == 3; });
  CHECK(reporter->Snapshot().last_error == "");
  return sent;
}

// The ids a receiver stored, each checked against its Idempotency-Key.
std::vector<std::string> StoredIds(const std::string& store) {
  std::vector<std::string> ids;
  for (const auto& report : tether::testing::StoredReports(store)) {
    ids.push_back(report["id"].get<std::string>());
    CHECK(report["idempotency_key"] == report["id"]);
  }
  return ids;
}

TEST_CASE("nginx in front of a receiver, and lighttpd with a CGI receiver: each report once") {
  SUBCASE("nginx (TLS) proxying to Python's http.server (plain HTTP)") {
    PythonReceiver receiver({});
    tether::testing::NginxProxy proxy(Certs().server, receiver.url());
    const auto sent = DeliverThree(proxy.url());
    CHECK(StoredIds(receiver.store()) == sent);
  }
  SUBCASE("lighttpd (TLS) with mod_cgi") {
    tether::testing::LighttpdCgiReceiver receiver(Certs().server);
    const auto sent = DeliverThree(receiver.url());
    CHECK(StoredIds(receiver.store()) == sent);
  }
}

TEST_CASE(
    "Receivers that answer early, ask to retry later, or hang up: each report once, in order") {
  const char* http = std::getenv("TETHERD_HTTP");
  REQUIRE_MESSAGE(http != nullptr, "TETHERD_HTTP is set by meson");
  for (const std::string mode : {"early", "retry-after", "hang-up"}) {
    CAPTURE(mode);
    tether::testing::ReceiverOptions receiver_options;
    receiver_options.mode = mode;
    PythonReceiver receiver(Certs().server, receiver_options);
    TempDir state("report-state");
    ReporterOptions options = Options(receiver.url(), state);
    options.send = tether::MakeProcessSender({http, "--http-fetch"}, tether::kCleanEnvironment);
    auto reporter = Start(options);
    std::vector<std::string> sent;
    for (int n = 0; n < 3; ++n) {
      const Json report = ApplyReport(n);
      sent.push_back(report["id"].get<std::string>());
      Submit(*reporter, report);
    }
    const auto started = std::chrono::steady_clock::now();
    WaitForStatus(*reporter, [](const ReporterStatus& s) { return s.delivered == 3; });
    std::vector<std::string> ids;
    for (const auto& report : receiver.Received()) ids.push_back(report["id"].get<std::string>());
    CHECK(ids == sent);
    const auto status = reporter->Snapshot();
    CHECK(status.queued == 0);
    if (mode == "early") CHECK(status.last_error == "");
    if (mode == "retry-after") {
      CHECK(status.last_error.find("answered HTTP 503") != std::string::npos);
      // Retry-After: 1 is longer than the backoff (20 ms): it is what was waited for.
      CHECK(std::chrono::steady_clock::now() - started >= 1s);
    }
    if (mode == "hang-up") CHECK_FALSE(status.last_error.empty());
  }
}

TEST_CASE("A report the receiver keeps failing is moved behind the others, not blocking them") {
  TempDir state("report-state");
  const std::string refuse = state.Path("refuse");
  std::ofstream(refuse) << "drift\n";
  tether::testing::ReceiverOptions receiver_options;
  receiver_options.refuse = refuse;
  PythonReceiver receiver(Certs().server, receiver_options);
  auto reporter = Start(Options(receiver.url(), state));
  Json stuck = ApplyReport(0);
  stuck["event"] = "drift";
  Submit(*reporter, stuck);
  std::vector<std::string> sent;
  for (int n = 1; n <= 3; ++n) {
    const Json report = ApplyReport(n);
    sent.push_back(report["id"].get<std::string>());
    Submit(*reporter, report);
  }
  // The three behind it arrive, in order, while it keeps failing.
  WaitForStatus(*reporter, [](const ReporterStatus& s) { return s.delivered == 3; });
  CHECK(reporter->Snapshot().moved_back >= 1);
  std::vector<std::string> ids;
  for (const auto& report : receiver.Received()) ids.push_back(report["id"].get<std::string>());
  CHECK(ids == sent);
  // Once the receiver takes it, it arrives too: each report once.
  std::filesystem::remove(refuse);
  reporter->RetryNow();
  WaitForStatus(*reporter, [](const ReporterStatus& s) { return s.delivered == 4; });
  sent.push_back(stuck["id"].get<std::string>());
  ids.clear();
  for (const auto& report : receiver.Received()) ids.push_back(report["id"].get<std::string>());
  CHECK(ids == sent);
  CHECK(reporter->Snapshot().queued == 0);
}

TEST_CASE("report.format = cloudevents: a CloudEvents 1.0 event in HTTP binary mode") {
  PythonReceiver receiver(Certs().server);
  TempDir state("report-state");
  tether::ReportConfig config;
  config.url = receiver.url();
  config.ca_file = Certs().ca.cert();
  config.format = tether::kReportFormatCloudEvents;
  ReporterOptions options = tether::ReporterOptionsFrom(config, state.Path("outbox"));
  options.send = tether::HttpFetch;
  auto reporter = Start(options);
  const Json report = ApplyReport(1);
  Submit(*reporter, report);
  WaitForStatus(*reporter, [](const ReporterStatus& s) { return s.delivered == 1; });
  const auto received = receiver.Received();
  REQUIRE(received.size() == 1);
  CHECK(received[0]["cloudevent_errors"] == Json::array());
  const Json& event = received[0]["cloudevent"];
  CHECK(event["specversion"] == "1.0");
  CHECK(event["id"] == report["id"]);
  CHECK(event["source"] == "urn:tether:host:web-01");
  CHECK(event["type"] == "dev.tether.report.apply");
  CHECK(event["time"] == report["created_at"]);
  CHECK(event["datacontenttype"] == "application/json");
  CHECK(received[0]["id"] == report["id"]);  // the body is the report, as without the format
}

// The /proc/PID/status lines of this process's child whose command line has `marker`;
// empty when there is none.
std::vector<std::string> ChildStatus(const std::string& marker) {
  for (const auto& entry : std::filesystem::directory_iterator("/proc")) {
    std::ifstream cmdline(entry.path() / "cmdline", std::ios::binary);
    std::string args((std::istreambuf_iterator<char>(cmdline)), std::istreambuf_iterator<char>());
    if (args.find(marker) == std::string::npos) continue;
    std::ifstream status(entry.path() / "status");
    std::vector<std::string> lines;
    bool ours = false;
    for (std::string line; std::getline(status, line);) {
      ours |= line == "PPid:\t" + std::to_string(getpid());
      lines.push_back(line);
    }
    if (ours) return lines;
  }
  return {};
}

TEST_CASE("As root, the HTTP child reads its certificates, then runs as an unprivileged user") {
  if (geteuid() != 0) return;  // CI runs as root
  const char* http = std::getenv("TETHERD_HTTP");
  REQUIRE_MESSAGE(http != nullptr, "TETHERD_HTTP is set by meson");
  // The CA, the client certificate and its key where only root may read them.
  TempDir secrets("report-secrets");
  std::filesystem::permissions(secrets.path(), std::filesystem::perms::owner_all);
  for (const auto& [from, to] : {std::pair{Certs().ca.cert(), secrets.Path("ca.pem")},
                                 std::pair{Certs().client.cert, secrets.Path("client.pem")},
                                 std::pair{Certs().client.key, secrets.Path("client.key")}}) {
    std::filesystem::copy_file(from, to);
    std::filesystem::permissions(to, std::filesystem::perms::owner_read);
  }
  HttpsServer hanging({Certs().server, Certs().ca.cert(), false});
  hanging.SetDefaultResponse(ScriptedResponse::Hang());
  TempDir state("report-state");
  ReporterOptions options = Options(hanging.url("/"), state);
  options.ca_file = secrets.Path("ca.pem");
  options.client_cert = secrets.Path("client.pem");
  options.client_key = secrets.Path("client.key");
  options.send = tether::MakeProcessSender({http, "--http-fetch", "--http-fetch-user", "nobody"},
                                           tether::kCleanEnvironment);
  options.timeout = 60s;
  auto reporter = Start(options);
  Submit(*reporter, ApplyReport(0));
  // The request arrived over mutual TLS: the key was read. Meanwhile the child that sent
  // it runs as nobody, unable to gain privileges again.
  REQUIRE(hanging.WaitForRequests(1, 10s));
  CHECK(hanging.requests()[0].client_cn == "agent");
  const auto status = ChildStatus("--http-fetch-user");
  REQUIRE_FALSE(status.empty());
  CHECK(std::count(status.begin(), status.end(), "Uid:\t65534\t65534\t65534\t65534") == 1);
  CHECK(std::count(status.begin(), status.end(), "Groups:\t ") == 1);
  CHECK(std::count(status.begin(), status.end(), "NoNewPrivs:\t1") == 1);
  reporter->Stop();

  // Answered, the report is delivered.
  HttpsServer server({Certs().server, Certs().ca.cert(), false});
  options.url = server.url("/");
  auto next = Start(options);
  WaitForStatus(*next, [](const ReporterStatus& s) { return s.delivered == 1; });
  REQUIRE(server.requests().size() == 1);
  CHECK(server.requests()[0].client_cn == "agent");
}

TEST_CASE("Stop does not wait for a backoff to end") {
  HttpsServer server({Certs().server, "", false});
  server.SetDefaultResponse(ScriptedResponse::Respond(500));
  TempDir state("report-state");
  ReporterOptions options = Options(server.url("/"), state);
  options.initial_backoff = 10min;
  options.max_backoff = 10min;
  auto reporter = Start(options);
  Submit(*reporter, ApplyReport(0));
  const auto waiting =
      WaitForStatus(*reporter, [](const ReporterStatus& s) { return s.state == "retrying"; });
  CHECK(waiting.next_attempt >= waiting.last_attempt + 9 * 60);
  const auto stopping = std::chrono::steady_clock::now();
  reporter->Stop();
  CHECK(std::chrono::steady_clock::now() - stopping < 500ms);
  CHECK(server.request_count() == 1);
}

// The connections a receiver's stored reports came over.
std::set<int> Connections(const std::vector<Json>& received) {
  std::set<int> connections;
  for (const auto& report : received) connections.insert(report.value("connection", 0));
  return connections;
}

// Options for the daemon's kept HTTP child, which is returned in `sender`.
ReporterOptions ChildOptions(const std::string& url, const TempDir& state,
                             tether::ProcessSender& sender) {
  const char* http = std::getenv("TETHERD_HTTP");
  REQUIRE_MESSAGE(http != nullptr, "TETHERD_HTTP is set by meson");
  sender = tether::StartProcessSender({http, "--http-fetch"}, tether::kCleanEnvironment);
  ReporterOptions options = Options(url, state);
  options.send = sender.send;
  options.release = sender.release;
  return options;
}

TEST_CASE("A burst of reports goes over one kept TLS connection, let go once idle") {
  tether::testing::ReceiverOptions receiver_options;
  receiver_options.http11 = true;
  PythonReceiver receiver(Certs().server, receiver_options);
  TempDir state("report-state");
  tether::ProcessSender sender;
  ReporterOptions options = ChildOptions(receiver.url(), state, sender);
  options.linger = 1s;
  auto reporter = Start(options);
  std::vector<std::string> sent;
  for (int n = 0; n < 5; ++n) {
    const Json report = ApplyReport(n);
    sent.push_back(report["id"].get<std::string>());
    Submit(*reporter, report);
  }
  WaitForStatus(*reporter, [](const ReporterStatus& s) { return s.delivered == 5; });
  auto received = receiver.Received();
  CHECK(Ids(received) == sent);
  CHECK(Connections(received).size() == 1);  // one TLS handshake for the five
  CHECK(sender.children_started() == 1);

  // Idle for longer than `linger`: the child, and its connection, are let go.
  CHECK(WaitFor([] { return ChildStatus("--http-fetch").empty(); }, 10s));
  const Json later = ApplyReport(5);
  sent.push_back(later["id"].get<std::string>());
  Submit(*reporter, later);
  WaitForStatus(*reporter, [](const ReporterStatus& s) { return s.delivered == 6; });
  received = receiver.Received();
  CHECK(Ids(received) == sent);
  CHECK(Connections(received).size() == 2);
  CHECK(sender.children_started() == 2);
  CHECK(reporter->Snapshot().failed_attempts == 0);
}

TEST_CASE("A kept connection the receiver closed while idle is replaced, no attempt failed") {
  tether::testing::ReceiverOptions receiver_options;
  receiver_options.http11 = true;
  receiver_options.idle_timeout = 1;
  PythonReceiver receiver(Certs().server, receiver_options);
  TempDir state("report-state");
  tether::ProcessSender sender;
  ReporterOptions options = ChildOptions(receiver.url(), state, sender);
  options.linger = 60s;
  auto reporter = Start(options);
  const Json first = ApplyReport(0);
  Submit(*reporter, first);
  WaitForStatus(*reporter, [](const ReporterStatus& s) { return s.delivered == 1; });
  std::this_thread::sleep_for(2500ms);  // the receiver closes the idle connection after 1 s
  const Json second = ApplyReport(1);
  Submit(*reporter, second);
  WaitForStatus(*reporter, [](const ReporterStatus& s) { return s.delivered == 2; });
  const auto received = receiver.Received();
  CHECK(Ids(received) ==
        std::vector<std::string>{first["id"].get<std::string>(), second["id"].get<std::string>()});
  CHECK(Connections(received).size() == 2);
  CHECK(sender.children_started() == 1);  // the child kept; its connection replaced
  const auto status = reporter->Snapshot();
  CHECK(status.failed_attempts == 0);
  CHECK(status.last_error == "");
}

TEST_CASE("Receivers that send interim 1xx answers or chunked ones: each report once") {
  for (const std::string mode : {"interim", "chunked"}) {
    CAPTURE(mode);
    tether::testing::ReceiverOptions receiver_options;
    receiver_options.http11 = true;
    receiver_options.mode = mode;
    PythonReceiver receiver(Certs().server, receiver_options);
    const auto sent = DeliverThree(receiver.url());
    const auto received = receiver.Received();
    CHECK(Ids(received) == sent);
    CHECK(Connections(received).size() == 1);  // kept across both kinds of answer
  }
}

TEST_CASE("A report of 1 MiB and more goes with Expect: 100-continue") {
  Json big = ApplyReport(0);
  big["padding"] = std::string(tether::kExpectContinueFrom, 'x');
  const Json small = ApplyReport(1);
  const std::vector<std::string> both = {big["id"].get<std::string>(),
                                         small["id"].get<std::string>()};
  tether::testing::ReceiverOptions receiver_options;
  SUBCASE("answered 100 Continue (HTTP/1.1), the body is sent") { receiver_options.http11 = true; }
  SUBCASE("not answered (HTTP/1.0), the body is sent after a second") {}
  SUBCASE("answered 413 at once: the body is not sent, the report refused") {
    receiver_options.http11 = true;
    receiver_options.mode = "expect-refuse";
  }
  SUBCASE("answered 417 (Expect not done): sent again without it, and delivered") {
    receiver_options.http11 = true;
    receiver_options.mode = "expect-417";
  }
  PythonReceiver receiver(Certs().server, receiver_options);
  TempDir state("report-state");
  tether::ProcessSender sender;
  auto reporter = Start(ChildOptions(receiver.url(), state, sender));
  Submit(*reporter, big);
  Submit(*reporter, small);
  const auto status = WaitForStatus(
      *reporter, [](const ReporterStatus& s) { return s.delivered + s.rejected == 2; });
  auto received = receiver.Received();
  if (receiver_options.mode == "expect-417") {
    REQUIRE(received.size() == 3);
    CHECK(status.delivered == 2);
    CHECK(received[0].value("refused", 0) == 417);
    CHECK(received[0].value("id", "") == both[0]);
    CHECK_FALSE(received[0].value("body_sent", true));
    CHECK(received[1].value("expect", Json("absent")) == nullptr);  // the same report again
    CHECK(received[1].value("length", std::size_t{0}) > tether::kExpectContinueFrom);
    received.erase(received.begin());
  }
  REQUIRE(received.size() == 2);
  CHECK(Ids(received) == both);
  if (receiver_options.mode == "expect-refuse") {
    CHECK(status.rejected == 1);
    CHECK(status.last_error.find("answered HTTP 413") != std::string::npos);
    CHECK(received[0].value("refused", 0) == 413);
    CHECK_FALSE(received[0].value("body_sent", true));
  } else if (receiver_options.mode != "expect-417") {
    CHECK(status.delivered == 2);
    CHECK(received[0].value("expect", Json()) == "100-continue");
    CHECK(received[0].value("length", std::size_t{0}) > tether::kExpectContinueFrom);
  }
  CHECK(received[1].value("expect", Json("absent")) == nullptr);  // a small report goes at once
}

TEST_CASE("A receiver that answers one byte a second: waited for within the deadline") {
  tether::testing::ReceiverOptions receiver_options;
  receiver_options.mode = "slow";  // the first answer only
  PythonReceiver receiver(Certs().server, receiver_options);
  TempDir state("report-state");
  tether::ProcessSender sender;
  ReporterOptions options = ChildOptions(receiver.url(), state, sender);
  const Json first = ApplyReport(0);
  const Json second = ApplyReport(1);
  SUBCASE("a deadline longer than the answer: delivered once") {
    options.timeout = 60s;
    auto reporter = Start(options);
    const auto started = std::chrono::steady_clock::now();
    Submit(*reporter, first);
    REQUIRE(WaitFor([&] { return receiver.Received().size() == 1; }, 10s));
    // While the answer trickles in, queueing a report does not wait for it.
    const auto submitting = std::chrono::steady_clock::now();
    Submit(*reporter, second);
    CHECK(std::chrono::steady_clock::now() - submitting < 1s);
    CHECK(reporter->Snapshot().state == "sending");
    WaitForStatus(
        *reporter, [](const ReporterStatus& s) { return s.delivered == 2; }, 60s);
    CHECK(std::chrono::steady_clock::now() - started >= 15s);  // 19 bytes, one a second
    CHECK(Ids(receiver.Received()) == std::vector<std::string>{first["id"].get<std::string>(),
                                                               second["id"].get<std::string>()});
    CHECK(reporter->Snapshot().failed_attempts == 0);
  }
  SUBCASE("a shorter deadline: the attempt is cut and retried; the id tells the copies") {
    options.timeout = 3s;
    auto reporter = Start(options);
    Submit(*reporter, first);
    Submit(*reporter, second);
    const auto status = WaitForStatus(
        *reporter, [](const ReporterStatus& s) { return s.delivered == 2; }, 30s);
    CHECK(status.last_error.find("timed out") != std::string::npos);
    const auto ids = Ids(receiver.Received());
    // The receiver stored the first report before its answer was cut: it came twice.
    CHECK(ids == std::vector<std::string>{first["id"].get<std::string>(),
                                          first["id"].get<std::string>(),
                                          second["id"].get<std::string>()});
  }
}

TEST_CASE("A redirect is not followed; it is logged once, and retried") {
  HttpsServer elsewhere({Certs().server, "", false});
  HttpsServer redirecting({Certs().server, "", false});
  redirecting.SetDefaultResponse(
      ScriptedResponse::Respond(301, "", {{"Location", elsewhere.url("/reports")}}));
  auto sink = std::make_shared<spdlog::sinks::ringbuffer_sink_mt>(100);
  auto logger = tether::GetLogger("report");
  logger->sinks().push_back(sink);
  TempDir state("report-state");
  {
    auto reporter = Start(Options(redirecting.url("/"), state));
    Submit(*reporter, ApplyReport(0));
    const auto status =
        WaitForStatus(*reporter, [](const ReporterStatus& s) { return s.failed_attempts >= 4; });
    CHECK(status.queued == 1);
    CHECK(status.last_error.find("answered HTTP 301 (a redirect to '" + elsewhere.url("/reports") +
                                 "', not followed") != std::string::npos);
  }
  logger->sinks().pop_back();
  CHECK(elsewhere.request_count() == 0);
  int said = 0;
  for (const auto& line : sink->last_formatted())
    said += line.find("HTTP 301") != std::string::npos;
  CHECK(said == 1);
}
