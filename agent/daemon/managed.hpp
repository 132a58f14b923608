// What the daemon watches between cycles, read from the inventory the last cycle left in
// the state dir (through StateStore, which owns its format): the daemon itself never loads
// the engine's inventory.
#pragma once

#include <map>
#include <string>

#include "agent/state/state_store.hpp"

namespace tether {

// The paths tether manages (host path -> resource id): files, directories, symlinks and
// unit files. A unit's entry may hold just its name (one found in sync); its file is
// then in /etc/systemd/system. Empty when there is no inventory or it is unreadable (the
// daemon then watches nothing until a cycle writes one).
[[nodiscard]] std::map<std::string, std::string> ManagedPaths(const StateStore& state);

// The services tether manages (unit name -> resource id); empty likewise.
[[nodiscard]] std::map<std::string, std::string> ManagedServices(const StateStore& state);

}  // namespace tether
