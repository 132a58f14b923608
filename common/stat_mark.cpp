#include "common/stat_mark.hpp"

#include <cstdint>
#include <cstring>
#include <string_view>

#include "common/encoding.hpp"

namespace tether {

namespace {

// FNV-1a over the bytes of each field, then SplitMix64's finaliser, so that every bit of
// the result depends on every field.
class Mixer {
 public:
  template <typename T>
  void Add(T value) {
    unsigned char bytes[sizeof(T)];
    std::memcpy(bytes, &value, sizeof(T));
    for (const unsigned char byte : bytes) hash_ = (hash_ ^ byte) * 0x100000001b3ULL;
  }

  std::uint64_t Finish() const {
    std::uint64_t z = hash_;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
  }

 private:
  std::uint64_t hash_ = 0xcbf29ce484222325ULL;
};

}  // namespace

StatMarkChars StatMarkOf(const FileStat& stat) {
  Mixer mixer;
  mixer.Add(static_cast<std::uint8_t>(stat.type));
  mixer.Add(stat.device);
  mixer.Add(stat.inode);
  mixer.Add(stat.size);
  mixer.Add(stat.mtime_ns);
  mixer.Add(stat.ctime_ns);
  mixer.Add(stat.mode);
  mixer.Add(stat.uid);
  mixer.Add(stat.gid);
  const std::uint64_t bits = mixer.Finish();
  // The first characters of the base64 of the 8 bytes: those of their first 6.
  static_assert(kStatMarkSize <= 8);
  char bytes[sizeof(bits)];
  std::memcpy(bytes, &bits, sizeof(bits));
  char text[8];
  Base64EncodeInto(std::string_view(bytes, 6), text);
  StatMarkChars mark;
  std::memcpy(mark.data(), text, mark.size());
  return mark;
}

std::string StatMark(const FileStat& stat) {
  const StatMarkChars mark = StatMarkOf(stat);
  return std::string(mark.begin(), mark.end());
}

}  // namespace tether
