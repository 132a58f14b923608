#include "agent/cycle/cycle_process.hpp"

#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <utility>

#include <nlohmann/json.hpp>

#include "agent/protocol/protocol.hpp"
#include "common/process.hpp"
#include "common/unique_fd.hpp"

namespace tether {

namespace {

using Json = nlohmann::json;

// The result: the report (its diffs bounded by the child, kMaxCycleOutput).
constexpr std::size_t kMaxResult = 64 << 20;

CycleOutput Failed(std::string message) {
  CycleOutput output;
  output.exit_code = 1;
  output.report.error = message;
  output.report.problems.push_back("tetherd: " + message);
  return output;
}

Json JobJson(const std::vector<ConfigFile>& config_files, const CycleOptions& options) {
  Json files = Json::array();
  for (const auto& file : config_files) files.push_back({{"name", file.name}, {"text", file.text}});
  return {{"config", std::move(files)},
          {"state_dir", options.state_dir},
          {"cache_dir", options.cache_dir},
          {"root", options.root},
          {"dry_run", options.dry_run},
          {"retry_quarantined", options.retry_quarantined},
          {"root_checks", options.root_checks},
          {"pin", options.pin},
          {"enforce_applied", options.enforce_applied},
          {"drifted", options.drifted},
          {"written_in_place", options.written_in_place},
          {"show_in_sync", options.show_in_sync},
          {"wait_for_lock", options.wait_for_lock}};
}

// A drift repair's entries ([id, kind, path, fingerprint] each); none when there are
// none or one is not as written.
std::optional<std::vector<RecordedEntry>> RecordedFromJson(const Json& result) {
  const auto recorded = result.find("recorded");
  if (recorded == result.end() || !recorded->is_array()) return std::nullopt;
  std::vector<RecordedEntry> entries;
  entries.reserve(recorded->size());
  for (const auto& entry : *recorded) {
    if (!entry.is_array() || entry.size() != 4 ||
        !std::all_of(entry.begin(), entry.end(), [](const Json& s) { return s.is_string(); })) {
      return std::nullopt;
    }
    entries.push_back({entry[0].get<std::string>(), entry[1].get<std::string>(),
                       entry[2].get<std::string>(), entry[3].get<std::string>()});
  }
  return entries;
}

}  // namespace

Result<StartedCycle> StartCycleProcess(const std::vector<std::string>& argv,
                                       const std::vector<std::string>& env) {
  auto spawned = SpawnPiped(argv, env);
  if (!spawned) return Fail(spawned.error().WithContext("start the cycle's process"));
  StartedCycle started;
  started.child = std::move(spawned->child);
  started.to_child.Reset(spawned->to_child);
  started.from_child.Reset(spawned->from_child);
  return started;
}

CycleOutput RunCycleProcess(const std::vector<std::string>& argv,
                            const std::vector<std::string>& env,
                            const std::vector<ConfigFile>& config_files,
                            const CycleOptions& options) {
  auto started = StartCycleProcess(argv, env);
  if (!started) return Failed(started.error().message());
  return RunCycleProcess(std::move(*started), config_files, options);
}

CycleOutput RunCycleProcess(StartedCycle started, const std::vector<ConfigFile>& config_files,
                            const CycleOptions& options) {
  // The child reads the whole job before it writes anything: no deadlock.
  const bool sent = WriteFully(started.to_child.get(), JobJson(config_files, options).dump());
  started.to_child.Reset();
  std::string text;
  const bool read_all = ReadToEnd(started.from_child.get(), text, kMaxResult);
  started.from_child.Reset();
  // A cycle may take long (a package transaction, a health timeout): wait for it to end.
  Result<int> status = Fail(std::errc::timed_out, "");
  while (!(status = started.child.Wait(std::chrono::hours(1))) &&
         status.error().Is(std::errc::timed_out)) {
  }
  std::string ended;
  if (!status) {
    ended = status.error().message();
  } else if (WIFSIGNALED(*status)) {
    ended = "killed by signal " + std::to_string(WTERMSIG(*status)) + " (" +
            strsignal(WTERMSIG(*status)) + ")";
  } else if (WIFEXITED(*status) && WEXITSTATUS(*status) != 0) {
    ended = "exited with status " + std::to_string(WEXITSTATUS(*status));
  }
  if (!sent || !read_all || !ended.empty()) {
    return Failed("the cycle's process " + (ended.empty() ? std::string("failed") : ended) +
                  (sent ? "" : "; it did not take its job") +
                  (read_all ? "" : "; its result was unreadable"));
  }
  const Json result = Json::parse(text, nullptr, false);
  if (!result.is_object()) return Failed("the cycle's process said nothing readable");
  CycleOutput output;
  const protocol::Fields fields(result);
  output.exit_code = static_cast<int>(fields.IntOr("exit", 1));
  if (auto report = result.find("report"); report != result.end()) {
    output.report = CycleReportFromJson(*report);
  }
  output.report.recorded = RecordedFromJson(result);
  return output;
}

}  // namespace tether
