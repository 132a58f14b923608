// The reconcile engine: plans a desired state against the host and the inventory, and
// applies the plan as one transaction.
//
// Transaction (DESIGN.md section 4): before each change, a step saying how to undo it is
// appended to the journal (StateStore's, synced); what a change replaces is kept
// first (a hard link next to it: no copy). On a failure every done step is undone in
// reverse and the host is as before. On success the new inventory is written, a commit
// record closes the journal, and the backups go. If the process dies mid-way, Recover()
// (called before anything else at start) finishes the job: rolls back an open
// transaction, or completes a committed one.
//
// The engine names no resource kind: KindHandlers registered by main do the work.
// Threading: one caller at a time.
#pragma once

#include <chrono>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "agent/desired/desired_state.hpp"
#include "agent/engine/action.hpp"
#include "agent/state/state_store.hpp"
#include "common/error.hpp"
#include "common/sparse_text.hpp"

namespace tether {

// What tether applied: one entry per resource id.
struct InventoryEntry {
  ResourceKind kind = ResourceKind::kFile;
  bool created = false;  // tether created it (prune deletes it); next to `kind`: no padding
  // Refused when a newer commit was applied (a conflict): the entry is still the older
  // commit's, so a difference is that commit's change waiting, never drift.
  bool pending = false;
  // The resource's on_remove when it was last applied: the resource is gone when it counts.
  OnRemove on_remove = OnRemove::kDefault;
  bool secret = false;  // a secret file's: its content is never shown, even in a prune's diff
  // The managed path or name, when it is not what the entry's id names after "KIND:" (a
  // unit's file: /etc/systemd/system/NAME); empty when it is (most entries: a file's id
  // holds its path), so that an inventory of many files holds each path once. Read it
  // with InventoryPath.
  SparseText path;
  // What was there before tether took it over: kept only for on_remove = "restore" (a
  // prune puts it back); a large content is aside in the state dir (content_sha256).
  nlohmann::json original;
  std::string fingerprint;  // what it looked like after the last apply or check
};

// What an id names after "KIND:": "/etc/motd" of "file:/etc/motd".
[[nodiscard]] std::string_view NamedBy(std::string_view id);

// What the inventory entry of `id` manages: its path or name.
[[nodiscard]] std::string_view InventoryPath(std::string_view id, const InventoryEntry& entry);

struct Inventory {
  std::string commit;
  // Ordered by id; looked up by a view of one too (an Action's id), without a copy.
  std::map<std::string, InventoryEntry, std::less<>> entries;
  // Of an inventory loaded in part (Engine::LoadInventory with a filter): the entries not
  // parsed, written into the next inventory as they are.
  UnreadEntries unread;
};

// One journaled step: how to undo one change.
struct JournalStep {
  std::string id;
  ResourceKind kind = ResourceKind::kFile;
  nlohmann::json undo;  // the handler's own record
};

// The planned work on one resource.
struct PlannedAction {
  Action action;
  const Resource* resource = nullptr;  // null for a prune
  // Its entry in the inventory the plan was made from (which must outlive the plan, or be
  // given to Apply), if any.
  const InventoryEntry* previous = nullptr;
  // The inventory id (a key of that inventory) this resource takes the place of, if any:
  // the same path under another kind (a file that becomes a symlink). Its entry goes; what
  // it created or took over stays.
  const std::string* replaces = nullptr;
};

// What the inventory entry a planned action was planned over (`previous`, which must be
// set) manages: its path or name.
[[nodiscard]] std::string_view PreviousPath(const PlannedAction& planned);

// One change of a transaction, as its handler sees it.
struct Change {
  const PlannedAction* planned = nullptr;
  JournalStep step;  // how to undo it: durable in the journal before Apply is called
  // Set by Apply once the change is made: the resource's new inventory entry (none after
  // a delete).
  std::optional<InventoryEntry> entry;
  bool done = false;
  bool failed = false;  // set by Apply on the change its error is about
};

class Transaction {
 public:
  virtual ~Transaction() = default;
  // A name unique to this transaction, for backup files.
  [[nodiscard]] virtual const std::string& tag() const = 0;
  // Tells the engine that one more durable step was taken ("staged", "change"): the
  // crash test's kill points.
  virtual void Progress(const char* what) = 0;
};

// What a plan has decided so far, for a handler whose plan depends on other resources: a
// service restarts when its unit or a path in its restart_on changes in this plan.
// Resources are planned in kind order (packages, the filesystem, units, services, checks).
struct PlanContext {
  // Ids with a create, update or delete planned so far, in plan order: views of the
  // desired state's.
  std::vector<std::string_view> changed;
};

// The ids of the resources an apply refused (conflicts), sorted: views of the plan's.
using RefusedIds = std::vector<std::string_view>;

// True when `id` is one of `refused`.
[[nodiscard]] bool IsRefused(const RefusedIds& refused, std::string_view id);

// One kind of resource (or several), as the engine sees it.
class KindHandler {
 public:
  virtual ~KindHandler() = default;
  [[nodiscard]] virtual bool Handles(ResourceKind kind) const = 0;
  // True when a path that was a `from` may become a `to` in place (a file that becomes a
  // symlink): the engine then plans the new resource over the dropped one's entry rather
  // than pruning it. Different kinds that merely share a name (unit:x.service and
  // service:x.service) are not replacements.
  [[nodiscard]] virtual bool Replaces(ResourceKind /*from*/, ResourceKind /*to*/) const {
    return false;
  }
  // Called once per plan with the whole desired state, before Plan() of its resources
  // (e.g. to know which directories the plan will create).
  virtual void Prepare(const DesiredState& /*desired*/) {}
  // Observes the host (reads only) and plans (pure) one desired resource. Unless
  // `full_audit`, a handler may trust `previous->fingerprint` for what did not change.
  [[nodiscard]] virtual Result<Action> Plan(const Resource& resource,
                                            const InventoryEntry* previous, bool full_audit,
                                            const PlanContext& context) = 0;
  // Plans removing what tether applied before and the profile dropped.
  [[nodiscard]] virtual Result<Action> PlanPrune(const std::string& id,
                                                 const InventoryEntry& entry) = 0;
  // Observes the host again, right before the change, and says how to undo `planned` (a
  // create, update or delete): the handler's own record, journaled by the engine before
  // Apply. Changes nothing.
  [[nodiscard]] virtual Result<nlohmann::json> Begin(const PlannedAction& planned,
                                                     const std::string& tag) = 0;
  // Makes `changes` (consecutive in the plan, all this handler's, each begun and
  // journaled) in order, marking each one done. May do the work of several at once (one
  // sync for many files, one package transaction); stops at the first failure, marking
  // the change it is about `failed` (else the engine blames the first change not done).
  [[nodiscard]] virtual Status Apply(std::vector<Change>& changes, Transaction& transaction) = 0;
  // Undoes a journaled step; must be harmless when the change was never made, or made
  // only in part.
  [[nodiscard]] virtual Status Undo(const JournalStep& step) = 0;
  // Drops what a committed step kept for undoing it (its backup).
  [[nodiscard]] virtual Status Discard(const JournalStep& step) = 0;
  // Whether Discard has anything to do for a step whose undo record is `undo`: when no
  // step of an apply has, the committed journal is not read back to discard them.
  [[nodiscard]] virtual bool KeepsAside(const nlohmann::json& /*undo*/) const { return true; }
  // Makes every change of this transaction durable (e.g. sync the directories it
  // renamed, linked or removed in); called before the health checks.
  [[nodiscard]] virtual Status Flush() { return {}; }
  // The health gate, after every change of an apply is made and flushed, before its
  // commit: verifies that what this handler manages works (a service reached its
  // declared state, a check passes), retrying until `deadline`. A failure rolls the whole
  // transaction back; its message says what failed. The resources in `refused` were left
  // as they are (conflicts): they are not expected to be as declared.
  [[nodiscard]] virtual Status Verify(const DesiredState& /*desired*/,
                                      const RefusedIds& /*refused*/,
                                      std::chrono::steady_clock::time_point /*deadline*/) {
    return {};
  }
  // After a rollback undid `undone` (every step of the transaction, all handlers'), puts
  // what the undo cannot do step by step right: reload systemd once after unit files
  // came back, restart the services that ran on the new configuration so they run on
  // the old one again. Called for every handler, in registration order.
  [[nodiscard]] virtual Status Settle(const std::vector<JournalStep>& /*undone*/) { return {}; }
};

struct ResourceOutcome {
  std::string id;
  ActionType type = ActionType::kInSync;
  bool ok = true;
  std::string error;
};

struct ApplyResult {
  bool ok = true;            // every change made and committed, nothing refused
  bool committed = false;    // the transaction committed (resources refused or not)
  bool rolled_back = false;  // a change or the health gate failed; every done step undone
  bool unhealthy = false;    // what failed was the health gate (Verify), not a change
  std::string error;         // the first failure
  // The first failure's code, when it had one: tells a failure of the host's making
  // (IsTransient) from one of the commit's.
  std::error_code code{};
  // What did not go as planned, in plan order: each conflict that refused the apply; on a
  // failure, each change made before it (ok, then undone when rolled back) and the change
  // that failed. Empty after a successful apply: every planned change was made (a plan of
  // many changes does not get a second list of them).
  std::vector<ResourceOutcome> outcomes;
  Inventory inventory;  // as it stands after the apply: keep it for the next plan
};

struct EngineOptions {
  // How long the health gate (KindHandler::Verify) may take after an apply.
  std::chrono::milliseconds health_timeout = std::chrono::seconds(60);
  // apply.rollback = "off": a failing health gate is reported (ok = false, unhealthy) but
  // the apply is committed as it is, not rolled back.
  bool roll_back_unhealthy = true;
  // Test-only: called after each durable step ("journal", "change", "inventory", "commit")
  // with a running count; a crash test kills the process there.
  std::function<void(int count, const char* what)> after_step;
};

// True for a failure of the moment, not of what is applied: a full disk or quota, an I/O
// error, no memory, a busy resource or lock (dpkg's, after packages.lock_timeout), a
// timeout, an unreachable network (an archive apt could not fetch from). A commit that
// failed so is retried, never quarantined. dpkg failing (a maintainer script) is not.
[[nodiscard]] bool IsTransient(const std::error_code& code);

class Engine {
 public:
  // The journal and the inventory are kept in `state`, which must outlive the engine (and
  // be locked by the caller: one engine at a time per state dir).
  Engine(StateStore& state, EngineOptions options, std::vector<KindHandler*> handlers);

  // Finishes what a killed apply left: rolls back an open transaction, completes a
  // committed one. Call before anything else. Fails when the journal cannot be read.
  [[nodiscard]] Status Recover();

  // The inventory (empty when there is none yet). A corrupt file is an error, never
  // silently reset. With `keep`, most entries it turns down (by id and kind) are left
  // unread (Inventory::unread): for a plan of a few resources (`only`), which ReadEntries
  // then gives their entries.
  [[nodiscard]] Result<Inventory> LoadInventory(const StateStore::EntryFilter& keep = {}) const;
  // Parses the entries of `ids` that `inventory` left unread.
  [[nodiscard]] Status ReadEntries(Inventory& inventory, const std::set<std::string>& ids) const;

  // Observe + plan every resource, and a prune for each inventory entry the desired
  // state no longer has. Changes nothing: this is dry-run.
  // With `full_audit`, every path is read and hashed, whatever the fingerprints say.
  // With `only`, just those resources are planned and nothing is pruned (a drift repair
  // of what a watch saw); Apply keeps the inventory's other entries as they are. Without
  // it, the inventory must have been read whole.
  [[nodiscard]] Result<std::vector<PlannedAction>> Plan(
      const DesiredState& desired, const Inventory& inventory, bool full_audit = false,
      const std::set<std::string>* only = nullptr);

  // Applies `plan` as one transaction for `commit`. Conflicts are refused before anything
  // is changed. When anything changed, every handler's Verify must pass within
  // health_timeout before the commit; otherwise (and on any failure) the transaction is
  // rolled back and settled. `desired` is what the plan was made from.
  // `inventory` is the one the plan was made from. It is updated in place and returned in
  // ApplyResult::inventory: pass it with std::move, rather than have it copied, and take
  // it back from the result. On a failure it comes back as it was given. Either way, the
  // plan's `previous` pointers are valid until the call returns, not after.
  [[nodiscard]] ApplyResult Apply(const std::vector<PlannedAction>& plan, Inventory inventory,
                                  const std::string& commit, const DesiredState* desired = nullptr);

 private:
  class ApplyRun;  // one Apply's transaction

  KindHandler* HandlerFor(ResourceKind kind) const;
  Status RollBack(const std::vector<JournalStep>& steps);
  // Drops what a committed step kept for undoing it; a failure is logged, not returned.
  void Discard(const JournalStep& step) const;

  // A copy of `entry` whose original kept aside (content_sha256) is read back, for a
  // prune that restores it; kept in hydrated_ until the next Plan. A failure of the
  // moment (IsTransient) is an error: the prune is refused and tried again, the original
  // kept. One that is missing or damaged is for good: the copy says it is not kept, and
  // the path is left as it is.
  Result<const InventoryEntry*> Hydrated(const std::string& id, const InventoryEntry& entry);

  StateStore& state_;
  EngineOptions options_;
  std::vector<KindHandler*> handlers_;
  std::deque<InventoryEntry> hydrated_;  // stable addresses: plans point at them
};

// Between two commits, a difference on a resource tether applied is drift: someone changed
// the host. When `same_commit`, each such action follows its resource's drift mode (or
// `default_mode`): "revert" keeps it, "report" takes it out of the plan and returns it,
// "ignore" takes it out silently. A new commit's changes are never drift.
[[nodiscard]] std::vector<Action> ApplyDriftPolicy(std::vector<PlannedAction>& plan,
                                                   DriftMode default_mode, bool same_commit);

// The periodic full audit (apply.audit_every): besides the watches and the fingerprints,
// every managed path is read and hashed again once a period, whether tetherd runs as a
// daemon or from a timer. The time of the last one is kept in the state dir
// (StateStore::LastAudit; StateStore::RecordAudit records one that completed).
// Due when none was recorded, the record is unreadable, or it is `every` old (or from
// the future: a clock set back).
[[nodiscard]] bool FullAuditDue(const StateStore& state, std::chrono::milliseconds every,
                                std::chrono::system_clock::time_point now);

}  // namespace tether
