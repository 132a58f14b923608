// tetherd's command line, shared by tetherd (the daemon) and tetherd-cycle (what runs a
// cycle: tetherd --once, the daemon's cycle processes, the git worker), so that both
// accept the same flags and --help describes them once.
#pragma once

#include <string>
#include <vector>

#include <CLI/CLI.hpp>

namespace tether {

struct TetherdFlags {
  std::string config_path = "/etc/tether/agent.toml";
  std::string state_dir = "/var/lib/tether";
  std::string cache_dir = "/var/cache/tether";
  std::string socket = "/run/tether/tether.sock";
  std::string root = "/";
  std::string log_level = "info";
  bool once = false;
  bool dry_run = false;
  bool show_in_sync = false;
  bool retry_quarantined = false;
  bool root_checks = false;
  // Internal: the child process that talks to Git servers (agent/git/git_worker.hpp).
  bool git_worker = false;
  std::string worker_ca_file{};
  std::string worker_user{};
  std::string http_fetch_user{};
  // Internal: a cycle of the daemon's (agent/daemon/cycle_process.hpp).
  bool cycle_process = false;
  // Internal: one HTTP request of the daemon's reports (agent/report/send_process.hpp).
  bool http_fetch = false;
};

// Describes tetherd and adds every flag to `app`, bound to `flags`.
void AddTetherdFlags(CLI::App& app, TetherdFlags& flags);

// This program's own path (/proc/self/exe), or `argv0` when it cannot be read.
[[nodiscard]] std::string SelfPath(const char* argv0);

// tether's program `name` (tetherd-cycle, tetherd-git): beside `self` (a build tree, a
// test), or where it is installed.
[[nodiscard]] std::string TetherProgram(const std::string& self, const char* name);

// Becomes `program` with the same command line, in this process (exec): systemd's MainPID
// and Type=notify stay with it. Returns only if it cannot: the error is on stderr, and the
// status to exit with is 127, not 2 (a configuration error, after which the unit is not
// restarted): a program missing for a moment during an upgrade is retried.
[[nodiscard]] int ExecTetherProgram(const std::string& program, char** argv);

}  // namespace tether
