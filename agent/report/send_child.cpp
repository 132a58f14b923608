// The child's side of agent/report/send_process.hpp, apart from the parent's: it links
// the HTTP client (Beast, OpenSSL), which the daemon must not.
#include <nlohmann/json.hpp>

#include "agent/report/send_process.hpp"
#include "common/filesystem.hpp"
#include "common/json_fields.hpp"
#include "common/privileges.hpp"
#include "common/process.hpp"

namespace tether {

namespace {

using Json = nlohmann::json;

constexpr std::size_t kMaxRequest = 16 << 20;  // a report is bounded by the outbox's limit
constexpr std::size_t kMaxPemFile = 1 << 20;

// Reads the request's PEM files into it (ca_pem, client_cert_pem, client_key_pem) while
// this process may still read them, then becomes `user`.
Status BecomeUser(HttpRequest& request, const std::string& user) {
  for (auto [path, pem] : {std::pair{&request.ca_file, &request.ca_pem},
                           std::pair{&request.client_cert, &request.client_cert_pem},
                           std::pair{&request.client_key, &request.client_key_pem}}) {
    if (path->empty()) continue;
    auto text = ReadLocalFile(*path, kMaxPemFile);
    if (!text) return Fail(text.error());
    *pem = std::move(*text);
  }
  return DropPrivileges(user);
}

}  // namespace

int ServeHttpFetch(std::FILE* in, std::FILE* out, const std::string& user) {
  std::string text;
  const Json job =
      ReadToEnd(fileno(in), text, kMaxRequest) ? Json::parse(text, nullptr, false) : Json();
  if (!job.is_object()) {
    std::fprintf(stderr, "tetherd: --http-fetch: no request on stdin\n");
    return 2;
  }
  HttpRequest request;
  const JsonFields fields(job);
  request.method = fields.StringOr("method", "POST");
  request.url = fields.StringOr("url");
  const auto headers = job.find("headers");
  request.headers = HeadersFromJson(headers != job.end() ? *headers : Json());
  request.body = fields.StringOr("body");
  request.ca_file = fields.StringOr("ca_file");
  request.client_cert = fields.StringOr("client_cert");
  request.client_key = fields.StringOr("client_key");
  request.connect_timeout = std::chrono::milliseconds(fields.IntOr("connect_timeout_ms", 5000));
  request.timeout = std::chrono::milliseconds(fields.IntOr("timeout_ms", 15000));
  request.max_response_body = static_cast<std::size_t>(
      std::max<std::int64_t>(0, fields.IntOr("max_response_body", 64 << 10)));
  Result<HttpResponse> response = Fail(std::errc::invalid_argument, "not sent");
  if (auto became = user.empty() ? Status() : BecomeUser(request, user); !became) {
    response = Fail(became.error());
  } else {
    response = HttpFetch(request);
  }
  Json outcome;
  if (!response) {
    outcome = {{"ok", false},
               {"code", response.error().code().value()},
               {"message", response.error().message()}};
  } else {
    outcome = {{"ok", true},
               {"status", response->status},
               {"headers", HeadersToJson(response->headers)},
               {"body", response->body},
               {"complete", response->complete},
               {"incomplete", response->incomplete}};
  }
  const std::string dumped = outcome.dump(-1, ' ', false, Json::error_handler_t::replace);
  return WriteFully(fileno(out), dumped) ? 0 : 1;
}

}  // namespace tether
