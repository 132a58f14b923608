#include "agent/daemon/watchers.hpp"

#include <algorithm>
#include <map>
#include <set>
#include <string>
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

  Rewatched Rewatch(const StateStore& state, const DriftEvents& seen,
                    const std::vector<RecordedEntry>* recorded) override {
    Rewatched result;
    DriftEvents touched = seen;
    if (auto events = watcher_->Read(); events) {
      Merge(touched, std::move(*events));
    } else {
      result.error = events.error();
    }
    Managed managed;
    if (recorded == nullptr || touched.overflow || !read_ ||
        !Recorded(*recorded, touched.ids, managed)) {
      managed = ReadManaged(state, touched.ids);
      if (auto watched = watcher_->WatchSorted(managed.paths); !watched)
        result.error = watched.error();
      read_ = managed.readable;
    }
    result.drifted.overflow = touched.overflow;
    if (!managed.readable) {
      // Nothing recorded to tell the cycle's writes by: a drift cycle looks.
      result.drifted.ids = std::move(touched.ids);
      result.drifted.in_place = std::move(touched.in_place);
      return result;
    }
    // A filesystem opened for this look only: one kept open could stat through a
    // directory that was since replaced.
    auto fs = RootedFilesystem::Open(root_);
    for (auto& id : touched.ids) {
      auto record = managed.touched.find(id);
      if (record == managed.touched.end()) continue;  // no longer managed
      const std::string& fingerprint = record->second.fingerprint;
      // Written in place since the cycle last replaced it: a person's (DriftEvents).
      if (fs && fingerprint.size() > kStatMarkSize && touched.in_place.count(id) == 0) {
        auto stat = (*fs)->Stat(record->second.path);
        if (stat && stat->type == FileType::kRegular &&
            fingerprint.compare(0, kStatMarkSize, StatMark(*stat)) == 0) {
          continue;  // as the cycle left it
        }
      }
      result.drifted.ids.insert(id);
      // The repair reads it whatever its fingerprint says (CycleOptions::written_in_place).
      if (touched.in_place.count(id) != 0) result.drifted.in_place.insert(id);
    }
    return result;
  }

 private:
  // A drift repair read the inventory in part and names here every entry it read; it
  // wrote the others back as they were, which are watched already. When each entry it
  // names is watched as it names it, the watches stand as they are and `managed` gets
  // what the repair recorded of the touched ones. False (`managed` left alone) otherwise:
  // an entry it added or moved, or a directory that went or was missing, has the
  // inventory read again (as do lost events, or an inventory the last read could not
  // go by). An entry it removed is still watched until then: an event on it has a repair
  // look, which finds nothing to do.
  bool Recorded(const std::vector<RecordedEntry>& recorded, const std::set<std::string>& touched,
                Managed& managed) const {
    std::map<std::string, ManagedRecord> records;
    for (const auto& entry : recorded) {
      std::string path = WatchedPath(entry.kind, entry.path);
      if (path.empty()) continue;
      if (!watcher_->Watches(path, entry.id)) return false;
      if (touched.count(entry.id) != 0) {
        records[entry.id] = {std::move(path), entry.kind == "file" ? entry.fingerprint : ""};
      }
    }
    // A path touched that the repair did not read, it did not write either: drifted (a
    // record with no fingerprint), never taken for one no longer managed.
    for (const auto& id : touched) records.try_emplace(id);
    managed.touched = std::move(records);
    managed.readable = true;
    return true;
  }

  std::unique_ptr<DriftWatcher> watcher_;
  std::string root_;
  bool read_ = false;  // the watches are those of an inventory read whole and readable
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
  Rewatched Rewatch(const StateStore& state, const DriftEvents& seen,
                    const std::vector<RecordedEntry>* recorded) override {
    if (recorded == nullptr || !Recorded(*recorded)) services_ = ManagedServices(state);
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
  // True when each service a drift repair names (CycleReport::recorded) is watched as it
  // names it: the services then stand as they are (see PathWatch::Recorded).
  bool Recorded(const std::vector<RecordedEntry>& recorded) const {
    return std::all_of(recorded.begin(), recorded.end(), [&](const RecordedEntry& entry) {
      if (entry.kind != "service") return true;
      const auto it = services_.find(entry.path);
      return it != services_.end() && it->second == entry.id;
    });
  }

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
