#include "agent/daemon/watchers.hpp"

#include <utility>
#include <vector>

#include "agent/daemon/managed.hpp"
#include "common/filesystem.hpp"
#include "common/stat_mark.hpp"
#include "common/systemd_bus.hpp"

namespace tether {

namespace {

class PathWatch final : public ChangeWatch {
 public:
  PathWatch(std::unique_ptr<DriftWatcher> watcher, std::string root)
      : watcher_(std::move(watcher)), root_(std::move(root)) {}

  const char* name() const override { return "drift watch"; }
  int fd() const override { return watcher_->fd(); }
  Result<DriftEvents> Read() override { return watcher_->Read(); }

  Rewatched Rewatch(const StateStore& state, const DriftEvents& seen) override {
    Rewatched result;
    DriftEvents touched = seen;
    if (auto events = watcher_->Read(); events) {
      Merge(touched, std::move(*events));
    } else {
      result.error = events.error();
    }
    Managed managed = ReadManaged(state, touched.ids);
    if (auto watched = watcher_->WatchSorted(managed.paths); !watched)
      result.error = watched.error();
    result.drifted.overflow = touched.overflow;
    if (!managed.readable) {
      // Nothing recorded to tell the cycle's writes by: a drift cycle looks.
      result.drifted.ids = std::move(touched.ids);
      return result;
    }
    // A filesystem opened for this look only: one kept open could stat through a
    // directory that was since replaced.
    auto fs = RootedFilesystem::Open(root_);
    for (auto& id : touched.ids) {
      auto record = managed.touched.find(id);
      if (record == managed.touched.end()) continue;  // no longer managed
      const std::string& fingerprint = record->second.fingerprint;
      if (fs && fingerprint.size() > kStatMarkSize) {
        auto stat = (*fs)->Stat(record->second.path);
        if (stat && stat->type == FileType::kRegular &&
            fingerprint.compare(0, kStatMarkSize, StatMark(*stat)) == 0) {
          continue;  // as the cycle left it
        }
      }
      result.drifted.ids.insert(id);
    }
    return result;
  }

 private:
  std::unique_ptr<DriftWatcher> watcher_;
  std::string root_;
};

class ServiceWatch final : public ChangeWatch {
 public:
  explicit ServiceWatch(std::unique_ptr<UnitWatcher> watcher) : watcher_(std::move(watcher)) {}

  const char* name() const override { return "service watch"; }
  int fd() const override { return watcher_->fd(); }

  Result<DriftEvents> Read() override {
    auto changed = watcher_->Process();
    if (!changed) return Fail(changed.error());
    DriftEvents events;
    for (const auto& unit : *changed) {
      auto id = services_.find(unit);
      events.ids.insert(id != services_.end() ? id->second : "service:" + unit);
    }
    return events;
  }

  // A unit's state has no stat to go by: whatever changed during the cycle, the cycle's
  // own restarts included, is looked at by a drift cycle.
  Rewatched Rewatch(const StateStore& state, const DriftEvents& seen) override {
    services_ = ManagedServices(state);
    std::vector<std::string> units;
    units.reserve(services_.size());
    for (const auto& [unit, id] : services_) units.push_back(unit);
    auto watched = watcher_->Watch(units);
    Rewatched result;
    result.drifted = seen;
    if (auto changed = Read(); changed) {
      Merge(result.drifted, std::move(*changed));
    } else {
      result.error = changed.error();
    }
    if (!watched) result.error = watched.error();
    return result;
  }

 private:
  std::unique_ptr<UnitWatcher> watcher_;
  std::map<std::string, std::string> services_;  // watched unit -> resource id
};

}  // namespace

Result<std::unique_ptr<ChangeWatch>> OpenPathWatch(const std::string& root) {
  auto watcher = DriftWatcher::Create(root);
  if (!watcher) return Fail(watcher.error());
  return std::unique_ptr<ChangeWatch>(std::make_unique<PathWatch>(std::move(*watcher), root));
}

Result<std::unique_ptr<ChangeWatch>> OpenServiceWatch() {
  auto watcher = OpenUnitWatcher();
  if (!watcher) return Fail(watcher.error());
  return std::unique_ptr<ChangeWatch>(std::make_unique<ServiceWatch>(std::move(*watcher)));
}

}  // namespace tether
