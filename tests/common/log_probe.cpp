// Logs one record per level from two components, as configured by its arguments:
//   log_probe LEVEL [auto|stderr|journal]
// Used by log_test (stderr) and by the system suite (journald inside the container).
#include <cstdio>
#include <string_view>

#include "common/log.hpp"

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: log_probe LEVEL [auto|stderr|journal]\n");
    return 2;
  }
  auto level = tether::ParseLogLevel(argv[1]);
  if (!level) {
    std::fprintf(stderr, "%s\n", level.error().message().c_str());
    return 2;
  }
  tether::LogOptions options;
  options.level = *level;
  options.identifier = "tether-log-probe";
  const std::string_view target = argc > 2 ? argv[2] : "auto";
  if (target == "stderr") options.target = tether::LogTarget::kStderr;
  if (target == "journal") options.target = tether::LogTarget::kJournal;
  tether::SetUpLogging(options);

  auto probe = tether::GetLogger("probe");
  probe->debug("debug record");
  probe->info("info record");
  tether::GetLogger("other")->warn("warning from '{}'", "other");
  probe->error("error record");
  std::printf("journal=%d\n", tether::StderrIsJournal() ? 1 : 0);
  return 0;
}
