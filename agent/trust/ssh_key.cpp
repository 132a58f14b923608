#include "agent/trust/ssh_key.hpp"

#include <gcrypt.h>

#include <algorithm>
#include <array>
#include <cstdlib>
#include <memory>

#include "agent/trust/ssh_signature.hpp"
#include "common/encoding.hpp"
#include "common/gcrypt_start.hpp"
#include "common/sha256.hpp"

namespace tether::ssh {
namespace {

// Limits from OpenSSH: RSA moduli of 1024..16384 bits, so mpints of at most 2048 bytes.
constexpr std::size_t kMinRsaBits = 1024;
constexpr std::size_t kMaxRsaBits = 16384;

struct Curve {
  std::string_view key_type;
  std::string_view ssh_name;  // the curve name inside the key blob
  const char* gcrypt_curve;   // libgcrypt's name of the curve
  std::size_t field_size;     // bytes of a coordinate; a point is 1 + 2 * field_size
  int digest;                 // the hash ECDSA uses with this curve in SSH (RFC 5656)
};

constexpr std::array<Curve, 3> kCurves = {{
    {"ecdsa-sha2-nistp256", "nistp256", "NIST P-256", 32, GCRY_MD_SHA256},
    {"ecdsa-sha2-nistp384", "nistp384", "NIST P-384", 48, GCRY_MD_SHA384},
    {"ecdsa-sha2-nistp521", "nistp521", "NIST P-521", 66, GCRY_MD_SHA512},
}};

const Curve* FindCurve(std::string_view key_type) {
  for (const Curve& curve : kCurves) {
    if (curve.key_type == key_type) return &curve;
  }
  return nullptr;
}

Error Malformed(std::string message) {
  return Error(SignatureErrc::kMalformedSignature, std::move(message));
}
Error Unsupported(std::string message) {
  return Error(SignatureErrc::kUnsupportedAlgorithm, std::move(message));
}

std::string_view StripLeadingZeros(std::string_view magnitude) {
  while (!magnitude.empty() && magnitude.front() == '\0') magnitude.remove_prefix(1);
  return magnitude;
}

std::size_t BitLength(std::string_view magnitude) {
  magnitude = StripLeadingZeros(magnitude);
  if (magnitude.empty()) return 0;
  auto top = static_cast<unsigned char>(magnitude.front());
  std::size_t bits = (magnitude.size() - 1) * 8;
  while (top != 0) {
    ++bits;
    top >>= 1;
  }
  return bits;
}

// `magnitude` left-padded with zeros to `size` bytes (it is at most that long).
std::string Padded(std::string_view magnitude, std::size_t size) {
  std::string padded(size - magnitude.size(), '\0');
  padded.append(magnitude);
  return padded;
}

// libgcrypt owners.
struct SexpFree {
  void operator()(gcry_sexp_t sexp) const { gcry_sexp_release(sexp); }
};
struct MpiFree {
  void operator()(gcry_mpi_t mpi) const { gcry_mpi_release(mpi); }
};
struct PointFree {
  void operator()(gcry_mpi_point_t point) const { gcry_mpi_point_release(point); }
};
struct CtxFree {
  void operator()(gcry_ctx_t ctx) const { gcry_ctx_release(ctx); }
};
using SexpPtr = std::unique_ptr<gcry_sexp, SexpFree>;
using MpiPtr = std::unique_ptr<gcry_mpi, MpiFree>;
using PointPtr = std::unique_ptr<gcry_mpi_point, PointFree>;
using CtxPtr = std::unique_ptr<gcry_context, CtxFree>;

// An unsigned big-endian magnitude as an MPI; null only when out of memory.
MpiPtr ToMpi(std::string_view magnitude) {
  gcry_mpi_t mpi = nullptr;
  if (gcry_mpi_scan(&mpi, GCRYMPI_FMT_USG, magnitude.data(), magnitude.size(), nullptr) != 0) {
    return nullptr;
  }
  return MpiPtr(mpi);
}

// One S-expression built from `format`; null when libgcrypt refuses it.
template <typename... Args>
SexpPtr Build(const char* format, Args... args) {
  gcry_sexp_t sexp = nullptr;
  if (gcry_sexp_build(&sexp, nullptr, format, args...) != 0) return nullptr;
  return SexpPtr(sexp);
}

// True when the uncompressed point is a valid public key on `curve`: both coordinates
// below the field prime and the point on the curve (on these curves of cofactor 1, that
// is also the subgroup). OpenSSH's sshkey_ec_validate_public refuses a few more points
// that are valid but weak (a coordinate past the order); a key in allowed_signers is
// trusted by the administrator who listed it.
// libgcrypt 1.10's curve check refuses a coordinate past the prime too; it does not say
// so in its manual, hence the comparison of our own.
bool ValidPoint(const Curve& curve, std::string_view point) {
  SexpPtr key = Build("(public-key (ecc (curve %s) (q %b)))", curve.gcrypt_curve,
                      static_cast<int>(point.size()), point.data());
  gcry_ctx_t raw_ctx = nullptr;
  if (key == nullptr || gcry_mpi_ec_new(&raw_ctx, key.get(), nullptr) != 0) return false;
  CtxPtr ctx(raw_ctx);
  MpiPtr p(gcry_mpi_ec_get_mpi("p", ctx.get(), 1));
  MpiPtr x = ToMpi(point.substr(1, curve.field_size));
  MpiPtr y = ToMpi(point.substr(1 + curve.field_size));
  PointPtr q(gcry_mpi_ec_get_point("q", ctx.get(), 1));
  return p != nullptr && x != nullptr && y != nullptr && q != nullptr &&
         gcry_mpi_cmp(x.get(), p.get()) < 0 && gcry_mpi_cmp(y.get(), p.get()) < 0 &&
         gcry_mpi_ec_curve_point(q.get(), ctx.get()) != 0;
}

// The key as libgcrypt's S-expression; null when it is not a valid key.
SexpPtr ToGcrypt(const PublicKey& key) {
  if (!StartGcrypt()) return nullptr;
  if (key.type == "ssh-ed25519") {
    return Build("(public-key (ecc (curve Ed25519) (flags eddsa) (q %b)))",
                 static_cast<int>(key.ed25519.size()), key.ed25519.data());
  }
  if (const Curve* curve = FindCurve(key.type)) {
    if (!ValidPoint(*curve, key.ec_point)) return nullptr;
    return Build("(public-key (ecc (curve %s) (q %b)))", curve->gcrypt_curve,
                 static_cast<int>(key.ec_point.size()), key.ec_point.data());
  }
  if (key.type == "ssh-rsa") {
    MpiPtr n = ToMpi(key.rsa_n);
    MpiPtr e = ToMpi(key.rsa_e);
    if (n == nullptr || e == nullptr) return nullptr;
    return Build("(public-key (rsa (n %m) (e %m)))", n.get(), e.get());
  }
  return nullptr;
}

// The order of Ed25519's base point, little-endian, as RFC 8032 encodes S.
constexpr std::array<unsigned char, 32> kEd25519Order = {
    0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9, 0xde, 0x14,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x10};

// RFC 8032 5.1.7: S must be below the order (a signature is not malleable).
bool CanonicalScalar(std::string_view s) {
  for (std::size_t i = kEd25519Order.size(); i-- > 0;) {
    const auto byte = static_cast<unsigned char>(s[i]);
    if (byte != kEd25519Order[i]) return byte < kEd25519Order[i];
  }
  return false;  // equal
}

std::string Digest(int algorithm, std::string_view data) {
  std::string digest(gcry_md_get_algo_dlen(algorithm), '\0');
  gcry_md_hash_buffer(algorithm, digest.data(), data.data(), data.size());
  return digest;
}

constexpr std::string_view kBase64Alphabet =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

int Base64Value(char c) {
  const std::size_t position = kBase64Alphabet.find(c);
  return position == std::string_view::npos ? -1 : static_cast<int>(position);
}

bool IsSpace(char c) {
  return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
}

}  // namespace

bool WireReader::ReadU32(std::uint32_t& value) {
  if (data_.size() < 4) return false;
  value = 0;
  for (int i = 0; i < 4; ++i) value = (value << 8) | static_cast<unsigned char>(data_[i]);
  data_.remove_prefix(4);
  return true;
}

bool WireReader::ReadBytes(std::size_t count, std::string_view& value) {
  if (data_.size() < count) return false;
  value = data_.substr(0, count);
  data_.remove_prefix(count);
  return true;
}

bool WireReader::ReadString(std::string_view& value) {
  const std::string_view saved = data_;
  std::uint32_t length = 0;
  if (!ReadU32(length) || !ReadBytes(length, value)) {
    data_ = saved;
    return false;
  }
  return true;
}

bool WireReader::ReadPositiveMpint(std::string_view& magnitude) {
  const std::string_view saved = data_;
  std::string_view raw;
  if (!ReadString(raw)) return false;
  if (!raw.empty() && (static_cast<unsigned char>(raw.front()) & 0x80) != 0) {
    data_ = saved;  // negative
    return false;
  }
  magnitude = StripLeadingZeros(raw);
  return true;
}

void PutU32(std::string& out, std::uint32_t value) {
  out += static_cast<char>((value >> 24) & 0xff);
  out += static_cast<char>((value >> 16) & 0xff);
  out += static_cast<char>((value >> 8) & 0xff);
  out += static_cast<char>(value & 0xff);
}

void PutString(std::string& out, std::string_view value) {
  PutU32(out, static_cast<std::uint32_t>(value.size()));
  out.append(value);
}

void PutMpint(std::string& out, std::string_view magnitude) {
  magnitude = StripLeadingZeros(magnitude);
  if (!magnitude.empty() && (static_cast<unsigned char>(magnitude.front()) & 0x80) != 0) {
    PutU32(out, static_cast<std::uint32_t>(magnitude.size() + 1));
    out += '\0';
    out.append(magnitude);
  } else {
    PutString(out, magnitude);
  }
}

std::optional<std::string> Base64Decode(std::string_view text) {
  std::string out;
  out.reserve(text.size() * 3 / 4);
  std::uint32_t accumulator = 0;
  int sextets = 0;  // in the current quantum
  int padding = 0;  // '=' seen
  for (const char c : text) {
    if (IsSpace(c)) continue;
    if (c == '=') {
      // Padding only completes a quantum of 2 or 3 characters.
      if (sextets + padding < 2) return std::nullopt;
      ++padding;
      if (sextets + padding > 4) return std::nullopt;
      continue;
    }
    if (padding > 0) return std::nullopt;  // data after padding
    const int value = Base64Value(c);
    if (value < 0) return std::nullopt;
    accumulator = (accumulator << 6) | static_cast<std::uint32_t>(value);
    if (++sextets == 4) {
      out += static_cast<char>((accumulator >> 16) & 0xff);
      out += static_cast<char>((accumulator >> 8) & 0xff);
      out += static_cast<char>(accumulator & 0xff);
      accumulator = 0;
      sextets = 0;
    }
  }
  if (padding > 0) {
    if (sextets + padding != 4) return std::nullopt;
    if (sextets == 2) {  // 12 bits: one byte and 4 pad bits
      if ((accumulator & 0xf) != 0) return std::nullopt;
      out += static_cast<char>((accumulator >> 4) & 0xff);
    } else {  // 18 bits: two bytes and 2 pad bits
      if ((accumulator & 0x3) != 0) return std::nullopt;
      out += static_cast<char>((accumulator >> 10) & 0xff);
      out += static_cast<char>((accumulator >> 2) & 0xff);
    }
  } else if (sextets != 0) {
    return std::nullopt;  // a partial quantum without padding
  }
  return out;
}

std::string Fingerprint(std::string_view key_blob) {
  std::string encoded = Base64Encode(Sha256(key_blob));
  while (!encoded.empty() && encoded.back() == '=') encoded.pop_back();
  return "SHA256:" + encoded;
}

bool IsSupportedKeyType(std::string_view type) {
  return type == "ssh-ed25519" || type == "ssh-rsa" || FindCurve(type) != nullptr;
}

bool IsKnownUnsupportedKeyType(std::string_view type) {
  return type == "ssh-dss" || type.starts_with("sk-") || type.ends_with("-cert-v01@openssh.com");
}

std::string SupportedKeyTypes() {
  return "ssh-ed25519, ecdsa-sha2-nistp256, ecdsa-sha2-nistp384, ecdsa-sha2-nistp521, ssh-rsa";
}

Result<PublicKey> ParsePublicKey(std::string_view blob) {
  WireReader reader(blob);
  std::string_view type;
  if (!reader.ReadString(type)) return Fail(Malformed("truncated public key"));
  PublicKey key;
  key.type = std::string(type);
  PutString(key.blob, type);
  if (type == "ssh-ed25519") {
    std::string_view raw;
    if (!reader.ReadString(raw)) return Fail(Malformed("truncated ssh-ed25519 key"));
    if (raw.size() != 32) {
      return Fail(Malformed("ssh-ed25519 key of " + std::to_string(raw.size()) + " bytes"));
    }
    key.ed25519 = std::string(raw);
    PutString(key.blob, raw);
  } else if (const Curve* curve = FindCurve(type)) {
    std::string_view curve_name, point;
    if (!reader.ReadString(curve_name) || !reader.ReadString(point)) {
      return Fail(Malformed("truncated " + key.type + " key"));
    }
    if (curve_name != curve->ssh_name) {
      return Fail(Malformed(key.type + " key on curve '" + std::string(curve_name) + "'"));
    }
    if (point.size() != 1 + 2 * curve->field_size || point.front() != '\x04') {
      return Fail(Malformed(key.type + " key is not an uncompressed point"));
    }
    key.ec_point = std::string(point);
    PutString(key.blob, curve_name);
    PutString(key.blob, point);
  } else if (type == "ssh-rsa") {
    std::string_view e, n;
    if (!reader.ReadPositiveMpint(e) || !reader.ReadPositiveMpint(n)) {
      return Fail(Malformed("truncated or negative ssh-rsa key"));
    }
    const std::size_t bits = BitLength(n);
    if (bits < kMinRsaBits || bits > kMaxRsaBits) {
      return Fail(Malformed("ssh-rsa key of " + std::to_string(bits) +
                            " bits (allowed: " + std::to_string(kMinRsaBits) + " to " +
                            std::to_string(kMaxRsaBits) + ")"));
    }
    if (e.empty() || (static_cast<unsigned char>(e.back()) & 1) == 0 || e.size() > 8) {
      return Fail(Malformed("ssh-rsa key with an invalid public exponent"));
    }
    key.rsa_e = std::string(e);
    key.rsa_n = std::string(n);
    PutMpint(key.blob, e);
    PutMpint(key.blob, n);
  } else {
    return Fail(Unsupported("unsupported key type " + QuoteUntrusted(type)));
  }
  if (!reader.empty()) return Fail(Malformed(key.type + " key with trailing data"));
  if (ToGcrypt(key) == nullptr) {
    return Fail(Malformed("invalid " + key.type + " key"));
  }
  return key;
}

Result<RawSignature> DecodeSignature(const PublicKey& key, std::string_view encoded) {
  WireReader reader(encoded);
  std::string_view algorithm, blob;
  if (!reader.ReadString(algorithm) || !reader.ReadString(blob)) {
    return Fail(Malformed("truncated signature"));
  }
  if (!reader.empty()) return Fail(Malformed("signature with trailing data"));
  RawSignature signature;
  signature.algorithm = std::string(algorithm);
  if (key.type == "ssh-rsa") {
    if (algorithm == "ssh-rsa") {
      return Fail(
          Unsupported("ssh-rsa signatures (RSA with SHA-1) are refused; "
                      "sign with rsa-sha2-256 or rsa-sha2-512"));
    }
    if (algorithm != "rsa-sha2-256" && algorithm != "rsa-sha2-512") {
      return Fail(Malformed("signature algorithm does not match the ssh-rsa key"));
    }
    // OpenSSH accepts signatures shorter than the modulus and pads them with zeros;
    // libgcrypt is given exactly the modulus size.
    if (blob.size() > key.rsa_n.size() || blob.empty()) {
      return Fail(Malformed("RSA signature of " + std::to_string(blob.size()) + " bytes for a " +
                            std::to_string(key.rsa_n.size()) + "-byte modulus"));
    }
    signature.bytes.assign(key.rsa_n.size() - blob.size(), '\0');
    signature.bytes.append(blob);
    return signature;
  }
  if (algorithm != key.type) {
    return Fail(Malformed("signature algorithm does not match the " + key.type + " key"));
  }
  if (key.type == "ssh-ed25519") {
    if (blob.size() != 64) {
      return Fail(Malformed("ssh-ed25519 signature of " + std::to_string(blob.size()) + " bytes"));
    }
    signature.bytes = std::string(blob);
    return signature;
  }
  // ECDSA: "mpint r, mpint s", each to the field's size.
  const Curve* curve = FindCurve(key.type);
  WireReader rs(blob);
  std::string_view r, s;
  if (curve == nullptr || !rs.ReadPositiveMpint(r) || !rs.ReadPositiveMpint(s) || !rs.empty() ||
      r.empty() || s.empty() || r.size() > curve->field_size || s.size() > curve->field_size) {
    return Fail(Malformed("malformed " + key.type + " signature"));
  }
  signature.bytes = Padded(r, curve->field_size) + Padded(s, curve->field_size);
  return signature;
}

bool VerifyRaw(const PublicKey& key, const RawSignature& signature, std::string_view data) {
  SexpPtr pkey = ToGcrypt(key);
  if (pkey == nullptr) return false;
  SexpPtr sig, message;
  if (key.type == "ssh-ed25519") {
    // PureEdDSA: the message itself, hashed inside with SHA-512 as RFC 8032 says.
    if (signature.bytes.size() != 64 ||
        !CanonicalScalar(std::string_view(signature.bytes).substr(32))) {
      return false;
    }
    sig = Build("(sig-val (eddsa (r %b) (s %b)))", 32, signature.bytes.data(), 32,
                signature.bytes.data() + 32);
    message = Build("(data (flags eddsa) (hash-algo sha512) (value %b))",
                    static_cast<int>(data.size()), data.data());
  } else if (const Curve* curve = FindCurve(key.type)) {
    if (signature.bytes.size() != 2 * curve->field_size) return false;
    const std::string_view bytes = signature.bytes;
    MpiPtr r = ToMpi(bytes.substr(0, curve->field_size));
    MpiPtr s = ToMpi(bytes.substr(curve->field_size));
    if (r == nullptr || s == nullptr) return false;
    const std::string digest = Digest(curve->digest, data);
    sig = Build("(sig-val (ecdsa (r %m) (s %m)))", r.get(), s.get());
    message =
        Build("(data (flags raw) (value %b))", static_cast<int>(digest.size()), digest.data());
  } else if (key.type == "ssh-rsa" &&
             (signature.algorithm == "rsa-sha2-256" || signature.algorithm == "rsa-sha2-512")) {
    // The signature is padded to the modulus's size: below the modulus, or not one.
    if (signature.bytes.size() != key.rsa_n.size() || signature.bytes >= key.rsa_n) return false;
    const bool sha256 = signature.algorithm == "rsa-sha2-256";
    const std::string digest = Digest(sha256 ? GCRY_MD_SHA256 : GCRY_MD_SHA512, data);
    MpiPtr s = ToMpi(signature.bytes);
    if (s == nullptr) return false;
    sig = Build("(sig-val (rsa (s %m)))", s.get());
    message = Build("(data (flags pkcs1) (hash %s %b))", sha256 ? "sha256" : "sha512",
                    static_cast<int>(digest.size()), digest.data());
  } else {
    return false;
  }
  return sig != nullptr && message != nullptr &&
         gcry_pk_verify(sig.get(), message.get(), pkey.get()) == 0;
}

namespace {

// OpenSSH's match_pattern: '*' matches any run of characters, '?' any one character.
bool MatchPattern(std::string_view text, std::string_view pattern) {
  std::size_t t = 0, p = 0;
  std::size_t star = std::string_view::npos, star_text = 0;
  while (t < text.size()) {
    if (p < pattern.size() && (pattern[p] == '?' || pattern[p] == text[t])) {
      ++t;
      ++p;
    } else if (p < pattern.size() && pattern[p] == '*') {
      star = p++;
      star_text = t;
    } else if (star != std::string_view::npos) {
      p = star + 1;
      t = ++star_text;
    } else {
      return false;
    }
  }
  while (p < pattern.size() && pattern[p] == '*') ++p;
  return p == pattern.size();
}

}  // namespace

int MatchPatternList(std::string_view name, std::string_view patterns) {
  bool positive = false;
  while (!patterns.empty()) {
    const std::size_t comma = patterns.find(',');
    std::string_view pattern = patterns.substr(0, comma);
    patterns = comma == std::string_view::npos ? std::string_view() : patterns.substr(comma + 1);
    const bool negated = pattern.starts_with('!');
    if (negated) pattern.remove_prefix(1);
    if (MatchPattern(name, pattern)) {
      if (negated) return -1;
      positive = true;
    }
  }
  return positive ? 1 : 0;
}

std::string QuoteUntrusted(std::string_view text) {
  constexpr std::size_t kMaxShown = 100;
  bool printable = text.size() <= kMaxShown;
  for (const char c : text) printable = printable && c >= 0x20 && c < 0x7f;
  if (printable) return "'" + std::string(text) + "'";
  return "(" + std::to_string(text.size()) + " bytes)";
}

std::optional<std::string> HashByName(std::string_view algorithm, std::string_view data) {
  if (!StartGcrypt()) std::abort();  // cannot fail: a libgcrypt that cannot start is broken
  if (algorithm == "sha256") return Digest(GCRY_MD_SHA256, data);
  if (algorithm == "sha512") return Digest(GCRY_MD_SHA512, data);
  return std::nullopt;
}

}  // namespace tether::ssh
