// The child's side of agent/report/send_process.hpp, apart from the parent's: it links
// the HTTP client (Beast, OpenSSL), which the daemon must not.
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
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

HttpRequest RequestFromJson(const Json& job) {
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
  return request;
}

Json OutcomeJson(const Result<HttpResponse>& response) {
  if (!response) {
    return {{"ok", false},
            {"code", response.error().code().value()},
            {"message", response.error().message()}};
  }
  return {{"ok", true},
          {"status", response->status},
          {"headers", HeadersToJson(response->headers)},
          {"body", response->body},
          {"complete", response->complete},
          {"incomplete", response->incomplete}};
}

// The PEM files a request names, read while this process may still read them, and the
// user it becomes then: later requests that name the same files get the same text.
class Credentials {
 public:
  explicit Credentials(std::string user) : user_(std::move(user)) {}

  Status Fill(HttpRequest& request) {
    if (user_.empty()) return {};
    if (!dropped_) {
      for (const auto& slot : Slots(request)) {
        const std::string& path = *slot.first;
        if (path.empty()) continue;
        auto text = ReadLocalFile(path, kMaxPemFile);
        if (!text) return Fail(text.error());
        read_.emplace_back(path, std::move(*text));
      }
      if (auto became = DropPrivileges(user_); !became) return became;
      dropped_ = true;
    }
    for (const auto& slot : Slots(request)) {
      const std::string& path = *slot.first;
      if (path.empty()) continue;
      const auto found = std::find_if(read_.begin(), read_.end(),
                                      [&](const auto& item) { return item.first == path; });
      if (found == read_.end()) {
        return Fail(std::errc::permission_denied,
                    "'" + path + "' was not named when the HTTP child gave up root");
      }
      *slot.second = found->second;
    }
    return {};
  }

 private:
  static std::array<std::pair<std::string*, std::string*>, 3> Slots(HttpRequest& request) {
    return {std::pair{&request.ca_file, &request.ca_pem},
            std::pair{&request.client_cert, &request.client_cert_pem},
            std::pair{&request.client_key, &request.client_key_pem}};
  }

  std::string user_;
  bool dropped_ = false;
  std::vector<std::pair<std::string, std::string>> read_;
};

}  // namespace

int ServeHttpFetch(int in, int out, const std::string& user) {
  Credentials credentials(user);
  HttpClient client;
  std::string buffer;
  bool served = false;
  std::size_t scanned = 0;  // no newline before this
  bool eof = false;
  while (true) {
    const auto newline = buffer.find('\n', scanned);
    scanned = newline == std::string::npos ? buffer.size() : 0;
    if (newline == std::string::npos) {
      if (eof && !buffer.empty()) {  // the last request, without its newline
        buffer += '\n';
        continue;
      }
      if (eof) {
        if (served) return 0;  // the connection kept, if any, is closed on the way out
        std::fprintf(stderr, "tetherd: --http-fetch: no request on stdin\n");
        return 2;
      }
      if (buffer.size() > kMaxRequest) {
        std::fprintf(stderr, "tetherd: --http-fetch: a request over %zu bytes\n", kMaxRequest);
        return 2;
      }
      char chunk[65536];
      const ssize_t n = read(in, chunk, sizeof(chunk));
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) {
        eof = true;
        continue;
      }
      buffer.append(chunk, static_cast<std::size_t>(n));
      continue;
    }
    const Json job = Json::parse(std::string_view(buffer).substr(0, newline), nullptr, false);
    buffer.erase(0, newline + 1);
    if (!job.is_object()) {
      std::fprintf(stderr, "tetherd: --http-fetch: a request that is not a JSON object\n");
      return 2;
    }
    served = true;
    HttpRequest request = RequestFromJson(job);
    Result<HttpResponse> response = Fail(std::errc::invalid_argument, "not sent");
    if (auto filled = credentials.Fill(request); !filled) {
      response = Fail(filled.error());
    } else {
      response = client.Fetch(request);
    }
    const std::string dumped =
        OutcomeJson(response).dump(-1, ' ', false, Json::error_handler_t::replace) + "\n";
    if (!WriteFully(out, dumped)) return 1;
  }
}

}  // namespace tether
