// Internal to agent/trust: SSH wire encoding (RFC 4251), SSH public keys and the raw signature
// check with libgcrypt. Everything here parses untrusted bytes: every length is bounds-checked
// and a failure is a value, never a crash or an exception.
//
// Threading: every function is thread-safe (no shared state; libgcrypt is, once started).
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "common/error.hpp"

namespace tether::ssh {

// Reads SSH wire encoding from a byte string it does not own. A failed read leaves the reader
// where it was.
class WireReader {
 public:
  explicit WireReader(std::string_view data) : data_(data) {}

  [[nodiscard]] bool ReadU32(std::uint32_t& value);
  // Exactly `count` bytes.
  [[nodiscard]] bool ReadBytes(std::size_t count, std::string_view& value);
  // "string": uint32 length, then that many bytes.
  [[nodiscard]] bool ReadString(std::string_view& value);
  // "mpint" that must be non-negative: `magnitude` is big-endian without leading zero bytes
  // (empty for zero). Fails on a negative value.
  [[nodiscard]] bool ReadPositiveMpint(std::string_view& magnitude);

  [[nodiscard]] bool empty() const { return data_.empty(); }
  [[nodiscard]] std::size_t remaining() const { return data_.size(); }

 private:
  std::string_view data_;
};

void PutU32(std::string& out, std::uint32_t value);
void PutString(std::string& out, std::string_view value);
// Puts a non-negative mpint given its big-endian magnitude (leading zeros are dropped).
void PutMpint(std::string& out, std::string_view magnitude);

// Standard base64 with padding, as in OpenSSH (b64_pton): whitespace between characters is
// skipped; anything else outside the alphabet, bad padding or non-zero pad bits fail.
[[nodiscard]] std::optional<std::string> Base64Decode(std::string_view text);

// "SHA256:" + unpadded base64 of SHA-256(blob), like `ssh-keygen -l`.
[[nodiscard]] std::string Fingerprint(std::string_view key_blob);

// A public key this module can verify signatures of.
struct PublicKey {
  std::string type;      // "ssh-ed25519", "ecdsa-sha2-nistp256/384/521" or "ssh-rsa"
  std::string blob;      // canonical wire encoding: equal keys have equal blobs
  std::string ed25519;   // ssh-ed25519: the 32-byte public key
  std::string ec_point;  // ecdsa: the uncompressed point (0x04 || x || y)
  std::string rsa_e;     // ssh-rsa: big-endian magnitudes without leading zeros
  std::string rsa_n;
};

// True for the key types ParsePublicKey accepts.
[[nodiscard]] bool IsSupportedKeyType(std::string_view type);
// True for other key type names OpenSSH knows (DSA, security keys, certificates).
[[nodiscard]] bool IsKnownUnsupportedKeyType(std::string_view type);
// "ssh-ed25519, ecdsa-sha2-nistp256, ..." for messages.
[[nodiscard]] std::string SupportedKeyTypes();

// Parses a public key blob ("string type, ..."), rejecting trailing data, invalid points and
// RSA moduli outside 1024..16384 bits. On failure the code is SignatureErrc::kUnsupported-
// Algorithm (a type not in IsSupportedKeyType) or kMalformedSignature, with a message such as
// "ssh-ed25519 key of 31 bytes" (no context in front).
[[nodiscard]] Result<PublicKey> ParsePublicKey(std::string_view blob);

// An SSH signature ("string algorithm, string blob") decoded for a given key.
struct RawSignature {
  std::string algorithm;  // "ssh-ed25519", "ecdsa-sha2-nistp256", "rsa-sha2-512", ...
  std::string bytes;      // raw: Ed25519's R || S, ECDSA's r || s each padded to the field's
                          // size, RSA's padded to the modulus's size (as OpenSSH does)
};

// Decodes `encoded` as a signature by `key`. Fails with kUnsupportedAlgorithm for ssh-rsa
// (RSA with SHA-1) and with kMalformedSignature for anything that does not fit the key.
[[nodiscard]] Result<RawSignature> DecodeSignature(const PublicKey& key, std::string_view encoded);

// True when `signature` is a valid signature of `data` by `key` (libgcrypt: Ed25519 pure,
// ECDSA with the curve's hash, RSA PKCS#1 v1.5 with SHA-256/512). False for a signature that
// does not verify, for keys that are not valid and for a malleable one (an Ed25519 S
// not below the group order, an RSA signature not below the modulus).
[[nodiscard]] bool VerifyRaw(const PublicKey& key, const RawSignature& signature,
                             std::string_view data);

// OpenSSH's match_pattern_list: `patterns` is a comma-separated list of patterns with '*'
// and '?' wildcards (case-sensitive), a leading '!' negates. Returns -1 when a negated pattern
// matches `name`, else 1 when a plain pattern matches, else 0.
[[nodiscard]] int MatchPatternList(std::string_view name, std::string_view patterns);

// `text` in single quotes when it is short printable ASCII, else "(N bytes)": for putting
// untrusted strings into messages.
[[nodiscard]] std::string QuoteUntrusted(std::string_view text);

// Digest of `data` with "sha256" or "sha512"; nullopt for another name.
[[nodiscard]] std::optional<std::string> HashByName(std::string_view algorithm,
                                                    std::string_view data);

}  // namespace tether::ssh
