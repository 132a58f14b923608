#include "agent/kinds/packages/package_plan.hpp"

namespace tether {

Result<Action> PlanPackage(const std::string& id, const PackageSpec& spec,
                           const std::optional<std::string>& installed, VersionCompare order,
                           const std::function<Result<std::string>()>& wanted) {
  Action action;
  action.id = id;
  if (!spec.present) {
    if (installed) {
      action.type = ActionType::kDelete;
      action.changes.push_back("remove " + *installed);
    }
    return action;
  }
  if (installed && VersionSatisfies(spec.version, *installed, order)) {
    action.fingerprint = *installed;
    return action;
  }
  auto want = wanted();
  if (!want) return Fail(want.error());
  if (!installed) {
    action.type = ActionType::kCreate;
    action.changes.push_back("install " + *want);
    return action;
  }
  const int direction = order(*want, *installed);
  if (direction == 0) return action;
  action.type = ActionType::kUpdate;
  action.changes.push_back((direction > 0 ? "upgrade " : "downgrade ") + *installed + " -> " +
                           *want);
  return action;
}

Action PlanPackagePrune(const std::string& id, bool created,
                        const std::optional<std::string>& installed) {
  Action action;
  action.id = id;
  if (!created || !installed) return action;  // found installed, or already gone
  action.type = ActionType::kDelete;
  action.changes.push_back("installed by tether, no longer in the profile: remove " + *installed);
  return action;
}

}  // namespace tether
