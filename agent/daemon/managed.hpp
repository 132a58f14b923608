// What the daemon watches between cycles, read from the inventory the last cycle left in
// the state dir (state_dir/inventory.json): the daemon itself never loads the engine's
// inventory.
#pragma once

#include <map>
#include <string>

namespace tether {

// The paths tether manages (host path -> resource id): files, directories, symlinks and
// unit files. A unit's entry may hold just its name (one found in sync); its file is
// then in /etc/systemd/system.
[[nodiscard]] std::map<std::string, std::string> ManagedPaths(const std::string& state_dir);

// The services tether manages (unit name -> resource id).
[[nodiscard]] std::map<std::string, std::string> ManagedServices(const std::string& state_dir);

}  // namespace tether
