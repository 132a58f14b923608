#include "agent/cycle/cycle.hpp"

#include <algorithm>
#include <chrono>
#include <memory>
#include <optional>
#include <set>
#include <utility>

#include "agent/desired/facts.hpp"
#include "agent/desired/render.hpp"
#include "agent/desired/render_cache.hpp"
#include "agent/git/commit_check.hpp"
#include "agent/state/state_store.hpp"

namespace tether {

namespace {

// "content, mode 0644 -> 0600"
std::string ChangesText(const Action& action) { return action.changes.Join(", "); }

ReportedAction Reported(const Action& action) {
  ReportedAction reported;
  reported.id = action.id;
  reported.type = ActionTypeName(action.type);
  reported.changes = ChangesText(action);
  if (action.type == ActionType::kUpdate) reported.diff = action.diff.str();
  if (action.type == ActionType::kConflict) reported.reason = action.reason.str();
  return reported;
}

// The most entries a repair names for the daemon's watches (CycleReport::recorded): a few
// hundred bytes each in its result.
constexpr std::size_t kMaxRecorded = 10000;

bool HostOnly(ResourceKind kind) {
  return kind == ResourceKind::kPackage || kind == ResourceKind::kUnit ||
         kind == ResourceKind::kService || kind == ResourceKind::kCheck;
}

// One cycle, step by step; each step records what it found in report_.
class Cycle {
 public:
  Cycle(Host& host, const CycleOptions& options,
        const std::function<void(const CycleReport&)>& planned)
      : host_(host), options_(options), planned_(planned), start_(host.clock->Steady()) {}

  Result<CycleReport> Run() {
    EngineOptions engine_options;
    engine_options.health_timeout = options_.config.apply.health_timeout;
    engine_options.roll_back_unhealthy = options_.config.apply.rollback == RollbackMode::kAuto;
    engine_ = std::make_unique<Engine>(host_.state, engine_options, host_.kinds);
    if (!host_.open_source) return Fail(std::errc::invalid_argument, "no Git source");
    // A cycle that will ask the source for its head starts its git worker first, so that
    // the worker's start (a process, libgit2) overlaps the inventory's read. Not when
    // there is an apply to recover: opening the source reads its credentials and CA
    // file, which that apply may have been changing. A source that cannot be opened is
    // opened again below, after recovery, and its error reported there.
    if (options_.pin.empty() && !options_.enforce_applied && !host_.state.MayHaveJournal()) {
      if (auto source = host_.open_source(true)) source_ = std::move(*source);
    }
    // An apply a crash interrupted is finished before anything else.
    if (auto recovered = engine_->Recover(); !recovered) {
      return Fail(recovered.error().WithContext("recovery"));
    }
    // A full audit, when one is due, reads and hashes every managed path whatever its
    // fingerprint says.
    wall_now_ = host_.clock->Now();
    full_audit_ = FullAuditDue(host_.state, options_.config.apply.audit_every, wall_now_);
    drifted_.insert(options_.drifted.begin(), options_.drifted.end());
    LoadWrittenInPlace();
    // A drift repair (see Partial) parses, of the inventory's files, those it repairs; Plan
    // reads those of the other resources it plans.
    StateStore::EntryFilter keep;
    if (options_.pin.empty() && options_.enforce_applied && !options_.drifted.empty() &&
        !full_audit_) {
      keep = [this](std::string_view id, std::string_view kind) {
        return kind != ResourceKindName(ResourceKind::kFile) || drifted_.count(id) != 0;
      };
    }
    auto inventory = engine_->LoadInventory(keep);
    if (!inventory) return Abandon(inventory.error());
    inventory_ = std::move(*inventory);
    auto policy = LoadTrustPolicy(options_.config.trust);
    if (!policy) return Abandon(policy.error());
    if (!source_) {
      // Neither a rollback's pin nor a drift repair asks the source for its head.
      auto source = host_.open_source(options_.pin.empty() && !EnforcesApplied());
      if (!source) return Abandon(source.error());
      source_ = std::move(*source);
    }

    if (!ChooseCommit() || !Accept(*policy) || !CheckQuarantine()) return Finish();
    auto tree = source_->OpenTree(commit_);
    if (!tree) {
      (void)Stop(tree.error().message());
      return Finish();
    }
    const auto desired = Render(std::move(*tree));
    if (!desired) return Finish();
    auto plan = Plan(*desired);
    if (!plan) return Finish();
    if (options_.dry_run) {
      report_.outcome = Outcome::kDryRun;
      return Finish();
    }
    if (planned_) planned_(report_);
    Apply(*plan, *desired);
    return Finish();
  }

 private:
  CycleReport Finish() {
    KeepWrittenInPlace();
    report_.elapsed_ms =
        std::chrono::duration_cast<std::chrono::milliseconds>(host_.clock->Steady() - start_)
            .count();
    return std::move(report_);
  }

  // A problem that ends the cycle before it has a report: what was seen written in place
  // is kept all the same.
  tl::unexpected<Error> Abandon(const Error& error) {
    KeepWrittenInPlace();
    return Fail(error);
  }

  // A problem that ends the cycle: recorded; returns false, to stop.
  bool Stop(const std::string& message, Outcome outcome = Outcome::kFailed) {
    Note(message);
    report_.error = message;
    report_.outcome = outcome;
    return false;
  }
  void Note(const std::string& message) { report_.problems.push_back("tetherd: " + message); }

  void Step(StepKind kind, std::string commit = {}, std::string detail = {}, bool flag = false) {
    report_.course.push_back({kind, std::move(commit), std::move(detail), flag});
  }

  // What was seen written in place: what the daemon says, and what earlier cycles kept
  // (a restart of the daemon in between forgets nothing). A drift repair plans them too.
  void LoadWrittenInPlace() {
    written_in_place_.insert(options_.written_in_place.begin(), options_.written_in_place.end());
    auto kept = host_.state.LoadWrittenInPlace();
    if (kept) {
      in_place_kept_ = std::move(*kept);
    } else {
      // Which files, it cannot tell: all of them are read.
      Note(kept.error().message() + ": every managed file is read");
      in_place_kept_.all = true;
      in_place_corrupt_ = true;
    }
    written_in_place_.insert(in_place_kept_.ids.begin(), in_place_kept_.ids.end());
    if (in_place_kept_.all) full_audit_ = true;
    if (!options_.drifted.empty()) {
      drifted_.insert(written_in_place_.begin(), written_in_place_.end());
    }
    in_place_loaded_ = true;
  }

  // Keeps, for the cycles after, what was seen written in place and this cycle did not
  // plan and commit: all of it unless the cycle applied or found everything in sync, and
  // then what it left as the person made it (drift = "report" or "ignore"). Once.
  void KeepWrittenInPlace() {
    if (!in_place_loaded_) return;
    in_place_loaded_ = false;
    const bool committed =
        report_.outcome == Outcome::kApplied || report_.outcome == Outcome::kInSync;
    WrittenInPlace keep;
    keep.all = in_place_kept_.all && !committed;
    for (const auto& id : written_in_place_) {
      if (!committed || left_in_place_.count(id) != 0) keep.ids.push_back(id);
    }
    if (keep.ids.size() > kMaxWrittenInPlace) {
      keep.ids.clear();
      keep.all = true;
    }
    if (keep == in_place_kept_ && !in_place_corrupt_) return;
    if (auto saved = host_.state.SaveWrittenInPlace(keep); !saved) Note(saved.error().message());
  }

  // A drift repair: the applied commit again, when there is one.
  bool EnforcesApplied() const { return options_.enforce_applied && !inventory_.commit.empty(); }

  // The commit to plan: pinned, the applied one (a drift repair, or offline), or the
  // source's head.
  bool ChooseCommit() {
    const bool enforce_applied = options_.pin.empty() && EnforcesApplied();
    if (!options_.pin.empty()) {
      commit_ = options_.pin;
      Step(StepKind::kPinned, commit_);
    } else if (enforce_applied) {
      commit_ = inventory_.commit;
      enforced_ = true;
      Step(StepKind::kEnforced, commit_);
    } else if (auto update = source_->Update()) {
      commit_ = update->commit;
      Step(StepKind::kSource, commit_, source_->urls()[update->source], update->fetched);
    } else if (!inventory_.commit.empty() && !source_->worker_setup_failed()) {
      // Offline: keep enforcing what was applied last.
      commit_ = inventory_.commit;
      report_.offline = true;
      report_.error = update.error().message();
      Note(update.error().message());
      Step(StepKind::kOffline, commit_);
    } else {
      return Stop(update.error().message());
    }
    report_.commit = commit_;
    return true;
  }

  // The commit's signature, and that it does not go back in history.
  bool Accept(const TrustPolicy& policy) {
    const std::int64_t now =
        std::chrono::duration_cast<std::chrono::seconds>(host_.clock->Now().time_since_epoch())
            .count();
    // A rollback an operator asked for, or a source.pin in the host's own config, goes
    // back on purpose: no anti-rewind check (the signature is checked all the same).
    const bool pinned = !options_.pin.empty() || options_.config.source.pin == commit_;
    const std::optional<std::string> last_applied =
        inventory_.commit.empty() || pinned ? std::nullopt : std::optional(inventory_.commit);
    // The applied commit was verified when it was applied: a signer's key that expired
    // since does not stop its enforcement (a hand edit is still reverted, offline too).
    // A key taken out of allowed_signers does; any other commit needs a key valid now.
    TrustPolicy effective = policy;
    if (!inventory_.commit.empty() && commit_ == inventory_.commit) {
      for (auto& signer : effective.signers) signer.valid_before.reset();
    }
    auto accepted = CheckCommit(*source_, commit_, last_applied, effective, now);
    if (!accepted) return Stop(accepted.error().message(), Outcome::kRefused);
    signer_ = accepted->signer;
    return true;
  }

  // A quarantined head is not applied again (until a newer commit, or an operator asks):
  // the last applied commit keeps being enforced.
  bool CheckQuarantine() {
    auto quarantine = host_.state.LoadQuarantine();
    if (!quarantine) return Stop(quarantine.error().message());
    quarantine_ = std::move(*quarantine);
    if (quarantine_ && quarantine_->commit == commit_ && commit_ != inventory_.commit &&
        options_.pin.empty()) {
      if (options_.retry_quarantined) {
        Step(StepKind::kRetryQuarantined, commit_);
      } else {
        quarantined_head_ = true;
        Step(StepKind::kQuarantinedHead, commit_, quarantine_->reason);
        if (inventory_.commit.empty()) return false;  // outcome: failed
        commit_ = inventory_.commit;
        Step(StepKind::kEnforcingApplied, commit_);
      }
    }
    if (signer_) {
      report_.signer =
          signer_->principal + " (" + signer_->key_type + " " + signer_->fingerprint + ")";
      Step(StepKind::kVerified, commit_, report_.signer);
    }
    return true;
  }

  std::optional<DesiredState> Render(std::shared_ptr<Tree> tree) {
    RenderOptions render;
    render.content_tree = tree;  // contents are read again from the commit when written
    render.host = LocalHostFacts(options_.root);
    render.labels = options_.config.labels;
    render.allowed_paths = options_.config.apply.allowed_paths;
    bool fqdn_kept = false;
    {
      // The last cycle's render (mapped: its bytes go at the end of this block).
      const auto kept = host_.state.LoadRender();
      const std::string_view bytes = kept && *kept ? (*kept)->view() : std::string_view();
      // A drift repair restores what was applied, under the FQDN the resolver gave when
      // it was rendered: it asks no resolver (a DNS query, which may wait for its timeout)
      // when the host name is the same. Should that render not be the one to read back
      // after all, the resolver is asked before rendering again.
      if (render.host.fqdn.empty() && enforced_) {
        if (auto name = RenderedNameOf(bytes); name && name->hostname == render.host.hostname) {
          render.host.fqdn = name->fqdn;
          fqdn_kept = true;
        }
      }
      if (render.host.fqdn.empty()) render.host.fqdn = ResolveFqdn(render.host.hostname);
      render.profile = ExpandProfilePath(options_.config.source.profile, render.host);
      // Read back when this cycle would render the same.
      if (!bytes.empty()) {
        // A drift repair needs, of the files, only those it repairs (see Plan).
        FileFilter keep;
        if (Partial()) {
          keep = [this](std::string_view id, std::optional<DriftMode> drift) {
            return drifted_.count(id) != 0 ||
                   drift.value_or(options_.config.apply.drift) == DriftMode::kReport;
          };
        }
        if (auto cached = DecodeRender(bytes, RenderKey(commit_, render), tree, keep)) {
          for (auto& problem : cached->problems) report_.problems.push_back(std::move(problem));
          files_left_out_ = cached->files_left_out;
          return std::move(cached->desired);
        }
      }
    }
    if (fqdn_kept) {
      render.host.fqdn = ResolveFqdn(render.host.hostname);
      render.profile = ExpandProfilePath(options_.config.source.profile, render.host);
    }
    Diagnostics diagnostics;
    CachedRender rendered;
    rendered.name = {render.host.hostname, render.host.fqdn};
    rendered.desired = RenderProfile(*tree, render, diagnostics);
    for (const auto& diagnostic : diagnostics.all()) {
      rendered.problems.push_back(diagnostic.ToString());
      report_.problems.push_back(diagnostic.ToString());
    }
    if (!diagnostics.has_errors()) {
      if (!options_.dry_run) {
        if (auto saved = host_.state.SaveRender(EncodeRender(RenderKey(commit_, render), rendered));
            !saved) {
          Note("keeping the render for the next cycle: " + saved.error().message());
        }
      }
      return std::move(rendered.desired);
    }
    std::string first;
    for (const auto& diagnostic : diagnostics.all()) {
      if (!diagnostic.warning) {
        first = ": " + diagnostic.ToString();
        break;
      }
    }
    report_.error = "refusing commit " + commit_.substr(0, 12) +
                    ": its profile for this host is invalid" + first;
    report_.problems.push_back("tetherd: " + report_.error);
    report_.outcome = Outcome::kRefused;
    return std::nullopt;
  }

  // A drift repair of what the watches saw (when no full audit is due): those resources,
  // the services (which may restart on them) and those whose drift is reported (each
  // report names all of them). The rest is as the last cycle left it, which the watches
  // and the audits vouch for: the files among them are not even decoded from the kept
  // render (Render), only counted.
  bool Partial() const { return enforced_ && !options_.drifted.empty() && !full_audit_; }

  std::optional<std::vector<PlannedAction>> Plan(const DesiredState& desired) {
    if (full_audit_) Step(StepKind::kAudit);
    std::optional<std::set<std::string>> only;
    if (Partial()) {
      only.emplace(drifted_.begin(), drifted_.end());
      for (const auto& resource : desired.resources) {
        if (resource.kind == ResourceKind::kService ||
            resource.drift.value_or(options_.config.apply.drift) == DriftMode::kReport) {
          only->insert(resource.id);
        }
      }
    }
    if (only) {
      if (auto read = engine_->ReadEntries(inventory_, *only); !read) {
        (void)Stop(read.error().message());
        return std::nullopt;
      }
    }
    // What the daemon's watches saw written in place is read, whatever its fingerprint
    // says (it may be the stat of that edit).
    for (const auto& id : written_in_place_) {
      if (auto entry = inventory_.entries.find(id); entry != inventory_.entries.end()) {
        entry->second.fingerprint.clear();
      }
    }
    auto plan = engine_->Plan(desired, inventory_, full_audit_, only ? &*only : nullptr);
    if (!plan) {
      (void)Stop(plan.error().message());
      return std::nullopt;
    }
    report_.commit = commit_;
    const bool same_commit = inventory_.commit == commit_;
    // Of the files seen written in place, those the drift policy leaves as they are keep
    // the fingerprint of the person's edit: they stay on the list (KeepWrittenInPlace).
    std::set<std::string_view> in_place_changed;
    for (const auto& planned : *plan) {
      if (planned.action.type != ActionType::kInSync &&
          written_in_place_.count(planned.action.id) != 0) {
        in_place_changed.insert(planned.action.id);
      }
    }
    const std::vector<Action> drifted =
        ApplyDriftPolicy(*plan, options_.config.apply.drift, same_commit);
    for (const auto& planned : *plan) {
      if (planned.action.type == ActionType::kInSync &&
          in_place_changed.count(planned.action.id) != 0) {
        left_in_place_.insert(planned.action.id);
      }
    }
    for (const auto& resource : desired.resources) {
      ++report_.kinds[ResourceKindName(resource.kind)];
    }
    if (files_left_out_ > 0)
      report_.kinds[ResourceKindName(ResourceKind::kFile)] += files_left_out_;
    for (const auto& planned : *plan) {
      if (planned.action.type != ActionType::kInSync) {
        ++report_.changes;
        report_.actions.push_back(Reported(planned.action));
      } else {
        if (planned.resource != nullptr) ++report_.in_sync;
        if (options_.show_in_sync) report_.actions.push_back(Reported(planned.action));
      }
    }
    // Those a drift repair did not plan are in sync as the last cycle left them (of the
    // kinds handled here: the others are counted as skipped).
    if (only) {
      for (const auto& resource : desired.resources) {
        if (only->count(resource.id) == 0 && Handled(resource.kind)) ++report_.in_sync;
      }
      if (Handled(ResourceKind::kFile)) report_.in_sync += files_left_out_;
    }
    for (const auto& action : drifted) {
      report_.drifted.push_back(Reported(action));
      report_.drifted.back().type = "drifted";
      if (report_.in_sync > 0) --report_.in_sync;  // planned as in sync: left as it is
    }
    if (!Skip(desired)) return std::nullopt;
    return std::move(*plan);
  }

  bool Handled(ResourceKind kind) const {
    return std::any_of(host_.kinds.begin(), host_.kinds.end(),
                       [&](KindHandler* h) { return h->Handles(kind); });
  }

  // Resources of kinds no handler here manages.
  bool Skip(const DesiredState& desired) {
    for (const auto& resource : desired.resources) {
      if (Handled(resource.kind)) continue;
      ++report_.skipped_count;
      if (host_.no_systemd &&
          (resource.kind == ResourceKind::kUnit || resource.kind == ResourceKind::kService)) {
        return Stop(resource.id + ": systemd cannot be reached: " + host_.no_systemd->message());
      }
      report_.skipped.emplace_back(resource.id, HostOnly(resource.kind) && !host_.whole_host
                                                    ? "a --root sandbox manages files only"
                                                    : std::string(ResourceKindName(resource.kind)) +
                                                          "s are not managed by this version yet");
    }
    return true;
  }

  void Apply(std::vector<PlannedAction>& plan, const DesiredState& desired) {
    const bool same_commit = inventory_.commit == commit_;
    // The inventory is handed over (the plan points into it): Apply edits it in place.
    const ApplyResult result = engine_->Apply(plan, std::move(inventory_), commit_, &desired);
    report_.applied = true;
    if (!result.committed) return Failed(result, same_commit);
    if (result.ok && !result.inventory.unread.empty()) Recorded(result.inventory);
    // Committed, with resources refused or not: what was applied counts (the quarantine
    // of another commit ends, an audit is done); a refusal is then reported below.
    if (!same_commit && quarantine_) {
      if (auto cleared = host_.state.ClearQuarantine(); !cleared) {
        Note(cleared.error().message());
      }
    }
    if (full_audit_) {
      if (auto recorded = host_.state.RecordAudit(wall_now_); !recorded) {
        Note(recorded.error().message());
      }
    }
    if (!result.ok) return Failed(result, same_commit);
    report_.outcome = quarantined_head_      ? Outcome::kFailed
                      : report_.changes == 0 ? Outcome::kInSync
                                             : Outcome::kApplied;
  }

  // The entries a repair that read the inventory in part read, as they now stand: with
  // the lines it wrote back as they were, they are the whole inventory, so the daemon
  // need not read it again to watch it.
  void Recorded(const Inventory& inventory) {
    if (inventory.entries.size() > kMaxRecorded) return;  // the daemon reads it instead
    auto& recorded = report_.recorded.emplace();
    recorded.reserve(inventory.entries.size());
    for (const auto& [id, entry] : inventory.entries) {
      recorded.push_back({id, std::string(ResourceKindName(entry.kind)),
                          std::string(InventoryPath(id, entry)), entry.fingerprint});
    }
  }

  void Failed(const ApplyResult& result, bool same_commit) {
    report_.apply_failed = true;
    Note(result.error);
    report_.error = result.error;
    for (const auto& outcome : result.outcomes) {
      if (outcome.ok) continue;
      for (auto& listed : report_.actions) {
        if (listed.id != outcome.id) continue;
        listed.ok = false;
        listed.error = outcome.error;
      }
    }
    report_.outcome = result.rolled_back ? Outcome::kRolledBack : Outcome::kFailed;
    if (!result.rolled_back) return;
    for (const auto& outcome : result.outcomes) {
      if (outcome.type == ActionType::kInSync || outcome.type == ActionType::kConflict) continue;
      report_.undone.push_back(outcome.id);
    }
    if (same_commit) return;
    // A failure of the moment (a full disk, an I/O error, dpkg's lock) says nothing of the
    // commit: rolled back, and tried again at the next poll (the daemon backs off).
    // Nor does a rollback while resources were refused: the refusal (a hand-made
    // symlink, a file grown past the limit) may be what failed, and may not last.
    const bool refusals = std::any_of(
        result.outcomes.begin(), result.outcomes.end(),
        [](const ResourceOutcome& outcome) { return outcome.type == ActionType::kConflict; });
    if (refusals) {
      Note(
          "not quarantined: resources were refused, which may be why; tried again at the "
          "next poll");
      return;
    }
    if (!result.unhealthy && IsTransient(result.code)) {
      Note(
          "not quarantined: the failure is of the host's making, not the commit's; "
          "tried again at the next poll");
      return;
    }
    const std::int64_t now =
        std::chrono::duration_cast<std::chrono::seconds>(wall_now_.time_since_epoch()).count();
    if (auto saved = host_.state.SaveQuarantine({commit_, result.error, now}); !saved) {
      Note(saved.error().message());
    } else {
      report_.quarantined = true;
    }
  }

  Host& host_;
  const CycleOptions& options_;
  const std::function<void(const CycleReport&)>& planned_;
  const std::chrono::steady_clock::time_point start_;
  std::unique_ptr<Engine> engine_;
  std::unique_ptr<GitSource> source_;
  Inventory inventory_;
  std::optional<Quarantine> quarantine_;
  std::string commit_;
  std::optional<SignatureVerdict> signer_;
  bool quarantined_head_ = false;
  bool enforced_ = false;  // a drift repair: the applied commit again
  bool full_audit_ = false;
  // options_.drifted, to look up; in a drift repair, with what was seen written in place.
  std::set<std::string, std::less<>> drifted_;
  std::size_t files_left_out_ = 0;  // not decoded: a partial drift repair's
  // Seen written in place (LoadWrittenInPlace): the daemon's and those kept in the state
  // dir, which are in_place_kept_ as read (all of them when it was corrupt).
  std::set<std::string, std::less<>> written_in_place_;
  std::set<std::string> left_in_place_;  // of those, left as they are by the drift policy
  WrittenInPlace in_place_kept_;
  bool in_place_corrupt_ = false;
  bool in_place_loaded_ = false;
  std::chrono::system_clock::time_point wall_now_;
  CycleReport report_;
};

}  // namespace

Result<CycleReport> RunCycle(Host& host, const CycleOptions& options,
                             const std::function<void(const CycleReport&)>& planned) {
  return Cycle(host, options, planned).Run();
}

}  // namespace tether
