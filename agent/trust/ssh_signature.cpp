#include "agent/trust/ssh_signature.hpp"

#include <ctime>
#include <string>
#include <string_view>

#include "agent/trust/ssh_key.hpp"

namespace tether {
namespace {

class SignatureCategoryImpl final : public std::error_category {
 public:
  const char* name() const noexcept override { return "tether.signature"; }
  std::string message(int value) const override {
    switch (static_cast<SignatureErrc>(value)) {
      case SignatureErrc::kUnsigned:
        return "commit is not signed";
      case SignatureErrc::kMalformedSignature:
        return "malformed signature";
      case SignatureErrc::kUnsupportedAlgorithm:
        return "unsupported signature algorithm";
      case SignatureErrc::kWrongNamespace:
        return "signature namespace not allowed";
      case SignatureErrc::kUnknownKey:
        return "signing key is not in allowed_signers";
      case SignatureErrc::kKeyExpired:
        return "signing key has expired";
      case SignatureErrc::kKeyNotYetValid:
        return "signing key is not yet valid";
      case SignatureErrc::kBadSignature:
        return "signature does not verify";
      case SignatureErrc::kBadAllowedSigners:
        return "malformed allowed_signers";
    }
    return "unknown signature error " + std::to_string(value);
  }
};

constexpr std::string_view kMagic = "SSHSIG";
constexpr std::uint32_t kVersion = 1;
constexpr std::string_view kBegin = "-----BEGIN SSH SIGNATURE-----";
constexpr std::string_view kEnd = "-----END SSH SIGNATURE-----";

tl::unexpected<Error> Refuse(SignatureErrc errc, std::string message) {
  return Fail(Error(errc, std::move(message)));
}

tl::unexpected<Error> Malformed(std::string_view what) {
  return Refuse(SignatureErrc::kMalformedSignature, "malformed signature: " + std::string(what));
}

bool IsSpace(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }

std::string_view Trim(std::string_view text) {
  while (!text.empty() && IsSpace(text.front())) text.remove_prefix(1);
  while (!text.empty() && IsSpace(text.back())) text.remove_suffix(1);
  return text;
}

// The SSHSIG blob inside the armor (sshsig_dearmor, tolerating CRLF and surrounding blanks).
Result<std::string> Dearmor(std::string_view armored) {
  std::string_view text = Trim(armored);
  if (!text.starts_with(kBegin)) return Malformed("missing '" + std::string(kBegin) + "'");
  text.remove_prefix(kBegin.size());
  if (text.starts_with("\r\n")) {
    text.remove_prefix(2);
  } else if (text.starts_with('\n')) {
    text.remove_prefix(1);
  } else {
    return Malformed("no line break after '" + std::string(kBegin) + "'");
  }
  if (!text.ends_with(kEnd)) return Malformed("missing '" + std::string(kEnd) + "' at the end");
  text.remove_suffix(kEnd.size());
  if (!text.ends_with('\n')) return Malformed("'" + std::string(kEnd) + "' not on its own line");
  if (text.find(kEnd) != std::string_view::npos || text.find(kBegin) != std::string_view::npos) {
    return Malformed("more than one armor block");
  }
  std::optional<std::string> blob = ssh::Base64Decode(text);
  if (!blob) return Malformed("invalid base64");
  if (blob->empty()) return Malformed("empty");
  return std::move(*blob);
}

// An SSHSIG blob, its fields pointing into the blob.
struct SshSig {
  std::string_view public_key;
  std::string_view sig_namespace;
  std::string_view hash_algorithm;
  std::string_view signature;
};

Result<SshSig> ParseBlob(std::string_view blob) {
  ssh::WireReader reader(blob);
  std::string_view magic, reserved;
  std::uint32_t version = 0;
  if (!reader.ReadBytes(kMagic.size(), magic) || magic != kMagic) {
    return Malformed("not an SSHSIG blob (no \"SSHSIG\" magic)");
  }
  if (!reader.ReadU32(version)) return Malformed("truncated");
  if (version != kVersion)
    return Malformed("unsupported SSHSIG version " + std::to_string(version));
  SshSig sig;
  if (!reader.ReadString(sig.public_key) || !reader.ReadString(sig.sig_namespace) ||
      !reader.ReadString(reserved) || !reader.ReadString(sig.hash_algorithm) ||
      !reader.ReadString(sig.signature)) {
    return Malformed("truncated");
  }
  if (!reader.empty()) return Malformed("trailing data after the signature");
  if (!reserved.empty()) return Malformed("non-empty reserved field");
  return sig;
}

// The data an SSHSIG signature covers (PROTOCOL.sshsig).
std::string SignedData(std::string_view sig_namespace, std::string_view hash_algorithm,
                       std::string_view message_hash) {
  std::string data(kMagic);
  ssh::PutString(data, sig_namespace);
  ssh::PutString(data, "");  // reserved
  ssh::PutString(data, hash_algorithm);
  ssh::PutString(data, message_hash);
  return data;
}

std::string FormatUtc(std::int64_t unix_seconds) {
  const auto t = static_cast<std::time_t>(unix_seconds);
  std::tm tm{};
  char text[64] = "";
  if (gmtime_r(&t, &tm) == nullptr || std::strftime(text, sizeof(text), "%FT%TZ", &tm) == 0) {
    return std::to_string(unix_seconds);
  }
  return text;
}

// The principal git would report for a line: its first pattern that is not negated.
std::string FirstPrincipal(std::string_view principals) {
  std::string_view rest = principals;
  while (!rest.empty()) {
    const std::size_t comma = rest.find(',');
    const std::string_view pattern = rest.substr(0, comma);
    if (!pattern.starts_with('!')) return std::string(pattern);
    rest = comma == std::string_view::npos ? std::string_view() : rest.substr(comma + 1);
  }
  return std::string(principals);
}

// Why `signer`, whose key made the signature, does not accept it; nullopt when it does.
std::optional<Error> LineRefusal(const AllowedSigner& signer, std::string_view namespace_name,
                                 std::int64_t now_unix) {
  const std::string whose = "key " + signer.fingerprint + " of '" + signer.principals + "'";
  const std::string where = signer.file + ":" + std::to_string(signer.line);
  if (signer.namespaces && ssh::MatchPatternList(namespace_name, *signer.namespaces) != 1) {
    return Error(SignatureErrc::kWrongNamespace,
                 whose + " is not allowed for namespace '" + std::string(namespace_name) +
                     "' (namespaces=\"" + *signer.namespaces + "\" in " + where + ")");
  }
  if (signer.valid_after && now_unix < *signer.valid_after) {
    return Error(SignatureErrc::kKeyNotYetValid, whose + " is not valid before " +
                                                     FormatUtc(*signer.valid_after) +
                                                     " (valid-after in " + where + ")");
  }
  if (signer.valid_before && now_unix > *signer.valid_before) {
    return Error(SignatureErrc::kKeyExpired, whose + " expired on " +
                                                 FormatUtc(*signer.valid_before) +
                                                 " (valid-before in " + where + ")");
  }
  return std::nullopt;
}

}  // namespace

const std::error_category& SignatureCategory() {
  static const SignatureCategoryImpl category;
  return category;
}

std::error_code make_error_code(SignatureErrc errc) {
  return {static_cast<int>(errc), SignatureCategory()};
}

Result<SignedCommit> SplitSignedCommit(std::string_view raw_commit) {
  // The signature header of the commit's own object format; the other one (a signature of the
  // commit converted to the other hash) is dropped from the payload like git does.
  std::string_view header = "gpgsig";
  if (raw_commit.starts_with("tree ")) {
    const std::size_t end = raw_commit.find('\n');
    if (end != std::string_view::npos && end - 5 == 64) header = "gpgsig-sha256";
  }
  SignedCommit split;
  bool in_signature = false;
  bool saw_signature = false;
  bool other_signature = false;
  std::size_t position = 0;
  while (position < raw_commit.size()) {
    const std::size_t newline = raw_commit.find('\n', position);
    std::size_t next = newline == std::string_view::npos ? raw_commit.size() : newline + 1;
    std::string_view line = raw_commit.substr(position, next - position);
    std::optional<std::string_view> signature_part;
    if (in_signature && line.starts_with(' ')) {
      signature_part = line.substr(1);
    } else if (line.starts_with(header) && line.size() > header.size() &&
               line[header.size()] == ' ') {
      signature_part = line.substr(header.size() + 1);
      other_signature = false;
    } else if (line.starts_with("gpgsig")) {
      other_signature = true;
    } else if (other_signature && !line.starts_with(' ')) {
      other_signature = false;
    }
    if (signature_part) {
      split.signature.append(*signature_part);
      saw_signature = true;
      in_signature = true;
    } else {
      if (line.starts_with('\n')) {  // end of the headers: the message is kept whole
        next = raw_commit.size();
        line = raw_commit.substr(position);
      }
      if (!other_signature) split.payload.append(line);
      in_signature = false;
    }
    position = next;
  }
  if (!saw_signature) return Refuse(SignatureErrc::kUnsigned, "commit is not signed");
  return split;
}

Result<SignatureVerdict> VerifySshSignature(std::string_view payload,
                                            std::string_view armored_signature,
                                            const std::vector<AllowedSigner>& signers,
                                            std::string_view namespace_name, std::int64_t now_unix,
                                            std::string_view required_principal) {
  auto blob = Dearmor(armored_signature);
  if (!blob) return Fail(blob.error());
  auto sig = ParseBlob(*blob);
  if (!sig) return Fail(sig.error());
  auto key = ssh::ParsePublicKey(sig->public_key);
  if (!key) {
    if (key.error().code() == SignatureErrc::kMalformedSignature) {
      return Malformed(key.error().message());
    }
    return Fail(key.error().WithContext("signature key"));
  }
  const std::string who = ssh::Fingerprint(key->blob) + " (" + key->type + ")";
  std::optional<std::string> message_hash = ssh::HashByName(sig->hash_algorithm, payload);
  if (!message_hash) {
    return Refuse(SignatureErrc::kUnsupportedAlgorithm,
                  "signature by " + who + " uses hash algorithm " +
                      ssh::QuoteUntrusted(sig->hash_algorithm) + " (supported: sha256, sha512)");
  }
  auto raw_signature = ssh::DecodeSignature(*key, sig->signature);
  if (!raw_signature) {
    if (raw_signature.error().code() == SignatureErrc::kMalformedSignature) {
      return Malformed(raw_signature.error().message());
    }
    return Fail(raw_signature.error().WithContext("signature by " + who));
  }
  if (sig->sig_namespace != namespace_name) {
    return Refuse(SignatureErrc::kWrongNamespace, "signature by " + who + " is for namespace " +
                                                      ssh::QuoteUntrusted(sig->sig_namespace) +
                                                      ", not '" + std::string(namespace_name) +
                                                      "'");
  }

  std::vector<const AllowedSigner*> candidates;
  for (const AllowedSigner& signer : signers) {
    if (signer.key_blob != key->blob) continue;
    if (!required_principal.empty() &&
        ssh::MatchPatternList(required_principal, signer.principals) != 1) {
      continue;
    }
    candidates.push_back(&signer);
  }
  if (candidates.empty()) {
    std::string message = "key " + who + " is not in allowed_signers";
    if (!required_principal.empty()) {
      message += " for principal '" + std::string(required_principal) + "'";
    }
    return Refuse(SignatureErrc::kUnknownKey, std::move(message));
  }

  const std::string signed_data = SignedData(namespace_name, sig->hash_algorithm, *message_hash);
  if (!ssh::VerifyRaw(*key, *raw_signature, signed_data)) {
    return Refuse(SignatureErrc::kBadSignature, "signature by " + who + " does not verify");
  }

  std::optional<Error> first_refusal;
  for (const AllowedSigner* signer : candidates) {
    std::optional<Error> refusal = LineRefusal(*signer, namespace_name, now_unix);
    if (!refusal) {
      SignatureVerdict verdict;
      verdict.principal = required_principal.empty() ? FirstPrincipal(signer->principals)
                                                     : std::string(required_principal);
      verdict.key_type = key->type;
      verdict.signature_algorithm = raw_signature->algorithm;
      verdict.fingerprint = signer->fingerprint;
      verdict.file = signer->file;
      verdict.line = signer->line;
      return verdict;
    }
    if (!first_refusal) first_refusal = std::move(refusal);
  }
  return Fail(std::move(*first_refusal));
}

Result<SignatureVerdict> VerifySignedCommit(std::string_view raw_commit,
                                            const std::vector<AllowedSigner>& signers,
                                            std::int64_t now_unix) {
  auto split = SplitSignedCommit(raw_commit);
  if (!split) return Fail(split.error());
  return VerifySshSignature(split->payload, split->signature, signers, "git", now_unix);
}

}  // namespace tether
