// Diagnostics: located messages about user input (agent.toml, profiles, templates).
//
// Checking user input reports every problem it finds, not just the first, each as
// "file:line:col: message", the format editors and CI annotators understand.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace tether {

struct Location {
  std::string file;          // as the user knows it: a path given on the command line or in a repo
  std::uint32_t line = 0;    // 1-based; 0 when unknown
  std::uint32_t column = 0;  // 1-based; 0 when unknown

  // "file:line:col", "file:line" or "file", depending on what is known.
  [[nodiscard]] std::string ToString() const;
};

struct Diagnostic {
  Location where;
  std::string message;
  bool warning = false;

  // "file:line:col: message" or "file:line:col: warning: message".
  [[nodiscard]] std::string ToString() const;
};

class Diagnostics {
 public:
  void Error(Location where, std::string message);
  void Warning(Location where, std::string message);
  void Append(const Diagnostics& other);

  [[nodiscard]] bool has_errors() const { return error_count_ > 0; }
  [[nodiscard]] std::size_t error_count() const { return error_count_; }
  [[nodiscard]] const std::vector<Diagnostic>& all() const { return all_; }
  // Every diagnostic's ToString(), one per line.
  [[nodiscard]] std::string ToString() const;

 private:
  std::vector<Diagnostic> all_;
  std::size_t error_count_ = 0;
};

}  // namespace tether
