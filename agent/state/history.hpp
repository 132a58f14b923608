// The history of applies, for tetherctl history and show: every cycle that changed
// something, failed, was refused or rolled back (cycles in sync are not recorded). Kept
// in the state dir by StateStore (LoadHistory, AppendHistory), bounded (the newest
// kHistoryKept entries; each cycle's output cut at kHistoryOutput bytes), written
// atomically. A corrupt file is an error, never silently reset.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace tether {

inline constexpr std::size_t kHistoryKept = 100;
inline constexpr std::size_t kHistoryOutput = 16 << 10;

struct HistoryEntry {
  std::int64_t id = 0;  // increasing, never reused
  std::string commit;
  std::string signer;
  std::string trigger;  // start, poll, drift, manual
  std::string outcome;  // applied, rolled back, failed
  std::size_t changes = 0;
  std::int64_t started = 0;  // unix seconds
  std::int64_t duration_ms = 0;
  std::string output;  // what the cycle printed (its plan, diffs and result)
  std::string errors;
  // The cycle's report (agent/cycle/cycle_report.hpp) as JSON, its diffs cut to about
  // kHistoryOutput; null in entries written before reports were kept.
  nlohmann::json report;
};

}  // namespace tether
