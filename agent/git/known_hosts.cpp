#include "agent/git/known_hosts.hpp"

#include <openssl/evp.h>
#include <openssl/hmac.h>

#include <vector>

#include "common/encoding.hpp"

namespace tether {

namespace {

std::vector<std::string_view> SplitFields(std::string_view line) {
  std::vector<std::string_view> fields;
  std::size_t pos = 0;
  while (pos < line.size()) {
    pos = line.find_first_not_of(" \t", pos);
    if (pos == std::string_view::npos) break;
    const std::size_t end = std::min(line.find_first_of(" \t", pos), line.size());
    fields.push_back(line.substr(pos, end - pos));
    pos = end;
  }
  return fields;
}

bool Glob(std::string_view pattern, std::string_view text) {
  if (pattern.empty()) return text.empty();
  if (pattern.front() == '*') {
    for (std::size_t i = 0; i <= text.size(); ++i) {
      if (Glob(pattern.substr(1), text.substr(i))) return true;
    }
    return false;
  }
  if (text.empty()) return false;
  if (pattern.front() != '?' && pattern.front() != text.front()) return false;
  return Glob(pattern.substr(1), text.substr(1));
}

// |1|base64(salt)|base64(HMAC-SHA1(salt, name))
bool HashedMatch(std::string_view pattern, std::string_view name) {
  if (pattern.substr(0, 3) != "|1|") return false;
  const std::string_view rest = pattern.substr(3);
  const auto bar = rest.find('|');
  if (bar == std::string_view::npos) return false;
  auto salt = Base64Decode(rest.substr(0, bar));
  auto hash = Base64Decode(rest.substr(bar + 1));
  if (!salt || !hash) return false;
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int length = 0;
  if (HMAC(EVP_sha1(), salt->data(), static_cast<int>(salt->size()),
           reinterpret_cast<const unsigned char*>(name.data()), name.size(), digest,
           &length) == nullptr) {
    return false;
  }
  return std::string_view(reinterpret_cast<const char*>(digest), length) == *hash;
}

bool HostMatches(std::string_view patterns, std::string_view name) {
  bool matched = false;
  std::size_t pos = 0;
  while (pos <= patterns.size()) {
    const std::size_t end = std::min(patterns.find(',', pos), patterns.size());
    std::string_view pattern = patterns.substr(pos, end - pos);
    pos = end + 1;
    const bool negated = !pattern.empty() && pattern.front() == '!';
    if (negated) pattern.remove_prefix(1);
    if (HashedMatch(pattern, name) || Glob(pattern, name)) {
      if (negated) return false;
      matched = true;
    }
  }
  return matched;
}

}  // namespace

HostKeyMatch MatchKnownHost(std::string_view known_hosts, std::string_view host, int port,
                            std::string_view key_blob) {
  const std::string name = port == 22 || port <= 0
                               ? std::string(host)
                               : "[" + std::string(host) + "]:" + std::to_string(port);
  bool host_known = false;
  bool trusted = false;
  std::size_t pos = 0;
  while (pos < known_hosts.size()) {
    const std::size_t end = std::min(known_hosts.find('\n', pos), known_hosts.size());
    const std::string_view line = known_hosts.substr(pos, end - pos);
    pos = end + 1;
    auto fields = SplitFields(line);
    if (fields.empty() || fields.front().front() == '#') continue;
    bool revoked = false;
    if (fields.front().front() == '@') {
      if (fields.front() == "@revoked") {
        revoked = true;
      } else {
        continue;  // @cert-authority: host certificates are not supported
      }
      fields.erase(fields.begin());
    }
    if (fields.size() < 3 || !HostMatches(fields[0], name)) continue;
    auto blob = Base64Decode(fields[2]);
    const bool same_key = blob && *blob == key_blob;
    if (revoked) {
      if (same_key) return HostKeyMatch::kRevoked;
      continue;
    }
    host_known = true;
    trusted = trusted || same_key;
  }
  if (trusted) return HostKeyMatch::kTrusted;
  return host_known ? HostKeyMatch::kMismatch : HostKeyMatch::kUnknown;
}

}  // namespace tether
