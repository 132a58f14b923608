// Host facts: what templates and the profile path may say about the host.
#pragma once

#include <string>
#include <string_view>

#include "common/error.hpp"

namespace tether {

struct HostFacts {
  std::string hostname;    // short host name
  std::string fqdn;        // fully qualified name (the host name when none is known)
  std::string machine_id;  // /etc/machine-id, 32 hex digits
  std::string os_id;       // ID= of os-release, e.g. "debian"
  std::string os_version;  // VERSION_ID= of os-release, e.g. "12"
  std::string arch;        // uname machine, e.g. "x86_64"
};

// Reads the facts of the running host; files (machine-id, os-release) are read below
// `root` ("/" normally). Missing files leave their facts empty. The FQDN is the host
// name's own when it has a dot, and empty otherwise: the resolver is not asked (that may
// be a DNS query, and its timeout) until the caller does, with ResolveFqdn.
[[nodiscard]] HostFacts LocalHostFacts(const std::string& root = "/");

// The canonical name the resolver gives the host name `hostname`; `hostname` itself when
// it gives none.
[[nodiscard]] std::string ResolveFqdn(const std::string& hostname);

// Facts for rendering another host's profile (tetherctl validate and render): hostname and
// fqdn are `hostname`, machine_id is 32 zeros, OS and arch are the running host's.
[[nodiscard]] HostFacts FactsForHost(const std::string& hostname);

// Applies "name=value" (hostname, fqdn, machine_id, os_id, os_version, arch).
[[nodiscard]] Status SetFact(HostFacts& facts, std::string_view assignment);

// The value of fact `name`, or nullptr when there is no such fact.
[[nodiscard]] const std::string* FindFact(const HostFacts& facts, std::string_view name);

// Expands {hostname}, {fqdn} and {machine_id} in a source.profile pattern.
[[nodiscard]] std::string ExpandProfilePath(std::string_view pattern, const HostFacts& facts);

}  // namespace tether
