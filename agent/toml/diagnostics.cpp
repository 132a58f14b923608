#include "agent/toml/diagnostics.hpp"

namespace tether {

std::string Location::ToString() const {
  std::string result = file;
  if (line > 0) {
    result += ":" + std::to_string(line);
    if (column > 0) result += ":" + std::to_string(column);
  }
  return result;
}

std::string Diagnostic::ToString() const {
  return where.ToString() + (warning ? ": warning: " : ": ") + message;
}

void Diagnostics::Error(Location where, std::string message) {
  all_.push_back({std::move(where), std::move(message), false});
  ++error_count_;
}

void Diagnostics::Warning(Location where, std::string message) {
  all_.push_back({std::move(where), std::move(message), true});
}

void Diagnostics::Append(const Diagnostics& other) {
  all_.insert(all_.end(), other.all_.begin(), other.all_.end());
  error_count_ += other.error_count_;
}

std::string Diagnostics::ToString() const {
  std::string result;
  for (const auto& diagnostic : all_) result += diagnostic.ToString() + "\n";
  return result;
}

}  // namespace tether
