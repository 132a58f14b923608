#include "agent/daemon/change_signal.hpp"

#include "common/encoding.hpp"
#include "common/hmac.hpp"
#include "version.hpp"

namespace tether {

namespace {

// "HOST[:PORT]" of an http(s):// or ssh:// URL, or "".
std::string Authority(const std::string& url) {
  const auto scheme = url.find("://");
  if (scheme == std::string::npos) return "";
  const std::string rest = url.substr(scheme + 3);
  std::string authority = rest.substr(0, rest.find('/'));
  if (const auto at = authority.rfind('@'); at != std::string::npos) authority.erase(0, at + 1);
  return authority;
}

// The host alone (no port), to compare the two URLs' hosts.
std::string Host(const std::string& url) {
  std::string authority = Authority(url);
  if (!authority.empty() && authority.front() == '[') {
    return authority.substr(0, authority.find(']') + 1);
  }
  return authority.substr(0, authority.rfind(':'));
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
  if (!token.empty() && request.url.rfind("https://", 0) == 0 &&
      Host(request.url) == Host(source.url)) {
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
    // Only an answer to our validators means "as before".
    return confirmed_ ? SignalAnswer::kUnchanged : SignalAnswer::kError;
  }
  if (response->status != 200) return SignalAnswer::kError;
  Seen seen{response->Header("ETag"), response->Header("Last-Modified"),
            DigestSha256Hex(response->body)};
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
