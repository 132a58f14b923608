#include "agent/git/commit_check.hpp"

#include "common/filesystem.hpp"

namespace tether {

Result<TrustPolicy> LoadTrustPolicy(const TrustConfig& trust) {
  TrustPolicy policy;
  policy.require_signed = trust.require_signed;
  policy.allow_rewind = trust.allow_rewind;
  if (trust.allowed_signers) {
    auto text = ReadLocalFile(*trust.allowed_signers, 1 << 20);
    if (!text) return Fail(text.error().WithContext("trust.allowed_signers"));
    auto signers = ParseAllowedSigners(*text, *trust.allowed_signers);
    if (!signers) return Fail(signers.error());
    policy.signers = std::move(*signers);
  }
  if (policy.require_signed && policy.signers.empty()) {
    return Fail(std::errc::invalid_argument,
                "trust.require_signed is true but trust.allowed_signers lists no key");
  }
  return policy;
}

Result<AcceptedCommit> CheckCommit(GitSource& source, const std::string& commit,
                                   const std::optional<std::string>& last_applied,
                                   const TrustPolicy& policy, std::int64_t now_unix) {
  const std::string context = "refusing commit " + commit.substr(0, 12);
  AcceptedCommit accepted{commit, std::nullopt};
  auto raw = source.ReadCommit(commit);
  if (!raw) return Fail(raw.error().WithContext(context));
  if (policy.require_signed || !policy.signers.empty()) {
    auto verdict = VerifySignedCommit(*raw, policy.signers, now_unix);
    if (verdict) {
      accepted.signer = std::move(*verdict);
    } else if (policy.require_signed) {
      return Fail(verdict.error().WithContext(context));
    }
  }
  if (last_applied && !policy.allow_rewind && *last_applied != commit) {
    auto descends = source.Descends(commit, *last_applied);
    if (!descends) return Fail(descends.error().WithContext(context));
    if (!*descends) {
      return Fail(std::errc::operation_not_permitted,
                  context + ": it does not descend from the applied commit " +
                      last_applied->substr(0, 12) +
                      " (history was rewound, e.g. by a force-push); set trust.allow_rewind to "
                      "accept it");
    }
  }
  return accepted;
}

}  // namespace tether
