// HttpResponse's own code and URL parsing, apart from HttpFetch: a program that only reads
// responses (one fetched by another process), or speaks plain HTTP itself, does not link
// the HTTP client or OpenSSL.
#include <strings.h>

#include "common/http_client.hpp"

namespace tether {

std::string HttpResponse::Header(std::string_view name) const {
  for (const auto& [key, value] : headers) {
    if (key.size() == name.size() && strncasecmp(key.data(), name.data(), key.size()) == 0) {
      return value;
    }
  }
  return "";
}

Result<HttpUrl> ParseHttpUrl(const std::string& url) {
  HttpUrl parsed;
  std::string_view rest = url;
  if (rest.rfind("https://", 0) == 0) {
    parsed.tls = true;
    rest.remove_prefix(8);
  } else if (rest.rfind("http://", 0) == 0) {
    rest.remove_prefix(7);
  } else {
    return Fail(std::errc::invalid_argument, "'" + url + "' is not an http:// or https:// URL");
  }
  const auto slash = rest.find('/');
  std::string_view authority = rest.substr(0, slash);
  parsed.target = slash == std::string_view::npos ? "/" : std::string(rest.substr(slash));
  if (authority.empty() || authority.find('@') != std::string_view::npos) {
    return Fail(std::errc::invalid_argument, "'" + url + "' has no host (or has credentials)");
  }
  std::string_view host = authority;
  std::string_view port = parsed.tls ? "443" : "80";
  if (authority.front() == '[') {  // [::1]:8080
    const auto close = authority.find(']');
    if (close == std::string_view::npos) {
      return Fail(std::errc::invalid_argument, "'" + url + "' has a malformed host");
    }
    host = authority.substr(1, close - 1);
    if (close + 1 < authority.size() && authority[close + 1] == ':') {
      port = authority.substr(close + 2);
    }
  } else if (const auto colon = authority.rfind(':'); colon != std::string_view::npos) {
    host = authority.substr(0, colon);
    port = authority.substr(colon + 1);
  }
  if (host.empty() || port.empty() ||
      port.find_first_not_of("0123456789") != std::string_view::npos) {
    return Fail(std::errc::invalid_argument, "'" + url + "' has a malformed host or port");
  }
  parsed.host = host;
  parsed.port = port;
  const auto query = url.find('?');
  parsed.shown = query == std::string::npos ? url : url.substr(0, query);
  return parsed;
}

}  // namespace tether
