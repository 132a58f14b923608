// tetherd-http: the daemon's HTTP requests (report deliveries, https:// change-signal
// checks), the one tether program with the HTTP client, and with it OpenSSL. The daemon
// starts it as `tetherd-http --http-fetch` (agent/report/send_process.hpp); same flags as
// tetherd. Kept apart so that a cycle's process loads no TLS library.
#include <sys/prctl.h>
#include <unistd.h>

#include <csignal>
#include <cstdio>

#include <CLI/CLI.hpp>

#include "agent/report/send_process.hpp"
#include "agent/tetherd/cli.hpp"
#include "agent/tetherd/tetherd_flags.hpp"

int main(int argc, char** argv) {
  CLI::App app;
  tether::TetherdFlags flags;
  tether::AddTetherdFlags(app, flags);
  if (auto status = tether::ParseCommandLine(app, argc, argv)) return *status;
  if (!flags.http_fetch) {
    std::fprintf(stderr, "tetherd-http makes tetherd's HTTP requests: use tetherd\n");
    return 2;
  }
  std::signal(SIGPIPE, SIG_IGN);
  // It parses what servers send and never starts a program: nothing it could be tricked
  // into running may gain privileges (setuid bits, file capabilities), whatever user it
  // runs as.
  if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) {
    std::perror("tetherd: prctl(PR_SET_NO_NEW_PRIVS)");
    return 1;
  }
  return tether::ServeHttpFetch(STDIN_FILENO, STDOUT_FILENO, flags.http_fetch_user);
}
