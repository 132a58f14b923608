#include "common/content_id.hpp"

#include <openssl/evp.h>

#include <cstdlib>
#include <memory>

namespace tether {

ContentId ContentIdOf(std::string_view content) {
  static EVP_MD* const kSha1 = EVP_MD_fetch(nullptr, "SHA1", nullptr);  // looked up once
  const std::string header = "blob " + std::to_string(content.size()) + std::string(1, '\0');
  ContentId id{};
  unsigned int length = 0;
  const std::unique_ptr<EVP_MD_CTX, decltype(&EVP_MD_CTX_free)> context(EVP_MD_CTX_new(),
                                                                        EVP_MD_CTX_free);
  // Cannot fail with a built-in digest; a broken libcrypto is an invariant.
  if (!context || kSha1 == nullptr || EVP_DigestInit_ex(context.get(), kSha1, nullptr) != 1 ||
      EVP_DigestUpdate(context.get(), header.data(), header.size()) != 1 ||
      EVP_DigestUpdate(context.get(), content.data(), content.size()) != 1 ||
      EVP_DigestFinal_ex(context.get(), id.data(), &length) != 1 || length != id.size()) {
    std::abort();
  }
  return id;
}

std::string ContentIdHex(const ContentId& id) {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string hex;
  hex.reserve(2 * id.size());
  for (unsigned char byte : id) {
    hex += kHex[byte >> 4];
    hex += kHex[byte & 0xf];
  }
  return hex;
}

}  // namespace tether
