#include "agent/cycle/cycle.hpp"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>

#include <cerrno>
#include <cstring>

#include <algorithm>
#include <chrono>
#include <cstdlib>

#include "agent/desired/facts.hpp"
#include "agent/desired/render.hpp"
#include "agent/engine/engine.hpp"
#include "agent/git/commit_check.hpp"
#include "agent/git/git_source.hpp"
#include "agent/kinds/checks/check_handler.hpp"
#include "agent/kinds/files/path_handler.hpp"
#include "agent/kinds/packages/apt.hpp"
#include "agent/kinds/packages/package_handler.hpp"
#include "agent/kinds/services/service_handler.hpp"
#include "agent/state/state_store.hpp"
#include "common/filesystem.hpp"
#include "common/systemd_bus.hpp"
#include "common/unique_fd.hpp"

namespace tether {

namespace {

using Clock = std::chrono::steady_clock;

bool EnsureDirectory(const std::string& path, std::FILE* err) {
  if (mkdir(path.c_str(), 0700) == 0 || errno == EEXIST) return true;
  std::fprintf(err, "tetherd: create '%s': %s\n", path.c_str(), std::strerror(errno));
  return false;
}

std::string Short(const std::string& commit) { return commit.substr(0, 12); }

// "content, mode 0644 -> 0600"
std::string ChangesText(const Action& action) {
  std::string text;
  for (const auto& change : action.changes) {
    if (!text.empty()) text += ", ";
    text += change;
  }
  return text;
}

}  // namespace

int RunCycleOnce(const CycleOptions& given, std::FILE* out, std::FILE* err,
                 CycleSummary* given_summary) {
  CycleSummary ignored;
  CycleSummary& summary = given_summary != nullptr ? *given_summary : ignored;
  // A problem that ends the cycle: said on `err`, and kept in the summary.
  auto problem = [&](const std::string& message, Outcome outcome = Outcome::kFailed) {
    std::fprintf(err, "tetherd: %s\n", message.c_str());
    summary.error = message;
    summary.outcome = outcome;
    return 1;
  };
  const auto start = Clock::now();
  if (!EnsureDirectory(given.state_dir, err) || !EnsureDirectory(given.cache_dir, err)) {
    return 1;
  }
  // Absolute and symlink-free from here on: state files are never written through a link.
  CycleOptions options = given;
  for (std::string* dir : {&options.state_dir, &options.cache_dir}) {
    char* real = realpath(dir->c_str(), nullptr);
    if (real == nullptr) return problem("'" + *dir + "': " + std::strerror(errno));
    *dir = real;
    std::free(real);
  }
  // One cycle at a time per state dir: a second tetherd (even a dry run) must never
  // recover, that is roll back, an apply that is still going on.
  auto host = RootedFilesystem::Open("/");
  if (!host) return problem(host.error().message());
  StateStore state(**host, options.state_dir);
  auto lock = state.Lock(false);
  const auto busy = std::make_error_code(std::errc::operation_would_block);
  if (!lock && lock.error().code() == busy && options.wait_for_lock) {
    std::fprintf(out, "waiting  for another cycle on '%s' to end\n", options.state_dir.c_str());
    lock = state.Lock(true);
  }
  if (!lock) {
    return problem("another tetherd is working on '" + options.state_dir + "'" +
                   (lock.error().code() == busy ? "" : ": " + lock.error().message()));
  }
  auto fs = RootedFilesystem::Open(options.root);
  if (!fs) return problem("--root: " + fs.error().message());
  auto paths = MakePathHandler(**fs);
  auto checks = MakeCheckHandler();
  // Packages and services belong to the host itself: under a --root sandbox only its
  // files are managed.
  const bool whole_host = options.root == "/";
  AptOptions apt_options;
  apt_options.install_recommends = options.config.packages.install_recommends;
  apt_options.lock_timeout =
      std::chrono::ceil<std::chrono::seconds>(options.config.packages.lock_timeout);
  AptPackageManager apt(apt_options);
  auto packages = MakePackageHandler(apt);
  // Checks verify the host's services: under --root they are skipped too, unless asked.
  std::vector<KindHandler*> handlers = {paths.get()};
  if (whole_host || options.root_checks) handlers.push_back(checks.get());
  if (whole_host) handlers.insert(handlers.begin(), packages.get());
  // Units and services: systemd's, over the system bus; connected when the profile has
  // any (a later error names what could not be reached).
  std::unique_ptr<SystemdBus> bus;
  std::unique_ptr<KindHandler> services;
  std::optional<Error> no_bus;
  if (whole_host) {
    auto opened = OpenSystemdBus();
    if (opened) {
      bus = std::move(*opened);
      services = MakeServiceHandler(**fs, *bus);
      handlers.insert(handlers.end() - 1, services.get());  // before the checks (last)
    } else {
      no_bus = opened.error();
    }
  }
  EngineOptions engine_options;
  engine_options.health_timeout = options.config.apply.health_timeout;
  engine_options.roll_back_unhealthy = options.config.apply.rollback == RollbackMode::kAuto;
  Engine engine(state, engine_options, handlers);

  // An apply a crash interrupted is finished before anything else.
  if (auto recovered = engine.Recover(); !recovered) {
    return problem("recovery: " + recovered.error().message());
  }
  auto inventory = engine.LoadInventory();
  if (!inventory) {
    return problem(inventory.error().message());
  }
  auto policy = LoadTrustPolicy(options.config.trust);
  if (!policy) {
    return problem(policy.error().message());
  }

  GitSourceOptions source_options;
  source_options.source = options.config.source;
  source_options.cache_dir = options.cache_dir;
  source_options.worker_argv = options.worker_argv;
  auto source = GitSource::Create(source_options);
  if (!source) {
    return problem(source.error().message());
  }
  std::string commit;
  const bool enforce_applied =
      options.pin.empty() && options.enforce_applied && !inventory->commit.empty();
  auto update = options.pin.empty() && !enforce_applied
                    ? (*source)->Update()
                    : Result<UpdateResult>(Fail(std::errc::operation_canceled, "not fetched"));
  if (!options.pin.empty()) {
    commit = options.pin;
    std::fprintf(out, "pinned   %s (tetherctl rollback), until tetherctl resume\n",
                 Short(commit).c_str());
  } else if (enforce_applied) {
    commit = inventory->commit;
    std::fprintf(out, "applied  %s enforced again (a drift repair: no fetch)\n",
                 Short(commit).c_str());
  } else if (update) {
    commit = update->commit;
    std::fprintf(out, "source   %s at %s%s\n", (*source)->urls()[update->source].c_str(),
                 Short(commit).c_str(), update->fetched ? " (fetched)" : "");
  } else if (!inventory->commit.empty()) {
    // Offline: keep enforcing what was applied last.
    commit = inventory->commit;
    summary.offline = true;
    summary.error = update.error().message();
    std::fprintf(err, "tetherd: %s\n", update.error().message().c_str());
    std::fprintf(out, "offline  enforcing the applied commit %s\n", Short(commit).c_str());
  } else {
    return problem(update.error().message());
  }

  summary.commit = commit;
  const std::int64_t now = std::chrono::duration_cast<std::chrono::seconds>(
                               std::chrono::system_clock::now().time_since_epoch())
                               .count();
  // A rollback an operator asked for goes back on purpose: no anti-rewind check.
  const std::optional<std::string> last_applied = inventory->commit.empty() || !options.pin.empty()
                                                      ? std::nullopt
                                                      : std::optional(inventory->commit);
  auto accepted = CheckCommit(**source, commit, last_applied, *policy, now);
  if (!accepted) return problem(accepted.error().message(), Outcome::kRefused);
  // A quarantined head is not applied again (until a newer commit, or an operator asks):
  // the last applied commit keeps being enforced.
  auto quarantine = state.LoadQuarantine();
  if (!quarantine) {
    return problem(quarantine.error().message());
  }
  bool quarantined_head = false;
  if (*quarantine && (*quarantine)->commit == commit && commit != inventory->commit &&
      options.pin.empty()) {
    if (options.retry_quarantined) {
      std::fprintf(out, "retry    quarantined commit %s, as asked\n", Short(commit).c_str());
    } else {
      quarantined_head = true;
      std::fprintf(out,
                   "quarantined commit %s: it failed before (%s); not applied again until a "
                   "newer commit arrives (or --retry-quarantined)\n",
                   Short(commit).c_str(), (*quarantine)->reason.c_str());
      if (inventory->commit.empty()) return 1;
      commit = inventory->commit;
      std::fprintf(out, "enforcing the applied commit %s\n", Short(commit).c_str());
    }
  }
  if (accepted->signer) {
    std::fprintf(out, "verified signed by %s (%s %s)\n", accepted->signer->principal.c_str(),
                 accepted->signer->key_type.c_str(), accepted->signer->fingerprint.c_str());
    summary.signer = accepted->signer->principal + " (" + accepted->signer->key_type + " " +
                     accepted->signer->fingerprint + ")";
  }

  auto opened = (*source)->OpenTree(commit);
  if (!opened) {
    return problem(opened.error().message());
  }
  std::shared_ptr<Tree> tree = std::move(*opened);
  RenderOptions render;
  render.content_tree = tree;  // contents are read again from the commit when written
  render.host = GatherHostFacts(options.root);
  render.profile = ExpandProfilePath(options.config.source.profile, render.host);
  render.labels = options.config.labels;
  render.allowed_paths = options.config.apply.allowed_paths;
  Diagnostics diagnostics;
  const DesiredState desired = RenderProfile(*tree, render, diagnostics);
  for (const auto& diagnostic : diagnostics.all()) {
    std::fprintf(err, "%s\n", diagnostic.ToString().c_str());
  }
  if (diagnostics.has_errors()) {
    std::string first;
    for (const auto& diagnostic : diagnostics.all()) {
      if (!diagnostic.warning) {
        first = ": " + diagnostic.ToString();
        break;
      }
    }
    return problem(
        "refusing commit " + Short(commit) + ": its profile for this host is invalid" + first,
        Outcome::kRefused);
  }

  // A full audit, when one is due, reads and hashes every managed path whatever its
  // fingerprint says.
  const auto wall_now = std::chrono::system_clock::now();
  const bool full_audit = FullAuditDue(state, options.config.apply.audit_every, wall_now);
  if (full_audit) std::fprintf(out, "audit    every managed path is read and hashed\n");
  auto plan = engine.Plan(desired, *inventory, full_audit);
  if (!plan) return problem(plan.error().message());
  const bool same_commit = inventory->commit == commit;
  summary.commit = commit;
  const std::vector<Action> drifted =
      ApplyDriftPolicy(*plan, options.config.apply.drift, same_commit);
  for (const auto& resource : desired.resources) ++summary.kinds[ResourceKindName(resource.kind)];
  auto list = [&](const Action& action, const char* what) {
    if (summary.resources.size() >= kMaxResourcesListed) return;
    summary.resources.push_back({action.id, what, ChangesText(action), true, ""});
  };
  std::vector<Action> actions;
  std::size_t changes = 0;
  for (const auto& planned : *plan) {
    if (planned.action.type != ActionType::kInSync) {
      ++changes;
      list(planned.action, ActionTypeName(planned.action.type));
    } else if (planned.resource != nullptr) {
      ++summary.in_sync;
    }
    if (planned.action.type != ActionType::kInSync || options.show_in_sync) {
      actions.push_back(planned.action);
    }
  }
  std::fputs(FormatPlan(actions).c_str(), out);
  for (const auto& action : drifted) {
    list(action, "drifted");
    if (summary.in_sync > 0) --summary.in_sync;  // planned as in sync: left as it is
    std::fprintf(out, "drifted  %s: %s (drift = \"report\": left as it is)\n", action.id.c_str(),
                 ChangesText(action).c_str());
    std::fputs(action.diff.c_str(), out);
  }
  for (const auto& resource : desired.resources) {
    const bool handled = std::any_of(handlers.begin(), handlers.end(),
                                     [&](KindHandler* h) { return h->Handles(resource.kind); });
    if (handled) continue;
    ++summary.skipped;
    if (no_bus &&
        (resource.kind == ResourceKind::kUnit || resource.kind == ResourceKind::kService)) {
      return problem(resource.id + ": systemd cannot be reached: " + no_bus->message());
    }
    const bool host_only =
        resource.kind == ResourceKind::kPackage || resource.kind == ResourceKind::kUnit ||
        resource.kind == ResourceKind::kService || resource.kind == ResourceKind::kCheck;
    std::fprintf(out, "skipped  %s: %s\n", resource.id.c_str(),
                 host_only && !whole_host ? "a --root sandbox manages files only"
                                          : (std::string(ResourceKindName(resource.kind)) +
                                             "s are not managed by this version yet")
                                                .c_str());
  }
  if (options.dry_run) {
    summary.changes = changes;
    summary.outcome = Outcome::kDryRun;
    std::fprintf(out, "dry run: %zu change%s planned, nothing changed\n", changes,
                 changes == 1 ? "" : "s");
    return 0;
  }
  // The inventory is handed over (the plan points into it): Apply edits it in place.
  const ApplyResult result = engine.Apply(*plan, std::move(*inventory), commit, &desired);
  const auto elapsed =
      std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - start).count();
  if (!result.ok) {
    std::fprintf(err, "tetherd: %s\n", result.error.c_str());
    summary.error = result.error;
    for (const auto& outcome : result.outcomes) {
      if (outcome.ok) continue;
      for (auto& listed : summary.resources) {
        if (listed.id != outcome.id) continue;
        listed.ok = false;
        listed.error = outcome.error;
      }
    }
    if (result.rolled_back) {
      std::string undone;
      for (const auto& outcome : result.outcomes) {
        if (outcome.type == ActionType::kInSync || outcome.type == ActionType::kConflict) continue;
        undone += (undone.empty() ? "" : ", ") + outcome.id;
      }
      if (!undone.empty()) std::fprintf(out, "undone   %s\n", undone.c_str());
    }
    summary.changes = changes;
    summary.outcome = result.rolled_back ? Outcome::kRolledBack : Outcome::kFailed;
    std::fprintf(out, "%s commit %s after %lld ms\n",
                 result.rolled_back ? "rolled back" : "FAILED to apply", Short(commit).c_str(),
                 static_cast<long long>(elapsed));
    if (!same_commit && result.rolled_back) {
      const Quarantine quarantined{commit, result.error, now};
      if (auto saved = state.SaveQuarantine(quarantined); !saved) {
        std::fprintf(err, "tetherd: %s\n", saved.error().message().c_str());
      } else {
        std::fprintf(out, "quarantined commit %s: not applied again until a newer commit\n",
                     Short(commit).c_str());
      }
    }
    return 1;
  }
  if (!same_commit && *quarantine) {
    if (auto cleared = state.ClearQuarantine(); !cleared) {
      std::fprintf(err, "tetherd: %s\n", cleared.error().message().c_str());
    }
  }
  if (full_audit) {
    if (auto recorded = state.RecordAudit(wall_now); !recorded) {
      std::fprintf(err, "tetherd: %s\n", recorded.error().message().c_str());
    }
  }
  summary.changes = changes;
  summary.outcome = quarantined_head ? Outcome::kFailed
                    : changes == 0   ? Outcome::kInSync
                                     : Outcome::kApplied;
  if (changes == 0) {
    std::fprintf(out, "in sync with %s (%lld ms)\n", Short(commit).c_str(),
                 static_cast<long long>(elapsed));
  } else {
    std::fprintf(out, "applied %s: %zu change%s in %lld ms\n", Short(commit).c_str(), changes,
                 changes == 1 ? "" : "s", static_cast<long long>(elapsed));
  }
  return quarantined_head ? 1 : 0;
}

}  // namespace tether
