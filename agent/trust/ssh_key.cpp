#include "agent/trust/ssh_key.hpp"

#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/ecdsa.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/param_build.h>

#include <array>
#include <cstdlib>
#include <memory>

#include "agent/trust/ssh_signature.hpp"
#include "common/encoding.hpp"

namespace tether::ssh {
namespace {

// Limits from OpenSSH: RSA moduli of 1024..16384 bits, so mpints of at most 2048 bytes.
constexpr std::size_t kMinRsaBits = 1024;
constexpr std::size_t kMaxRsaBits = 16384;

struct Curve {
  std::string_view key_type;
  std::string_view ssh_name;  // the curve name inside the key blob
  const char* openssl_group;  // OSSL_PKEY_PARAM_GROUP_NAME
  std::size_t point_size;     // uncompressed: 1 + 2 * field bytes
  const EVP_MD* (*digest)();  // the hash ECDSA uses with this curve in SSH (RFC 5656)
};

constexpr std::array<Curve, 3> kCurves = {{
    {"ecdsa-sha2-nistp256", "nistp256", "prime256v1", 65, EVP_sha256},
    {"ecdsa-sha2-nistp384", "nistp384", "secp384r1", 97, EVP_sha384},
    {"ecdsa-sha2-nistp521", "nistp521", "secp521r1", 133, EVP_sha512},
}};

const Curve* FindCurve(std::string_view key_type) {
  for (const Curve& curve : kCurves) {
    if (curve.key_type == key_type) return &curve;
  }
  return nullptr;
}

const unsigned char* Bytes(std::string_view data) {
  return reinterpret_cast<const unsigned char*>(data.data());
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

// OpenSSL owners.
struct PkeyFree {
  void operator()(EVP_PKEY* pkey) const { EVP_PKEY_free(pkey); }
};
struct PkeyCtxFree {
  void operator()(EVP_PKEY_CTX* ctx) const { EVP_PKEY_CTX_free(ctx); }
};
struct MdCtxFree {
  void operator()(EVP_MD_CTX* ctx) const { EVP_MD_CTX_free(ctx); }
};
struct BnFree {
  void operator()(BIGNUM* bn) const { BN_free(bn); }
};
struct ParamBldFree {
  void operator()(OSSL_PARAM_BLD* bld) const { OSSL_PARAM_BLD_free(bld); }
};
struct ParamFree {
  void operator()(OSSL_PARAM* params) const { OSSL_PARAM_free(params); }
};
struct EcdsaSigFree {
  void operator()(ECDSA_SIG* sig) const { ECDSA_SIG_free(sig); }
};
using PkeyPtr = std::unique_ptr<EVP_PKEY, PkeyFree>;
using PkeyCtxPtr = std::unique_ptr<EVP_PKEY_CTX, PkeyCtxFree>;
using MdCtxPtr = std::unique_ptr<EVP_MD_CTX, MdCtxFree>;
using BnPtr = std::unique_ptr<BIGNUM, BnFree>;
using ParamBldPtr = std::unique_ptr<OSSL_PARAM_BLD, ParamBldFree>;
using ParamPtr = std::unique_ptr<OSSL_PARAM, ParamFree>;
using EcdsaSigPtr = std::unique_ptr<ECDSA_SIG, EcdsaSigFree>;

BnPtr ToBignum(std::string_view magnitude) {
  return BnPtr(BN_bin2bn(Bytes(magnitude), static_cast<int>(magnitude.size()), nullptr));
}

PkeyPtr FromParams(const char* algorithm, OSSL_PARAM* params) {
  PkeyCtxPtr ctx(EVP_PKEY_CTX_new_from_name(nullptr, algorithm, nullptr));
  EVP_PKEY* pkey = nullptr;
  if (ctx == nullptr || EVP_PKEY_fromdata_init(ctx.get()) != 1 ||
      EVP_PKEY_fromdata(ctx.get(), &pkey, EVP_PKEY_PUBLIC_KEY, params) != 1) {
    return nullptr;
  }
  return PkeyPtr(pkey);
}

// Builds the OpenSSL key; null when OpenSSL refuses it (e.g. a point not on the curve).
PkeyPtr ToOpenSsl(const PublicKey& key) {
  if (key.type == "ssh-ed25519") {
    return PkeyPtr(EVP_PKEY_new_raw_public_key(EVP_PKEY_ED25519, nullptr, Bytes(key.ed25519),
                                               key.ed25519.size()));
  }
  if (const Curve* curve = FindCurve(key.type)) {
    std::string point = key.ec_point;
    OSSL_PARAM params[] = {
        OSSL_PARAM_construct_utf8_string(OSSL_PKEY_PARAM_GROUP_NAME,
                                         const_cast<char*>(curve->openssl_group), 0),
        OSSL_PARAM_construct_octet_string(OSSL_PKEY_PARAM_PUB_KEY, point.data(), point.size()),
        OSSL_PARAM_construct_end(),
    };
    PkeyPtr pkey = FromParams("EC", params);
    if (pkey == nullptr) return nullptr;
    // Reject points OpenSSL would accept but that are not a valid public key (e.g. not in
    // the prime-order subgroup), as OpenSSH does (sshkey_ec_validate_public).
    PkeyCtxPtr check(EVP_PKEY_CTX_new_from_pkey(nullptr, pkey.get(), nullptr));
    if (check == nullptr || EVP_PKEY_public_check(check.get()) != 1) return nullptr;
    return pkey;
  }
  if (key.type == "ssh-rsa") {
    BnPtr n = ToBignum(key.rsa_n);
    BnPtr e = ToBignum(key.rsa_e);
    ParamBldPtr bld(OSSL_PARAM_BLD_new());
    if (n == nullptr || e == nullptr || bld == nullptr ||
        OSSL_PARAM_BLD_push_BN(bld.get(), OSSL_PKEY_PARAM_RSA_N, n.get()) != 1 ||
        OSSL_PARAM_BLD_push_BN(bld.get(), OSSL_PKEY_PARAM_RSA_E, e.get()) != 1) {
      return nullptr;
    }
    ParamPtr params(OSSL_PARAM_BLD_to_param(bld.get()));
    if (params == nullptr) return nullptr;
    return FromParams("RSA", params.get());
  }
  return nullptr;
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
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int length = 0;
  if (EVP_Digest(key_blob.data(), key_blob.size(), digest, &length, EVP_sha256(), nullptr) != 1) {
    std::abort();  // cannot fail with a built-in digest; a broken libcrypto is an invariant
  }
  std::string encoded = Base64Encode(std::string_view(reinterpret_cast<char*>(digest), length));
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
    if (point.size() != curve->point_size || point.front() != '\x04') {
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
  if (ToOpenSsl(key) == nullptr) {
    ERR_clear_error();
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
    // OpenSSL wants exactly the modulus size.
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
  // ECDSA: "mpint r, mpint s" to DER ECDSA-Sig-Value.
  WireReader rs(blob);
  std::string_view r, s;
  if (!rs.ReadPositiveMpint(r) || !rs.ReadPositiveMpint(s) || !rs.empty() || r.empty() ||
      s.empty() || r.size() > 66 || s.size() > 66) {
    return Fail(Malformed("malformed " + key.type + " signature"));
  }
  EcdsaSigPtr sig(ECDSA_SIG_new());
  BnPtr bn_r = ToBignum(r);
  BnPtr bn_s = ToBignum(s);
  if (sig == nullptr || bn_r == nullptr || bn_s == nullptr ||
      ECDSA_SIG_set0(sig.get(), bn_r.get(), bn_s.get()) != 1) {
    std::abort();  // allocation failure
  }
  (void)bn_r.release();  // owned by sig now
  (void)bn_s.release();
  unsigned char* der = nullptr;
  const int der_length = i2d_ECDSA_SIG(sig.get(), &der);
  if (der_length <= 0) std::abort();
  signature.bytes.assign(reinterpret_cast<char*>(der), static_cast<std::size_t>(der_length));
  OPENSSL_free(der);
  return signature;
}

bool VerifyRaw(const PublicKey& key, const RawSignature& signature, std::string_view data) {
  const EVP_MD* digest = nullptr;  // Ed25519: none (PureEdDSA)
  if (const Curve* curve = FindCurve(key.type)) {
    digest = curve->digest();
  } else if (signature.algorithm == "rsa-sha2-256") {
    digest = EVP_sha256();
  } else if (signature.algorithm == "rsa-sha2-512") {
    digest = EVP_sha512();
  } else if (key.type != "ssh-ed25519") {
    return false;
  }
  PkeyPtr pkey = ToOpenSsl(key);
  MdCtxPtr ctx(EVP_MD_CTX_new());
  bool valid = pkey != nullptr && ctx != nullptr &&
               EVP_DigestVerifyInit(ctx.get(), nullptr, digest, nullptr, pkey.get()) == 1 &&
               EVP_DigestVerify(ctx.get(), Bytes(signature.bytes), signature.bytes.size(),
                                Bytes(data), data.size()) == 1;
  ERR_clear_error();  // a refused signature leaves errors on the thread's queue
  return valid;
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
  const EVP_MD* digest = nullptr;
  if (algorithm == "sha256") {
    digest = EVP_sha256();
  } else if (algorithm == "sha512") {
    digest = EVP_sha512();
  } else {
    return std::nullopt;
  }
  unsigned char out[EVP_MAX_MD_SIZE];
  unsigned int length = 0;
  if (EVP_Digest(data.data(), data.size(), out, &length, digest, nullptr) != 1) std::abort();
  return std::string(reinterpret_cast<char*>(out), length);
}

}  // namespace tether::ssh
