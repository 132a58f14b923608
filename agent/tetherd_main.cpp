// tetherd: the tether agent daemon.
#include <unistd.h>

#include <csignal>
#include <cstdio>
#include <string>

#include <CLI/CLI.hpp>

#include "agent/cli.hpp"
#include "agent/config/agent_config.hpp"
#include "agent/cycle.hpp"
#include "agent/daemon/daemon.hpp"
#include "agent/git/git_worker.hpp"
#include "common/log.hpp"
#include "version.hpp"

namespace {

constexpr char kDescription[] =
    "tetherd - pull-based GitOps agent for hosts\n\n"
    "tetherd tracks a Git repository (the fleet repo), picks this host's TOML profile from\n"
    "it, and converges the host's files, packages and systemd services to what the profile\n"
    "declares. Manual changes are reverted, changes that fail their health checks are rolled\n"
    "back, and every result is reported. It runs as a systemd service (tetherd.service) and\n"
    "is driven with tetherctl(8) over a local Unix socket.";

constexpr char kFooter[] =
    "FILES\n"
    "  /etc/tether/agent.toml        agent configuration\n"
    "  /etc/tether/agent.d/*.toml    drop-ins, read in lexical order, later wins\n"
    "  /var/lib/tether/              state: inventory, history, backups, report outbox\n"
    "  /var/cache/tether/            Git mirror of the fleet repo\n"
    "  /run/tether/tether.sock       control socket (tetherctl)\n\n"
    "EXIT STATUS\n"
    "  0 success (with --once: in sync or applied), 1 failure (with --once: failed or\n"
    "  rolled back), 2 usage or configuration error.\n\n"
    "QUARANTINE\n"
    "  A commit whose apply failed or was rolled back (a change or a health check failed)\n"
    "  is quarantined: it is not applied again until a newer commit arrives, and the last\n"
    "  applied commit keeps being enforced meanwhile. --retry-quarantined tries it again.\n\n"
    "DAEMON\n"
    "  Without --once, tetherd runs a cycle at start, then one every source.interval\n"
    "  (spread by source.jitter; backing off after failures) and whenever tetherctl sync\n"
    "  asks. SIGHUP reloads agent.toml (an invalid one is logged and the old one kept);\n"
    "  SIGTERM stops once the cycle in progress has finished. Under systemd\n"
    "  (Type=notify) it reports READY, STATUS, RELOADING and STOPPING, and pings the\n"
    "  watchdog when WatchdogSec is set.\n\n"
    "--root\n"
    "  Under --root DIR only files, directories and symlinks are managed, below DIR;\n"
    "  packages, units, services and checks belong to the host and are skipped\n"
    "  (--root-checks runs the checks anyway).\n\n"
    "SEE ALSO\n"
    "  tetherctl(8), README.md";

// This program's own path, for starting the git worker.
std::string SelfPath(const char* argv0) {
  char buffer[4096];
  const ssize_t n = readlink("/proc/self/exe", buffer, sizeof(buffer) - 1);
  if (n <= 0) return argv0;
  return std::string(buffer, static_cast<std::size_t>(n));
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app(kDescription, "tetherd");
  app.footer(kFooter);
  app.set_version_flag("--version", std::string("tetherd ") + TETHER_VERSION);

  std::string config_path = "/etc/tether/agent.toml";
  std::string state_dir = "/var/lib/tether";
  std::string cache_dir = "/var/cache/tether";
  std::string socket = "/run/tether/tether.sock";
  std::string root = "/";
  std::string log_level = "info";
  bool once = false;
  bool dry_run = false;
  bool retry_quarantined = false;
  bool root_checks = false;
  app.add_option("--config", config_path,
                 "Agent configuration file; drop-ins are read from the\n"
                 "agent.d/ directory beside it")
      ->type_name("FILE")
      ->capture_default_str();
  app.add_option("--state-dir", state_dir, "State directory")
      ->type_name("DIR")
      ->capture_default_str();
  app.add_option("--cache-dir", cache_dir, "Cache directory (Git mirror)")
      ->type_name("DIR")
      ->capture_default_str();
  app.add_option("--socket", socket, "Control socket path")
      ->type_name("PATH")
      ->capture_default_str();
  app.add_option("--root", root,
                 "Treat DIR as the root of every managed path (like systemctl --root)")
      ->type_name("DIR")
      ->capture_default_str();
  app.add_option("--log-level", log_level, "trace, debug, info, warning, error, critical or off")
      ->type_name("LEVEL")
      ->capture_default_str();
  app.add_flag("--once", once, "Run one cycle in the foreground and exit");
  app.add_flag("--dry-run", dry_run, "Plan only; change nothing on the host");
  app.add_flag("--root-checks", root_checks,
               "Run [[check]]s under --root too (they are skipped there with the host's\n"
               "packages and services): for checks that look at the root themselves");
  app.add_flag("--retry-quarantined", retry_quarantined,
               "With --once: apply the fleet repo's head even if it is quarantined\n"
               "(it failed or was rolled back before); lifts the quarantine");
  // Internal: the child process that talks to Git servers (agent/git/git_worker.hpp).
  bool git_worker = false;
  std::string worker_ca_file;
  std::string worker_user;
  app.add_flag("--git-worker", git_worker)->group("");
  app.add_option("--git-worker-ca-file", worker_ca_file)->group("");
  app.add_option("--git-worker-user", worker_user)->group("");

  if (auto status = tether::ParseCommandLine(app, argc, argv)) return *status;
  // A git worker that died must be an error on the next request, not our death.
  std::signal(SIGPIPE, SIG_IGN);

  if (git_worker) return tether::RunGitWorker({.ca_file = worker_ca_file, .user = worker_user});

  auto level = tether::ParseLogLevel(log_level);
  if (!level) {
    std::fprintf(stderr, "tetherd: --log-level: %s\n", level.error().message().c_str());
    return 2;
  }
  tether::SetUpLogging({.level = *level, .identifier = "tetherd"});

  auto config = tether::LoadAgentConfig(config_path);
  if (!config) {
    std::fprintf(stderr, "%s\n", config.error().message().c_str());
    return 2;
  }
  tether::CycleOptions options;
  options.config = std::move(*config);
  options.state_dir = state_dir;
  options.cache_dir = cache_dir;
  options.root = root;
  options.dry_run = dry_run;
  options.retry_quarantined = retry_quarantined;
  options.root_checks = root_checks;
  options.worker_argv = {SelfPath(argv[0]), "--git-worker"};
  if (once) return tether::RunCycleOnce(options, stdout, stderr);
  tether::DaemonOptions daemon;
  daemon.config_path = config_path;
  options.show_in_sync = false;  // the log says what changed, not what did not
  daemon.cycle = std::move(options);
  daemon.socket_path = socket;
  return tether::RunDaemon(std::move(daemon));
}
