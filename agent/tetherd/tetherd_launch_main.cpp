// tetherd: what users and systemd run. It starts the program for what it is asked, with the
// same command line and in the same process (exec):
//   --once, --cycle-process  tetherd-cycle (a cycle)
//   --git-worker             tetherd-git (the git worker)
//   --http-fetch             tetherd-http (HTTP requests)
//   anything else            tetherd-daemon (the daemon; --help and --version too)
// found beside this program (a build tree, a test) or in tether's libexec directory. It
// links nothing but libc: `tetherd --once` pays for loading one C++ program, not two.
// Each program parses the whole command line again and refuses what it does not take.
#include <strings.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>

#include "version.hpp"

namespace {

// The options that take a value: given without '=', the next argument is their value,
// whatever it looks like (as CLI11 reads it), never a mode flag.
constexpr const char* kValueOptions[] = {
    "--config",    "--state-dir",          "--cache-dir",       "--socket",          "--root",
    "--log-level", "--git-worker-ca-file", "--git-worker-user", "--http-fetch-user",
};

// `arg` sets `flag`: `flag` alone, or `flag=VALUE` with a VALUE other than false, 0, no or
// off (CLI11 reads those as not set).
bool SetsFlag(const char* arg, const char* flag) {
  const std::size_t length = std::strlen(flag);
  if (std::strncmp(arg, flag, length) != 0) return false;
  if (arg[length] == '\0') return true;
  if (arg[length] != '=') return false;
  const char* value = arg + length + 1;
  return strcasecmp(value, "false") != 0 && strcasecmp(value, "0") != 0 &&
         strcasecmp(value, "no") != 0 && strcasecmp(value, "off") != 0;
}

// The program that serves `argv`, as tetherd-daemon would hand it over: the git worker
// first, then HTTP requests, then a cycle.
const char* ProgramFor(int argc, char** argv) {
  bool git = false, http = false, cycle = false;
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--") == 0) break;
    bool takes_value = false;
    for (const char* option : kValueOptions) takes_value |= std::strcmp(argv[i], option) == 0;
    if (takes_value) {
      ++i;  // its value
      continue;
    }
    git = git || SetsFlag(argv[i], "--git-worker");
    http = http || SetsFlag(argv[i], "--http-fetch");
    cycle = cycle || SetsFlag(argv[i], "--once") || SetsFlag(argv[i], "--cycle-process");
  }
  if (git) return "tetherd-git";
  if (http) return "tetherd-http";
  if (cycle) return "tetherd-cycle";
  return "tetherd-daemon";
}

}  // namespace

int main(int argc, char** argv) {
  const char* name = ProgramFor(argc, argv);
  char path[4096];
  // Beside this program when it is there (/proc/self/exe: whatever argv[0] says).
  bool found = false;
  const ssize_t self = readlink("/proc/self/exe", path, sizeof(path) - 1);
  if (self > 0) {
    path[self] = '\0';
    char* slash = std::strrchr(path, '/');
    if (slash != nullptr &&
        static_cast<std::size_t>(slash + 1 - path) + std::strlen(name) < sizeof(path)) {
      std::strcpy(slash + 1, name);
      found = access(path, X_OK) == 0;
    }
  }
  if (!found) std::snprintf(path, sizeof(path), "%s/%s", TETHER_LIBEXECDIR, name);
  execv(path, argv);
  std::fprintf(stderr, "tetherd: cannot run '%s': %s\n", path, std::strerror(errno));
  // Not 2, a configuration error, which the unit does not restart after
  // (RestartPreventExitStatus): a program missing for a moment (an upgrade) is retried.
  return 127;
}
