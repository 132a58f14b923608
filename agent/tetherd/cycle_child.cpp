// The child's side of agent/daemon/cycle_process.hpp: it runs the cycle. Kept apart from
// the daemon's side, which must not link the cycle (and with it libgit2 and OpenSSL).
#include <unistd.h>

#include <cerrno>
#include <cstdlib>

#include <nlohmann/json.hpp>

#include "agent/tetherd/cycle_child.hpp"
#include "agent/toml/diagnostics.hpp"
#include "common/process.hpp"

namespace tether {

namespace {

using Json = nlohmann::json;

constexpr std::size_t kMaxJob = 8 << 20;  // the agent config (a few KiB) and a few options

}  // namespace

CycleOutput RunCapturedCycle(const CycleOptions& options) {
  CycleOutput output;
  char* out_buffer = nullptr;
  std::size_t out_size = 0;
  char* err_buffer = nullptr;
  std::size_t err_size = 0;
  std::FILE* out = open_memstream(&out_buffer, &out_size);
  std::FILE* err = open_memstream(&err_buffer, &err_size);
  if (out == nullptr || err == nullptr) {
    output.exit_code = 1;
    output.summary.error = "cannot capture the cycle's output";
    output.err = "tetherd: " + output.summary.error + "\n";
  } else {
    output.exit_code = RunCycleOnce(options, out, err, &output.summary);
  }
  if (out != nullptr) std::fclose(out);
  if (err != nullptr) std::fclose(err);
  if (out_buffer != nullptr) output.out.assign(out_buffer, out_size);
  if (err_buffer != nullptr) output.err.assign(err_buffer, err_size);
  std::free(out_buffer);
  std::free(err_buffer);
  if (output.out.size() > kMaxCycleOutput) output.out.resize(kMaxCycleOutput);
  if (output.err.size() > kMaxCycleOutput) output.err.resize(kMaxCycleOutput);
  return output;
}

int ServeCycleProcess(std::FILE* in, std::FILE* out, const std::vector<std::string>& worker_argv) {
  std::string text;
  if (!ReadToEnd(fileno(in), text, kMaxJob)) {
    std::fprintf(stderr, "tetherd: --cycle-process: cannot read the job\n");
    return 2;
  }
  const Json job = Json::parse(text, nullptr, false);
  if (!job.is_object() || !job.contains("config") || !job["config"].is_array()) {
    std::fprintf(stderr, "tetherd: --cycle-process: the job is not one\n");
    return 2;
  }
  std::vector<ConfigFile> files;
  for (const auto& file : job["config"]) {
    if (!file.is_object()) continue;
    files.push_back({file.value("name", ""), file.value("text", "")});
  }
  CycleOutput output;
  Diagnostics diagnostics;
  CycleOptions options;
  options.config = ParseAgentConfig(files, ConfigOptions(), diagnostics);
  if (diagnostics.has_errors()) {
    output.exit_code = 2;
    output.err = diagnostics.ToString();
    output.summary.error = "the agent config is invalid";
  } else {
    options.state_dir = job.value("state_dir", "");
    options.cache_dir = job.value("cache_dir", "");
    options.root = job.value("root", "/");
    options.dry_run = job.value("dry_run", false);
    options.retry_quarantined = job.value("retry_quarantined", false);
    options.root_checks = job.value("root_checks", false);
    options.pin = job.value("pin", "");
    options.enforce_applied = job.value("enforce_applied", false);
    options.show_in_sync = job.value("show_in_sync", false);
    options.wait_for_lock = job.value("wait_for_lock", false);
    options.worker_argv = worker_argv;
    output = RunCapturedCycle(options);
  }
  const Json result = {{"exit", output.exit_code},
                       {"out", output.out},
                       {"err", output.err},
                       {"summary", CycleSummaryToJson(output.summary)}};
  const std::string dumped = result.dump(-1, ' ', false, Json::error_handler_t::replace);
  if (!WriteFully(fileno(out), dumped)) return 1;
  return 0;
}

}  // namespace tether
