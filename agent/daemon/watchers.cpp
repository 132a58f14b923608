#include "agent/daemon/watchers.hpp"

#include <utility>
#include <vector>

#include "agent/daemon/managed.hpp"
#include "common/systemd_bus.hpp"

namespace tether {

namespace {

class PathWatch final : public ChangeWatch {
 public:
  explicit PathWatch(std::unique_ptr<DriftWatcher> watcher) : watcher_(std::move(watcher)) {}

  const char* name() const override { return "drift watch"; }
  int fd() const override { return watcher_->fd(); }
  Result<DriftEvents> Read() override { return watcher_->Read(); }

  Rewatched Rewatch(const StateStore& state) override {
    auto events = watcher_->Read();
    Rewatched result;
    result.touched = events && (!events->ids.empty() || events->overflow);
    if (auto watched = watcher_->Watch(ManagedPaths(state)); !watched) {
      result.error = watched.error();
    }
    return result;
  }

 private:
  std::unique_ptr<DriftWatcher> watcher_;
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

  Rewatched Rewatch(const StateStore& state) override {
    services_ = ManagedServices(state);
    std::vector<std::string> units;
    units.reserve(services_.size());
    for (const auto& [unit, id] : services_) units.push_back(unit);
    auto watched = watcher_->Watch(units);
    auto changed = watcher_->Process();
    Rewatched result;
    result.touched = changed && !changed->empty();
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
  return std::unique_ptr<ChangeWatch>(std::make_unique<PathWatch>(std::move(*watcher)));
}

Result<std::unique_ptr<ChangeWatch>> OpenServiceWatch() {
  auto watcher = OpenUnitWatcher();
  if (!watcher) return Fail(watcher.error());
  return std::unique_ptr<ChangeWatch>(std::make_unique<ServiceWatch>(std::move(*watcher)));
}

}  // namespace tether
