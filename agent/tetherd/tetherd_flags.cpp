#include "agent/tetherd/tetherd_flags.hpp"

#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>

#include "version.hpp"

namespace tether {

namespace {

constexpr char kDescription[] =
    "tetherd - pull-based GitOps agent for hosts\n\n"
    "tetherd tracks a Git repository (the fleet repo), picks this host's TOML profile from\n"
    "it, and converges the host's files, packages and systemd services to what the profile\n"
    "declares. Manual changes are reverted, changes that fail their health checks are rolled\n"
    "back, and every result is reported. It runs as a systemd service (tetherd.service) and\n"
    "is driven with tetherctl(1) over a local Unix socket.";

constexpr char kFooter[] =
    "FILES\n"
    "  /etc/tether/agent.toml        agent configuration\n"
    "  /etc/tether/agent.d/*.toml    drop-ins, read in lexical order, later wins\n"
    "  /var/lib/tether/              state: inventory, history, backups, report outbox\n"
    "  /var/cache/tether/            Git mirror of the fleet repo\n"
    "  /run/tether/tether.sock       control socket (tetherctl)\n\n"
    "EXIT STATUS\n"
    "  0 success (with --once: in sync or applied), 1 failure (with --once: failed,\n"
    "  refused or rolled back), 2 usage or configuration error.\n\n"
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
    "  watchdog when WatchdogSec is set. With report.url set, it reports every apply,\n"
    "  failure, rollback, drift and refused commit, and a heartbeat, to that endpoint;\n"
    "  queued reports wait in the state directory, across restarts.\n\n"
    "PROGRAMS\n"
    "  tetherd is tetherd-cycle, in " TETHER_LIBEXECDIR
    ": --once runs in it.\n"
    "  For anything else it becomes (exec) the program for what it is asked, found beside\n"
    "  it or there: tetherd-daemon (the daemon), tetherd-git (the Git worker) or\n"
    "  tetherd-http (report deliveries, https:// change signals, HTTP checks). None of\n"
    "  them is meant to be run by hand.\n\n"
    "--root\n"
    "  Under --root DIR only files, directories and symlinks are managed, below DIR;\n"
    "  packages, units, services and checks belong to the host and are skipped\n"
    "  (--root-checks runs the checks anyway).\n\n"
    "SEE ALSO\n"
    "  tetherctl(1), tether-agent.toml(5), tether-profile(5); man tetherd";

}  // namespace

void AddTetherdFlags(CLI::App& app, TetherdFlags& flags) {
  app.description(kDescription);
  app.name("tetherd");
  app.footer(kFooter);
  app.set_version_flag("--version", std::string("tetherd ") + TETHER_VERSION);
  app.add_option("--config", flags.config_path,
                 "Agent configuration file; drop-ins are read from the\n"
                 "agent.d/ directory beside it")
      ->type_name("FILE")
      ->capture_default_str();
  app.add_option("--state-dir", flags.state_dir, "State directory")
      ->type_name("DIR")
      ->capture_default_str();
  app.add_option("--cache-dir", flags.cache_dir, "Cache directory (Git mirror)")
      ->type_name("DIR")
      ->capture_default_str();
  app.add_option("--socket", flags.socket, "Control socket path")
      ->type_name("PATH")
      ->capture_default_str();
  app.add_option("--root", flags.root,
                 "Treat DIR as the root of every managed path (like systemctl --root)")
      ->type_name("DIR")
      ->capture_default_str();
  app.add_option("--log-level", flags.log_level,
                 "trace, debug, info, warning, error, critical or off")
      ->type_name("LEVEL")
      ->capture_default_str();
  app.add_flag("--once", flags.once, "Run one cycle in the foreground and exit");
  app.add_flag("--dry-run", flags.dry_run,
               "Plan only; apply nothing (an interrupted apply is still finished)");
  app.add_flag("--show-in-sync", flags.show_in_sync,
               "With --once: list every resource in sync too, not only what changed");
  app.add_flag("--root-checks", flags.root_checks,
               "Run [[check]]s under --root too (they are skipped there with the host's\n"
               "packages and services): for checks that look at the root themselves");
  app.add_flag("--retry-quarantined", flags.retry_quarantined,
               "With --once: apply the fleet repo's head even if it is quarantined\n"
               "(it failed or was rolled back before); lifts the quarantine");
  app.add_flag("--git-worker", flags.git_worker)->group("");
  app.add_option("--git-worker-ca-file", flags.worker_ca_file)->group("");
  app.add_option("--git-worker-user", flags.worker_user)->group("");
  app.add_flag("--cycle-process", flags.cycle_process)->group("");
  app.add_flag("--http-fetch", flags.http_fetch)->group("");
  app.add_option("--http-fetch-user", flags.http_fetch_user)->group("");
}

std::string TetherProgram(const std::string& self, const char* name) {
  const std::string beside = self.substr(0, self.rfind('/') + 1) + name;
  if (access(beside.c_str(), X_OK) == 0) return beside;
  return std::string(TETHER_LIBEXECDIR) + "/" + name;
}

int ExecTetherProgram(const std::string& program, char** argv) {
  execv(program.c_str(), argv);
  std::fprintf(stderr, "tetherd: cannot run '%s': %s\n", program.c_str(), std::strerror(errno));
  return 127;
}

std::string SelfPath(const char* argv0) {
  char buffer[4096];
  const ssize_t n = readlink("/proc/self/exe", buffer, sizeof(buffer) - 1);
  if (n <= 0) return argv0;
  return std::string(buffer, static_cast<std::size_t>(n));
}

}  // namespace tether
