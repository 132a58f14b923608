// The Reporter: delivers status reports to report.url, in order, one at a time, from a
// durable outbox (agent/report/outbox.hpp), on a thread of its own.
//
// Delivery: POST with "Content-Type: application/json" and, with a token file,
// "Authorization: Bearer TOKEN" (the file is read at every attempt, so a rotated token is
// picked up; the token is never logged or shown). HTTPS is verified against the system CAs
// or ca_file with the host name checked; mutual TLS with client_cert/client_key. Redirects
// are not followed. Before each attempt the report gets "sent_at" and "dropped_reports"
// (reports the full outbox dropped and no delivered report has told yet).
//
// Each request also carries "Idempotency-Key: ID", the report's id.
//
// Outcomes, by answer (the status line and headers: the answer stands however the
// connection ends after them, body cut short, TLS without close_notify, reset):
//   2xx                                   delivered: removed from the outbox, never retried
//   4xx but 408 and 429                   refused for good: removed, logged once, counted
//                                         in `rejected`; later reports go on
//   5xx, 408, 429, 3xx, no answer,        kept at the head of the outbox and retried after
//   timeout, TLS failure, unreadable token  an exponential backoff with jitter
//                                         (initial_backoff doubling up to max_backoff), or
//                                         after Retry-After when that is later (capped at
//                                         max_retry_after)
//
// No head-of-line blocking: after every kMoveBackAfter retryable failures in a row of the
// oldest report, the next attempt goes to the report behind it (a probe). If that one gets
// an answer (delivered or refused), the endpoint is up and the oldest report is what fails:
// it is moved behind the others (MoveToBack; counted in moved_back) and retried in its
// turn. If the probe fails too, the endpoint is down: order is kept and the oldest is tried
// next. Receivers order reports by created_at.
//
// Threading: Submit, Snapshot, RetryNow and Stop are thread-safe. Submit and Snapshot never
// wait for the network: Submit returns once the report is on disk (a few fsyncs).
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "agent/config/agent_config.hpp"
#include "agent/report/outbox.hpp"
#include "common/error.hpp"
#include "common/http_client.hpp"
#include "common/unique_fd.hpp"

namespace tether {

// How many retryable failures in a row of the oldest report make the next attempt a probe
// past it (see the class comment).
inline constexpr std::uint64_t kMoveBackAfter = 3;

struct ReporterOptions {
  HttpSender send{};  // REQUIRED
  // Called once no report has been sent for `linger` (the outbox empty, or waiting out a
  // longer backoff): the sender lets go of what it keeps between requests (its child
  // process, its connection). Optional.
  std::function<void()> release{};
  std::chrono::milliseconds linger{std::chrono::seconds(5)};
  std::string url;            // https://... or, explicitly, http://...
  std::string token_file{};   // empty: no Authorization header
  std::string client_cert{};  // PEM files for mutual TLS; both or neither
  std::string client_key{};
  std::string ca_file{};  // empty: the system CAs
  // Send each report as a CloudEvents 1.0 event in HTTP binary mode: the same body, with
  // ce-specversion, ce-id (the report's id), ce-source (urn:tether:host:HOSTNAME),
  // ce-type (dev.tether.report.EVENT) and ce-time (created_at) headers.
  bool cloudevents = false;
  std::string outbox_dir{};  // StateStore::OutboxDir()
  OutboxLimits limits{};
  std::chrono::milliseconds connect_timeout{std::chrono::seconds(5)};
  std::chrono::milliseconds timeout{std::chrono::seconds(15)};  // one whole attempt
  std::chrono::milliseconds initial_backoff{std::chrono::seconds(1)};
  std::chrono::milliseconds max_backoff{std::chrono::minutes(5)};
  std::chrono::milliseconds max_retry_after{std::chrono::minutes(30)};
  double jitter = 0.25;  // each backoff is cut by a random fraction of up to this much
};

// The options for `config` (REQUIRES: config.url is set), with the outbox in `outbox_dir`
// (the state dir's: StateStore::OutboxDir); `send` is left to the caller.
[[nodiscard]] ReporterOptions ReporterOptionsFrom(const ReportConfig& config,
                                                  const std::string& outbox_dir);

// What tetherctl status shows about the endpoint. Times are unix seconds, 0 for never.
struct ReporterStatus {
  std::string url;         // without credentials or query string
  std::string state;       // "idle", "sending", "retrying" (waiting for a retry), "stopped"
  std::size_t queued = 0;  // reports in the outbox (the one being sent included)
  std::uint64_t queued_bytes = 0;
  std::uint64_t dropped = 0;     // dropped from a full outbox and not yet reported
  std::uint64_t delivered = 0;   // since this process started
  std::uint64_t rejected = 0;    // refused by the endpoint (4xx) since this process started
  std::uint64_t moved_back = 0;  // reports moved behind newer ones (kMoveBackAfter) since start
  std::uint64_t failed_attempts = 0;  // failed attempts in a row (0 after a delivery)
  std::int64_t last_delivery = 0;
  std::int64_t last_attempt = 0;
  std::string last_error;  // the latest failure or refusal, kept after a delivery
  std::int64_t last_error_at = 0;
  std::int64_t next_attempt = 0;  // when "retrying": the time of the next attempt
};

[[nodiscard]] nlohmann::json ReporterStatusToJson(const ReporterStatus& status);

class Reporter {
 public:
  // Opens the outbox (creating it) and starts the delivery thread, which first delivers
  // what a previous process left queued. Fails on a URL that is not http(s):// and on an
  // outbox that cannot be opened. Warns (once) when the URL is plain http://, and about
  // corrupt outbox files found.
  [[nodiscard]] static Result<std::unique_ptr<Reporter>> Start(ReporterOptions options);
  Reporter(const Reporter&) = delete;
  Reporter& operator=(const Reporter&) = delete;
  // Stop().
  ~Reporter();

  // Queues `report` (a BuildReport result) durably and wakes the delivery thread. On
  // success the report survives a crash of this process; it is delivered in Submit order.
  // Never waits for the network. Fails when the report cannot be written (disk full,
  // EFBIG when it alone is over the outbox's byte limit). After Stop, reports are still
  // queued, for the next process to deliver.
  [[nodiscard]] Status Submit(const nlohmann::json& report);

  // Ends a backoff wait: the next attempt starts now (e.g. after tetherctl sync).
  void RetryNow();

  // Stops the delivery thread and joins it. Returns at once when idle or waiting for a
  // retry; during an attempt, at once with a sender that watches HttpRequest::cancel_fd
  // (the daemon's child process sender), else when the attempt ends (options.timeout at
  // most). Queued reports stay in the outbox, including one whose attempt was cut short
  // (the endpoint may then see it twice, with the same id). Idempotent.
  void Stop();

  [[nodiscard]] ReporterStatus Snapshot() const;

 private:
  Reporter(ReporterOptions options, std::unique_ptr<Outbox> outbox);

  using SteadyClock = std::chrono::steady_clock;

  void Run();
  // One attempt to deliver `entry`; updates the status and the outbox.
  enum class Delivery { kDelivered, kRejected, kRetry };
  Delivery Deliver(const OutboxEntry& entry);
  // After a probe past `head` got an answer: moves `head` behind the others.
  void MoveBack(std::uint64_t head);
  // Records a failed attempt that is to be retried: backoff, error, log.
  void RetryLater(const std::string& error, std::optional<std::chrono::milliseconds> retry_after);
  [[nodiscard]] std::chrono::milliseconds NextBackoff();
  void LogProblems(const std::vector<Error>& problems);
  // Lets the sender go (ReporterOptions::release).
  void Release();

  const ReporterOptions options_;
  const std::string shown_url_;
  const std::unique_ptr<Outbox> outbox_;

  mutable std::mutex mutex_;
  std::condition_variable wake_;
  bool stopping_ = false;
  bool pending_ = false;    // a report was submitted since the outbox was last looked at
  bool retry_now_ = false;  // RetryNow was called
  bool sending_ = false;
  std::optional<SteadyClock::time_point> next_attempt_;
  std::chrono::milliseconds backoff_{0};  // the last backoff; 0 after a delivery
  // The delivery thread's own: the oldest report's retryable failures in a row, and how
  // many of them there were at the last probe past it.
  std::uint64_t head_ = 0;
  std::uint64_t head_failures_ = 0;
  std::uint64_t head_failures_probed_ = 0;
  bool held_ = false;      // the sender was used since the last release
  ReporterStatus status_;  // the fields the thread keeps (not queue sizes)

  // An eventfd that Stop writes: a sender that watches it (HttpRequest::cancel_fd) ends an
  // attempt in progress at once. The report stays queued.
  UniqueFd cancel_;
  std::thread thread_;
};

}  // namespace tether
