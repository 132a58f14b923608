// The package kind's planner, pure: from a package's declared spec and what is installed,
// what must change. Table-tested in the unit suite; the handler (package_handler.hpp) asks
// the PackageManager.
#pragma once

#include <functional>
#include <optional>
#include <string>

#include "agent/desired/desired_state.hpp"
#include "agent/engine/action.hpp"
#include "agent/kinds/packages/package_manager.hpp"
#include "common/error.hpp"

namespace tether {

// The plan of `spec` with `installed` its installed version (none: not installed): in sync
// when installed at a version the request accepts; else "install V", "upgrade OLD -> NEW" or
// "downgrade OLD -> NEW" to the version `wanted` gives (called only then: it may ask the
// archives, and fails when none satisfies the request); "remove V" when wanted absent.
[[nodiscard]] Result<Action> PlanPackage(const std::string& id, const PackageSpec& spec,
                                         const std::optional<std::string>& installed,
                                         VersionCompare order,
                                         const std::function<Result<std::string>()>& wanted);

// The plan of a package the profile no longer has: removed when tether installed it
// (`created`) and it is still installed; else left as it is.
[[nodiscard]] Action PlanPackagePrune(const std::string& id, bool created,
                                      const std::optional<std::string>& installed);

}  // namespace tether
