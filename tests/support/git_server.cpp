#include "tests/support/git_server.hpp"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <pwd.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>

#include "tests/support/git_repo.hpp"
#include "tests/support/wait_for.hpp"

namespace tether::testing {

namespace {

using namespace std::chrono_literals;

constexpr int kStartAttempts = 5;
constexpr auto kStartTimeout = 10s;
constexpr auto kStopGrace = 5s;

[[noreturn]] void Die(const std::string& message) {
  std::fprintf(stderr, "git_server: %s\n", message.c_str());
  std::abort();
}

std::string ReadFile(const std::string& path) {
  std::ifstream stream(path, std::ios::binary);
  std::ostringstream buffer;
  buffer << stream.rdbuf();
  return buffer.str();
}

// The last few KB of a log, for an abort message.
std::string LogTail(const std::string& path) {
  const std::string log = ReadFile(path);
  constexpr std::size_t kMax = 4096;
  return log.size() <= kMax ? log : "..." + log.substr(log.size() - kMax);
}

const std::string& GitExecPath() {
  static const std::string path = [] {
    RunOptions options;
    options.argv = {"git", "--exec-path"};
    auto result = Run(options);
    if (!result || !result->ok()) Die("git --exec-path failed");
    std::string out = result->out;
    while (!out.empty() && out.back() == '\n') out.pop_back();
    return out;
  }();
  return path;
}

sockaddr_in Loopback(int port) {
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_port = htons(static_cast<uint16_t>(port));
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  return address;
}

bool CanConnect(int port) {
  const int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return false;
  const sockaddr_in address = Loopback(port);
  const bool connected =
      connect(fd, reinterpret_cast<const sockaddr*>(&address), sizeof(address)) == 0;
  close(fd);
  return connected;
}

// The inodes of the TCP sockets listening on `port`, from /proc/net/tcp.
std::set<std::string> ListeningInodes(int port) {
  std::set<std::string> inodes;
  std::ifstream tcp("/proc/net/tcp");
  std::string line;
  std::getline(tcp, line);  // the header
  while (std::getline(tcp, line)) {
    // sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode ...
    std::istringstream fields(line);
    std::string sl, local, remote, state, queues, timer, retransmits, uid, timeout, inode;
    fields >> sl >> local >> remote >> state >> queues >> timer >> retransmits >> uid >> timeout >>
        inode;
    const auto colon = local.find(':');
    if (state != "0A" || colon == std::string::npos) continue;  // 0A: LISTEN
    if (std::stoi(local.substr(colon + 1), nullptr, 16) == port) inodes.insert(inode);
  }
  return inodes;
}

// True when process `pid` holds a socket listening on `port`: the server is ours, not a program
// that took the port first.
bool OwnsListener(pid_t pid, int port) {
  const std::set<std::string> inodes = ListeningInodes(port);
  if (inodes.empty()) return false;
  std::error_code ec;
  for (const auto& entry :
       std::filesystem::directory_iterator("/proc/" + std::to_string(pid) + "/fd", ec)) {
    const std::string target = std::filesystem::read_symlink(entry.path(), ec).string();
    if (target.rfind("socket:[", 0) == 0 &&
        inodes.count(target.substr(8, target.size() - 9)) != 0) {
      return true;
    }
  }
  return false;
}

std::string ExecutableOf(pid_t pid) {
  std::error_code ec;
  return std::filesystem::read_symlink("/proc/" + std::to_string(pid) + "/exe", ec).string();
}

// A lighttpd configuration string literal.
std::string Quote(const std::string& value) {
  std::string quoted = "\"";
  for (const char c : value) {
    if (c == '"' || c == '\\') quoted += '\\';
    quoted += c;
  }
  return quoted + "\"";
}

// Single-quoted for sh.
std::string ShellQuote(const std::string& value) {
  std::string quoted = "'";
  for (const char c : value) quoted += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return quoted + "'";
}

std::string Absolute(const std::string& path) {
  return std::filesystem::absolute(path).lexically_normal().string();
}

bool UserExists(const char* name) {
  passwd entry{};
  passwd* found = nullptr;
  char buffer[4096];
  return getpwnam_r(name, &entry, buffer, sizeof(buffer), &found) == 0 && found != nullptr;
}

// Creates kGitSshUser unless it exists. Retries while another test program holds the lock on
// /etc/passwd (or created the user at the same moment).
void EnsureSshUser() {
  std::string error;
  const bool exists = WaitFor(
      [&] {
        if (UserExists(kGitSshUser)) return true;
        RunOptions options;
        options.argv = {"useradd", "--system", "-p",           "*",        "-s", "/bin/sh",
                        "-M",      "-d",       "/nonexistent", kGitSshUser};
        auto result = Run(options);
        error = result ? result->err : result.error().message();
        return UserExists(kGitSshUser);
      },
      10s);
  if (!exists) Die(std::string("useradd ") + kGitSshUser + ": " + error);
}

}  // namespace

int PickFreePort() {
  const int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) Die("socket: " + std::string(strerror(errno)));
  sockaddr_in address = Loopback(0);
  socklen_t length = sizeof(address);
  if (bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address)) != 0 ||
      getsockname(fd, reinterpret_cast<sockaddr*>(&address), &length) != 0) {
    Die("bind 127.0.0.1:0: " + std::string(strerror(errno)));
  }
  close(fd);
  return ntohs(address.sin_port);
}

void ServerProcess::Start(const std::function<std::vector<std::string>(int port)>& argv_for,
                          const std::vector<std::string>& env, const PortPicker& pick_port) {
  if (running()) Die("server already started");
  std::string program;
  for (int attempt = 1; attempt <= kStartAttempts; ++attempt) {
    const int port = pick_port();
    const std::vector<std::string> server_argv = argv_for(port);
    program = server_argv.at(0);
    SpawnOptions options;
    options.argv = {"setpriv", "--pdeathsig", "KILL", "--"};
    options.argv.insert(options.argv.end(), server_argv.begin(), server_argv.end());
    options.env = env;
    options.stdout_path = log_path();
    options.stderr_path = log_path();
    auto child = Spawn(options);
    if (!child) Die("start " + program + ": " + child.error().message());

    bool exited = false;
    const bool ready = WaitFor(
        [&] {
          if (child->Wait(0ms)) return exited = true;  // reaped
          // setpriv has exec'ed the server, which accepts connections on a socket it owns.
          return ExecutableOf(child->pid()) == program && CanConnect(port) &&
                 OwnsListener(child->pid(), port);
        },
        kStartTimeout);
    if (ready && !exited) {
      child_ = std::move(*child);
      port_ = port;
      return;
    }
    if (!exited) {
      child->Stop(SIGKILL, 0ms);
      Die(program + " not ready on port " + std::to_string(port) + " after " +
          std::to_string(kStartTimeout.count()) + " s; log " + log_path() + ":\n" +
          LogTail(log_path()));
    }
    // Exited: most likely the port was taken between PickFreePort and the server's bind.
    std::ofstream(log_path(), std::ios::app)
        << "git_server: attempt " << attempt << " on port " << port << " exited\n";
  }
  Die(program + " exited before it was ready, " + std::to_string(kStartAttempts) + " times; log " +
      log_path() + ":\n" + LogTail(log_path()));
}

void ServerProcess::Stop() {
  if (!running()) return;
  child_.Stop(SIGTERM, kStopGrace);
  // Processes the server forked (e.g. git daemon's, for a connection) may hold the listening
  // socket a moment longer: they got the signal too, but Child::Stop reaps the server only.
  if (!WaitFor([&] { return ListeningInodes(port_).empty(); }, kStopGrace)) {
    std::fprintf(stderr, "git_server: port %d still listened on after stopping, ignoring\n", port_);
  }
}

GitDaemonServer::GitDaemonServer(const std::string& root, const PortPicker& pick_port)
    : ServerProcess("git-daemon") {
  const std::string base = Absolute(root);
  std::vector<std::string> env = kCleanEnvironment;
  env.insert(env.end(), {"HOME=" + dir().path(), "GIT_CONFIG_NOSYSTEM=1"});
  Start(
      [&](int port) -> std::vector<std::string> {
        return {GitExecPath() + "/git-daemon",
                "--listen=127.0.0.1",
                "--port=" + std::to_string(port),
                "--base-path=" + base,
                "--export-all",
                "--reuseaddr",
                "--informative-errors",
                base};
      },
      env, pick_port);
}

std::string GitDaemonServer::url(std::string_view repo) const {
  return "git://127.0.0.1:" + std::to_string(port()) + "/" + std::string(repo);
}

GitHttpServer::GitHttpServer(const std::string& root, const GitHttpOptions& options)
    : ServerProcess(options.tls ? "git-https" : "git-http"), tls_(options.tls) {
  std::ostringstream config;
  config << "server.modules = (\"mod_auth\", \"mod_authn_file\", \"mod_alias\", \"mod_setenv\", "
            "\"mod_cgi\""
         << (tls_ ? ", \"mod_openssl\")\n" : ")\n")
         << "server.document-root = " << Quote(dir().path()) << "\n"
         << "server.bind = \"127.0.0.1\"\n"
         << "alias.url = (\"/git\" => " << Quote(GitExecPath() + "/git-http-backend") << ")\n"
         << "$HTTP[\"url\"] =~ \"^/git/\" {\n"
         << "  cgi.assign = (\"\" => \"\")\n"
         << "  setenv.set-environment = (\"GIT_PROJECT_ROOT\" => " << Quote(Absolute(root))
         << ", \"GIT_HTTP_EXPORT_ALL\" => \"1\", \"GIT_CONFIG_NOSYSTEM\" => \"1\")\n";
  if (options.auth) {
    std::string users;
    if (!options.auth->user.empty()) users = options.auth->user + ":" + options.auth->password;
    dir().WriteFile("users", users + "\n", 0600);
    const std::string require =
        "auth.require = (\"\" => (\"method\" => \"basic\", \"realm\" => \"tether\", "
        "\"require\" => \"valid-user\"))\n";
    if (options.auth->bearer_token.empty()) {
      config << "  " << require;
    } else {
      config << "  $REQUEST_HEADER[\"Authorization\"] != "
             << Quote("Bearer " + options.auth->bearer_token) << " {\n    " << require << "  }\n";
    }
  }
  config << "}\n";
  if (options.auth) {
    config << "auth.backend = \"plain\"\n"
           << "auth.backend.plain.userfile = " << Quote(dir().Path("users")) << "\n";
  }
  if (tls_) {
    const TestCa* ca = options.ca;
    if (ca == nullptr) {
      std::filesystem::create_directories(dir().Path("ca"));
      ca = &own_ca_.emplace(dir().Path("ca"));
    }
    ca_file_ = ca->cert();
    // Named after this server's unique temp dir: a shared CA issues into one directory.
    const auto cert = ca->Issue(std::filesystem::path(dir().path()).filename().string(),
                                {"localhost"}, {"127.0.0.1"});
    config << "ssl.engine = \"enable\"\n"
           << "ssl.pemfile = " << Quote(cert.cert) << "\n"
           << "ssl.privkey = " << Quote(cert.key) << "\n"
           << "ssl.openssl.ssl-conf-cmd = (\"MinProtocol\" => \"TLSv1.2\")\n";
  }

  Start(
      [&](int port) -> std::vector<std::string> {
        dir().WriteFile("lighttpd.conf",
                        config.str() + "server.port = " + std::to_string(port) + "\n");
        return {"/usr/sbin/lighttpd", "-D", "-f", dir().Path("lighttpd.conf")};
      },
      kCleanEnvironment, PickFreePort);
}

std::string GitHttpServer::url(std::string_view repo) const {
  return (tls_ ? "https://localhost:" : "http://127.0.0.1:") + std::to_string(port()) + "/git/" +
         std::string(repo);
}

StaticHttpServer::StaticHttpServer(const std::string& root, const std::string& keepalive_timeout)
    : ServerProcess("static-http") {
  const std::string temp = dir().Path("temp");
  std::filesystem::create_directories(temp);
  std::ostringstream config;
  config << "daemon off;\nmaster_process off;\nworker_processes 1;\n"
         << "worker_rlimit_nofile 65536;\n"
         << "pid " << dir().Path("nginx.pid") << ";\n"
         << "error_log " << dir().Path("error.log") << ";\n"
         << "events { worker_connections 32768; }\n"
         << "http {\n"
         << "  log_format plain '$request_method $uri $status $connection';\n"
         << "  keepalive_timeout " << keepalive_timeout << ";\n"
         << "  access_log " << dir().Path("access.log") << " plain;\n";
  for (const char* kind : {"client_body", "proxy", "fastcgi", "uwsgi", "scgi"}) {
    config << "  " << kind << "_temp_path " << temp << "/" << kind << ";\n";
  }
  config << "  server {\n    root " << Absolute(root) << ";\n";
  Start(
      [&](int port) -> std::vector<std::string> {
        dir().WriteFile("nginx.conf", config.str() + "    listen 127.0.0.1:" +
                                          std::to_string(port) + ";\n  }\n}\n");
        return {"/usr/sbin/nginx", "-c", dir().Path("nginx.conf"), "-e", dir().Path("error.log")};
      },
      kCleanEnvironment, PickFreePort);
}

std::string StaticHttpServer::url(std::string_view path) const {
  return "http://127.0.0.1:" + std::to_string(port()) + "/" + std::string(path);
}

GitSshServer::GitSshServer(const std::string& root)
    : ServerProcess("git-ssh"), root_(Absolute(root)) {
  EnsureSshUser();
  std::error_code ec;
  std::filesystem::create_directories("/run/sshd", ec);  // sshd's privilege separation dir
  if (ec) Die("mkdir /run/sshd: " + ec.message());
  constexpr auto kReadable =
      std::filesystem::perms::group_read | std::filesystem::perms::group_exec |
      std::filesystem::perms::others_read | std::filesystem::perms::others_exec;
  // sshd reads authorized_keys as the user.
  for (const auto& path : {root_, dir().path()}) {
    std::filesystem::permissions(path, kReadable, std::filesystem::perm_options::add, ec);
    if (ec) Die("chmod a+rx " + path + ": " + ec.message());
  }

  const SshKeyPair host_key = GenerateSshKey(dir().Path("host_key"));
  const SshKeyPair client_key = GenerateSshKey(dir().Path("client_key"));
  client_key_ = client_key.private_key;
  known_hosts_ = dir().Path("known_hosts");
  dir().WriteFile("authorized_keys", client_key.public_line + "\n");
  dir().WriteFile(
      "sshd_config",
      "ListenAddress 127.0.0.1\n"
      "HostKey " +
          host_key.private_key +
          "\n"
          "PidFile none\n"
          "AuthorizedKeysFile " +
          dir().Path("authorized_keys") +
          "\n"
          "UsePAM no\n"
          "StrictModes no\n"
          "PasswordAuthentication no\n"
          "KbdInteractiveAuthentication no\n"
          "PubkeyAuthentication yes\n"
          "AllowUsers " +
          std::string(kGitSshUser) +
          "\n"
          "SetEnv GIT_CONFIG_COUNT=1 GIT_CONFIG_KEY_0=safe.directory GIT_CONFIG_VALUE_0=*\n");

  Start(
      [&](int port) -> std::vector<std::string> {
        return {"/usr/sbin/sshd",    "-D", "-e", "-f", dir().Path("sshd_config"), "-p",
                std::to_string(port)};
      },
      kCleanEnvironment, PickFreePort);
  dir().WriteFile("known_hosts",
                  "[127.0.0.1]:" + std::to_string(port()) + " " + host_key.public_line + "\n");
}

std::string GitSshServer::url(std::string_view repo) const {
  return "ssh://" + std::string(kGitSshUser) + "@127.0.0.1:" + std::to_string(port()) + root_ +
         "/" + std::string(repo);
}

std::string GitSshServer::ssh_command() const {
  return "ssh -F /dev/null -i " + ShellQuote(client_key_) +
         " -o IdentitiesOnly=yes -o UserKnownHostsFile=" + ShellQuote(known_hosts_) +
         " -o GlobalKnownHostsFile=/dev/null -o StrictHostKeyChecking=yes -o BatchMode=yes";
}

}  // namespace tether::testing
