#include "agent/engine/engine.hpp"

#include <sys/random.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <map>
#include <optional>
#include <set>
#include <string_view>
#include <tuple>

#include "common/encoding.hpp"
#include "common/log.hpp"

namespace tether {

bool IsTransient(const std::error_code& code) {
  if (code.category() != std::generic_category() && code.category() != std::system_category()) {
    return false;
  }
  switch (static_cast<std::errc>(code.value())) {
    case std::errc::no_space_on_device:
    case std::errc::io_error:
    case std::errc::not_enough_memory:
    case std::errc::device_or_resource_busy:
    case std::errc::resource_unavailable_try_again:
    case std::errc::timed_out:
    case std::errc::interrupted:
    case std::errc::too_many_files_open:
    case std::errc::too_many_files_open_in_system:
    case std::errc::text_file_busy:
    case std::errc::network_unreachable:
    case std::errc::network_down:
    case std::errc::host_unreachable:
    case std::errc::connection_refused:
    case std::errc::connection_reset:
      return true;
    default:
      return code.value() == EDQUOT;
  }
}

namespace {

using Json = nlohmann::json;

constexpr std::size_t kMaxBatch = 1024;
constexpr std::size_t kJournalChunk = 16 << 10;

std::string RandomTag() {
  unsigned char bytes[6] = {};
  if (getrandom(bytes, sizeof(bytes), 0) != static_cast<ssize_t>(sizeof(bytes))) {
    const auto pid = static_cast<unsigned>(getpid());
    std::copy_n(reinterpret_cast<const unsigned char*>(&pid), sizeof(pid), bytes);
  }
  static constexpr char kHex[] = "0123456789abcdef";
  std::string tag;
  for (unsigned char b : bytes) {
    tag += kHex[b >> 4];
    tag += kHex[b & 0xf];
  }
  return tag;
}

std::optional<ResourceKind> KindFromName(std::string_view name) {
  // Files first: most entries are theirs.
  for (auto kind : {ResourceKind::kFile, ResourceKind::kDirectory, ResourceKind::kPackage,
                    ResourceKind::kSymlink, ResourceKind::kUnit, ResourceKind::kService,
                    ResourceKind::kCheck}) {
    if (name == ResourceKindName(kind)) return kind;
  }
  return std::nullopt;
}

// A journal record's step, or nothing when it is not a well-formed one.
std::optional<JournalStep> ParseStep(const Json& record) {
  if (!record.is_object() || !record.contains("step")) return std::nullopt;
  const Json& step = record["step"];
  if (!step.is_object() || !step.contains("undo") || !step["undo"].is_object()) {
    return std::nullopt;
  }
  const auto kind = step.find("kind");
  const auto id = step.find("id");
  if (kind == step.end() || !kind->is_string() || (id != step.end() && !id->is_string())) {
    return std::nullopt;
  }
  auto known = KindFromName(kind->get<std::string>());
  if (!known) return std::nullopt;
  return JournalStep{id != step.end() ? id->get<std::string>() : "", *known, step["undo"]};
}

// Finds the entries of a map by key, for keys that come mostly in the map's order (a
// plan's are sorted by kind, then id; the inventory's by id): the entry after the last
// found is tried first, with one comparison, and only then searched for. Forget() after
// taking an entry out of the map.
template <typename Map>
class InOrderFinder {
 public:
  explicit InOrderFinder(Map& map) : map_(map), last_(map.end()) {}

  auto Find(std::string_view key) {
    if (last_ != map_.end()) {
      if (auto next = std::next(last_); next != map_.end() && next->first == key) {
        return last_ = next;
      }
    }
    auto found = map_.find(key);
    if (found != map_.end()) last_ = found;
    return found;
  }

  void Forget() { last_ = map_.end(); }

 private:
  Map& map_;
  decltype(map_.end()) last_;
};

// The journal: JSON lines appended to the state dir's journal and synced one by one.
class Journal final : public Transaction {
 public:
  Journal(StateStore& state, std::string tag, std::function<void(int, const char*)> hook,
          int* counter)
      : state_(state), tag_(std::move(tag)), hook_(std::move(hook)), counter_(counter) {}

  Status Open(const std::string& commit) {
    if (auto created =
            state_.CreateJournal(Json{{"begin", tag_}, {"commit", commit}}.dump() + "\n");
        !created) {
      return Fail(created.error().WithContext("create journal"));
    }
    Progress("journal");
    return {};
  }

  // Makes every step of `changes` durable, with one sync. The records are written a chunk
  // at a time (the text of a whole batch costs more than the batch): a crash may leave some
  // of them, but only synced steps are ever made, and undoing one that was not is harmless.
  Status Record(const std::vector<Change>& changes) {
    std::string lines;
    lines.reserve(kJournalChunk);
    for (const auto& change : changes) {
      const JournalStep& step = change.step;
      std::string line =
          Json{{"step",
                {{"id", step.id}, {"kind", ResourceKindName(step.kind)}, {"undo", step.undo}}}}
              .dump(-1, ' ', false, Json::error_handler_t::replace);
      line += '\n';
      if (!lines.empty() && lines.size() + line.size() > kJournalChunk) {
        if (auto written = state_.AppendJournal(lines, false); !written) return Failed(written);
        lines.clear();
      }
      lines += line;
    }
    return Append(lines, "journal");
  }

  void Progress(const char* what) override {
    if (hook_) hook_(++*counter_, what);
  }

  Status Commit() { return Append("{\"committed\":true}\n", "commit"); }

  const std::string& tag() const override { return tag_; }
  // The steps recorded so far, in order: read back from the journal itself, rather than
  // kept in memory as well.
  std::vector<JournalStep> steps() const {
    std::vector<JournalStep> steps;
    ForEachStep([&](JournalStep&& step) { steps.push_back(std::move(step)); });
    return steps;
  }

  // Calls `fn` with each step recorded so far, in order, reading the journal a chunk at a
  // time: neither its text nor its steps are ever held whole (both cost several times the
  // inventory when every file of a first apply is a step).
  void ForEachStep(const std::function<void(JournalStep&&)>& fn) const {
    (void)state_.ReadJournal([&](std::string_view line) {
      if (auto step = ParseStep(Json::parse(line, nullptr, false))) fn(std::move(*step));
    });
  }

 private:
  static Status Failed(const Status& status) {
    return Fail(status.error().WithContext("write journal"));
  }

  Status Append(std::string_view text, const char* what) {
    if (auto written = state_.AppendJournal(text); !written) return Failed(written);
    Progress(what);
    return {};
  }

  StateStore& state_;
  std::string tag_;
  std::function<void(int, const char*)> hook_;
  int* counter_;
};

// An original's content up to this size (in base64) stays in the inventory; a larger
// one is kept in the state dir (StateStore::SaveOriginal) and named by its SHA-256.
constexpr std::size_t kInlineOriginal = 4096;

// Moves a large original's content out of `original` into the state dir, durably.
Status KeepOriginalAside(StateStore& state, Json& original) {
  if (!original.is_object()) return {};
  const auto content = original.find("content_base64");
  if (content == original.end() || !content->is_string() ||
      content->get_ref<const std::string&>().size() <= kInlineOriginal) {
    return {};
  }
  auto decoded = Base64Decode(content->get_ref<const std::string&>());
  if (!decoded) return {};  // left as it is: a restore says it is corrupt
  auto sha256 = state.SaveOriginal(*decoded);
  if (!sha256) return Fail(sha256.error());
  original.erase("content_base64");
  original["content_sha256"] = std::move(*sha256);
  original["content_size"] = decoded->size();
  return {};
}

// Writes `inventory` aside in the state dir, entry by entry: neither a JSON tree nor the
// whole text of it is ever held, as both cost several times the inventory itself. Large
// originals are kept aside first (and the entries changed to name them).
Status WriteInventory(StateStore& state, Inventory& inventory) {
  for (auto& [id, entry] : inventory.entries) {
    if (auto kept = KeepOriginalAside(state, entry.original); !kept) {
      return Fail(kept.error().WithContext("'" + id + "'"));
    }
  }
  auto writer = state.StartInventory(inventory.commit);
  if (!writer) return Fail(writer.error());
  // The entries left unread go in as they were, in id order among the others.
  const auto& unread = inventory.unread.lines();
  auto next_unread = unread.begin();
  for (const auto& [id, entry] : inventory.entries) {
    for (; next_unread != unread.end() && next_unread->id() <= id; ++next_unread) {
      if (next_unread->id() == id) continue;  // read since: the entry is what stands
      if (auto added = writer->Add(*next_unread); !added) return added;
    }
    if (auto added = writer->Add(id, ResourceKindName(entry.kind), InventoryPath(id, entry),
                                 entry.created, entry.original, entry.fingerprint, entry.pending,
                                 OnRemoveName(entry.on_remove), entry.secret);
        !added) {
      return added;
    }
  }
  for (; next_unread != unread.end(); ++next_unread) {
    if (auto added = writer->Add(*next_unread); !added) return added;
  }
  return writer->Finish();
}

// What an inventory entry keeps of its resource: on_remove, and whether it is secret.
std::pair<OnRemove, bool> TraitsOf(const Resource& resource) {
  const auto* file = std::get_if<FileSpec>(&resource.spec);
  return {resource.on_remove, file != nullptr && file->secret};
}

// The edits of one Apply to the inventory, made in place: what they took out or replaced
// is kept until the apply is over, so that Revert() can put the inventory back as it was.
class InventoryEdits {
 public:
  // `plan` is the apply's, whose ids name the entries (and outlives this object).
  InventoryEdits(Inventory& inventory, const std::vector<PlannedAction>& plan)
      : inventory_(inventory), plan_(plan), old_commit_(inventory.commit), added_(plan.size()) {}

  const std::string& old_commit() const { return old_commit_; }
  // True while no entry was added, removed or changed in anything but its fingerprint.
  bool only_fingerprints() const { return only_fingerprints_; }

  // Makes `entry` the entry of the resource of plan[i].
  void Put(std::size_t i, InventoryEntry entry) {
    const std::string& id = plan_[i].action.id;
    if (entry.path == NamedBy(id)) entry.path.clear();
    auto it = inventory_.entries.find(id);
    if (it != inventory_.entries.end() && it->second.kind == entry.kind &&
        InventoryPath(id, it->second) == InventoryPath(id, entry) &&
        it->second.created == entry.created && it->second.on_remove == entry.on_remove &&
        it->second.secret == entry.secret && it->second.original == entry.original) {
      SetFingerprint(it->second, std::move(entry.fingerprint));
      SetPending(it->second, false);
      return;
    }
    only_fingerprints_ = false;
    if (it != inventory_.entries.end()) taken_.push_back(inventory_.entries.extract(it));
    inventory_.entries.emplace(id, std::move(entry));
    added_[i] = true;
  }

  void Remove(std::string_view id) {
    auto it = inventory_.entries.find(id);
    if (it == inventory_.entries.end()) return;
    only_fingerprints_ = false;
    taken_.push_back(inventory_.entries.extract(it));
  }

  // The entries whose fingerprint changed (id -> the one they have now).
  StateStore::Fingerprints ChangedFingerprints() const {
    std::set<const InventoryEntry*> changed;
    for (const auto& [entry, old] : fingerprints_) changed.insert(entry);
    StateStore::Fingerprints fingerprints;
    for (const auto& [id, entry] : inventory_.entries) {
      if (changed.contains(&entry)) fingerprints.emplace(id, entry.fingerprint);
    }
    return fingerprints;
  }

  void SetFingerprint(InventoryEntry& entry, std::string fingerprint) {
    if (entry.fingerprint == fingerprint) return;
    fingerprints_.emplace_back(&entry, std::move(entry.fingerprint));
    entry.fingerprint = std::move(fingerprint);
  }

  // What the entry keeps of its resource for when the resource is gone.
  void SetTraits(InventoryEntry& entry, const Resource& resource) {
    const auto [on_remove, secret] = TraitsOf(resource);
    if (entry.on_remove == on_remove && entry.secret == secret) return;
    only_fingerprints_ = false;
    traits_.push_back({&entry, entry.on_remove, entry.secret});
    entry.on_remove = on_remove;
    entry.secret = secret;
  }

  void SetPending(InventoryEntry& entry, bool pending) {
    if (entry.pending == pending) return;
    only_fingerprints_ = false;
    flipped_.push_back(&entry);
    entry.pending = pending;
  }

  // Undoes every edit.
  void Revert() {
    for (auto it = fingerprints_.rbegin(); it != fingerprints_.rend(); ++it) {
      it->first->fingerprint = std::move(it->second);
    }
    for (auto* entry : flipped_) entry->pending = !entry->pending;
    for (auto it = traits_.rbegin(); it != traits_.rend(); ++it) {
      it->entry->on_remove = it->on_remove;
      it->entry->secret = it->secret;
    }
    for (std::size_t i = 0; i < added_.size(); ++i) {
      if (!added_[i]) continue;
      if (auto added = inventory_.entries.find(plan_[i].action.id);
          added != inventory_.entries.end()) {
        inventory_.entries.erase(added);
      }
    }
    // Oldest first: when one id was taken out twice, its first entry is the one it had.
    for (auto& node : taken_) inventory_.entries.insert(std::move(node));
    inventory_.commit = old_commit_;
    fingerprints_.clear();
    flipped_.clear();
    traits_.clear();
    added_.assign(added_.size(), false);
    taken_.clear();
    only_fingerprints_ = true;
  }

 private:
  Inventory& inventory_;
  const std::vector<PlannedAction>& plan_;
  std::string old_commit_;
  bool only_fingerprints_ = true;
  // Each is kept in a node of its own, which stays where it is: PlannedAction::previous
  // may point at it.
  std::vector<decltype(Inventory::entries)::node_type> taken_;
  std::vector<bool> added_;  // by index in the plan: a bit, rather than an id, per entry added
  std::vector<std::pair<InventoryEntry*, std::string>> fingerprints_;  // entry, old one
  std::vector<InventoryEntry*> flipped_;                               // pending flipped
  struct OldTraits {
    InventoryEntry* entry;
    OnRemove on_remove;
    bool secret;
  };
  std::vector<OldTraits> traits_;
};

}  // namespace

std::string_view NamedBy(std::string_view id) { return id.substr(id.find(':') + 1); }

bool IsRefused(const RefusedIds& refused, std::string_view id) {
  return std::binary_search(refused.begin(), refused.end(), id);
}

namespace {

// A path under a refused one is refused too: its apply would fail (or go where the
// refused one is not as declared), and that failure would roll back every other change.
void RefuseUnderRefused(std::vector<PlannedAction>& plan) {
  std::vector<std::string_view> refused;  // paths
  for (const auto& planned : plan) {
    const std::string_view path = NamedBy(planned.action.id);
    if (planned.action.type == ActionType::kConflict && path.starts_with('/')) {
      refused.push_back(path);
    }
  }
  if (refused.empty()) return;
  std::sort(refused.begin(), refused.end());
  for (auto& planned : plan) {
    if (planned.action.type == ActionType::kConflict) continue;
    const std::string_view path = NamedBy(planned.action.id);
    if (!path.starts_with('/')) continue;
    // Each parent of `path`, nearest last: is it refused?
    for (auto slash = path.find('/', 1); slash != std::string_view::npos;
         slash = path.find('/', slash + 1)) {
      const std::string_view parent = path.substr(0, slash);
      if (!std::binary_search(refused.begin(), refused.end(), parent)) continue;
      Action action;
      action.id = planned.action.id;
      action.type = ActionType::kConflict;
      action.reason = "left as it is: '" + std::string(parent) + "' above it is refused";
      planned.action = std::move(action);
      break;
    }
  }
}

}  // namespace

std::string_view InventoryPath(std::string_view id, const InventoryEntry& entry) {
  return entry.path.empty() ? NamedBy(id) : std::string_view(entry.path.str());
}

std::string_view PreviousPath(const PlannedAction& planned) {
  // A replaced entry (a file that becomes a symlink) is under the id it replaces.
  return InventoryPath(planned.replaces != nullptr ? *planned.replaces : planned.action.id,
                       *planned.previous);
}

std::vector<Action> ApplyDriftPolicy(std::vector<PlannedAction>& plan, DriftMode default_mode,
                                     bool same_commit) {
  std::vector<Action> reported;
  if (!same_commit) return reported;
  for (auto& planned : plan) {
    const bool drifted = planned.resource != nullptr && planned.previous != nullptr &&
                         !planned.previous->pending && planned.action.type != ActionType::kInSync &&
                         planned.action.type != ActionType::kConflict;
    const DriftMode mode =
        planned.resource != nullptr ? planned.resource->drift.value_or(default_mode) : default_mode;
    if (drifted && mode == DriftMode::kReport) reported.push_back(planned.action);
    if (drifted && mode != DriftMode::kRevert) {
      planned.action.type = ActionType::kInSync;  // left as it is; the inventory entry stays
      planned.action.changes.clear();
      planned.action.diff.clear();
    }
  }
  return reported;
}

bool FullAuditDue(const StateStore& state, std::chrono::milliseconds every,
                  std::chrono::system_clock::time_point now) {
  auto last = state.LastAudit();
  if (!last || !*last) return true;
  return **last > now || now - **last >= every;
}

Engine::Engine(StateStore& state, EngineOptions options, std::vector<KindHandler*> handlers)
    : state_(state), options_(std::move(options)), handlers_(std::move(handlers)) {}

KindHandler* Engine::HandlerFor(ResourceKind kind) const {
  for (auto* handler : handlers_) {
    if (handler->Handles(kind)) return handler;
  }
  return nullptr;
}

namespace {

// An entry as stored, as the engine keeps it; none when it is not one.
std::optional<InventoryEntry> FromStored(std::string_view id, StoredEntry&& stored) {
  auto kind = KindFromName(stored.kind);
  if (!kind) return std::nullopt;
  auto on_remove = stored.on_remove.empty() ? std::optional(OnRemove::kDefault)
                                            : ParseOnRemove(stored.on_remove);
  if (!on_remove) return std::nullopt;
  if (stored.path == NamedBy(id)) stored.path.clear();
  return InventoryEntry{*kind,
                        stored.created,
                        stored.pending,
                        *on_remove,
                        stored.secret,
                        std::move(stored.path),
                        std::move(stored.original),
                        std::move(stored.fingerprint)};
}

}  // namespace

Result<Inventory> Engine::LoadInventory(const StateStore::EntryFilter& keep) const {
  Inventory inventory;
  auto commit = state_.LoadInventory(
      [&](std::string id, StoredEntry&& stored) {
        auto entry = FromStored(id, std::move(stored));
        if (!entry) return false;
        inventory.entries.emplace_hint(inventory.entries.end(), std::move(id), std::move(*entry));
        return true;
      },
      // Most entries: made in place in their node, from views of the text.
      [&](const PlainStoredEntry& plain) {
        const auto kind = KindFromName(plain.kind);
        if (!kind) return false;
        auto made = inventory.entries.emplace_hint(
            inventory.entries.end(), std::piecewise_construct, std::forward_as_tuple(plain.id),
            std::forward_as_tuple());
        InventoryEntry& entry = made->second;
        entry.kind = *kind;
        entry.created = plain.created;
        if (plain.path != NamedBy(plain.id)) entry.path = std::string(plain.path);
        entry.fingerprint = plain.fingerprint;
        return true;
      },
      keep, inventory.unread);
  if (!commit) return Fail(commit.error());
  inventory.commit = std::move(*commit);
  return inventory;
}

Status Engine::ReadEntries(Inventory& inventory, const std::set<std::string>& ids) const {
  if (inventory.unread.empty()) return {};
  // A resource of another kind may take a file's place (Plan's replaces): that file's
  // entry is read too. Only file entries are ever left unread.
  std::set<std::string> with_files = ids;
  for (const auto& id : ids) {
    if (!id.starts_with("file:")) with_files.insert("file:" + std::string(NamedBy(id)));
  }
  const std::vector<std::string_view> wanted(with_files.begin(), with_files.end());
  std::string refused;
  const bool read = inventory.unread.Take(wanted, [&](std::string id, StoredEntry&& stored) {
    auto entry = FromStored(id, std::move(stored));
    if (!entry) {
      refused = id;
      return false;
    }
    inventory.entries.emplace(std::move(id), std::move(*entry));
    return true;
  });
  if (!read) {
    return Fail(std::errc::illegal_byte_sequence,
                "the inventory's entry '" + refused + "' is not one: the inventory is corrupt");
  }
  return {};
}

Result<std::vector<PlannedAction>> Engine::Plan(const DesiredState& desired,
                                                const Inventory& inventory, bool full_audit,
                                                const std::set<std::string>* only) {
  if (only == nullptr && !inventory.unread.empty()) {
    return Fail(std::errc::invalid_argument,
                "a plan of every resource needs the whole inventory, read in part");
  }
  for (auto* handler : handlers_) handler->Prepare(desired);
  hydrated_.clear();
  // The ids the desired state has, sorted (views of its strings rather than copies): only
  // when some entry is not one of them (see below).
  std::vector<std::string_view> wanted;
  auto is_wanted = [&](std::string_view id) {
    if (wanted.empty() && !desired.resources.empty()) {
      wanted.reserve(desired.resources.size());
      for (const auto& resource : desired.resources) wanted.push_back(resource.id);
      std::sort(wanted.begin(), wanted.end());
    }
    return std::binary_search(wanted.begin(), wanted.end(), id);
  };
  // Entries no longer wanted, by what they name ("KIND:WHAT" -> WHAT): a wanted resource of
  // another kind, with the same handler, naming the same thing takes their place. Made
  // when a resource without an entry first asks.
  std::optional<std::map<std::string_view, const std::string*>> gone_by_name;
  auto gone_named = [&](std::string_view name) -> const std::string* {
    if (!gone_by_name) {
      gone_by_name.emplace();
      for (const auto& [id, entry] : inventory.entries) {
        if (!is_wanted(id)) (*gone_by_name)[InventoryPath(id, entry)] = &id;
      }
    }
    auto found = gone_by_name->find(name);
    return found == gone_by_name->end() ? nullptr : found->second;
  };
  // The resources are sorted by kind, then id, as the entries are by id: the entry of a
  // resource is most often the one after its predecessor's, found with one comparison
  // rather than a search. While they are so sorted, their ids are distinct, and when as
  // many entries were found as there are, no entry is gone (a no-op: nothing is sorted
  // or searched for prunes).
  InOrderFinder entries(inventory.entries);
  bool distinct = true;
  std::size_t found_count = 0;
  const Resource* before = nullptr;
  std::vector<PlannedAction> plan;
  plan.reserve(only != nullptr ? std::min(only->size(), desired.resources.size())
                               : desired.resources.size());
  std::set<std::string_view> taken_over;
  PlanContext context;
  if (only == nullptr) context.changed.reserve(desired.resources.size());
  for (const auto& resource : desired.resources) {
    if (before != nullptr && (before->kind > resource.kind ||
                              (before->kind == resource.kind && !(before->id < resource.id)))) {
      distinct = false;
    }
    before = &resource;
    if (only != nullptr && only->count(resource.id) == 0) continue;
    KindHandler* handler = HandlerFor(resource.kind);
    if (handler == nullptr) continue;  // its kind is not built yet
    auto previous = entries.Find(resource.id);
    const InventoryEntry* entry = previous == inventory.entries.end() ? nullptr : &previous->second;
    if (entry != nullptr) ++found_count;
    const std::string* replaces = nullptr;
    if (entry == nullptr) {
      if (const std::string* other = gone_named(NamedBy(resource.id))) {
        const InventoryEntry& gone = inventory.entries.at(*other);
        if (HandlerFor(gone.kind) == handler && handler->Replaces(gone.kind, resource.kind)) {
          replaces = other;
          entry = &gone;
          taken_over.insert(*replaces);
        }
      }
    }
    auto action = handler->Plan(resource, entry, full_audit, context);
    if (!action) {
      // One resource that cannot be planned (a file grown past the read limit by its
      // owner, a path that cannot be opened) is that resource's failure, not the cycle's:
      // it is refused and left as it is, and every other one is planned.
      Action refused;
      refused.id = resource.id;
      refused.type = ActionType::kConflict;
      refused.reason = "cannot plan it: " + action.error().message();
      plan.push_back({std::move(refused), &resource, entry, nullptr});
      continue;
    }
    if (action->type != ActionType::kInSync) context.changed.push_back(resource.id);
    plan.push_back({std::move(*action), &resource, entry, replaces});
  }
  RefuseUnderRefused(plan);
  // Prunes, deepest paths first (a file before its directory).
  if (only != nullptr) return plan;  // no prunes in a partial plan
  if (distinct && found_count == inventory.entries.size()) return plan;  // none gone
  std::vector<std::pair<const std::string*, const InventoryEntry*>> gone;
  for (const auto& [id, entry] : inventory.entries) {
    if (!is_wanted(id) && taken_over.count(id) == 0) gone.emplace_back(&id, &entry);
  }
  std::sort(gone.begin(), gone.end(), [](const auto& a, const auto& b) {
    return InventoryPath(*a.first, *a.second) > InventoryPath(*b.first, *b.second);
  });
  for (auto [id, entry] : gone) {
    KindHandler* handler = HandlerFor(entry->kind);
    if (handler == nullptr) continue;
    auto hydrated = Hydrated(*id, *entry);
    Result<Action> action =
        hydrated ? handler->PlanPrune(*id, **hydrated) : Result<Action>(Fail(hydrated.error()));
    if (hydrated) entry = *hydrated;
    if (!action) {
      Action refused;
      refused.id = *id;
      refused.type = ActionType::kConflict;
      refused.reason = "cannot plan removing it: " + action.error().message();
      action = std::move(refused);
    }
    plan.push_back({std::move(*action), nullptr, entry, nullptr});
  }
  return plan;
}

Result<const InventoryEntry*> Engine::Hydrated(const std::string& id, const InventoryEntry& entry) {
  if (!entry.original.is_object() || !entry.original.contains("content_sha256") ||
      entry.on_remove != OnRemove::kRestore) {
    return &entry;
  }
  InventoryEntry& copy = hydrated_.emplace_back(entry);
  const Json& sha256 = copy.original["content_sha256"];
  auto content =
      sha256.is_string()
          ? state_.LoadOriginal(sha256.get<std::string>())
          : Result<std::string>(Fail(std::errc::invalid_argument, "a malformed content_sha256"));
  if (content) {
    copy.original["content_base64"] = Base64Encode(*content);
  } else if (IsTransient(content.error().code())) {
    hydrated_.pop_back();
    return Fail(content.error());
  } else {
    // Not to be restored to something else: left as it is, and said so.
    GetLogger("engine")->warn("'{}': its original cannot be restored, it is left as it is: {}", id,
                              content.error().message());
    copy.original["content_not_kept"] = copy.original.value("content_size", 0);
  }
  return &copy;
}

void Engine::Discard(const JournalStep& step) const {
  // The apply is committed whatever happens here: a backup that cannot be removed is left
  // behind (its name says what it is), and said so.
  KindHandler* handler = HandlerFor(step.kind);
  if (handler == nullptr) return;
  if (auto discarded = handler->Discard(step); !discarded) {
    GetLogger("engine")->warn("'{}': what was kept to undo it stays: {}", step.id,
                              discarded.error().message());
  }
}

Status Engine::RollBack(const std::vector<JournalStep>& steps) {
  Status first_failure;
  for (auto it = steps.rbegin(); it != steps.rend(); ++it) {
    KindHandler* handler = HandlerFor(it->kind);
    if (handler == nullptr) {
      first_failure = Fail(std::errc::not_supported, "no handler to undo '" + it->id + "'");
      continue;
    }
    if (auto undone = handler->Undo(*it); !undone && first_failure) {
      first_failure = Fail(undone.error().WithContext("undo '" + it->id + "'"));
    }
  }
  for (auto* handler : handlers_) {
    if (auto settled = handler->Settle(steps); !settled && first_failure) {
      first_failure = Fail(settled.error().WithContext("after the rollback"));
    }
  }
  return first_failure;
}

// One Apply: the transaction from its journal's opening to its commit or rollback.
class Engine::ApplyRun {
 public:
  ApplyRun(Engine& engine, const std::vector<PlannedAction>& plan, Inventory inventory,
           const std::string& commit)
      : engine_(engine),
        plan_(plan),
        inventory_(std::move(inventory)),
        commit_(commit),
        journal_(engine.state_, RandomTag(), engine.options_.after_step, &counter_),
        edits_(inventory_, plan) {}

  ApplyResult Run(const DesiredState* desired) {
    RecordConflicts();
    any_change_ = std::any_of(plan_.begin(), plan_.end(), [](const PlannedAction& p) {
      return p.action.type != ActionType::kInSync && p.action.type != ActionType::kConflict;
    });
    if (any_change_) {
      if (auto opened = journal_.Open(commit_); !opened) {
        result_.ok = false;
        result_.error = opened.error().message();
        // Nothing was changed: a journal this call created must not stay (one that was
        // already there is another story, and stays for Recover()).
        if (!opened.error().Is(std::errc::file_exists)) (void)engine_.state_.RemoveJournal();
        return Done();
      }
    }
    inventory_.commit = commit_;
    EditInSync();
    // Each run of consecutive changes of one handler (up to kMaxBatch, so that memory
    // stays bounded) is one batch: begun, journaled in one record, then applied by the
    // handler at once.
    for (std::size_t first = 0; first < changed_.size();) {
      KindHandler* handler = HandlerOf(changed_[first]);
      std::size_t last = first;
      while (last < changed_.size() && last - first < kMaxBatch &&
             HandlerOf(changed_[last]) == handler) {
        ++last;
      }
      if (auto failed = ApplyBatch(*handler, first, last)) return std::move(*failed);
      first = last;
    }
    return Commit(desired);
  }

 private:
  ApplyResult Done() {
    result_.inventory = std::move(inventory_);
    return std::move(result_);
  }

  // A conflict refuses its own resource, which is left as it is (its inventory entry
  // too); the others are applied. The result says what was refused (ok false, and the
  // first conflict as the error).
  void RecordConflicts() {
    for (const auto& planned : plan_) {
      if (planned.action.type == ActionType::kConflict) {
        if (result_.ok) result_.error = "refused: " + planned.action.reason.str();
        result_.ok = false;
        result_.outcomes.push_back(
            {planned.action.id, ActionType::kConflict, false, planned.action.reason});
        refused_.push_back(planned.action.id);
      }
    }
    std::sort(refused_.begin(), refused_.end());
  }

  // The inventory is updated in place (entries not in the plan stay as they are); what
  // each update took away is kept, so that a rollback gives the caller the inventory back
  // as it was. This does the resources in sync, and lists the changes (changed_).
  void EditInSync() {
    changed_.reserve(static_cast<std::size_t>(std::count_if(
        plan_.begin(), plan_.end(),
        [](const PlannedAction& p) { return p.action.type != ActionType::kInSync; })));
    InOrderFinder entries(inventory_.entries);
    for (std::size_t i = 0; i < plan_.size(); ++i) {
      const PlannedAction& planned = plan_[i];
      const std::string_view id = planned.action.id;
      if (planned.action.type == ActionType::kConflict) {
        // Left as it is. An entry of an older commit stays that commit's: what differs
        // is this commit's change, waiting (not drift, whatever the resource's drift mode).
        // So is the entry a refused replacement (a file that becomes a symlink) was to take.
        auto current = inventory_.entries.find(
            planned.replaces != nullptr ? std::string_view(*planned.replaces) : id);
        if (current != inventory_.entries.end() && edits_.old_commit() != commit_) {
          edits_.SetPending(current->second, true);
        }
        continue;
      }
      if (planned.action.type != ActionType::kInSync) {
        changed_.push_back(static_cast<std::uint32_t>(i));
        continue;
      }
      if (planned.resource == nullptr) {
        edits_.Remove(id);  // a prune with nothing to do: no longer tether's
        entries.Forget();
        continue;
      }
      auto current = entries.Find(id);
      if (planned.previous != nullptr && current != inventory_.entries.end() &&
          planned.previous == &current->second) {
        // Its own entry: only what it looks like now may have moved (and a change that
        // waited is made: someone made it by hand).
        if (!planned.action.fingerprint.empty()) {
          edits_.SetFingerprint(current->second, planned.action.fingerprint);
        }
        edits_.SetPending(current->second, false);
        edits_.SetTraits(current->second, *planned.resource);
        continue;
      }
      InventoryEntry entry = planned.previous != nullptr ? *planned.previous : InventoryEntry{};
      entry.kind = planned.resource->kind;  // a replaced entry had another
      std::tie(entry.on_remove, entry.secret) = TraitsOf(*planned.resource);
      entry.pending = false;  // as declared now
      if (!planned.action.fingerprint.empty()) entry.fingerprint = planned.action.fingerprint;
      if (planned.replaces != nullptr) edits_.Remove(*planned.replaces);
      edits_.Put(i, std::move(entry));
      entries.Forget();
    }
  }

  KindHandler* HandlerOf(std::size_t i) const {
    const PlannedAction& planned = plan_[i];
    return engine_.HandlerFor(planned.resource != nullptr ? planned.resource->kind
                                                          : planned.previous->kind);
  }

  // Begins, journals and applies the changes changed_[first, last) of `handler`. Returns
  // the result of the rollback when one failed, nothing when all were made.
  std::optional<ApplyResult> ApplyBatch(KindHandler& handler, std::size_t first, std::size_t last) {
    std::vector<Change> batch;
    batch.reserve(last - first);
    for (std::size_t k = first; k < last; ++k) {
      const PlannedAction& planned = plan_[changed_[k]];
      auto undo = handler.Begin(planned, journal_.tag());
      if (!undo) return RollBackAt(planned, undo.error().message(), undo.error().code());
      const ResourceKind kind =
          planned.resource != nullptr ? planned.resource->kind : planned.previous->kind;
      batch.push_back({&planned, {planned.action.id, kind, std::move(*undo)}, std::nullopt, false});
    }
    if (auto recorded = journal_.Record(batch); !recorded) {
      return RollBackAt(*batch.front().planned, recorded.error().message(),
                        recorded.error().code());
    }
    for (const auto& change : batch) kept_aside_ += handler.KeepsAside(change.step.undo) ? 1 : 0;
    if (auto applied = handler.Apply(batch, journal_); !applied) {
      auto culprit = std::find_if(batch.begin(), batch.end(),
                                  [](const Change& change) { return change.failed; });
      if (culprit == batch.end()) {
        culprit = std::find_if(batch.begin(), batch.end(),
                               [](const Change& change) { return !change.done; });
      }
      return RollBackAt(*(culprit == batch.end() ? batch.back() : *culprit).planned,
                        applied.error().message(), applied.error().code());
    }
    for (std::size_t k = 0; k < batch.size(); ++k) {
      Change& change = batch[k];
      const PlannedAction& planned = *change.planned;
      if (!change.done) return RollBackAt(planned, "not applied by its handler");
      ++made_;
      if (planned.replaces != nullptr) edits_.Remove(*planned.replaces);
      if (change.entry && planned.resource != nullptr) {
        std::tie(change.entry->on_remove, change.entry->secret) = TraitsOf(*planned.resource);
      }
      if (change.entry) {
        edits_.Put(changed_[first + k], std::move(*change.entry));
      } else {
        edits_.Remove(planned.action.id);
      }
      // Its undo record is in the journal: the memory goes to the inventory's new entries.
      change.step = {};
    }
    return std::nullopt;
  }

  // On a failure, the outcomes: the changes made until then (now undone), in plan order.
  void MadeOutcomes() {
    result_.outcomes.reserve(made_ + 1);
    for (std::size_t k = 0; k < made_; ++k) {
      const Action& action = plan_[changed_[k]].action;
      result_.outcomes.push_back({action.id, action.type, true, ""});
    }
  }

  // `planned` failed with `error`: every step done is undone.
  ApplyResult RollBackAt(const PlannedAction& planned, const std::string& error,
                         std::error_code code = {}) {
    edits_.Revert();
    result_.ok = false;
    result_.code = code;
    result_.error = "apply '" + planned.action.id + "': " + error;
    MadeOutcomes();
    result_.outcomes.push_back({planned.action.id, planned.action.type, false, error});
    auto undone = engine_.RollBack(journal_.steps());
    result_.rolled_back = static_cast<bool>(undone);
    if (!undone) result_.error += "; rollback: " + undone.error().message();
    if (undone) (void)engine_.state_.RemoveJournal();
    return Done();
  }

  // The commit failed (or the health gate): every step done is undone.
  ApplyResult RollBackCommit(const Error& error) {
    edits_.Revert();
    result_.ok = false;
    result_.code = error.code();
    result_.error = error.message();
    MadeOutcomes();
    auto undone = engine_.RollBack(journal_.steps());
    result_.rolled_back = static_cast<bool>(undone);
    if (undone) (void)engine_.state_.RemoveJournal();
    (void)engine_.state_.DiscardInventory();
    return Done();
  }

  // Every change made: flush, the health gate, then the commit (the new inventory aside,
  // the commit record, then the inventory into place).
  ApplyResult Commit(const DesiredState* desired) {
    // Between commits, when nothing changed and nothing but fingerprints moved (a no-op
    // cycle), the inventory on disk stays: a stale fingerprint costs one read later, not a
    // rewrite of every entry now. A repair is recorded: the daemon tells its writes from a
    // person's by the fingerprints (and the next cycle need not read what it wrote).
    const bool same_but_fingerprints = edits_.old_commit() == commit_ && edits_.only_fingerprints();
    if (!any_change_ && same_but_fingerprints) {
      result_.committed = true;
      return Done();
    }
    for (auto* handler : engine_.handlers_) {
      if (auto flushed = handler->Flush(); !flushed) return RollBackCommit(flushed.error());
    }
    // The health gate: what changed must work, within health_timeout, before the commit.
    if (any_change_ && desired != nullptr) {
      const auto deadline = std::chrono::steady_clock::now() + engine_.options_.health_timeout;
      for (auto* handler : engine_.handlers_) {
        if (auto healthy = handler->Verify(*desired, refused_, deadline); !healthy) {
          result_.unhealthy = true;
          const Error error = healthy.error().WithContext("health check");
          if (engine_.options_.roll_back_unhealthy) return RollBackCommit(error);
          result_.error = error.message();
          break;  // committed as it is, and reported
        }
      }
      if (result_.unhealthy) result_.ok = false;
    }
    // A repair of a few entries of an inventory read in part records their fingerprints
    // beside it, rather than write every entry again (the next whole one takes them in).
    const bool by_delta = same_but_fingerprints && !inventory_.unread.empty();
    Status written = by_delta
                         ? engine_.state_.StartInventoryDelta(commit_, edits_.ChangedFingerprints())
                         : Status();
    if (!by_delta || (!written && written.error().Is(std::errc::file_too_large))) {
      written = WriteInventory(engine_.state_, inventory_);
    }
    if (!written) return RollBackCommit(written.error());
    if (engine_.options_.after_step) engine_.options_.after_step(++counter_, "inventory");
    if (any_change_) {
      if (auto committed = journal_.Commit(); !committed) return RollBackCommit(committed.error());
    }
    result_.committed = true;
    if (auto installed = engine_.state_.InstallInventory(); !installed) {
      result_.ok = false;  // committed: Recover() puts it into place
      result_.error = installed.error().message();
      return Done();
    }
    // What steps kept to undo them goes (read back from the journal only if any did).
    if (kept_aside_ > 0) journal_.ForEachStep([&](JournalStep&& step) { engine_.Discard(step); });
    if (any_change_) (void)engine_.state_.RemoveJournal();
    if (!same_but_fingerprints) DropUnusedOriginals();
    return Done();
  }

  // Originals kept aside that no entry names any more (pruned, or an apply rolled back
  // after keeping one) go, once the inventory that stopped naming them is in place.
  void DropUnusedOriginals() {
    std::vector<std::string> named;
    for (const auto& [id, entry] : inventory_.entries) {
      if (!entry.original.is_object()) continue;
      const auto sha256 = entry.original.find("content_sha256");
      if (sha256 != entry.original.end() && sha256->is_string()) {
        named.push_back(sha256->get<std::string>());
      }
    }
    std::sort(named.begin(), named.end());
    if (auto pruned = engine_.state_.PruneOriginals(named); !pruned) {
      GetLogger("engine")->warn("originals no longer needed stay: {}", pruned.error().message());
    }
  }

  Engine& engine_;
  const std::vector<PlannedAction>& plan_;
  Inventory inventory_;
  const std::string& commit_;
  ApplyResult result_;
  int counter_ = 0;
  std::size_t kept_aside_ = 0;  // journaled steps that kept something to undo them
  Journal journal_;
  InventoryEdits edits_;  // on inventory_
  bool any_change_ = false;
  std::vector<std::uint32_t> changed_;  // indexes into plan_ (half the room of a size_t)
  RefusedIds refused_;                  // the conflicts' ids, sorted
  std::size_t made_ = 0;                // of changed_
};

ApplyResult Engine::Apply(const std::vector<PlannedAction>& plan, Inventory inventory,
                          const std::string& commit, const DesiredState* desired) {
  return ApplyRun(*this, plan, std::move(inventory), commit).Run(desired);
}

Status Engine::Recover() {
  std::vector<JournalStep> steps;
  bool committed = false;
  std::optional<Error> corrupt;
  auto corrupt_because = [&](const std::string& why) {
    if (!corrupt) {
      corrupt = Error(std::errc::illegal_byte_sequence,
                      "journal '" + state_.JournalPath() + "' " + why + "; it was left as it is");
    }
  };
  auto read = state_.ReadJournal([&](std::string_view line) {
    if (corrupt) return;
    const Json record = Json::parse(line, nullptr, false);
    if (record.is_discarded() || !record.is_object()) return corrupt_because("is corrupt");
    if (record.contains("committed")) committed = true;
    if (!record.contains("step")) return;
    const Json& step = record["step"];
    if (!step.is_object() || !step.contains("undo") || !step["undo"].is_object()) {
      return corrupt_because("has a malformed step");
    }
    const auto kind = step.find("kind");
    const auto id = step.find("id");
    auto known = kind != step.end() && kind->is_string() ? KindFromName(kind->get<std::string>())
                                                         : std::nullopt;
    if (!known) return corrupt_because("has a step of unknown kind");
    if (id != step.end() && !id->is_string()) return corrupt_because("has a malformed step");
    steps.push_back({id != step.end() ? id->get<std::string>() : "", *known, step["undo"]});
  });
  if (!read) return Fail(read.error());
  if (corrupt) return Fail(*corrupt);
  if (!*read) {
    // No transaction was open; an inventory written aside but never committed is void.
    return state_.DiscardInventory();
  }
  if (committed) {
    auto installed = state_.InstallInventory();
    if (!installed && !installed.error().Is(std::errc::no_such_file_or_directory)) return installed;
    for (const auto& step : steps) Discard(step);
  } else {
    if (auto undone = RollBack(steps); !undone) {
      return Fail(undone.error().WithContext("roll back the interrupted apply"));
    }
    if (auto discarded = state_.DiscardInventory(); !discarded) return discarded;
  }
  return state_.RemoveJournal();
}

}  // namespace tether
