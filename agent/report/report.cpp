#include "agent/report/report.hpp"

#include <sys/random.h>

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <ctime>

#include "version.hpp"

namespace tether {

namespace {

using Json = nlohmann::json;

// `text` cut at kReportTextLimit bytes (on a UTF-8 character boundary), "…" appended.
std::string Bounded(std::string_view text) {
  if (text.size() <= kReportTextLimit) return std::string(text);
  std::size_t cut = kReportTextLimit;
  while (cut > 0 && (static_cast<unsigned char>(text[cut]) & 0xC0) == 0x80) --cut;
  return std::string(text.substr(0, cut)) + "\xE2\x80\xA6";
}

// A string, or null when it is empty.
Json StringOrNull(std::string_view text) {
  if (text.empty()) return nullptr;
  return Bounded(text);
}

void RandomBytes(unsigned char* out, std::size_t size) {
  std::size_t done = 0;
  while (done < size) {
    const ssize_t got = getrandom(out + done, size - done, 0);
    if (got < 0) {
      if (errno == EINTR) continue;
      // getrandom cannot fail on Linux >= 3.17 once the pool is initialised; a report id
      // that is not unique would make the endpoint drop reports: better stop here.
      std::abort();
    }
    done += static_cast<std::size_t>(got);
  }
}

}  // namespace

std::string NewReportId() {
  unsigned char bytes[16];
  RandomBytes(bytes, sizeof(bytes));
  bytes[6] = static_cast<unsigned char>((bytes[6] & 0x0F) | 0x40);  // version 4
  bytes[8] = static_cast<unsigned char>((bytes[8] & 0x3F) | 0x80);  // RFC 4122 variant
  static constexpr char kHex[] = "0123456789abcdef";
  std::string id;
  id.reserve(36);
  for (std::size_t i = 0; i < sizeof(bytes); ++i) {
    if (i == 4 || i == 6 || i == 8 || i == 10) id += '-';
    id += kHex[bytes[i] >> 4];
    id += kHex[bytes[i] & 0x0F];
  }
  return id;
}

std::string UrlWithoutCredentials(std::string_view url) {
  const auto scheme_end = url.find("://");
  if (scheme_end == std::string_view::npos) return std::string(url);
  const std::size_t authority_start = scheme_end + 3;
  std::string_view rest = url.substr(authority_start);
  rest = rest.substr(0, rest.find_first_of("?#"));
  const auto path_start = rest.find('/');
  std::string_view authority = rest.substr(0, path_start);
  const std::string_view path =
      path_start == std::string_view::npos ? std::string_view() : rest.substr(path_start);
  if (const auto at = authority.rfind('@'); at != std::string_view::npos) {
    authority.remove_prefix(at + 1);
  }
  return std::string(url.substr(0, authority_start)) + std::string(authority) + std::string(path);
}

std::int64_t NowUnixMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

std::string FormatReportTime(std::int64_t unix_ms) {
  std::int64_t seconds = unix_ms / 1000;
  std::int64_t millis = unix_ms % 1000;
  if (millis < 0) {
    millis += 1000;
    --seconds;
  }
  const std::time_t t = static_cast<std::time_t>(seconds);
  std::tm utc{};
  gmtime_r(&t, &utc);
  char text[96];
  std::snprintf(text, sizeof(text), "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", utc.tm_year + 1900,
                utc.tm_mon + 1, utc.tm_mday, utc.tm_hour, utc.tm_min, utc.tm_sec,
                static_cast<int>(millis));
  return text;
}

Json BuildReport(const ReportInput& input, const HostIdentity& host) {
  Json labels = Json::object();
  for (const auto& [name, value] : host.labels) labels[name] = value;

  Json resources = Json::array();
  std::size_t changed = 0;
  std::size_t failed = 0;
  std::size_t in_sync = input.in_sync;
  for (const auto& resource : input.resources) {
    if (!resource.ok) {
      ++failed;
    } else if (resource.action == "in sync") {
      ++in_sync;
    } else {
      ++changed;
    }
    resources.push_back({{"id", resource.id},
                         {"action", resource.action},
                         {"ok", resource.ok},
                         {"changes", StringOrNull(resource.changes)},
                         {"error", StringOrNull(resource.error)}});
  }

  Json timings = {{"duration_ms", input.timings.duration_ms}};
  if (input.timings.started_ms > 0) {
    timings["started_at"] = FormatReportTime(input.timings.started_ms);
  }

  return Json{
      {"schema", kReportSchema},
      {"id", NewReportId()},
      {"created_at", FormatReportTime(NowUnixMs())},
      {"event", input.event},
      {"state", input.state},
      {"trigger", StringOrNull(input.trigger)},
      {"host", {{"hostname", host.hostname}, {"machine_id", host.machine_id}, {"labels", labels}}},
      {"agent", {{"name", "tetherd"}, {"version", TETHER_VERSION}}},
      {"source",
       {{"url", UrlWithoutCredentials(input.source.url)},
        {"ref", StringOrNull(input.source.ref)},
        {"commit", StringOrNull(input.source.commit)},
        {"signer", StringOrNull(input.source.signer)}}},
      {"summary",
       {{"changed", changed},
        {"failed", failed},
        {"in_sync", in_sync},
        {"total", input.resources.size() + input.in_sync}}},
      {"resources", resources},
      {"timings", timings},
      {"error", StringOrNull(input.error)},
  };
}

}  // namespace tether
