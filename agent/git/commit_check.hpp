// Trust: whether a fetched commit may be applied (DESIGN.md section 4, "Verify").
//
//  - With trust.require_signed, the commit must carry a valid SSH signature from a key in
//    trust.allowed_signers, valid now (agent/trust/ssh_signature.hpp says how).
//  - Unless trust.allow_rewind, it must be the last applied commit or descend from it: a
//    force-push back to older history (a rollback attack, or a mistake) is refused.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "agent/config/agent_config.hpp"
#include "agent/git/git_source.hpp"
#include "agent/trust/ssh_signature.hpp"
#include "common/error.hpp"

namespace tether {

struct TrustPolicy {
  bool require_signed = true;
  std::vector<AllowedSigner> signers;
  bool allow_rewind = false;
};

// Reads trust.allowed_signers (when set) into a policy.
[[nodiscard]] Result<TrustPolicy> LoadTrustPolicy(const TrustConfig& trust);

struct AcceptedCommit {
  std::string commit;
  std::optional<SignatureVerdict> signer;  // set when the commit's signature verified
};

// Accepts `commit` or refuses it with an error whose message starts "refusing commit
// <short id>: " and whose code says why: a SignatureErrc, or
// std::errc::operation_not_permitted for a rewind.
[[nodiscard]] Result<AcceptedCommit> CheckCommit(GitSource& source, const std::string& commit,
                                                 const std::optional<std::string>& last_applied,
                                                 const TrustPolicy& policy, std::int64_t now_unix);

}  // namespace tether
