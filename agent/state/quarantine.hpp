// Quarantine: a commit whose apply failed or was rolled back (a change failed, a health
// check failed) is not applied again until a newer commit arrives or an operator asks
// (tetherd --once --retry-quarantined). Kept in state_dir/quarantine.json, written
// atomically; a corrupt file is an error, never silently reset.
#pragma once

#include <chrono>
#include <optional>
#include <string>

#include "common/error.hpp"

namespace tether {

struct Quarantine {
  std::string commit;
  std::string reason;      // what failed, as the apply said
  std::int64_t since = 0;  // unix seconds
};

// The quarantined commit, if any.
[[nodiscard]] Result<std::optional<Quarantine>> LoadQuarantine(const std::string& state_dir);
[[nodiscard]] Status SaveQuarantine(const std::string& state_dir, const Quarantine& quarantine);
// Lifts the quarantine; nothing to do when there is none.
[[nodiscard]] Status ClearQuarantine(const std::string& state_dir);

}  // namespace tether
