// The KindHandler of files, directories and symlinks.
#include <algorithm>
#include <array>
#include <charconv>
#include <optional>
#include <set>
#include <string_view>

#include "agent/kinds/files/path_handler.hpp"
#include "agent/kinds/paths/path_plan.hpp"
#include "common/encoding.hpp"
#include "common/filesystem.hpp"
#include "common/sha256.hpp"
#include "common/stat_mark.hpp"

namespace tether {

namespace {

using Json = nlohmann::json;

constexpr std::size_t kMaxContent = 64 << 20;
// A prune's diff shows a file up to this size (what it removes or gives back).
constexpr std::size_t kMaxShownContent = 1 << 20;

std::string Parent(const std::string& path) {
  const auto slash = path.rfind('/');
  return slash == 0 ? "/" : path.substr(0, slash);
}

std::string Name(const std::string& path) { return path.substr(path.rfind('/') + 1); }

class PathHandler final : public KindHandler {
 public:
  explicit PathHandler(Filesystem& fs) : fs_(fs) {}

  bool Handles(ResourceKind kind) const override {
    return kind == ResourceKind::kFile || kind == ResourceKind::kDirectory ||
           kind == ResourceKind::kSymlink;
  }

  bool Replaces(ResourceKind from, ResourceKind to) const override {
    return Handles(from) && Handles(to);  // one path, another kind of thing at it
  }

  void Prepare(const DesiredState& desired) override {
    declared_directories_.clear();
    for (const auto& resource : desired.resources) {
      if (const auto* dir = std::get_if<DirectorySpec>(&resource.spec)) {
        declared_directories_.insert(dir->path);
      }
    }
  }

  Result<Action> Plan(const Resource& resource, const InventoryEntry* previous, bool full_audit,
                      const PlanContext& /*context*/) override {
    auto action = PlanPath(resource, previous, full_audit);
    if (action && action->type == ActionType::kCreate) {
      // Refused now rather than rolled back later: a parent that is missing and that no
      // directory resource of this plan creates.
      const std::string& path = PathOf(resource);
      for (std::string parent = Parent(path); parent != "/"; parent = Parent(parent)) {
        if (declared_directories_.count(parent) > 0) break;
        auto stat = fs_.Stat(parent);
        if (stat) break;
        if (!stat.error().Is(std::errc::no_such_file_or_directory)) return Fail(stat.error());
        if (Parent(parent) == "/" || fs_.Stat(Parent(parent)) ||
            declared_directories_.count(Parent(parent)) > 0) {
          Action conflict;
          conflict.id = resource.id;
          conflict.type = ActionType::kConflict;
          conflict.reason = "its parent directory '" + parent +
                            "' does not exist and the profile does not declare it";
          return conflict;
        }
      }
    }
    return action;
  }

 private:
  Result<Action> PlanPath(const Resource& resource, const InventoryEntry* previous,
                          bool full_audit) {
    if (const auto* file = std::get_if<FileSpec>(&resource.spec)) {
      auto owner = Owner(file->owner, file->group);
      if (!owner) return Fail(owner.error());
      const DesiredMark desired = MarkOfDesired(*file, *owner);
      if (!full_audit && previous != nullptr && !previous->fingerprint.empty()) {
        // Unchanged metadata (ctime moves on any write, chmod, chown or rename) and an
        // unchanged desired state: in sync, without reading the file.
        auto stat = fs_.Stat(file->path);
        if (stat && Fingerprint(*stat, desired) == previous->fingerprint) {
          Action action;
          action.id = resource.id;
          action.fingerprint = previous->fingerprint;
          return action;
        }
      }
      auto observed = ObservePath(fs_, file->path, true, kMaxContent);
      if (!observed) return Fail(observed.error());
      std::string content;
      if (file->lazy && NeedsContent(*file, *observed)) {
        auto loaded = ContentOf(*file);
        if (!loaded) return Fail(loaded.error());
        content = std::move(*loaded);
      }
      Action action = PlanFile(resource.id, *file, *owner, *observed, content);
      if (action.type == ActionType::kInSync)
        action.fingerprint = Fingerprint(observed->stat, desired);
      return action;
    }
    if (const auto* dir = std::get_if<DirectorySpec>(&resource.spec)) {
      auto owner = Owner(dir->owner, dir->group);
      if (!owner) return Fail(owner.error());
      auto observed = ObservePath(fs_, dir->path, false, 0);
      if (!observed) return Fail(observed.error());
      return PlanDirectory(resource.id, *dir, *owner, *observed);
    }
    const auto& link = std::get<SymlinkSpec>(resource.spec);
    auto observed = ObservePath(fs_, link.path, false, 0);
    if (!observed) return Fail(observed.error());
    return PlanSymlink(resource.id, link, *observed);
  }

 public:
  Result<Action> PlanPrune(const std::string& id, const InventoryEntry& entry) override {
    Action action;
    action.id = id;
    const PruneWay way = HowToPrune(entry.created, entry.on_remove, entry.original);
    if (way == PruneWay::kLeave) return action;  // left as it is, and forgotten
    const std::string path(InventoryPath(id, entry));
    auto observed = ObservePath(fs_, path, true, kMaxShownContent);
    if (!observed) return Fail(observed.error());
    action.diff = PruneDiff(way, *observed, entry.original, entry.secret, path);
    if (way == PruneWay::kRemove) {
      if (!observed->exists) return action;  // already gone
      action.type = ActionType::kDelete;
      std::string why = entry.on_remove == OnRemove::kDelete
                            ? "no longer in the profile, on_remove = \"delete\""
                            : "created by tether, no longer in the profile";
      if (observed->stat.type == FileType::kDirectory) {
        why += "; kept if anything tether does not manage is in it";
      }
      action.changes.push_back(std::move(why));
      return action;
    }
    action.type = ActionType::kUpdate;
    action.changes.push_back("restore the original from before tether took it over");
    return action;
  }

  Result<Json> Begin(const PlannedAction& planned, const std::string& tag) override {
    const std::string path = planned.resource != nullptr ? PathOf(*planned.resource)
                                                         : std::string(PreviousPath(planned));
    auto observed = ObservePath(fs_, path, true, kMaxContent);
    if (!observed) return Fail(observed.error());
    // How to undo: what was there, and a hard link to it when it gets replaced or removed.
    // The backup's name is journaled before the link is made, so that recovery knows of
    // every name this step may leave behind.
    Json undo = {{"path", path}, {"before", ObservedTypeName(*observed)}};
    if (observed->exists) {
      undo["mode"] = observed->stat.mode;
      undo["uid"] = observed->stat.uid;
      undo["gid"] = observed->stat.gid;
    }
    if (observed->exists && observed->stat.type != FileType::kDirectory &&
        Replaces(planned, *observed)) {
      undo["backup"] =
          Parent(path) + (Parent(path) == "/" ? "" : "/") + BackupName(path, tag, ++steps_);
    }
    return undo;
  }

  Status Apply(std::vector<Change>& changes, Transaction& transaction) override {
    for (std::size_t first = 0; first < changes.size();) {
      if (!WritesContent(changes[first])) {
        if (auto made = ApplyOne(changes[first], nullptr); !made) {
          changes[first].failed = true;
          return made;
        }
        transaction.Progress("change");
        ++first;
        continue;
      }
      // A run of file contents to write: every one is written aside, all are made durable
      // with one sync per filesystem, then each is renamed into place. A crash before a
      // rename leaves only a temporary file, which recovery removes.
      std::size_t last = first;
      std::vector<std::string> temps;
      for (; last < changes.size() && WritesContent(changes[last]); ++last) {
        const auto& file = std::get<FileSpec>(changes[last].planned->resource->spec);
        auto options = WriteOptionsFor(file, changes[last].step.undo);
        auto content = options ? ContentOf(file) : Result<std::string>(Fail(options.error()));
        auto temp = content ? fs_.WriteTemporary(file.path, *content, *options)
                            : Result<std::string>(Fail(content.error()));
        if (!temp) {
          changes[last].failed = true;
          return Fail(temp.error());
        }
        temps.push_back(std::move(*temp));
        transaction.Progress("staged");
      }
      if (auto synced = fs_.SyncFilesystems(temps); !synced) return synced;
      for (std::size_t k = first; k < last; ++k) {
        if (auto made = ApplyOne(changes[k], &temps[k - first]); !made) {
          changes[k].failed = true;
          return made;
        }
        transaction.Progress("change");
      }
      first = last;
    }
    return {};
  }

  Status Undo(const JournalStep& step) override {
    const std::string path = step.undo.value("path", "");
    const std::string before = step.undo.value("before", "none");
    if (step.undo.contains("backup")) {
      const std::string backup = step.undo["backup"].get<std::string>();
      auto restored = fs_.Rename(backup, path);
      // Already restored by an earlier, interrupted recovery: nothing left to do.
      if (!restored && !restored.error().Is(std::errc::no_such_file_or_directory)) {
        return restored;
      }
      // When the change never happened, the backup and the path are links to one inode,
      // and rename(2) then leaves both: the backup goes now.
      auto removed = fs_.Remove(backup);
      if (!removed && !removed.error().Is(std::errc::no_such_file_or_directory)) return removed;
    } else if (before == "none") {
      auto removed = fs_.Remove(path);
      // A directory this step made that has since got something tether does not manage in
      // it stays: removing that is not ours to do, and must not block recovery forever.
      if (!removed && !removed.error().Is(std::errc::no_such_file_or_directory) &&
          !removed.error().Is(std::errc::directory_not_empty)) {
        return removed;
      }
    } else {
      auto set = fs_.SetAttributes(path, step.undo.value("mode", 0644u), step.undo.value("uid", 0u),
                                   step.undo.value("gid", 0u));
      if (!set && set.error().Is(std::errc::no_such_file_or_directory) && before == "directory") {
        // A pruned directory (it has no backup): made again as it was.
        auto made = fs_.CreateDirectory(path, step.undo.value("mode", 0755u));
        if (!made && !made.error().Is(std::errc::file_exists)) return made;
        set = fs_.SetAttributes(path, step.undo.value("mode", 0755u), step.undo.value("uid", 0u),
                                step.undo.value("gid", 0u));
      }
      if (!set && !set.error().Is(std::errc::no_such_file_or_directory)) return set;
    }
    return RemoveTemporaries(path);
  }

  Status Flush() override {
    // Renames, links, symlinks and removals become durable with their directory, a mode
    // or owner changed in place with the path itself: an fsync of each when they are
    // few, else one sync per filesystem.
    std::vector<std::string> paths;
    for (const auto& path : touched_paths_) {
      if (fs_.Stat(path)) paths.push_back(path);  // a pruned path is gone
    }
    touched_paths_.clear();
    return fs_.SyncFilesystems(paths);
  }

  bool KeepsAside(const Json& undo) const override { return undo.contains("backup"); }

  Status Discard(const JournalStep& step) override {
    if (!step.undo.contains("backup")) return {};
    auto removed = fs_.Remove(step.undo["backup"].get<std::string>());
    if (!removed && !removed.error().Is(std::errc::no_such_file_or_directory)) return removed;
    return {};
  }

 private:
  // True for a change that writes a file's content (rather than chmod it, or make a
  // directory or symlink): those are written aside and synced together.
  static bool WritesContent(const Change& change) {
    const Resource* resource = change.planned->resource;
    if (resource == nullptr || !std::holds_alternative<FileSpec>(resource->spec)) return false;
    return change.step.undo.value("before", "none") != "file" ||
           change.step.undo.contains("backup");
  }

  // Mode and owner of a file's new content. Unset in the profile: whatever owns it now
  // keeps it (a new file gets the writer's).
  Result<WriteOptions> WriteOptionsFor(const FileSpec& file, const Json& undo) {
    auto owner = Owner(file.owner, file.group);
    if (!owner) return Fail(owner.error());
    const bool existed = undo.value("before", "none") != "none";
    WriteOptions options;
    options.mode = file.mode;
    options.uid =
        owner->uid ? owner->uid : (existed ? std::optional(undo.value("uid", 0u)) : std::nullopt);
    options.gid =
        owner->gid ? owner->gid : (existed ? std::optional(undo.value("gid", 0u)) : std::nullopt);
    return options;
  }

  // Makes one begun change: the backup link, then the change itself; `temp` is its new
  // content, already written aside and synced (for a change that WritesContent).
  Status ApplyOne(Change& change, const std::string* temp) {
    const PlannedAction& planned = *change.planned;
    const Json& undo = change.step.undo;
    const std::string path = undo.value("path", "");
    // Its directory's entries, and its own inode (a mode or owner changed in place).
    touched_paths_.insert(Parent(path));
    touched_paths_.insert(path);
    if (undo.contains("backup")) {
      if (auto linked = fs_.Link(path, undo["backup"].get<std::string>()); !linked) return linked;
    }
    if (planned.resource == nullptr) {
      auto pruned = Prune(planned, path);
      if (!pruned) return Fail(pruned.error());
      change.entry = std::move(*pruned);
      change.done = true;
      return {};
    }
    InventoryEntry entry;
    entry.kind = planned.resource->kind;
    // The path only when the id does not name it (the renderer's ids always do): the
    // inventory holds it once, in the id (see InventoryEntry::path).
    if (NamedBy(planned.action.id) != path) entry.path = std::string(path);
    if (planned.previous) {
      entry.created = planned.previous->created;
      entry.original = planned.previous->original;
    } else if (undo.value("before", "none") == "none") {
      entry.created = true;
    } else if (KeepsOriginal(planned.resource->on_remove)) {
      // Taken over: what was there is kept in the inventory, for a prune to give back. It
      // is still in place (or in the backup, which is the same inode).
      auto observed = ObservePath(fs_, path, true, kMaxContent);
      if (!observed) return Fail(observed.error());
      entry.original = OriginalOf(*observed);
    }
    // The file as the change leaves it, but for its ctime (which the rename and a chmod
    // move): its new content as written aside (mode and owner included, as the kernel set
    // them), or, for a mode or owner changed in place, the file before (its content).
    // The stat taken after the change must show it.
    const auto* file = std::get_if<FileSpec>(&planned.resource->spec);
    std::optional<FileStat> made;
    if (temp != nullptr) {
      if (auto stat = fs_.Stat(*temp)) made = *stat;
      if (auto renamed = fs_.Rename(*temp, path); !renamed) return renamed;
    } else {
      if (auto stat = fs_.Stat(path); file != nullptr && stat) made = *stat;
      if (auto done = Make(*planned.resource, undo); !done) return done;
    }
    if (file != nullptr) {
      auto stat = fs_.Stat(path);
      // Someone's write between the change and this stat, or their chmod or chown after a
      // rename, would be in it, and taken for tether's own by the daemon and the next plan:
      // the file is then left with no fingerprint (its content is read next time). Of a
      // mode or owner set in place, only this stat says what the kernel set (a file
      // system may ignore a chmod, or drop a setgid bit): a chmod in the instant between
      // is taken for tether's, until the next full audit.
      const bool as_made = made && stat && AsMade(*stat, *made, /*attributes=*/temp != nullptr);
      auto owner = Owner(file->owner, file->group);
      if (owner && as_made) entry.fingerprint = Fingerprint(*stat, MarkOfDesired(*file, *owner));
    }
    change.entry = std::move(entry);
    change.done = true;
    return {};
  }

  // True when `now` is the file `made`, but for the ctime (and, unless `attributes`, its
  // mode and owner).
  static bool AsMade(const FileStat& now, const FileStat& made, bool attributes) {
    return now.type == FileType::kRegular && made.type == FileType::kRegular &&
           now.inode == made.inode && now.size == made.size && now.mtime_ns == made.mtime_ns &&
           (!attributes || (now.mode == made.mode && now.uid == made.uid && now.gid == made.gid));
  }

  static const std::string& PathOf(const Resource& resource) {
    if (const auto* file = std::get_if<FileSpec>(&resource.spec)) return file->path;
    if (const auto* dir = std::get_if<DirectorySpec>(&resource.spec)) return dir->path;
    return std::get<SymlinkSpec>(resource.spec).path;
  }

  // True when the change replaces what is at the path (rather than chmod/chown it).
  static bool Replaces(const PlannedAction& planned, const PathObservation& observed) {
    if (planned.resource == nullptr) return true;  // removed or restored
    if (const auto* file = std::get_if<FileSpec>(&planned.resource->spec)) {
      return NeedsContent(*file, observed);
    }
    return std::holds_alternative<SymlinkSpec>(planned.resource->spec);
  }

  // An empty user or group is unset.
  Result<Ownership> Owner(const std::string& user, const std::string& group) {
    Ownership owner;
    if (!user.empty()) {
      auto passwd = fs_.ReadFile("/etc/passwd", 16 << 20);
      auto id = LookupId(passwd ? *passwd : "", user, "/etc/passwd");
      if (!id) return Fail(id.error());
      owner.uid = *id;
    }
    if (!group.empty()) {
      auto groups = fs_.ReadFile("/etc/group", 16 << 20);
      auto id = LookupId(groups ? *groups : "", group, "/etc/group");
      if (!id) return Fail(id.error());
      owner.gid = *id;
    }
    return owner;
  }

  // What the profile asks of a file (content, mode and ownership), as the 8 characters
  // (48 bits) of a fingerprint after its stat mark: of the SHA-256 of
  // "CONTENT_ID_HEX/MODE/UID/GID" ('-' for an unset owner or group). Built in place: a plan
  // makes one per file.
  using DesiredMark = std::array<char, 8>;
  static DesiredMark MarkOfDesired(const FileSpec& file, const Ownership& owner) {
    char text[2 * std::tuple_size_v<ContentId> + 3 * 12];
    ContentIdHexInto(ContentIdOf(file), text);
    char* end = text + 2 * std::tuple_size_v<ContentId>;
    char* const last = text + sizeof(text);
    *end++ = '/';
    end = std::to_chars(end, last, file.mode).ptr;
    for (const auto& id : {owner.uid, owner.gid}) {
      *end++ = '/';
      if (id) {
        end = std::to_chars(end, last, *id).ptr;
      } else {
        *end++ = '-';
      }
    }
    const Sha256Digest digest = Sha256Bytes(std::string_view(text, end - text));
    DesiredMark mark;
    Base64EncodeInto(std::string_view(reinterpret_cast<const char*>(digest.data()), 6),
                     mark.data());
    return mark;
  }

  // The metadata of a file as tether left it, with what the profile asked of it: its stat
  // mark (7 characters, first, so that the daemon can tell its own writes from a person's
  // with the stat alone), then the DesiredMark. Only equality matters and the inventory
  // keeps one per file: 15 characters, which a std::string holds without a heap allocation.
  static std::string Fingerprint(const FileStat& stat, const DesiredMark& desired) {
    if (stat.type != FileType::kRegular) return "";
    const StatMarkChars mark = StatMarkOf(stat);
    std::string fingerprint(mark.begin(), mark.end());
    fingerprint.append(desired.begin(), desired.end());
    return fingerprint;
  }

  // A change made in place: a file's mode and owner (its content is unchanged), a
  // directory, a symlink. `undo` says what was there.
  Status Make(const Resource& resource, const Json& undo) {
    const bool existed = undo.value("before", "none") != "none";
    if (const auto* file = std::get_if<FileSpec>(&resource.spec)) {
      auto options = WriteOptionsFor(*file, undo);
      if (!options) return Fail(options.error());
      if (existed && !undo.contains("backup")) {
        return fs_.SetAttributes(file->path, file->mode, options->uid, options->gid);
      }
      auto content = ContentOf(*file);
      if (!content) return Fail(content.error());
      return fs_.WriteFileAtomic(file->path, *content, *options);
    }
    if (const auto* dir = std::get_if<DirectorySpec>(&resource.spec)) {
      auto owner = Owner(dir->owner, dir->group);
      if (!owner) return Fail(owner.error());
      if (!existed) {
        if (auto made = fs_.CreateDirectory(dir->path, dir->mode); !made) return made;
      }
      return fs_.SetAttributes(dir->path, dir->mode, owner->uid, owner->gid);
    }
    const auto& link = std::get<SymlinkSpec>(resource.spec);
    return fs_.CreateSymlink(link.path, link.target);
  }

  Result<std::optional<InventoryEntry>> Prune(const PlannedAction& planned,
                                              const std::string& path) {
    const InventoryEntry& entry = *planned.previous;
    const PruneWay way = HowToPrune(entry.created, entry.on_remove, entry.original);
    if (way == PruneWay::kLeave) return std::optional<InventoryEntry>();
    if (way == PruneWay::kRemove) {
      // Decided now, after the prunes of what was inside it: a directory that still holds
      // something tether does not manage stays, and stays in the inventory.
      if (auto stat = fs_.Stat(path); stat && stat->type == FileType::kDirectory) {
        auto names = fs_.ListDirectory(path);
        if (!names) return Fail(names.error());
        if (!names->empty()) return std::optional(entry);
      }
      auto removed = fs_.Remove(path);
      if (!removed && !removed.error().Is(std::errc::no_such_file_or_directory)) {
        return Fail(removed.error());
      }
      return std::optional<InventoryEntry>();
    }
    // Give the original back.
    if (auto restored = RestoreOriginal(fs_, path, entry.original); !restored) {
      return Fail(restored.error());
    }
    return std::optional<InventoryEntry>();
  }

  // The name of the backup that `transaction` keeps of `path` in step `step`.
  static std::string BackupName(const std::string& path, const std::string& tag, int step) {
    return TemporaryPrefix(Name(path)) + "backup-" + tag + "-" + std::to_string(step);
  }

  // Leftovers of an interrupted atomic write of `path`: only exact temporary names.
  Status RemoveTemporaries(const std::string& path) {
    auto names = fs_.ListDirectory(Parent(path));
    if (!names) return {};  // the directory itself is gone: nothing left in it
    for (const auto& name : *names) {
      if (!IsTemporaryName(name, Name(path))) continue;
      auto removed = fs_.Remove(Parent(path) + (Parent(path) == "/" ? "" : "/") + name);
      if (!removed && !removed.error().Is(std::errc::no_such_file_or_directory)) return removed;
    }
    return {};
  }

  Filesystem& fs_;
  std::set<std::string> declared_directories_;
  int steps_ = 0;                        // numbers backups, so no two steps ever share one
  std::set<std::string> touched_paths_;  // to sync before the commit
};

}  // namespace

std::unique_ptr<KindHandler> MakePathHandler(Filesystem& fs) {
  return std::make_unique<PathHandler>(fs);
}

}  // namespace tether
