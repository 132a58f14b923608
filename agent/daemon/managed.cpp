#include "agent/daemon/managed.hpp"

#include <nlohmann/json.hpp>

#include "agent/desired/desired_state.hpp"
#include "common/filesystem.hpp"

namespace tether {

namespace {

using Json = nlohmann::json;

// The inventory's entries object, or null when there is none (or it is unreadable: the
// daemon then watches nothing until a cycle writes one).
Json Entries(const std::string& state_dir) {
  auto text = ReadLocalFile(state_dir + "/inventory.json", 256 << 20);
  if (!text) return nullptr;
  Json json = Json::parse(*text, nullptr, false);
  if (!json.is_object() || !json.contains("entries") || !json["entries"].is_object()) {
    return nullptr;
  }
  return std::move(json["entries"]);
}

}  // namespace

std::map<std::string, std::string> ManagedPaths(const std::string& state_dir) {
  std::map<std::string, std::string> paths;
  const Json entries = Entries(state_dir);
  if (entries.is_null()) return paths;
  for (const auto& [id, entry] : entries.items()) {
    if (!entry.is_object()) continue;
    const std::string kind = entry.value("kind", "");
    std::string path = entry.value("path", "");
    if (kind == "unit" && !path.empty() && path.front() != '/') {
      path = std::string(kUnitDirectory) + "/" + path;
    }
    if (path.empty() || path.front() != '/') continue;
    if (kind == "file" || kind == "directory" || kind == "symlink" || kind == "unit") {
      paths[path] = id;
    }
  }
  return paths;
}

std::map<std::string, std::string> ManagedServices(const std::string& state_dir) {
  std::map<std::string, std::string> services;
  const Json entries = Entries(state_dir);
  if (entries.is_null()) return services;
  for (const auto& [id, entry] : entries.items()) {
    if (entry.is_object() && entry.value("kind", "") == "service") {
      services[entry.value("path", "")] = id;
    }
  }
  return services;
}

}  // namespace tether
