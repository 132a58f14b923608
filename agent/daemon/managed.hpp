// What the daemon watches between cycles, read from the inventory the last cycle left in
// the state dir (through StateStore, which owns its format): the daemon itself never loads
// the engine's inventory.
#pragma once

#include <deque>
#include <map>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "agent/daemon/drift_watcher.hpp"
#include "agent/state/state_store.hpp"

namespace tether {

// The host path the drift watch watches of an inventory entry of `kind` naming `path`
// (a unit's file by its name: in /etc/systemd/system); "" for an entry it does not watch
// (a package, a service).
[[nodiscard]] std::string WatchedPath(std::string_view kind, std::string path);

// The paths tether manages (host path -> resource id): files, directories, symlinks and
// unit files. A unit's entry may hold just its name (one found in sync); its file is
// then in /etc/systemd/system. Empty when there is no inventory or it is unreadable (the
// daemon then watches nothing until a cycle writes one).
[[nodiscard]] std::map<std::string, std::string> ManagedPaths(const StateStore& state);

// The managed paths, as ManagedPaths, and what the inventory recorded of some of them:
// for each id of `touched` that it names, the file's host path and fingerprint ("" for
// what is not a file tether wrote or found in sync). `readable` is false when there is no
// inventory to go by (none yet, or unreadable).
struct ManagedRecord {
  std::string path;
  std::string fingerprint;
};
struct Managed {
  Managed() = default;
  // Moved, never copied: a copy's views would point into the original (a deque's move
  // keeps its strings where they are).
  Managed(Managed&&) = default;
  Managed& operator=(Managed&&) = default;
  Managed(const Managed&) = delete;
  Managed& operator=(const Managed&) = delete;

  // Host path -> resource id, sorted by path, each path once: views of what `text` and
  // `strings` keep (the inventory of a host with many files is not copied entry by entry).
  std::vector<DriftWatcher::PathId> paths;
  std::map<std::string, ManagedRecord> touched;  // resource id -> as recorded
  bool readable = false;
  UnreadEntries text;               // the plain file entries' lines
  std::deque<std::string> strings;  // the other entries' paths and ids
};
[[nodiscard]] Managed ReadManaged(const StateStore& state, const std::set<std::string>& touched);

// The services tether manages (unit name -> resource id); empty likewise.
[[nodiscard]] std::map<std::string, std::string> ManagedServices(const StateStore& state);

}  // namespace tether
