#include "common/crc32.hpp"

#include <gcrypt.h>

#include <cstdlib>

#include "common/gcrypt_start.hpp"

namespace tether {

Crc32Bytes Crc32(std::string_view data) {
  // Cannot fail once started; a libgcrypt that cannot start is a broken invariant.
  if (!StartGcrypt()) std::abort();
  Crc32Bytes crc{};
  gcry_md_hash_buffer(GCRY_MD_CRC32, crc.data(), data.data(), data.size());
  return crc;
}

}  // namespace tether
