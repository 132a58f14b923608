#include "agent/report/outbox.hpp"
#include "common/json_fields.hpp"

#include <cstdio>
#include <filesystem>

#include <nlohmann/json.hpp>

namespace tether {

namespace {

using Json = nlohmann::json;

constexpr std::size_t kSequenceDigits = 20;
constexpr char kEntrySuffix[] = ".json";
constexpr char kCorruptSuffix[] = ".corrupt";
constexpr char kDroppedName[] = "dropped.json";
constexpr char kDroppedSchema[] = "tether.outbox-dropped/v1";

std::string EntryName(std::uint64_t sequence) {
  char name[kSequenceDigits + 1];
  std::snprintf(name, sizeof(name), "%020llu", static_cast<unsigned long long>(sequence));
  return std::string(name) + kEntrySuffix;
}

// The sequence number of an entry name ("00000000000000000042.json" -> 42), of a set-aside
// entry when `suffix` is ".json.corrupt"; nothing for any other name.
std::optional<std::uint64_t> SequenceOf(std::string_view name, std::string_view suffix) {
  if (name.size() != kSequenceDigits + suffix.size() || name.substr(kSequenceDigits) != suffix) {
    return std::nullopt;
  }
  std::uint64_t sequence = 0;
  for (const char c : name.substr(0, kSequenceDigits)) {
    if (c < '0' || c > '9') return std::nullopt;
    const auto digit = static_cast<std::uint64_t>(c - '0');
    if (sequence > (UINT64_MAX - digit) / 10) return std::nullopt;
    sequence = sequence * 10 + digit;
  }
  if (sequence == 0) return std::nullopt;
  return sequence;
}

// True when `name` is a temporary file that an interrupted WriteFileAtomic of one of the
// outbox's own files left behind.
bool IsLeftoverTemporary(std::string_view name) {
  if (name.empty() || name.front() != '.') return false;
  const auto marker = name.find(".tether-", 1);
  if (marker == std::string_view::npos) return false;
  const std::string_view target = name.substr(1, marker - 1);
  return (SequenceOf(target, kEntrySuffix) || target == kDroppedName) &&
         IsTemporaryName(name, target);
}

WriteOptions PrivateFile() {
  WriteOptions options;
  options.mode = 0600;
  options.sync = true;
  return options;
}

Result<std::string> AbsoluteDirectory(const std::string& dir) {
  std::error_code code;
  const auto absolute = std::filesystem::absolute(dir, code);
  if (code) return Fail(Error(code, "outbox directory '" + dir + "': " + code.message()));
  return NormalizePath(absolute.string());
}

}  // namespace

Outbox::Outbox(std::string dir, OutboxLimits limits, std::unique_ptr<Filesystem> fs)
    : dir_(std::move(dir)), limits_(limits), fs_(std::move(fs)) {}

Outbox::~Outbox() = default;

Result<std::unique_ptr<Outbox>> Outbox::Open(const std::string& dir, OutboxLimits limits,
                                             std::vector<Error>& problems) {
  auto path = AbsoluteDirectory(dir);
  if (!path) return Fail(path.error());
  auto host = RootedFilesystem::Open("/");
  if (!host) return Fail(host.error());
  std::unique_ptr<Outbox> outbox(new Outbox(*path, limits, std::move(*host)));
  Filesystem& fs = *outbox->fs_;

  if (auto created = fs.CreateDirectory(*path, 0700); created) {
    const auto slash = path->rfind('/');
    if (auto synced = fs.SyncDirectory(slash == 0 ? "/" : path->substr(0, slash)); !synced) {
      return Fail(synced.error().WithContext("create the outbox"));
    }
  } else if (!created.error().Is(std::errc::file_exists)) {
    return Fail(created.error().WithContext("create the outbox"));
  }
  auto names = fs.ListDirectory(*path);
  if (!names) return Fail(names.error().WithContext("open the outbox"));

  std::lock_guard lock(outbox->mutex_);
  for (const auto& name : *names) {
    const std::string file = *path + "/" + name;
    if (auto sequence = SequenceOf(name, kEntrySuffix)) {
      auto stat = fs.Stat(file);
      // An entry that cannot be examined is queued with size 0; Front sets it aside.
      const std::uint64_t size = stat ? stat->size : 0;
      outbox->entries_[*sequence] = size;
      outbox->bytes_ += size;
      outbox->next_sequence_ = std::max(outbox->next_sequence_, *sequence + 1);
    } else if (auto aside = SequenceOf(name, std::string(kEntrySuffix) + kCorruptSuffix)) {
      outbox->next_sequence_ = std::max(outbox->next_sequence_, *aside + 1);
    } else if (IsLeftoverTemporary(name)) {
      if (auto removed = fs.Remove(file); !removed) {
        problems.push_back(removed.error().WithContext("remove an interrupted outbox write"));
      }
    }
  }

  const std::string counter = *path + "/" + kDroppedName;
  if (auto text = fs.ReadFile(counter, 4096)) {
    const Json json = Json::parse(*text, nullptr, false);
    if (!json.is_discarded() && json.is_object() &&
        JsonFields(json).StringOr("schema") == kDroppedSchema && json.contains("dropped") &&
        json["dropped"].is_number_unsigned()) {
      outbox->dropped_ = json["dropped"].get<std::uint64_t>();
    } else {
      problems.emplace_back(std::errc::illegal_byte_sequence,
                            "the outbox's drop counter '" + counter +
                                "' is corrupt; set aside as '" + kDroppedName + kCorruptSuffix +
                                "', counting drops from 0");
      if (auto moved = fs.Rename(counter, counter + kCorruptSuffix); !moved) {
        problems.push_back(moved.error().WithContext("set aside the drop counter"));
      }
    }
  } else if (!text.error().Is(std::errc::no_such_file_or_directory)) {
    problems.push_back(text.error().WithContext("read the outbox's drop counter"));
  }

  std::size_t dropped = 0;
  if (auto made_room = outbox->DropOldest(0, 0, dropped); !made_room) {
    return Fail(made_room.error().WithContext("apply the outbox limits"));
  }
  return outbox;
}

std::string Outbox::PathOf(std::uint64_t sequence) const {
  return dir_ + "/" + EntryName(sequence);
}

Status Outbox::WriteDropped(std::uint64_t dropped) {
  const std::string path = dir_ + "/" + kDroppedName;
  if (dropped == 0) {
    auto removed = fs_->Remove(path);
    if (!removed && !removed.error().Is(std::errc::no_such_file_or_directory)) return removed;
    return fs_->SyncDirectory(dir_);
  }
  const Json json = {{"schema", kDroppedSchema}, {"dropped", dropped}};
  return fs_->WriteFileAtomic(path, json.dump() + "\n", PrivateFile());
}

Status Outbox::DropOldest(std::size_t incoming_count, std::uint64_t incoming_bytes,
                          std::size_t& count_dropped) {
  std::vector<std::uint64_t> victims;
  std::size_t count = entries_.size();
  std::uint64_t bytes = bytes_;
  for (const auto& [sequence, size] : entries_) {
    if (count + incoming_count <= limits_.max_reports &&
        bytes + incoming_bytes <= limits_.max_bytes) {
      break;
    }
    if (in_delivery_ == sequence) continue;
    victims.push_back(sequence);
    --count;
    bytes -= size;
  }
  count_dropped = victims.size();
  if (victims.empty()) return {};
  // Counted first: a crash before the removals over-counts, never under-counts.
  if (auto written = WriteDropped(dropped_ + victims.size()); !written) {
    return Fail(written.error().WithContext("count dropped reports"));
  }
  dropped_ += victims.size();
  for (const auto sequence : victims) {
    bytes_ -= entries_[sequence];
    entries_.erase(sequence);
    auto removed = fs_->Remove(PathOf(sequence));
    if (!removed && !removed.error().Is(std::errc::no_such_file_or_directory)) {
      return Fail(removed.error().WithContext("drop the oldest report"));
    }
  }
  return fs_->SyncDirectory(dir_);
}

Result<std::size_t> Outbox::Append(std::string_view report) {
  std::lock_guard lock(mutex_);
  if (report.size() > limits_.max_bytes) {
    return Fail(std::errc::file_too_large, "a report of " + std::to_string(report.size()) +
                                               " bytes is over the outbox's " +
                                               std::to_string(limits_.max_bytes) + " bytes");
  }
  std::size_t dropped = 0;
  if (auto made_room = DropOldest(1, report.size(), dropped); !made_room) {
    return Fail(made_room.error().WithContext("queue a report"));
  }
  const std::uint64_t sequence = next_sequence_;
  if (auto written = fs_->WriteFileAtomic(PathOf(sequence), report, PrivateFile()); !written) {
    return Fail(written.error().WithContext("queue a report"));
  }
  ++next_sequence_;
  entries_[sequence] = report.size();
  bytes_ += report.size();
  return dropped;
}

void Outbox::SetAside(std::uint64_t sequence, const Error& why, std::vector<Error>& problems) {
  const std::string path = PathOf(sequence);
  problems.push_back(why.WithContext("outbox entry '" + path + "' set aside as '" +
                                     EntryName(sequence) + kCorruptSuffix + "'"));
  if (auto moved = fs_->Rename(path, path + kCorruptSuffix); !moved) {
    // Skipped for now all the same; the next Open finds it again.
    problems.push_back(moved.error().WithContext("set aside outbox entry '" + path + "'"));
  }
  bytes_ -= entries_[sequence];
  entries_.erase(sequence);
}

Result<std::optional<OutboxEntry>> Outbox::Front(std::vector<Error>& problems,
                                                 std::uint64_t after) {
  std::lock_guard lock(mutex_);
  while (entries_.upper_bound(after) != entries_.end()) {
    const auto [sequence, size] = *entries_.upper_bound(after);
    auto text = fs_->ReadFile(PathOf(sequence), limits_.max_bytes);
    if (!text) {
      if (text.error().Is(std::errc::no_such_file_or_directory)) {
        // Removed behind our back (by hand): nothing to deliver, nothing to set aside.
        problems.push_back(text.error().WithContext("outbox entry vanished"));
        bytes_ -= size;
        entries_.erase(sequence);
        continue;
      }
      SetAside(sequence, text.error(), problems);
      continue;
    }
    const Json json = Json::parse(*text, nullptr, false);
    if (json.is_discarded() || !json.is_object()) {
      SetAside(sequence, Error(std::errc::illegal_byte_sequence, "not a JSON object"), problems);
      continue;
    }
    bytes_ += text->size() - size;  // the size read is the one that counts
    entries_[sequence] = text->size();
    in_delivery_ = sequence;
    return OutboxEntry{sequence, std::move(*text)};
  }
  return std::nullopt;
}

Result<std::uint64_t> Outbox::MoveToBack(std::uint64_t sequence) {
  std::lock_guard lock(mutex_);
  const auto found = entries_.find(sequence);
  if (found == entries_.end()) {
    return Fail(std::errc::no_such_file_or_directory,
                "outbox entry " + std::to_string(sequence) + " is gone");
  }
  const std::uint64_t moved_to = next_sequence_;
  if (auto moved = fs_->Rename(PathOf(sequence), PathOf(moved_to)); !moved) {
    return Fail(moved.error().WithContext("move outbox entry " + std::to_string(sequence)));
  }
  ++next_sequence_;
  entries_[moved_to] = found->second;
  entries_.erase(found);
  if (in_delivery_ == sequence) in_delivery_.reset();
  if (auto synced = fs_->SyncDirectory(dir_); !synced) return Fail(synced.error());
  return moved_to;
}

void Outbox::Release() {
  std::lock_guard lock(mutex_);
  in_delivery_.reset();
}

Status Outbox::Remove(std::uint64_t sequence) {
  std::lock_guard lock(mutex_);
  if (in_delivery_ == sequence) in_delivery_.reset();
  const auto found = entries_.find(sequence);
  if (found == entries_.end()) return {};
  auto removed = fs_->Remove(PathOf(sequence));
  if (!removed && !removed.error().Is(std::errc::no_such_file_or_directory)) {
    return Fail(removed.error().WithContext("remove a delivered report"));
  }
  bytes_ -= found->second;
  entries_.erase(found);
  return fs_->SyncDirectory(dir_);
}

std::uint64_t Outbox::dropped() const {
  std::lock_guard lock(mutex_);
  return dropped_;
}

Status Outbox::AcknowledgeDropped(std::uint64_t count) {
  std::lock_guard lock(mutex_);
  if (count == 0) return {};
  const std::uint64_t left = dropped_ - std::min(count, dropped_);
  if (auto written = WriteDropped(left); !written) {
    return Fail(written.error().WithContext("reset the count of dropped reports"));
  }
  dropped_ = left;
  return {};
}

std::size_t Outbox::size() const {
  std::lock_guard lock(mutex_);
  return entries_.size();
}

std::uint64_t Outbox::bytes() const {
  std::lock_guard lock(mutex_);
  return bytes_;
}

}  // namespace tether
