#include "common/hmac.hpp"

#include <gcrypt.h>

#include <array>
#include <mutex>

namespace tether {

namespace {

// libgcrypt wants its version checked once before the first call; libsystemd may have
// done so already, which is harmless.
bool InitGcrypt() {
  static std::once_flag once;
  static bool ok = false;
  std::call_once(once, [] {
    ok = gcry_check_version(nullptr) != nullptr;
    if (ok && !gcry_control(GCRYCTL_INITIALIZATION_FINISHED_P)) {
      gcry_control(GCRYCTL_DISABLE_SECMEM, 0);
      gcry_control(GCRYCTL_INITIALIZATION_FINISHED, 0);
    }
  });
  return ok;
}

}  // namespace

std::string HmacSha256Hex(std::string_view key, std::string_view data) {
  if (!InitGcrypt()) return "";
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
  static constexpr char kHex[] = "0123456789abcdef";
  std::string hex;
  hex.reserve(64);
  for (const unsigned char byte : digest) {
    hex.push_back(kHex[byte >> 4]);
    hex.push_back(kHex[byte & 0xf]);
  }
  return hex;
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
