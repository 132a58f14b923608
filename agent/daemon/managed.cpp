#include "agent/daemon/managed.hpp"

#include "agent/desired/desired_state.hpp"

namespace tether {

Managed ReadManaged(const StateStore& state, const std::set<std::string>& touched) {
  Managed managed;
  auto read = state.LoadInventory([&](std::string id, StoredEntry&& entry) {
    const std::string& kind = entry.kind;
    std::string path = std::move(entry.path);
    if (kind == "unit" && !path.empty() && path.front() != '/') {
      path = std::string(kUnitDirectory) + "/" + path;
    }
    if (path.empty() || path.front() != '/') return true;
    if (kind != "file" && kind != "directory" && kind != "symlink" && kind != "unit") return true;
    if (touched.count(id) > 0) {
      managed.touched[id] = {path, kind == "file" ? std::move(entry.fingerprint) : ""};
    }
    managed.paths[std::move(path)] = std::move(id);
    return true;
  });
  managed.readable = read && !read->empty();
  if (!read) {
    managed.paths.clear();
    managed.touched.clear();
  }
  return managed;
}

std::map<std::string, std::string> ManagedPaths(const StateStore& state) {
  return ReadManaged(state, {}).paths;
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
