#include "agent/state/state_store.hpp"
#include "common/log.hpp"
#include "common/sha256.hpp"
#include "common/stat_mark.hpp"

#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <type_traits>
#include <utility>

namespace tether {

namespace {

using Json = nlohmann::json;

constexpr char kLock[] = "lock";
constexpr char kJournal[] = "journal";
constexpr char kInventory[] = "inventory.json";
constexpr char kInventoryNew[] = "inventory.json.new";
constexpr char kInventoryDelta[] = "inventory.delta";
constexpr char kInventoryDeltaNew[] = "inventory.delta.new";
constexpr char kQuarantine[] = "quarantine.json";
constexpr char kHistory[] = "history.json";
constexpr char kLastAudit[] = "last-audit";
constexpr char kPinned[] = "pinned";
constexpr char kSuspended[] = "suspended";
constexpr char kOutbox[] = "outbox";
constexpr char kRender[] = "render.cache";
constexpr char kWrittenInPlace[] = "written-in-place.json";

// v2: entries may name an original kept aside (content_sha256) and record "secret"; a
// version that knows only v1 refuses it rather than restore an empty file. A v1
// inventory is read as one whose entries are all secret (v1 did not record it): a
// prune's diff shows sizes only until the entry is written again.
constexpr char kInventorySchema[] = "tether.inventory/v2";
constexpr char kInventorySchemaV1[] = "tether.inventory/v1";
constexpr char kInventoryDeltaSchema[] = "tether.inventory-delta/v1";
constexpr char kQuarantineSchema[] = "tether.quarantine/v1";
constexpr char kHistorySchema[] = "tether.history/v1";
constexpr char kWrittenInPlaceSchema[] = "tether.written-in-place/v1";

constexpr std::size_t kMaxInventory = 256 << 20;
constexpr std::size_t kMaxRender = 256 << 20;
constexpr std::size_t kMaxInventoryDelta = 4 << 20;
constexpr std::size_t kMaxHistory = 64 << 20;
constexpr std::size_t kMaxQuarantine = 1 << 20;
constexpr std::size_t kMaxSmallFile = 4096;
// A suspension's reason is at most 4 KiB (the control protocol's limit); one written by
// hand may be longer, and is read all the same.
constexpr std::size_t kMaxSuspension = 1 << 20;
constexpr std::size_t kReadChunk = 64 << 10;
constexpr std::size_t kWriteChunk = 64 << 10;
constexpr std::size_t kCommitLength = 40;

// Non-throwing, typed reads of an object's members (nlohmann's value() throws on a member
// of another type): a missing member leaves `out` as it is; another type is false.
bool ReadString(const Json& object, const char* key, std::string& out) {
  const auto it = object.find(key);
  if (it == object.end()) return true;
  if (!it->is_string()) return false;
  out = it->get<std::string>();
  return true;
}

bool ReadBool(const Json& object, const char* key, bool& out) {
  const auto it = object.find(key);
  if (it == object.end()) return true;
  if (!it->is_boolean()) return false;
  out = it->get<bool>();
  return true;
}

template <typename Int>
bool ReadInt(const Json& object, const char* key, Int& out) {
  const auto it = object.find(key);
  if (it == object.end()) return true;
  if (it->is_number_unsigned()) {
    const auto value = it->get<std::uint64_t>();
    if (value > static_cast<std::uint64_t>(std::numeric_limits<Int>::max())) return false;
    out = static_cast<Int>(value);
    return true;
  }
  if (!it->is_number_integer()) return false;
  const auto value = it->get<std::int64_t>();
  if constexpr (std::is_unsigned_v<Int>) {
    if (value < 0) return false;
  }
  out = static_cast<Int>(value);
  return true;
}

std::string Dump(const Json& json, int indent = -1) {
  return json.dump(indent, ' ', false, Json::error_handler_t::replace);
}

// Appends `text` as a JSON string, as Dump writes it: plain printable ASCII as it is, the
// rest through Dump.
void AppendString(std::string& out, std::string_view text) {
  const bool plain = std::all_of(text.begin(), text.end(), [](char c) {
    return c >= 0x20 && c < 0x7f && c != '"' && c != '\\';
  });
  if (!plain) {
    out += Dump(Json(text));
    return;
  }
  out += '"';
  out += text;
  out += '"';
}

}  // namespace

Result<std::string> PrepareStateDir(const std::string& dir) {
  if (mkdir(dir.c_str(), 0700) != 0 && errno != EEXIST) {
    return FailErrno(errno, "create '" + dir + "'");
  }
  char* real = realpath(dir.c_str(), nullptr);
  if (real == nullptr) return FailErrno(errno, "'" + dir + "'");
  std::string resolved = real;
  std::free(real);
  return resolved;
}

std::string StateStore::PathOf(std::string_view name) const {
  return (dir_ == "/" ? "" : dir_) + "/" + std::string(name);
}

std::string StateStore::JournalPath() const { return PathOf(kJournal); }

// --- Originals ---

namespace {

constexpr char kOriginals[] = "originals";
// The largest original kept: what a handler reads of a path it takes over.
constexpr std::size_t kMaxOriginal = std::size_t{64} << 20;

bool IsSha256Hex(std::string_view name) {
  return name.size() == 64 && std::all_of(name.begin(), name.end(), [](char c) {
           return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
         });
}

}  // namespace

Result<std::string> StateStore::SaveOriginal(std::string_view content) {
  std::string sha256 = Sha256Hex(content);
  const std::string dir = PathOf(kOriginals);
  if (auto made = fs_.CreateDirectory(dir, 0700);
      !made && !made.error().Is(std::errc::file_exists)) {
    return Fail(made.error());
  }
  const std::string path = dir + "/" + sha256;
  if (fs_.Stat(path)) return sha256;  // kept already (checked when it is read)
  WriteOptions options;
  options.mode = 0600;
  if (auto written = fs_.WriteFileAtomic(path, content, options); !written) {
    return Fail(written.error().WithContext("keep the original"));
  }
  return sha256;
}

Result<std::string> StateStore::LoadOriginal(std::string_view sha256) const {
  if (!IsSha256Hex(sha256)) {
    return Fail(std::errc::invalid_argument, "'" + std::string(sha256) + "' is not a SHA-256");
  }
  const std::string path = PathOf(kOriginals) + "/" + std::string(sha256);
  auto content = fs_.ReadFile(path, kMaxOriginal);
  if (!content) return Fail(content.error().WithContext("the original kept in '" + path + "'"));
  if (Sha256Hex(*content) != sha256) {
    return Fail(std::errc::illegal_byte_sequence,
                "the original kept in '" + path + "' does not match its SHA-256");
  }
  return content;
}

Result<std::size_t> StateStore::PruneOriginals(const std::vector<std::string>& kept) {
  auto names = fs_.ListDirectory(PathOf(kOriginals));
  if (!names) {
    if (names.error().Is(std::errc::no_such_file_or_directory)) return std::size_t{0};
    return Fail(names.error());
  }
  std::size_t removed = 0;
  for (const auto& name : *names) {
    // Left: what is named, and what tether would not have written (a temporary file is
    // removed too: an interrupted write's).
    if (std::binary_search(kept.begin(), kept.end(), name)) continue;
    const bool temporary = name.size() > 65 && name[0] == '.' &&
                           IsSha256Hex(std::string_view(name).substr(1, 64)) &&
                           IsTemporaryName(name, std::string_view(name).substr(1, 64));
    if (!IsSha256Hex(name) && !temporary) continue;
    auto gone = fs_.Remove(PathOf(kOriginals) + "/" + name);
    if (!gone && !gone.error().Is(std::errc::no_such_file_or_directory)) return Fail(gone.error());
    ++removed;
  }
  return removed;
}

std::string StateStore::OutboxDir() const { return PathOf(kOutbox); }

Result<std::optional<std::string>> StateStore::ReadOptional(std::string_view name,
                                                            std::size_t max_size) const {
  auto text = fs_.ReadFile(PathOf(name), max_size);
  if (!text) {
    if (text.error().Is(std::errc::no_such_file_or_directory)) return std::nullopt;
    return Fail(text.error());
  }
  return std::optional<std::string>(std::move(*text));
}

Result<std::optional<FileBytes>> StateStore::ReadLarge(std::string_view name,
                                                       std::size_t max_size) const {
  auto bytes = fs_.ReadBytes(PathOf(name), max_size, map_files_);
  if (!bytes) {
    if (bytes.error().Is(std::errc::no_such_file_or_directory)) return std::nullopt;
    return Fail(bytes.error());
  }
  return std::optional<FileBytes>(std::move(*bytes));
}

Status StateStore::WritePrivate(std::string_view name, std::string_view content) {
  WriteOptions options;
  options.mode = 0600;
  return fs_.WriteFileAtomic(PathOf(name), content, options);
}

Status StateStore::RemoveIfThere(std::string_view name) {
  auto removed = fs_.Remove(PathOf(name));
  if (!removed && !removed.error().Is(std::errc::no_such_file_or_directory)) return removed;
  return {};
}

Result<std::unique_ptr<FileLock>> StateStore::Lock(bool wait) {
  return fs_.LockFile(PathOf(kLock), wait);
}

// --- The inventory ---

namespace {

// An entry's members as an object of them: false when one has another type.
// The original is moved out of `object`.
bool ReadEntry(Json& object, StoredEntry& entry) {
  if (!object.is_object() || !ReadString(object, "kind", entry.kind) || !object.contains("path") ||
      !ReadString(object, "path", entry.path) || !ReadBool(object, "created", entry.created) ||
      !ReadString(object, "fingerprint", entry.fingerprint) ||
      !ReadBool(object, "pending", entry.pending) ||
      !ReadString(object, "on_remove", entry.on_remove) ||
      !ReadBool(object, "secret", entry.secret)) {
    return false;
  }
  if (auto original = object.find("original"); original != object.end()) {
    entry.original = std::move(*original);
  }
  return true;
}

// Reading what InventoryWriter writes without a JSON parser, for the lines it writes as
// plain text (every string printable ASCII without '"' or '\\', no original, nothing
// pending, not secret): the bulk of a large inventory.

// `expected` is a literal: its size is known, and the comparison (once per member of each
// of tens of thousands of lines) made inline rather than by a call to memcmp.
template <std::size_t N>
bool Consume(std::string_view& rest, const char (&expected)[N]) {
  constexpr std::size_t kSize = N - 1;
  if (rest.size() < kSize || std::memcmp(rest.data(), expected, kSize) != 0) return false;
  rest.remove_prefix(kSize);
  return true;
}

// A string as AppendString writes a plain one, up to and with its closing quote (the
// opening one already taken).
bool ConsumePlain(std::string_view& rest, std::string_view& out) {
  for (std::size_t i = 0; i < rest.size(); ++i) {
    const char c = rest[i];
    if (c == '"') {
      out = rest.substr(0, i);
      rest.remove_prefix(i + 1);
      return true;
    }
    if (c < 0x20 || c >= 0x7f || c == '\\') return false;
  }
  return false;
}

// True when every byte of `text` is one a plain string may hold: printable ASCII but the
// backslash (AppendString escapes the others). Eight bytes at a time: a read in part
// checks every line of the inventory.
bool AllPlain(std::string_view text) {
  constexpr std::uint64_t kOnes = 0x0101010101010101;
  constexpr std::uint64_t kHigh = 0x8080808080808080;
  // Nonzero when a byte of `v` is zero (exact as a whole, not byte by byte).
  const auto zero_byte = [](std::uint64_t v) { return (v - kOnes) & ~v & kHigh; };
  std::size_t i = 0;
  for (; i + 8 <= text.size(); i += 8) {
    std::uint64_t w;
    std::memcpy(&w, text.data() + i, sizeof(w));
    const std::uint64_t below_space = (w - kOnes * 0x20) & ~w & kHigh;
    if (((w & kHigh) | below_space | zero_byte(w ^ (kOnes * 0x7f)) |
         zero_byte(w ^ (kOnes * '\\'))) != 0) {
      return false;
    }
  }
  for (; i < text.size(); ++i) {
    const char c = text[i];
    if (c < 0x20 || c >= 0x7f || c == '\\') return false;
  }
  return true;
}

// Up to and with the closing quote, of a text known to be AllPlain.
bool ConsumeToQuote(std::string_view& rest, std::string_view& out) {
  const std::size_t quote = rest.find('"');
  if (quote == std::string_view::npos) return false;
  out = rest.substr(0, quote);
  rest.remove_prefix(quote + 1);
  return true;
}

bool ConsumeBool(std::string_view& rest, bool& out) {
  out = Consume(rest, "true");
  return out || Consume(rest, "false");
}

bool ReadPlain(std::string_view line, PlainStoredEntry& out) {
  // What the line holds besides its strings is plain too: a line that is all plain holds
  // plain strings, found by their closing quotes.
  std::string_view rest = line;
  return AllPlain(line) && Consume(rest, "\"") && ConsumeToQuote(rest, out.id) &&
         Consume(rest, R"(:{"created":)") && ConsumeBool(rest, out.created) &&
         Consume(rest, R"(,"fingerprint":")") && ConsumeToQuote(rest, out.fingerprint) &&
         Consume(rest, R"(,"kind":")") && ConsumeToQuote(rest, out.kind) &&
         Consume(rest, R"(,"original":null,"path":")") && ConsumeToQuote(rest, out.path) &&
         rest == "}";
}

void FromPlain(const PlainStoredEntry& plain, std::string& id, StoredEntry& entry) {
  id = plain.id;
  entry.kind = plain.kind;
  entry.path = plain.path;
  entry.created = plain.created;
  entry.fingerprint = plain.fingerprint;
}

// One entry's line that is not plain, through the JSON parser.
bool ParseLine(std::string_view line, std::string& id, StoredEntry& entry) {
  entry = {};
  std::string object;
  object.reserve(line.size() + 2);
  object += '{';
  object += line;
  object += '}';
  Json parsed = Json::parse(object, nullptr, false);
  if (parsed.is_discarded() || !parsed.is_object() || parsed.size() != 1) return false;
  id = parsed.begin().key();
  return ReadEntry(parsed.begin().value(), entry);
}

class WrittenInventory {
 public:
  explicit WrittenInventory(std::string_view text) : text_(text) {}

  // The commit its first line names, when that line is as InventoryWriter writes it.
  std::optional<std::string> Commit() const {
    std::string_view rest = text_;
    bool v1 = false;
    std::string_view commit;
    if (!Head(rest, v1, commit)) return std::nullopt;
    return std::string(commit);
  }

  // The commit, after calling `on_entry` (when given) for each entry; nullopt when the
  // text is not as InventoryWriter writes it, or an entry is not one: the JSON parser
  // then reads it, and says what is wrong. Sets `refused` to the id of an entry
  // `on_entry` refused (then stops). A plain entry `keep` (when given) turns down goes
  // to `unread` instead.
  //
  // Without `keep`, each entry is handed over as it is read: call first without
  // `on_entry`, a check of the whole text, so that no entry is handed over twice when
  // the parser has to read it after all. With `keep` (a read in part, which keeps few
  // entries), the text is checked as it is read, and what is kept handed over at the end.
  std::optional<std::string> Read(const StateStore::EntryVisitor* on_entry,
                                  std::optional<std::string>& refused,
                                  const StateStore::EntryFilter* keep = nullptr,
                                  std::vector<UnreadEntries::Line>* unread = nullptr,
                                  const StateStore::PlainEntryVisitor* on_plain = nullptr) {
    std::string_view rest = text_;
    bool v1 = false;
    std::string_view commit;
    if (!Head(rest, v1, commit)) return std::nullopt;
    if (Consume(rest, "\n}}\n")) {
      return rest.empty() ? std::optional(std::string(commit)) : std::nullopt;
    }
    const bool check = on_entry == nullptr || keep != nullptr;
    std::vector<std::pair<std::string, StoredEntry>> kept;
    std::string_view previous;  // the id before, in the check
    std::string previous_parsed;
    bool first = true;
    bool ended = false;
    while (!ended && Consume(rest, "\n")) {
      const auto end = rest.find('\n');
      if (end == std::string_view::npos) return std::nullopt;
      std::string_view line = rest.substr(0, end);
      rest.remove_prefix(end);
      ended = line.empty() || line.back() != ',';
      if (!ended) line.remove_suffix(1);
      PlainStoredEntry plain;
      const bool is_plain = ReadPlain(line, plain);
      std::string id;
      StoredEntry entry;
      if (!is_plain && !ParseLine(line, id, entry)) return std::nullopt;
      if (check) {
        // In id order, each once, as InventoryWriter writes them: the lines left unread
        // are merged back by it. A file edited out of that order is read by the parser.
        const std::string_view this_id = is_plain ? plain.id : std::string_view(id);
        if (!first && this_id <= previous) return std::nullopt;
        if (is_plain) {
          previous = this_id;
        } else {
          previous_parsed = id;
          previous = previous_parsed;
        }
        first = false;
      }
      if (on_entry == nullptr) continue;
      if (is_plain && !v1 && keep != nullptr && !(*keep)(plain.id, plain.kind)) {
        unread->emplace_back(line);
        continue;
      }
      if (is_plain && !v1 && keep == nullptr && on_plain != nullptr) {
        if (!(*on_plain)(plain)) {
          refused = std::string(plain.id);
          return std::string(commit);
        }
        continue;
      }
      if (is_plain) FromPlain(plain, id, entry);
      if (v1) entry.secret = true;
      if (keep != nullptr) {
        kept.emplace_back(std::move(id), std::move(entry));
      } else if (!(*on_entry)(id, std::move(entry))) {
        refused = std::move(id);
        return std::string(commit);
      }
    }
    if (!ended || rest != "\n}}\n") return std::nullopt;
    for (auto& [id, entry] : kept) {
      if (!(*on_entry)(id, std::move(entry))) {
        refused = std::move(id);
        break;
      }
    }
    return std::string(commit);
  }

 private:
  // The first line, up to the entries.
  static bool Head(std::string_view& rest, bool& v1, std::string_view& commit) {
    if (!Consume(rest, R"({"schema":")")) return false;
    v1 = Consume(rest, kInventorySchemaV1);
    return (v1 || Consume(rest, kInventorySchema)) && Consume(rest, R"(","commit":")") &&
           ConsumePlain(rest, commit) && Consume(rest, R"(,"entries":{)");
  }

  std::string_view text_;
};

}  // namespace

// Entries are handed over one at a time, as the parser finishes each, and dropped from
// the document: the inventory of a host with many files is never whole in memory twice.
Result<std::string> StateStore::LoadInventory(const EntryVisitor& on_entry) const {
  UnreadEntries unread;
  return LoadInventory(on_entry, nullptr, unread);
}

// A line left unread is plain (ReadPlain): `"ID":{...,"path":"PATH"}`, neither string
// holding a quote.
std::string_view UnreadEntries::Line::id() const {
  const std::string_view line = text();
  return line.substr(1, line.find('"', 1) - 1);
}

std::string_view UnreadEntries::Line::path() const {
  constexpr std::string_view kPath = R"(,"path":")";
  const std::string_view line = text();
  const std::size_t start = line.rfind(kPath) + kPath.size();
  return line.substr(start, line.size() - 2 - start);
}

bool UnreadEntries::Take(const std::vector<std::string_view>& ids,
                         const std::function<bool(std::string id, StoredEntry&& entry)>& on_entry) {
  std::vector<std::size_t> taken;
  for (const std::string_view id : ids) {
    const auto it =
        std::lower_bound(lines_.begin(), lines_.end(), id,
                         [](const Line& line, std::string_view id) { return line.id() < id; });
    if (it != lines_.end() && it->id() == id)
      taken.push_back(static_cast<std::size_t>(it - lines_.begin()));
  }
  for (const std::size_t i : taken) {
    PlainStoredEntry plain;
    std::string id;
    StoredEntry entry;
    if (!ReadPlain(lines_[i].text(), plain)) return false;  // read as one before
    FromPlain(plain, id, entry);
    if (!on_entry(std::move(id), std::move(entry))) return false;
  }
  // The others keep their order.
  std::size_t kept = 0;
  auto next = taken.begin();
  for (std::size_t i = 0; i < lines_.size(); ++i) {
    if (next != taken.end() && *next == i) {
      ++next;
      continue;
    }
    lines_[kept++] = lines_[i];
  }
  lines_.resize(kept);
  if (lines_.empty()) text_.reset();
  return true;
}

Result<std::string> StateStore::LoadInventory(const EntryVisitor& on_entry, const EntryFilter& keep,
                                              UnreadEntries& unread) const {
  return LoadInventory(on_entry, nullptr, keep, unread);
}

Result<std::string> StateStore::LoadInventory(const EntryVisitor& on_entry,
                                              const PlainEntryVisitor& on_plain,
                                              const EntryFilter& keep,
                                              UnreadEntries& unread) const {
  unread = {};
  const std::string path = PathOf(kInventory);
  auto corrupt = [&](const std::string& why) {
    return Fail(std::errc::illegal_byte_sequence,
                "inventory '" + path + "' is corrupt (" + why +
                    "); it was left as it is: repair or remove it by hand");
  };
  auto read = ReadLarge(kInventory, kMaxInventory);
  if (!read) return Fail(read.error());
  if (!*read) return std::string();
  // Shared with `unread`, whose lines are views of it.
  auto text = std::make_shared<const FileBytes>(std::move(**read));
  read->reset();
  const std::string_view bytes = text->view();
  // As this version writes it: checked whole first (a read in part: as it is read), so
  // that no entry is handed over twice when the JSON parser has to read it after all.
  WrittenInventory written(bytes);
  std::optional<std::string> refused;
  if (auto checked = keep ? written.Commit() : written.Read(nullptr, refused)) {
    // The fingerprints repairs recorded since: their entries are read (never left
    // unread, whose lines would be written back as they are) and given the newer one.
    const Fingerprints delta = ReadDelta(*checked, true);
    const EntryVisitor with_delta = [&](std::string id, StoredEntry&& entry) {
      if (const auto newer = delta.find(id); newer != delta.end()) {
        entry.fingerprint = newer->second;
      }
      return on_entry(std::move(id), std::move(entry));
    };
    const EntryFilter keep_delta = [&](std::string_view id, std::string_view kind) {
      return delta.contains(id) || keep(id, kind);
    };
    const EntryVisitor& visit = delta.empty() ? on_entry : with_delta;
    const EntryFilter* filter = !keep ? nullptr : delta.empty() ? &keep : &keep_delta;
    std::vector<UnreadEntries::Line> lines;
    // At most a line for each 64 bytes (an entry's line is longer): pages reserved and
    // never written cost nothing, where counting the lines first is a pass over the text.
    if (keep) lines.reserve(bytes.size() / 64 + 1);
    // A fingerprint of the delta is the entry's: those entries go through `with_delta`.
    const PlainEntryVisitor* plain = on_plain && delta.empty() ? &on_plain : nullptr;
    auto commit = written.Read(&visit, refused, filter, &lines, plain);
    if (refused) return corrupt("bad entry '" + *refused + "'");
    if (commit) {
      if (!lines.empty()) {
        unread.text_ = std::move(text);
        unread.lines_ = std::move(lines);
      }
      return std::move(*commit);
    }
  }
  std::string top_key;                   // the member of the top object being read
  std::string schema;                    // as read, when it came before the entries
  std::string id;                        // the entry being read
  std::optional<std::string> bad_entry;  // the first entry that is not one
  auto on_event = [&](int depth, Json::parse_event_t event, Json& parsed) {
    if (event == Json::parse_event_t::key && depth == 1) top_key = parsed.get<std::string>();
    if (event == Json::parse_event_t::value && depth == 1 && top_key == "schema" &&
        parsed.is_string()) {
      schema = parsed.get<std::string>();
    }
    if (top_key != "entries") return true;
    if (event == Json::parse_event_t::key && depth == 2) id = parsed.get<std::string>();
    if (event != Json::parse_event_t::object_end || depth != 2) return true;
    StoredEntry entry;
    if (!ReadEntry(parsed, entry)) {
      if (!bad_entry) bad_entry = id;
      return false;
    }
    if (schema != kInventorySchema) entry.secret = true;  // v1 (or a schema refused below)
    if (!on_entry(id, std::move(entry)) && !bad_entry) bad_entry = id;
    return false;  // handed over: not kept in the document
  };
  const Json json = Json::parse(bytes.begin(), bytes.end(), on_event, false);
  text.reset();  // the text goes before the entries are used
  if (json.is_discarded() || !json.is_object()) return corrupt("not JSON");
  if (!ReadString(json, "schema", schema) ||
      (schema != kInventorySchema && schema != kInventorySchemaV1)) {
    return corrupt("unknown schema");
  }
  std::string commit;
  if (!ReadString(json, "commit", commit)) return corrupt("bad commit");
  auto entries = json.find("entries");
  if (entries == json.end() || !entries->is_object()) return corrupt("no entries");
  if (bad_entry) return corrupt("bad entry '" + *bad_entry + "'");
  // Every object was handed over; what is left is not an entry.
  if (!entries->empty()) return corrupt("bad entry '" + entries->begin().key() + "'");
  return commit;
}

Result<std::string> StateStore::AppliedCommit() const {
  // An inventory as this version writes it names its commit in its first line: that line
  // and the file's end are read, not its entries (every cycle reads them all, and says
  // when they are corrupt). Anything else is read whole.
  const std::string path = PathOf(kInventory);
  const std::string head = std::string("{\"schema\":\"") + kInventorySchema + R"(","commit":")";
  const std::string_view end = "\n}}\n";
  if (auto stat = fs_.Stat(path); stat && stat->type == FileType::kRegular &&
                                  stat->size >= head.size() + kCommitLength + end.size()) {
    auto first = fs_.ReadFileRange(path, 0, head.size() + kCommitLength + 16);
    auto last = fs_.ReadFileRange(path, stat->size - end.size(), end.size());
    if (first && last && *last == end && first->starts_with(head)) {
      const std::string_view rest = std::string_view(*first).substr(head.size());
      const std::string_view commit = rest.substr(0, std::min(rest.find('"'), rest.size()));
      if (rest.substr(commit.size()).starts_with(R"(","entries":{)") &&
          (commit.empty() || (commit.size() == kCommitLength &&
                              commit.find_first_not_of("0123456789abcdef") == commit.npos))) {
        return std::string(commit);
      }
    }
  }
  return LoadInventory([](std::string, StoredEntry&&) { return true; });
}

// What was written aside is installed by which of the two is there (InstallInventory):
// each start removes both, so that one an earlier apply left aside is never installed.
Result<InventoryWriter> StateStore::StartInventory(std::string_view commit) {
  if (auto removed = RemoveIfThere(kInventoryNew); !removed) return Fail(removed.error());
  if (auto removed = RemoveIfThere(kInventoryDeltaNew); !removed) return Fail(removed.error());
  return InventoryWriter(fs_, PathOf(kInventoryNew),
                         std::string("{\"schema\":\"") + kInventorySchema +
                             "\",\"commit\":" + Dump(Json(commit)) + ",\"entries\":{");
}

Status InventoryWriter::Add(std::string_view id, std::string_view kind, std::string_view path,
                            bool created, const nlohmann::json& original,
                            std::string_view fingerprint, bool pending, std::string_view on_remove,
                            bool secret) {
  if (auto flushed = FlushRun(); !flushed) return flushed;
  chunk_ += first_ ? "\n" : ",\n";
  first_ = false;
  // As Dump of the entry's object would write it (members in key order), without
  // building one for each of many entries.
  AppendString(chunk_, id);
  chunk_ += R"(:{"created":)";
  chunk_ += created ? "true" : "false";
  chunk_ += R"(,"fingerprint":)";
  AppendString(chunk_, fingerprint);
  chunk_ += R"(,"kind":)";
  AppendString(chunk_, kind);
  if (!on_remove.empty()) {  // rare, as "pending": the JSON parser reads such a line
    chunk_ += R"(,"on_remove":)";
    AppendString(chunk_, on_remove);
  }
  chunk_ += R"(,"original":)";
  chunk_ += Dump(original);
  chunk_ += R"(,"path":)";
  AppendString(chunk_, path);
  if (pending) chunk_ += R"(,"pending":true)";  // rare: the JSON parser reads such a line
  if (secret) chunk_ += R"(,"secret":true)";
  chunk_ += '}';
  if (chunk_.size() >= kWriteChunk) return Flush(false);
  return {};
}

Status InventoryWriter::Add(const UnreadEntries::Line& line) {
  // The line right after the run in the text read (which wrote ",\n" between entries,
  // as this writer does) extends it.
  const char* end = run_.data() + run_.size();
  const std::string_view text = line.text();
  if (!run_.empty() && text.data() == end + 2 && end[0] == ',' && end[1] == '\n') {
    run_ = std::string_view(run_.data(), run_.size() + 2 + text.size());
    return {};
  }
  if (auto flushed = FlushRun(); !flushed) return flushed;
  chunk_ += first_ ? "\n" : ",\n";
  first_ = false;
  run_ = text;
  return {};
}

Status InventoryWriter::FlushRun() {
  const std::string_view run = std::exchange(run_, {});
  if (run.size() < kWriteChunk) {
    chunk_ += run;
    if (chunk_.size() >= kWriteChunk) return Flush(false);
    return {};
  }
  if (!chunk_.empty()) {
    if (auto flushed = Flush(false); !flushed) return flushed;
  }
  return Write(run, false);
}

Status InventoryWriter::Finish() {
  if (auto flushed = FlushRun(); !flushed) return flushed;
  chunk_ += "\n}}\n";
  return Flush(true);
}

Status InventoryWriter::Flush(bool sync) {
  if (auto written = Write(chunk_, sync); !written) return written;
  chunk_.clear();
  return {};
}

Status InventoryWriter::Write(std::string_view bytes, bool sync) {
  AppendOptions options;
  options.mode = 0600;
  options.create = !created_;
  options.sync = sync;
  if (auto written = fs_->AppendFile(path_, bytes, options); !written) return written;
  created_ = true;
  return {};
}

// The delta is bound to the inventory it was recorded over: its commit, and its file by
// StatMark (inode, size, times), which any inventory renamed into place changes. It holds
// fingerprints only, which save reading a file whose content is compared otherwise: one
// that is gone, unreadable or of another inventory is not used, and costs at most such
// reads (and a repair that finds nothing to do).
std::string StateStore::InventoryMark() const {
  auto stat = fs_.Stat(PathOf(kInventory));
  return stat ? StatMark(*stat) : std::string();
}

StateStore::Fingerprints StateStore::ReadDelta(std::string_view commit, bool warn) const {
  Fingerprints fingerprints;
  auto not_used = [&](const std::string& why) {
    if (warn) {
      GetLogger("state")->warn("'{}' {}; it is not used (the files it names are read)",
                               PathOf(kInventoryDelta), why);
    }
    return Fingerprints();
  };
  auto text = ReadOptional(kInventoryDelta, kMaxInventoryDelta);
  if (!text) return not_used("cannot be read: " + text.error().message());
  if (!*text) return fingerprints;
  const Json json = Json::parse(**text, nullptr, false);
  std::string schema;
  std::string base_commit;
  std::string base;
  if (json.is_discarded() || !json.is_object() || !ReadString(json, "schema", schema) ||
      schema != kInventoryDeltaSchema || !ReadString(json, "commit", base_commit) ||
      !ReadString(json, "base", base)) {
    return not_used("is corrupt");
  }
  // Recorded over another inventory (one written whole since, by a cycle that could not
  // remove it): of no use, and no fault.
  if (base_commit != commit || base.empty() || base != InventoryMark()) return fingerprints;
  const auto entries = json.find("fingerprints");
  if (entries == json.end() || !entries->is_object()) return not_used("is corrupt");
  for (const auto& [id, fingerprint] : entries->items()) {
    if (!fingerprint.is_string()) return not_used("is corrupt");
    fingerprints.emplace(id, fingerprint.get<std::string>());
  }
  return fingerprints;
}

Status StateStore::StartInventoryDelta(std::string_view commit, const Fingerprints& fingerprints) {
  if (auto removed = RemoveIfThere(kInventoryDeltaNew); !removed) return removed;
  if (auto removed = RemoveIfThere(kInventoryNew); !removed) return removed;
  const std::string base = InventoryMark();
  if (base.empty())
    return Fail(std::errc::no_such_file_or_directory, "no inventory to record beside");
  Fingerprints merged = ReadDelta(commit);
  for (const auto& [id, fingerprint] : fingerprints) merged.insert_or_assign(id, fingerprint);
  if (merged.size() > kMaxDeltaEntries) {
    return Fail(std::errc::file_too_large, "more fingerprints than an inventory delta keeps");
  }
  Json entries = Json::object();
  for (auto& [id, fingerprint] : merged) entries[id] = std::move(fingerprint);
  const Json delta = {{"schema", kInventoryDeltaSchema},
                      {"commit", commit},
                      {"base", base},
                      {"fingerprints", std::move(entries)}};
  AppendOptions options;
  options.mode = 0600;
  options.create = true;
  return fs_.AppendFile(PathOf(kInventoryDeltaNew), Dump(delta) + "\n", options);
}

Status StateStore::InstallInventory() {
  auto whole = fs_.Stat(PathOf(kInventoryNew));
  if (!whole && !whole.error().Is(std::errc::no_such_file_or_directory)) return Fail(whole.error());
  if (!whole) {
    if (auto renamed = fs_.Rename(PathOf(kInventoryDeltaNew), PathOf(kInventoryDelta)); !renamed) {
      return renamed;
    }
    return fs_.SyncDirectory(dir_);
  }
  // A whole inventory takes in the delta, which goes first, durably: it must never stand
  // beside an inventory it was not recorded over.
  if (auto removed = fs_.Remove(PathOf(kInventoryDelta)); removed) {
    if (auto synced = fs_.SyncDirectory(dir_); !synced) return synced;
  } else if (!removed.error().Is(std::errc::no_such_file_or_directory)) {
    return removed;
  }
  if (auto renamed = fs_.Rename(PathOf(kInventoryNew), PathOf(kInventory)); !renamed) {
    return renamed;
  }
  return fs_.SyncDirectory(dir_);
}

Status StateStore::DiscardInventory() {
  if (auto removed = RemoveIfThere(kInventoryNew); !removed) return removed;
  return RemoveIfThere(kInventoryDeltaNew);
}

// --- The last render ---

Result<std::optional<FileBytes>> StateStore::LoadRender() const {
  return ReadLarge(kRender, kMaxRender);
}

Status StateStore::SaveRender(std::string_view bytes) {
  WriteOptions options;
  options.mode = 0600;
  options.sync = false;
  return fs_.WriteFileAtomic(PathOf(kRender), bytes, options);
}

// --- The journal ---

Status StateStore::CreateJournal(std::string_view text) {
  AppendOptions options;
  options.mode = 0600;
  options.create = true;
  return fs_.AppendFile(PathOf(kJournal), text, options);
}

Status StateStore::AppendJournal(std::string_view text, bool sync) {
  AppendOptions options;
  options.sync = sync;
  return fs_.AppendFile(PathOf(kJournal), text, options);
}

bool StateStore::MayHaveJournal() const {
  auto stat = fs_.Stat(PathOf(kJournal));
  return stat || !stat.error().Is(std::errc::no_such_file_or_directory);
}

Result<bool> StateStore::ReadJournal(
    const std::function<void(std::string_view line)>& on_line) const {
  const std::string path = PathOf(kJournal);
  std::string pending;
  std::uint64_t offset = 0;
  while (true) {
    auto chunk = fs_.ReadFileRange(path, offset, kReadChunk);
    if (!chunk) {
      if (offset == 0 && chunk.error().Is(std::errc::no_such_file_or_directory)) return false;
      return Fail(chunk.error());
    }
    if (chunk->empty()) return true;  // a torn last line was never a record
    offset += chunk->size();
    pending += *chunk;
    std::size_t pos = 0;
    for (std::size_t end; (end = pending.find('\n', pos)) != std::string::npos; pos = end + 1) {
      on_line(std::string_view(pending).substr(pos, end - pos));
    }
    pending.erase(0, pos);
  }
}

Status StateStore::RemoveJournal() { return RemoveIfThere(kJournal); }

// --- The quarantine ---

Result<std::optional<Quarantine>> StateStore::LoadQuarantine() const {
  auto text = ReadOptional(kQuarantine, kMaxQuarantine);
  if (!text) return Fail(text.error());
  if (!*text) return std::nullopt;
  const Json json = Json::parse(**text, nullptr, false);
  Quarantine quarantine;
  std::string schema;
  if (json.is_discarded() || !json.is_object() || !json.contains("commit") ||
      !ReadString(json, "commit", quarantine.commit) || !ReadString(json, "schema", schema) ||
      schema != kQuarantineSchema || !ReadString(json, "reason", quarantine.reason) ||
      !ReadInt(json, "since", quarantine.since)) {
    return Fail(std::errc::illegal_byte_sequence,
                "quarantine '" + PathOf(kQuarantine) +
                    "' is corrupt; it was left as it is: repair or remove it by hand");
  }
  return std::optional<Quarantine>(std::move(quarantine));
}

Status StateStore::SaveQuarantine(const Quarantine& quarantine) {
  const Json json = {{"schema", kQuarantineSchema},
                     {"commit", quarantine.commit},
                     {"reason", quarantine.reason},
                     {"since", quarantine.since}};
  return WritePrivate(kQuarantine, Dump(json, 1) + "\n");
}

Status StateStore::ClearQuarantine() { return RemoveIfThere(kQuarantine); }

// --- The history ---

Result<std::vector<HistoryEntry>> StateStore::LoadHistory() const {
  auto text = ReadOptional(kHistory, kMaxHistory);
  if (!text) return Fail(text.error());
  if (!*text) return std::vector<HistoryEntry>();
  const Json json = Json::parse(**text, nullptr, false);
  auto corrupt = [&] {
    return Fail(
        std::errc::illegal_byte_sequence,
        "history '" + PathOf(kHistory) + "' is corrupt; it was left as it is: repair or remove it");
  };
  std::string schema;
  if (json.is_discarded() || !json.is_object() || !ReadString(json, "schema", schema) ||
      schema != kHistorySchema || !json.contains("entries") || !json["entries"].is_array()) {
    return corrupt();
  }
  std::vector<HistoryEntry> entries;
  for (const auto& item : json["entries"]) {
    if (!item.is_object()) continue;
    HistoryEntry entry;
    if (!ReadInt(item, "id", entry.id) || !ReadString(item, "commit", entry.commit) ||
        !ReadString(item, "signer", entry.signer) || !ReadString(item, "trigger", entry.trigger) ||
        !ReadString(item, "outcome", entry.outcome) || !ReadInt(item, "changes", entry.changes) ||
        !ReadInt(item, "started", entry.started) ||
        !ReadInt(item, "duration_ms", entry.duration_ms) ||
        !ReadString(item, "output", entry.output) || !ReadString(item, "errors", entry.errors)) {
      return corrupt();
    }
    if (auto report = item.find("report"); report != item.end() && report->is_object()) {
      entry.report = *report;
    }
    entries.push_back(std::move(entry));
  }
  return entries;
}

Result<std::int64_t> StateStore::AppendHistory(HistoryEntry entry) {
  auto entries = LoadHistory();
  if (!entries) return Fail(entries.error());
  entry.id = entries->empty() ? 1 : entries->back().id + 1;
  if (entry.output.size() > kHistoryOutput) entry.output.resize(kHistoryOutput);
  if (entry.errors.size() > kHistoryOutput) entry.errors.resize(kHistoryOutput);
  entries->push_back(std::move(entry));
  if (entries->size() > kHistoryKept) {
    entries->erase(entries->begin(),
                   entries->begin() + static_cast<std::ptrdiff_t>(entries->size() - kHistoryKept));
  }
  Json list = Json::array();
  for (const auto& item : *entries) {
    Json json{{"id", item.id},           {"commit", item.commit},
              {"signer", item.signer},   {"trigger", item.trigger},
              {"outcome", item.outcome}, {"changes", item.changes},
              {"started", item.started}, {"duration_ms", item.duration_ms},
              {"output", item.output},   {"errors", item.errors}};
    if (item.report.is_object()) json["report"] = item.report;
    list.push_back(std::move(json));
  }
  const Json json = {{"schema", kHistorySchema}, {"entries", std::move(list)}};
  if (auto written = WritePrivate(kHistory, Dump(json) + "\n"); !written) {
    return Fail(written.error());
  }
  return entries->back().id;
}

// --- The last full audit ---

Result<std::optional<std::chrono::system_clock::time_point>> StateStore::LastAudit() const {
  auto text = ReadOptional(kLastAudit, 64);
  if (!text) return Fail(text.error());
  if (!*text) return std::nullopt;
  const char* begin = (*text)->c_str();
  char* end = nullptr;
  errno = 0;
  const long long seconds = std::strtoll(begin, &end, 10);
  if (end == begin || errno == ERANGE || (*end != '\n' && *end != '\0')) {
    return Fail(std::errc::illegal_byte_sequence,
                "last audit '" + PathOf(kLastAudit) + "' is corrupt: not unix seconds");
  }
  return std::optional(std::chrono::system_clock::time_point(std::chrono::seconds(seconds)));
}

Status StateStore::RecordAudit(std::chrono::system_clock::time_point when) {
  const auto seconds =
      std::chrono::duration_cast<std::chrono::seconds>(when.time_since_epoch()).count();
  return WritePrivate(kLastAudit, std::to_string(seconds) + "\n");
}

// --- Files seen written in place ---

Result<WrittenInPlace> StateStore::LoadWrittenInPlace() const {
  // kMaxWrittenInPlace ids of a path each, at most.
  auto text = ReadOptional(kWrittenInPlace, 64 << 20);
  if (!text) return Fail(text.error());
  WrittenInPlace kept;
  if (!*text) return kept;
  const Json json = Json::parse(**text, nullptr, false);
  std::string schema;
  const auto ids = json.is_object() ? json.find("ids") : Json::const_iterator();
  bool valid = json.is_object() && ReadString(json, "schema", schema) &&
               schema == kWrittenInPlaceSchema && ReadBool(json, "all", kept.all) &&
               ids != json.end() && ids->is_array() && ids->size() <= kMaxWrittenInPlace;
  if (valid) {
    for (const auto& id : *ids) {
      if (!id.is_string()) {
        valid = false;
        break;
      }
      kept.ids.push_back(id.get<std::string>());
    }
  }
  if (!valid) {
    return Fail(std::errc::illegal_byte_sequence,
                "the list of files written in place '" + PathOf(kWrittenInPlace) + "' is corrupt");
  }
  std::sort(kept.ids.begin(), kept.ids.end());
  kept.ids.erase(std::unique(kept.ids.begin(), kept.ids.end()), kept.ids.end());
  return kept;
}

Status StateStore::SaveWrittenInPlace(const WrittenInPlace& kept) {
  if (kept.ids.empty() && !kept.all) return RemoveIfThere(kWrittenInPlace);
  const bool all = kept.all || kept.ids.size() > kMaxWrittenInPlace;
  Json ids = Json::array();
  if (!all) {
    for (const auto& id : kept.ids) ids.push_back(id);
  }
  const Json json = {{"schema", kWrittenInPlaceSchema}, {"all", all}, {"ids", std::move(ids)}};
  return WritePrivate(kWrittenInPlace, Dump(json, 1) + "\n");
}

// --- The pin and the suspension ---

Result<std::optional<std::string>> StateStore::LoadPin() const {
  auto text = ReadOptional(kPinned, kMaxSmallFile);
  if (!text) return Fail(text.error());
  if (!*text || (*text)->size() < kCommitLength) return std::nullopt;
  return std::optional((*text)->substr(0, kCommitLength));
}

Status StateStore::SavePin(const std::optional<std::string>& commit) {
  if (!commit) return RemoveIfThere(kPinned);
  return WritePrivate(kPinned, *commit);
}

Result<std::optional<std::string>> StateStore::LoadSuspension() const {
  return ReadOptional(kSuspended, kMaxSuspension);
}

Status StateStore::SaveSuspension(const std::optional<std::string>& reason) {
  if (!reason) return RemoveIfThere(kSuspended);
  return WritePrivate(kSuspended, *reason);
}

}  // namespace tether
