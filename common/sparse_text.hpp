// SparseText: a text that is empty in most of the many objects holding one.
#pragma once

#include <cstddef>
#include <memory>
#include <string>
#include <string_view>

namespace tether {

// A text that most of its holders leave empty (an action's diff or reason, a file's owner
// or inline content when it has a source): it takes the room of one pointer while empty,
// rather than a std::string's 32 bytes in each of them. It reads as a const std::string&.
class SparseText {
 public:
  SparseText() = default;
  SparseText(std::string text) { Set(std::move(text)); }  // NOLINT(google-explicit-constructor)
  SparseText(const char* text) : SparseText(std::string(text)) {}  // NOLINT
  SparseText(const SparseText& other) : SparseText(other.str()) {}
  SparseText(SparseText&&) noexcept = default;
  SparseText& operator=(const SparseText& other) {
    if (this != &other) Set(other.str());
    return *this;
  }
  SparseText& operator=(SparseText&&) noexcept = default;
  ~SparseText() = default;

  // The text; an empty string when there is none.
  [[nodiscard]] const std::string& str() const;
  operator const std::string&() const { return str(); }  // NOLINT(google-explicit-constructor)
  [[nodiscard]] const char* c_str() const { return str().c_str(); }
  [[nodiscard]] bool empty() const { return text_ == nullptr; }
  [[nodiscard]] std::size_t size() const { return str().size(); }
  [[nodiscard]] std::size_t find(std::string_view what, std::size_t pos = 0) const {
    return str().find(what, pos);
  }
  void clear() { text_.reset(); }

  friend bool operator==(const SparseText& a, std::string_view b) { return a.str() == b; }

 private:
  void Set(std::string text);

  std::unique_ptr<std::string> text_;  // null while empty
};

}  // namespace tether
