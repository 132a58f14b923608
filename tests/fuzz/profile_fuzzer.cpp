// Fuzzes profile parsing and rendering: TOML, includes, templates, resource checks.
//
// An input is a small fleet repo: files separated by lines "%%%% PATH". The part before
// the first separator is hosts/web-01.toml. The seeds are the example repo in config/
// (see scripts/fuzz).
#include <cstddef>
#include <cstdint>
#include <map>
#include <string>
#include <string_view>

#include "agent/desired/render.hpp"
#include "agent/desired/render_output.hpp"

namespace {

// A repo held in memory: regular files only, directories implied by their paths.
class MemoryTree final : public tether::Tree {
 public:
  explicit MemoryTree(std::map<std::string, std::string> files) : files_(std::move(files)) {}

  tether::Result<tether::TreeEntryType> Type(std::string_view path) override {
    if (files_.count(std::string(path)) > 0) return tether::TreeEntryType::kFile;
    const std::string prefix = std::string(path) + "/";
    auto it = files_.lower_bound(prefix);
    if (it != files_.end() && it->first.compare(0, prefix.size(), prefix) == 0) {
      return tether::TreeEntryType::kDirectory;
    }
    return tether::Fail(std::errc::no_such_file_or_directory, "no '" + std::string(path) + "'");
  }
  tether::Result<std::string> ReadFile(std::string_view path, std::size_t max_size) override {
    auto it = files_.find(std::string(path));
    if (it == files_.end()) return tether::Fail(std::errc::no_such_file_or_directory, "missing");
    if (it->second.size() > max_size) return tether::Fail(std::errc::file_too_large, "too big");
    return it->second;
  }
  tether::Result<std::string> ReadSymlink(std::string_view) override {
    return tether::Fail(std::errc::invalid_argument, "not a symlink");
  }
  tether::Result<std::vector<std::string>> List(std::string_view) override {
    return std::vector<std::string>{};
  }

 private:
  std::map<std::string, std::string> files_;
};

std::map<std::string, std::string> SplitRepo(std::string_view input) {
  std::map<std::string, std::string> files;
  std::string path = "hosts/web-01.toml";
  constexpr std::string_view kSeparator = "%%%% ";
  while (true) {
    const auto next = input.find(std::string("\n") + std::string(kSeparator));
    files[path] = std::string(input.substr(0, next));
    if (next == std::string_view::npos) break;
    input.remove_prefix(next + 1 + kSeparator.size());
    const auto end = input.find('\n');
    path = std::string(input.substr(0, end));
    if (end == std::string_view::npos) break;
    input.remove_prefix(end + 1);
  }
  return files;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size > 64 << 10) return -1;
  MemoryTree tree(SplitRepo(std::string_view(reinterpret_cast<const char*>(data), size)));
  tether::RenderOptions options;
  options.profile = "hosts/web-01.toml";
  options.host = {"web-01", "web-01.example.com", std::string(32, '0'), "debian", "12", "x86_64"};
  options.labels = {{"env", "prod"}};
  options.limits.max_total_size = 1 << 20;
  options.limits.max_resources = 1000;
  tether::Diagnostics diagnostics;
  const tether::DesiredState state = tether::RenderProfile(tree, options, diagnostics);
  (void)diagnostics.ToString();
  if (!diagnostics.has_errors()) {
    (void)tether::DesiredStateToText(state, options.host);
    (void)tether::DesiredStateToJson(state, options.host)
        .dump(2, ' ', false, nlohmann::ordered_json::error_handler_t::replace);
  }
  return 0;
}
