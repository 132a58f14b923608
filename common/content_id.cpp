#include "common/content_id.hpp"

#include <gcrypt.h>

#include <cstdlib>

#include "common/gcrypt_start.hpp"

namespace tether {

ContentId GitObjectIdOf(std::string_view type, std::string_view data) {
  // Cannot fail once started; a libgcrypt that cannot start is a broken invariant.
  if (!StartGcrypt()) std::abort();
  std::string header = std::string(type) + " " + std::to_string(data.size());
  header.push_back('\0');
  gcry_buffer_t parts[2] = {};
  parts[0].size = parts[0].len = header.size();
  parts[0].data = header.data();
  parts[1].size = parts[1].len = data.size();
  parts[1].data = const_cast<char*>(data.data());  // only read
  ContentId id{};
  if (gcry_md_hash_buffers(GCRY_MD_SHA1, 0, id.data(), parts, 2) != 0) std::abort();
  return id;
}

ContentId ContentIdOf(std::string_view content) { return GitObjectIdOf("blob", content); }

void ContentIdHexInto(const ContentId& id, char* out) {
  static constexpr char kHex[] = "0123456789abcdef";
  for (unsigned char byte : id) {
    *out++ = kHex[byte >> 4];
    *out++ = kHex[byte & 0xf];
  }
}

std::string ContentIdHex(const ContentId& id) {
  std::string hex(2 * id.size(), '\0');
  ContentIdHexInto(id, hex.data());
  return hex;
}

}  // namespace tether
