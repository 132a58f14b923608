// Quarantine: a commit whose apply failed or was rolled back (a change failed, a health
// check failed) is not applied again until a newer commit arrives or an operator asks
// (tetherd --once --retry-quarantined). Kept in the state dir by StateStore
// (LoadQuarantine, SaveQuarantine, ClearQuarantine), written atomically; a corrupt file is
// an error, never silently reset.
#pragma once

#include <cstdint>
#include <string>

namespace tether {

struct Quarantine {
  std::string commit;
  std::string reason;      // what failed, as the apply said
  std::int64_t since = 0;  // unix seconds
};

}  // namespace tether
