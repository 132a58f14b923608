#include "common/sha256.hpp"

#include <openssl/evp.h>

#include <cstdlib>

namespace tether {

namespace {

// Fetched once: EVP_sha256() would look the algorithm up again on every call, which costs
// more than hashing a short text.
const EVP_MD* Sha256Algorithm() {
  static EVP_MD* const kSha256 = EVP_MD_fetch(nullptr, "SHA256", nullptr);
  return kSha256;
}

}  // namespace

void PrepareSha256() { (void)Sha256Algorithm(); }

Sha256Digest Sha256Bytes(std::string_view data) {
  const EVP_MD* const kSha256 = Sha256Algorithm();
  Sha256Digest digest{};
  unsigned int length = 0;
  if (kSha256 == nullptr ||
      EVP_Digest(data.data(), data.size(), digest.data(), &length, kSha256, nullptr) != 1 ||
      length != digest.size()) {
    std::abort();  // cannot fail with a built-in digest; a broken libcrypto is an invariant
  }
  return digest;
}

std::string Sha256(std::string_view data) {
  const Sha256Digest digest = Sha256Bytes(data);
  return std::string(reinterpret_cast<const char*>(digest.data()), digest.size());
}

std::string Sha256Hex(const Sha256Digest& digest) {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string hex;
  hex.reserve(64);
  for (unsigned char byte : digest) {
    hex += kHex[byte >> 4];
    hex += kHex[byte & 0xf];
  }
  return hex;
}

std::string Sha256Hex(std::string_view data) { return Sha256Hex(Sha256Bytes(data)); }

}  // namespace tether
