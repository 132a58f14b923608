// The git worker: the only code that talks to Git servers.
//
// It runs in a child process of tetherd ("tetherd --git-worker"), so a server that
// accepts and then goes silent (libgit2 1.5 has no network timeouts) costs the child a
// SIGKILL at the parent's deadline, never the daemon's loop; and so the untrusted data
// a server sends is parsed outside the daemon. The child is long-lived: libgit2 is set up
// once and remotes are reused across polls, so a poll costs a ref listing, not a process.
//
// Protocol: one JSON object per line on stdin, one answer per line on stdout.
//   {"op":"ls","url":U,"ref":R,"credentials":C}             -> {"ok":true,"commit":SHA}
//   {"op":"fetch","url":U,"ref":R,"mirror":DIR,"credentials":C} -> {"ok":true,"commit":SHA}
//   any failure                                              -> {"ok":false,"error":MESSAGE}
// C (optional): {"token": "...", "ssh_key": PEM, "known_hosts": TEXT}. Secrets travel in
// the request, so the worker needs no access to root-only key files.
#pragma once

#include <string>

namespace tether {

struct GitWorkerOptions {
  std::string ca_file;  // extra CA certificates for https:// (besides the system's)
  std::string user;     // drop to this user (and its primary group) first; empty: stay
};

// Serves requests until stdin closes. Returns the process exit status.
[[nodiscard]] int RunGitWorker(const GitWorkerOptions& options);

}  // namespace tether
