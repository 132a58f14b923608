// The outbox: reports waiting for delivery, kept on disk so that none is lost to a crash,
// a restart or an endpoint that is down. A bounded FIFO in one directory
// (state_dir/outbox):
//
//   00000000000000000042.json   one report per file, named by an increasing sequence number
//   dropped.json                how many reports were dropped to respect the bounds and not
//                               yet reported (absent: none)
//   NAME.corrupt                an entry that could not be read, set aside for a post-mortem
//
// Crash safety: every file is written whole to a temporary, fsynced, renamed into place and
// the directory fsynced (Filesystem::WriteFileAtomic) before Append returns, so an entry is
// either complete or absent; temporaries left by a crash are removed by Open. When reports
// are dropped the counter is written BEFORE the reports are removed, and after a delivery
// the counter is lowered BEFORE the delivered report is removed: a crash in between makes a
// count too high or sends a report twice (the endpoint de-duplicates by report id), never
// loses a report or a drop.
//
// Threading: thread-safe; every method may be called from any thread. Each call does its
// disk I/O under one mutex (no network, ever).
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/error.hpp"
#include "common/filesystem.hpp"

namespace tether {

struct OutboxLimits {
  std::size_t max_reports = 1000;      // entries kept at most
  std::uint64_t max_bytes = 8u << 20;  // total size of the entries at most
};

struct OutboxEntry {
  std::uint64_t sequence = 0;  // increasing in the order of Append
  std::string body;            // the report, a JSON object, as appended
};

class Outbox {
 public:
  // Opens the outbox in directory `dir` (an absolute path), creating it (mode 0700) when
  // missing; its parent must exist. Removes temporaries of interrupted writes; drops the
  // oldest entries (counting them) when the limits are lower than what is there. Problems
  // that do not stop the outbox (an unreadable drop counter, which is set aside and
  // restarted at 0) are appended to `problems`, for the caller to log.
  [[nodiscard]] static Result<std::unique_ptr<Outbox>> Open(const std::string& dir,
                                                            OutboxLimits limits,
                                                            std::vector<Error>& problems);
  Outbox(const Outbox&) = delete;
  Outbox& operator=(const Outbox&) = delete;
  ~Outbox();

  // Appends `report` durably: on success it survives a crash. When the outbox is full the
  // oldest entries are dropped first (and counted in dropped()), but never the entry being
  // delivered (see Front): while one is, the bounds may be exceeded by that one entry.
  // Returns how many entries were dropped. EFBIG when `report` alone is over max_bytes. On
  // failure the report was not appended (entries dropped before the failure stay dropped,
  // and counted).
  [[nodiscard]] Result<std::size_t> Append(std::string_view report);

  // The oldest entry, or nullopt when the outbox is empty. It is marked "in delivery" (it
  // is not dropped to make room) until Remove or Release. Entries that cannot be read or
  // are not a JSON object are set aside (renamed to NAME.corrupt) and skipped: each one is
  // appended to `problems`. Fails only when the directory cannot be used at all.
  // With `after`: the oldest entry whose sequence is greater (the one behind entry `after`).
  [[nodiscard]] Result<std::optional<OutboxEntry>> Front(std::vector<Error>& problems,
                                                         std::uint64_t after = 0);

  // Moves entry `sequence` behind every other (a new sequence; the same content), with one
  // rename: it is never lost nor doubled by a crash. Returns its new sequence.
  [[nodiscard]] Result<std::uint64_t> MoveToBack(std::uint64_t sequence);

  // Ends the delivery of the entry returned by Front without removing it (to retry later).
  void Release();

  // Removes entry `sequence` (delivered, or refused for good), durably. An entry that is
  // already gone (dropped meanwhile) is not an error.
  [[nodiscard]] Status Remove(std::uint64_t sequence);

  // Reports dropped to respect the bounds and not yet reported to the endpoint.
  [[nodiscard]] std::uint64_t dropped() const;
  // Lowers the drop counter by `count` (durably): call after a report that said `count` was
  // delivered; drops counted since stay counted.
  [[nodiscard]] Status AcknowledgeDropped(std::uint64_t count);

  [[nodiscard]] std::size_t size() const;     // entries queued
  [[nodiscard]] std::uint64_t bytes() const;  // their total size
  [[nodiscard]] const std::string& dir() const { return dir_; }
  [[nodiscard]] const OutboxLimits& limits() const { return limits_; }

 private:
  Outbox(std::string dir, OutboxLimits limits, std::unique_ptr<Filesystem> fs);

  // REQUIRES: mutex_ held.
  [[nodiscard]] std::string PathOf(std::uint64_t sequence) const;
  [[nodiscard]] Status WriteDropped(std::uint64_t dropped);
  [[nodiscard]] Status DropOldest(std::size_t incoming_count, std::uint64_t incoming_bytes,
                                  std::size_t& count_dropped);
  void SetAside(std::uint64_t sequence, const Error& why, std::vector<Error>& problems);

  const std::string dir_;
  const OutboxLimits limits_;
  const std::unique_ptr<Filesystem> fs_;  // the host's filesystem, for its no-symlink rules

  mutable std::mutex mutex_;
  std::map<std::uint64_t, std::uint64_t> entries_;  // sequence -> size in bytes
  std::uint64_t bytes_ = 0;
  std::uint64_t next_sequence_ = 1;
  std::uint64_t dropped_ = 0;
  std::optional<std::uint64_t> in_delivery_;
};

}  // namespace tether
