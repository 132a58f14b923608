// The KindHandler of packages.
#include "agent/kinds/packages/package_handler.hpp"

#include "agent/kinds/packages/package_plan.hpp"

#include <algorithm>
#include <map>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace tether {

namespace {

using Json = nlohmann::json;

// A string of an undo record; none when it is absent or null (not installed).
std::optional<std::string> StringField(const Json& undo, const char* key) {
  const auto found = undo.find(key);
  if (found == undo.end() || !found->is_string()) return std::nullopt;
  return found->get<std::string>();
}

class PackageHandler final : public KindHandler {
 public:
  PackageHandler(PackageManager& packages, std::chrono::milliseconds timeout)
      : packages_(packages), timeout_(timeout) {}

  bool Handles(ResourceKind kind) const override { return kind == ResourceKind::kPackage; }

  void Prepare(const DesiredState& desired) override {
    // What the archives offer, for every package the plan may install: one query, rather
    // than one per package. A failure here is found again, and reported, by Plan().
    available_.clear();
    auto installed = packages_.Installed();
    if (!installed) return;
    std::vector<std::string> names;
    for (const auto& resource : desired.resources) {
      const auto* spec = std::get_if<PackageSpec>(&resource.spec);
      if (spec == nullptr || !spec->present || !CheckPackageRequest(spec->name, spec->version)) {
        continue;
      }
      const auto current = installed->find(spec->name);
      if (current == installed->end() ||
          !VersionSatisfies(spec->version, current->second, packages_.version_order())) {
        names.push_back(spec->name);
      }
    }
    if (names.empty()) return;
    if (auto found = packages_.Available(names)) available_ = std::move(*found);
  }

  Result<Action> Plan(const Resource& resource, const InventoryEntry* /*previous*/,
                      bool /*full_audit*/, const PlanContext& /*context*/) override {
    const auto& spec = std::get<PackageSpec>(resource.spec);
    if (auto checked = CheckPackageRequest(spec.name, spec.version); !checked) {
      return Fail(checked.error());
    }
    auto installed = packages_.Installed();
    if (!installed) return Fail(installed.error());
    const auto current = installed->find(spec.name);
    return PlanPackage(resource.id, spec,
                       current == installed->end() ? std::nullopt : std::optional(current->second),
                       packages_.version_order(), [&] { return WantedVersion(spec); });
  }

  Result<Action> PlanPrune(const std::string& id, const InventoryEntry& entry) override {
    if (!entry.created) return PlanPackagePrune(id, false, std::nullopt);  // found installed
    auto installed = packages_.Installed();
    if (!installed) return Fail(installed.error());
    const auto current = installed->find(std::string(InventoryPath(id, entry)));
    return PlanPackagePrune(
        id, true, current == installed->end() ? std::nullopt : std::optional(current->second));
  }

  Result<Json> Begin(const PlannedAction& planned, const std::string& /*tag*/) override {
    const PackageSpec* spec =
        planned.resource != nullptr ? std::get_if<PackageSpec>(&planned.resource->spec) : nullptr;
    const std::string name = spec != nullptr ? spec->name : std::string(PreviousPath(planned));
    auto installed = packages_.Installed();
    if (!installed) return Fail(installed.error());
    const auto current = installed->find(name);
    Json undo = {{"name", name}, {"before", nullptr}, {"want", nullptr}};
    if (current != installed->end()) undo["before"] = current->second;
    if (spec != nullptr && spec->present) {
      if (current != installed->end() &&
          VersionSatisfies(spec->version, current->second, packages_.version_order())) {
        undo["want"] = current->second;  // someone made it meanwhile
      } else {
        auto want = WantedVersion(*spec);
        if (!want) return Fail(want.error());
        undo["want"] = *want;
      }
    }
    return undo;
  }

  Status Apply(std::vector<Change>& changes, Transaction& transaction) override {
    const VersionCompare order = packages_.version_order();
    std::vector<PackageChange> transaction_changes;
    for (const auto& change : changes) {
      const Json& undo = change.step.undo;
      const std::string name = StringField(undo, "name").value_or("");
      const auto before = StringField(undo, "before");
      const auto want = StringField(undo, "want");
      if (!want) {
        if (before) transaction_changes.push_back({PackageChange::Type::kRemove, name});
        continue;
      }
      PackageChange::Type type = PackageChange::Type::kInstall;
      if (before) {
        const int direction = order(*want, *before);
        if (direction == 0) continue;
        type = direction > 0 ? PackageChange::Type::kUpgrade : PackageChange::Type::kDowngrade;
      }
      transaction_changes.push_back({type, name, *want});
    }
    if (!transaction_changes.empty()) {
      if (auto made = packages_.Apply(transaction_changes, timeout_); !made) {
        Blame(changes, made.error());
        return made;
      }
    }
    // What the transaction left: each change is checked, not assumed.
    auto installed = packages_.Installed();
    if (!installed) {
      changes.front().failed = true;
      return Fail(installed.error());
    }
    for (auto& change : changes) {
      const Json& undo = change.step.undo;
      const std::string name = StringField(undo, "name").value_or("");
      const auto current = installed->find(name);
      const auto want = StringField(undo, "want");
      if (!want) {
        if (current != installed->end()) {
          change.failed = true;
          return Fail(std::errc::io_error, "the package manager reported success, but '" + name +
                                               "' is still installed (" + current->second + ")");
        }
      } else if (current == installed->end() || order(current->second, *want) != 0) {
        change.failed = true;
        return Fail(std::errc::io_error,
                    "the package manager reported success, but '" + name + "' is " +
                        (current == installed->end() ? "not installed" : "at " + current->second) +
                        ", not at " + *want);
      }
      change.entry = EntryFor(*change.planned, undo,
                              installed->end() == current ? std::optional<std::string>()
                                                          : std::optional(current->second));
      change.done = true;
      transaction.Progress("change");
    }
    return {};
  }

  Status Undo(const JournalStep& step) override {
    const std::string name = StringField(step.undo, "name").value_or("");
    if (auto checked = CheckPackageRequest(name, std::nullopt); !checked) return checked;
    auto installed = packages_.Installed();
    if (!installed) return Fail(installed.error());
    const auto current = installed->find(name);
    const bool is_installed = current != installed->end();
    const auto before = StringField(step.undo, "before");
    if (!before) {
      if (!is_installed) return {};  // never installed, or already removed again
      return packages_.Apply({{PackageChange::Type::kRemove, name}}, timeout_);
    }
    const std::string& previous = *before;
    const VersionCompare order = packages_.version_order();
    if (is_installed && order(current->second, previous) == 0) return {};  // as it was
    auto available = packages_.Available({name});
    if (!available) return Fail(available.error());
    const auto& versions = (*available)[name];
    const bool offered = std::any_of(versions.begin(), versions.end(), [&](const auto& version) {
      return order(version, previous) == 0;
    });
    if (!offered) {
      std::string list;
      for (const auto& version : versions) list += (list.empty() ? "" : ", ") + version;
      return Fail(
          std::errc::no_such_file_or_directory,
          "cannot reinstall the previous version " + previous + " of '" + name +
              "': no archive offers it any longer (available: " + (list.empty() ? "none" : list) +
              "); '" + name + "' stays " + (is_installed ? "at " + current->second : "removed"));
    }
    PackageChange change{PackageChange::Type::kInstall, name, previous};
    if (is_installed) {
      change.type = order(previous, current->second) > 0 ? PackageChange::Type::kUpgrade
                                                         : PackageChange::Type::kDowngrade;
    }
    return packages_.Apply({change}, timeout_);
  }

  bool KeepsAside(const Json& /*undo*/) const override { return false; }
  Status Discard(const JournalStep& /*step*/) override { return {}; }

 private:
  // The version to install for `spec`: the newest available one that satisfies it.
  Result<std::string> WantedVersion(const PackageSpec& spec) {
    auto found = available_.find(spec.name);
    if (found == available_.end()) {
      auto queried = packages_.Available({spec.name});
      if (!queried) return Fail(queried.error());
      found = available_.emplace(spec.name, std::move((*queried)[spec.name])).first;
    }
    return ChooseVersion(spec.name, spec.version, found->second, packages_.version_order());
  }

  // The inventory entry of a change just made: none once the package is removed.
  static std::optional<InventoryEntry> EntryFor(const PlannedAction& planned, const Json& undo,
                                                const std::optional<std::string>& version) {
    if (!version || planned.resource == nullptr) return std::nullopt;
    InventoryEntry entry;
    entry.kind = ResourceKind::kPackage;
    entry.path = StringField(undo, "name").value_or("");
    entry.fingerprint = *version;
    if (planned.previous != nullptr) {
      entry.created = planned.previous->created;
      entry.original = planned.previous->original;
    } else if (const auto before = StringField(undo, "before")) {
      entry.original = Json{{"version", *before}};  // found installed: a prune leaves it
    } else {
      entry.created = true;  // tether installed it: a prune removes it
    }
    return entry;
  }

  // Marks the change a failed transaction is about: the first whose package the error
  // names, else the first.
  static void Blame(std::vector<Change>& changes, const Error& error) {
    for (auto& change : changes) {
      if (error.message().find("'" + StringField(change.step.undo, "name").value_or("") + "'") !=
          std::string::npos) {
        change.failed = true;
        return;
      }
    }
    changes.front().failed = true;
  }

  PackageManager& packages_;
  std::chrono::milliseconds timeout_;
  // Per plan: name -> versions the archives offer, newest first.
  std::map<std::string, std::vector<std::string>> available_;
};

}  // namespace

std::unique_ptr<KindHandler> MakePackageHandler(PackageManager& packages,
                                                std::chrono::milliseconds transaction_timeout) {
  return std::make_unique<PackageHandler>(packages, transaction_timeout);
}

}  // namespace tether
