#include "agent/engine/action.hpp"

#include <algorithm>
#include <cstdio>
#include <cstring>

namespace tether {

std::string_view ChangeList::const_iterator::operator*() const {
  const auto end = text_.find('\0', pos_);
  return text_.substr(pos_, (end == std::string_view::npos ? text_.size() : end) - pos_);
}

ChangeList::const_iterator& ChangeList::const_iterator::operator++() {
  const auto end = text_.find('\0', pos_);
  pos_ = (end == std::string_view::npos ? text_.size() : end) + 1;
  return *this;
}

ChangeList::ChangeList(std::initializer_list<std::string_view> changes) {
  for (std::string_view change : changes) push_back(change);
}

std::string_view ChangeList::text() const {
  if (block_ == nullptr) return {};
  std::size_t size = 0;
  std::memcpy(&size, block_.get(), sizeof(size));
  return {block_.get() + sizeof(size), size};
}

void ChangeList::Assign(std::string_view first, std::string_view second) {
  if (first.empty()) {
    block_.reset();
    return;
  }
  const std::size_t size = first.size() + (second.empty() ? 0 : 1 + second.size());
  auto block = std::make_unique_for_overwrite<char[]>(sizeof(size) + size);
  std::memcpy(block.get(), &size, sizeof(size));
  char* text = block.get() + sizeof(size);
  first.copy(text, first.size());
  if (!second.empty()) {
    text[first.size()] = '\0';
    second.copy(text + first.size() + 1, second.size());
  }
  block_ = std::move(block);
}

std::size_t ChangeList::size() const {
  const std::string_view all = text();
  return all.empty() ? 0 : 1 + static_cast<std::size_t>(std::count(all.begin(), all.end(), '\0'));
}

void ChangeList::push_back(std::string_view change) {
  if (change.empty()) return;
  if (empty()) {
    Assign(change, {});
  } else {
    Assign(text(), change);
  }
}

void ChangeList::push_front(std::string_view change) {
  if (change.empty()) return;
  Assign(change, text());
}

std::string ChangeList::Join(std::string_view separator) const {
  std::string joined;
  for (std::string_view change : *this) {
    if (!joined.empty()) joined += separator;
    joined += change;
  }
  return joined;
}

bool operator==(const ChangeList& list, const std::vector<std::string>& changes) {
  return std::equal(list.begin(), list.end(), changes.begin(), changes.end());
}

const char* ActionTypeName(ActionType type) {
  switch (type) {
    case ActionType::kInSync:
      return "in sync";
    case ActionType::kCreate:
      return "create";
    case ActionType::kUpdate:
      return "update";
    case ActionType::kDelete:
      return "delete";
    case ActionType::kConflict:
      return "conflict";
  }
  return "unknown";
}

std::string FormatPlan(const std::vector<Action>& actions) {
  std::string out;
  for (const auto& action : actions) {
    char type[16];
    std::snprintf(type, sizeof(type), "%-8s ", ActionTypeName(action.type));
    out += type + action.id;
    if (action.type == ActionType::kConflict) {
      out += ": " + action.reason.str();
    } else if (!action.changes.empty()) {
      out += action.type == ActionType::kCreate ? " (" : ": ";
      out += action.changes.Join(", ");
      if (action.type == ActionType::kCreate) out += ")";
    }
    out += "\n";
    if (action.type == ActionType::kUpdate) out += action.diff;
  }
  return out;
}

}  // namespace tether
