// tetherd-daemon: the tether agent daemon. `tetherd` (tetherd-cycle) becomes this program
// unless asked for a cycle, the git worker or an HTTP request.
//
// This binary is the daemon only, and stays small: it does not link libgit2 or OpenSSL.
// What runs a cycle (tetherd --once, each of the daemon's cycles) is tetherd-cycle, the
// git worker is tetherd-git and the daemon's HTTP requests are tetherd-http's, found beside
// this program or in tether's libexec directory. Run by hand with one of those modes, it
// hands over to them as tetherd does.
#include <pwd.h>
#include <unistd.h>

#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>

#include "agent/config/agent_config.hpp"
#include "agent/daemon/daemon.hpp"
#include "agent/tetherd/cli.hpp"
#include "agent/tetherd/tetherd_flags.hpp"
#include "agent/toml/diagnostics.hpp"
#include "common/log.hpp"
#include "common/privileges.hpp"
#include "common/process.hpp"
#include "version.hpp"

int main(int argc, char** argv) {
  CLI::App app;
  tether::TetherdFlags flags;
  tether::AddTetherdFlags(app, flags);
  if (auto status = tether::ParseCommandLine(app, argc, argv)) return *status;
  const std::string self = tether::SelfPath(argv[0]);
  const std::string cycle_program = tether::TetherProgram(self, "tetherd-cycle");
  if (flags.once || flags.git_worker || flags.cycle_process || flags.http_fetch) {
    const std::string program = flags.git_worker   ? tether::TetherProgram(self, "tetherd-git")
                                : flags.http_fetch ? tether::TetherProgram(self, "tetherd-http")
                                                   : cycle_program;
    return tether::ExecTetherProgram(program, argv);
  }
  // A child that died must be an error on the next request, not our death.
  std::signal(SIGPIPE, SIG_IGN);

  auto level = tether::ParseLogLevel(flags.log_level);
  if (!level) {
    std::fprintf(stderr, "tetherd: --log-level: %s\n", level.error().message().c_str());
    return 2;
  }
  tether::SetUpLogging({.level = *level, .identifier = "tetherd"});

  auto files = tether::ReadAgentConfigFiles(flags.config_path);
  if (!files) {
    std::fprintf(stderr, "%s\n", files.error().message().c_str());
    return 2;
  }
  tether::Diagnostics diagnostics;
  tether::AgentConfig config = tether::ParseAgentConfig(*files, {}, diagnostics);
  if (diagnostics.has_errors()) {
    std::fprintf(stderr, "%s", diagnostics.ToString().c_str());
    return 2;
  }
  tether::DaemonOptions daemon;
  daemon.config_path = flags.config_path;
  daemon.config_files = std::move(*files);
  daemon.cycle.config = std::move(config);
  // Absolute: state files are written by absolute path only.
  daemon.cycle.state_dir = std::filesystem::absolute(flags.state_dir).lexically_normal();
  daemon.cycle.cache_dir = std::filesystem::absolute(flags.cache_dir).lexically_normal();
  daemon.cycle.root = flags.root;
  daemon.cycle.dry_run = flags.dry_run;
  daemon.cycle.root_checks = flags.root_checks;
  daemon.cycle.show_in_sync = false;  // the log says what changed, not what did not
  daemon.cycle.wait_for_lock = true;  // a cycle that outlived our crash finishes first
  daemon.cycle_argv = {cycle_program, "--cycle-process", "--log-level", flags.log_level};
  daemon.http_argv = {tether::TetherProgram(self, "tetherd-http"), "--http-fetch"};
  // Report deliveries and https:// change-signal checks parse what a server sends: as
  // root, they run as the git worker's user, once they have read their certificates.
  if (geteuid() == 0 && getpwnam(tether::kUnprivilegedUser) != nullptr) {
    daemon.http_argv.insert(daemon.http_argv.end(),
                            {"--http-fetch-user", tether::kUnprivilegedUser});
  }
  daemon.cycle_env = tether::kCleanEnvironment;
  // The cycle's log goes where ours goes: to the journal under systemd.
  if (const char* journal = std::getenv("JOURNAL_STREAM")) {
    daemon.cycle_env.push_back(std::string("JOURNAL_STREAM=") + journal);
  }
  daemon.socket_path = flags.socket;
  return tether::RunDaemon(std::move(daemon));
}
