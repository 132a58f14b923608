#include "agent/daemon/change_signal.hpp"

#include <ctime>

#include "common/encoding.hpp"
#include "common/sha256.hpp"
#include "version.hpp"

namespace tether {

namespace {

// True when both are https:// URLs of the same host and port (as for Git's token).
bool SameHttpsServer(const std::string& a, const std::string& b) {
  const auto first = ParseHttpUrl(a);
  const auto second = ParseHttpUrl(b);
  return first && second && first->tls && second->tls && first->host == second->host &&
         first->port == second->port;
}

// An HTTP date (IMF-fixdate, "Fri, 04 Dec 2026 05:00:00 GMT") as unix seconds.
std::optional<std::int64_t> ParseHttpDate(const std::string& text) {
  std::tm tm{};
  const char* end = strptime(text.c_str(), "%a, %d %b %Y %H:%M:%S GMT", &tm);
  if (end == nullptr || *end != '\0') return std::nullopt;
  return static_cast<std::int64_t>(timegm(&tm));
}

// A validator of a file changed in the second the answer was made (or the one before) may
// not change with the next change: nginx's ETag and every Last-Modified count seconds.
// Such an answer is compared by its body next time, not by its validators.
bool ValidatorsSettled(const HttpResponse& response) {
  const auto modified = ParseHttpDate(response.Header("Last-Modified"));
  const auto date = ParseHttpDate(response.Header("Date"));
  if (!modified) return true;  // an ETag alone (a forge's, from the content)
  if (!date) return false;     // cannot tell: compare bodies
  return *date - *modified >= 2;
}

}  // namespace

const char* SignalAnswerName(SignalAnswer answer) {
  switch (answer) {
    case SignalAnswer::kUnchanged:
      return "unchanged";
    case SignalAnswer::kChanged:
      return "changed";
    case SignalAnswer::kError:
      return "error";
  }
  return "error";
}

HttpRequest ChangeSignal::Request(const SourceConfig& source, const std::string& token) const {
  HttpRequest request;
  request.method = "GET";
  request.url = source.poll_url.value_or("");
  request.headers = {{"User-Agent", std::string("tetherd/") + TETHER_VERSION},
                     {"Accept", "application/vnd.github.sha, */*;q=0.1"}};
  if (confirmed_) {
    if (!confirmed_->etag.empty()) request.headers.emplace_back("If-None-Match", confirmed_->etag);
    if (!confirmed_->last_modified.empty()) {
      request.headers.emplace_back("If-Modified-Since", confirmed_->last_modified);
    }
  }
  if (!token.empty() && SameHttpsServer(request.url, source.url)) {
    request.headers.emplace_back("Authorization", token.find(':') != std::string::npos
                                                      ? "Basic " + Base64Encode(token)
                                                      : "Bearer " + token);
  }
  if (source.ca_file) request.ca_file = *source.ca_file;
  request.connect_timeout = std::min(source.timeout, request.connect_timeout);
  request.timeout = source.timeout;
  request.max_response_body = 1 << 20;
  return request;
}

SignalAnswer ChangeSignal::Read(const Result<HttpResponse>& response, std::uint64_t cycle) {
  if (!response) return SignalAnswer::kError;
  if (response->status == 304) {
    // Only an answer to validators we sent means "as before".
    const bool asked =
        confirmed_ && (!confirmed_->etag.empty() || !confirmed_->last_modified.empty());
    return asked ? SignalAnswer::kUnchanged : SignalAnswer::kError;
  }
  // A body cut short says nothing about the repo.
  if (response->status != 200 || !response->complete) return SignalAnswer::kError;
  Seen seen{response->Header("ETag"), response->Header("Last-Modified"), Sha256Hex(response->body)};
  if (!ValidatorsSettled(*response)) {
    seen.etag.clear();
    seen.last_modified.clear();
  }
  if (confirmed_ && !seen.body_digest.empty() && seen.body_digest == confirmed_->body_digest) {
    confirmed_ = std::move(seen);  // the same content; a server without validators
    return SignalAnswer::kUnchanged;
  }
  pending_ = std::move(seen);
  pending_after_ = cycle;
  return SignalAnswer::kChanged;
}

void ChangeSignal::CycleEnded(std::uint64_t cycle, bool ok) {
  if (!pending_ || cycle <= pending_after_) return;
  if (ok) confirmed_ = std::move(pending_);
  pending_.reset();
}

void ChangeSignal::Reset() {
  confirmed_.reset();
  pending_.reset();
  pending_after_ = 0;
}

}  // namespace tether
