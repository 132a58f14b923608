#include "common/hmac.hpp"

#include <gcrypt.h>

#include <array>

#include "common/gcrypt_start.hpp"

namespace tether {

namespace {

std::string Hex(const unsigned char* bytes, std::size_t size) {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string hex;
  hex.reserve(size * 2);
  for (std::size_t i = 0; i < size; ++i) {
    hex.push_back(kHex[bytes[i] >> 4]);
    hex.push_back(kHex[bytes[i] & 0xf]);
  }
  return hex;
}

}  // namespace

std::string HmacSha256Hex(std::string_view key, std::string_view data) {
  if (!StartGcrypt()) return "";
  gcry_mac_hd_t mac = nullptr;
  if (gcry_mac_open(&mac, GCRY_MAC_HMAC_SHA256, 0, nullptr) != 0) return "";
  std::array<unsigned char, 32> digest{};
  std::size_t length = digest.size();
  // An empty key is a valid HMAC key; libgcrypt wants a non-null pointer for it.
  static const char kEmpty = 0;
  const bool ok = gcry_mac_setkey(mac, key.empty() ? &kEmpty : key.data(), key.size()) == 0 &&
                  gcry_mac_write(mac, data.data(), data.size()) == 0 &&
                  gcry_mac_read(mac, digest.data(), &length) == 0 && length == digest.size();
  gcry_mac_close(mac);
  if (!ok) return "";
  return Hex(digest.data(), digest.size());
}

bool ConstantTimeEqual(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  volatile unsigned char differ = 0;
  for (std::size_t i = 0; i < a.size(); ++i) {
    differ = differ | static_cast<unsigned char>(a[i] ^ b[i]);
  }
  return differ == 0;
}

}  // namespace tether
