#include "agent/git/local_fetch.hpp"

#include <gcrypt.h>
#include <zlib.h>

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

// The objects of `wanted`, read from `source_odb`, as one pack (version 2, whole objects:
// stored under kStoredBelow, at zlib's fastest level above) into `mirror_odb`'s indexer.
class PackWriter {
 public:
  PackWriter(git_odb* source_odb, std::uint64_t max_fetch)
      : source_odb_(source_odb), max_fetch_(max_fetch) {}
  ~PackWriter() {
    if (pack_ != nullptr) pack_->free(pack_);
    if (sha1_ != nullptr) gcry_md_close(sha1_);
    for (int i = 0; i < deflating_; ++i) deflateEnd(&zlib_[i]);
  }
  PackWriter(const PackWriter&) = delete;
  PackWriter& operator=(const PackWriter&) = delete;

  bool Write(git_odb* mirror_odb, const std::vector<Wanted>& wanted, std::string& error) {
    if (!StartGcrypt() || gcry_md_open(&sha1_, GCRY_MD_SHA1, 0) != 0) {
      error = "fetch: libgcrypt has no SHA-1";
      return false;
    }
    for (const int level : {Z_NO_COMPRESSION, Z_BEST_SPEED}) {
      if (deflateInit(&zlib_[deflating_], level) != Z_OK) {
        error = "fetch: zlib cannot start";
        return false;
      }
      ++deflating_;
    }
    if (git_odb_write_pack(&pack_, mirror_odb, nullptr, nullptr) != 0) {
      error = GitError("fetch: start the pack");
      return false;
    }
    buffer_ = "PACK";
    const std::size_t count = wanted.size();
    for (const std::uint32_t word : {std::uint32_t{2}, static_cast<std::uint32_t>(count)}) {
      for (int shift = 24; shift >= 0; shift -= 8) buffer_ += static_cast<char>(word >> shift);
    }
    for (const auto& object : wanted) {
      if (!Add(object, error) || (buffer_.size() >= kFlushAt && !Flush(error))) return false;
    }
    if (!Flush(error)) return false;
    // The trailer: the SHA-1 of all that came before it.
    if (pack_->append(pack_, gcry_md_read(sha1_, GCRY_MD_SHA1), 20, &stats_) != 0 ||
        pack_->commit(pack_, &stats_) != 0) {
      error = GitError("fetch: index the pack");
      return false;
    }
    return true;
  }

 private:
  static constexpr std::size_t kFlushAt = std::size_t{1} << 20;
  // Objects smaller than this are stored, not compressed: what compression saves on them
  // (a few hundred bytes) costs more time, to compress and to inflate again, than their
  // whole copy. The mirror is repacked, compressed, once it has gathered enough packs.
  static constexpr std::size_t kStoredBelow = std::size_t{16} << 10;

  bool Add(const Wanted& wanted, std::string& error) {
    git_odb_object* raw = nullptr;
    char hex[GIT_OID_HEXSZ + 1] = {};
    // Read as libgit2 reads any object, hashed against its id: what the pack holds is
    // what the ids say, before the mirror takes any of it.
    if (const int read = git_odb_read(&raw, source_odb_, &wanted.id); read != 0) {
      error = "fetch: " + ReadFailure(read, "object", wanted.id);
      return false;
    }
    Owned<git_odb_object, git_odb_object_free> object(raw);
    // A tree entry or a tag that names an object of another type than it says (a tree
    // as a blob, whose own entries the walk would then never have looked for).
    if (git_odb_object_type(object.get()) != wanted.type) {
      error = std::string("fetch: object ") + git_oid_tostr(hex, sizeof(hex), &wanted.id) +
              " is a " + git_object_type2string(git_odb_object_type(object.get())) +
              " where the source names a " + git_object_type2string(wanted.type);
      return false;
    }
    const std::size_t length = git_odb_object_size(object.get());
    if (length > UINT32_MAX) {
      error = std::string("fetch: object ") + git_oid_tostr(hex, sizeof(hex), &wanted.id) +
              " is over 4 GiB";
      return false;
    }
    // The entry's header: the type and the size, 4 bits then 7 per byte, low bits first.
    std::size_t size = length;
    unsigned byte = (static_cast<unsigned>(wanted.type) << 4) | (size & 0x0f);
    for (size >>= 4; size != 0; size >>= 7) {
      buffer_ += static_cast<char>(byte | 0x80);
      byte = size & 0x7f;
    }
    buffer_ += static_cast<char>(byte);
    const std::size_t start = buffer_.size();
    z_stream& zlib = zlib_[length < kStoredBelow ? 0 : 1];
    buffer_.resize(start + deflateBound(&zlib, length));
    deflateReset(&zlib);
    zlib.next_in = static_cast<Bytef*>(const_cast<void*>(git_odb_object_data(object.get())));
    zlib.avail_in = static_cast<uInt>(length);
    zlib.next_out = reinterpret_cast<Bytef*>(buffer_.data() + start);
    zlib.avail_out = static_cast<uInt>(buffer_.size() - start);
    if (deflate(&zlib, Z_FINISH) != Z_STREAM_END) {
      error = std::string("fetch: compress object ") + git_oid_tostr(hex, sizeof(hex), &wanted.id);
      return false;
    }
    buffer_.resize(buffer_.size() - zlib.avail_out);
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
    if (pack_->append(pack_, buffer_.data(), buffer_.size(), &stats_) != 0) {
      error = GitError("fetch: index the pack");
      return false;
    }
    buffer_.clear();
    return true;
  }

  git_odb* source_odb_;
  std::uint64_t max_fetch_;
  std::uint64_t written_ = 0;
  git_odb_writepack* pack_ = nullptr;
  gcry_md_hd_t sha1_ = nullptr;
  z_stream zlib_[2] = {};  // stored, and zlib's fastest level
  int deflating_ = 0;      // how many of them are started
  git_indexer_progress stats_{};
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
  if (git_repository_odb(&raw_odb, mirror) != 0) {
    error = GitError("fetch: open the mirror's objects");
    return false;
  }
  Owned<git_odb, git_odb_free> mirror_odb(raw_odb);
  std::size_t size = 0;
  git_object_t type = GIT_OBJECT_INVALID;
  if (git_odb_read_header(&size, &type, source_odb.get(), &tip) != 0) {
    error = GitError("fetch: read '" + ref + "'");
    return false;
  }
  // The packs this worker wrote since it opened the mirror: looked for once, here.
  if (git_odb_refresh(mirror_odb.get()) != 0) {
    error = GitError("fetch: read the mirror's packs");
    return false;
  }
  std::vector<Wanted> wanted;
  if (!Missing(source.get(), mirror_odb.get(), tip, type, wanted, error)) {
    error = "fetch: " + error;
    return false;
  }
  if (!wanted.empty()) {
    PackWriter writer(source_odb.get(), max_fetch);
    if (!writer.Write(mirror_odb.get(), wanted, error)) return false;
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
