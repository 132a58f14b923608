#include "common/gcrypt_start.hpp"

#include <gcrypt.h>

#include <mutex>

namespace tether {

bool StartGcrypt() {
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

}  // namespace tether
