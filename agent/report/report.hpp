// Status reports for the central endpoint: what one report says, as JSON of the schema
// "tether.report/v1" (docs/report-schema.json, described in docs/reports.md).
//
// BuildReport is pure but for the report id (random) and the creation time (the clock). A
// report names what changed, never the contents: the caller passes resource ids, actions
// and the NAMES of changed attributes ("content, mode"), never file contents or secrets.
// URLs are put in without credentials (user info) and without query string or fragment.
//
// The outbox and the Reporter add "sent_at" and "dropped_reports" at delivery time.
//
// Threading: every function here is thread-safe.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

namespace tether {

inline constexpr char kReportSchema[] = "tether.report/v1";
// Free-text fields (errors, change lists) are cut at this many bytes, with "…" appended,
// so one report stays small whatever a failing command printed.
inline constexpr std::size_t kReportTextLimit = 4096;

// Where the applied (or refused) configuration came from.
struct ReportSource {
  std::string url;     // source.url as configured; credentials are removed by BuildReport
  std::string ref;     // "refs/heads/main"
  std::string commit;  // full commit id; empty when none is known yet
  std::string signer;  // principal of the verified signature; empty when unsigned/unknown
};

// One resource of the cycle.
struct ResourceOutcome {
  std::string id;       // "file:/etc/motd", "package:nginx", "service:nginx.service"
  std::string action;   // "create", "update", "delete", "restart", "reload", "in sync", ...
  bool ok = true;       // false when the resource failed
  std::string changes;  // WHAT changed, by name: "content, mode"; never contents
  std::string error;    // empty when ok
};

struct ReportTimings {
  std::int64_t started_ms = 0;   // unix milliseconds; 0: unknown (omitted)
  std::int64_t duration_ms = 0;  // how long the cycle took
};

struct ReportInput {
  std::string event;    // "apply" | "drift" | "refused" | "heartbeat"
  std::string state;    // "synced", "applied", "failed", "rolled-back", "drifted",
                        // "reverted", "refused", "suspended", "applying", "offline"
  std::string trigger;  // "start", "poll", "webhook", "drift", "manual", "heartbeat", ...
  ReportSource source;
  std::vector<ResourceOutcome> resources;  // the resources worth naming (changed, failed)
  std::size_t in_sync = 0;                 // resources in sync that `resources` leaves out
  ReportTimings timings;
  std::string error;  // what failed or why the commit was refused; empty on success
};

struct HostIdentity {
  std::string hostname;
  std::string machine_id;  // 32 hex digits (/etc/machine-id)
  std::map<std::string, std::string> labels;
};

// Builds a report. REQUIRES: input.event and input.state are among the values above (the
// schema's enums; BuildReport does not check them). Every call gets a new random report
// id (a UUID v4), so a report delivered twice can be recognised by the endpoint.
[[nodiscard]] nlohmann::json BuildReport(const ReportInput& input, const HostIdentity& host);

// A random UUID v4 ("xxxxxxxx-xxxx-4xxx-yxxx-xxxxxxxxxxxx") from getrandom(2).
[[nodiscard]] std::string NewReportId();

// `url` without user info ("user:password@"), query string and fragment:
// "https://u:p@git.example.com/fleet.git?x=1" -> "https://git.example.com/fleet.git".
// Something that is not a URL ("/srv/fleet.git") comes back as it is.
[[nodiscard]] std::string UrlWithoutCredentials(std::string_view url);

// RFC 3339 UTC time with milliseconds: "2024-05-01T12:00:00.123Z".
[[nodiscard]] std::string FormatReportTime(std::int64_t unix_ms);

// The current time in unix milliseconds (system clock).
[[nodiscard]] std::int64_t NowUnixMs();

}  // namespace tether
