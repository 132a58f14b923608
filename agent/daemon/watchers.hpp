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
  // Watches what the inventory in `state` now names. Returns whether events arrived since
  // the last Read (they are drained): a cycle's own writes, or a hand edit made while it
  // ran; the caller confirms with one more cycle. A watch that could not be set up is in
  // `error`; the events that did arrive are counted all the same.
  struct Rewatched {
    bool touched = false;
    std::optional<Error> error;
  };
  [[nodiscard]] virtual Rewatched Rewatch(const StateStore& state) = 0;
};

// Managed paths below `root` ("/" normally).
[[nodiscard]] Result<std::unique_ptr<ChangeWatch>> OpenPathWatch(const std::string& root);

// Managed services, on the system bus.
[[nodiscard]] Result<std::unique_ptr<ChangeWatch>> OpenServiceWatch();

}  // namespace tether
