// tetherd's daemon: a Boost.Asio loop on the main thread owns the signals, the poll timer,
// the control socket and sd_notify (READY, STATUS, WATCHDOG, RELOADING, STOPPING); the
// cycle (poll, fetch, verify, render, plan, apply, check) runs on one worker thread, so a
// long apply never stalls the socket or the watchdog.
//
// Signals: SIGTERM and SIGINT stop the daemon once the cycle in progress has finished
// (applied, or rolled back); SIGHUP reloads agent.toml and keeps the old configuration
// when the new one has errors.
//
// Control socket (newline-delimited JSON, schema in docs/control-socket.md): the peer is
// identified with SO_PEERCRED; root may do everything, members of the group `tether` may
// only read, anyone else is refused. Requests are size- and time-bounded, and each
// connection is served asynchronously, so slow or many clients never block the loop.
// With socket activation (LISTEN_FDS), the socket systemd passes is used.
//
// Optional HTTP listeners on the same loop (common/http_server.hpp, bounded against
// hostile callers): push webhooks (webhook.listen, or the socket systemd passes by the
// name "webhook"), which wake the poll (webhook.hpp), and Prometheus /metrics
// (metrics.listen, or the socket named "metrics"). With source.poll_url, a poll first
// asks the change signal (change_signal.hpp) and talks Git only when it says so.
#pragma once

#include <string>
#include <vector>

#include "agent/config/agent_config.hpp"
#include "agent/cycle/cycle_report.hpp"

namespace tether {

struct DaemonOptions {
  std::string config_path;               // reloaded on SIGHUP
  std::vector<ConfigFile> config_files;  // as read from it: what `cycle.config` was parsed from
  CycleOptions cycle;                    // config, state and cache dirs, --root, the git worker
  // Each cycle runs in a child process started with this (tetherd-cycle --cycle-process)
  // and this environment, so that nothing a cycle loads stays in the daemon.
  std::vector<std::string> cycle_argv{};
  std::vector<std::string> cycle_env{};
  // Each report delivery attempt runs in a child process started with this
  // (tetherd-http --http-fetch) and cycle_env: the daemon does not link OpenSSL.
  std::vector<std::string> http_argv{};
  std::string socket_path;            // the control socket, unless systemd passes one
  std::string read_group = "tether";  // members may read (status); root may do anything
};

// Runs until SIGTERM or SIGINT. Returns the process's exit status: 0 after a clean stop,
// 1 when the daemon could not start (e.g. the socket cannot be bound).
[[nodiscard]] int RunDaemon(DaemonOptions options);

}  // namespace tether
