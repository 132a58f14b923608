// tetherd --once end to end: a real git server, signed commits, a --root sandbox.
#include <fcntl.h>
#include <sys/file.h>
#include <sys/mount.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>
#include <string>
#include <thread>

#include <doctest/doctest.h>
#include <nlohmann/json.hpp>

#include "agent/cycle/cycle_process.hpp"
#include "common/filesystem.hpp"
#include "common/process.hpp"
#include "common/stat_mark.hpp"
#include "tests/support/git_repo.hpp"
#include "tests/support/git_server.hpp"
#include "tests/support/temp_dir.hpp"

using namespace std::chrono_literals;
using tether::testing::CommitFiles;
using tether::testing::TempDir;

namespace {

// A file the test did not make in a TempDir of its own (a server's log).
std::string ReadText(const std::string& path) {
  std::ifstream in(path);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

struct Sandbox {
  TempDir dir{"once"};
  TempDir git_root{"once-git"};
  std::string repo = git_root.Path("fleet.git");
  tether::testing::SshKeyPair key;
  std::unique_ptr<tether::testing::GitDaemonServer> server;

  Sandbox() {
    umask(022);
    tether::testing::CreateBareRepo(repo);
    key = tether::testing::GenerateSshKey(dir.Path("ops"));
    dir.WriteFile("allowed_signers", "ops@example.com " + key.public_line + "\n");
    server = std::make_unique<tether::testing::GitDaemonServer>(git_root.path());
    dir.WriteFile("agent.toml", "[source]\nurl = \"" + server->url("fleet.git") +
                                    "\"\nprofile = \"hosts/h.toml\"\ntimeout = \"5s\"\n"
                                    "[trust]\nallowed_signers = \"" +
                                    dir.Path("allowed_signers") + "\"\n");
    std::filesystem::create_directories(dir.Path("root/etc"));
  }

  std::string Commit(const std::string& motd, bool sign = true, const std::string& extra = "") {
    tether::testing::CommitOptions options;
    if (sign) options.signing_key = key.private_key;
    return CommitFiles(
        repo,
        {{"hosts/h.toml", "[[file]]\npath = \"/etc/motd\"\nsource = \"motd\"\n" + extra},
         {"motd", motd}},
        options);
  }

  tether::RunResult Once(std::vector<std::string> extra = {}) {
    tether::RunOptions options;
    options.argv = {std::getenv("TETHERD"), "--once",          "--config",
                    dir.Path("agent.toml"), "--state-dir",     dir.Path("state"),
                    "--cache-dir",          dir.Path("cache"), "--root",
                    dir.Path("root")};
    options.argv.insert(options.argv.end(), extra.begin(), extra.end());
    auto result = tether::Run(options);
    REQUIRE(result);
    return *result;
  }
};

}  // namespace

TEST_CASE("tetherd --once applies a signed commit, reverts drift, refuses unsigned ones") {
  Sandbox box;
  const std::string first = box.Commit("hello\n");
  auto applied = box.Once();
  CHECK_MESSAGE(applied.exit_code == 0, (applied.out + applied.err));
  CHECK(applied.out.find("verified signed by ops@example.com") != std::string::npos);
  CHECK(applied.out.find("applied " + first.substr(0, 12) + ": 1 change") != std::string::npos);
  CHECK(box.dir.ReadFile("root/etc/motd") == "hello\n");

  CHECK(applied.out.find("audit    every managed path is read and hashed") != std::string::npos);
  CHECK(std::filesystem::exists(box.dir.Path("state/last-audit")));

  auto again = box.Once();
  CHECK(again.exit_code == 0);
  CHECK(again.out.find("in sync with " + first.substr(0, 12)) != std::string::npos);
  CHECK(again.out.find("audit ") == std::string::npos);  // the next one is 10 minutes away

  box.dir.WriteFile("root/etc/motd", "edited by hand\n");
  auto reverted = box.Once();
  CHECK(reverted.exit_code == 0);
  CHECK(reverted.out.find("-edited by hand\n+hello\n") != std::string::npos);
  CHECK(box.dir.ReadFile("root/etc/motd") == "hello\n");

  box.Commit("second\n");
  auto dry = box.Once({"--dry-run"});
  CHECK(dry.exit_code == 0);
  CHECK(dry.out.find("dry run: 1 change planned, nothing changed") != std::string::npos);
  CHECK(box.dir.ReadFile("root/etc/motd") == "hello\n");

  const std::string unsigned_commit = box.Commit("sneaky\n", false);
  auto refused = box.Once();
  CHECK(refused.exit_code == 1);
  CHECK(refused.err.find("refusing commit " + unsigned_commit.substr(0, 12) +
                         ": commit is not signed") != std::string::npos);
  CHECK(box.dir.ReadFile("root/etc/motd") == "hello\n");
}

TEST_CASE("tetherd --once keeps enforcing the applied commit while the server is down") {
  Sandbox box;
  box.Commit("hello\n");
  REQUIRE(box.Once().exit_code == 0);
  box.server.reset();
  box.dir.WriteFile("root/etc/motd", "drifted\n");
  auto offline = box.Once();
  CHECK_MESSAGE(offline.exit_code == 0, (offline.out + offline.err));
  CHECK(offline.out.find("offline  enforcing the applied commit") != std::string::npos);
  CHECK(box.dir.ReadFile("root/etc/motd") == "hello\n");
}

TEST_CASE("A git worker that cannot be prepared stops the cycle: the source is not offline") {
  // A file:// source prepares its worker (its home in the cache dir) at the first fetch.
  // When that fails, it is this host that is broken, not the server that is down.
  Sandbox box;
  std::string agent = box.dir.ReadFile("agent.toml");
  agent.replace(agent.find(box.server->url("fleet.git")), box.server->url("fleet.git").size(),
                "file://" + box.repo);
  box.dir.WriteFile("agent.toml", agent);
  box.Commit("hello\n");
  auto applied = box.Once();
  REQUIRE_MESSAGE(applied.exit_code == 0, (applied.out + applied.err));
  // The worker's home is no longer a directory.
  std::filesystem::remove_all(box.dir.Path("cache/worker-home"));
  box.dir.WriteFile("cache/worker-home", "not a directory\n");
  // Nothing new: the source's ref is read without the worker.
  auto same = box.Once();
  CHECK_MESSAGE(same.exit_code == 0, (same.out + same.err));
  CHECK(same.out.find("offline") == std::string::npos);
  // A new commit needs a fetch, and so the worker.
  box.Commit("second\n");
  auto failed = box.Once();
  CHECK(failed.exit_code != 0);
  CHECK_MESSAGE(failed.err.find("prepare the git worker's directories") != std::string::npos,
                failed.err);
  CHECK(failed.out.find("offline") == std::string::npos);
  CHECK(box.dir.ReadFile("root/etc/motd") == "hello\n");
}

TEST_CASE("source.pin to a commit older than the applied one applies it (the canary case)") {
  Sandbox box;
  const std::string first = box.Commit("first\n");
  box.Commit("second\n");
  REQUIRE(box.Once().exit_code == 0);
  REQUIRE(box.dir.ReadFile("root/etc/motd") == "second\n");
  // The operator pins this host to the tested commit, older than the applied one: a
  // local decision, not a server rewinding history.
  box.dir.WriteFile("agent.toml", box.dir.ReadFile("agent.toml") + "pin = \"" + first + "\"\n");
  std::string config = box.dir.ReadFile("agent.toml");
  const auto trust = config.find("[trust]");
  const auto pin = config.find("pin = ");
  config = config.substr(0, trust) + config.substr(pin) + config.substr(trust, pin - trust);
  box.dir.WriteFile("agent.toml", config);
  auto pinned = box.Once();
  CHECK_MESSAGE(pinned.exit_code == 0, (pinned.out + pinned.err));
  CHECK(pinned.out.find("applied " + first.substr(0, 12)) != std::string::npos);
  CHECK(box.dir.ReadFile("root/etc/motd") == "first\n");
  // Still signed: an unsigned pin is refused all the same.
  const std::string sneaky = box.Commit("sneaky\n", false);
  box.dir.WriteFile("agent.toml", std::string(config).replace(config.find(first), 40, sneaky));
  auto refused = box.Once();
  CHECK(refused.exit_code == 1);
  CHECK(refused.err.find("commit is not signed") != std::string::npos);
  CHECK(box.dir.ReadFile("root/etc/motd") == "first\n");
}

TEST_CASE("A signer's key that expired keeps its applied commit enforced, and no newer one") {
  Sandbox box;
  // The key is valid for a few more seconds only.
  const std::time_t until = std::time(nullptr) + 4;
  char stamp[32];
  std::strftime(stamp, sizeof(stamp), "%Y%m%d%H%M%SZ", std::gmtime(&until));
  box.dir.WriteFile("allowed_signers", "ops@example.com valid-before=\"" + std::string(stamp) +
                                           "\" " + box.key.public_line + "\n");
  const std::string first = box.Commit("hello\n");
  auto applied = box.Once();
  REQUIRE_MESSAGE(applied.exit_code == 0, (applied.out + applied.err));
  while (std::time(nullptr) <= until + 1) std::this_thread::sleep_for(200ms);

  // Expired now: a hand edit is still reverted (the commit was verified when applied).
  box.dir.WriteFile("root/etc/motd", "edited by hand\n");
  auto reverted = box.Once();
  CHECK_MESSAGE(reverted.exit_code == 0, (reverted.out + reverted.err));
  CHECK(box.dir.ReadFile("root/etc/motd") == "hello\n");
  // A new commit signed with it is refused.
  box.Commit("newer\n");
  auto refused = box.Once();
  CHECK(refused.exit_code == 1);
  CHECK_MESSAGE(refused.err.find("expired") != std::string::npos, refused.err);
  CHECK(box.dir.ReadFile("root/etc/motd") == "hello\n");
  (void)first;
}

TEST_CASE("A commit that fails for a full disk is rolled back and retried, not quarantined") {
  if (geteuid() != 0) return;  // mounting a small tmpfs needs root; CI runs as root
  Sandbox box;
  const std::string small = box.dir.Path("root/srv");
  std::filesystem::create_directories(small);
  if (mount("tmpfs", small.c_str(), "tmpfs", 0, "size=64k") != 0) {
    MESSAGE("skipped: cannot mount a tmpfs here");
    return;
  }
  struct Unmount {
    std::string path;
    ~Unmount() { umount2(path.c_str(), MNT_DETACH); }
  } unmount{small};
  const std::string commit = box.Commit(
      "hello\n", true,
      "[[file]]\npath = \"/srv/big\"\ncontent = \"" + std::string(200'000, 'x') + "\"\n");
  auto full = box.Once();
  CHECK(full.exit_code == 1);
  CHECK_MESSAGE(full.err.find("No space left on device") != std::string::npos, full.err);
  CHECK_MESSAGE(full.err.find("not quarantined") != std::string::npos, full.err);
  CHECK_FALSE(std::filesystem::exists(box.dir.Path("state/quarantine.json")));
  CHECK_FALSE(std::filesystem::exists(box.dir.Path("root/etc/motd")));  // rolled back

  // Room again: the same commit applies at the next cycle.
  umount2(small.c_str(), MNT_DETACH);
  auto applied = box.Once();
  CHECK_MESSAGE(applied.exit_code == 0, (applied.out + applied.err));
  CHECK(applied.out.find("applied " + commit.substr(0, 12)) != std::string::npos);
  CHECK(box.dir.ReadFile("root/srv/big").size() == 200'000);
}

TEST_CASE("A managed file grown past the read limit is replaced, not read") {
  Sandbox box;
  box.Commit("hello\n", true, "[[file]]\npath = \"/etc/app.log\"\ncontent = \"small\\n\"\n");
  REQUIRE(box.Once().exit_code == 0);
  // Its owner grows it past the 64 MiB tether reads.
  box.dir.WriteFile("root/etc/app.log", std::string(70 << 20, 'x'));
  auto cycle = box.Once();
  CHECK_MESSAGE(cycle.exit_code == 0, (cycle.out + cycle.err));
  CHECK(cycle.out.find("(73400320 bytes, more than tether reads: replaced, not shown)") !=
        std::string::npos);
  CHECK(box.dir.ReadFile("root/etc/app.log") == "small\n");
}

TEST_CASE("A managed path that cannot be planned fails alone; the others are enforced") {
  Sandbox box;
  box.Commit("hello\n", true,
             "[[directory]]\npath = \"/etc/app\"\n"
             "[[file]]\npath = \"/etc/app/app.conf\"\ncontent = \"port = 1\\n\"\n"
             "[[file]]\npath = \"/etc/issue\"\ncontent = \"tether\\n\"\n");
  REQUIRE(box.Once().exit_code == 0);
  // A user puts a symlink where a managed directory was (the file in it cannot be opened
  // without following it); a person edits another file.
  std::filesystem::remove_all(box.dir.Path("root/etc/app"));
  std::filesystem::create_directories(box.dir.Path("elsewhere"));
  std::filesystem::create_directory_symlink(box.dir.Path("elsewhere"),
                                            box.dir.Path("root/etc/app"));
  box.dir.WriteFile("root/etc/motd", "edited by hand\n");
  // A full audit is due (no record of one): it is done, refusals or not, and recorded,
  // rather than done again at every cycle while the refusal lasts.
  std::filesystem::remove(box.dir.Path("state/last-audit"));
  auto cycle = box.Once();
  INFO((cycle.out + cycle.err));
  CHECK(box.dir.ReadFile("root/etc/motd") == "hello\n");  // still enforced
  CHECK(box.dir.ReadFile("root/etc/issue") == "tether\n");
  CHECK(std::filesystem::exists(box.dir.Path("state/last-audit")));
  // Those are refused, said, and left as they are.
  CHECK(cycle.exit_code == 1);
  CHECK(cycle.out.find("conflict directory:/etc/app:") != std::string::npos);
  CHECK(cycle.out.find("conflict file:/etc/app/app.conf: cannot plan it:") != std::string::npos);
  CHECK(std::filesystem::is_symlink(box.dir.Path("root/etc/app")));
  CHECK(std::filesystem::is_empty(box.dir.Path("elsewhere")));  // nothing written through it
  CHECK_FALSE(std::filesystem::exists(box.dir.Path("state/quarantine.json")));
}

TEST_CASE("Taken-over files leave the inventory small; a removal leaves them unless restore") {
  Sandbox box;
  const std::string big(8 << 20, 'o');  // four such files made a 320 MB inventory before
  for (const char* name : {"a", "b", "c", "d"})
    box.dir.WriteFile(std::string("root/opt/") + name, big);
  box.Commit("hello\n", true,
             "[[file]]\npath = \"/opt/a\"\ncontent = \"ours\\n\"\non_remove = \"restore\"\n"
             "[[file]]\npath = \"/opt/b\"\ncontent = \"ours\\n\"\non_remove = \"restore\"\n"
             "[[file]]\npath = \"/opt/c\"\ncontent = \"ours\\n\"\n"
             "[[file]]\npath = \"/opt/d\"\ncontent = \"ours\\n\"\n");
  auto first = box.Once();
  INFO((first.out + first.err));
  REQUIRE(first.exit_code == 0);
  CHECK(std::filesystem::file_size(box.dir.Path("state/inventory.json")) < 8192);
  std::size_t kept = 0;
  for (const auto& blob : std::filesystem::directory_iterator(box.dir.Path("state/originals"))) {
    kept += std::filesystem::file_size(blob.path());
  }
  CHECK(kept == big.size());  // a and b hold the same bytes: one copy
  box.Commit("hello\n", true, "");
  auto removed = box.Once();
  INFO((removed.out + removed.err));
  CHECK(removed.exit_code == 0);
  CHECK(box.dir.ReadFile("root/opt/a") == big);  // restored
  CHECK(box.dir.ReadFile("root/opt/b") == big);
  CHECK(box.dir.ReadFile("root/opt/c") == "ours\n");  // left as tether left it
  CHECK(std::filesystem::is_empty(box.dir.Path("state/originals")));
}

TEST_CASE("tetherd --once: a bad agent.toml is exit status 2 with the located error") {
  Sandbox box;
  box.dir.WriteFile("agent.toml", "[source]\nurl = \"ftp://x/y\"\n");
  auto result = box.Once();
  CHECK(result.exit_code == 2);
  CHECK(result.err.find(box.dir.Path("agent.toml") + ":2:7: source.url: unsupported scheme") !=
        std::string::npos);
}

TEST_CASE("tetherd --once with drift = \"report\" shows the drift and leaves it") {
  Sandbox box;
  box.Commit("hello\n");
  REQUIRE(box.Once().exit_code == 0);
  box.dir.WriteFile("agent.toml", box.dir.ReadFile("agent.toml") + "[apply]\ndrift = \"report\"\n");
  box.dir.WriteFile("root/etc/motd", "hand made\n");
  auto reported = box.Once();
  CHECK(reported.exit_code == 0);
  CHECK(reported.out.find("drifted  file:/etc/motd: content (drift = \"report\": left as it is)") !=
        std::string::npos);
  CHECK(reported.out.find("-hand made\n+hello\n") != std::string::npos);
  CHECK(box.dir.ReadFile("root/etc/motd") == "hand made\n");

  // A new commit is not drift: it is applied whatever the drift mode.
  box.Commit("new release\n");
  REQUIRE(box.Once().exit_code == 0);
  CHECK(box.dir.ReadFile("root/etc/motd") == "new release\n");
}

TEST_CASE("tetherd --once refuses to run while another holds the state dir") {
  Sandbox box;
  box.Commit("hello\n");
  std::filesystem::create_directories(box.dir.Path("state"));
  const int fd = open(box.dir.Path("state/lock").c_str(), O_RDWR | O_CREAT, 0600);
  REQUIRE(fd >= 0);
  REQUIRE(flock(fd, LOCK_EX) == 0);
  auto refused = box.Once({"--dry-run"});
  CHECK(refused.exit_code == 1);
  CHECK(refused.err.find("another tetherd is working on") != std::string::npos);
  close(fd);
  CHECK(box.Once().exit_code == 0);
}

TEST_CASE("tetherd --once: a commit failing its health check is rolled back and quarantined") {
  Sandbox box;
  const std::string good = box.Commit("hello\n");
  REQUIRE(box.Once().exit_code == 0);
  // The check fails while the motd says "broken".
  const std::string check =
      "[[check]]\nname = \"motd sane\"\nexec = [\"/bin/sh\", \"-c\", "
      "\"! grep -q broken " +
      box.dir.Path("root/etc/motd") + "\"]\n";
  box.dir.WriteFile("agent.toml",
                    box.dir.ReadFile("agent.toml") + "[apply]\nhealth_timeout = \"1s\"\n");
  const std::string bad = box.Commit("broken\n", true, check);
  // Checks look at the host; this one looks at the sandbox, so it may run under --root.
  auto failed = box.Once({"--root-checks"});
  CHECK(failed.exit_code == 1);
  CHECK(failed.err.find("health check: check 'motd sane' failed: exited with status 1") !=
        std::string::npos);
  CHECK(failed.out.find("undone   file:/etc/motd") != std::string::npos);
  CHECK(failed.out.find("rolled back commit " + bad.substr(0, 12)) != std::string::npos);
  CHECK(box.dir.ReadFile("root/etc/motd") == "hello\n");

  // Not tried again; the applied commit is still enforced.
  box.dir.WriteFile("root/etc/motd", "edited\n");
  auto skipped = box.Once({"--root-checks"});
  CHECK(skipped.exit_code == 1);
  CHECK(skipped.out.find("quarantined commit " + bad.substr(0, 12) + ": it failed before") !=
        std::string::npos);
  CHECK(skipped.out.find("enforcing the applied commit " + good.substr(0, 12)) !=
        std::string::npos);
  CHECK(box.dir.ReadFile("root/etc/motd") == "hello\n");

  // An operator may ask for it again (it fails again); a newer commit lifts it.
  auto retried = box.Once({"--retry-quarantined", "--root-checks"});
  CHECK(retried.exit_code == 1);
  CHECK(retried.out.find("retry    quarantined commit") != std::string::npos);
  const std::string fixed = box.Commit("fixed\n", true, check);
  auto applied = box.Once({"--root-checks"});
  CHECK_MESSAGE(applied.exit_code == 0, (applied.out + applied.err));
  CHECK(box.dir.ReadFile("root/etc/motd") == "fixed\n");
  CHECK_FALSE(std::filesystem::exists(box.dir.Path("state/quarantine.json")));
}

TEST_CASE("tetherd --once: HTTP checks ask nginx, from tetherd-http; a 404 rolls back") {
  Sandbox box;
  TempDir web("once-web");
  web.WriteFile("health", "ok\n");
  tether::testing::StaticHttpServer nginx(web.path());
  box.dir.WriteFile("agent.toml",
                    box.dir.ReadFile("agent.toml") + "[apply]\nhealth_timeout = \"1s\"\n");
  const std::string good = box.Commit(
      "hello\n", true, "[[check]]\nname = \"site\"\nhttp = \"" + nginx.url("health") + "\"\n");
  // Checks look at the host; this one asks a server of the test's, so it may run under --root.
  auto applied = box.Once({"--root-checks"});
  CHECK_MESSAGE(applied.exit_code == 0, (applied.out + applied.err));
  CHECK(box.dir.ReadFile("root/etc/motd") == "hello\n");
  CHECK(ReadText(nginx.access_log()).find("GET /health 200") != std::string::npos);

  const std::string bad = box.Commit(
      "broken\n", true, "[[check]]\nname = \"site\"\nhttp = \"" + nginx.url("gone") + "\"\n");
  auto failed = box.Once({"--root-checks"});
  CHECK(failed.exit_code == 1);
  CHECK_MESSAGE(failed.err.find("health check: check 'site' failed: " + nginx.url("gone") +
                                " answered 404, expected 200") != std::string::npos,
                failed.err);
  CHECK(failed.out.find("rolled back commit " + bad.substr(0, 12)) != std::string::npos);
  CHECK(box.dir.ReadFile("root/etc/motd") == "hello\n");
  CHECK(ReadText(nginx.access_log()).find("GET /gone 404") != std::string::npos);
}

TEST_CASE("tetherd --once under --root skips checks, as the host's services they verify") {
  Sandbox box;
  box.Commit("hello\n", true,
             "[[check]]\nname = \"nginx answers\"\nhttp = \"http://127.0.0.1:9/\"\n");
  auto applied = box.Once();
  CHECK_MESSAGE(applied.exit_code == 0, (applied.out + applied.err));
  CHECK(applied.out.find("skipped  check:nginx answers: a --root sandbox manages files only") !=
        std::string::npos);
  CHECK(box.dir.ReadFile("root/etc/motd") == "hello\n");
}

TEST_CASE("tetherd --once keeps its render for the next cycle, and renders again on a change") {
  Sandbox box;
  const std::string agent = box.dir.ReadFile("agent.toml");
  box.dir.WriteFile("agent.toml", agent + "[labels]\nrole = \"web\"\n");
  box.dir.WriteFile("root/etc/os-release", "ID=debian\nVERSION_ID=12\n");
  box.Commit("hello\n", true,
             "[[file]]\npath = \"/etc/role\"\ncontent = \"{{ labels.role }} on {{ host.os_id }} "
             "{{ host.os_version }}\\n\"\ntemplate = true\n");
  REQUIRE(box.Once().exit_code == 0);
  CHECK(box.dir.ReadFile("root/etc/role") == "web on debian 12\n");
  const std::string kept = box.dir.Path("state/render.cache");
  struct stat first {};
  REQUIRE(stat(kept.c_str(), &first) == 0);
  CHECK((first.st_mode & 07777) == 0600);

  // Nothing it depends on changed: read back, not rendered (and so not written) again.
  box.dir.WriteFile("root/etc/role", "edited\n");
  auto again = box.Once();
  CHECK_MESSAGE(again.exit_code == 0, (again.out + again.err));
  CHECK(box.dir.ReadFile("root/etc/role") == "web on debian 12\n");
  struct stat second {};
  REQUIRE(stat(kept.c_str(), &second) == 0);
  CHECK(second.st_ino == first.st_ino);

  // A label, a fact of the host: rendered again (a new file replaces the one there, so
  // its inode differs from the one it replaced).
  box.dir.WriteFile("agent.toml", agent + "[labels]\nrole = \"db\"\n");
  REQUIRE(box.Once().exit_code == 0);
  CHECK(box.dir.ReadFile("root/etc/role") == "db on debian 12\n");
  struct stat third {};
  REQUIRE(stat(kept.c_str(), &third) == 0);
  CHECK(third.st_ino != second.st_ino);
  box.dir.WriteFile("root/etc/os-release", "ID=debian\nVERSION_ID=13\n");
  REQUIRE(box.Once().exit_code == 0);
  CHECK(box.dir.ReadFile("root/etc/role") == "db on debian 13\n");

  // Whatever is in its place is not a render: rendered again, and replaced.
  box.dir.WriteFile("state/render.cache", "garbage");
  box.dir.WriteFile("root/etc/role", "edited\n");
  auto garbage = box.Once();
  CHECK_MESSAGE(garbage.exit_code == 0, (garbage.out + garbage.err));
  CHECK(garbage.err.empty());
  CHECK(box.dir.ReadFile("root/etc/role") == "db on debian 13\n");
  CHECK(box.dir.ReadFile("state/render.cache") != "garbage");
}

// CPU seconds (user + system) of the processes this one has waited for so far.
double ChildrenCpuSeconds() {
  rusage usage{};
  getrusage(RUSAGE_CHILDREN, &usage);
  auto seconds = [](const timeval& t) { return static_cast<double>(t.tv_sec) + t.tv_usec / 1e6; };
  return seconds(usage.ru_utime) + seconds(usage.ru_stime);
}

TEST_CASE("A no-op cycle's cost grows with the files, not with how many share a folder") {
  // Every source in one folder: each used to be looked up from the root, parsing the
  // whole folder's tree again (a 5,000-file no-op took 14 s against 0.6 s for 1,000).
  auto no_op_cpu = [](std::size_t n) {
    Sandbox sandbox;
    sandbox.dir.WriteFile("agent.toml", "[source]\nurl = \"" + sandbox.server->url("fleet.git") +
                                            "\"\nprofile = \"hosts/h.toml\"\ntimeout = \"60s\"\n"
                                            "[trust]\nrequire_signed = false\n"
                                            "[apply]\nallowed_paths = [\"/srv\"]\n");
    std::filesystem::create_directories(sandbox.dir.Path("root/srv"));
    std::map<std::string, std::string> files;
    std::string host = "[[directory]]\npath = \"/srv/b\"\n";
    for (std::size_t i = 0; i < n; ++i) {
      const std::string name = "files/f" + std::to_string(i);
      host += "[[file]]\npath = \"/srv/b/f" + std::to_string(i) + "\"\nsource = \"" + name + "\"\n";
      files[name] = "file " + std::to_string(i) + "\n" + std::string(1000, 'x') + "\n";
    }
    files["hosts/h.toml"] = host;
    tether::testing::CommitFiles(sandbox.repo, files);
    const auto first = sandbox.Once();
    REQUIRE_MESSAGE(first.exit_code == 0, first.err);
    // With the render kept from the cycle before, and rendered again (the render is where
    // the quadratic lookup was).
    std::pair<double, double> best = {1e9, 1e9};
    for (int round = 0; round < 6; ++round) {
      const bool render = round % 2 == 1;
      if (render) std::filesystem::remove(sandbox.dir.Path("state/render.cache"));
      const double before = ChildrenCpuSeconds();
      const auto again = sandbox.Once();
      REQUIRE_MESSAGE(again.exit_code == 0, again.err);
      CHECK(again.out.find("in sync with") != std::string::npos);
      double& slot = render ? best.second : best.first;
      slot = std::min(slot, ChildrenCpuSeconds() - before);
    }
    return best;
  };
  const auto small = no_op_cpu(1000);
  const auto large = no_op_cpu(5000);
  MESSAGE("no-op CPU: 1,000 files " << small.first << " s, 5,000 files " << large.first
                                    << " s; rendering again: " << small.second << " s, "
                                    << large.second << " s");
  // Linear is at most 5x (less with the fixed start-up cost); the quadratic lookup was 25x.
  CHECK(large.first < 8 * small.first);
  CHECK(large.second < 8 * small.second);
}

TEST_CASE("A cycle's process readied for a repair that does not come ends without a word") {
  // The daemon starts one ahead of a drift repair and may close its input unused.
  const std::string tetherd = std::getenv("TETHERD");
  const std::string cycle = tetherd.substr(0, tetherd.rfind('/') + 1) + "tetherd-cycle";
  tether::RunOptions options;
  options.argv = {cycle, "--cycle-process"};
  auto unused = tether::Run(options);  // stdin: /dev/null
  REQUIRE(unused);
  CHECK(unused->exit_code == 0);
  CHECK(unused->err == "");
  CHECK(unused->out == "");
  // Something that is not a job is still an error, said.
  options.input = "not json";
  auto garbage = tether::Run(options);
  REQUIRE(garbage);
  CHECK(garbage->exit_code == 2);
  CHECK(garbage->err.find("the job is not one") != std::string::npos);
}

TEST_CASE("A drift repair takes the FQDN its render was made with, and asks no resolver") {
  Sandbox box;
  box.Commit("hello\n", true,
             "[[file]]\npath = \"/etc/fqdn\"\ncontent = \"{{ host.fqdn }}\\n\"\n"
             "template = true\n");
  REQUIRE(box.Once().exit_code == 0);
  const std::string fqdn = box.dir.ReadFile("root/etc/fqdn");
  REQUIRE(!fqdn.empty());
  const std::string kept = box.dir.Path("state/render.cache");
  struct stat rendered {};
  REQUIRE(stat(kept.c_str(), &rendered) == 0);

  // The cycle process as the daemon starts it, with a log of the names it resolves.
  const char* shim = std::getenv("TETHER_LOOKUP_LOG_LIB");
  REQUIRE_MESSAGE(shim != nullptr, "TETHER_LOOKUP_LOG_LIB is set by meson");
  const std::string tetherd = std::getenv("TETHERD");
  const std::string log = box.dir.Path("lookups");
  auto cycle = [&](bool repair) {
    tether::RunOptions options;
    options.argv = {tetherd.substr(0, tetherd.rfind('/') + 1) + "tetherd-cycle", "--cycle-process"};
    options.env.push_back(std::string("LD_PRELOAD=") + shim);
    options.env.push_back("TETHER_TEST_LOOKUP_LOG=" + log);
    const nlohmann::json job = {
        {"config",
         {{{"name", box.dir.Path("agent.toml")}, {"text", box.dir.ReadFile("agent.toml")}}}},
        {"state_dir", box.dir.Path("state")},
        {"cache_dir", box.dir.Path("cache")},
        {"root", box.dir.Path("root")},
        {"enforce_applied", repair},
        {"drifted", {"file:/etc/fqdn"}},
        {"wait_for_lock", false}};
    options.input = job.dump();
    std::filesystem::remove(log);
    auto result = tether::Run(options);
    REQUIRE(result);
    CHECK_MESSAGE(result->exit_code == 0, result->err);
    return std::filesystem::exists(log) ? box.dir.ReadFile("lookups") : std::string();
  };

  box.dir.WriteFile("root/etc/fqdn", "edited by hand\n");
  CHECK(cycle(true) == "");
  CHECK(box.dir.ReadFile("root/etc/fqdn") == fqdn);
  struct stat after {};
  REQUIRE(stat(kept.c_str(), &after) == 0);
  CHECK(after.st_ino == rendered.st_ino);  // read back, not rendered again

  // A cycle that asks the source asks the resolver too, when the host name has no dot
  // (else there is nothing to ask it, in either cycle).
  char hostname[256] = {};
  REQUIRE(gethostname(hostname, sizeof(hostname) - 1) == 0);
  if (std::string(hostname).find('.') == std::string::npos) {
    CHECK(cycle(false) == std::string(hostname) + "\n");
  } else {
    MESSAGE("the host name has a dot: no cycle asks the resolver for it");
    CHECK(cycle(false) == "");
  }
  CHECK(box.dir.ReadFile("root/etc/fqdn") == fqdn);
}

TEST_CASE("A drift repair names the entries it read for the daemon's watches, and only those") {
  Sandbox box;
  box.Commit("hello\n", true,
             "[[file]]\npath = \"/etc/issue\"\ncontent = \"issue\\n\"\n"
             "[[file]]\npath = \"/etc/hosts\"\ncontent = \"hosts\\n\"\n");
  REQUIRE(box.Once().exit_code == 0);
  // The cycle's process as the daemon runs it, and reads what it says.
  const std::string tetherd = std::getenv("TETHERD");
  auto cycle = [&](bool repair, const std::vector<std::string>& drifted) {
    tether::CycleOptions options;
    options.state_dir = box.dir.Path("state");
    options.cache_dir = box.dir.Path("cache");
    options.root = box.dir.Path("root");
    options.enforce_applied = repair;
    options.drifted = drifted;
    auto output = tether::RunCycleProcess(
        {tetherd.substr(0, tetherd.rfind('/') + 1) + "tetherd-cycle", "--cycle-process"}, {},
        {{box.dir.Path("agent.toml"), box.dir.ReadFile("agent.toml")}}, options);
    CHECK_MESSAGE(output.exit_code == 0, output.report.error);
    return output.report.recorded;
  };
  // The inventory's entries, with the fingerprints repairs recorded beside it over them.
  auto inventory = [&] {
    auto entries = nlohmann::json::parse(box.dir.ReadFile("state/inventory.json"))["entries"];
    if (std::filesystem::exists(box.dir.Path("state/inventory.delta"))) {
      const auto delta = nlohmann::json::parse(box.dir.ReadFile("state/inventory.delta"));
      for (const auto& [id, fingerprint] : delta["fingerprints"].items()) {
        entries[id]["fingerprint"] = fingerprint;
      }
    }
    return entries;
  };

  // A repair of issue reads issue's entry (and any entry of another kind), and writes
  // motd's and hosts' back unread: it names issue as it left it.
  box.dir.WriteFile("root/etc/issue", "edited by hand\n");
  const auto repaired = cycle(true, {"file:/etc/issue"});
  CHECK(box.dir.ReadFile("root/etc/issue") == "issue\n");
  REQUIRE(repaired);
  std::map<std::string, tether::RecordedEntry> recorded;
  for (const auto& entry : *repaired) recorded[entry.id] = entry;
  CHECK(recorded.count("file:/etc/motd") == 0);
  CHECK(recorded.count("file:/etc/hosts") == 0);
  REQUIRE(recorded.count("file:/etc/issue") == 1);
  const auto entries = inventory();
  // Only a fingerprint changed: it is recorded beside the inventory.
  CHECK(nlohmann::json::parse(box.dir.ReadFile("state/inventory.delta"))["fingerprints"].size() ==
        1);
  const auto& issue = recorded["file:/etc/issue"];
  CHECK(issue.kind == "file");
  CHECK(issue.path == "/etc/issue");
  CHECK(issue.fingerprint == entries["file:/etc/issue"]["fingerprint"]);
  for (const auto& [id, entry] : recorded) {
    REQUIRE(entries.contains(id));
    CHECK(entry.kind == entries[id]["kind"]);
  }

  // A repair that reads every entry, and a cycle that asks the source, name none: the
  // daemon reads the inventory they wrote.
  box.dir.WriteFile("root/etc/hosts", "edited by hand\n");
  CHECK_FALSE(cycle(true, {"file:/etc/issue", "file:/etc/hosts", "file:/etc/motd"}));
  CHECK(box.dir.ReadFile("root/etc/hosts") == "hosts\n");
  box.dir.WriteFile("root/etc/hosts", "edited by hand\n");
  CHECK_FALSE(cycle(false, {}));
  CHECK(box.dir.ReadFile("root/etc/hosts") == "hosts\n");
}

namespace {

// One cycle in the cycle process, as the daemon runs it, with `options` but for the dirs.
tether::CycleOutput CycleAsTheDaemonRunsIt(Sandbox& box, tether::CycleOptions options) {
  const std::string tetherd = std::getenv("TETHERD");
  options.state_dir = box.dir.Path("state");
  options.cache_dir = box.dir.Path("cache");
  options.root = box.dir.Path("root");
  return tether::RunCycleProcess(
      {tetherd.substr(0, tetherd.rfind('/') + 1) + "tetherd-cycle", "--cycle-process"}, {},
      {{box.dir.Path("agent.toml"), box.dir.ReadFile("agent.toml")}}, options);
}

// A drift repair of /etc/issue.
tether::CycleOutput RepairIssue(Sandbox& box, const std::vector<std::string>& in_place) {
  tether::CycleOptions options;
  options.enforce_applied = true;
  options.drifted = {"file:/etc/issue"};
  options.written_in_place = in_place;
  return CycleAsTheDaemonRunsIt(box, options);
}

// A person's edit of /etc/issue in place, between the cycle's rename and its stat, in one
// tick of the file system's clock: the fingerprint the cycle recorded is the edited file's
// stat.
void EditIssueWithinTheTick(Sandbox& box) {
  box.dir.WriteFile("root/etc/issue", "a person's\n");
  auto host = tether::RootedFilesystem::Open(box.dir.Path("root"));
  REQUIRE(host);
  auto stat = (*host)->Stat("/etc/issue");
  REQUIRE(stat);
  std::string inventory = box.dir.ReadFile("state/inventory.json");
  const std::string recorded =
      nlohmann::json::parse(inventory)["entries"]["file:/etc/issue"]["fingerprint"];
  REQUIRE(recorded.size() > tether::kStatMarkSize);
  const auto at = inventory.find(recorded);
  REQUIRE(at != std::string::npos);
  inventory.replace(at, tether::kStatMarkSize, tether::StatMark(*stat));
  box.dir.WriteFile("state/inventory.json", inventory);
  REQUIRE_FALSE(std::filesystem::exists(box.dir.Path("state/inventory.delta")));
}

constexpr char kIssueProfile[] = "[[file]]\npath = \"/etc/issue\"\ncontent = \"issue\\n\"\n";

}  // namespace

TEST_CASE("A repair reads a file the daemon saw written in place, whatever its fingerprint") {
  Sandbox box;
  box.Commit("hello\n", true, kIssueProfile);
  REQUIRE(box.Once().exit_code == 0);
  EditIssueWithinTheTick(box);

  // Told nothing of how it was written, the repair goes by the fingerprint.
  auto repaired = RepairIssue(box, {});
  CHECK_MESSAGE(repaired.exit_code == 0, repaired.report.error);
  CHECK(box.dir.ReadFile("root/etc/issue") == "a person's\n");
  // Told it was written in place (as the daemon's watches see it), it reads it.
  repaired = RepairIssue(box, {"file:/etc/issue"});
  CHECK_MESSAGE(repaired.exit_code == 0, repaired.report.error);
  CHECK(box.dir.ReadFile("root/etc/issue") == "issue\n");
  CHECK_FALSE(std::filesystem::exists(box.dir.Path("state/written-in-place.json")));
}

TEST_CASE("A file seen written in place is read until a cycle commits it, restart or not") {
  Sandbox box;
  box.Commit("hello\n", true, kIssueProfile);
  REQUIRE(box.Once().exit_code == 0);
  EditIssueWithinTheTick(box);
  const std::string kept = box.dir.Path("state/written-in-place.json");

  // A cycle told of it that does not commit (a dry run: the daemon suspended) keeps it in
  // the state dir.
  tether::CycleOptions dry_run;
  dry_run.dry_run = true;
  dry_run.written_in_place = {"file:/etc/issue"};
  auto planned = CycleAsTheDaemonRunsIt(box, dry_run);
  CHECK_MESSAGE(planned.exit_code == 0, planned.report.error);
  CHECK(planned.report.changes == 1);  // it read the file
  CHECK(box.dir.ReadFile("root/etc/issue") == "a person's\n");
  REQUIRE(std::filesystem::exists(kept));
  CHECK(nlohmann::json::parse(box.dir.ReadFile("state/written-in-place.json"))["ids"] ==
        nlohmann::json::array({"file:/etc/issue"}));

  // A daemon started again knows nothing of it: a repair, even of another file, reads it
  // all the same, and the list goes once it is committed.
  tether::CycleOptions other;
  other.enforce_applied = true;
  other.drifted = {"file:/etc/motd"};
  auto repaired = CycleAsTheDaemonRunsIt(box, other);
  CHECK_MESSAGE(repaired.exit_code == 0, repaired.report.error);
  CHECK(box.dir.ReadFile("root/etc/issue") == "issue\n");
  CHECK_FALSE(std::filesystem::exists(kept));

  // A cycle that fails before it has planned anything (its inventory cannot be read)
  // keeps what it was told of. (The repair recorded its fingerprint in the inventory's
  // delta; without it, inventory.json's is the one.)
  std::filesystem::remove(box.dir.Path("state/inventory.delta"));
  EditIssueWithinTheTick(box);
  const std::string inventory = box.dir.ReadFile("state/inventory.json");
  box.dir.WriteFile("state/inventory.json", "{\"schema\": ");
  auto failed = RepairIssue(box, {"file:/etc/issue"});
  CHECK(failed.exit_code != 0);
  CHECK(std::filesystem::exists(kept));
  box.dir.WriteFile("state/inventory.json", inventory);
  repaired = RepairIssue(box, {});
  CHECK_MESSAGE(repaired.exit_code == 0, repaired.report.error);
  CHECK(box.dir.ReadFile("root/etc/issue") == "issue\n");
  CHECK_FALSE(std::filesystem::exists(kept));

  // A list that cannot be read names no file: every file is read (tetherd --once too),
  // said so, and the list goes once that is committed.
  std::filesystem::remove(box.dir.Path("state/inventory.delta"));
  EditIssueWithinTheTick(box);
  box.dir.WriteFile("state/written-in-place.json", "{\"ids\": [");
  auto once = box.Once();
  CHECK(once.exit_code == 0);
  CHECK(box.dir.ReadFile("root/etc/issue") == "issue\n");
  CHECK(
      (once.out + once.err).find("written-in-place.json' is corrupt: every managed file is read") !=
      std::string::npos);
  CHECK_FALSE(std::filesystem::exists(kept));
}

TEST_CASE("A file seen written in place whose drift is reported or ignored stays listed") {
  for (const std::string drift : {"report", "ignore"}) {
    CAPTURE(drift);
    Sandbox box;
    box.Commit("hello\n", true, std::string(kIssueProfile) + "drift = \"" + drift + "\"\n");
    REQUIRE(box.Once().exit_code == 0);
    EditIssueWithinTheTick(box);
    auto repaired = RepairIssue(box, {"file:/etc/issue"});
    CHECK_MESSAGE(repaired.exit_code == 0, repaired.report.error);
    CHECK(repaired.report.drifted.size() == (drift == "report" ? 1 : 0));  // it read the file
    CHECK(box.dir.ReadFile("root/etc/issue") == "a person's\n");
    // Left as the person made it, and read by every cycle after: reported each time, and
    // put back by the first commit that reverts its drift, whatever its stat.
    REQUIRE(std::filesystem::exists(box.dir.Path("state/written-in-place.json")));
    repaired = RepairIssue(box, {});
    CHECK_MESSAGE(repaired.exit_code == 0, repaired.report.error);
    CHECK(repaired.report.drifted.size() == (drift == "report" ? 1 : 0));
    box.Commit("hello\n", true, kIssueProfile);
    CHECK(box.Once().exit_code == 0);
    CHECK(box.dir.ReadFile("root/etc/issue") == "issue\n");
    CHECK_FALSE(std::filesystem::exists(box.dir.Path("state/written-in-place.json")));
  }
}
