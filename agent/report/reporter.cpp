#include "agent/report/reporter.hpp"

#include <sys/eventfd.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <ctime>
#include <random>

#include "agent/report/report.hpp"
#include "common/filesystem.hpp"
#include "common/http_client.hpp"
#include "common/json_fields.hpp"
#include "common/log.hpp"

namespace tether {

namespace {

using Json = nlohmann::json;

constexpr std::size_t kMaxTokenSize = 64 << 10;
constexpr std::size_t kMaxAnswerShown = 200;

std::int64_t NowUnixSeconds() {
  return std::chrono::duration_cast<std::chrono::seconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

std::string Trimmed(std::string_view text) {
  const auto first = text.find_first_not_of(" \t\r\n");
  if (first == std::string_view::npos) return "";
  const auto last = text.find_last_not_of(" \t\r\n");
  return std::string(text.substr(first, last - first + 1));
}

// The start of an answer's body, printable, for a log line or status.
std::string Excerpt(std::string_view body) {
  std::string shown;
  for (const char c : body.substr(0, kMaxAnswerShown)) {
    shown += std::isprint(static_cast<unsigned char>(c)) ? c : ' ';
  }
  if (body.size() > kMaxAnswerShown) shown += "...";
  return Trimmed(shown);
}

// CloudEvents 1.0, HTTP protocol binding, binary content mode: the report is the event's
// data (Content-Type: application/json, set already) and its attributes are headers.
void AddCloudEventHeaders(const Json& report,
                          std::vector<std::pair<std::string, std::string>>& headers) {
  const JsonFields fields(report);
  const auto host = report.find("host");
  const std::string hostname =
      host != report.end() && host->is_object() ? JsonFields(*host).StringOr("hostname") : "";
  headers.emplace_back("ce-specversion", "1.0");
  headers.emplace_back("ce-id", fields.StringOr("id"));
  headers.emplace_back("ce-source", "urn:tether:host:" + hostname);
  headers.emplace_back("ce-type", "dev.tether.report." + fields.StringOr("event"));
  headers.emplace_back("ce-time", fields.StringOr("created_at"));
}

// Retry-After: delay-seconds or an HTTP-date (RFC 9110 10.2.3); nothing when absent or
// unreadable.
std::optional<std::chrono::milliseconds> ParseRetryAfter(const std::string& value) {
  const std::string text = Trimmed(value);
  if (text.empty()) return std::nullopt;
  if (text.find_first_not_of("0123456789") == std::string::npos) {
    if (text.size() > 9) return std::chrono::hours(24 * 365);  // absurd: the cap applies
    return std::chrono::seconds(std::stoll(text));
  }
  std::tm when{};
  const char* end = strptime(text.c_str(), "%a, %d %b %Y %H:%M:%S GMT", &when);
  if (end == nullptr || *end != '\0') return std::nullopt;
  const std::int64_t delta = static_cast<std::int64_t>(timegm(&when)) - NowUnixSeconds();
  return std::chrono::seconds(std::max<std::int64_t>(delta, 0));
}

std::string Seconds(std::chrono::milliseconds delay) {
  if (delay < std::chrono::seconds(1)) return std::to_string(delay.count()) + "ms";
  char text[32];
  std::snprintf(text, sizeof(text), "%.1fs", static_cast<double>(delay.count()) / 1000.0);
  return text;
}

}  // namespace

ReporterOptions ReporterOptionsFrom(const ReportConfig& config, const std::string& outbox_dir) {
  ReporterOptions options;
  options.url = config.url.value_or("");
  options.token_file = config.token_file.value_or("");
  options.client_cert = config.client_cert.value_or("");
  options.client_key = config.client_key.value_or("");
  options.ca_file = config.ca_file.value_or("");
  options.cloudevents = config.format == kReportFormatCloudEvents;
  options.outbox_dir = outbox_dir;
  return options;
}

Json ReporterStatusToJson(const ReporterStatus& status) {
  auto time_or_null = [](std::int64_t unix_seconds) -> Json {
    if (unix_seconds == 0) return nullptr;
    return unix_seconds;
  };
  return Json{{"url", status.url},
              {"state", status.state},
              {"queued", status.queued},
              {"queued_bytes", status.queued_bytes},
              {"dropped", status.dropped},
              {"delivered", status.delivered},
              {"rejected", status.rejected},
              {"moved_back", status.moved_back},
              {"failed_attempts", status.failed_attempts},
              {"last_delivery", time_or_null(status.last_delivery)},
              {"last_attempt", time_or_null(status.last_attempt)},
              {"last_error", status.last_error.empty() ? Json(nullptr) : Json(status.last_error)},
              {"last_error_at", time_or_null(status.last_error_at)},
              {"next_attempt", time_or_null(status.next_attempt)}};
}

Reporter::Reporter(ReporterOptions options, std::unique_ptr<Outbox> outbox)
    : options_(std::move(options)),
      shown_url_(UrlWithoutCredentials(options_.url)),
      outbox_(std::move(outbox)),
      cancel_(eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)) {
  status_.url = shown_url_;
}

Result<std::unique_ptr<Reporter>> Reporter::Start(ReporterOptions options) {
  const bool tls = options.url.rfind("https://", 0) == 0;
  if (!tls && options.url.rfind("http://", 0) != 0) {
    return Fail(std::errc::invalid_argument, "report URL '" + UrlWithoutCredentials(options.url) +
                                                 "' is not https:// (or, explicitly, http://)");
  }
  if (options.client_cert.empty() != options.client_key.empty()) {
    return Fail(std::errc::invalid_argument, "a report client certificate needs its key, and back");
  }
  if (!options.send) return Fail(std::errc::invalid_argument, "no way to send reports");
  std::vector<Error> problems;
  auto outbox = Outbox::Open(options.outbox_dir, options.limits, problems);
  if (!outbox) return Fail(outbox.error());
  std::unique_ptr<Reporter> reporter(new Reporter(std::move(options), std::move(*outbox)));
  reporter->LogProblems(problems);
  if (!tls) {
    GetLogger("report")->warn(
        "Reports go to '{}' over plain http://: not encrypted, the endpoint not authenticated",
        reporter->shown_url_);
  }
  if (const auto queued = reporter->outbox_->size(); queued > 0) {
    GetLogger("report")->info("{} report(s) left queued for '{}'", queued, reporter->shown_url_);
  }
  reporter->thread_ = std::thread([raw = reporter.get()] { raw->Run(); });
  return reporter;
}

Reporter::~Reporter() { Stop(); }

void Reporter::Stop() {
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
  }
  wake_.notify_all();
  if (cancel_.valid()) {
    const std::uint64_t one = 1;
    (void)!write(cancel_.get(), &one, sizeof(one));
  }
  if (thread_.joinable()) thread_.join();
}

Status Reporter::Submit(const Json& report) {
  auto dropped = outbox_->Append(report.dump(-1, ' ', false, Json::error_handler_t::replace));
  if (!dropped) return Fail(dropped.error());
  if (*dropped > 0) {
    GetLogger("report")->warn(
        "The report outbox is full: dropped the {} oldest report(s) (the next report delivered "
        "says how many)",
        *dropped);
  }
  {
    std::lock_guard lock(mutex_);
    pending_ = true;
  }
  wake_.notify_all();
  return {};
}

void Reporter::RetryNow() {
  {
    std::lock_guard lock(mutex_);
    retry_now_ = true;
  }
  wake_.notify_all();
}

ReporterStatus Reporter::Snapshot() const {
  ReporterStatus status;
  bool stopped = false;
  {
    std::lock_guard lock(mutex_);
    status = status_;
    stopped = stopping_;
    if (stopped) {
      status.state = "stopped";
    } else if (sending_) {
      status.state = "sending";
    } else if (next_attempt_) {
      status.state = "retrying";
      const auto wait =
          std::chrono::duration_cast<std::chrono::seconds>(*next_attempt_ - SteadyClock::now());
      status.next_attempt = NowUnixSeconds() + std::max<std::int64_t>(wait.count(), 0);
    } else {
      status.state = "idle";
    }
  }
  status.queued = outbox_->size();
  status.queued_bytes = outbox_->bytes();
  status.dropped = outbox_->dropped();
  return status;
}

void Reporter::LogProblems(const std::vector<Error>& problems) {
  for (const auto& problem : problems) {
    GetLogger("report")->warn("Report outbox: {}", problem.message());
  }
}

void Reporter::Run() {
  std::unique_lock lock(mutex_);
  while (!stopping_) {
    if (retry_now_) {
      retry_now_ = false;
      next_attempt_.reset();
    }
    if (next_attempt_ && SteadyClock::now() < *next_attempt_) {
      if (held_ && *next_attempt_ - SteadyClock::now() > options_.linger) {
        lock.unlock();
        Release();
        lock.lock();
        continue;
      }
      wake_.wait_until(lock, *next_attempt_, [this] { return stopping_ || retry_now_; });
      continue;
    }
    pending_ = false;  // before looking: a Submit from now on wakes the wait below
    lock.unlock();
    std::vector<Error> problems;
    // Every kMoveBackAfter failures in a row of the oldest report, one probe past it.
    bool probe = head_failures_ >= head_failures_probed_ + kMoveBackAfter;
    auto entry = outbox_->Front(problems, probe ? head_ : 0);
    if (probe && entry && !*entry) {  // nothing behind it
      probe = false;
      entry = outbox_->Front(problems);
    }
    LogProblems(problems);
    lock.lock();
    if (!entry) {
      lock.unlock();
      RetryLater(entry.error().message(), std::nullopt);
      lock.lock();
      continue;
    }
    if (!*entry) {
      next_attempt_.reset();
      const auto woken = [this] { return stopping_ || pending_ || retry_now_; };
      if (!held_) {
        wake_.wait(lock, woken);
      } else if (!wake_.wait_for(lock, options_.linger, woken)) {
        lock.unlock();
        Release();
        lock.lock();
      }
      continue;
    }
    sending_ = true;
    next_attempt_.reset();
    lock.unlock();
    const Delivery delivery = Deliver(**entry);
    if (probe) {
      head_failures_probed_ = head_failures_;
      if (delivery != Delivery::kRetry) {  // the endpoint answers: the oldest is what fails
        MoveBack(head_);
        head_failures_ = head_failures_probed_ = 0;
      }
    } else if (delivery == Delivery::kRetry) {
      if (head_ != (*entry)->sequence) head_failures_ = head_failures_probed_ = 0;
      head_ = (*entry)->sequence;
      ++head_failures_;
      // The probe goes at once, not after the backoff: an endpoint that comes back in
      // between would take it for a report that fails, and move the oldest back.
      if (head_failures_ >= head_failures_probed_ + kMoveBackAfter && outbox_->size() > 1) {
        std::lock_guard relock(mutex_);
        if (!stopping_) next_attempt_.reset();
      }
    } else {
      head_failures_ = head_failures_probed_ = 0;
    }
    lock.lock();
    sending_ = false;
  }
}

void Reporter::Release() {
  held_ = false;
  if (options_.release) options_.release();
}

std::chrono::milliseconds Reporter::NextBackoff() {
  // REQUIRES: mutex_ held.
  backoff_ = backoff_.count() == 0 ? options_.initial_backoff
                                   : std::min(backoff_ * 2, options_.max_backoff);
  thread_local std::mt19937_64 random{std::random_device{}()};
  std::uniform_real_distribution<double> cut(0.0, std::clamp(options_.jitter, 0.0, 1.0));
  return std::chrono::milliseconds(
      static_cast<std::int64_t>(static_cast<double>(backoff_.count()) * (1.0 - cut(random))));
}

void Reporter::RetryLater(const std::string& error,
                          std::optional<std::chrono::milliseconds> retry_after) {
  std::chrono::milliseconds delay{0};
  std::uint64_t failures = 0;
  {
    std::lock_guard lock(mutex_);
    delay = NextBackoff();
    if (retry_after) delay = std::max(delay, std::min(*retry_after, options_.max_retry_after));
    next_attempt_ = SteadyClock::now() + delay;
    failures = ++status_.failed_attempts;
    status_.last_error = error;
    status_.last_error_at = NowUnixSeconds();
  }
  auto log = GetLogger("report");
  // Once per outage: the first failure is a warning, the retries are debug.
  const auto level = failures == 1 ? spdlog::level::warn : spdlog::level::debug;
  log->log(level, "Failed to deliver a report: {}; retrying in {} ({} queued)", error,
           Seconds(delay), outbox_->size());
}

Reporter::Delivery Reporter::Deliver(const OutboxEntry& entry) {
  {
    std::lock_guard lock(mutex_);
    status_.last_attempt = NowUnixSeconds();
  }
  HttpRequest request;
  request.method = "POST";
  request.url = options_.url;
  request.ca_file = options_.ca_file;
  request.client_cert = options_.client_cert;
  request.client_key = options_.client_key;
  request.connect_timeout = options_.connect_timeout;
  request.timeout = options_.timeout;
  request.max_response_body = 64 << 10;
  request.cancel_fd = cancel_.get();
  request.headers.emplace_back("Content-Type", "application/json");
  if (!options_.token_file.empty()) {
    auto token = ReadLocalFile(options_.token_file, kMaxTokenSize);
    if (!token || Trimmed(*token).empty()) {
      outbox_->Release();
      RetryLater("read the report token '" + options_.token_file +
                     "': " + (token ? "the file is empty" : token.error().message()),
                 std::nullopt);
      return Delivery::kRetry;
    }
    request.headers.emplace_back("Authorization", "Bearer " + Trimmed(*token));
  }

  Json report = Json::parse(entry.body, nullptr, false);  // Front checked it is an object
  const std::uint64_t dropped = outbox_->dropped();
  report["dropped_reports"] = dropped;
  report["sent_at"] = FormatReportTime(NowUnixMs());
  request.body = report.dump(-1, ' ', false, Json::error_handler_t::replace);
  const std::string id = JsonFields(report).StringOr("id");
  // The receiver's de-duplication key without parsing the body: a report may arrive
  // twice (a crash or a stop between its delivery and our bookkeeping), always with its id.
  if (!id.empty()) request.headers.emplace_back("Idempotency-Key", id);
  if (options_.cloudevents) AddCloudEventHeaders(report, request.headers);

  held_ = true;
  auto response = options_.send(request);
  if (!response) {
    outbox_->Release();
    {
      std::lock_guard lock(mutex_);
      if (stopping_) return Delivery::kRetry;  // cut short by Stop: queued, not a failure
    }
    RetryLater(response.error().message(), std::nullopt);
    return Delivery::kRetry;
  }
  const int code = response->status;
  auto log = GetLogger("report");
  if (code >= 200 && code < 300) {
    // Delivered once the receiver said so, however the connection ended after that.
    if (!response->complete) log->debug("Report {} delivered; then {}", id, response->incomplete);
    // The drop counter first: a crash in between re-sends the report (same id), it never
    // reports the same drops twice.
    if (auto acknowledged = outbox_->AcknowledgeDropped(dropped); !acknowledged) {
      log->warn("{}, ignoring", acknowledged.error().message());
    }
    auto removed = outbox_->Remove(entry.sequence);
    std::uint64_t failures = 0;
    {
      std::lock_guard lock(mutex_);
      failures = status_.failed_attempts;
      status_.failed_attempts = 0;
      backoff_ = std::chrono::milliseconds(0);
      ++status_.delivered;
      status_.last_delivery = NowUnixSeconds();
    }
    if (failures > 0) {
      log->info("Reports reach '{}' again, after {} failed attempt(s)", shown_url_, failures);
    }
    if (!removed) {
      // Delivered but still queued: it would be sent again (the endpoint sees the same id).
      RetryLater(removed.error().message(), std::nullopt);
    }
    return Delivery::kDelivered;
  }
  const std::string answered = "'" + shown_url_ + "' answered HTTP " + std::to_string(code);
  if (code >= 400 && code < 500 && code != 408 && code != 429) {
    auto removed = outbox_->Remove(entry.sequence);
    const std::string body = Excerpt(response->body);
    const std::string error =
        answered + (body.empty() ? "" : " ('" + body + "')") + " to report " + id;
    {
      std::lock_guard lock(mutex_);
      ++status_.rejected;
      status_.failed_attempts = 0;
      backoff_ = std::chrono::milliseconds(0);
      status_.last_error = error;
      status_.last_error_at = NowUnixSeconds();
    }
    log->error("The report endpoint refused a report: {}; dropped it, not retried", error);
    if (!removed) RetryLater(removed.error().message(), std::nullopt);
    return Delivery::kRejected;
  }
  outbox_->Release();
  std::string error = answered;
  if (code >= 300 && code < 400) {
    error += " (a redirect to '" + UrlWithoutCredentials(response->Header("Location")) +
             "', not followed: fix report.url)";
  }
  RetryLater(error, ParseRetryAfter(response->Header("Retry-After")));
  return Delivery::kRetry;
}

void Reporter::MoveBack(std::uint64_t head) {
  auto moved = outbox_->MoveToBack(head);
  if (!moved) {
    GetLogger("report")->warn("Report outbox: {}", moved.error().message());
    return;
  }
  {
    std::lock_guard lock(mutex_);
    ++status_.moved_back;
  }
  GetLogger("report")->warn(
      "A report failed {} attempts in a row while the one behind it got an answer: moved it "
      "behind the others, to be retried in its turn",
      head_failures_);
}

}  // namespace tether
