// The child's side of agent/cycle/cycle_process.hpp: it runs the cycle. Kept apart from
// the daemon's side, which must not link the cycle (and with it OpenSSL).
#include <unistd.h>

#include <cerrno>
#include <cstdlib>

#include <nlohmann/json.hpp>

#include "agent/git/git_source.hpp"
#include "agent/protocol/protocol.hpp"
#include "agent/tetherd/cycle_child.hpp"
#include "agent/tetherd/host.hpp"
#include "agent/toml/diagnostics.hpp"
#include "common/process.hpp"
#include "common/sha256.hpp"

namespace tether {

namespace {

using Json = nlohmann::json;

constexpr std::size_t kMaxJob = 8 << 20;  // the agent config (a few KiB) and a few options

// The strings of the job's array `name`; none when it has none.
std::vector<std::string> Strings(const Json& job, const char* name) {
  std::vector<std::string> strings;
  if (auto array = job.find(name); array != job.end() && array->is_array()) {
    for (const auto& item : *array) {
      if (item.is_string()) strings.push_back(item.get<std::string>());
    }
  }
  return strings;
}

}  // namespace

int ServeCycleProcess(std::FILE* in, std::FILE* out, const std::vector<std::string>& worker_argv,
                      const std::vector<std::string>& http_argv) {
  // Started ahead of its job (at a drift event, while more events settle): what every
  // cycle needs is made ready before the job arrives.
  PrepareSha256();
  std::string text;
  if (!ReadToEnd(fileno(in), text, kMaxJob)) {
    std::fprintf(stderr, "tetherd: --cycle-process: cannot read the job\n");
    return 2;
  }
  // No job at all: the daemon readied this process for a repair that did not come, and
  // went on without it. Nothing to say.
  if (text.empty()) return 0;
  const Json job = Json::parse(text, nullptr, false);
  if (!job.is_object() || !job.contains("config") || !job["config"].is_array()) {
    std::fprintf(stderr, "tetherd: --cycle-process: the job is not one\n");
    return 2;
  }
  std::vector<ConfigFile> files;
  for (const auto& file : job["config"]) {
    const protocol::Fields fields(file);
    if (file.is_object()) files.push_back({fields.StringOr("name"), fields.StringOr("text")});
  }
  CycleOutput output;
  Diagnostics diagnostics;
  CycleOptions options;
  options.config = ParseAgentConfig(files, ConfigOptions(), diagnostics);
  if (diagnostics.has_errors()) {
    output.exit_code = 2;
    std::string text = diagnostics.ToString();
    while (!text.empty() && text.back() == '\n') text.pop_back();
    output.report.problems.push_back(text);
    output.report.error = "the agent config is invalid";
  } else {
    const protocol::Fields fields(job);
    options.state_dir = fields.StringOr("state_dir");
    options.cache_dir = fields.StringOr("cache_dir");
    options.root = fields.StringOr("root", "/");
    options.dry_run = fields.BoolOr("dry_run", false);
    options.retry_quarantined = fields.BoolOr("retry_quarantined", false);
    options.root_checks = fields.BoolOr("root_checks", false);
    options.pin = fields.StringOr("pin");
    options.enforce_applied = fields.BoolOr("enforce_applied", false);
    options.drifted = Strings(job, "drifted");
    options.written_in_place = Strings(job, "written_in_place");
    options.show_in_sync = fields.BoolOr("show_in_sync", false);
    options.wait_for_lock = fields.BoolOr("wait_for_lock", false);
    options.worker_argv = worker_argv;
    options.http_argv = http_argv;
    output.report = RunCycleOnHost(options);
    output.exit_code = ExitCode(output.report);
    TrimReport(output.report, kMaxCycleOutput);
  }
  // `out`, `err` and `summary` are what a tetherd of the previous release reads: during a
  // package upgrade, the daemon still running starts the new tetherd-cycle.
  Json result = {{"exit", output.exit_code},
                 {"report", CycleReportToJson(output.report)},
                 {"out", FormatCourse(output.report)},
                 {"err", FormatProblems(output.report)},
                 {"summary", CycleSummaryToJson(Summarize(output.report))}};
  // A drift repair's entries, for the daemon's watches: [id, kind, path, fingerprint].
  if (output.report.recorded) {
    Json& recorded = result["recorded"] = Json::array();
    for (const auto& entry : *output.report.recorded) {
      recorded.push_back(Json::array({entry.id, entry.kind, entry.path, entry.fingerprint}));
    }
  }
  const std::string dumped = result.dump(-1, ' ', false, Json::error_handler_t::replace);
  if (!WriteFully(fileno(out), dumped)) return 1;
  return 0;
}

}  // namespace tether
