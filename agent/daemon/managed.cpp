#include "agent/daemon/managed.hpp"

#include <algorithm>
#include <iterator>
#include <string_view>
#include <vector>

#include "agent/desired/desired_state.hpp"

namespace tether {

std::string WatchedPath(std::string_view kind, std::string path) {
  if (kind == "unit" && !path.empty() && path.front() != '/') {
    path = std::string(kUnitDirectory) + "/" + path;
  }
  if (path.empty() || path.front() != '/') return {};
  if (kind != "file" && kind != "directory" && kind != "symlink" && kind != "unit") return {};
  return path;
}

Managed ReadManaged(const StateStore& state, const std::set<std::string>& touched) {
  Managed managed;
  const std::vector<std::string_view> wanted(touched.begin(), touched.end());  // sorted
  auto is_touched = [&](std::string_view id) {
    return std::binary_search(wanted.begin(), wanted.end(), id);
  };
  // A plain file entry not touched is not parsed: its path and id are views of its line.
  auto read = state.LoadInventory(
      [&](std::string id, StoredEntry&& entry) {
        const std::string& kind = entry.kind;
        std::string path = WatchedPath(kind, std::move(entry.path));
        if (path.empty()) return true;
        if (is_touched(id)) {
          managed.touched[id] = {path, kind == "file" ? std::move(entry.fingerprint) : ""};
        }
        const std::string& kept_path = managed.strings.emplace_back(std::move(path));
        const std::string& kept_id = managed.strings.emplace_back(std::move(id));
        managed.paths.push_back({kept_path, kept_id});
        return true;
      },
      [&](std::string_view id, std::string_view kind) { return kind != "file" || is_touched(id); },
      managed.text);
  managed.readable = read && !read->empty();
  if (!read) {
    managed = {};
    return managed;
  }
  // By path; of one path named twice, the entry last in id order (as a map filled in
  // that order would keep). The lines left unread are plain files', in id order, which
  // is their paths' order: the others (few) are sorted and merged in.
  auto by_path = [](const DriftWatcher::PathId& a, const DriftWatcher::PathId& b) {
    return a.path != b.path ? a.path < b.path : a.id < b.id;
  };
  std::vector<DriftWatcher::PathId> parsed = std::move(managed.paths);
  std::sort(parsed.begin(), parsed.end(), by_path);
  std::vector<DriftWatcher::PathId> plain;
  plain.reserve(managed.text.lines().size());
  for (const auto& line : managed.text.lines()) {
    const std::string_view path = line.path();
    if (!path.empty() && path.front() == '/') plain.push_back({path, line.id()});
  }
  if (!std::is_sorted(plain.begin(), plain.end(), by_path)) {
    std::sort(plain.begin(), plain.end(), by_path);  // not as written; still correct
  }
  auto& paths = managed.paths;
  paths.clear();
  paths.reserve(parsed.size() + plain.size());
  std::merge(parsed.begin(), parsed.end(), plain.begin(), plain.end(), std::back_inserter(paths),
             by_path);
  std::size_t kept = 0;
  for (std::size_t i = 0; i < paths.size(); ++i) {
    if (i + 1 < paths.size() && paths[i + 1].path == paths[i].path) continue;
    paths[kept++] = paths[i];
  }
  paths.resize(kept);
  return managed;
}

std::map<std::string, std::string> ManagedPaths(const StateStore& state) {
  std::map<std::string, std::string> paths;
  for (const auto& [path, id] : ReadManaged(state, {}).paths) paths.emplace(path, id);
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
