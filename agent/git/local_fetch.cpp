#include "agent/git/local_fetch.hpp"

#include <gcrypt.h>
#include <git2/sys/odb_backend.h>
#include <zlib.h>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <unordered_set>
#include <utility>
#include <vector>

#include "common/gcrypt_start.hpp"

namespace tether {

namespace {

std::string GitError(const std::string& what) {
  const git_error* error = git_error_last();
  return what + ": " + (error != nullptr ? error->message : "unknown error");
}

// The error of reading object `id` (a `what`: "commit", "object") from the source.
std::string ReadFailure(int code, const char* what, const git_oid& id) {
  char hex[GIT_OID_HEXSZ + 1] = {};
  git_oid_tostr(hex, sizeof(hex), &id);
  if (code == GIT_EMISMATCH) {
    return std::string(what) + " " + hex +
           " is corrupt in the source: its content does not hash to its id";
  }
  return GitError(std::string("read ") + what + " " + hex);
}

struct OidHash {
  std::size_t operator()(const git_oid& id) const noexcept {
    std::size_t hash = 0;
    std::memcpy(&hash, id.id, sizeof(hash));  // an object id is already a uniform hash
    return hash;
  }
};
struct OidEqual {
  bool operator()(const git_oid& a, const git_oid& b) const noexcept {
    return git_oid_equal(&a, &b) != 0;
  }
};

struct Wanted {
  git_oid id;
  git_object_t type;
};

template <typename T, void (*Free)(T*)>
struct Freer {
  void operator()(T* object) const { Free(object); }
};
template <typename T, void (*Free)(T*)>
using Owned = std::unique_ptr<T, Freer<T, Free>>;

// libgit2's check of every object it reads against its id, off while one lives.
struct UncheckedReads {
  UncheckedReads() { git_libgit2_opts(GIT_OPT_ENABLE_STRICT_HASH_VERIFICATION, 0); }
  ~UncheckedReads() { git_libgit2_opts(GIT_OPT_ENABLE_STRICT_HASH_VERIFICATION, 1); }
  UncheckedReads(const UncheckedReads&) = delete;
  UncheckedReads& operator=(const UncheckedReads&) = delete;
};

// The objects reachable from `tip` that `mirror_odb` lacks, each once. The walk stops at
// an object the mirror has: a fetched pack brings everything its objects reach.
bool Missing(git_repository* source, git_odb* mirror_odb, const git_oid& tip, git_object_t tip_type,
             std::vector<Wanted>& wanted, std::string& error) {
  std::unordered_set<git_oid, OidHash, OidEqual> seen;
  std::vector<Wanted> stack = {{tip, tip_type}};
  while (!stack.empty()) {
    const Wanted next = stack.back();
    stack.pop_back();
    // Without a rescan of the mirror's packs at each object it lacks (libgit2's default).
    if (!seen.insert(next.id).second ||
        git_odb_exists_ext(mirror_odb, &next.id, GIT_ODB_LOOKUP_NO_REFRESH) != 0) {
      continue;
    }
    wanted.push_back(next);
    if (next.type == GIT_OBJECT_BLOB) continue;  // a blob reaches nothing; read when packed
    // Looked up as the type it was named as: a tree named as a commit is an error here.
    git_object* raw = nullptr;
    if (const int read = git_object_lookup(&raw, source, &next.id, next.type); read != 0) {
      error = ReadFailure(read, git_object_type2string(next.type), next.id);
      return false;
    }
    Owned<git_object, git_object_free> object(raw);
    if (next.type == GIT_OBJECT_COMMIT) {
      const auto* commit = reinterpret_cast<const git_commit*>(object.get());
      stack.push_back({*git_commit_tree_id(commit), GIT_OBJECT_TREE});
      for (unsigned i = 0; i < git_commit_parentcount(commit); ++i) {
        stack.push_back({*git_commit_parent_id(commit, i), GIT_OBJECT_COMMIT});
      }
    } else if (next.type == GIT_OBJECT_TREE) {
      const auto* tree = reinterpret_cast<const git_tree*>(object.get());
      for (std::size_t i = 0; i < git_tree_entrycount(tree); ++i) {
        const git_tree_entry* entry = git_tree_entry_byindex(tree, i);
        const git_object_t type = git_tree_entry_type(entry);
        // A submodule's commit belongs to another repository: a fetch never brings it.
        if (type == GIT_OBJECT_BLOB || type == GIT_OBJECT_TREE) {
          stack.push_back({*git_tree_entry_id(entry), type});
        }
      }
    } else if (next.type == GIT_OBJECT_TAG) {
      const auto* tag = reinterpret_cast<const git_tag*>(object.get());
      stack.push_back({*git_tag_target_id(tag), git_tag_target_type(tag)});
    }
  }
  return true;
}

// The objects of `wanted`, read from `source_odb`, written into `packs` (the mirror's
// objects/pack) as one pack (version 2, whole objects: stored under kStoredBelow, at
// zlib's fastest level above) and its index (version 2), under the names git gives them.
// Each object is checked against its id as it is read; the index is made from those ids,
// the offsets and the CRC-32s written, without libgit2's indexer, which would inflate and
// hash every object again (a quarter of a first fetch of 1,000 small files).
class PackWriter {
 public:
  PackWriter(git_odb* source_odb, std::string packs, std::uint64_t max_fetch)
      : source_odb_(source_odb), packs_(std::move(packs)), max_fetch_(max_fetch) {}
  ~PackWriter() {
    if (sha1_ != nullptr) gcry_md_close(sha1_);
    if (deflating_) deflateEnd(&zlib_);
    for (auto* temp : {&pack_temp_, &index_temp_}) {
      if (!temp->empty()) unlink(temp->c_str());
    }
    if (fd_ >= 0) close(fd_);
  }
  PackWriter(const PackWriter&) = delete;
  PackWriter& operator=(const PackWriter&) = delete;

  bool Write(const std::vector<Wanted>& wanted, std::string& error) {
    if (!StartGcrypt() || gcry_md_open(&sha1_, GCRY_MD_SHA1, 0) != 0) {
      error = "fetch: libgcrypt has no SHA-1";
      return false;
    }
    if (deflateInit(&zlib_, Z_BEST_SPEED) != Z_OK) {
      error = "fetch: zlib cannot start";
      return false;
    }
    deflating_ = true;
    if (!Create(pack_temp_, "tmp_pack_", error)) return false;
    buffer_ = "PACK";
    AppendWord(buffer_, 2);
    AppendWord(buffer_, static_cast<std::uint32_t>(wanted.size()));
    entries_.reserve(wanted.size());
    for (const auto& object : wanted) {
      if (!Add(object, error) || (buffer_.size() >= kFlushAt && !Flush(error))) return false;
    }
    if (!Flush(error)) return false;
    // The trailer: the SHA-1 of all that came before it, which also names the pack.
    unsigned char checksum[kIdSize];
    std::memcpy(checksum, gcry_md_read(sha1_, GCRY_MD_SHA1), kIdSize);
    buffer_.assign(reinterpret_cast<const char*>(checksum), kIdSize);
    if (!WriteOut(error) || !Finish(error)) return false;
    if (!Create(index_temp_, "tmp_idx_", error)) return false;
    buffer_ = Index(checksum);
    if (!WriteOut(error) || !Finish(error)) return false;
    git_oid named{};
    std::memcpy(named.id, checksum, kIdSize);
    char hex[GIT_OID_HEXSZ + 1] = {};
    git_oid_tostr(hex, sizeof(hex), &named);
    // The pack first: a reader looks for an index, then opens its pack.
    const std::string name = packs_ + "/pack-" + hex;
    for (auto [temp, extension] : {std::pair{&pack_temp_, ".pack"}, {&index_temp_, ".idx"}}) {
      if (rename(temp->c_str(), (name + extension).c_str()) != 0) {
        error = "fetch: name the pack '" + name + extension + "': " + std::strerror(errno);
        return false;
      }
      temp->clear();
    }
    return true;
  }

 private:
  static constexpr std::size_t kIdSize = 20;
  static constexpr std::size_t kFlushAt = std::size_t{1} << 20;
  // Objects smaller than this are stored, not compressed: what compression saves on them
  // (a few hundred bytes) costs more time, to compress and to inflate again, than their
  // whole copy. The mirror is repacked, compressed, once it has gathered enough packs.
  static constexpr std::size_t kStoredBelow = std::size_t{16} << 10;

  struct Entry {
    git_oid id;
    std::uint32_t crc;
    std::uint64_t offset;
  };

  static void AppendWord(std::string& out, std::uint32_t word) {
    for (int shift = 24; shift >= 0; shift -= 8) out += static_cast<char>(word >> shift);
  }

  // A new file in packs_, named `prefix` and six random characters (git's own temporary
  // names, which a fetch that did not finish leaves behind), read-only as git makes packs.
  bool Create(std::string& temp, const char* prefix, std::string& error) {
    if (fd_ >= 0) close(fd_);
    (void)mkdir(packs_.c_str(), 0755);  // a mirror whose objects/pack went missing
    std::string path = packs_ + "/" + prefix + "XXXXXX";
    fd_ = mkostemp(path.data(), O_CLOEXEC);
    if (fd_ >= 0) temp = std::move(path);  // removed by the destructor unless renamed
    if (fd_ < 0 || fchmod(fd_, 0444) != 0) {
      error = "fetch: create a pack in '" + packs_ + "': " + std::strerror(errno);
      return false;
    }
    return true;
  }

  bool WriteOut(std::string& error) {
    for (std::size_t done = 0; done < buffer_.size();) {
      const ssize_t wrote = write(fd_, buffer_.data() + done, buffer_.size() - done);
      if (wrote < 0 && errno == EINTR) continue;
      if (wrote <= 0) {
        error = "fetch: write a pack in '" + packs_ + "': " + std::strerror(errno);
        return false;
      }
      done += static_cast<std::size_t>(wrote);
    }
    buffer_.clear();
    return true;
  }

  bool Finish(std::string& error) {
    const int fd = fd_;
    fd_ = -1;
    if (close(fd) != 0) {
      error = "fetch: write a pack in '" + packs_ + "': " + std::strerror(errno);
      return false;
    }
    return true;
  }

  bool Add(const Wanted& wanted, std::string& error) {
    git_odb_object* raw = nullptr;
    char hex[GIT_OID_HEXSZ + 1] = {};
    if (const int read = git_odb_read(&raw, source_odb_, &wanted.id); read != 0) {
      error = "fetch: " + ReadFailure(read, "object", wanted.id);
      return false;
    }
    Owned<git_odb_object, git_odb_object_free> object(raw);
    // A tree entry or a tag that names an object of another type than it says (a tree
    // as a blob, whose own entries the walk would then never have looked for).
    const git_object_t type = git_odb_object_type(object.get());
    if (type != wanted.type) {
      error = std::string("fetch: object ") + git_oid_tostr(hex, sizeof(hex), &wanted.id) +
              " is a " + git_object_type2string(type) + " where the source names a " +
              git_object_type2string(wanted.type);
      return false;
    }
    const std::size_t length = git_odb_object_size(object.get());
    const auto* data = static_cast<const unsigned char*>(git_odb_object_data(object.get()));
    if (length > UINT32_MAX) {
      error = std::string("fetch: object ") + git_oid_tostr(hex, sizeof(hex), &wanted.id) +
              " is over 4 GiB";
      return false;
    }
    // What the pack holds is what the ids say, before the mirror takes any of it: the
    // SHA-1 of "TYPE SIZE\0" and the content (read unchecked: see FetchLocal).
    char header[32];
    const int header_size =
        std::snprintf(header, sizeof(header), "%s %zu", git_object_type2string(type), length) + 1;
    gcry_buffer_t parts[2] = {};
    parts[0].size = parts[0].len = static_cast<std::size_t>(header_size);
    parts[0].data = header;
    parts[1].size = parts[1].len = length;
    parts[1].data = const_cast<unsigned char*>(data);
    unsigned char id[kIdSize];
    if (gcry_md_hash_buffers(GCRY_MD_SHA1, 0, id, parts, 2) != 0 ||
        std::memcmp(id, wanted.id.id, kIdSize) != 0) {
      error = "fetch: " + ReadFailure(GIT_EMISMATCH, "object", wanted.id);
      return false;
    }
    const std::size_t start = buffer_.size();
    // The entry's header: the type and the size, 4 bits then 7 per byte, low bits first.
    std::size_t size = length;
    unsigned byte = (static_cast<unsigned>(type) << 4) | (size & 0x0f);
    for (size >>= 4; size != 0; size >>= 7) {
      buffer_ += static_cast<char>(byte | 0x80);
      byte = size & 0x7f;
    }
    buffer_ += static_cast<char>(byte);
    if (length < kStoredBelow) {
      // A zlib stream of one stored block: its header (no preset dictionary), the block's
      // (final, stored), its length and that length's complement, the bytes, their Adler-32.
      const auto n = static_cast<std::uint16_t>(length);
      const char block[] = {'\x78',
                            '\x01',
                            '\x01',
                            static_cast<char>(n & 0xff),
                            static_cast<char>(n >> 8),
                            static_cast<char>(~n & 0xff),
                            static_cast<char>((~n >> 8) & 0xff)};
      buffer_.append(block, sizeof(block));
      buffer_.append(reinterpret_cast<const char*>(data), length);
      AppendWord(buffer_, static_cast<std::uint32_t>(
                              adler32(adler32(0, nullptr, 0), data, static_cast<uInt>(length))));
    } else {
      const std::size_t at = buffer_.size();
      buffer_.resize(at + deflateBound(&zlib_, length));
      deflateReset(&zlib_);
      zlib_.next_in = const_cast<Bytef*>(data);
      zlib_.avail_in = static_cast<uInt>(length);
      zlib_.next_out = reinterpret_cast<Bytef*>(buffer_.data() + at);
      zlib_.avail_out = static_cast<uInt>(buffer_.size() - at);
      if (deflate(&zlib_, Z_FINISH) != Z_STREAM_END) {
        error =
            std::string("fetch: compress object ") + git_oid_tostr(hex, sizeof(hex), &wanted.id);
        return false;
      }
      buffer_.resize(buffer_.size() - zlib_.avail_out);
    }
    const auto* entry = reinterpret_cast<const Bytef*>(buffer_.data() + start);
    entries_.push_back(
        {wanted.id,
         static_cast<std::uint32_t>(
             crc32(crc32(0, nullptr, 0), entry, static_cast<uInt>(buffer_.size() - start))),
         written_ + start});
    return true;
  }

  bool Flush(std::string& error) {
    written_ += buffer_.size();
    if (max_fetch_ != 0 && written_ > max_fetch_) {
      error = "fetch: the source's objects come to more than source.max_fetch (" +
              std::to_string(max_fetch_) + " bytes); stopped";
      return false;
    }
    gcry_md_write(sha1_, buffer_.data(), buffer_.size());
    return WriteOut(error);
  }

  // The pack's index (version 2): a fan-out table of how many ids start with each byte
  // or a smaller one, the sorted ids, their entries' CRC-32s, their offsets (31 bits, or
  // the place of 64 in a table after), the pack's checksum, then the index's own.
  std::string Index(const unsigned char* pack_checksum) {
    std::sort(entries_.begin(), entries_.end(),
              [](const Entry& a, const Entry& b) { return git_oid_cmp(&a.id, &b.id) < 0; });
    std::string index = "\377tOc";
    AppendWord(index, 2);
    std::size_t counted = 0;
    for (unsigned first = 0; first < 256; ++first) {
      while (counted < entries_.size() && entries_[counted].id.id[0] == first) ++counted;
      AppendWord(index, static_cast<std::uint32_t>(counted));
    }
    for (const auto& entry : entries_) {
      index.append(reinterpret_cast<const char*>(entry.id.id), kIdSize);
    }
    for (const auto& entry : entries_) AppendWord(index, entry.crc);
    std::vector<std::uint64_t> large;
    for (const auto& entry : entries_) {
      if (entry.offset < 0x80000000U) {
        AppendWord(index, static_cast<std::uint32_t>(entry.offset));
      } else {
        AppendWord(index, 0x80000000U | static_cast<std::uint32_t>(large.size()));
        large.push_back(entry.offset);
      }
    }
    for (const std::uint64_t offset : large) {
      AppendWord(index, static_cast<std::uint32_t>(offset >> 32));
      AppendWord(index, static_cast<std::uint32_t>(offset));
    }
    index.append(reinterpret_cast<const char*>(pack_checksum), kIdSize);
    unsigned char checksum[kIdSize];
    gcry_md_hash_buffer(GCRY_MD_SHA1, checksum, index.data(), index.size());
    index.append(reinterpret_cast<const char*>(checksum), kIdSize);
    return index;
  }

  git_odb* source_odb_;
  std::string packs_;
  std::uint64_t max_fetch_;
  std::uint64_t written_ = 0;  // bytes of the pack flushed
  gcry_md_hd_t sha1_ = nullptr;
  z_stream zlib_ = {};  // at zlib's fastest level
  bool deflating_ = false;
  int fd_ = -1;
  std::string pack_temp_, index_temp_;  // while not renamed into place
  std::vector<Entry> entries_;
  std::string buffer_;
};

}  // namespace

bool FetchLocal(git_repository* mirror, const std::string& source_path, const std::string& ref,
                std::uint64_t max_fetch, std::string& error) {
  git_repository* raw_source = nullptr;
  if (git_repository_open_ext(&raw_source, source_path.c_str(), GIT_REPOSITORY_OPEN_NO_SEARCH,
                              nullptr) != 0) {
    error = GitError("fetch: open '" + source_path + "'");
    return false;
  }
  Owned<git_repository, git_repository_free> source(raw_source);
  git_reference* raw_named = nullptr;
  if (git_reference_lookup(&raw_named, source.get(), ref.c_str()) != 0) {
    error = GitError("fetch: ref '" + ref + "' in '" + source_path + "'");
    return false;
  }
  Owned<git_reference, git_reference_free> named(raw_named);
  git_reference* raw_direct = nullptr;
  if (git_reference_resolve(&raw_direct, named.get()) != 0) {
    error = GitError("fetch: resolve '" + ref + "'");
    return false;
  }
  Owned<git_reference, git_reference_free> direct(raw_direct);
  const git_oid tip = *git_reference_target(direct.get());

  git_odb* raw_odb = nullptr;
  if (git_repository_odb(&raw_odb, source.get()) != 0) {
    error = GitError("fetch: open the source's objects");
    return false;
  }
  Owned<git_odb, git_odb_free> source_odb(raw_odb);
  // The mirror's packs alone: a mirror has no loose objects (each fetch brings a pack, a
  // repack keeps none), and asking for one costs a failed access(2) per object sought.
  const std::string objects = std::string(git_repository_path(mirror)) + "objects";
  git_odb_backend* backend = nullptr;
  if (git_odb_new(&raw_odb) != 0) {
    error = GitError("fetch: open the mirror's objects");
    return false;
  }
  Owned<git_odb, git_odb_free> mirror_odb(raw_odb);
  if (git_odb_backend_pack(&backend, objects.c_str()) != 0 ||
      git_odb_add_backend(mirror_odb.get(), backend, 1) != 0) {
    if (backend != nullptr) backend->free(backend);
    error = GitError("fetch: read the mirror's packs");
    return false;
  }
  std::size_t size = 0;
  git_object_t type = GIT_OBJECT_INVALID;
  if (git_odb_read_header(&size, &type, source_odb.get(), &tip) != 0) {
    error = GitError("fetch: read '" + ref + "'");
    return false;
  }
  std::vector<Wanted> wanted;
  {
    // The source's objects read unchecked by libgit2, whose SHA-1 (one that detects
    // collisions: about 130 MB/s here, libgcrypt's 1 GB/s) was half of each read: the
    // pack writer checks each object it packs, and each commit and tree the walk reads is
    // packed, so checked, before the mirror takes any of them.
    UncheckedReads unchecked;
    if (!Missing(source.get(), mirror_odb.get(), tip, type, wanted, error)) {
      error = "fetch: " + error;
      return false;
    }
    if (!wanted.empty()) {
      PackWriter writer(source_odb.get(), objects + "/pack", max_fetch);
      if (!writer.Write(wanted, error)) return false;
    }
  }
  // The repository's own objects see the new pack at their next lookup.
  if (!wanted.empty() && git_repository_odb(&raw_odb, mirror) == 0) {
    Owned<git_odb, git_odb_free> objects(raw_odb);
    (void)git_odb_refresh(objects.get());
  }
  git_reference* made = nullptr;
  if (git_reference_create(&made, mirror, "refs/tether/fetched", &tip, /*force=*/1, nullptr) != 0) {
    error = GitError("fetch: set refs/tether/fetched");
    return false;
  }
  git_reference_free(made);
  return true;
}

}  // namespace tether
