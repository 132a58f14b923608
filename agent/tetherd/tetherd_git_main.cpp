// tetherd-git: the git worker, the one tether program that links libgit2. It does
// everything that talks to a Git server for a cycle (agent/git/git_worker.hpp), as the
// unprivileged user when there is one. tetherd-cycle starts it as `tetherd-git
// --git-worker`; same flags as tetherd.
#include <sys/prctl.h>

#include <csignal>
#include <cstdio>

#include <CLI/CLI.hpp>

#include "agent/git/git_worker.hpp"
#include "agent/tetherd/cli.hpp"
#include "agent/tetherd/tetherd_flags.hpp"

int main(int argc, char** argv) {
  CLI::App app;
  tether::TetherdFlags flags;
  tether::AddTetherdFlags(app, flags);
  if (auto status = tether::ParseCommandLine(app, argc, argv)) return *status;
  if (!flags.git_worker) {
    std::fprintf(stderr, "tetherd-git is tetherd's git worker: use tetherd\n");
    return 2;
  }
  std::signal(SIGPIPE, SIG_IGN);
  // The worker parses what servers send and never starts a program: nothing it could be
  // tricked into running may gain privileges (setuid bits, file capabilities), whatever
  // user it runs as.
  if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) {
    std::perror("tetherd: prctl(PR_SET_NO_NEW_PRIVS)");
    return 1;
  }
  return tether::RunGitWorker({.ca_file = flags.worker_ca_file, .user = flags.worker_user});
}
