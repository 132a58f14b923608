// What the daemon watches between cycles, behind one interface: managed paths (inotify)
// and managed services (systemd's signals). Each turns what it sees into the ids of the
// resources to look at; a drift cycle decides whether they drifted.
//
// Threading: the daemon's loop only. fd() may be polled by it.
#pragma once

#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "agent/cycle/cycle_report.hpp"
#include "agent/daemon/drift_watcher.hpp"
#include "agent/state/state_store.hpp"
#include "common/error.hpp"

namespace tether {

class ChangeWatch {
 public:
  virtual ~ChangeWatch() = default;
  // For log lines: "drift watch", "service watch".
  [[nodiscard]] virtual const char* name() const = 0;
  // Readable when events wait.
  [[nodiscard]] virtual int fd() const = 0;
  // Reads what arrived, without blocking: the resources touched.
  [[nodiscard]] virtual Result<DriftEvents> Read() = 0;
  // After a cycle: watches what the inventory in `state` now names, and says which of the
  // resources touched while the cycle ran (`seen`, read meanwhile, and the events still
  // waiting, which are drained) drifted. A file whose stat is still the one the cycle
  // recorded after writing it (or finding it in sync) was the cycle's own write; anything
  // else touched (a person's edit, made before or after the cycle looked, or what cannot be
  // told by its stat) is drifted, for a drift cycle to look at. A watch that could not be
  // set up is in `error`; the events that did arrive are counted all the same.
  struct Rewatched {
    DriftEvents drifted;
    std::optional<Error> error;
  };
  // `recorded`, when given, is what a drift repair that read the inventory in part says of
  // the entries it read (CycleReport::recorded): when they are all watched as they are
  // named there, the inventory is not read again.
  [[nodiscard]] virtual Rewatched Rewatch(const StateStore& state, const DriftEvents& seen,
                                          const std::vector<RecordedEntry>* recorded) = 0;
};

// Managed paths below `root` ("/" normally).
[[nodiscard]] Result<std::unique_ptr<ChangeWatch>> OpenPathWatch(const std::string& root);

// Managed services, on the system bus.
[[nodiscard]] Result<std::unique_ptr<ChangeWatch>> OpenServiceWatch();

}  // namespace tether
