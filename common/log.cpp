#include "common/log.hpp"

#include <sys/stat.h>
#include <syslog.h>

#include <cstdio>
#include <cstdlib>
#include <mutex>

#include <spdlog/sinks/base_sink.h>
#include <spdlog/sinks/stdout_sinks.h>

#include "common/libsystemd.hpp"

namespace tether {

namespace {

// Sends each record to journald with the component as a field of its own.
class JournalSink final : public spdlog::sinks::base_sink<std::mutex> {
 public:
  explicit JournalSink(std::string identifier) : identifier_(std::move(identifier)) {}

 protected:
  void sink_it_(const spdlog::details::log_msg& msg) override {
    const auto& payload = msg.payload;
    // Loaded by the first record, not at the start: most cycle processes log nothing.
    const Libsystemd* systemd = LoadLibsystemd();
    if (systemd == nullptr) {  // stderr goes to the journal too, without the fields
      std::fprintf(stderr, "%.*s\n", static_cast<int>(payload.size()), payload.data());
      return;
    }
    systemd->sd_journal_send(
        "MESSAGE=%.*s", static_cast<int>(payload.size()), payload.data(), "PRIORITY=%d",
        Priority(msg.level), "SYSLOG_IDENTIFIER=%s", identifier_.c_str(), "TETHER_COMPONENT=%.*s",
        static_cast<int>(msg.logger_name.size()), msg.logger_name.data(), nullptr);
  }
  void flush_() override {}

 private:
  static int Priority(spdlog::level::level_enum level) {
    switch (level) {
      case spdlog::level::trace:
      case spdlog::level::debug:
        return LOG_DEBUG;
      case spdlog::level::info:
        return LOG_INFO;
      case spdlog::level::warn:
        return LOG_WARNING;
      case spdlog::level::err:
        return LOG_ERR;
      case spdlog::level::critical:
        return LOG_CRIT;
      default:
        return LOG_INFO;
    }
  }

  std::string identifier_;
};

struct LogState {
  std::mutex mutex;
  spdlog::sink_ptr sink;
  spdlog::level::level_enum level = spdlog::level::info;
};

LogState& State() {
  static LogState* state = new LogState();  // never destroyed: loggers may log at exit
  return *state;
}

spdlog::sink_ptr MakeStderrSink() {
  auto sink = std::make_shared<spdlog::sinks::stderr_sink_mt>();
  sink->set_pattern("%l %n: %v");
  return sink;
}

}  // namespace

bool StderrIsJournal() {
  const char* value = std::getenv("JOURNAL_STREAM");
  if (value == nullptr) return false;
  unsigned long long device = 0;
  unsigned long long inode = 0;
  if (std::sscanf(value, "%llu:%llu", &device, &inode) != 2) return false;
  struct stat st {};
  if (fstat(STDERR_FILENO, &st) != 0) return false;
  return st.st_dev == device && st.st_ino == inode;
}

void SetUpLogging(const LogOptions& options) {
  LogState& state = State();
  std::lock_guard lock(state.mutex);
  const bool journal = options.target == LogTarget::kJournal ||
                       (options.target == LogTarget::kAuto && StderrIsJournal());
  state.sink = journal ? spdlog::sink_ptr(std::make_shared<JournalSink>(options.identifier))
                       : MakeStderrSink();
  state.level = options.level;
  spdlog::apply_all([&](const std::shared_ptr<spdlog::logger>& logger) {
    logger->sinks().assign(1, state.sink);
    logger->set_level(state.level);
  });
}

std::shared_ptr<spdlog::logger> GetLogger(std::string_view component) {
  LogState& state = State();
  std::lock_guard lock(state.mutex);
  const std::string name(component);
  if (auto existing = spdlog::get(name)) return existing;
  if (!state.sink) state.sink = MakeStderrSink();
  auto logger = std::make_shared<spdlog::logger>(name, state.sink);
  logger->set_level(state.level);
  logger->flush_on(spdlog::level::trace);
  spdlog::register_logger(logger);
  return logger;
}

Result<spdlog::level::level_enum> ParseLogLevel(std::string_view name) {
  static constexpr std::pair<std::string_view, spdlog::level::level_enum> kLevels[] = {
      {"trace", spdlog::level::trace}, {"debug", spdlog::level::debug},
      {"info", spdlog::level::info},   {"warning", spdlog::level::warn},
      {"error", spdlog::level::err},   {"critical", spdlog::level::critical},
      {"off", spdlog::level::off},
  };
  for (const auto& [level_name, level] : kLevels) {
    if (name == level_name) return level;
  }
  return Fail(std::errc::invalid_argument,
              "unknown log level '" + std::string(name) +
                  "' (expected trace, debug, info, warning, error, critical or off)");
}

}  // namespace tether
