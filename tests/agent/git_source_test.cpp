// The git source against real servers on loopback: every transport, no-change polls,
// fetches, mirrors, deadlines, host keys, CAs and tokens.
#include "agent/git/git_source.hpp"
#include "agent/git/libgit2_start.hpp"
#include "agent/git/local_ref.hpp"

#include "agent/desired/render.hpp"
#include "agent/git/commit_check.hpp"

#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>
#include <string>

#include <doctest/doctest.h>

#include "common/process.hpp"
#include "tests/support/git_repo.hpp"
#include "tests/support/git_server.hpp"
#include "tests/support/temp_dir.hpp"
#include "tests/support/test_ca.hpp"
#include "tests/support/text_files.hpp"

using namespace std::chrono_literals;
using tether::GitSource;
using tether::GitSourceOptions;
using tether::testing::CommitFiles;
using tether::testing::CreateBareRepo;
using tether::testing::ForcePush;
using tether::testing::GitDaemonServer;
using tether::testing::GitHttpOptions;
using tether::testing::GitHttpServer;
using tether::testing::GitSshServer;
using tether::testing::HttpAuth;
using tether::testing::TempDir;
using tether::testing::TestCa;
using tether::testing::WriteText;

namespace {

// A git root with fleet.git holding one commit on main.
struct Fleet {
  Fleet() {
    umask(022);  // the ssh server's user must read the repos
    CreateBareRepo(repo);
    first = CommitFiles(repo, {{"hosts/web-01.toml",
                                "[[file]]\npath = \"/etc/motd\"\n"
                                "content = \"v1\\n\"\n"}});
  }
  TempDir root{"git-root"};
  std::string repo = root.Path("fleet.git");
  std::string first;
};

struct Host {
  TempDir dir{"host"};
  GitSourceOptions options;

  explicit Host(const std::string& url) {
    const char* tetherd = std::getenv("TETHERD");
    REQUIRE_MESSAGE(tetherd != nullptr, "TETHERD is set by meson");
    options.source.url = url;
    options.source.timeout = 10s;
    options.cache_dir = dir.path();
    options.worker_argv = {tetherd, "--git-worker"};
  }

  std::unique_ptr<GitSource> Source() const {
    auto source = GitSource::Create(options);
    REQUIRE_MESSAGE(source, (source ? "" : source.error().message()));
    return std::move(*source);
  }

  std::string Secret(const std::string& name, const std::string& content) const {
    dir.WriteFile(name, content, 0600);
    return dir.Path(name);
  }
};

std::string Motd(GitSource& source, const std::string& commit) {
  auto tree = source.OpenTree(commit);
  REQUIRE(tree);
  auto text = (*tree)->ReadFile("hosts/web-01.toml", 1 << 20);
  REQUIRE(text);
  return *text;
}

// Polls, fetches, reads, polls again without fetching, then follows a new commit.
void CheckFollows(Fleet& fleet, GitSource& source) {
  auto update = source.Update();
  REQUIRE_MESSAGE(update, (update ? "" : update.error().message()));
  CHECK(update->fetched);
  CHECK(update->commit == fleet.first);
  CHECK(Motd(source, update->commit).find("v1") != std::string::npos);

  auto again = source.Update();
  REQUIRE(again);
  CHECK_FALSE(again->fetched);  // a no-change poll does not fetch
  CHECK(again->commit == fleet.first);
  CHECK(source.fetch_count() == 1);

  const std::string second = CommitFiles(fleet.repo, {{"hosts/web-01.toml",
                                                       "[[file]]\npath = \"/etc/motd\"\n"
                                                       "content = \"v2\\n\"\n"}});
  auto moved = source.Update();
  REQUIRE(moved);
  CHECK(moved->fetched);
  CHECK(moved->commit == second);
  CHECK(Motd(source, second).find("v2") != std::string::npos);
  CHECK(source.Descends(second, fleet.first).value());
  CHECK(source.fetch_count() == 2);
}

// A TCP port that accepts connections (the kernel completes them) and never answers.
struct SilentServer {
  int fd = -1;
  int port = 0;
  SilentServer() {
    fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    REQUIRE(bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address)) == 0);
    REQUIRE(listen(fd, 16) == 0);
    socklen_t length = sizeof(address);
    getsockname(fd, reinterpret_cast<sockaddr*>(&address), &length);
    port = ntohs(address.sin_port);
  }
  ~SilentServer() { close(fd); }
};

}  // namespace

TEST_CASE("libgit2 starts without reading the system's CAs, which are read when asked") {
  tether::StartLibgit2WithoutTransports();
  // Debian's libgit2 (mbedTLS) reads the system bundle at its start; here it only said
  // where it would have.
  CHECK(tether::SystemCaLocation() == "/etc/ssl/certs/ca-certificates.crt");
  CHECK(tether::LoadTlsTrust(""));
  CHECK(tether::LoadTlsTrust(""));  // once
}

TEST_CASE("Follows the ref over git://") {
  Fleet fleet;
  GitDaemonServer server(fleet.root.path());
  Host host(server.url("fleet.git"));
  CheckFollows(fleet, *host.Source());
}

TEST_CASE("A url.insteadOf in the mirror's Git config does not move the fetch elsewhere") {
  Fleet fleet;
  GitDaemonServer server(fleet.root.path());
  Host host(server.url("fleet.git"));
  auto source = host.Source();
  REQUIRE(source->Update());
  // As a Git config anywhere the worker reads (the mirror's, the system's) could say:
  // the source's URL rewritten to a server that is not there.
  {
    std::ofstream config(host.dir.Path("mirror.git/config"), std::ios::app);
    config << "[url \"git://127.0.0.1:1/\"]\n\tinsteadOf = " << server.url("") << "\n";
  }
  const std::string second = CommitFiles(fleet.repo, {{"hosts/web-01.toml",
                                                       "[[file]]\npath = \"/etc/motd\"\n"
                                                       "content = \"v2\\n\"\n"}});
  auto moved = host.Source()->Update();
  REQUIRE_MESSAGE(moved, (moved ? "" : moved.error().message()));
  CHECK(moved->fetched);
  CHECK(moved->commit == second);
}

TEST_CASE("Follows the ref over http://") {
  Fleet fleet;
  GitHttpServer server(fleet.root.path());
  Host host(server.url("fleet.git"));
  CheckFollows(fleet, *host.Source());
}

TEST_CASE("Follows the ref over https:// with ca_file; refuses a server from another CA") {
  Fleet fleet;
  GitHttpOptions tls;
  tls.tls = true;
  GitHttpServer server(fleet.root.path(), tls);
  Host host(server.url("fleet.git"));
  host.options.source.ca_file = server.ca_file();
  CheckFollows(fleet, *host.Source());

  TempDir other_dir("other-ca");
  TestCa other(other_dir.path());
  Host wrong(server.url("fleet.git"));
  wrong.options.source.ca_file = other.cert();
  auto polled = wrong.Source()->Poll();
  REQUIRE_FALSE(polled);
  CHECK(polled.error().message().find("the TLS certificate of 'localhost' is not trusted") !=
        std::string::npos);

  // Without ca_file, the system's CAs (read by the worker at its first https:// source,
  // not at its start) do not hold the test CA either.
  Host system(server.url("fleet.git"));
  auto refused = system.Source()->Poll();
  REQUIRE_FALSE(refused);
  CHECK(refused.error().message().find("the TLS certificate of 'localhost' is not trusted") !=
        std::string::npos);
}

TEST_CASE("Follows the ref over ssh://, and refuses unknown and changed host keys") {
  Fleet fleet;
  GitSshServer server(fleet.root.path());
  Host host(server.url("fleet.git"));
  host.options.source.ssh_key = server.client_key();
  host.options.source.known_hosts = server.known_hosts();
  CheckFollows(fleet, *host.Source());

  Host unknown(server.url("fleet.git"));
  unknown.options.source.ssh_key = server.client_key();
  unknown.options.source.known_hosts = unknown.Secret("known_hosts", "# empty\n");
  auto polled = unknown.Source()->Poll();
  REQUIRE_FALSE(polled);
  CHECK(polled.error().message().find("the SSH host key of '127.0.0.1' port " +
                                      std::to_string(server.port()) + " is not in known_hosts") !=
        std::string::npos);

  // The same host name with another key: a changed host key.
  TempDir keys("keys");
  auto other = tether::testing::GenerateSshKey(keys.Path("other"));
  const std::string line = "[127.0.0.1]:" + std::to_string(server.port()) + " " +
                           other.public_line.substr(0, other.public_line.rfind(' ')) + "\n";
  Host changed(server.url("fleet.git"));
  changed.options.source.ssh_key = server.client_key();
  changed.options.source.known_hosts = changed.Secret("known_hosts", line);
  auto refused = changed.Source()->Poll();
  REQUIRE_FALSE(refused);
  CHECK(refused.error().message().find("does not match known_hosts (it changed: refusing to "
                                       "connect)") != std::string::npos);
}

TEST_CASE("The worker's known_hosts and CA copy are written again only when they change") {
  Fleet fleet;
  Host host("file://" + fleet.repo);
  host.options.source.known_hosts = host.Secret("known_hosts", "host-a ssh-ed25519 AAAA\n");
  host.options.source.ca_file = host.Secret("ca.pem", "-----BEGIN CERTIFICATE-----\n");
  host.options.start_worker = true;  // prepared at Create, not at the first request
  const std::string known_hosts = host.dir.Path("worker-home/.ssh/known_hosts");
  const std::string ca = host.dir.Path("worker-home/ca.pem");
  auto inode = [](const std::string& path) {
    struct stat st {};
    REQUIRE(stat(path.c_str(), &st) == 0);
    return st.st_ino;
  };
  host.Source();
  const auto known_hosts_inode = inode(known_hosts);
  const auto ca_inode = inode(ca);
  host.Source();  // the same: left as they are (an atomic write is a new inode)
  CHECK(inode(known_hosts) == known_hosts_inode);
  CHECK(inode(ca) == ca_inode);

  host.Secret("known_hosts", "host-b ssh-ed25519 BBBB\n");
  REQUIRE(chmod(ca.c_str(), 0666) == 0);
  host.Source();
  CHECK(inode(known_hosts) != known_hosts_inode);
  CHECK(host.dir.ReadFile("worker-home/.ssh/known_hosts") == "host-b ssh-ed25519 BBBB\n");
  CHECK(inode(ca) != ca_inode);
  struct stat st {};
  REQUIRE(stat(ca.c_str(), &st) == 0);
  CHECK((st.st_mode & 07777) == 0644);
}

TEST_CASE("Follows the ref over file://") {
  Fleet fleet;
  Host host("file://" + fleet.repo);
  CheckFollows(fleet, *host.Source());
}

// Runs git with `args` on `repo`; its output, trimmed of the last newline.
std::string Git(const Fleet& fleet, const std::string& repo, std::vector<std::string> args,
                const std::string& input = "") {
  tether::RunOptions run;
  run.argv = {"git", "-C", repo};
  run.argv.insert(run.argv.end(), args.begin(), args.end());
  run.env = tether::testing::GitEnvironment(fleet.root.path());
  if (!input.empty()) run.input = input;
  auto ran = tether::Run(run);
  REQUIRE(ran);
  REQUIRE_MESSAGE(ran->ok(), "git " << args.front() << ": " << ran->err);
  std::string out = ran->out;
  if (!out.empty() && out.back() == '\n') out.pop_back();
  return out;
}

TEST_CASE("A file:// fetch copies only what the mirror lacks, in packs git itself accepts") {
  Fleet fleet;
  // A submodule's commit in the tree: it lives in another repository, and is not fetched.
  const std::string listing = Git(fleet, fleet.repo, {"ls-tree", fleet.first + "^{tree}"});
  const std::string tree =
      Git(fleet, fleet.repo, {"mktree", "--missing"},
          listing + "\n160000 commit 0123456789abcdef0123456789abcdef01234567\tvendor\n");
  const std::string with_module =
      Git(fleet, fleet.repo, {"commit-tree", tree, "-p", fleet.first, "-m", "module"});
  Git(fleet, fleet.repo, {"update-ref", "refs/heads/main", with_module});
  Host host("file://" + fleet.repo);
  auto source = host.Source();
  const std::string packs = source->mirror_path() + "/objects/pack";
  auto pack_sizes = [&] {  // objects in each pack, smallest first
    std::vector<std::size_t> sizes;
    for (const auto& entry : std::filesystem::directory_iterator(packs)) {
      if (entry.path().extension() != ".idx") continue;
      std::ifstream index(entry.path(), std::ios::binary);
      const std::string listed = Git(fleet, source->mirror_path(), {"show-index"},
                                     std::string(std::istreambuf_iterator<char>(index), {}));
      sizes.push_back(static_cast<std::size_t>(std::count(listed.begin(), listed.end(), '\n') + 1));
    }
    std::sort(sizes.begin(), sizes.end());
    return sizes;
  };
  auto update = source->Update();
  REQUIRE_MESSAGE(update, (update ? "" : update.error().message()));
  CHECK(update->commit == with_module);
  // Two commits, two root trees, hosts/ and its blob; no submodule commit.
  CHECK(pack_sizes() == std::vector<std::size_t>{6});
  // git reads the pack, checks every object and that all the ref reaches is there.
  Git(fleet, source->mirror_path(), {"fsck", "--strict", "--no-dangling"});

  const std::string second = CommitFiles(fleet.repo, {{"hosts/web-01.toml", "# v2\n"}});
  update = source->Update();
  REQUIRE_MESSAGE(update, (update ? "" : update.error().message()));
  CHECK(update->commit == second);
  CHECK(Motd(*source, second) == "# v2\n");
  // Only the new commit, its root tree, hosts/ and the new blob.
  CHECK(pack_sizes() == std::vector<std::size_t>{4, 6});
  Git(fleet, source->mirror_path(), {"fsck", "--strict", "--no-dangling"});

  // Back to a commit the mirror has: the ref moves, and no pack is made.
  ForcePush(fleet.repo, "refs/heads/main", with_module);
  auto rewound = source->Update();
  REQUIRE_MESSAGE(rewound, (rewound ? "" : rewound.error().message()));
  CHECK(rewound->commit == with_module);
  CHECK(pack_sizes() == std::vector<std::size_t>{4, 6});
  ForcePush(fleet.repo, "refs/heads/main", second);

  // An object the source lost is an error that names it, and the mirror keeps its ref.
  const std::string lost = CommitFiles(fleet.repo, {{"hosts/web-01.toml", "# v3\n"}});
  const std::string blob = Git(fleet, fleet.repo, {"rev-parse", lost + ":hosts/web-01.toml"});
  std::filesystem::remove(fleet.repo + "/objects/" + blob.substr(0, 2) + "/" + blob.substr(2));
  auto broken = source->Update();
  REQUIRE_FALSE(broken);
  CHECK_MESSAGE(broken.error().message().find(blob) != std::string::npos, broken.error().message());
  CHECK(tether::testing::ReadRef(source->mirror_path(), "refs/tether/fetched") == second);
  CHECK(pack_sizes() == std::vector<std::size_t>{4, 6});

  // In its place, another object's file: its content does not hash to the id it is under.
  auto loose = [&](const std::string& id) {
    return fleet.repo + "/objects/" + id.substr(0, 2) + "/" + id.substr(2);
  };
  const std::string other = Git(fleet, fleet.repo, {"rev-parse", second + ":hosts/web-01.toml"});
  std::filesystem::copy_file(loose(other), loose(blob));
  auto corrupt = source->Update();
  REQUIRE_FALSE(corrupt);
  CHECK_MESSAGE(corrupt.error().message().find("object " + blob) != std::string::npos,
                corrupt.error().message());
  CHECK_MESSAGE(corrupt.error().message().find("does not hash to its id") != std::string::npos,
                corrupt.error().message());
  CHECK(tether::testing::ReadRef(source->mirror_path(), "refs/tether/fetched") == second);
  CHECK(pack_sizes() == std::vector<std::size_t>{4, 6});
  // Nothing of it was kept: the next fetch finds the same fault.
  auto again = source->Update();
  REQUIRE_FALSE(again);
  CHECK_MESSAGE(again.error().message().find("object " + blob) != std::string::npos,
                again.error().message());
  CHECK(pack_sizes() == std::vector<std::size_t>{4, 6});
}

TEST_CASE("A file:// fetch refuses a tree that names a tree as a blob") {
  Fleet fleet;
  // A tree Git's own tools refuse to make: its entry "notes" says blob, and names a tree
  // that nothing else reaches.
  const std::string blob =
      Git(fleet, fleet.repo, {"hash-object", "-w", "--stdin"}, "only in the hidden tree\n");
  const std::string hidden = Git(fleet, fleet.repo, {"mktree"}, "100644 blob " + blob + "\tx\n");
  std::string raw = "100644 notes";
  raw += '\0';
  for (std::size_t i = 0; i < hidden.size(); i += 2) {
    raw += static_cast<char>(std::stoi(hidden.substr(i, 2), nullptr, 16));
  }
  tether::testing::TempDir scratch("tree");
  scratch.WriteFile("tree", raw);
  const std::string tree = Git(
      fleet, fleet.repo, {"hash-object", "-t", "tree", "-w", "--literally", scratch.Path("tree")});
  const std::string commit = Git(fleet, fleet.repo, {"commit-tree", tree, "-m", "lying tree"});
  Git(fleet, fleet.repo, {"update-ref", "refs/heads/main", commit});
  Host host("file://" + fleet.repo);
  auto source = host.Source();
  auto refused = source->Update();
  REQUIRE_FALSE(refused);
  CHECK_MESSAGE(refused.error().message().find("object " + hidden +
                                               " is a tree where the source "
                                               "names a blob") != std::string::npos,
                refused.error().message());
  CHECK_FALSE(std::filesystem::exists(source->mirror_path() + "/refs/tether/fetched"));
}

// `size` bytes that do not compress (xorshift64).
std::string Noise(std::size_t size) {
  std::string noise(size, '\0');
  std::uint64_t x = 88172645463325252ULL;
  for (char& c : noise) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    c = static_cast<char>(x);
  }
  return noise;
}

TEST_CASE("A file:// fetch writes a pack and index git verifies, of every size of object") {
  Fleet fleet;
  // Sizes either side of the bound below which objects are stored, not compressed; text
  // that compresses and bytes that do not; in the source's pack, as deltas of each other.
  const std::string noise = Noise(70000);
  const std::map<std::string, std::string> files = {{"empty", ""},
                                                    {"below", std::string(16383, 'a')},
                                                    {"at", std::string(16384, 'a')},
                                                    {"text", std::string(100000, 'b') + "end\n"},
                                                    {"noise", noise},
                                                    {"noise2", noise.substr(1) + "x"}};
  const std::string commit = CommitFiles(fleet.repo, files);
  Git(fleet, fleet.repo, {"repack", "-a", "-d", "-q"});
  Host host("file://" + fleet.repo);
  auto source = host.Source();
  auto update = source->Update();
  REQUIRE_MESSAGE(update, (update ? "" : update.error().message()));
  CHECK(update->commit == commit);
  const std::string mirror = source->mirror_path();
  // git checks the pack's and the index's checksums, each entry's CRC-32 and offset, and
  // every object against its id.
  Git(fleet, mirror, {"fsck", "--strict", "--no-dangling"});
  for (const auto& entry : std::filesystem::directory_iterator(mirror + "/objects/pack")) {
    const std::string name = entry.path().filename().string();
    CHECK_MESSAGE(
        (name.starts_with("pack-") && (name.ends_with(".pack") || name.ends_with(".idx"))), name);
    if (name.ends_with(".idx")) {
      const std::string verified = Git(fleet, mirror, {"verify-pack", "-v", entry.path().string()});
      CHECK_MESSAGE(verified.find("non delta: ") != std::string::npos, verified);
      CHECK_MESSAGE(verified.find("chain length") == std::string::npos, verified);  // no deltas
    }
  }
  for (const auto& [path, content] : files) {
    tether::RunOptions run;
    run.argv = {"git", "-C", mirror, "cat-file", "blob", commit + ":" + path};
    run.env = tether::testing::GitEnvironment(fleet.root.path());
    auto ran = tether::Run(run);
    REQUIRE(ran);
    CHECK_MESSAGE(ran->out == content, path);
  }
  // A mirror whose packs went (objects/pack with them) is fetched into again, whole.
  std::filesystem::remove_all(mirror + "/objects/pack");
  const std::string next = CommitFiles(fleet.repo, {{"more", "more\n"}});
  update = source->Update();
  REQUIRE_MESSAGE(update, (update ? "" : update.error().message()));
  CHECK(update->commit == next);
  Git(fleet, mirror, {"fsck", "--strict", "--no-dangling"});
}

TEST_CASE("A source opened to read the mirror only prepares nothing of the worker") {
  Fleet fleet;
  Host host("file://" + fleet.repo);
  auto update = host.Source()->Update();  // the mirror, as a poll left it
  REQUIRE_MESSAGE(update, (update ? "" : update.error().message()));
  const std::string home = host.dir.Path("worker-home");
  std::filesystem::remove_all(home);

  // What a drift repair opens: neither a worker user that does not exist, nor a token
  // file that is not there, stops it from reading what it applied.
  host.options.use_worker = false;
  host.options.worker_user = "no-such-user-tether";
  host.options.source.token_file = host.dir.Path("no-such-token");
  auto reader = host.Source();
  CHECK(Motd(*reader, fleet.first).find("v1") != std::string::npos);
  CHECK_FALSE(std::filesystem::exists(home));
  auto polled = reader->Update();
  REQUIRE_FALSE(polled);
  CHECK(polled.error().message() == "this cycle reads the mirror only: it does not ask the source");
  CHECK(reader->worker_pid() <= 0);
  CHECK_FALSE(std::filesystem::exists(home));

  // Opened to ask the source, the same options are refused as they always were.
  host.options.use_worker = true;
  CHECK_FALSE(GitSource::Create(host.options));
}

TEST_CASE("A file:// source's poll that finds nothing new starts no git worker") {
  Fleet fleet;
  Host host("file://" + fleet.repo);
  auto git = [&](std::vector<std::string> args) {
    tether::RunOptions run;
    run.argv = {"git", "-C", fleet.repo};
    run.argv.insert(run.argv.end(), args.begin(), args.end());
    run.env = tether::testing::GitEnvironment(fleet.root.path());
    auto ran = tether::Run(run);
    REQUIRE(ran);
    REQUIRE_MESSAGE(ran->ok(), ran->err);
  };
  // Each cycle process has a source of its own: `expect_worker` says whether this one
  // needed a worker to answer.
  auto poll = [&](const std::string& expected, bool expect_worker) {
    auto source = host.Source();
    auto update = source->Update();
    REQUIRE_MESSAGE(update, (update ? "" : update.error().message()));
    CHECK(update->commit == expected);
    CHECK((source->worker_pid() > 0) == expect_worker);
    return update->fetched;
  };
  CHECK(poll(fleet.first, true));         // the first fetch
  CHECK_FALSE(poll(fleet.first, false));  // the loose ref, read here
  const std::string second = CommitFiles(fleet.repo, {{"hosts/web-01.toml", "# v2\n"}});
  CHECK(poll(second, true));  // a commit the mirror lacks: the worker fetches it
  CHECK_FALSE(poll(second, false));

  git({"pack-refs", "--all"});  // refs/heads/main is now a line of packed-refs
  REQUIRE_FALSE(std::filesystem::exists(fleet.repo + "/refs/heads/main"));
  CHECK_FALSE(poll(second, false));

  // What is not read here is the worker's, and comes out the same.
  git({"symbolic-ref", "refs/heads/alias", "refs/heads/main"});
  host.options.source.ref = "refs/heads/alias";
  CHECK_FALSE(poll(second, true));
  git({"tag", "-a", "v1", "-m", "v1", fleet.first});  // an annotated tag: its commit is peeled
  host.options.source.ref = "refs/tags/v1";
  poll(fleet.first, true);

  // A FIFO where the ref should be: this process does not wait on it; the worker, which
  // does, is stopped at the deadline.
  host.options.source.ref = "refs/heads/main";
  std::filesystem::remove(fleet.repo + "/packed-refs");
  REQUIRE(mkfifo((fleet.repo + "/refs/heads/main").c_str(), 0644) == 0);
  host.options.source.timeout = 3s;  // libgit2 in the worker may wait on it
  auto failed = host.Source()->Update();
  REQUIRE_FALSE(failed);
  CHECK(failed.error().message().find("no answer from the git worker within 3000 ms") !=
        std::string::npos);
}

TEST_CASE("Only plain file:// refs are read without the worker") {
  TempDir dir("local-ref");
  // A git dir as libgit2 tells one: HEAD, objects/, refs/.
  auto git_dir = [&](const std::string& at) {
    dir.WriteFile(at + "/HEAD", "ref: refs/heads/main\n");
    std::filesystem::create_directories(dir.Path(at + "/objects"));
  };
  const std::string id(40, 'a');
  git_dir("bare");
  dir.WriteFile("bare/refs/heads/main", id + "\n");
  dir.WriteFile("bare/refs/heads/other", "ref: refs/heads/main\n");
  dir.WriteFile("bare/refs/heads/short", id.substr(1) + "\n");
  dir.WriteFile("bare/refs/heads/upper", std::string(40, 'A') + "\n");
  dir.WriteFile("bare/packed-refs",
                "# pack-refs with: peeled fully-peeled sorted\n" + std::string(40, 'b') +
                    " refs/tags/v1\n^" + std::string(40, 'c') + "\n" + std::string(40, 'd') +
                    " refs/heads/main\n" + std::string(40, 'e') + " refs/tags/twice\n" +
                    std::string(40, 'f') + " refs/tags/twice\n");
  const std::string bare = "file://" + dir.Path("bare");
  CHECK(tether::ReadLocalRef(bare, "refs/heads/main") == id);  // loose before packed
  CHECK(tether::ReadLocalRef(bare + "/", "refs/heads/main") == id);
  CHECK(tether::ReadLocalRef(bare, "refs/tags/v1") == std::string(40, 'b'));
  CHECK_FALSE(tether::ReadLocalRef(bare, "refs/tags/twice"));   // which one would git take?
  CHECK_FALSE(tether::ReadLocalRef(bare, "refs/heads/other"));  // symbolic
  CHECK_FALSE(tether::ReadLocalRef(bare, "refs/heads/short"));
  CHECK_FALSE(tether::ReadLocalRef(bare, "refs/heads/upper"));
  CHECK_FALSE(tether::ReadLocalRef(bare, "refs/heads/none"));
  for (const char* hostile :
       {"HEAD", "main", "refs/heads/../../../etc/passwd", "refs//heads/main", "refs/heads/.main",
        "refs/heads/main.lock", "refs/heads/", "refs/heads/ma in", "refs/heads/main\n"}) {
    CHECK_MESSAGE(!tether::ReadLocalRef(bare, hostile), hostile);
  }
  for (const std::string& url :
       {"file://localhost" + dir.Path("bare"), dir.Path("bare"), "file://" + dir.Path("b%61re"),
        "file:///" + dir.Path("bare"), std::string("file://"), std::string("file:///"),
        std::string("http://example.invalid/bare")}) {
    CHECK_MESSAGE(!tether::ReadLocalRef(url, "refs/heads/main"), url);
  }
  // No symlink is followed, as the ref or as a directory on the way to it; nothing but a
  // regular file is read (a FIFO would block a reader that waited).
  std::filesystem::create_symlink(dir.Path("bare/refs/heads/main"),
                                  dir.Path("bare/refs/heads/link"));
  CHECK_FALSE(tether::ReadLocalRef(bare, "refs/heads/link"));
  dir.WriteFile("elsewhere/main", id + "\n");
  std::filesystem::create_directories(dir.Path("bare/refs/remotes"));
  std::filesystem::create_directory_symlink(dir.Path("elsewhere"),
                                            dir.Path("bare/refs/remotes/away"));
  CHECK_FALSE(tether::ReadLocalRef(bare, "refs/remotes/away/main"));
  REQUIRE(mkfifo(dir.Path("bare/refs/heads/fifo").c_str(), 0644) == 0);
  CHECK_FALSE(tether::ReadLocalRef(bare, "refs/heads/fifo"));
  std::filesystem::create_directories(dir.Path("bare/refs/heads/folder"));
  CHECK_FALSE(tether::ReadLocalRef(bare, "refs/heads/folder"));

  // A repository with a working tree: its .git directory. A .git file (a worktree's link),
  // a .git directory that is no git dir, a git dir without HEAD or objects, a commondir:
  // the worker's.
  git_dir("work/.git");
  dir.WriteFile("work/.git/refs/heads/main", id + "\n");
  CHECK(tether::ReadLocalRef("file://" + dir.Path("work"), "refs/heads/main") == id);
  git_dir("linked");
  dir.WriteFile("linked/.git", "gitdir: " + dir.Path("work/.git") + "\n");
  dir.WriteFile("linked/refs/heads/main", id + "\n");
  CHECK_FALSE(tether::ReadLocalRef("file://" + dir.Path("linked"), "refs/heads/main"));
  git_dir("shadowed");
  dir.WriteFile("shadowed/refs/heads/main", id + "\n");
  CHECK(tether::ReadLocalRef("file://" + dir.Path("shadowed"), "refs/heads/main") == id);
  std::filesystem::create_directories(dir.Path("shadowed/.git"));
  CHECK_FALSE(tether::ReadLocalRef("file://" + dir.Path("shadowed"), "refs/heads/main"));
  dir.WriteFile("plain/refs/heads/main", id + "\n");
  CHECK_FALSE(tether::ReadLocalRef("file://" + dir.Path("plain"), "refs/heads/main"));
  dir.WriteFile("bare/commondir", "..\n");
  CHECK_FALSE(tether::ReadLocalRef(bare, "refs/heads/main"));
}

TEST_CASE("HTTPS token auth: bearer and basic, and the token never shows in an error") {
  Fleet fleet;
  GitHttpOptions options;
  options.tls = true;
  options.auth = HttpAuth{"deploy", "basic-pass-1", "bearer-token-7f3a"};
  GitHttpServer server(fleet.root.path(), options);

  Host none(server.url("fleet.git"));
  none.options.source.ca_file = server.ca_file();
  auto anonymous = none.Source()->Poll();
  REQUIRE_FALSE(anonymous);
  CHECK(anonymous.error().message().find("the server asks for credentials and none are "
                                         "configured") != std::string::npos);

  Host bearer(server.url("fleet.git"));
  bearer.options.source.ca_file = server.ca_file();
  bearer.options.source.token_file = bearer.Secret("token", "bearer-token-7f3a\n");
  auto with_bearer = bearer.Source()->Update();
  REQUIRE_MESSAGE(with_bearer, (with_bearer ? "" : with_bearer.error().message()));
  CHECK(with_bearer->commit == fleet.first);

  Host basic(server.url("fleet.git"));
  basic.options.source.ca_file = server.ca_file();
  basic.options.source.token_file = basic.Secret("token", "deploy:basic-pass-1\n");
  auto with_basic = basic.Source()->Update();
  REQUIRE_MESSAGE(with_basic, (with_basic ? "" : with_basic.error().message()));

  Host wrong(server.url("fleet.git"));
  wrong.options.source.ca_file = server.ca_file();
  wrong.options.source.token_file = wrong.Secret("token", "deploy:wrong-secret-9d1\n");
  auto refused = wrong.Source()->Poll();
  REQUIRE_FALSE(refused);
  CHECK(refused.error().message().find("wrong-secret-9d1") == std::string::npos);
  CHECK(refused.error().message().find("refused the credentials") != std::string::npos);
}

TEST_CASE("A silent server hits the deadline, and the next poll works again") {
  Fleet fleet;
  SilentServer silent;
  GitDaemonServer good(fleet.root.path());
  Host host("git://127.0.0.1:" + std::to_string(silent.port) + "/fleet.git");
  host.options.source.timeout = 1s;
  host.options.source.mirrors = {good.url("fleet.git")};
  auto source = host.Source();

  const auto start = std::chrono::steady_clock::now();
  auto polled = source->Poll();
  const auto elapsed = std::chrono::steady_clock::now() - start;
  REQUIRE_MESSAGE(polled, (polled ? "" : polled.error().message()));
  CHECK(polled->source == 1);  // the mirror answered after the primary's deadline
  CHECK(elapsed >= 1s);
  CHECK(elapsed < 5s);

  Host only_silent("git://127.0.0.1:" + std::to_string(silent.port) + "/fleet.git");
  only_silent.options.source.timeout = 1s;
  auto failed = only_silent.Source()->Poll();
  REQUIRE_FALSE(failed);
  CHECK(failed.error().message().find("no answer from the git worker within 1000 ms (killed it)") !=
        std::string::npos);
}

TEST_CASE("Mirrors are tried in order when the primary is down") {
  Fleet fleet;
  GitDaemonServer mirror(fleet.root.path());
  const int dead_port = tether::testing::PickFreePort();
  Host host("git://127.0.0.1:" + std::to_string(dead_port) + "/fleet.git");
  host.options.source.mirrors = {"git://127.0.0.1:" + std::to_string(dead_port) + "/other.git",
                                 mirror.url("fleet.git")};
  auto source = host.Source();
  auto update = source->Update();
  REQUIRE_MESSAGE(update, (update ? "" : update.error().message()));
  CHECK(update->source == 2);
  CHECK(update->commit == fleet.first);
}

TEST_CASE("A server that is down, then up again, is followed again") {
  Fleet fleet;
  const int port = tether::testing::PickFreePort();
  auto server = std::make_unique<GitDaemonServer>(fleet.root.path(), [port] { return port; });
  Host host(server->url("fleet.git"));
  auto source = host.Source();
  REQUIRE(source->Update());
  server.reset();
  auto down = source->Poll();
  REQUIRE_FALSE(down);
  CHECK(down.error().message().find("git://127.0.0.1:" + std::to_string(port)) !=
        std::string::npos);
  const std::string second = CommitFiles(fleet.repo, {{"hosts/web-01.toml", "# v2\n"}});
  server = std::make_unique<GitDaemonServer>(fleet.root.path(), [port] { return port; });
  auto up = source->Update();
  REQUIRE_MESSAGE(up, (up ? "" : up.error().message()));
  CHECK(up->commit == second);
}

TEST_CASE("A force-push back to an older commit is seen as a rewind") {
  Fleet fleet;
  GitDaemonServer server(fleet.root.path());
  Host host(server.url("fleet.git"));
  auto source = host.Source();
  const std::string second = CommitFiles(fleet.repo, {{"hosts/web-01.toml", "# v2\n"}});
  REQUIRE(source->Update().value().commit == second);
  ForcePush(fleet.repo, "refs/heads/main", fleet.first);
  auto rewound = source->Update();
  REQUIRE(rewound);
  CHECK(rewound->commit == fleet.first);
  CHECK_FALSE(source->Descends(fleet.first, second).value());
  CHECK(source->Descends(second, fleet.first).value());
}

TEST_CASE("A pinned commit is applied whatever the ref says") {
  Fleet fleet;
  GitDaemonServer server(fleet.root.path());
  CommitFiles(fleet.repo, {{"hosts/web-01.toml", "# v2\n"}});
  Host host(server.url("fleet.git"));
  host.options.source.pin = fleet.first;
  auto source = host.Source();
  auto update = source->Update();
  REQUIRE_MESSAGE(update, (update ? "" : update.error().message()));
  CHECK(update->commit == fleet.first);
  CHECK_FALSE(source->Update().value().fetched);  // the pin is in the mirror: no network

  Host unknown(server.url("fleet.git"));
  unknown.options.source.pin = std::string(40, 'a');
  auto missing = unknown.Source()->Update();
  REQUIRE_FALSE(missing);
  CHECK(missing.error().message() ==
        "pinned commit " + std::string(40, 'a') + " is not in the history of 'refs/heads/main'");
}

TEST_CASE("A tag can be followed") {
  Fleet fleet;
  GitDaemonServer server(fleet.root.path());
  tether::RunOptions tag;
  tag.argv = {"git", "-C", fleet.repo, "tag", "-a", "v1", "-m", "v1", fleet.first};
  tag.env = tether::testing::GitEnvironment(fleet.root.path());
  auto tagged = tether::Run(tag);
  REQUIRE(tagged);
  REQUIRE_MESSAGE(tagged->ok(), tagged->err);
  CommitFiles(fleet.repo, {{"hosts/web-01.toml", "# later\n"}});
  for (const std::string& url : {server.url("fleet.git"), "file://" + fleet.repo}) {
    CAPTURE(url);
    Host host(url);
    host.options.source.ref = "refs/tags/v1";
    auto update = host.Source()->Update();
    REQUIRE_MESSAGE(update, (update ? "" : update.error().message()));
    CHECK(update->commit == fleet.first);
  }
}

TEST_CASE("As root, the git worker runs as an unprivileged user") {
  if (geteuid() != 0) return;  // CI runs as root
  Fleet fleet;
  GitDaemonServer server(fleet.root.path());
  Host host(server.url("fleet.git"));
  host.options.worker_user = "nobody";
  auto source = host.Source();
  auto update = source->Update();
  REQUIRE_MESSAGE(update, (update ? "" : update.error().message()));
  CHECK(update->commit == fleet.first);
  CHECK(Motd(*source, update->commit).find("v1") != std::string::npos);

  const pid_t worker = source->worker_pid();
  REQUIRE(worker > 0);
  struct stat proc {};
  REQUIRE(stat(("/proc/" + std::to_string(worker)).c_str(), &proc) == 0);
  CHECK(proc.st_uid == 65534);
  // And it can never gain privileges again, from setuid programs or file capabilities.
  std::ifstream status("/proc/" + std::to_string(worker) + "/status");
  std::string line;
  bool no_new_privs = false;
  while (std::getline(status, line)) no_new_privs |= line == "NoNewPrivs:\t1";
  CHECK(no_new_privs);
  struct stat mirror {};
  REQUIRE(stat((source->mirror_path() + "/objects").c_str(), &mirror) == 0);
  CHECK(mirror.st_uid == 65534);

  // https as that user: the CA file it could not read itself is handed over.
  GitHttpOptions tls;
  tls.tls = true;
  GitHttpServer https(fleet.root.path(), tls);
  Host secure(https.url("fleet.git"));
  secure.options.worker_user = "nobody";
  secure.options.source.ca_file = https.ca_file();
  auto fetched = secure.Source()->Update();
  REQUIRE_MESSAGE(fetched, (fetched ? "" : fetched.error().message()));

  Host missing(server.url("fleet.git"));
  missing.options.worker_user = "no-such-user-tether";
  missing.options.start_worker = true;
  auto refused = GitSource::Create(missing.options);
  REQUIRE_FALSE(refused);
  CHECK(refused.error().message() == "git worker user 'no-such-user-tether' does not exist");
  // Without a worker to start at once, the user is looked up at the first request.
  missing.options.start_worker = false;
  auto later = missing.Source()->Update();
  REQUIRE_FALSE(later);
  CHECK(later.error().message() == "git worker user 'no-such-user-tether' does not exist");
}

TEST_CASE("A file:// poll that finds nothing new looks up no user and prepares nothing") {
  Fleet fleet;
  Host host("file://" + fleet.repo);
  REQUIRE(host.Source()->Update());  // the mirror has the commit now
  // A user that does not exist, and no worker home: neither is needed to find that the
  // source's ref names a commit the mirror has.
  std::filesystem::remove_all(host.dir.Path("worker-home"));
  host.options.worker_user = "no-such-user-tether";
  auto source = host.Source();
  auto update = source->Update();
  REQUIRE_MESSAGE(update, (update ? "" : update.error().message()));
  CHECK(update->commit == fleet.first);
  CHECK_FALSE(update->fetched);
  CHECK(source->worker_pid() == -1);
  CHECK_FALSE(std::filesystem::exists(host.dir.Path("worker-home")));
  // A new commit needs the worker: now the user is looked up, and refused.
  (void)CommitFiles(fleet.repo, {{"hosts/web-01.toml", "motd = \"v2\"\n"}});
  auto fetch = source->Update();
  REQUIRE_FALSE(fetch);
  CHECK(fetch.error().message() == "git worker user 'no-such-user-tether' does not exist");
}

TEST_CASE("As root, a file:// repo owned by root is fetched by the unprivileged worker") {
  if (geteuid() != 0) return;  // CI runs as root
  Fleet fleet;                 // owned by root, readable by all (as /srv/fleet.git would be)
  std::filesystem::permissions(fleet.root.path(), std::filesystem::perms::owner_all |
                                                      std::filesystem::perms::group_read |
                                                      std::filesystem::perms::group_exec |
                                                      std::filesystem::perms::others_read |
                                                      std::filesystem::perms::others_exec);
  Host host("file://" + fleet.repo);
  host.options.worker_user = "nobody";
  auto source = host.Source();
  auto update = source->Update();
  REQUIRE_MESSAGE(update, (update ? "" : update.error().message()));
  CHECK(update->commit == fleet.first);
  CHECK(Motd(*source, update->commit).find("v1") != std::string::npos);
}

TEST_CASE("As root, what the worker could put in place of its directories is never handed over") {
  if (geteuid() != 0) return;  // CI runs as root
  Fleet fleet;
  Host host("file://" + fleet.repo);
  host.options.worker_user = "nobody";
  host.options.start_worker = true;  // the worker's directories prepared at Create
  (void)host.Source();               // worker-home/.ssh made, and given to nobody
  // The worker's user owns worker-home: it could swap .ssh for a hard link to a root-only
  // file, or a symlink to a root-owned directory.
  const std::string secret = host.Secret("root-only", "secret\n");
  const std::string ssh = host.dir.Path("worker-home/.ssh");
  for (const bool hard_link : {true, false}) {
    CAPTURE(hard_link);
    std::filesystem::remove_all(ssh);
    if (hard_link) {
      std::filesystem::create_hard_link(secret, ssh);
    } else {
      std::filesystem::create_directory_symlink(host.dir.Path("."), ssh);
    }
    auto refused = GitSource::Create(host.options);
    REQUIRE_FALSE(refused);
    CHECK(refused.error().message().find("is not a directory; refusing to hand it to the git "
                                         "worker") != std::string::npos);
    struct stat file {};
    REQUIRE(stat(secret.c_str(), &file) == 0);
    CHECK(file.st_uid == 0);
    CHECK((file.st_mode & 07777) == 0600);
    REQUIRE(stat(host.dir.path().c_str(), &file) == 0);
    CHECK(file.st_uid == 0);
  }
}

TEST_CASE("A fetch bigger than source.max_fetch is stopped; partial packs are removed") {
  Fleet fleet;
  const std::string noise = Noise(2 << 20);  // 2 MiB that do not compress
  const std::string big = CommitFiles(fleet.repo, {{"noise.bin", noise}});
  GitDaemonServer server(fleet.root.path());
  for (const std::string& url : {"file://" + fleet.repo, server.url("fleet.git")}) {
    CAPTURE(url);
    Host host(url);
    host.options.source.max_fetch = 1 << 20;
    auto source = host.Source();
    // What a fetch killed at source.timeout leaves behind.
    const std::string packs = source->mirror_path() + "/objects/pack";
    std::filesystem::create_directories(packs);
    for (const char* left : {"pack_git2_left0ver", "tmp_pack_left0v", "tmp_idx_left0v"}) {
      WriteText(packs + "/" + left, "partial");
    }
    auto stopped = source->Update();
    REQUIRE_FALSE(stopped);
    CHECK_MESSAGE(stopped.error().message().find("more than source.max_fetch (1048576 bytes)") !=
                      std::string::npos,
                  stopped.error().message());
    // Neither what was left nor what this fetch began (a file:// one's temporary files).
    for (const auto& entry : std::filesystem::directory_iterator(packs)) {
      CHECK_MESSAGE(entry.path().filename().string().starts_with("pack-"), entry.path());
    }
    host.options.source.max_fetch = 64 << 20;
    auto fetched = host.Source()->Update();
    REQUIRE_MESSAGE(fetched, (fetched ? "" : fetched.error().message()));
    CHECK(fetched->commit == big);
  }
}

TEST_CASE("The mirror's packs are repacked into one past 32, and nothing is lost") {
  Fleet fleet;
  GitDaemonServer server(fleet.root.path());
  Host host(server.url("fleet.git"));
  auto source = host.Source();
  auto packs = [&] {
    std::size_t count = 0;
    for (const auto& entry :
         std::filesystem::directory_iterator(source->mirror_path() + "/objects/pack")) {
      count += entry.path().extension() == ".pack" ? 1 : 0;
    }
    return count;
  };
  std::vector<std::string> commits = {fleet.first};
  std::size_t most = 0;
  for (int i = 0; i < 40; ++i) {
    if (i > 0) {
      commits.push_back(CommitFiles(
          fleet.repo, {{"hosts/web-01.toml", "[[file]]\npath = \"/etc/motd\"\ncontent = \"v" +
                                                 std::to_string(i) + "\\n\"\n"}}));
    }
    auto update = source->Update();
    REQUIRE_MESSAGE(update, (update ? "" : update.error().message()));
    REQUIRE(update->commit == commits.back());
    // Read at once by the same source, whose handles predate a repack.
    CHECK(Motd(*source, update->commit).find("v" + std::to_string(i == 0 ? 1 : i)) !=
          std::string::npos);
    most = std::max(most, packs());
  }
  CHECK(most == 32);    // one a fetch until the 33rd, which repacks
  CHECK(packs() == 8);  // the repack's, and one for each fetch since
  // Every commit is still there, the first included, read by a new source too.
  auto fresh = host.Source();
  for (const auto& commit : commits) CHECK(fresh->OpenTree(commit));
  CHECK(Motd(*fresh, commits[1]).find("v1") != std::string::npos);
}

TEST_CASE("The git worker is replaced after its share of requests") {
  Fleet fleet;
  Host host("file://" + fleet.repo);
  auto source = host.Source();
  REQUIRE(source->Poll());
  const pid_t first = source->worker_pid();
  for (int i = 1; i < tether::GitWorkerClient::kRequestsPerWorker; ++i) REQUIRE(source->Poll());
  CHECK(source->worker_pid() == first);
  auto polled = source->Poll();
  REQUIRE(polled);
  CHECK(polled->commit == fleet.first);
  CHECK(source->worker_pid() != first);
  CHECK(kill(first, 0) != 0);  // the old one exited and was reaped
}

namespace {

struct Signers {
  TempDir dir{"signers"};
  tether::testing::SshKeyPair ops = tether::testing::GenerateSshKey(dir.Path("ops"));
  tether::testing::SshKeyPair other =
      tether::testing::GenerateSshKey(dir.Path("other"), tether::testing::SshKeyType::kEcdsaP256);

  tether::TrustPolicy Policy(const std::string& options = "") const {
    const std::string file = dir.Path("allowed_signers");
    dir.WriteFile("allowed_signers", "ops@example.com " + options + (options.empty() ? "" : " ") +
                                         ops.public_line + "\n");
    tether::TrustConfig trust;
    trust.allowed_signers = file;
    auto policy = tether::LoadTrustPolicy(trust);
    REQUIRE_MESSAGE(policy, (policy ? "" : policy.error().message()));
    return *policy;
  }
};

tether::testing::CommitOptions SignedBy(const std::string& key) {
  tether::testing::CommitOptions options;
  options.signing_key = key;
  return options;
}

std::int64_t Now() {
  return std::chrono::duration_cast<std::chrono::seconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

}  // namespace

TEST_CASE("Signed, unsigned, untrusted and expired-key commits") {
  Fleet fleet;
  Signers signers;
  GitHttpServer server(fleet.root.path());
  Host host(server.url("fleet.git"));
  auto source = host.Source();
  const auto policy = signers.Policy();

  const std::string good = CommitFiles(fleet.repo, {{"hosts/web-01.toml", "# signed\n"}},
                                       SignedBy(signers.ops.private_key));
  REQUIRE(source->Update().value().commit == good);
  auto accepted = tether::CheckCommit(*source, good, fleet.first, policy, Now());
  REQUIRE_MESSAGE(accepted, (accepted ? "" : accepted.error().message()));
  REQUIRE(accepted->signer);
  CHECK(accepted->signer->principal == "ops@example.com");
  CHECK(accepted->signer->key_type == "ssh-ed25519");

  auto unsigned_commit = tether::CheckCommit(*source, fleet.first, std::nullopt, policy, Now());
  REQUIRE_FALSE(unsigned_commit);
  CHECK(unsigned_commit.error().code() == tether::SignatureErrc::kUnsigned);
  CHECK(unsigned_commit.error().message() ==
        "refusing commit " + fleet.first.substr(0, 12) + ": commit is not signed");

  const std::string untrusted = CommitFiles(fleet.repo, {{"hosts/web-01.toml", "# other\n"}},
                                            SignedBy(signers.other.private_key));
  REQUIRE(source->Update().value().commit == untrusted);
  auto unknown = tether::CheckCommit(*source, untrusted, good, policy, Now());
  REQUIRE_FALSE(unknown);
  CHECK(unknown.error().code() == tether::SignatureErrc::kUnknownKey);

  const auto expired_policy = signers.Policy("valid-before=\"20200101\"");
  auto expired = tether::CheckCommit(*source, good, fleet.first, expired_policy, Now());
  REQUIRE_FALSE(expired);
  CHECK(expired.error().code() == tether::SignatureErrc::kKeyExpired);

  // Without require_signed an unsigned commit passes, and no signer is claimed.
  auto relaxed = policy;
  relaxed.require_signed = false;
  relaxed.signers.clear();
  auto passes = tether::CheckCommit(*source, untrusted, good, relaxed, Now());
  REQUIRE(passes);
  CHECK_FALSE(passes->signer);
}

TEST_CASE("A force-push back to older history is refused unless allow_rewind") {
  Fleet fleet;
  GitDaemonServer server(fleet.root.path());
  Host host(server.url("fleet.git"));
  auto source = host.Source();
  const std::string second = CommitFiles(fleet.repo, {{"hosts/web-01.toml", "# v2\n"}});
  REQUIRE(source->Update().value().commit == second);
  tether::TrustPolicy policy;
  policy.require_signed = false;
  REQUIRE(tether::CheckCommit(*source, second, fleet.first, policy, Now()));  // forward

  ForcePush(fleet.repo, "refs/heads/main", fleet.first);
  REQUIRE(source->Update().value().commit == fleet.first);
  auto refused = tether::CheckCommit(*source, fleet.first, second, policy, Now());
  REQUIRE_FALSE(refused);
  CHECK(refused.error().Is(std::errc::operation_not_permitted));
  CHECK(refused.error().message() ==
        "refusing commit " + fleet.first.substr(0, 12) +
            ": it does not descend from the applied commit " + second.substr(0, 12) +
            " (history was rewound, e.g. by a force-push); set trust.allow_rewind to accept it");

  policy.allow_rewind = true;
  CHECK(tether::CheckCommit(*source, fleet.first, second, policy, Now()));
}

TEST_CASE("require_signed with an empty allowed_signers file is a configuration error") {
  TempDir dir("trust");
  dir.WriteFile("allowed_signers", "# nobody yet\n");
  tether::TrustConfig trust;
  trust.allowed_signers = dir.Path("allowed_signers");
  auto policy = tether::LoadTrustPolicy(trust);
  REQUIRE_FALSE(policy);
  CHECK(policy.error().message() ==
        "trust.require_signed is true but trust.allowed_signers lists no key");
}

TEST_CASE("The renderer reads a host's profile straight from a fetched commit") {
  Fleet fleet;
  GitDaemonServer server(fleet.root.path());
  const std::string commit =
      CommitFiles(fleet.repo, {{"hosts/web-01.toml", "include = [\"roles/base.toml\"]\n"},
                               {"roles/base.toml",
                                "[[file]]\npath = \"/etc/motd\"\nsource = \"files/motd\"\n"
                                "template = true\n"},
                               {"files/motd", "hello {{ host.hostname }}\n"}});
  Host host(server.url("fleet.git"));
  auto source = host.Source();
  REQUIRE(source->Update().value().commit == commit);
  auto tree = source->OpenTree(commit);
  REQUIRE(tree);
  tether::RenderOptions options;
  options.profile = "hosts/web-01.toml";
  options.host.hostname = "web-01";
  tether::Diagnostics diagnostics;
  auto state = tether::RenderProfile(**tree, options, diagnostics);
  CHECK(diagnostics.ToString() == "");
  REQUIRE(state.resources.size() == 1);
  CHECK(std::get<tether::FileSpec>(state.resources[0].spec).content == "hello web-01\n");
}

// A tree that passes everything to a commit's tree, counting file reads.
class CountingTree final : public tether::Tree {
 public:
  explicit CountingTree(tether::Tree& tree) : tree_(tree) {}
  tether::Result<tether::TreeEntryType> Type(std::string_view path) override {
    return tree_.Type(path);
  }
  tether::Result<std::string> ReadFile(std::string_view path, std::size_t max_size) override {
    reads.emplace_back(path);
    return tree_.ReadFile(path, max_size);
  }
  tether::Result<std::string> ReadSymlink(std::string_view path) override {
    return tree_.ReadSymlink(path);
  }
  tether::Result<std::vector<std::string>> List(std::string_view path) override {
    return tree_.List(path);
  }
  tether::Result<std::optional<tether::TreeBlob>> Blob(std::string_view path) override {
    return tree_.Blob(path);
  }
  tether::Result<std::string> ReadBlob(std::string_view path, const tether::ContentId& id,
                                       std::size_t max_size) override {
    reads.push_back("by id: " + std::string(path));
    return tree_.ReadBlob(path, id, max_size);
  }
  std::vector<std::string> reads;

 private:
  tether::Tree& tree_;
};

TEST_CASE("A commit's source files are known by their blob ids, and read only to be written") {
  Fleet fleet;
  GitDaemonServer server(fleet.root.path());
  const std::string commit =
      CommitFiles(fleet.repo, {{"hosts/web-01.toml",
                                "[[file]]\npath = \"/etc/app.conf\"\nsource = \"files/app.conf\"\n"
                                "[[file]]\npath = \"/etc/motd\"\nsource = \"files/motd\"\n"
                                "template = true\n"
                                "[[unit]]\nname = \"app.service\"\nsource = \"units/app\"\n"},
                               {"files/app.conf", "port = 1\n"},
                               {"files/motd", "on {{ host.hostname }}\n"},
                               {"units/app", "[Service]\nExecStart=/bin/true\n"}});
  Host host(server.url("fleet.git"));
  auto source = host.Source();
  REQUIRE(source->Update().value().commit == commit);
  auto opened = source->OpenTree(commit);
  REQUIRE(opened);
  std::shared_ptr<tether::Tree> tree = std::move(*opened);

  // What git itself says the blob is.
  tether::RunOptions rev_parse;
  rev_parse.argv = {"git", "-C", fleet.repo, "rev-parse", commit + ":files/app.conf"};
  rev_parse.timeout = 10s;
  const std::string blob_id = tether::Run(rev_parse).value().out.substr(0, 40);
  auto blob = tree->Blob("files/app.conf");
  REQUIRE(blob);
  REQUIRE(blob->has_value());
  CHECK(tether::ContentIdHex((*blob)->id) == blob_id);
  CHECK((*blob)->size == 9);
  CHECK(tree->Blob("files").error().message() == "'files' is not a file");
  CHECK(tree->Blob("files/none").error().Is(std::errc::no_such_file_or_directory));
  // Read by its id alone, as a drift repair does.
  CHECK(tree->ReadBlob("files/app.conf", (*blob)->id, 9).value() == "port = 1\n");
  CHECK(tree->ReadBlob("files/app.conf", (*blob)->id, 8).error().Is(std::errc::file_too_large));
  tether::ContentId missing = (*blob)->id;
  missing[0] ^= 0xff;
  CHECK(tree->ReadBlob("files/app.conf", missing, 9).error().Is(std::errc::io_error));
  // An id that names a tree, not a file, is not read as one.
  rev_parse.argv = {"git", "-C", fleet.repo, "rev-parse", commit + ":files"};
  const std::string tree_id = tether::Run(rev_parse).value().out.substr(0, 40);
  tether::ContentId folder{};
  for (std::size_t i = 0; i < folder.size(); ++i) {
    folder[i] = static_cast<unsigned char>(std::stoi(tree_id.substr(2 * i, 2), nullptr, 16));
  }
  CHECK(!tree->ReadBlob("files", folder, 1 << 20));

  // Rendered for tetherd (contents read again when needed): the plain source is not read,
  // the template is (it must be expanded), and so is a unit (units are held, not re-read).
  auto counting = std::make_shared<CountingTree>(*tree);
  tether::RenderOptions options;
  options.profile = "hosts/web-01.toml";
  options.host.hostname = "web-01";
  options.content_tree = counting;
  tether::Diagnostics diagnostics;
  auto state = tether::RenderProfile(*counting, options, diagnostics);
  CHECK(diagnostics.ToString() == "");
  CHECK(counting->reads ==
        std::vector<std::string>{"hosts/web-01.toml", "files/motd", "units/app"});
  REQUIRE(state.resources.size() == 3);
  const auto& app = std::get<tether::FileSpec>(state.resources[0].spec);
  CHECK(std::get<tether::UnitSpec>(state.resources[2].spec).content ==
        "[Service]\nExecStart=/bin/true\n");
  CHECK(tether::ContentIdHex(tether::ContentIdOf(app)) == blob_id);
  CHECK(tether::ContentSize(app) == 9);
  CHECK(app.content.empty());
  CHECK(tether::ContentOf(app).value() == "port = 1\n");
  CHECK(counting->reads.back() == "by id: files/app.conf");  // read now, to be written
}

TEST_CASE("Open pack files stay bounded however many fetches the mirror gathered") {
  Fleet fleet;
  GitDaemonServer server(fleet.root.path());
  Host host(server.url("fleet.git"));
  auto source = host.Source();
  std::vector<std::string> commits;
  for (int i = 0; i < 80; ++i) {
    commits.push_back(
        CommitFiles(fleet.repo, {{"hosts/web-01.toml", "# " + std::to_string(i) + "\n"}}));
    REQUIRE(source->Update().value().fetched);
  }
  for (const auto& commit : commits) {
    auto tree = source->OpenTree(commit);
    REQUIRE(tree);
    REQUIRE((*tree)->ReadFile("hosts/web-01.toml", 100));
  }
  int on_disk = 0;  // one pack per fetch, repacked into one past 32
  for (const auto& entry :
       std::filesystem::directory_iterator(source->mirror_path() + "/objects/pack")) {
    if (entry.path().extension() == ".pack") ++on_disk;
  }
  CHECK(on_disk >= 1);
  CHECK(on_disk <= 32);
  int packs = 0;
  for (const auto& entry : std::filesystem::directory_iterator("/proc/self/fd")) {
    std::error_code ec;
    const auto target = std::filesystem::read_symlink(entry.path(), ec).string();
    if (target.size() > 5 && target.substr(target.size() - 5) == ".pack") ++packs;
  }
  CHECK(packs <= 64);
}

TEST_CASE("Credentials never reach stderr, where the worker's messages go") {
  Fleet fleet;
  GitHttpOptions options;
  options.tls = true;
  options.auth = HttpAuth{"deploy", "right-pass", "bearer-8c1e"};
  GitHttpServer server(fleet.root.path(), options);
  TempDir capture("stderr");
  const int saved = dup(STDERR_FILENO);
  const int file = open(capture.Path("stderr").c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
  REQUIRE(dup2(file, STDERR_FILENO) >= 0);
  std::string message;
  {
    Host wrong(server.url("fleet.git"));
    wrong.options.source.ca_file = server.ca_file();
    wrong.options.source.token_file = wrong.Secret("token", "deploy:wrong-pass-77\n");
    auto refused = wrong.Source()->Update();
    message = refused ? "" : refused.error().message();
    Host bearer(server.url("fleet.git"));
    bearer.options.source.ca_file = server.ca_file();
    bearer.options.source.token_file = bearer.Secret("token", "bearer-8c1e\n");
    (void)bearer.Source()->Update();
  }
  dup2(saved, STDERR_FILENO);
  close(saved);
  close(file);
  CHECK_FALSE(message.empty());
  const std::string written = capture.ReadFile("stderr");
  for (const char* secret : {"wrong-pass-77", "bearer-8c1e"}) {
    CHECK(message.find(secret) == std::string::npos);
    CHECK(written.find(secret) == std::string::npos);
  }
}

TEST_CASE("The token goes only over https:// to source.url's host, never to a mirror elsewhere") {
  Fleet fleet;
  GitHttpOptions options;
  options.tls = true;
  options.auth = HttpAuth{"", "", "scoped-token-5e2"};
  GitHttpServer server(fleet.root.path(), options);
  // source.url is another host:port (down); the mirror that answers is not its host.
  const int dead = tether::testing::PickFreePort();
  Host host("https://localhost:" + std::to_string(dead) + "/git/fleet.git");
  host.options.source.ca_file = server.ca_file();
  host.options.source.token_file = host.Secret("token", "scoped-token-5e2\n");
  host.options.source.mirrors = {server.url("fleet.git")};
  auto polled = host.Source()->Poll();
  REQUIRE_FALSE(polled);
  CHECK(polled.error().message().find("asks for credentials and none are configured") !=
        std::string::npos);

  Host same(server.url("fleet.git"));  // the token's own host
  same.options.source.ca_file = server.ca_file();
  same.options.source.token_file = same.Secret("token", "scoped-token-5e2\n");
  CHECK(same.Source()->Poll());

  // Never in clear text, even to its own host.
  GitHttpOptions plain;
  plain.auth = HttpAuth{"", "", "scoped-token-5e2"};
  GitHttpServer http(fleet.root.path(), plain);
  Host clear(http.url("fleet.git"));
  clear.options.source.token_file = clear.Secret("token", "scoped-token-5e2\n");
  auto refused = clear.Source()->Poll();
  REQUIRE_FALSE(refused);
  CHECK(refused.error().message().find("asks for credentials and none are configured") !=
        std::string::npos);
}

TEST_CASE("A lock file a killed fetch left does not block the next fetch") {
  Fleet fleet;
  GitDaemonServer server(fleet.root.path());
  for (const std::string& url : {server.url("fleet.git"), "file://" + fleet.repo}) {
    CAPTURE(url);
    Host host(url);
    auto source = host.Source();
    REQUIRE(source->Update());
    host.dir.WriteFile("mirror.git/refs/tether/fetched.lock", "");
    const std::string next = CommitFiles(fleet.repo, {{"hosts/web-01.toml", "# " + url + "\n"}});
    auto update = source->Update();
    REQUIRE_MESSAGE(update, (update ? "" : update.error().message()));
    CHECK(update->commit == next);
  }
}
