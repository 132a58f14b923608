// tetherd: what users and systemd run. It starts the program for what it is asked, with the
// same command line and in the same process (exec):
//   --once, --cycle-process  tetherd-cycle (a cycle)
//   --git-worker             tetherd-git (the git worker)
//   --http-fetch             tetherd-http (HTTP requests)
//   anything else            tetherd-daemon (the daemon; --help and --version too)
// found beside this program (a build tree, a test) or in tether's libexec directory. It
// links nothing but libc: `tetherd --once` pays for loading one C++ program, not two.
// Each program parses the whole command line again and refuses what it does not take.
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>

#include "version.hpp"

namespace {

// `arg` is `flag`, or `flag=VALUE` as CLI11 also reads it.
bool IsFlag(const char* arg, const char* flag) {
  const std::size_t length = std::strlen(flag);
  return std::strncmp(arg, flag, length) == 0 && (arg[length] == '\0' || arg[length] == '=');
}

// The program that serves `argv`, as tetherd-daemon would hand it over: the git worker
// first, then HTTP requests, then a cycle.
const char* ProgramFor(int argc, char** argv) {
  bool git = false, http = false, cycle = false;
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--") == 0) break;
    git = git || IsFlag(argv[i], "--git-worker");
    http = http || IsFlag(argv[i], "--http-fetch");
    cycle = cycle || IsFlag(argv[i], "--once") || IsFlag(argv[i], "--cycle-process");
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
  return 2;
}
