// The git server harness, proven with the git CLI: every transport serves the commits the repo
// helpers make, and refuses clients without the right CA, host key or credentials.
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include <doctest/doctest.h>

#include "common/process.hpp"
#include "tests/support/git_repo.hpp"
#include "tests/support/git_server.hpp"
#include "tests/support/temp_dir.hpp"
#include "tests/support/test_ca.hpp"

namespace {

using namespace std::chrono_literals;
using tether::RunOptions;
using tether::RunResult;
using tether::testing::CommitFiles;
using tether::testing::CommitOptions;
using tether::testing::CreateBareRepo;
using tether::testing::ForcePush;
using tether::testing::GenerateSshKey;
using tether::testing::GitDaemonServer;
using tether::testing::GitEnvironment;
using tether::testing::GitHttpOptions;
using tether::testing::GitHttpServer;
using tether::testing::GitSshServer;
using tether::testing::HttpAuth;
using tether::testing::kGitTestEmail;
using tether::testing::PickFreePort;
using tether::testing::ReadRef;
using tether::testing::ServerProcess;
using tether::testing::SshKeyType;
using tether::testing::TempDir;
using tether::testing::TestCa;

// A git root holding fleet.git with one commit on main.
struct Fleet {
  TempDir root{"git-root"};
  std::string repo = root.Path("fleet.git");
  std::string sha;

  Fleet() {
    CreateBareRepo(repo);
    sha = CommitFiles(repo, {{"hosts/web1.toml", "role = \"web\"\n"}, {"README", "fleet\n"}});
  }
};

// Option builders: partial designated initializers trip -Wmissing-field-initializers (GCC 12).
GitHttpOptions Https(const TestCa* ca = nullptr, std::optional<HttpAuth> auth = std::nullopt) {
  GitHttpOptions options;
  options.tls = true;
  options.ca = ca;
  options.auth = std::move(auth);
  return options;
}
CommitOptions Adding() {
  CommitOptions options;
  options.replace_tree = false;
  return options;
}
CommitOptions OnBranch(const std::string& branch) {
  CommitOptions options;
  options.branch = branch;
  return options;
}
CommitOptions SignedWith(const std::string& key) {
  CommitOptions options;
  options.signing_key = key;
  return options;
}

// Runs the git CLI with `args` in GitEnvironment plus `extra_env`.
RunResult Git(const std::vector<std::string>& args,
              const std::vector<std::string>& extra_env = {}) {
  const TempDir home("git-client");
  RunOptions options;
  options.argv = {"git"};
  options.argv.insert(options.argv.end(), args.begin(), args.end());
  options.env = GitEnvironment(home.path());
  options.env.insert(options.env.end(), extra_env.begin(), extra_env.end());
  options.timeout = 20s;
  auto result = tether::Run(options);
  REQUIRE_MESSAGE(result, result.error().message());
  return *result;
}

RunResult LsRemote(const std::string& url, const std::vector<std::string>& extra_env = {}) {
  return Git({"ls-remote", url}, extra_env);
}

bool Contains(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

// ls-remote succeeded and listed `sha` as HEAD and main.
void CheckLists(const RunResult& result, const std::string& sha) {
  CHECK_MESSAGE(result.ok(), result.err);
  CHECK(Contains(result.out, sha + "\tHEAD\n"));
  CHECK(Contains(result.out, sha + "\trefs/heads/main\n"));
}

// "https://localhost:1/x" -> "https://USERINFO@localhost:1/x"
std::string WithUserInfo(const std::string& url, const std::string& userinfo) {
  const auto host = url.find("://") + 3;
  return url.substr(0, host) + userinfo + "@" + url.substr(host);
}

bool ProcessExists(pid_t pid) { return kill(pid, 0) == 0 || errno != ESRCH; }

// True when a new listening socket can take `port` (as the servers do, with SO_REUSEADDR).
bool PortIsFree(int port) {
  const int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  REQUIRE(fd >= 0);
  const int one = 1;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_port = htons(static_cast<uint16_t>(port));
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  const bool free =
      bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address)) == 0 && listen(fd, 1) == 0;
  close(fd);
  return free;
}

void CheckStopFreesPortAndPid(ServerProcess& server) {
  const pid_t pid = server.pid();
  const int port = server.port();
  REQUIRE(pid > 0);
  CHECK(server.running());
  CHECK(ProcessExists(pid));
  CHECK_FALSE(PortIsFree(port));
  server.Stop();
  CHECK_FALSE(server.running());
  CHECK(server.pid() == -1);
  CHECK_FALSE(ProcessExists(pid));
  CHECK(PortIsFree(port));
  server.Stop();  // idempotent
}

}  // namespace

TEST_SUITE("integration") {
  TEST_CASE("git daemon serves the git root over git://") {
    Fleet fleet;
    GitDaemonServer server(fleet.root.path());
    CHECK(server.url("fleet.git") ==
          "git://127.0.0.1:" + std::to_string(server.port()) + "/fleet.git");
    CheckLists(LsRemote(server.url("fleet.git")), fleet.sha);
    const auto missing = LsRemote(server.url("missing.git"));
    CHECK_FALSE(missing.ok());
  }

  TEST_CASE("lighttpd with git-http-backend serves the git root over http://") {
    Fleet fleet;
    GitHttpServer server(fleet.root.path());
    CHECK(server.url("fleet.git") ==
          "http://127.0.0.1:" + std::to_string(server.port()) + "/git/fleet.git");
    CHECK(server.ca_file().empty());
    CheckLists(LsRemote(server.url("fleet.git")), fleet.sha);
  }

  TEST_CASE("https://localhost is trusted with the test CA only, and offers TLS 1.2") {
    Fleet fleet;
    const TempDir ca_dir("git-ca");
    const TestCa ca(ca_dir.path());
    GitHttpServer server(fleet.root.path(), Https(&ca));
    CHECK(server.url("fleet.git") ==
          "https://localhost:" + std::to_string(server.port()) + "/git/fleet.git");
    CHECK(server.ca_file() == ca.cert());

    CheckLists(LsRemote(server.url("fleet.git"), {"GIT_SSL_CAINFO=" + ca.cert()}), fleet.sha);

    const auto untrusted = LsRemote(server.url("fleet.git"));
    CHECK_FALSE(untrusted.ok());
    CHECK_MESSAGE(Contains(untrusted.err, "certificate"), untrusted.err);

    // libgit2 on Debian 12 uses mbedTLS, which has no TLS 1.3.
    RunOptions s_client;
    s_client.argv = {"openssl",     "s_client",
                     "-connect",    "127.0.0.1:" + std::to_string(server.port()),
                     "-servername", "localhost",
                     "-tls1_2",     "-CAfile",
                     ca.cert(),     "-verify_hostname",
                     "localhost",   "-verify_return_error",
                     "-brief"};
    s_client.input = "";
    s_client.timeout = 10s;
    auto tls12 = tether::Run(s_client);
    REQUIRE(tls12);
    CHECK_MESSAGE(tls12->ok(), tls12->err);
    CHECK_MESSAGE(Contains(tls12->err, "Protocol version: TLSv1.2"), tls12->err);
  }

  TEST_CASE("HTTP auth on /git/ accepts Basic credentials or a bearer token, nothing else") {
    Fleet fleet;
    GitHttpServer server(
        fleet.root.path(),
        Https(nullptr, HttpAuth{.user = "fleet", .password = "s3cret", .bearer_token = "tok-123"}));
    const std::string url = server.url("fleet.git");
    const std::string ca = "GIT_SSL_CAINFO=" + server.ca_file();
    const auto bearer = [&](const std::string& token) -> std::vector<std::string> {
      return {ca, "GIT_CONFIG_COUNT=1", "GIT_CONFIG_KEY_0=http.extraHeader",
              "GIT_CONFIG_VALUE_0=Authorization: Bearer " + token};
    };

    CheckLists(LsRemote(WithUserInfo(url, "fleet:s3cret"), {ca}), fleet.sha);
    CheckLists(LsRemote(url, bearer("tok-123")), fleet.sha);

    const auto anonymous = LsRemote(url, {ca});
    CHECK_FALSE(anonymous.ok());
    CHECK_MESSAGE(Contains(anonymous.err, "could not read Username"), anonymous.err);
    const auto wrong_password = LsRemote(WithUserInfo(url, "fleet:wrong"), {ca});
    CHECK_FALSE(wrong_password.ok());
    CHECK_MESSAGE(Contains(wrong_password.err, "Authentication failed"), wrong_password.err);
    CHECK_FALSE(LsRemote(url, bearer("tok-12")).ok());
  }

  TEST_CASE("sshd serves the git root over ssh:// to the client key, with a known host key") {
    Fleet fleet;
    GitSshServer server(fleet.root.path());
    CHECK(server.url("fleet.git") ==
          "ssh://tether-test-git@127.0.0.1:" + std::to_string(server.port()) + fleet.repo);
    CheckLists(LsRemote(server.url("fleet.git"), {"GIT_SSH_COMMAND=" + server.ssh_command()}),
               fleet.sha);

    const TempDir client("git-ssh-client");
    const auto other = GenerateSshKey(client.Path("other_key"));
    const std::string port = std::to_string(server.port());
    const std::string strict =
        " -F /dev/null -o IdentitiesOnly=yes -o GlobalKnownHostsFile=/dev/null"
        " -o StrictHostKeyChecking=yes -o BatchMode=yes";

    // A host key that is not the one in known_hosts is refused.
    client.WriteFile("known_hosts", "[127.0.0.1]:" + port + " " + other.public_line + "\n");
    const auto wrong_host = LsRemote(
        server.url("fleet.git"), {"GIT_SSH_COMMAND=ssh -i " + server.client_key() +
                                  " -o UserKnownHostsFile=" + client.Path("known_hosts") + strict});
    CHECK_FALSE(wrong_host.ok());
    CHECK_MESSAGE(Contains(wrong_host.err, "Host key verification failed"), wrong_host.err);

    // A client key that is not authorized is refused.
    const auto wrong_client = LsRemote(server.url("fleet.git"),
                                       {"GIT_SSH_COMMAND=ssh -i " + other.private_key +
                                        " -o UserKnownHostsFile=" + server.known_hosts() + strict});
    CHECK_FALSE(wrong_client.ok());
    CHECK_MESSAGE(Contains(wrong_client.err, "Permission denied (publickey)"), wrong_client.err);
  }

  TEST_CASE("stopping a server, or destroying it, kills its pid and frees its port") {
    Fleet fleet;
    {
      GitDaemonServer daemon(fleet.root.path());
      CheckStopFreesPortAndPid(daemon);
      GitHttpServer http(fleet.root.path());
      CheckStopFreesPortAndPid(http);
      GitSshServer ssh(fleet.root.path());
      // After a connection: its session has ended, and only the listener remains.
      CheckLists(LsRemote(ssh.url("fleet.git"), {"GIT_SSH_COMMAND=" + ssh.ssh_command()}),
                 fleet.sha);
      CheckStopFreesPortAndPid(ssh);
    }
    pid_t pid = -1;
    int port = 0;
    {
      GitDaemonServer daemon(fleet.root.path());
      pid = daemon.pid();
      port = daemon.port();
    }
    CHECK_FALSE(ProcessExists(pid));
    CHECK(PortIsFree(port));
  }

  TEST_CASE("a server whose port was taken before it could bind starts on another port") {
    Fleet fleet;
    // A socket listening on the first port handed out, as another program might be.
    const int holder = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    REQUIRE(holder >= 0);
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t length = sizeof(address);
    REQUIRE(bind(holder, reinterpret_cast<sockaddr*>(&address), sizeof(address)) == 0);
    REQUIRE(listen(holder, 1) == 0);
    REQUIRE(getsockname(holder, reinterpret_cast<sockaddr*>(&address), &length) == 0);
    const int taken = ntohs(address.sin_port);

    int picks = 0;
    GitDaemonServer server(fleet.root.path(),
                           [&] { return ++picks == 1 ? taken : PickFreePort(); });
    CHECK(picks == 2);
    CHECK(server.port() != taken);
    CheckLists(LsRemote(server.url("fleet.git")), fleet.sha);
    close(holder);
  }

  TEST_CASE("CommitFiles replaces or extends the tree of a branch, on top of its last commit") {
    const TempDir dir("git-repo");
    const std::string repo = dir.Path("repo.git");
    CreateBareRepo(repo);
    CHECK(ReadRef(repo, "refs/heads/main").empty());

    const std::string first = CommitFiles(repo, {{"a.txt", "a\n"}, {"dir/b.txt", "b\n"}});
    CHECK(ReadRef(repo, "refs/heads/main") == first);
    CHECK(ReadRef(repo, "HEAD") == first);
    const std::string second = CommitFiles(repo, {{"c.txt", "c\n"}});
    const std::string third = CommitFiles(repo, {{"a.txt", "A\n"}}, Adding());
    CHECK(ReadRef(repo, "main") == third);

    const auto tree = [&](const std::string& sha) {
      return Git({"--git-dir=" + repo, "ls-tree", "-r", "--name-only", sha}).out;
    };
    CHECK(tree(first) == "a.txt\ndir/b.txt\n");
    CHECK(tree(second) == "c.txt\n");
    CHECK(tree(third) == "a.txt\nc.txt\n");
    CHECK(Git({"--git-dir=" + repo, "show", third + ":a.txt"}).out == "A\n");
    CHECK(Git({"--git-dir=" + repo, "rev-list", "main"}).out ==
          third + "\n" + second + "\n" + first + "\n");
    const auto author = Git({"--git-dir=" + repo, "log", "-1", "--format=%an <%ae>", "main"});
    CHECK(author.out == "Tether Test <" + std::string(kGitTestEmail) + ">\n");

    const std::string other = CommitFiles(repo, {{"x", "x"}}, OnBranch("other"));
    CHECK(ReadRef(repo, "refs/heads/other") == other);
    CHECK(ReadRef(repo, "refs/heads/main") == third);
  }

  TEST_CASE("ForcePush moves a branch back to an older commit") {
    Fleet fleet;
    const std::string newer = CommitFiles(fleet.repo, {{"hosts/web1.toml", "role = \"db\"\n"}});
    REQUIRE(ReadRef(fleet.repo, "refs/heads/main") == newer);
    ForcePush(fleet.repo, "main", fleet.sha);
    CHECK(ReadRef(fleet.repo, "refs/heads/main") == fleet.sha);
    ForcePush(fleet.repo, "refs/heads/main", newer);
    CHECK(ReadRef(fleet.repo, "refs/heads/main") == newer);

    GitDaemonServer server(fleet.root.path());
    ForcePush(fleet.repo, "main", fleet.sha);
    CheckLists(LsRemote(server.url("fleet.git")), fleet.sha);
  }

  TEST_CASE("commits signed with an SSH key pass git verify-commit; unsigned ones have no gpgsig") {
    const TempDir dir("git-sign");
    const std::string repo = dir.Path("repo.git");
    CreateBareRepo(repo);
    const std::string unsigned_sha = CommitFiles(repo, {{"a", "1"}});
    CHECK_FALSE(
        Contains(Git({"--git-dir=" + repo, "cat-file", "commit", unsigned_sha}).out, "gpgsig"));

    const std::map<SshKeyType, std::string> types = {
        {SshKeyType::kEd25519, "ssh-ed25519 "},
        {SshKeyType::kEcdsaP256, "ecdsa-sha2-nistp256 "},
        {SshKeyType::kRsa, "ssh-rsa "}};
    int n = 0;
    for (const auto& [type, prefix] : types) {
      CAPTURE(prefix);
      const auto key = GenerateSshKey(dir.Path("key" + std::to_string(n++)), type);
      CHECK(key.public_line.rfind(prefix, 0) == 0);
      const std::string signed_sha =
          CommitFiles(repo, {{"a", prefix}}, SignedWith(key.private_key));
      CHECK(Contains(Git({"--git-dir=" + repo, "cat-file", "commit", signed_sha}).out,
                     "gpgsig -----BEGIN SSH SIGNATURE-----"));

      dir.WriteFile("allowed_signers",
                    std::string(kGitTestEmail) + " namespaces=\"git\" " + key.public_line + "\n");
      const std::string allowed = "gpg.ssh.allowedSignersFile=" + dir.Path("allowed_signers");
      const auto verified = Git({"--git-dir=" + repo, "-c", allowed, "verify-commit", signed_sha});
      CHECK_MESSAGE(verified.ok(), verified.err);
      CHECK_MESSAGE(Contains(verified.err, "Good \"git\" signature"), verified.err);
      CHECK_FALSE(Git({"--git-dir=" + repo, "-c", allowed, "verify-commit", unsigned_sha}).ok());
    }

    // A signature by a key that is not an allowed signer does not verify.
    const auto stranger = GenerateSshKey(dir.Path("stranger"));
    const std::string by_stranger =
        CommitFiles(repo, {{"a", "stranger"}}, SignedWith(stranger.private_key));
    const auto rejected =
        Git({"--git-dir=" + repo, "-c", "gpg.ssh.allowedSignersFile=" + dir.Path("allowed_signers"),
             "verify-commit", by_stranger});
    CHECK_FALSE(rejected.ok());
  }
}
