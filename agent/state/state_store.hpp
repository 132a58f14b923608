// The state dir (/var/lib/tether, --state-dir): what tether keeps between cycles. StateStore
// is the one place that knows its layout, its file names and their formats:
//
//   lock              held by the cycle working on the state dir (flock)
//   journal           the open transaction of an apply: JSON lines, appended and synced
//   inventory.json    what tether applied (tether.inventory/v2); inventory.json.new: the
//                     next one, written aside until its apply commits
//   inventory.delta   fingerprints newer than inventory.json's, recorded by drift repairs
//                     that changed nothing else (tether.inventory-delta/v1), until the
//                     next whole inventory takes them in; inventory.delta.new: likewise
//   quarantine.json   the commit whose apply failed (tether.quarantine/v1)
//   history.json      the last applies (tether.history/v1)
//   last-audit        unix seconds of the last full audit, and a newline
//   written-in-place.json  the files seen written in place that no cycle has committed
//                     since (tether.written-in-place/v1), kept past a restart
//   pinned            the commit a rollback holds (its 40 hex digits)
//   suspended         the reason of a suspension (its text)
//   outbox/           the status reports waiting for delivery (agent/report/outbox.hpp)
//
// Every read and write goes through the injected Filesystem (the host's: state files live
// on the host whatever --root says, and never through a symlink). A corrupt file is an
// Error naming it, never an exception, and is left as it is.
//
// Threading: no state of its own beyond the path; as thread-safe as its Filesystem.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "agent/state/history.hpp"
#include "agent/state/quarantine.hpp"
#include "common/error.hpp"
#include "common/filesystem.hpp"

namespace tether {

// Creates the state dir `dir` (mode 0700) when it is missing and returns the absolute,
// symlink-free path the host knows it by: what a StateStore is built on.
[[nodiscard]] Result<std::string> PrepareStateDir(const std::string& dir);

// One entry of the inventory as stored. The store does not know the kinds: `kind` is the
// name the engine gave it ("file").
struct StoredEntry {
  std::string kind;
  std::string path;  // the managed path or name
  bool created = false;
  bool pending = false;   // "pending": written only when true
  std::string on_remove;  // "on_remove": written only when not empty
  bool secret = false;    // "secret": written only when true
  nlohmann::json original;
  std::string fingerprint;
};

// An entry as this version writes most of them (no original, nothing pending, no
// on_remove, not secret): views of the inventory's text, valid during the call they are
// handed to. Most of a cycle's reading of the inventory is these, and nothing is copied
// for them but what the reader keeps.
struct PlainStoredEntry {
  std::string_view id;
  bool created = false;
  std::string_view fingerprint;
  std::string_view kind;
  std::string_view path;  // the managed path or name
};

// The entries of the inventory a partial read (StateStore::LoadInventory with a filter)
// left as they were written: each one's id and line, in id order, views of the text they
// keep alive. A drift repair of a few files of thousands parses those few, and writes the
// others' lines into the next inventory as they are. Copies share the text.
class UnreadEntries {
 public:
  // An entry's line, without the ",\n" between entries. A pointer and a size: at tens of
  // thousands of lines, what a partial read writes besides the text it maps costs page
  // faults, which a process that starts for one repair pays each time.
  class Line {
   public:
    Line() = default;
    explicit Line(std::string_view text)
        : data_(text.data()), size_(static_cast<std::uint32_t>(text.size())) {}
    [[nodiscard]] std::string_view text() const { return {data_, size_}; }
    // As written: plain strings, which need no unescaping.
    [[nodiscard]] std::string_view id() const;
    [[nodiscard]] std::string_view path() const;

   private:
    const char* data_ = nullptr;
    std::uint32_t size_ = 0;
  };
  [[nodiscard]] const std::vector<Line>& lines() const { return lines_; }
  [[nodiscard]] bool empty() const { return lines_.empty(); }
  // Hands over to `on_entry` the entries of `ids` (sorted) among these, in id order, and
  // forgets them. False when `on_entry` refuses one (the inventory is then corrupt).
  [[nodiscard]] bool Take(const std::vector<std::string_view>& ids,
                          const std::function<bool(std::string id, StoredEntry&& entry)>& on_entry);

 private:
  friend class StateStore;
  std::shared_ptr<const FileBytes> text_;
  std::vector<Line> lines_;
};

// Writes the next inventory (inventory.json.new) an entry at a time: neither a JSON tree
// nor the whole text is ever held. Get one from StateStore::StartInventory.
class InventoryWriter {
 public:
  InventoryWriter(InventoryWriter&&) = default;
  // Adds one entry; ids in increasing order, each once.
  [[nodiscard]] Status Add(std::string_view id, std::string_view kind, std::string_view path,
                           bool created, const nlohmann::json& original,
                           std::string_view fingerprint, bool pending = false,
                           std::string_view on_remove = {}, bool secret = false);
  // Adds an entry a partial read left unread, its line as it was. Lines that followed one
  // another in the text they were read from are written from it, a run at a time, not
  // copied: all the lines given must be of one UnreadEntries, which outlives the writer.
  [[nodiscard]] Status Add(const UnreadEntries::Line& line);
  // Writes the end and makes the file durable; then StateStore::InstallInventory.
  [[nodiscard]] Status Finish();

 private:
  friend class StateStore;
  InventoryWriter(Filesystem& fs, std::string path, std::string commit)
      : fs_(&fs), path_(std::move(path)), chunk_(std::move(commit)) {}
  Status Flush(bool sync);  // writes chunk_
  // Puts run_ after chunk_: written as it is when long, else copied.
  Status FlushRun();
  Status Write(std::string_view bytes, bool sync);

  Filesystem* fs_;
  std::string path_;
  std::string chunk_;     // not yet written
  std::string_view run_;  // then these unread lines, as they were read (",\n" between)
  bool created_ = false;
  bool first_ = true;
};

// Files a drift watch saw written in place that no cycle has planned and committed since:
// their fingerprint may be the stat of that edit, so every cycle reads them until one
// records what they are. Kept in the state dir so that a restart of the daemon does not
// forget them.
struct WrittenInPlace {
  std::vector<std::string> ids;  // resource ids, sorted
  bool all = false;              // too many to name: every managed file is read
  bool operator==(const WrittenInPlace&) const = default;
};
inline constexpr std::size_t kMaxWrittenInPlace = 4096;

class StateStore {
 public:
  // `fs` is the host's filesystem (RootedFilesystem at "/"); `dir` an absolute,
  // symlink-free, existing directory (PrepareStateDir). `fs` must outlive the store.
  StateStore(Filesystem& fs, std::string dir) : fs_(fs), dir_(std::move(dir)) {}

  [[nodiscard]] const std::string& dir() const { return dir_; }

  // Reads the inventory and the render (the large files, read whole by every cycle)
  // mapped rather than copied (Filesystem::ReadBytes): for a process that may die of
  // SIGBUS should one be cut short in place while it reads (a cycle's process), never the
  // daemon. tether itself only ever replaces them.
  void set_map_files(bool map) { map_files_ = map; }

  // The state dir's lock: one cycle at a time, held until destroyed. When another process
  // holds it: waits with `wait`, else fails with std::errc::operation_would_block.
  [[nodiscard]] Result<std::unique_ptr<FileLock>> Lock(bool wait);

  // --- The inventory ---
  // Reads the inventory: returns its commit ("" when there is none yet) after calling
  // `on_entry` for each entry, in id order. `on_entry` returns false for an entry it
  // refuses (an unknown kind): the inventory is then corrupt. A corrupt file is an error
  // that says it was left as it is.
  using EntryVisitor = std::function<bool(std::string id, StoredEntry&& entry)>;
  [[nodiscard]] Result<std::string> LoadInventory(const EntryVisitor& on_entry) const;
  // The same, but an entry `keep` turns down (given its id and kind) is not parsed, when
  // it is as this version writes most entries (no original, nothing pending, not secret):
  // its line goes to `unread` instead. Every other entry is handed to `on_entry`.
  using EntryFilter = std::function<bool(std::string_view id, std::string_view kind)>;
  [[nodiscard]] Result<std::string> LoadInventory(const EntryVisitor& on_entry,
                                                  const EntryFilter& keep,
                                                  UnreadEntries& unread) const;
  // The same, but an entry as this version writes most (PlainStoredEntry) is handed to
  // `on_plain` (when given) instead of `on_entry`, as views of the text: each costs the
  // reader only what it keeps. Refused (false) as `on_entry` refuses.
  using PlainEntryVisitor = std::function<bool(const PlainStoredEntry& entry)>;
  [[nodiscard]] Result<std::string> LoadInventory(const EntryVisitor& on_entry,
                                                  const PlainEntryVisitor& on_plain,
                                                  const EntryFilter& keep,
                                                  UnreadEntries& unread) const;
  // The commit of the inventory, "" when there is none; an error when it is unreadable.
  // Of an inventory as this version writes it, only the first line and the end are read
  // (its entries are every cycle's to check).
  [[nodiscard]] Result<std::string> AppliedCommit() const;
  // Starts the next inventory aside (inventory.json.new, replacing one left there, and
  // removing a delta left aside).
  [[nodiscard]] Result<InventoryWriter> StartInventory(std::string_view commit);
  // Records aside (inventory.delta.new) newer fingerprints of entries of the inventory in
  // place, of commit `commit`, with those recorded since it was written: rather than the
  // whole inventory again when a repair of a few files changed only their fingerprints.
  // A whole inventory left aside is removed.
  // std::errc::file_too_large when that would make more than kMaxDeltaEntries: the whole
  // inventory is then to be written, which takes them all in.
  static constexpr std::size_t kMaxDeltaEntries = 1024;
  using Fingerprints = std::map<std::string, std::string, std::less<>>;  // id -> fingerprint
  [[nodiscard]] Status StartInventoryDelta(std::string_view commit,
                                           const Fingerprints& fingerprints);
  // Puts what was written aside (StartInventory's or StartInventoryDelta's) into place,
  // durably. ENOENT when there is none.
  [[nodiscard]] Status InstallInventory();
  // Removes what was written aside; nothing to do when there is none.
  [[nodiscard]] Status DiscardInventory();

  // --- Originals: what tether took over, for on_remove = "restore" ---
  // Content-addressed files (originals/SHA256), kept out of the inventory, which names
  // them. Keeps `content` durably (a file already there is kept as it is); returns its
  // SHA-256 (hex).
  [[nodiscard]] Result<std::string> SaveOriginal(std::string_view content);
  // The content kept under `sha256`, checked against it: an error when it is missing or
  // does not match.
  [[nodiscard]] Result<std::string> LoadOriginal(std::string_view sha256) const;
  // Removes every kept original not in `kept` (SHA-256s, sorted). Returns how many went.
  [[nodiscard]] Result<std::size_t> PruneOriginals(const std::vector<std::string>& kept);

  // --- The last render, kept for the next cycle (see agent/desired/render_cache.hpp) ---
  // Its bytes; nullopt when there is none.
  [[nodiscard]] Result<std::optional<FileBytes>> LoadRender() const;
  // Replaces it. Not synced: after a crash, at worst the next cycle renders again.
  [[nodiscard]] Status SaveRender(std::string_view bytes);

  // --- The journal: lines of text (the engine's records), appended and synced ---
  // Creates the journal with `text`, durably (the file, its content and its name).
  // std::errc::file_exists when there is one already.
  [[nodiscard]] Status CreateJournal(std::string_view text);
  // Appends `text`, durable on return with `sync`.
  [[nodiscard]] Status AppendJournal(std::string_view text, bool sync = true);
  // Calls `on_line` with each complete line of the journal, in order, reading it a chunk at
  // a time (a torn last line, never synced, is not one). False when there is no journal.
  [[nodiscard]] Result<bool> ReadJournal(
      const std::function<void(std::string_view line)>& on_line) const;
  // Removes the journal; nothing to do when there is none.
  [[nodiscard]] Status RemoveJournal();
  // False when there is surely no journal (nothing to recover); true when there is one,
  // or when that cannot be told.
  [[nodiscard]] bool MayHaveJournal() const;
  // For messages: the journal's path.
  [[nodiscard]] std::string JournalPath() const;

  // --- The quarantine ---
  [[nodiscard]] Result<std::optional<Quarantine>> LoadQuarantine() const;
  [[nodiscard]] Status SaveQuarantine(const Quarantine& quarantine);
  // Lifts the quarantine; nothing to do when there is none.
  [[nodiscard]] Status ClearQuarantine();

  // --- The history of applies (bounded: kHistoryKept entries) ---
  [[nodiscard]] Result<std::vector<HistoryEntry>> LoadHistory() const;
  // Appends `entry` (its id assigned: one more than the last; its output and errors cut
  // at kHistoryOutput bytes), drops the oldest past kHistoryKept. Returns the id.
  [[nodiscard]] Result<std::int64_t> AppendHistory(HistoryEntry entry);

  // --- The last full audit ---
  // When it completed; none when none was recorded.
  [[nodiscard]] Result<std::optional<std::chrono::system_clock::time_point>> LastAudit() const;
  [[nodiscard]] Status RecordAudit(std::chrono::system_clock::time_point when);

  // --- Files seen written in place (CycleOptions::written_in_place) ---
  // Those a cycle was told of and did not plan and commit: empty when none are kept.
  [[nodiscard]] Result<WrittenInPlace> LoadWrittenInPlace() const;
  // Replaces what is kept (past kMaxWrittenInPlace ids: `all`); removes the file when
  // nothing is.
  [[nodiscard]] Status SaveWrittenInPlace(const WrittenInPlace& kept);

  // --- A rollback's pin and a suspension (tetherctl rollback, suspend) ---
  // The pinned commit; none when there is none (or the file holds no commit).
  [[nodiscard]] Result<std::optional<std::string>> LoadPin() const;
  // Pins `commit`, or removes the pin when none.
  [[nodiscard]] Status SavePin(const std::optional<std::string>& commit);
  // The suspension's reason (maybe empty); none when not suspended.
  [[nodiscard]] Result<std::optional<std::string>> LoadSuspension() const;
  // Suspends with `reason`, or ends the suspension when none.
  [[nodiscard]] Status SaveSuspension(const std::optional<std::string>& reason);

  // Where the report outbox lives (agent/report/outbox.hpp owns what is in it).
  [[nodiscard]] std::string OutboxDir() const;

 private:
  [[nodiscard]] std::string PathOf(std::string_view name) const;
  // The file `name`, none when it does not exist.
  [[nodiscard]] Result<std::optional<std::string>> ReadOptional(std::string_view name,
                                                                std::size_t max_size) const;
  // The same, mapped when map_files_ says so.
  [[nodiscard]] Result<std::optional<FileBytes>> ReadLarge(std::string_view name,
                                                           std::size_t max_size) const;
  // The fingerprints of inventory.delta, when it was recorded over the inventory in place,
  // of `commit`; none when there is none, or it is of another.
  // `warn`: a delta that cannot be read or is corrupt is said so in the log.
  [[nodiscard]] Fingerprints ReadDelta(std::string_view commit, bool warn = false) const;
  // The inventory file's StatMark; "" when it cannot be told.
  [[nodiscard]] std::string InventoryMark() const;
  [[nodiscard]] Status WritePrivate(std::string_view name, std::string_view content);
  [[nodiscard]] Status RemoveIfThere(std::string_view name);

  Filesystem& fs_;
  std::string dir_;
  bool map_files_ = false;
};

}  // namespace tether
