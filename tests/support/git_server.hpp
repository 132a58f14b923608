// Real git servers on 127.0.0.1 for tests: git daemon (git://), lighttpd with git-http-backend
// (http:// and https://) and sshd (ssh://).
//
// Each server listens on a port the kernel chose, is ready when its constructor returns (a
// connect succeeded and the listening socket belongs to the server's pid), and is stopped by PID
// (its process group) in Stop() or its destructor. Servers run under `setpriv --pdeathsig KILL`,
// so they die with the thread that started them, even when the test program crashes. A server
// that cannot start aborts the test program with its log, like TempDir and TestCa do.
//
// All servers can serve the same "git root": a directory of bare repositories, made e.g. with
// CreateBareRepo() from "tests/support/git_repo.hpp". They serve it read-only.
//
// Threading: not thread-safe. Create and destroy a server on the same thread (pdeathsig fires
// when the thread that started the server exits).
#pragma once

#include <sys/types.h>

#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/process.hpp"
#include "tests/support/temp_dir.hpp"
#include "tests/support/test_ca.hpp"

namespace tether::testing {

// Returns a port on 127.0.0.1 that was free a moment ago (bound to port 0, read back, closed).
[[nodiscard]] int PickFreePort();

using PortPicker = std::function<int()>;

// A server process started by this harness, the loopback port it listens on and a temp dir for
// its configuration and log. The base of the servers below.
class ServerProcess {
 public:
  ServerProcess(const ServerProcess&) = delete;
  ServerProcess& operator=(const ServerProcess&) = delete;

  [[nodiscard]] int port() const { return port_; }
  // The server's pid (not setpriv's: it execs the server); -1 once stopped.
  [[nodiscard]] pid_t pid() const { return child_.pid(); }
  [[nodiscard]] bool running() const { return child_.running(); }
  // The server's stdout and stderr, for a post-mortem.
  [[nodiscard]] std::string log_path() const { return dir_.Path("server.log"); }

  // SIGTERM to the server's process group, SIGKILL after 5 s; reaps the server, then waits up
  // to 5 s until nothing listens on port(). Idempotent. (sshd's per-connection processes run in
  // their own sessions and end when their connection does.)
  void Stop();

 protected:
  // `name` names the temp dir: "tether-<name>-XXXXXX".
  explicit ServerProcess(std::string_view name) : dir_(name) {}
  ~ServerProcess() { Stop(); }

  // Starts the program that argv_for(port) returns (argv[0] an absolute path) with `env`, on a
  // port from `pick_port`, and waits up to 10 s until it is ready. When the program exits
  // before it is ready (e.g. the port was taken in the meantime) tries again with a new port,
  // 5 times in all. Aborts when it does not become ready.
  void Start(const std::function<std::vector<std::string>(int port)>& argv_for,
             const std::vector<std::string>& env, const PortPicker& pick_port);

  [[nodiscard]] const TempDir& dir() const { return dir_; }

 private:
  TempDir dir_;
  Child child_;
  int port_ = 0;
};

// git:// from `git daemon --export-all --base-path=ROOT`.
class GitDaemonServer : public ServerProcess {
 public:
  // Serves every repository under `root`. `pick_port` is there to test the harness itself.
  explicit GitDaemonServer(const std::string& root, const PortPicker& pick_port = PickFreePort);

  // "git://127.0.0.1:P/<repo>"; `repo` is relative to root, e.g. "fleet.git".
  [[nodiscard]] std::string url(std::string_view repo) const;
};

// Credentials that GitHttpServer requires on /git/.
// Requests without either get 401 with "WWW-Authenticate: Basic".
struct HttpAuth {
  std::string user;  // HTTP Basic credentials (no ':' in user); empty user: none valid
  std::string password;
  std::string bearer_token;  // accepted as "Authorization: Bearer <token>"; empty: no token
};

struct GitHttpOptions {
  // Serve https://localhost:P with a certificate for DNS:localhost and IP:127.0.0.1, TLS 1.2
  // and 1.3 (the libgit2 of Debian 12 uses mbedTLS: TLS 1.2 only, no IP SANs).
  bool tls = false;
  // The CA that issues that certificate; must outlive the server. Null: the server makes one.
  const TestCa* ca = nullptr;
  // Require these credentials on /git/; none: anonymous access.
  std::optional<HttpAuth> auth;
};

// Smart HTTP(S) from lighttpd (mod_cgi, mod_alias, mod_setenv, mod_auth, mod_openssl) running
// git-http-backend with GIT_PROJECT_ROOT=ROOT and GIT_HTTP_EXPORT_ALL.
class GitHttpServer : public ServerProcess {
 public:
  explicit GitHttpServer(const std::string& root, const GitHttpOptions& options = {});

  // "http://127.0.0.1:P/git/<repo>", or with tls "https://localhost:P/git/<repo>".
  [[nodiscard]] std::string url(std::string_view repo) const;
  // The PEM certificate of the CA that issued the server's certificate; empty without tls.
  [[nodiscard]] const std::string& ca_file() const { return ca_file_; }

 private:
  bool tls_ = false;
  std::optional<TestCa> own_ca_;
  std::string ca_file_;
};

// Static files from nginx (ETag and Last-Modified, conditional GETs, keep-alive), plain
// HTTP: e.g. a bare repository's dumb-HTTP info/refs as a change signal. Every request is
// logged to access_log() as "METHOD URI STATUS CONNECTION", one per line, as it is
// answered (CONNECTION: nginx's serial number of the connection it came on).
class StaticHttpServer : public ServerProcess {
 public:
  // `keepalive_timeout`: nginx's keepalive_timeout, how long an idle connection is kept.
  explicit StaticHttpServer(const std::string& root, const std::string& keepalive_timeout = "75s");

  // "http://127.0.0.1:P/<path>"; `path` is relative to root.
  [[nodiscard]] std::string url(std::string_view path) const;
  [[nodiscard]] std::string access_log() const { return dir().Path("access.log"); }
};

// The user that GitSshServer lets in.
inline constexpr char kGitSshUser[] = "tether-test-git";

// ssh:// from `/usr/sbin/sshd -D -e` with its own ed25519 host key, letting in kGitSshUser (shell
// /bin/sh) with one ed25519 client key. git may read repositories of any owner (safe.directory=*).
class GitSshServer : public ServerProcess {
 public:
  // Creates kGitSshUser if it does not exist (useradd --system, password '*', no home) and
  // /run/sshd. Adds a+rx to `root` so that kGitSshUser can read the repositories in it (a
  // TempDir is 0700); the repositories themselves must be readable by others (umask 022).
  explicit GitSshServer(const std::string& root);

  // "ssh://tether-test-git@127.0.0.1:P/<absolute root>/<repo>".
  [[nodiscard]] std::string url(std::string_view repo) const;
  // The client's private key (ed25519, unencrypted), authorized for kGitSshUser.
  [[nodiscard]] const std::string& client_key() const { return client_key_; }
  // A known_hosts file with one line: "[127.0.0.1]:P ssh-ed25519 AAAA...".
  [[nodiscard]] const std::string& known_hosts() const { return known_hosts_; }
  // A GIT_SSH_COMMAND for the git CLI: ssh with client_key(), known_hosts(), strict host key
  // checking, no user config and no prompts.
  [[nodiscard]] std::string ssh_command() const;

 private:
  std::string root_;
  std::string client_key_;
  std::string known_hosts_;
};

}  // namespace tether::testing
