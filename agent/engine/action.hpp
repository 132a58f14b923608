// What a plan says about one resource: the action (create, update, delete, conflict, or
// in sync), what differs, and a diff. Every kind plans into these; the engine applies them.
#pragma once

#include <cstddef>
#include <initializer_list>
#include <iterator>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

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

// A plan a person can read: one line per action ("create   file:/etc/motd (0644, 95 bytes)",
// "update   file:/etc/a: content, mode 0644 -> 0600"), each update's diff below it.
[[nodiscard]] std::string FormatPlan(const std::vector<Action>& actions);

}  // namespace tether
