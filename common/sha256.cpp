#include "common/sha256.hpp"

#include <gcrypt.h>

#include <cstdlib>

#include "common/gcrypt_start.hpp"

namespace tether {

void PrepareSha256() { (void)StartGcrypt(); }

Sha256Digest Sha256Bytes(std::string_view data) {
  // Cannot fail once started; a libgcrypt that cannot start is a broken invariant.
  if (!StartGcrypt()) std::abort();
  Sha256Digest digest{};
  gcry_md_hash_buffer(GCRY_MD_SHA256, digest.data(), data.data(), data.size());
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
