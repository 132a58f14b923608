#include "common/log.hpp"

#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <string>

#include <doctest/doctest.h>

#include "common/process.hpp"

namespace {

std::string ProbePath() {
  const char* path = std::getenv("TETHER_LOG_PROBE");
  REQUIRE_MESSAGE(path != nullptr, "TETHER_LOG_PROBE is set by meson");
  return path;
}

tether::RunResult RunProbe(const std::vector<std::string>& args,
                           std::vector<std::string> env = tether::kCleanEnvironment) {
  tether::RunOptions options;
  options.argv = {ProbePath()};
  options.argv.insert(options.argv.end(), args.begin(), args.end());
  options.env = std::move(env);
  auto result = tether::Run(options);
  REQUIRE(result);
  return *result;
}

}  // namespace

TEST_CASE("Logs go to stderr with level and component, filtered by level") {
  auto info = RunProbe({"info"});
  CHECK(info.ok());
  CHECK(info.err ==
        "info probe: info record\n"
        "warning other: warning from 'other'\n"
        "error probe: error record\n");
  CHECK(info.out == "journal=0\n");

  auto debug = RunProbe({"debug", "stderr"});
  CHECK(debug.err.find("debug probe: debug record\n") == 0);

  auto errors_only = RunProbe({"error"});
  CHECK(errors_only.err == "error probe: error record\n");
}

TEST_CASE("A JOURNAL_STREAM that is not our stderr keeps logs on stderr") {
  auto env = tether::kCleanEnvironment;
  env.push_back("JOURNAL_STREAM=1:2");
  auto result = RunProbe({"info"}, env);
  CHECK(result.out == "journal=0\n");
  CHECK(result.err.find("info probe: info record\n") == 0);
}

TEST_CASE("StderrIsJournal compares JOURNAL_STREAM with stderr's device and inode") {
  struct stat st {};
  REQUIRE(fstat(STDERR_FILENO, &st) == 0);
  const std::string ours = std::to_string(st.st_dev) + ":" + std::to_string(st.st_ino);
  const char* saved = std::getenv("JOURNAL_STREAM");
  const std::string saved_value = saved != nullptr ? saved : "";

  setenv("JOURNAL_STREAM", ours.c_str(), 1);
  CHECK(tether::StderrIsJournal());
  setenv("JOURNAL_STREAM", "0:0", 1);
  CHECK_FALSE(tether::StderrIsJournal());
  setenv("JOURNAL_STREAM", "garbage", 1);
  CHECK_FALSE(tether::StderrIsJournal());
  unsetenv("JOURNAL_STREAM");
  CHECK_FALSE(tether::StderrIsJournal());
  if (saved != nullptr) setenv("JOURNAL_STREAM", saved_value.c_str(), 1);
}

TEST_CASE("ParseLogLevel knows the documented names and rejects others") {
  CHECK(tether::ParseLogLevel("warning").value() == spdlog::level::warn);
  CHECK(tether::ParseLogLevel("off").value() == spdlog::level::off);
  auto bad = tether::ParseLogLevel("loud");
  REQUIRE_FALSE(bad);
  CHECK(bad.error().message() ==
        "unknown log level 'loud' (expected trace, debug, info, warning, error, critical or off)");
}

TEST_CASE("Loggers are shared per component") {
  CHECK(tether::GetLogger("engine") == tether::GetLogger("engine"));
  CHECK(tether::GetLogger("engine") != tether::GetLogger("git"));
  CHECK(tether::GetLogger("git")->name() == "git");
}
