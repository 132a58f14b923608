// Drift detection between applies: inotify on the directories that hold managed paths,
// so an edit, chmod, chown, delete or replace is seen as it happens. Events only say
// which resources to look at; whether they drifted is decided by planning them (so
// tether's own writes, which leave them in sync, never cause a loop). A full audit
// still runs periodically, and whenever the kernel's event queue overflowed.
//
// Threading: one caller at a time. fd() may be polled by an event loop.
#pragma once

#include <map>
#include <memory>
#include <set>
#include <string>
#include <utility>

#include "common/error.hpp"
#include "common/unique_fd.hpp"

namespace tether {

struct DriftEvents {
  std::set<std::string> ids;  // resources whose path was touched
  bool overflow = false;      // events were lost: audit everything
};

class DriftWatcher {
 public:
  // `root` is the --root the managed paths are below ("/" normally).
  [[nodiscard]] static Result<std::unique_ptr<DriftWatcher>> Create(std::string root);

  // Watches these managed paths (path -> resource id), replacing the previous set. A
  // directory that does not exist yet is skipped (the audit covers it).
  [[nodiscard]] Status Watch(const std::map<std::string, std::string>& paths);

  // Readable (POLLIN) when events wait.
  [[nodiscard]] int fd() const { return inotify_.get(); }

  // Reads every pending event without blocking.
  [[nodiscard]] Result<DriftEvents> Read();

 private:
  DriftWatcher(std::string root, UniqueFd inotify)
      : root_(std::move(root)), inotify_(std::move(inotify)) {}

  std::string root_;
  UniqueFd inotify_;
  std::map<int, std::string> directories_;                          // wd -> managed dir path
  std::map<std::pair<std::string, std::string>, std::string> ids_;  // (dir, name) -> id
};

}  // namespace tether
