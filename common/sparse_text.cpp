#include "common/sparse_text.hpp"

namespace tether {

const std::string& SparseText::str() const {
  static const std::string* const kEmpty = new std::string;
  return text_ != nullptr ? *text_ : *kEmpty;
}

void SparseText::Set(std::string text) {
  if (text.empty()) {
    text_.reset();
  } else if (text_ != nullptr) {
    *text_ = std::move(text);
  } else {
    text_ = std::make_unique<std::string>(std::move(text));
  }
}

}  // namespace tether
