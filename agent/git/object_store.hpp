// A Git repository's objects read straight from its objects/ directory, loose and packed
// (pack index v2, offset and reference deltas), without libgit2: what a cycle needs of the
// mirror (commits, trees, blobs) with zlib and a SHA-1 alone, so that the process that
// reads it need not load libgit2 and the thirteen libraries it brings.
//
// Every object read is checked against its id, the SHA-1 of its header and content: the
// mirror is written by the unprivileged git worker, and an id is all that a signed commit
// vouches for. An object that does not hash to its id is an error, never returned.
//
// Not read: alternates, multi-pack indexes, commit graphs, pack index v1 (none of which a
// mirror that libgit2 fetches into has), and shallow or promisor objects.
//
// Threading: one caller at a time.
#pragma once

#include <sys/types.h>

#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "common/content_id.hpp"
#include "common/error.hpp"
#include "common/unique_fd.hpp"

namespace tether {

// A Git object id (SHA-1), as ContentId is a blob's.
using ObjectId = ContentId;

enum class ObjectType { kCommit = 1, kTree = 2, kBlob = 3, kTag = 4 };

[[nodiscard]] std::string_view ObjectTypeName(ObjectType type);

// Parses 40 hex digits (either case); nullopt for anything else.
[[nodiscard]] std::optional<ObjectId> ParseObjectId(std::string_view hex);

struct GitObject {
  ObjectType type = ObjectType::kBlob;
  std::string data;
};

struct ObjectHeader {
  ObjectType type = ObjectType::kBlob;
  std::uint64_t size = 0;
};

// A tree object's entries, sorted by name for lookup (Git sorts a directory as if its name
// ended in '/': this order is the plain one). Names are views of `data`: not copyable.
struct ParsedTree {
  struct Entry {
    std::string_view name;
    std::uint32_t mode = 0;  // as Git writes it: 0100644, 0100755, 0120000, 040000, 0160000
    ObjectId id{};
  };
  std::string data;  // the tree object
  std::vector<Entry> entries;

  ParsedTree() = default;
  ParsedTree(const ParsedTree&) = delete;
  ParsedTree& operator=(const ParsedTree&) = delete;

  // EILSEQ when `data` is not a tree object's content.
  [[nodiscard]] static Result<std::unique_ptr<ParsedTree>> Parse(std::string data);
  [[nodiscard]] const Entry* Find(std::string_view name) const;
};

// The largest object Read returns unless told otherwise, and the largest that any read
// inflates, as a delta's base or result: what a hostile size field could make it allocate.
inline constexpr std::size_t kMaxObjectSize = std::size_t{256} << 20;

class MappedFile;

class ObjectStore {
 public:
  // `objects_dir`: the repository's objects/ (a bare repository's DIR/objects). Reads the
  // pack indexes there; fails when the directory cannot be opened or an index is corrupt.
  [[nodiscard]] static Result<std::unique_ptr<ObjectStore>> Open(const std::string& objects_dir);
  ~ObjectStore();
  ObjectStore(const ObjectStore&) = delete;
  ObjectStore& operator=(const ObjectStore&) = delete;

  // The object, checked against `id`. ENOENT when the store does not have it (after one
  // look for packs written since), EFBIG past `max_size`, EILSEQ when it is corrupt.
  [[nodiscard]] Result<GitObject> Read(const ObjectId& id, std::size_t max_size = kMaxObjectSize);

  // The object's type and size, as its pack or loose header says (inflating no more than
  // a delta's first bytes): unchecked until the object is read.
  [[nodiscard]] Result<ObjectHeader> Header(const ObjectId& id);

  [[nodiscard]] bool Has(const ObjectId& id);

  // Looks for packs written since Open (a fetch adds one).
  [[nodiscard]] Status Refresh();

 private:
  struct Pack;
  // A loose object's file, mapped, and its header.
  struct Loose {
    std::string path;
    std::string bytes;  // the file, compressed
    ObjectHeader header;
    std::size_t header_size = 0;  // of "TYPE SIZE\0"
  };
  struct Location {
    Pack* pack = nullptr;  // null: a loose object
    std::uint64_t offset = 0;
  };
  struct Raw {
    int type = 0;  // a pack's type number: 1-4, 6 (offset delta), 7 (reference delta)
    std::uint64_t size = 0;
    std::uint64_t data_offset = 0;  // where the zlib stream starts
    std::uint64_t base_offset = 0;  // an offset delta's base
    ObjectId base_id{};             // a reference delta's base
  };

  ObjectStore(std::string objects_dir, UniqueFd dir_fd);
  std::optional<Location> Find(const ObjectId& id);
  std::optional<Location> FindInPacks(const ObjectId& id);
  Result<Raw> ReadRaw(Pack& pack, std::uint64_t offset) const;
  Result<GitObject> ReadPacked(Pack& pack, std::uint64_t offset, std::size_t max_size);
  // The size the delta `raw` makes, from its first bytes; nullopt for any other object,
  // or a delta whose header is cut short.
  std::optional<std::uint64_t> DeltaResultSize(const Pack& pack, const Raw& raw) const;
  Result<Loose> OpenLoose(const ObjectId& id) const;
  Result<GitObject> ReadLoose(const ObjectId& id, std::size_t max_size) const;
  Result<std::string> Inflate(Pack& pack, std::uint64_t offset, std::uint64_t size,
                              std::size_t max_size) const;
  std::string Where(const Pack& pack, std::uint64_t offset) const;

  std::string dir_;
  UniqueFd dir_fd_;  // objects/, which every file is opened beneath
  std::vector<std::unique_ptr<Pack>> packs_;
  // Bases of deltas resolved lately, by (pack, offset): a tree walk reads many objects
  // that are deltas of one another. Emptied when it holds more than kBaseCacheBytes.
  std::map<std::pair<const Pack*, std::uint64_t>, GitObject> bases_;
  std::size_t bases_bytes_ = 0;
};

}  // namespace tether
