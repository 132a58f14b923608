#include "agent/daemon/managed.hpp"

#include "agent/desired/desired_state.hpp"

namespace tether {

std::map<std::string, std::string> ManagedPaths(const StateStore& state) {
  std::map<std::string, std::string> paths;
  auto read = state.LoadInventory([&](std::string id, StoredEntry&& entry) {
    const std::string& kind = entry.kind;
    std::string path = std::move(entry.path);
    if (kind == "unit" && !path.empty() && path.front() != '/') {
      path = std::string(kUnitDirectory) + "/" + path;
    }
    if (path.empty() || path.front() != '/') return true;
    if (kind == "file" || kind == "directory" || kind == "symlink" || kind == "unit") {
      paths[std::move(path)] = std::move(id);
    }
    return true;
  });
  if (!read) paths.clear();
  return paths;
}

std::map<std::string, std::string> ManagedServices(const StateStore& state) {
  std::map<std::string, std::string> services;
  auto read = state.LoadInventory([&](std::string id, StoredEntry&& entry) {
    if (entry.kind == "service") services[std::move(entry.path)] = std::move(id);
    return true;
  });
  if (!read) services.clear();
  return services;
}

}  // namespace tether
