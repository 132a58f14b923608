// Verifying git's SSH commit signatures in-process (libgcrypt), against an allowed_signers file.
//
// A commit signed with `git -c gpg.format=ssh commit -S` carries a "gpgsig" header holding an
// armored SSHSIG signature (OpenSSH PROTOCOL.sshsig) over the commit without that header, in
// namespace "git". The verdict follows `git verify-commit` with gpg.ssh.allowedSignersFile,
// which runs `ssh-keygen -Y find-principals` and then `ssh-keygen -Y verify`: the signing key
// must be listed in allowed_signers (ssh-keygen's ALLOWED SIGNERS format) on a line that
// permits the namespace and is valid at the time of verification.
//
// Supported keys: ssh-ed25519, ecdsa-sha2-nistp256 (also nistp384 and nistp521) and ssh-rsa
// with rsa-sha2-256 or rsa-sha2-512 signatures. Refused: ssh-rsa (SHA-1) signatures, DSA,
// security keys (sk-*) and certificates.
//
// Every input is treated as untrusted. Errors are values (never exceptions) whose code is a
// SignatureErrc, so callers can test `error.code() == SignatureErrc::kUnknownKey`.
//
// Threading: every function is thread-safe.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <system_error>
#include <type_traits>
#include <vector>

#include "common/error.hpp"

namespace tether {

// Why a signature was refused (or an allowed_signers file rejected), one code per cause.
enum class SignatureErrc {
  kUnsigned = 1,          // "commit is not signed": no gpgsig header
  kMalformedSignature,    // not a well-formed armored SSHSIG signature
  kUnsupportedAlgorithm,  // a key type, hash or signature algorithm this module refuses
                          // (e.g. ssh-rsa with SHA-1, DSA, certificates, security keys)
  kWrongNamespace,        // signed for another namespace, or the key's allowed_signers lines
                          // do not permit this one (namespaces="...")
  kUnknownKey,            // the signing key is on no allowed_signers line (for the principal)
  kKeyExpired,            // the key's lines all ended before `now` (valid-before)
  kKeyNotYetValid,        // the key's lines all start after `now` (valid-after)
  kBadSignature,          // the key is allowed but the signature does not verify
  kBadAllowedSigners,     // a malformed allowed_signers line ("file:line: message")
};

// The category of SignatureErrc; its name is "tether.signature".
[[nodiscard]] const std::error_category& SignatureCategory();
// For std::error_code's implicit conversion (found by argument-dependent lookup).
[[nodiscard]] std::error_code make_error_code(SignatureErrc errc);

// A commit split the way git splits it before verifying.
struct SignedCommit {
  std::string payload;    // the commit object without its signature headers: what was signed
  std::string signature;  // the armored signature, "-----BEGIN SSH SIGNATURE-----\n...\n"
};

// Splits `raw_commit`, a commit object as `git cat-file commit SHA` prints it, like git does
// (parse_buffer_signed_by_header): in the header part (up to the first empty line), the
// signature is the "gpgsig" header with its continuation lines (those starting with a space,
// that space removed); for a SHA-256 commit (64-hex-digit tree id) it is "gpgsig-sha256".
// Every gpgsig* header and its continuation lines are left out of the payload; the message is
// kept byte for byte. Fails with kUnsigned when there is no such header.
[[nodiscard]] Result<SignedCommit> SplitSignedCommit(std::string_view raw_commit);

// One line of an allowed_signers file:
//   principals [options] keytype base64-key [comment]
struct AllowedSigner {
  std::string file;  // as given to ParseAllowedSigners, for messages
  int line = 0;      // 1-based
  // Comma-separated patterns as written (ssh's match_pattern_list: '*' and '?' wildcards,
  // a leading '!' negates), e.g. "ops@example.com,*@admins.example.com".
  std::string principals;
  // namespaces="...": comma-separated patterns; nullopt when the option is absent (any
  // namespace).
  std::optional<std::string> namespaces;
  // valid-after / valid-before as Unix seconds; the key is valid for
  // valid_after <= now <= valid_before (bounds inclusive, like ssh-keygen).
  std::optional<std::int64_t> valid_after;
  std::optional<std::int64_t> valid_before;
  std::string key_type;     // "ssh-ed25519", "ecdsa-sha2-nistp256", "ssh-rsa", ...
  std::string key_blob;     // the public key in canonical SSH wire encoding
  std::string fingerprint;  // "SHA256:..." as `ssh-keygen -l` prints it
};

// Parses an allowed_signers file (see `man ssh-keygen`, ALLOWED SIGNERS) named `file` in
// messages. Blank lines and lines starting with '#' (after blanks) are skipped. Options:
// namespaces="...", valid-after="..." and valid-before="..." with a time
// YYYYMMDD[HHMM[SS]] in local time, or in UTC with a "Z" or "UTC" suffix (as ssh-keygen);
// option names are case-insensitive and values must be quoted, as in ssh-keygen.
// cert-authority lines, key types other than the supported ones and anything ssh-keygen would
// refuse are errors. On failure: kBadAllowedSigners, "FILE:LINE: message" for the first bad
// line. An empty file gives an empty list (which trusts nobody).
[[nodiscard]] Result<std::vector<AllowedSigner>> ParseAllowedSigners(std::string_view text,
                                                                     const std::string& file);

// What a valid signature was made with, and who allowed it.
struct SignatureVerdict {
  // The allowed_signers principal the verdict is for: `required_principal` when one was given;
  // otherwise the first principal (first pattern without '!') of the first line that accepts
  // the signature, which is what `git verify-commit` reports (it runs
  // `ssh-keygen -Y find-principals` and takes the first principal of the first matching line).
  std::string principal;
  std::string key_type;             // "ssh-ed25519", ...
  std::string signature_algorithm;  // "ssh-ed25519", "rsa-sha2-512", ...
  std::string fingerprint;          // "SHA256:..."
  std::string file;                 // the allowed_signers line that accepted it
  int line = 0;
};

// Verifies `armored_signature` (an armored SSHSIG, "-----BEGIN SSH SIGNATURE-----") over
// `payload` for `namespace_name` ("git" for commits) at time `now_unix`, against `signers`.
// With a non-empty `required_principal`, only lines whose principals match it count (as
// `ssh-keygen -Y verify -I`); with an empty one, any line does (as git).
//
// A line accepts the signature when its key equals the signing key, its namespaces (if any)
// match `namespace_name` and valid_after <= now_unix <= valid_before. Checks, in order, each
// with its code: kMalformedSignature (armor, base64, SSHSIG structure, key encoding, trailing
// data), kUnsupportedAlgorithm (key type, hash other than sha256/sha512, ssh-rsa SHA-1
// signature), kWrongNamespace (the signature's namespace is not `namespace_name`),
// kUnknownKey (no line has the key), kBadSignature (the signature does not verify),
// then, when lines have the key but none accepts it, the reason of the first such line:
// kWrongNamespace, kKeyNotYetValid or kKeyExpired. Messages name the key by fingerprint, e.g.
// "signature by SHA256:... (ssh-ed25519) does not verify".
[[nodiscard]] Result<SignatureVerdict> VerifySshSignature(std::string_view payload,
                                                          std::string_view armored_signature,
                                                          const std::vector<AllowedSigner>& signers,
                                                          std::string_view namespace_name,
                                                          std::int64_t now_unix,
                                                          std::string_view required_principal = {});

// SplitSignedCommit then VerifySshSignature in namespace "git": the check behind
// trust.require_signed. `raw_commit` is as `git cat-file commit SHA` prints it.
[[nodiscard]] Result<SignatureVerdict> VerifySignedCommit(std::string_view raw_commit,
                                                          const std::vector<AllowedSigner>& signers,
                                                          std::int64_t now_unix);

}  // namespace tether

template <>
struct std::is_error_code_enum<tether::SignatureErrc> : std::true_type {};
