#include "tests/support/temp_dir.hpp"

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>

namespace tether::testing {

namespace {

[[noreturn]] void Die(const std::string& message) {
  std::fprintf(stderr, "TempDir: %s\n", message.c_str());
  std::abort();
}

}  // namespace

TempDir::TempDir(std::string_view prefix) {
  const char* tmp = std::getenv("TMPDIR");
  std::string pattern = std::string(tmp != nullptr && *tmp != '\0' ? tmp : "/tmp") + "/tether-" +
                        std::string(prefix) + "-XXXXXX";
  if (mkdtemp(pattern.data()) == nullptr) Die("mkdtemp " + pattern + " failed");
  path_ = pattern;
}

TempDir::~TempDir() {
  const char* keep = std::getenv("TETHER_KEEP_TEMP");
  if (keep != nullptr && std::string_view(keep) == "1") {
    std::fprintf(stderr, "TempDir: keeping %s\n", path_.c_str());
    return;
  }
  std::error_code ec;
  std::filesystem::remove_all(path_, ec);
}

std::string TempDir::Path(std::string_view relative) const {
  return path_ + "/" + std::string(relative);
}

void TempDir::WriteFile(std::string_view relative, std::string_view content, unsigned mode) const {
  const std::filesystem::path file = Path(relative);
  std::error_code ec;
  std::filesystem::create_directories(file.parent_path(), ec);
  if (ec) Die("mkdir " + file.parent_path().string() + ": " + ec.message());
  std::ofstream stream(file, std::ios::binary | std::ios::trunc);
  stream.write(content.data(), static_cast<std::streamsize>(content.size()));
  stream.close();
  if (!stream) Die("write " + file.string());
  std::filesystem::permissions(file, static_cast<std::filesystem::perms>(mode), ec);
  if (ec) Die("chmod " + file.string() + ": " + ec.message());
}

std::string TempDir::ReadFile(std::string_view relative) const {
  std::ifstream stream(Path(relative), std::ios::binary);
  if (!stream) Die("open " + Path(relative));
  std::ostringstream buffer;
  buffer << stream.rdbuf();
  return buffer.str();
}

}  // namespace tether::testing
