// The KindHandler of systemd units and services.
#include "agent/kinds/services/service_handler.hpp"

#include "agent/kinds/services/service_plan.hpp"

#include <algorithm>
#include <optional>
#include <set>
#include <thread>

#include "common/encoding.hpp"

namespace tether {

namespace {

using Json = nlohmann::json;
using Clock = std::chrono::steady_clock;

constexpr std::size_t kMaxUnitSize = 16 << 20;
// A look at a service's state in the health gate gets at least this long, however close
// the deadline.
constexpr std::chrono::milliseconds kMinimumCallTimeout{1000};

std::string Parent(const std::string& path) {
  const auto slash = path.rfind('/');
  return slash == 0 ? "/" : path.substr(0, slash);
}

std::string Name(const std::string& path) { return path.substr(path.rfind('/') + 1); }

bool EndsWith(std::string_view text, std::string_view suffix) {
  return text.size() >= suffix.size() && text.substr(text.size() - suffix.size()) == suffix;
}

std::string Describe(const UnitState& state) {
  std::string text = state.active_state + " (" + state.sub_state + ")";
  if (!state.result.empty() && state.result != "success") {
    text += ", result '" + state.result + "'";
  }
  if (state.load_state != "loaded" && !state.load_state.empty()) {
    text += ", " + state.load_state;
  }
  return text;
}

class ServiceHandler final : public KindHandler {
 public:
  ServiceHandler(Filesystem& fs, SystemdBus& bus, ServiceHandlerOptions options)
      : fs_(fs), bus_(bus), options_(options) {}

  bool Handles(ResourceKind kind) const override {
    return kind == ResourceKind::kUnit || kind == ResourceKind::kService;
  }

  void Prepare(const DesiredState& /*desired*/) override { applied_ = false; }

  Result<Action> Plan(const Resource& resource, const InventoryEntry* /*previous*/,
                      bool /*full_audit*/, const PlanContext& context) override {
    if (const auto* unit = std::get_if<UnitSpec>(&resource.spec)) {
      // Unit files are small and few: always read (no fingerprint shortcut).
      auto observed = ObservePath(fs_, unit->path, true, kMaxUnitSize);
      if (!observed) return Fail(observed.error());
      return PlanFile(resource.id, AsFile(*unit), kRoot, *observed);
    }
    const auto& spec = std::get<ServiceSpec>(resource.spec);
    auto state = bus_.State(spec.name, options_.call_timeout);
    if (!state) return Fail(state.error());
    return PlanService(resource.id, spec, *state, context.changed);
  }

  Result<Action> PlanPrune(const std::string& id, const InventoryEntry& entry) override {
    Action action;
    action.id = id;
    if (entry.kind == ResourceKind::kUnit) {
      const PruneWay way = HowToPrune(entry.created, entry.on_remove, entry.original);
      if (way == PruneWay::kLeave) return action;  // left as it is, and forgotten
      const std::string path = UnitPath(InventoryPath(id, entry));
      auto observed = ObservePath(fs_, path, true, kMaxUnitSize);
      if (!observed) return Fail(observed.error());
      action.diff = PruneDiff(way, *observed, entry.original, false, path);
      if (way == PruneWay::kRemove) {
        if (!observed->exists) return action;  // already gone
        action.type = ActionType::kDelete;
        action.changes.push_back(entry.on_remove == OnRemove::kDelete
                                     ? "no longer in the profile, on_remove = \"delete\""
                                     : "created by tether, no longer in the profile");
      } else {
        action.type = ActionType::kUpdate;
        action.changes.push_back("restore the original from before tether took it over");
      }
      return action;
    }
    // A service is left as it is, unless tether started or enabled it from nothing.
    if (!entry.created) return action;
    auto state = bus_.State(std::string(InventoryPath(id, entry)), options_.call_timeout);
    if (!state) return Fail(state.error());
    const ServiceWork work =
        PruneWork(OriginalFileState(entry), state->active_state, state->unit_file_state);
    if (work.job) action.changes.push_back("stop");
    if (work.disable) action.changes.push_back("disable");
    if (work.mask) action.changes.push_back("mask again");
    if (!action.changes.empty()) {
      action.type = ActionType::kDelete;
      action.changes.push_front("started by tether from nothing, no longer in the profile");
    }
    return action;
  }

  Result<Json> Begin(const PlannedAction& planned, const std::string& tag) override {
    const ResourceKind kind =
        planned.resource != nullptr ? planned.resource->kind : planned.previous->kind;
    if (kind == ResourceKind::kUnit) return BeginUnit(planned, tag);
    const std::string name = planned.resource != nullptr
                                 ? std::get<ServiceSpec>(planned.resource->spec).name
                                 : std::string(PreviousPath(planned));
    auto state = bus_.State(name, options_.call_timeout);
    if (!state) return Fail(state.error());
    Json undo = {{"name", name},
                 {"active_state", state->active_state},
                 {"unit_file_state", state->unit_file_state},
                 {"invocation", state->invocation_id}};
    if (planned.resource != nullptr) {
      const auto& spec = std::get<ServiceSpec>(planned.resource->spec);
      const auto restart = PlannedRestart(planned.action);
      undo["reload"] = restart == UnitJob::kReload;
      // What makes a reload necessary again after a rollback.
      Json watch = Json::array();
      for (const auto& [trigger, label] : Triggers(spec)) watch.push_back(trigger);
      undo["watch"] = std::move(watch);
    }
    return undo;
  }

  Status Apply(std::vector<Change>& changes, Transaction& transaction) override {
    applied_ = true;
    bool reload = false;
    auto fail = [](Change& change, const Error& error) {
      change.failed = true;
      return Fail(error);
    };
    // Services tether pruned are disabled while their unit files are still there.
    for (auto& change : changes) {
      if (!IsService(change) || change.planned->resource != nullptr) continue;
      if (auto done = FileOperations(change, /*before_units=*/true, reload); !done) {
        return fail(change, done.error());
      }
    }
    // Every unit file, then one reload for all of them.
    Change* first_unit = nullptr;
    for (auto& change : changes) {
      if (IsService(change)) continue;
      if (auto done = ApplyUnit(change); !done) return fail(change, done.error());
      change.done = true;
      reload = true;
      if (first_unit == nullptr) first_unit = &change;
      transaction.Progress("change");
    }
    for (auto& change : changes) {
      if (!IsService(change)) continue;
      if (auto done = FileOperations(change, /*before_units=*/false, reload); !done) {
        return fail(change, done.error());
      }
    }
    if (reload) {
      if (auto reloaded = bus_.DaemonReload(options_.call_timeout); !reloaded) {
        auto culprit = first_unit != nullptr
                           ? first_unit
                           : &*std::find_if(changes.begin(), changes.end(), IsService);
        return fail(*culprit, reloaded.error());
      }
    }
    // Then the service jobs, in order.
    for (auto& change : changes) {
      if (!IsService(change)) continue;
      if (auto done = ApplyService(change); !done) return fail(change, done.error());
      change.done = true;
      transaction.Progress("change");
    }
    return {};
  }

  Status Undo(const JournalStep& step) override {
    if (step.kind == ResourceKind::kUnit) return UndoUnit(step.undo);
    // Stopped and disabled again now, while its unit files are still those of the
    // transaction; enabling, masking and starting again wait for Settle, when the unit
    // files are back and systemd has reloaded.
    const std::string name = step.undo.value("name", "");
    auto state = bus_.State(name, options_.call_timeout);
    if (!state) return Fail(state.error());
    if (!WasRunning(step.undo.value("active_state", "")) && !IsStopped(state->active_state)) {
      if (auto stopped = bus_.RunJob(UnitJob::kStop, name, options_.job_timeout); !stopped) {
        return stopped;
      }
    }
    const std::string before = step.undo.value("unit_file_state", "");
    if (before != "enabled" && before != "enabled-runtime" && state->unit_file_state == "enabled") {
      if (auto disabled = bus_.Disable({name}, options_.call_timeout); !disabled) return disabled;
      reload_pending_ = true;
    }
    return {};
  }

  bool KeepsAside(const Json& undo) const override {
    return undo.contains("backup") || undo.contains("cleanup");
  }

  Status Discard(const JournalStep& step) override {
    if (step.kind != ResourceKind::kUnit) return {};
    if (step.undo.contains("backup")) {
      auto removed = fs_.Remove(step.undo["backup"].get<std::string>());
      if (!removed && !removed.error().Is(std::errc::no_such_file_or_directory)) return removed;
    }
    if (step.undo.contains("cleanup")) {
      // A drop-in directory emptied by a prune: of no use any more (kept when not empty).
      (void)fs_.Remove(step.undo["cleanup"].get<std::string>());
    }
    return {};
  }

  Status Flush() override {
    std::vector<std::string> dirs;
    for (const auto& dir : touched_directories_) {
      if (fs_.Stat(dir)) dirs.push_back(dir);
    }
    touched_directories_.clear();
    return fs_.SyncFilesystems(dirs);
  }

  Status Verify(const DesiredState& desired, const RefusedIds& refused,
                std::chrono::steady_clock::time_point deadline) override {
    // Only after this handler changed something must a service stay up for a while; a
    // look at each is enough otherwise.
    const auto window = applied_ ? options_.stable_for : std::chrono::milliseconds(0);
    applied_ = false;
    struct Watched {
      const ServiceSpec* spec = nullptr;
      bool good = false;
      bool passed = false;  // seen good for the whole window: not looked at again
      Clock::time_point since;
      std::string invocation;
      std::string problem;
    };
    std::vector<Watched> services;
    for (const auto& resource : desired.resources) {
      const auto* spec = std::get_if<ServiceSpec>(&resource.spec);
      // A refused service was left as it is: not expected to be as declared.
      if (spec != nullptr && !IsRefused(refused, resource.id)) {
        services.push_back({spec, false, false, {}, "", ""});
      }
    }
    if (services.empty()) return {};
    while (true) {
      const auto now = Clock::now();
      bool all_stable = true;
      for (auto& watched : services) {
        if (watched.passed) continue;
        const ServiceSpec& spec = *watched.spec;
        const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - now);
        auto state = bus_.State(
            spec.name, std::max(std::min(left, options_.call_timeout), kMinimumCallTimeout));
        if (!state) {
          watched.good = false;
          watched.problem = state.error().message();
          all_stable = false;
          continue;
        }
        const bool good =
            spec.running ? IsActive(state->active_state) : IsStopped(state->active_state);
        if (!good) {
          watched.good = false;
          watched.problem = "service '" + spec.name + "' is not " +
                            (spec.running ? "running" : "stopped") + ": " + Describe(*state);
          // Given up on by systemd: waiting longer changes nothing.
          if (spec.running && state->active_state == "failed")
            return Fail(std::errc::io_error, watched.problem);
        } else if (!watched.good || (spec.running && state->invocation_id != watched.invocation)) {
          if (watched.good) {
            watched.problem = "service '" + spec.name + "' did not stay running: it was " +
                              "started again (" + Describe(*state) + ")";
          }
          watched.good = true;
          watched.since = now;
          watched.invocation = state->invocation_id;
        }
        if (!watched.good || now - watched.since < window) {
          all_stable = false;
        } else {
          watched.passed = true;
        }
      }
      if (all_stable) return {};
      if (Clock::now() >= deadline) {
        for (const auto& watched : services) {
          if (!watched.good) return Fail(std::errc::timed_out, watched.problem);
        }
        for (const auto& watched : services) {
          if (!watched.problem.empty()) return Fail(std::errc::timed_out, watched.problem);
        }
        return Fail(std::errc::timed_out, "services did not settle in time");
      }
      std::this_thread::sleep_for(
          std::min<Clock::duration>(options_.poll_interval, deadline - Clock::now()));
    }
  }

  Status Settle(const std::vector<JournalStep>& undone) override {
    bool reload = reload_pending_;
    reload_pending_ = false;
    std::set<std::string> undone_ids;
    std::vector<const JournalStep*> services;
    for (const auto& step : undone) {
      undone_ids.insert(step.id);
      if (step.kind == ResourceKind::kUnit) reload = true;
      if (step.kind == ResourceKind::kService) services.push_back(&step);
    }
    if (!reload && services.empty()) return {};
    Status first;
    auto note = [&](Status status, const std::string& name) {
      if (!status && first) first = Fail(status.error().WithContext("service '" + name + "'"));
    };
    // Enabled and masked again, now that the unit files are back.
    for (const JournalStep* step : services) {
      const std::string name = step->undo.value("name", "");
      const std::string before = step->undo.value("unit_file_state", "");
      auto state = bus_.State(name, options_.call_timeout);
      if (!state) {
        note(Fail(state.error()), name);
        continue;
      }
      if (before == "enabled" && !CountsAsEnabled(state->unit_file_state)) {
        note(bus_.Enable({name}, options_.call_timeout), name);
        reload = true;
      }
      if (IsMasked(before) && !IsMasked(state->unit_file_state)) {
        note(bus_.Mask({name}, before == "masked-runtime", options_.call_timeout), name);
        reload = true;
      }
    }
    if (reload) {
      if (auto reloaded = bus_.DaemonReload(options_.call_timeout); !reloaded && first) {
        first = Fail(reloaded.error());
      }
    }
    // What ran before runs again, on the old configuration: restarted when the
    // transaction started it anew or it is down; reloaded when it was reloaded.
    for (const JournalStep* step : services) {
      if (!WasRunning(step->undo.value("active_state", ""))) continue;
      const std::string name = step->undo.value("name", "");
      auto state = bus_.State(name, options_.call_timeout);
      if (!state) {
        note(Fail(state.error()), name);
        continue;
      }
      if (!IsActive(state->active_state) ||
          state->invocation_id != step->undo.value("invocation", "")) {
        note(bus_.RunJob(UnitJob::kRestart, name, options_.job_timeout), name);
        continue;
      }
      bool watched_changed = false;
      for (const auto& trigger : step->undo.value("watch", Json::array())) {
        if (!trigger.is_string()) continue;
        for (const auto& id : undone_ids) {
          watched_changed = watched_changed || Triggered(trigger.get<std::string>(), id);
        }
      }
      if (step->undo.value("reload", false) && watched_changed) {
        note(bus_.RunJob(UnitJob::kReload, name, options_.job_timeout), name);
      }
    }
    return first;
  }

 private:
  static inline const Ownership kRoot = {0u, 0u};

  static bool IsService(const Change& change) { return change.step.kind == ResourceKind::kService; }

  static FileSpec AsFile(const UnitSpec& unit) {
    FileSpec file;
    file.path = unit.path;
    file.content = unit.content;
    file.source = unit.source.value_or("");
    file.templated = unit.templated;
    file.mode = 0644;
    return file;
  }

  // Where a unit of the inventory lives, from its entry's path (InventoryPath): an entry
  // made by the engine for a unit found in sync holds just its name.
  static std::string UnitPath(std::string_view entry_path) {
    if (!entry_path.empty() && entry_path.front() == '/') return std::string(entry_path);
    return std::string(kUnitDirectory) + "/" + std::string(entry_path);
  }

  // The entry this resource had, unless it is one of the other kind (a replaced entry: the
  // engine pairs kinds only when Replaces() says so, which this handler never does).
  static const InventoryEntry* Previous(const PlannedAction& planned) {
    if (planned.previous == nullptr || planned.resource == nullptr) return planned.previous;
    return planned.previous->kind == planned.resource->kind ? planned.previous : nullptr;
  }

  static ServiceWork Decide(const Change& change) {
    const Json& undo = change.step.undo;
    const std::string active_state = undo.value("active_state", "");
    const std::string file_state = undo.value("unit_file_state", "");
    if (change.planned->resource == nullptr) {
      return PruneWork(OriginalFileState(*change.planned->previous), active_state, file_state);
    }
    return DecideWork(std::get<ServiceSpec>(change.planned->resource->spec), change.planned->action,
                      active_state, file_state);
  }

  // The unit file state a service had before tether took it over ("" when unknown).
  static std::string OriginalFileState(const InventoryEntry& entry) {
    if (!entry.original.is_object()) return {};
    const auto state = entry.original.find("unit_file_state");
    return state != entry.original.end() && state->is_string() ? state->get<std::string>()
                                                               : std::string();
  }

  // The unit file operations of a service change: those that must come before the unit
  // files are written or removed (a pruned service's disable), or after.
  Status FileOperations(const Change& change, bool before_units, bool& reload) {
    const std::string name = change.step.undo.value("name", "");
    const ServiceWork work = Decide(change);
    const bool prune = change.planned->resource == nullptr;
    if (before_units) {
      if (!work.disable) return {};
      reload = true;
      return bus_.Disable({name}, options_.call_timeout);
    }
    if (work.unmask) {
      if (auto done = bus_.Unmask({name}, options_.call_timeout); !done) return done;
      reload = true;
    }
    if (work.enable) {
      if (auto done = bus_.Enable({name}, options_.call_timeout); !done) return done;
      reload = true;
    }
    if (work.disable && !prune) {
      if (auto done = bus_.Disable({name}, options_.call_timeout); !done) return done;
      reload = true;
    }
    if (work.mask) {
      if (auto done = bus_.Mask({name}, work.mask_runtime, options_.call_timeout); !done) {
        return done;
      }
      reload = true;
    }
    return {};
  }

  // The job of a service change, then its inventory entry.
  Status ApplyService(Change& change) {
    const Json& undo = change.step.undo;
    const std::string name = undo.value("name", "");
    const ServiceWork work = Decide(change);
    if (work.job) {
      if (auto done = bus_.RunJob(*work.job, name, options_.job_timeout); !done) return done;
    }
    if (change.planned->resource == nullptr) return {};  // pruned: no entry
    const auto& spec = std::get<ServiceSpec>(change.planned->resource->spec);
    auto state = bus_.State(name, options_.call_timeout);
    if (!state) return Fail(state.error());
    if (spec.running && !IsActive(state->active_state) && state->active_state != "activating") {
      return Fail(std::errc::io_error, std::string(work.job ? UnitJobName(*work.job) : "start") +
                                           " '" + name + "': it is " + Describe(*state) +
                                           " right after; see 'journalctl -u " + name + "'");
    }
    InventoryEntry entry;
    entry.kind = ResourceKind::kService;
    entry.path = name;
    if (const InventoryEntry* previous = Previous(*change.planned)) {
      entry.created = previous->created;
      entry.original = previous->original;
    } else {
      // First applied: what was there before, for a prune to give back.
      const std::string active_state = undo.value("active_state", "");
      const std::string file_state = undo.value("unit_file_state", "");
      entry.original = {{"active", WasRunning(active_state)}, {"unit_file_state", file_state}};
      entry.created = !WasRunning(active_state) && file_state != "enabled" &&
                      file_state != "enabled-runtime" && (spec.running || work.enable);
    }
    change.entry = std::move(entry);
    return {};
  }

  Result<Json> BeginUnit(const PlannedAction& planned, const std::string& tag) {
    const std::string path = planned.resource != nullptr
                                 ? std::get<UnitSpec>(planned.resource->spec).path
                                 : UnitPath(PreviousPath(planned));
    auto observed = ObservePath(fs_, path, false, 0);
    if (!observed) return Fail(observed.error());
    // The backup's name is journaled before the link is made, so that recovery knows of
    // every name this step may leave behind.
    Json undo = {{"path", path}, {"before", ObservedTypeName(*observed)}};
    if (observed->exists && observed->stat.type != FileType::kDirectory) {
      undo["backup"] = Parent(path) + "/" + TemporaryPrefix(Name(path)) + "backup-" + tag + "-" +
                       std::to_string(++steps_);
    }
    if (planned.resource != nullptr) {
      // Missing directories (a drop-in's NAME.d), made by Apply and removed by Undo.
      std::vector<std::string> missing;
      for (std::string dir = Parent(path); dir != "/"; dir = Parent(dir)) {
        auto stat = fs_.Stat(dir);
        if (stat) break;
        if (!stat.error().Is(std::errc::no_such_file_or_directory)) return Fail(stat.error());
        missing.insert(missing.begin(), dir);
      }
      if (!missing.empty()) undo["directories"] = missing;
    } else if (planned.previous->created && EndsWith(Parent(path), ".d")) {
      undo["cleanup"] = Parent(path);
    }
    return undo;
  }

  Status ApplyUnit(Change& change) {
    const PlannedAction& planned = *change.planned;
    const Json& undo = change.step.undo;
    const std::string path = undo.value("path", "");
    touched_directories_.insert(Parent(path));
    for (const auto& dir : undo.value("directories", Json::array())) {
      auto made = fs_.CreateDirectory(dir.get<std::string>(), 0755);
      if (!made && !made.error().Is(std::errc::file_exists)) return made;
      touched_directories_.insert(Parent(dir.get<std::string>()));
    }
    if (undo.contains("backup")) {
      if (auto linked = fs_.Link(path, undo["backup"].get<std::string>()); !linked) return linked;
    }
    if (planned.resource == nullptr) return PruneUnit(*planned.previous, path);
    InventoryEntry entry;
    entry.kind = ResourceKind::kUnit;
    entry.path = path;
    if (const InventoryEntry* previous = Previous(planned)) {
      entry.created = previous->created;
      entry.original = previous->original;
    } else if (undo.value("before", "none") == "none") {
      entry.created = true;
    } else if (KeepsOriginal(planned.resource->on_remove)) {
      // Taken over: what was there is kept in the inventory, for a prune to give back.
      auto observed = ObservePath(fs_, path, true, kMaxUnitSize);
      if (!observed) return Fail(observed.error());
      entry.original = OriginalOf(*observed);
    }
    WriteOptions options;
    options.mode = 0644;
    options.uid = 0;
    options.gid = 0;
    if (auto written =
            fs_.WriteFileAtomic(path, std::get<UnitSpec>(planned.resource->spec).content, options);
        !written) {
      return written;
    }
    change.entry = std::move(entry);
    return {};
  }

  Status PruneUnit(const InventoryEntry& entry, const std::string& path) {
    const PruneWay way = HowToPrune(entry.created, entry.on_remove, entry.original);
    if (way == PruneWay::kLeave) return {};
    if (way == PruneWay::kRemove) {
      auto removed = fs_.Remove(path);
      if (!removed && !removed.error().Is(std::errc::no_such_file_or_directory)) return removed;
      return {};
    }
    return RestoreOriginal(fs_, path, entry.original);
  }

  Status UndoUnit(const Json& undo) {
    const std::string path = undo.value("path", "");
    if (undo.contains("backup")) {
      const std::string backup = undo["backup"].get<std::string>();
      auto restored = fs_.Rename(backup, path);
      // Already restored by an earlier, interrupted recovery: nothing left to do.
      if (!restored && !restored.error().Is(std::errc::no_such_file_or_directory)) {
        return restored;
      }
      // When the change never happened, the backup and the path are links to one inode,
      // and rename(2) then leaves both: the backup goes now.
      auto removed = fs_.Remove(backup);
      if (!removed && !removed.error().Is(std::errc::no_such_file_or_directory)) return removed;
    } else if (undo.value("before", "none") == "none") {
      auto removed = fs_.Remove(path);
      if (!removed && !removed.error().Is(std::errc::no_such_file_or_directory)) return removed;
    }
    // Leftovers of an interrupted atomic write.
    if (auto names = fs_.ListDirectory(Parent(path))) {
      for (const auto& name : *names) {
        if (!IsTemporaryName(name, Name(path))) continue;
        auto removed = fs_.Remove(Parent(path) + "/" + name);
        if (!removed && !removed.error().Is(std::errc::no_such_file_or_directory)) return removed;
      }
    }
    const Json directories = undo.value("directories", Json::array());
    for (auto it = directories.rbegin(); it != directories.rend(); ++it) {
      auto removed = fs_.Remove(it->get<std::string>());
      // One that has since got something tether does not manage in it stays.
      if (!removed && !removed.error().Is(std::errc::no_such_file_or_directory) &&
          !removed.error().Is(std::errc::directory_not_empty)) {
        return removed;
      }
    }
    return {};
  }

  Filesystem& fs_;
  SystemdBus& bus_;
  ServiceHandlerOptions options_;
  int steps_ = 0;                              // numbers backups, so no two steps ever share one
  bool applied_ = false;                       // Apply ran since the last Verify
  bool reload_pending_ = false;                // Undo changed unit file links: Settle reloads
  std::set<std::string> touched_directories_;  // to sync before the commit
};

}  // namespace

std::unique_ptr<KindHandler> MakeServiceHandler(Filesystem& fs, SystemdBus& bus,
                                                ServiceHandlerOptions options) {
  return std::make_unique<ServiceHandler>(fs, bus, options);
}

}  // namespace tether
