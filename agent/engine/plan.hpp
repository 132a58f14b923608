// Planning the filesystem resources: observe a path (reads only), then decide, in pure
// functions, what an apply would do to it. The engine's transaction (to come) applies
// these actions; dry-run is observe + plan.
#pragma once

#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <iterator>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "agent/desired/desired_state.hpp"
#include "common/error.hpp"
#include "common/filesystem.hpp"
#include "common/sparse_text.hpp"

namespace tether {

enum class ActionType {
  kInSync,    // nothing to do
  kCreate,    // nothing is there yet
  kUpdate,    // content, attributes, target, or a file replaced by a symlink (or back)
  kDelete,    // prune: tether made it and the profile no longer has it
  kConflict,  // refused: e.g. a directory where the profile wants a file
};

// "in sync", "create", "update", "delete", "conflict".
[[nodiscard]] const char* ActionTypeName(ActionType type);

// What differs, in order: "content", "mode 0644 -> 0600", ... Used like a vector of
// strings, but it takes the room of one pointer, and its changes are held in one block of
// their exact size (a plan has an action per resource, and most have one change or none).
// An element is a view into the block, valid until the list changes. A change is a
// non-empty text: pushing an empty one does nothing, and a NUL in one (which no path,
// name or version holds) would split it in two.
class ChangeList {
 public:
  class const_iterator {
   public:
    using iterator_category = std::forward_iterator_tag;
    using value_type = std::string_view;
    using difference_type = std::ptrdiff_t;
    using pointer = void;
    using reference = std::string_view;

    const_iterator() = default;
    std::string_view operator*() const;
    const_iterator& operator++();
    const_iterator operator++(int) {
      const_iterator before = *this;
      ++*this;
      return before;
    }
    bool operator==(const const_iterator& other) const { return pos_ == other.pos_; }

   private:
    friend class ChangeList;
    const_iterator(std::string_view text, std::size_t pos) : text_(text), pos_(pos) {}

    std::string_view text_;
    std::size_t pos_ = 0;  // where the current change starts; text_.size() + 1 at the end
  };

  ChangeList() = default;
  ChangeList(std::initializer_list<std::string_view> changes);
  ChangeList(const ChangeList& other) { Assign(other.text(), {}); }
  ChangeList(ChangeList&&) noexcept = default;
  ChangeList& operator=(const ChangeList& other) {
    if (this != &other) Assign(other.text(), {});
    return *this;
  }
  ChangeList& operator=(ChangeList&&) noexcept = default;
  ~ChangeList() = default;

  [[nodiscard]] bool empty() const { return block_ == nullptr; }
  [[nodiscard]] std::size_t size() const;
  [[nodiscard]] const_iterator begin() const { return {text(), empty() ? 1u : 0u}; }
  [[nodiscard]] const_iterator end() const { return {text(), text().size() + 1}; }

  void push_back(std::string_view change);
  void push_front(std::string_view change);
  void clear() { block_.reset(); }

  // The changes separated by `separator`: "content, mode 0644 -> 0600".
  [[nodiscard]] std::string Join(std::string_view separator) const;

  friend bool operator==(const ChangeList& a, const ChangeList& b) { return a.text() == b.text(); }
  friend bool operator==(const ChangeList& list, const std::vector<std::string>& changes);

 private:
  // The changes, each after the first preceded by a NUL.
  [[nodiscard]] std::string_view text() const;
  // Makes the list `first`, then `second` (if any) after a NUL.
  void Assign(std::string_view first, std::string_view second);

  // The length of the text (a std::size_t), then the text; null while there is none.
  std::unique_ptr<char[]> block_;
};

struct Action {
  std::string id;
  ActionType type = ActionType::kInSync;
  ChangeList changes;  // what differs: "content", "mode 0644 -> 0600", ...
  SparseText diff;     // a unified diff of the content; a summary for secrets
  SparseText reason;   // why, for kConflict
  // For an in-sync path: what it looked like (size, times, inode, attributes, content
  // hash), so the next plan can trust an unchanged stat instead of reading it again.
  std::string fingerprint;
};

// What is at a path now. `content` is read only for regular files when asked.
struct PathObservation {
  bool exists = false;
  FileStat stat;
  std::optional<std::string> content;
  std::string content_sha256;         // of `content`, when read
  std::optional<std::string> target;  // of a symlink
};

// Puts back at `path` what tether took over there, as the inventory's `original` recorded
// it: a file's content, mode and owner; a symlink's target; a directory's mode and owner.
// "none" (nothing was there) does nothing. Shared by the kinds that take over paths.
[[nodiscard]] Status RestoreOriginal(Filesystem& fs, const std::string& path,
                                     const nlohmann::json& original);

// What the observation found, as undo records and inventories name it: "none", "file",
// "directory", "symlink" or "other".
[[nodiscard]] const char* ObservedTypeName(const PathObservation& observed);

// Reads what is at `path` (never following a symlink). A missing path is an observation
// (exists = false), not an error.
[[nodiscard]] Result<PathObservation> ObservePath(Filesystem& fs, std::string_view path,
                                                  bool read_content, std::size_t max_size);

// The owner and group a resource asks for, as ids (names resolved by the caller); unset:
// whatever is there (new paths get the writer's).
struct Ownership {
  std::optional<std::uint32_t> uid;
  std::optional<std::uint32_t> gid;
};

// True when a plan of `spec` against `observed` shows the desired content itself (a
// diff): something is there, and it is not that content. The caller then passes the
// content (ContentOf) to PlanFile; otherwise the content is never read.
[[nodiscard]] bool NeedsContent(const FileSpec& spec, const PathObservation& observed);

// `content`: the desired content when NeedsContent and the spec does not hold it.
[[nodiscard]] Action PlanFile(const std::string& id, const FileSpec& spec, const Ownership& owner,
                              const PathObservation& observed, std::string_view content = {});
[[nodiscard]] Action PlanDirectory(const std::string& id, const DirectorySpec& spec,
                                   const Ownership& owner, const PathObservation& observed);
[[nodiscard]] Action PlanSymlink(const std::string& id, const SymlinkSpec& spec,
                                 const PathObservation& observed);

// A plan a person can read: one line per action ("create   file:/etc/motd (0644, 95 bytes)",
// "update   file:/etc/a: content, mode 0644 -> 0600"), each update's diff below it.
[[nodiscard]] std::string FormatPlan(const std::vector<Action>& actions);

// Looks `name` up in the text of a passwd (or group) file: the third field of the line
// whose first field is `name`. A number is taken as an id. ENOENT when there is no such
// line.
[[nodiscard]] Result<std::uint32_t> LookupId(std::string_view database, std::string_view name,
                                             const std::string& database_name);

}  // namespace tether
