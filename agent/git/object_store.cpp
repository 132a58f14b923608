#include "agent/git/object_store.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <linux/openat2.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>
#include <zlib.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <climits>
#include <cstring>
#include <set>

#include "common/unique_fd.hpp"

namespace tether {

// Opens `relative` under the directory `dir`: never through a symlink, never out of it,
// and never waiting (a FIFO put there is refused, not opened for a writer that never
// comes). `flags`: O_DIRECTORY for a directory, 0 for a regular file, which it checks.
Result<UniqueFd> OpenBeneath(int dir, const std::string& relative, const std::string& path,
                             int flags) {
  open_how how{};
  how.flags = static_cast<std::uint64_t>(O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK | flags);
  how.resolve = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS;
  UniqueFd fd(static_cast<int>(syscall(SYS_openat2, dir, relative.c_str(), &how, sizeof(how))));
  if (!fd.valid()) return FailErrno(errno, "open '" + path + "'");
  if ((flags & O_DIRECTORY) == 0) {
    struct stat st {};
    if (fstat(fd.get(), &st) != 0) return FailErrno(errno, "stat '" + path + "'");
    if (!S_ISREG(st.st_mode)) return Fail(std::errc::invalid_argument, path + " is not a file");
  }
  return fd;
}

// A file mapped read-only, whole.
class MappedFile {
 public:
  MappedFile() = default;
  MappedFile(MappedFile&& other) noexcept
      : data_(std::exchange(other.data_, nullptr)), size_(std::exchange(other.size_, 0)) {}
  MappedFile& operator=(MappedFile&& other) noexcept {
    std::swap(data_, other.data_);
    std::swap(size_, other.size_);
    return *this;
  }
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;
  ~MappedFile() {
    if (data_ != nullptr) munmap(data_, size_);
  }

  // Maps the regular file `fd` (OpenBeneath's); `path` names it in errors.
  static Result<MappedFile> Of(const UniqueFd& fd, const std::string& path) {
    struct stat st {};
    if (fstat(fd.get(), &st) != 0) return FailErrno(errno, "stat '" + path + "'");
    MappedFile mapping;
    if (st.st_size == 0) return mapping;
    void* data =
        mmap(nullptr, static_cast<std::size_t>(st.st_size), PROT_READ, MAP_PRIVATE, fd.get(), 0);
    if (data == MAP_FAILED) return FailErrno(errno, "map '" + path + "'");
    mapping.data_ = data;
    mapping.size_ = static_cast<std::size_t>(st.st_size);
    return mapping;
  }

  [[nodiscard]] const unsigned char* data() const {
    return static_cast<const unsigned char*>(data_);
  }
  [[nodiscard]] std::size_t size() const { return size_; }

  // Reads are scattered: no read-ahead, and (on Linux 6.4 and later) no mapping of the
  // pages around the one read, which would make a read of a few bytes 64 KiB of RSS.
  void Random() const {
    if (data_ != nullptr) (void)madvise(data_, size_, MADV_RANDOM);
  }

  // Gives back the pages read so far: they leave this process's resident memory (the page
  // cache keeps them), and are read again when touched.
  void Drop() const {
    if (data_ != nullptr) (void)madvise(data_, size_, MADV_DONTNEED);
  }

 private:
  void* data_ = nullptr;
  std::size_t size_ = 0;
};

namespace {

// Bases kept for the deltas that follow (see ObjectStore::bases_), and the largest one kept.
constexpr std::size_t kBaseCacheBytes = std::size_t{1} << 20;
constexpr std::size_t kMaxCachedBase = std::size_t{256} << 10;
// How much of a pack is read before the pages read are dropped (see Pack::Touch).
constexpr std::uint64_t kResidentPackBytes = std::uint64_t{64} << 10;
// Git writes chains of at most 50 (250 with --aggressive); a longer one is a loop or hostile.
constexpr std::size_t kMaxDeltaDepth = 4096;
// The most one read may inflate and apply, its chain of deltas included.
constexpr std::uint64_t kMaxReadWork = std::uint64_t{1} << 30;
constexpr std::size_t kIdSize = 20;
constexpr std::size_t kIdxHeader = 8 + 256 * 4;

std::uint32_t Be32(const unsigned char* p) {
  return (std::uint32_t{p[0]} << 24) | (std::uint32_t{p[1]} << 16) | (std::uint32_t{p[2]} << 8) |
         std::uint32_t{p[3]};
}

std::uint64_t Be64(const unsigned char* p) { return (std::uint64_t{Be32(p)} << 32) | Be32(p + 4); }

tl::unexpected<Error> Corrupt(const std::string& where, const std::string& what) {
  return Fail(std::errc::illegal_byte_sequence, where + " is corrupt: " + what);
}

ObjectId ObjectIdOf(ObjectType type, std::string_view data) {
  return GitObjectIdOf(ObjectTypeName(type), data);
}

std::optional<ObjectType> TypeOfNumber(int number) {
  if (number < 1 || number > 4) return std::nullopt;
  return static_cast<ObjectType>(number);
}

std::optional<ObjectType> TypeOfName(std::string_view name) {
  for (int number = 1; number <= 4; ++number) {
    if (ObjectTypeName(static_cast<ObjectType>(number)) == name) {
      return static_cast<ObjectType>(number);
    }
  }
  return std::nullopt;
}

// A delta's size fields: 7 bits a byte, least significant first.
bool DeltaVarint(std::string_view delta, std::size_t& at, std::uint64_t& value) {
  value = 0;
  for (unsigned shift = 0; at < delta.size(); shift += 7) {
    if (shift > 63) return false;
    const auto byte = static_cast<unsigned char>(delta[at++]);
    value |= std::uint64_t{byte & 0x7fu} << shift;
    if ((byte & 0x80u) == 0) return true;
  }
  return false;
}

// `base` with `delta` applied; an error names what in the delta is wrong.
Result<std::string> ApplyDelta(std::string_view base, std::string_view delta,
                               std::size_t max_size) {
  std::size_t at = 0;
  std::uint64_t base_size = 0;
  std::uint64_t result_size = 0;
  if (!DeltaVarint(delta, at, base_size) || !DeltaVarint(delta, at, result_size)) {
    return Fail(std::errc::illegal_byte_sequence, "a delta's header is cut short");
  }
  if (base_size != base.size()) {
    return Fail(std::errc::illegal_byte_sequence, "a delta is for a base of " +
                                                      std::to_string(base_size) + " bytes, not " +
                                                      std::to_string(base.size()));
  }
  if (result_size > max_size) {
    return Fail(std::errc::file_too_large,
                "object of " + std::to_string(result_size) + " bytes is too large");
  }
  std::string result;
  result.reserve(static_cast<std::size_t>(result_size));
  while (at < delta.size()) {
    const auto op = static_cast<unsigned char>(delta[at++]);
    if ((op & 0x80u) != 0) {
      // Copy from the base: the offset's and size's bytes present are flagged in `op`.
      std::uint64_t offset = 0;
      std::uint64_t size = 0;
      for (unsigned bit = 0; bit < 7; ++bit) {
        if ((op & (1u << bit)) == 0) continue;
        if (at >= delta.size()) {
          return Fail(std::errc::illegal_byte_sequence, "a delta's copy is cut short");
        }
        const auto byte = std::uint64_t{static_cast<unsigned char>(delta[at++])};
        if (bit < 4) {
          offset |= byte << (8 * bit);
        } else {
          size |= byte << (8 * (bit - 4));
        }
      }
      if (size == 0) size = 0x10000;
      if (offset > base.size() || size > base.size() - offset) {
        return Fail(std::errc::illegal_byte_sequence, "a delta copies from past its base");
      }
      if (size > result_size - result.size()) {
        return Fail(std::errc::illegal_byte_sequence, "a delta writes past its result");
      }
      result.append(base.substr(static_cast<std::size_t>(offset), static_cast<std::size_t>(size)));
    } else if (op != 0) {
      // Insert the next `op` bytes.
      if (op > delta.size() - at || op > result_size - result.size()) {
        return Fail(std::errc::illegal_byte_sequence, "a delta's insert is cut short");
      }
      result.append(delta.substr(at, op));
      at += op;
    } else {
      return Fail(std::errc::illegal_byte_sequence, "a delta holds the reserved op 0");
    }
  }
  if (result.size() != result_size) {
    return Fail(std::errc::illegal_byte_sequence, "a delta makes " + std::to_string(result.size()) +
                                                      " bytes, not " + std::to_string(result_size));
  }
  return result;
}

// Inflates one zlib stream from `in` into exactly `size` bytes; an error when it holds more
// or fewer, or is not zlib.
Result<std::string> InflateExactly(std::string_view in, std::uint64_t size,
                                   std::uint64_t* consumed = nullptr) {
  // zlib makes at most 1032 bytes of one: a size past that is a lie, not an allocation.
  if (size / 1032 > in.size() + 1) {
    return Fail(std::errc::illegal_byte_sequence,
                "its " + std::to_string(size) + " bytes cannot come from what follows");
  }
  // The buffer grows as zlib fills it, up to a byte more than `size` (to see a longer
  // stream): a size field alone allocates nothing.
  const std::uint64_t most = size + 1;
  std::string out(static_cast<std::size_t>(std::min<std::uint64_t>(most, 64 << 10)), '\0');
  z_stream stream{};
  if (inflateInit(&stream) != Z_OK) return Fail(std::errc::not_enough_memory, "zlib start");
  stream.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(in.data()));  // only read
  stream.avail_in = static_cast<uInt>(std::min<std::size_t>(in.size(), UINT_MAX));
  std::size_t filled = 0;
  int status = Z_OK;
  for (;;) {
    if (filled == out.size()) {
      if (out.size() >= most) break;
      out.resize(static_cast<std::size_t>(std::min<std::uint64_t>(most, 2 * out.size())));
    }
    const auto room = static_cast<uInt>(std::min<std::size_t>(out.size() - filled, UINT_MAX));
    stream.next_out = reinterpret_cast<Bytef*>(out.data() + filled);
    stream.avail_out = room;
    status = inflate(&stream, Z_NO_FLUSH);
    filled += room - stream.avail_out;
    if (status == Z_STREAM_END) break;
    // Z_BUF_ERROR with the buffer full: grow it; otherwise the input ran out.
    if (status == Z_OK || (status == Z_BUF_ERROR && filled == out.size())) continue;
    break;
  }
  const std::uint64_t produced = filled;
  if (consumed != nullptr) *consumed = stream.total_in;
  inflateEnd(&stream);
  if (status != Z_STREAM_END) {
    return Fail(std::errc::illegal_byte_sequence,
                produced > size ? "it inflates to more than its " + std::to_string(size) + " bytes"
                                : std::string("its zlib stream is damaged or cut short"));
  }
  if (produced != size) {
    return Fail(std::errc::illegal_byte_sequence, "it inflates to " + std::to_string(produced) +
                                                      " bytes, not " + std::to_string(size));
  }
  out.resize(static_cast<std::size_t>(size));
  return out;
}

// The first bytes a zlib stream inflates to (at most `size`), for a header.
std::string InflatePrefix(std::string_view in, std::size_t size) {
  std::string out(size, '\0');
  z_stream stream{};
  if (inflateInit(&stream) != Z_OK) return {};
  stream.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(in.data()));  // only read
  stream.avail_in = static_cast<uInt>(std::min<std::size_t>(in.size(), UINT_MAX));
  stream.next_out = reinterpret_cast<Bytef*>(out.data());
  stream.avail_out = static_cast<uInt>(out.size());
  (void)inflate(&stream, Z_SYNC_FLUSH);
  out.resize(out.size() - stream.avail_out);
  inflateEnd(&stream);
  return out;
}

}  // namespace

std::string_view ObjectTypeName(ObjectType type) {
  switch (type) {
    case ObjectType::kCommit:
      return "commit";
    case ObjectType::kTree:
      return "tree";
    case ObjectType::kBlob:
      return "blob";
    case ObjectType::kTag:
      return "tag";
  }
  return "?";
}

Result<std::unique_ptr<ParsedTree>> ParsedTree::Parse(std::string data) {
  auto tree = std::make_unique<ParsedTree>();
  tree->data = std::move(data);
  const std::string_view bytes = tree->data;
  std::size_t at = 0;
  while (at < bytes.size()) {
    // "MODE NAME\0" and 20 bytes of id.
    const auto space = bytes.find(' ', at);
    const auto nul = space == std::string_view::npos ? space : bytes.find('\0', space);
    if (nul == std::string_view::npos || bytes.size() - nul - 1 < kIdSize || space == at ||
        space - at > 7 || nul == space + 1) {
      return Fail(std::errc::illegal_byte_sequence, "a tree entry is malformed");
    }
    Entry entry;
    for (const char digit : bytes.substr(at, space - at)) {
      if (digit < '0' || digit > '7') {
        return Fail(std::errc::illegal_byte_sequence, "a tree entry's mode is not octal");
      }
      entry.mode = entry.mode * 8 + static_cast<std::uint32_t>(digit - '0');
    }
    entry.name = bytes.substr(space + 1, nul - space - 1);
    if (entry.name == "." || entry.name == ".." || entry.name.find('/') != std::string_view::npos) {
      return Fail(std::errc::illegal_byte_sequence,
                  "a tree entry is named '" + std::string(entry.name) + "'");
    }
    std::memcpy(entry.id.data(), bytes.data() + nul + 1, kIdSize);
    tree->entries.push_back(entry);
    at = nul + 1 + kIdSize;
  }
  std::sort(tree->entries.begin(), tree->entries.end(),
            [](const Entry& a, const Entry& b) { return a.name < b.name; });
  for (std::size_t i = 1; i < tree->entries.size(); ++i) {
    if (tree->entries[i].name == tree->entries[i - 1].name) {
      return Fail(std::errc::illegal_byte_sequence,
                  "the tree names '" + std::string(tree->entries[i].name) + "' twice");
    }
  }
  return tree;
}

const ParsedTree::Entry* ParsedTree::Find(std::string_view name) const {
  const auto found =
      std::lower_bound(entries.begin(), entries.end(), name,
                       [](const Entry& entry, std::string_view key) { return entry.name < key; });
  return found != entries.end() && found->name == name ? &*found : nullptr;
}

std::optional<ObjectId> ParseObjectId(std::string_view hex) {
  if (hex.size() != 2 * kIdSize) return std::nullopt;
  ObjectId id{};
  for (std::size_t i = 0; i < hex.size(); ++i) {
    const char c = hex[i];
    int nibble = 0;
    if (c >= '0' && c <= '9') {
      nibble = c - '0';
    } else if (c >= 'a' && c <= 'f') {
      nibble = c - 'a' + 10;
    } else if (c >= 'A' && c <= 'F') {
      nibble = c - 'A' + 10;
    } else {
      return std::nullopt;
    }
    id[i / 2] = static_cast<unsigned char>((id[i / 2] << 4) | nibble);
  }
  return id;
}

// One pack and its index (version 2), both mapped.
struct ObjectStore::Pack {
  std::string path;  // of the .pack
  MappedFile idx;
  MappedFile pack;
  std::uint32_t count = 0;
  std::size_t large_offsets = 0;            // 8-byte offsets after the 4-byte ones
  std::array<std::uint32_t, 256> fanout{};  // as read and checked at Open
  mutable std::uint64_t touched = 0;        // bytes of the pack read since its pages were dropped

  // Counts `bytes` read from the pack. A render reads some of every blob's object, and a
  // read maps more than it reads (the kernel maps the pages around a fault): past 64 KiB
  // counted, the pages mapped so far are dropped, so that the pack does not become
  // resident memory of the process as a whole (at 10,000 files, 4 MiB more otherwise).
  void Touch(std::uint64_t bytes) const {
    touched += bytes;
    if (touched > kResidentPackBytes) {
      pack.Drop();
      touched = 0;
    }
  }

  // `name`: the index's, "pack-*.idx", in the directory `dir` (`dir_path` names it).
  static Result<std::unique_ptr<Pack>> Open(int dir, const std::string& name,
                                            const std::string& dir_path) {
    auto pack = std::make_unique<Pack>();
    const std::string idx_path = dir_path + "/" + name;
    const std::string pack_name = name.substr(0, name.size() - 4) + ".pack";
    pack->path = dir_path + "/" + pack_name;
    auto idx_fd = OpenBeneath(dir, name, idx_path, 0);
    if (!idx_fd) return Fail(idx_fd.error());
    auto idx = MappedFile::Of(*idx_fd, idx_path);
    if (!idx) return Fail(idx.error());
    pack->idx = std::move(*idx);
    const unsigned char* p = pack->idx.data();
    const std::size_t size = pack->idx.size();
    if (size < kIdxHeader + 2 * kIdSize || Be32(p) != 0xff744f63u || Be32(p + 4) != 2) {
      return Corrupt(idx_path, "not a pack index of version 2");
    }
    // Kept: the mapping shows what the file's owner writes to it later.
    std::uint32_t previous = 0;
    for (std::size_t byte = 0; byte < 256; ++byte) {
      const std::uint32_t upto = Be32(p + 8 + 4 * byte);
      if (upto < previous) return Corrupt(idx_path, "its fan-out table goes down");
      pack->fanout[byte] = previous = upto;
    }
    pack->count = previous;
    const std::uint64_t fixed =
        kIdxHeader + std::uint64_t{pack->count} * (kIdSize + 8) + 2 * kIdSize;
    if (size < fixed || (size - fixed) % 8 != 0) {
      return Corrupt(idx_path, "its size does not fit " + std::to_string(pack->count) + " objects");
    }
    pack->large_offsets = (size - fixed) / 8;
    auto pack_fd = OpenBeneath(dir, pack_name, pack->path, 0);
    if (!pack_fd) return Fail(pack_fd.error());
    auto mapped = MappedFile::Of(*pack_fd, pack->path);
    if (!mapped) return Fail(mapped.error());
    pack->pack = std::move(*mapped);
    pack->pack.Random();
    const unsigned char* q = pack->pack.data();
    if (pack->pack.size() < 12 + kIdSize || std::memcmp(q, "PACK", 4) != 0 ||
        (Be32(q + 4) != 2 && Be32(q + 4) != 3)) {
      return Corrupt(pack->path, "not a pack of version 2 or 3");
    }
    if (Be32(q + 8) != pack->count) {
      return Corrupt(pack->path, "it holds " + std::to_string(Be32(q + 8)) +
                                     " objects, its index " + std::to_string(pack->count));
    }
    return pack;
  }

  // Where in the pack `id` is, when it is in it.
  [[nodiscard]] std::optional<std::uint64_t> Lookup(const ObjectId& id) const {
    const unsigned char* ids = idx.data() + kIdxHeader;
    std::uint32_t low = id[0] == 0 ? 0 : fanout[id[0] - 1];
    std::uint32_t high = fanout[id[0]];
    while (low < high) {
      const std::uint32_t middle = low + (high - low) / 2;
      const int order = std::memcmp(ids + std::size_t{middle} * kIdSize, id.data(), kIdSize);
      if (order == 0) return OffsetAt(middle);
      if (order < 0) {
        low = middle + 1;
      } else {
        high = middle;
      }
    }
    return std::nullopt;
  }

  [[nodiscard]] std::optional<std::uint64_t> OffsetAt(std::uint32_t index) const {
    const unsigned char* offsets = idx.data() + kIdxHeader + std::size_t{count} * (kIdSize + 4);
    const std::uint32_t small = Be32(offsets + 4 * std::size_t{index});
    if ((small & 0x80000000u) == 0) return small;
    const std::size_t large = small & 0x7fffffffu;
    if (large >= large_offsets) return std::nullopt;
    return Be64(offsets + 4 * std::size_t{count} + 8 * large);
  }

  // Where objects may be: after the header, before the trailing checksum.
  [[nodiscard]] std::uint64_t end() const { return pack.size() - kIdSize; }
};

ObjectStore::ObjectStore(std::string objects_dir, UniqueFd dir_fd)
    : dir_(std::move(objects_dir)), dir_fd_(std::move(dir_fd)) {}
ObjectStore::~ObjectStore() = default;

Result<std::unique_ptr<ObjectStore>> ObjectStore::Open(const std::string& objects_dir) {
  // The last component is not followed either: objects/ may belong to someone else.
  UniqueFd dir(open(objects_dir.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
  if (!dir.valid()) return FailErrno(errno, "open '" + objects_dir + "'");
  std::unique_ptr<ObjectStore> store(new ObjectStore(objects_dir, std::move(dir)));
  if (auto packs = store->Refresh(); !packs) return Fail(packs.error());
  return store;
}

Status ObjectStore::Refresh() {
  const std::string pack_dir = dir_ + "/pack";
  auto pack_fd = OpenBeneath(dir_fd_.get(), "pack", pack_dir, O_DIRECTORY);
  if (!pack_fd) {
    if (pack_fd.error().Is(std::errc::no_such_file_or_directory)) return {};
    return Fail(pack_fd.error());
  }
  // readdir's descriptor is a duplicate: `pack_fd` stays ours, for the files.
  DIR* dir = fdopendir(dup(pack_fd->get()));
  if (dir == nullptr) return FailErrno(errno, "open '" + pack_dir + "'");
  std::set<std::string> names;
  while (const dirent* entry = readdir(dir)) {
    const std::string_view name = entry->d_name;
    if (name.size() > 4 && name.substr(name.size() - 4) == ".idx") names.emplace(name);
  }
  closedir(dir);
  for (const auto& name : names) {
    const std::string pack_path = pack_dir + "/" + name.substr(0, name.size() - 4) + ".pack";
    if (std::any_of(packs_.begin(), packs_.end(),
                    [&](const auto& pack) { return pack->path == pack_path; })) {
      continue;
    }
    auto pack = Pack::Open(pack_fd->get(), name, pack_dir);
    if (!pack) {
      // An index written before its pack is renamed in (a fetch under way) is not yet one.
      if (pack.error().Is(std::errc::no_such_file_or_directory)) continue;
      return Fail(pack.error());
    }
    packs_.push_back(std::move(*pack));
  }
  return {};
}

std::optional<ObjectStore::Location> ObjectStore::FindInPacks(const ObjectId& id) {
  for (const auto& pack : packs_) {
    if (auto offset = pack->Lookup(id)) return Location{pack.get(), *offset};
  }
  return std::nullopt;
}

std::optional<ObjectStore::Location> ObjectStore::Find(const ObjectId& id) {
  if (auto found = FindInPacks(id)) return found;
  const std::string hex = ContentIdHex(id);
  if (OpenBeneath(dir_fd_.get(), hex.substr(0, 2) + "/" + hex.substr(2), dir_, 0)) {
    return Location{};
  }
  if (!Refresh()) return std::nullopt;
  return FindInPacks(id);
}

bool ObjectStore::Has(const ObjectId& id) { return Find(id).has_value(); }

std::string ObjectStore::Where(const Pack& pack, std::uint64_t offset) const {
  return "the object at offset " + std::to_string(offset) + " of " + pack.path;
}

Result<ObjectStore::Raw> ObjectStore::ReadRaw(Pack& pack, std::uint64_t offset) const {
  const std::uint64_t end = pack.end();
  if (offset < 12 || offset >= end) return Corrupt(Where(pack, offset), "it is outside the pack");
  const unsigned char* p = pack.pack.data();
  pack.Touch(4096);  // a header's page
  std::uint64_t at = offset;
  unsigned char byte = p[at++];
  Raw raw;
  raw.type = (byte >> 4) & 7;
  raw.size = byte & 15u;
  for (unsigned shift = 4; (byte & 0x80u) != 0; shift += 7) {
    if (at >= end || shift > 57) return Corrupt(Where(pack, offset), "its size is cut short");
    byte = p[at++];
    raw.size |= std::uint64_t{byte & 0x7fu} << shift;
  }
  if (raw.type == 6) {
    if (at >= end) return Corrupt(Where(pack, offset), "its base offset is cut short");
    byte = p[at++];
    std::uint64_t distance = byte & 0x7fu;
    while ((byte & 0x80u) != 0) {
      if (at >= end || distance > (std::uint64_t{1} << 56)) {
        return Corrupt(Where(pack, offset), "its base offset is cut short");
      }
      byte = p[at++];
      distance = ((distance + 1) << 7) | (byte & 0x7fu);
    }
    if (distance == 0 || distance > offset - 12) {
      return Corrupt(Where(pack, offset), "its base is outside the pack");
    }
    raw.base_offset = offset - distance;
  } else if (raw.type == 7) {
    if (end - at < kIdSize) return Corrupt(Where(pack, offset), "its base id is cut short");
    std::memcpy(raw.base_id.data(), p + at, kIdSize);
    at += kIdSize;
  } else if (!TypeOfNumber(raw.type)) {
    return Corrupt(Where(pack, offset), "its type " + std::to_string(raw.type) + " is unknown");
  }
  raw.data_offset = at;
  return raw;
}

Result<std::string> ObjectStore::Inflate(Pack& pack, std::uint64_t offset, std::uint64_t size,
                                         std::size_t max_size) const {
  if (size > max_size) {
    return Fail(std::errc::file_too_large,
                Where(pack, offset) + " is too large (" + std::to_string(size) + " bytes)");
  }
  const std::string_view in(reinterpret_cast<const char*>(pack.pack.data()) + offset,
                            static_cast<std::size_t>(pack.end() - offset));
  std::uint64_t consumed = 0;
  auto data = InflateExactly(in, size, &consumed);
  // A page is 4 KiB, however few of its bytes were read.
  pack.Touch(std::max<std::uint64_t>(consumed, 4096));
  if (!data) return Corrupt(Where(pack, offset), data.error().message());
  return data;
}

Result<GitObject> ObjectStore::ReadPacked(Pack& first, std::uint64_t first_offset,
                                          std::size_t max_size) {
  struct Link {
    Pack* pack;
    std::uint64_t offset;
    Raw raw;
  };
  std::vector<Link> deltas;
  GitObject object;
  Pack* pack = &first;
  std::uint64_t offset = first_offset;
  // What the chain makes, bases and deltas together: a chain of small deltas that each
  // copy much would otherwise be a way to make this process copy terabytes.
  std::uint64_t work = 0;
  const auto add_work = [&](std::uint64_t bytes) {
    work += bytes;
    return work <= kMaxReadWork;
  };
  for (;;) {
    if (auto cached = bases_.find({pack, offset}); cached != bases_.end()) {
      object = cached->second;
      break;
    }
    auto raw = ReadRaw(*pack, offset);
    if (!raw) return Fail(raw.error());
    if (auto type = TypeOfNumber(raw->type)) {
      // A base object. Only the object asked for is held to `max_size`.
      auto data =
          Inflate(*pack, raw->data_offset, raw->size, deltas.empty() ? max_size : kMaxObjectSize);
      if (!data) return Fail(data.error());
      object = {*type, std::move(*data)};
      (void)add_work(object.data.size());
      break;
    }
    if (deltas.empty()) {
      // The object asked for is a delta: what it makes is held to `max_size` before
      // anything of its chain is inflated.
      if (auto size = DeltaResultSize(*pack, *raw); size && *size > max_size) {
        return Fail(std::errc::file_too_large, Where(first, first_offset) + " is too large (" +
                                                   std::to_string(*size) + " bytes)");
      }
    }
    if (deltas.size() >= kMaxDeltaDepth) {
      return Corrupt(Where(first, first_offset), "its chain of deltas is too long");
    }
    deltas.push_back({pack, offset, *raw});
    if (raw->type == 6) {
      offset = raw->base_offset;
      continue;
    }
    auto base = FindInPacks(raw->base_id);
    if (!base) {
      // A base outside the packs: a loose object (a thin pack's completed base is not).
      auto loose = ReadLoose(raw->base_id, kMaxObjectSize);
      if (!loose) return Corrupt(Where(*pack, offset), "its base: " + loose.error().message());
      if (ObjectIdOf(loose->type, loose->data) != raw->base_id) {
        return Corrupt(Where(*pack, offset), "its base does not hash to its id");
      }
      object = std::move(*loose);
      break;
    }
    pack = base->pack;
    offset = base->offset;
  }
  // Apply the deltas, the base's first; keep what the next read may start from.
  for (auto link = deltas.rbegin(); link != deltas.rend(); ++link) {
    auto delta = Inflate(*link->pack, link->raw.data_offset, link->raw.size, kMaxObjectSize);
    if (!delta) return Fail(delta.error());
    if (!add_work(delta->size())) {
      return Corrupt(Where(first, first_offset), "its chain of deltas makes too much");
    }
    const bool last = std::next(link) == deltas.rend();
    auto applied = ApplyDelta(object.data, *delta, last ? max_size : kMaxObjectSize);
    if (!applied) {
      if (applied.error().Is(std::errc::file_too_large)) {
        return Fail(std::errc::file_too_large,
                    Where(*link->pack, link->offset) + ": " + applied.error().message());
      }
      return Corrupt(Where(*link->pack, link->offset), applied.error().message());
    }
    object.data = std::move(*applied);
    if (!add_work(object.data.size())) {
      return Corrupt(Where(first, first_offset), "its chain of deltas makes too much");
    }
    if (!last && object.data.size() <= kMaxCachedBase) {
      if (bases_bytes_ + object.data.size() > kBaseCacheBytes) {
        bases_.clear();
        bases_bytes_ = 0;
      }
      if (bases_.emplace(std::pair{link->pack, link->offset}, object).second) {
        bases_bytes_ += object.data.size();
      }
    }
  }
  // A base kept from an earlier read is held to this read's limit too.
  if (object.data.size() > max_size) {
    return Fail(std::errc::file_too_large, Where(first, first_offset) + " is too large (" +
                                               std::to_string(object.data.size()) + " bytes)");
  }
  return object;
}

std::optional<std::uint64_t> ObjectStore::DeltaResultSize(const Pack& pack, const Raw& raw) const {
  if (raw.type != 6 && raw.type != 7) return std::nullopt;
  const std::string_view in(reinterpret_cast<const char*>(pack.pack.data()) + raw.data_offset,
                            static_cast<std::size_t>(pack.end() - raw.data_offset));
  const std::string prefix = InflatePrefix(in, 20);
  std::size_t at = 0;
  std::uint64_t base_size = 0;
  std::uint64_t result_size = 0;
  if (!DeltaVarint(prefix, at, base_size) || !DeltaVarint(prefix, at, result_size)) {
    return std::nullopt;  // cut short: ApplyDelta, or Header, says so
  }
  return result_size;
}

Result<ObjectStore::Loose> ObjectStore::OpenLoose(const ObjectId& id) const {
  const std::string hex = ContentIdHex(id);
  Loose loose;
  const std::string relative = hex.substr(0, 2) + "/" + hex.substr(2);
  loose.path = dir_ + "/" + relative;
  auto fd = OpenBeneath(dir_fd_.get(), relative, loose.path, 0);
  if (!fd) return Fail(fd.error());
  // Read, not mapped: a file its owner truncates while mapped would kill this process.
  struct stat st {};
  if (fstat(fd->get(), &st) != 0) return FailErrno(errno, "stat '" + loose.path + "'");
  if (static_cast<std::uint64_t>(st.st_size) > kMaxObjectSize + (std::uint64_t{1} << 20)) {
    return Fail(std::errc::file_too_large, loose.path + " is too large");
  }
  loose.bytes.resize(static_cast<std::size_t>(st.st_size));
  std::size_t got = 0;
  while (got < loose.bytes.size()) {
    const ssize_t n = read(fd->get(), loose.bytes.data() + got, loose.bytes.size() - got);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return FailErrno(errno, "read '" + loose.path + "'");
    if (n == 0) break;
    got += static_cast<std::size_t>(n);
  }
  loose.bytes.resize(got);
  const std::string_view in = loose.bytes;
  // "TYPE SIZE\0", then the content.
  const std::string prefix = InflatePrefix(in, 32);
  const auto nul = prefix.find('\0');
  const auto space = prefix.find(' ');
  if (nul == std::string::npos || space == std::string::npos || space > nul) {
    return Corrupt(loose.path, "it does not start with an object header");
  }
  const auto type = TypeOfName(std::string_view(prefix).substr(0, space));
  const std::string_view digits = std::string_view(prefix).substr(space + 1, nul - space - 1);
  if (!type || digits.empty() || digits.size() > 18 ||
      !std::all_of(digits.begin(), digits.end(), [](char c) { return c >= '0' && c <= '9'; })) {
    return Corrupt(loose.path, "its object header is not one");
  }
  loose.header.type = *type;
  for (const char digit : digits) {
    loose.header.size = loose.header.size * 10 + static_cast<std::uint64_t>(digit - '0');
  }
  loose.header_size = nul + 1;
  return loose;
}

Result<GitObject> ObjectStore::ReadLoose(const ObjectId& id, std::size_t max_size) const {
  auto loose = OpenLoose(id);
  if (!loose) return Fail(loose.error());
  if (loose->header.size > max_size) {
    return Fail(std::errc::file_too_large,
                loose->path + " is too large (" + std::to_string(loose->header.size) + " bytes)");
  }
  const std::string_view in = loose->bytes;
  auto whole = InflateExactly(in, loose->header_size + loose->header.size);
  if (!whole) return Corrupt(loose->path, whole.error().message());
  whole->erase(0, loose->header_size);
  return GitObject{loose->header.type, std::move(*whole)};
}

Result<GitObject> ObjectStore::Read(const ObjectId& id, std::size_t max_size) {
  const auto location = Find(id);
  if (!location) {
    return Fail(std::errc::no_such_file_or_directory,
                "object " + ContentIdHex(id) + " is not in " + dir_);
  }
  auto object = location->pack != nullptr ? ReadPacked(*location->pack, location->offset, max_size)
                                          : ReadLoose(id, max_size);
  if (!object) return Fail(object.error().WithContext("object " + ContentIdHex(id)));
  if (ObjectIdOf(object->type, object->data) != id) {
    return Fail(std::errc::illegal_byte_sequence,
                "object " + ContentIdHex(id) + " is corrupt: its content does not hash to its id");
  }
  return object;
}

Result<ObjectHeader> ObjectStore::Header(const ObjectId& id) {
  const auto location = Find(id);
  if (!location) {
    return Fail(std::errc::no_such_file_or_directory,
                "object " + ContentIdHex(id) + " is not in " + dir_);
  }
  if (location->pack == nullptr) {
    auto loose = OpenLoose(id);
    if (!loose) return Fail(loose.error());
    return loose->header;
  }
  // The size is the first delta's result size; the type is its last base's.
  Pack* pack = location->pack;
  std::uint64_t offset = location->offset;
  std::optional<std::uint64_t> size;
  for (std::size_t depth = 0; depth <= kMaxDeltaDepth; ++depth) {
    auto raw = ReadRaw(*pack, offset);
    if (!raw) return Fail(raw.error());
    if (auto type = TypeOfNumber(raw->type)) return ObjectHeader{*type, size.value_or(raw->size)};
    if (!size) {
      size = DeltaResultSize(*pack, *raw);
      if (!size) return Corrupt(Where(*pack, offset), "a delta's header is cut short");
    }
    if (raw->type == 6) {
      offset = raw->base_offset;
      continue;
    }
    auto base = FindInPacks(raw->base_id);
    if (!base) {
      auto loose = OpenLoose(raw->base_id);
      if (!loose) return Corrupt(Where(*pack, offset), "its base: " + loose.error().message());
      return ObjectHeader{loose->header.type, *size};
    }
    pack = base->pack;
    offset = base->offset;
  }
  return Corrupt(Where(*location->pack, location->offset), "its chain of deltas is too long");
}

}  // namespace tether
