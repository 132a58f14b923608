// Whole text files, for tests that look at what a program wrote or prepare its input.
#pragma once

#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

#include <doctest/doctest.h>

namespace tether::testing {

// The file's content; "" when it cannot be read.
inline std::string ReadText(const std::string& path) {
  std::ifstream file(path, std::ios::binary);
  std::ostringstream text;
  text << file.rdbuf();
  return text.str();
}

// Writes `content` to `path`, making its parent directories; the test fails if it cannot.
inline void WriteText(const std::string& path, const std::string& content) {
  std::filesystem::create_directories(std::filesystem::path(path).parent_path());
  std::ofstream file(path, std::ios::binary | std::ios::trunc);
  file << content;
  REQUIRE_MESSAGE(file.good(), "write " << path);
}

}  // namespace tether::testing
