// A directory under $TMPDIR (default /tmp) that is removed, with everything in it, when the
// TempDir is destroyed. Set TETHER_KEEP_TEMP=1 to keep it for a post-mortem.
#pragma once

#include <string>
#include <string_view>

namespace tether::testing {

class TempDir {
 public:
  // Creates "<tmp>/tether-<prefix>-XXXXXX". Aborts the test program when it cannot.
  explicit TempDir(std::string_view prefix = "test");
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  ~TempDir();

  [[nodiscard]] const std::string& path() const { return path_; }
  // path() + "/" + relative.
  [[nodiscard]] std::string Path(std::string_view relative) const;

  // Writes `content` to Path(relative), creating parent directories. Aborts on failure.
  void WriteFile(std::string_view relative, std::string_view content, unsigned mode = 0644) const;
  // Reads Path(relative) whole; aborts when it cannot.
  [[nodiscard]] std::string ReadFile(std::string_view relative) const;

 private:
  std::string path_;
};

}  // namespace tether::testing
