// known_hosts matching for ssh:// fetches: libgit2 1.5 checks no host key by itself.
#pragma once

#include <string>
#include <string_view>

namespace tether {

enum class HostKeyMatch {
  kTrusted,   // a line for this host lists exactly this key
  kMismatch,  // lines for this host exist, none with this key (the key changed)
  kUnknown,   // no line for this host
  kRevoked,   // a @revoked line lists this key
};

// Looks up `key_blob` (the SSH wire-format public key) for `host` on `port` in the text
// of a known_hosts file: plain or hashed (|1|salt|hash) host patterns, '*' and '?'
// wildcards, "[host]:port" for ports other than 22, @revoked lines.
[[nodiscard]] HostKeyMatch MatchKnownHost(std::string_view known_hosts, std::string_view host,
                                          int port, std::string_view key_blob);

}  // namespace tether
