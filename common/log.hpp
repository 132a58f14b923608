// Logging set-up: spdlog with one named logger per component ("git", "engine", ...).
//
// Under systemd (stderr connected to the journal, as JOURNAL_STREAM says) records go to
// journald with structured fields: PRIORITY, SYSLOG_IDENTIFIER, TETHER_COMPONENT.
// Otherwise they go to stderr as "LEVEL component: message".
//
// Library code logs at debug or below; the code that decides what to do about an error
// logs it, once. Quote user-controlled strings; never log secrets.
#pragma once

#include <memory>
#include <string>
#include <string_view>

#include <spdlog/spdlog.h>

#include "common/error.hpp"

namespace tether {

enum class LogTarget { kAuto, kStderr, kJournal };

struct LogOptions {
  spdlog::level::level_enum level = spdlog::level::info;
  LogTarget target = LogTarget::kAuto;  // kAuto: the journal when StderrIsJournal()
  std::string identifier = "tether";    // SYSLOG_IDENTIFIER in the journal
};

// (Re)configures every logger, existing and future. Call from main, before threads start.
void SetUpLogging(const LogOptions& options);

// The logger of `component`, created with the configured sinks on first use. Thread-safe.
[[nodiscard]] std::shared_ptr<spdlog::logger> GetLogger(std::string_view component);

// True when stderr is the journal stream systemd connected (JOURNAL_STREAM=dev:inode
// matches stderr), so logs should go to journald with structured fields.
[[nodiscard]] bool StderrIsJournal();

// "trace", "debug", "info", "warning", "error", "critical", "off".
[[nodiscard]] Result<spdlog::level::level_enum> ParseLogLevel(std::string_view name);

}  // namespace tether
