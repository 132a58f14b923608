// HttpResponse's own code, apart from HttpFetch: a program that only reads responses
// (one fetched by another process) does not link the HTTP client, Beast or OpenSSL.
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

}  // namespace tether
