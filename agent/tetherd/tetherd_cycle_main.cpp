// tetherd-cycle: what runs a cycle, and what users and systemd run as `tetherd` (a link to
// it). `tetherd --once` runs here, so does each cycle of the daemon (--cycle-process); for
// anything else this program becomes (exec, same command line, same process) the one for
// what it is asked: tetherd-daemon, tetherd-git or tetherd-http. So `tetherd --once` loads
// one program, the one that runs it; the daemon pays a second start, once per boot.
// It links neither libgit2 nor OpenSSL: it reads the mirror itself
// (agent/git/object_store.hpp), checks signatures with libgcrypt, and leaves the network to
// tetherd-git (Git servers) and tetherd-http (HTTP requests).
#include <csignal>
#include <cstdio>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>

#include "agent/config/agent_config.hpp"
#include "agent/cycle/cycle_report.hpp"
#include "agent/tetherd/cli.hpp"
#include "agent/tetherd/cycle_child.hpp"
#include "agent/tetherd/host.hpp"
#include "agent/tetherd/tetherd_flags.hpp"
#include "common/log.hpp"

int main(int argc, char** argv) {
  CLI::App app;
  tether::TetherdFlags flags;
  tether::AddTetherdFlags(app, flags);
  if (auto status = tether::ParseCommandLine(app, argc, argv)) return *status;
  const std::string self = tether::SelfPath(argv[0]);
  // The daemon's own main chooses in the same order. A daemon of the previous release,
  // still running during a package upgrade, asks this program for its HTTP requests.
  if (flags.git_worker) {
    return tether::ExecTetherProgram(tether::TetherProgram(self, "tetherd-git"), argv);
  }
  if (flags.http_fetch) {
    return tether::ExecTetherProgram(tether::TetherProgram(self, "tetherd-http"), argv);
  }
  if (!flags.once && !flags.cycle_process) {
    return tether::ExecTetherProgram(tether::TetherProgram(self, "tetherd-daemon"), argv);
  }
  // A git worker that died must be an error on the next request, not our death.
  std::signal(SIGPIPE, SIG_IGN);

  auto level = tether::ParseLogLevel(flags.log_level);
  if (!level) {
    std::fprintf(stderr, "tetherd: --log-level: %s\n", level.error().message().c_str());
    return 2;
  }
  tether::SetUpLogging({.level = *level, .identifier = "tetherd"});
  const std::vector<std::string> worker_argv = {tether::TetherProgram(self, "tetherd-git"),
                                                "--git-worker"};
  const std::vector<std::string> http_argv = {tether::TetherProgram(self, "tetherd-http"),
                                              "--http-fetch"};
  if (flags.cycle_process) {
    return tether::ServeCycleProcess(stdin, stdout, worker_argv, http_argv);
  }
  auto config = tether::LoadAgentConfig(flags.config_path);
  if (!config) {
    std::fprintf(stderr, "%s\n", config.error().message().c_str());
    return 2;
  }
  tether::CycleOptions options;
  options.config = std::move(*config);
  options.state_dir = flags.state_dir;
  options.cache_dir = flags.cache_dir;
  options.root = flags.root;
  options.dry_run = flags.dry_run;
  options.show_in_sync = flags.show_in_sync;
  options.retry_quarantined = flags.retry_quarantined;
  options.root_checks = flags.root_checks;
  options.worker_argv = worker_argv;
  options.http_argv = http_argv;
  // The plan is printed as soon as it is made: an apply and its health checks may take
  // minutes. Problems go to stderr as they are known.
  bool printed_plan = false;
  std::size_t problems_printed = 0;
  auto problems = [&](const tether::CycleReport& report) {
    std::fputs(tether::FormatProblems(report, problems_printed).c_str(), stderr);
    problems_printed = report.problems.size();
  };
  const tether::CycleReport report =
      tether::RunCycleOnHost(options, [&](const tether::CycleReport& planned) {
        problems(planned);
        std::fputs(tether::FormatCourse(planned, {}, tether::CoursePart::kPlan).c_str(), stdout);
        std::fflush(stdout);
        printed_plan = true;
      });
  problems(report);
  const auto part = printed_plan ? tether::CoursePart::kResult : tether::CoursePart::kAll;
  std::fputs(tether::FormatCourse(report, {}, part).c_str(), stdout);
  return tether::ExitCode(report);
}
