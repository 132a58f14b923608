// The engine on real files under a temp root: plans, transactions, rollback, prune, and
// recovery after a SIGKILL at every step.
#include "agent/engine/engine.hpp"
#include "agent/kinds/checks/check_handler.hpp"
#include "agent/kinds/files/path_handler.hpp"

#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <random>
#include <sstream>
#include <string>

#include <doctest/doctest.h>

#include "agent/desired/render.hpp"
#include "common/content_id.hpp"
#include "common/encoding.hpp"
#include "common/sha256.hpp"
#include "common/stat_mark.hpp"
#include "tests/agent/desired_fixture.hpp"
#include "tests/support/forwarding_filesystem.hpp"
#include "tests/support/https_server.hpp"
#include "tests/support/state_stores.hpp"
#include "tests/support/temp_dir.hpp"

using tether::ActionType;
using tether::DesiredState;
using tether::Engine;
using tether::testing::TempDir;

namespace {

// Every path under a directory: type, mode and content (or target).
using Snapshot = std::map<std::string, std::string>;

Snapshot Take(const std::string& root) {
  Snapshot snapshot;
  for (auto it = std::filesystem::recursive_directory_iterator(root);
       it != std::filesystem::recursive_directory_iterator(); ++it) {
    const std::string path = it->path().string().substr(root.size());
    struct stat st {};
    REQUIRE(lstat(it->path().c_str(), &st) == 0);
    std::string value = std::to_string(st.st_mode & 07777) + " ";
    if (S_ISLNK(st.st_mode)) {
      value += "-> " + std::filesystem::read_symlink(it->path()).string();
    } else if (S_ISDIR(st.st_mode)) {
      value += "dir";
    } else {
      std::ifstream file(it->path(), std::ios::binary);
      value +=
          std::string((std::istreambuf_iterator<char>(file)), std::istreambuf_iterator<char>());
    }
    snapshot[path] = value;
  }
  return snapshot;
}

// A desired state rendered from profile text, like the daemon does.
using tether::testing::Desired;

// Injects a fault: the Nth change fails with ENOSPC, as on a full disk (0: never). Counts
// reads. Everything else goes to the real filesystem.
class FullDisk final : public tether::testing::ForwardingFilesystem {
 public:
  FullDisk(tether::Filesystem& real, int fail_at) : ForwardingFilesystem(real), fail_at_(fail_at) {}
  tether::Result<std::string> ReadFile(std::string_view p, std::size_t max) override {
    ++reads;
    return real_.ReadFile(p, max);
  }
  tether::Status WriteFileAtomic(std::string_view p, std::string_view c,
                                 const tether::WriteOptions& o) override {
    if (++changes_ == fail_at_) return tether::FailErrno(ENOSPC, "write '" + std::string(p) + "'");
    return real_.WriteFileAtomic(p, c, o);
  }
  tether::Result<std::string> WriteTemporary(std::string_view p, std::string_view c,
                                             const tether::WriteOptions& o) override {
    if (++changes_ == fail_at_) return tether::FailErrno(ENOSPC, "write '" + std::string(p) + "'");
    return real_.WriteTemporary(p, c, o);
  }
  tether::Status CreateDirectory(std::string_view p, std::uint32_t m) override {
    if (++changes_ == fail_at_) return tether::FailErrno(ENOSPC, "mkdir '" + std::string(p) + "'");
    return real_.CreateDirectory(p, m);
  }
  tether::Status CreateSymlink(std::string_view p, std::string_view t) override {
    if (++changes_ == fail_at_) {
      return tether::FailErrno(ENOSPC, "symlink '" + std::string(p) + "'");
    }
    return real_.CreateSymlink(p, t);
  }
  int reads = 0;

 private:
  int fail_at_;
  int changes_ = 0;
};

// Dies in the middle of the Nth write of a file's content: a torn temporary file is on
// disk, the rename never happened. For the crash test.
class DyingDisk final : public tether::testing::ForwardingFilesystem {
 public:
  DyingDisk(tether::Filesystem& real, std::string root, int die_at)
      : ForwardingFilesystem(real), root_(std::move(root)), die_at_(die_at) {}
  tether::Result<std::string> WriteTemporary(std::string_view p, std::string_view c,
                                             const tether::WriteOptions& o) override {
    if (++writes_ == die_at_) {
      const std::string path(p);
      const auto slash = path.rfind('/');
      std::ofstream torn(root_ + path.substr(0, slash + 1) +
                         tether::TemporaryPrefix(path.substr(slash + 1)) + "0123456789ab");
      torn << c.substr(0, c.size() / 2);
      torn.close();
      raise(SIGKILL);
    }
    return real_.WriteTemporary(p, c, o);
  }

 private:
  std::string root_;
  int die_at_;
  int writes_ = 0;
};

// A person who touches a file (`meddle`) as soon as tether has renamed its new content
// there or set its mode and owner, before tether takes its stat. With
// `ignore_attributes`, a file system that ignores a chmod or chown of it.
class MeddleAfterChange final : public tether::testing::ForwardingFilesystem {
 public:
  MeddleAfterChange(tether::Filesystem& real, std::string path, std::function<void()> meddle)
      : ForwardingFilesystem(real), path_(std::move(path)), meddle_(std::move(meddle)) {}
  tether::Status Rename(std::string_view from, std::string_view to) override {
    auto renamed = real_.Rename(from, to);
    if (renamed && to == path_) meddle_();
    return renamed;
  }
  tether::Status SetAttributes(std::string_view path, std::uint32_t mode,
                               std::optional<std::uint32_t> uid,
                               std::optional<std::uint32_t> gid) override {
    if (ignore_attributes && path == path_) return {};  // as some file systems do
    auto set = real_.SetAttributes(path, mode, uid, gid);
    if (set && path == path_) meddle_();
    return set;
  }
  bool ignore_attributes = false;

 private:
  std::string path_;
  std::function<void()> meddle_;
};

struct Host {
  TempDir root{"engine-root"};
  TempDir state{"engine-state"};
  std::unique_ptr<tether::RootedFilesystem> fs;
  std::unique_ptr<tether::KindHandler> paths;
  std::unique_ptr<tether::KindHandler> checks = tether::MakeCheckHandler(tether::HttpFetch);
  std::chrono::milliseconds health_timeout{std::chrono::seconds(5)};

  tether::StateStore& store() { return tether::testing::HostStateStore(state.path()); }

  Host() {
    std::filesystem::create_directories(root.Path("etc"));
    std::filesystem::create_directories(root.Path("srv"));
    fs = std::move(tether::RootedFilesystem::Open(root.path()).value());
    paths = tether::MakePathHandler(*fs);
  }

  Engine MakeEngine(std::function<void(int, const char*)> hook = nullptr) {
    tether::EngineOptions options;
    options.after_step = std::move(hook);
    options.health_timeout = health_timeout;
    return Engine(store(), options, {paths.get(), checks.get()});
  }

  // Plans and applies `desired` for `commit`; returns the result.
  tether::ApplyResult Converge(const DesiredState& desired, const std::string& commit,
                               std::function<void(int, const char*)> hook = nullptr) {
    Engine engine = MakeEngine(std::move(hook));
    auto inventory = engine.LoadInventory();
    REQUIRE(inventory);
    auto plan = engine.Plan(desired, *inventory);
    REQUIRE_MESSAGE(plan, (plan ? "" : plan.error().message()));
    return engine.Apply(*plan, *inventory, commit, &desired);
  }

  std::vector<tether::PlannedAction> PlanOf(const DesiredState& desired) {
    Engine engine = MakeEngine();
    auto plan = engine.Plan(desired, engine.LoadInventory().value());
    REQUIRE(plan);
    return *plan;
  }
};

const char kProfile[] = R"([[directory]]
path = "/srv/www"
mode = "0750"
[[file]]
path = "/srv/www/index.html"
content = "<h1>hello</h1>\n"
[[file]]
path = "/etc/motd"
content = "managed motd\n"
mode = "0640"
[[symlink]]
path = "/etc/site"
target = "/srv/www"
)";

bool AllInSync(const std::vector<tether::PlannedAction>& plan) {
  return std::all_of(plan.begin(), plan.end(), [](const tether::PlannedAction& p) {
    return p.action.type == ActionType::kInSync;
  });
}

}  // namespace

TEST_CASE("A first apply creates everything; the next plan is all in sync") {
  Host host;
  Desired desired(kProfile);
  auto result = host.Converge(desired.state, "c1");
  REQUIRE_MESSAGE(result.ok, result.error);
  CHECK(host.root.ReadFile("srv/www/index.html") == "<h1>hello</h1>\n");
  CHECK(host.root.ReadFile("etc/motd") == "managed motd\n");
  CHECK((std::filesystem::status(host.root.Path("etc/motd")).permissions() &
         std::filesystem::perms::all) == static_cast<std::filesystem::perms>(0640));
  CHECK(std::filesystem::read_symlink(host.root.Path("etc/site")) == "/srv/www");
  CHECK(AllInSync(host.PlanOf(desired.state)));
  CHECK_FALSE(std::filesystem::exists(host.state.Path("journal")));
  auto inventory = host.MakeEngine().LoadInventory();
  REQUIRE(inventory);
  CHECK(inventory->commit == "c1");
  CHECK(inventory->entries.size() == 4);
  CHECK(inventory->entries.at("file:/etc/motd").created);
  // On disk, each entry names its path.
  const auto json = nlohmann::json::parse(host.state.ReadFile("inventory.json"));
  CHECK(json["entries"]["file:/etc/motd"]["path"] == "/etc/motd");
  CHECK(json["entries"]["symlink:/etc/site"]["path"] == "/etc/site");
}

TEST_CASE("A file's fingerprint is as earlier releases wrote it; an unchanged file is not read") {
  Host host;
  Desired desired(kProfile);
  REQUIRE(host.Converge(desired.state, "c1").ok);
  // Its stat mark, then 8 base64 characters of the SHA-256 of "BLOB_ID/MODE/UID/GID" ('-'
  // for an owner or group left unset): inventories kept from earlier releases hold these.
  const auto stat = host.fs->Stat("/etc/motd").value();
  const std::string asked =
      tether::ContentIdHex(tether::ContentIdOf(std::string_view("managed motd\n"))) + "/416/-/-";
  const std::string expected =
      tether::StatMark(stat) + tether::Base64Encode(tether::Sha256(asked).substr(0, 6));
  auto inventory = host.MakeEngine().LoadInventory().value();
  CHECK(inventory.entries.at("file:/etc/motd").fingerprint == expected);

  FullDisk counting(*host.fs, 0);
  auto paths = tether::MakePathHandler(counting);
  Engine engine(host.store(), {}, {paths.get()});
  auto plan = engine.Plan(desired.state, inventory);
  REQUIRE(plan);
  CHECK(AllInSync(*plan));
  CHECK(counting.reads == 0);
  // Another mode asked: the same stat no longer vouches for the file.
  Desired other(std::string(kProfile).replace(std::string(kProfile).find("0640"), 4, "0600"));
  auto replanned = engine.Plan(other.state, inventory);
  REQUIRE(replanned);
  CHECK_FALSE(AllInSync(*replanned));
}

TEST_CASE("A plan finds each resource's entry in any order, and prunes only what is gone") {
  Host host;
  Desired desired(kProfile);
  REQUIRE(host.Converge(desired.state, "c1").ok);
  const auto inventory = host.MakeEngine().LoadInventory().value();
  auto prunes = [](const std::vector<tether::PlannedAction>& plan) {
    std::vector<std::string> ids;
    for (const auto& planned : plan) {
      if (planned.resource == nullptr) ids.push_back(planned.action.id);
      if (planned.resource != nullptr) {
        CHECK_MESSAGE(planned.previous != nullptr, planned.action.id);  // its entry found
        CHECK_MESSAGE(planned.action.type == ActionType::kInSync, planned.action.id);
      }
    }
    return ids;
  };
  Engine engine = host.MakeEngine();
  // As rendered (sorted by kind, then id): every entry is wanted, nothing is pruned.
  CHECK(prunes(engine.Plan(desired.state, inventory).value()).empty());
  // In reverse order, without the motd: the motd, and only it, is pruned.
  DesiredState reversed = desired.state;
  std::reverse(reversed.resources.begin(), reversed.resources.end());
  std::erase_if(reversed.resources,
                [](const tether::Resource& r) { return r.id == "file:/etc/motd"; });
  CHECK(prunes(engine.Plan(reversed, inventory).value()) ==
        std::vector<std::string>{"file:/etc/motd"});
  // A resource twice and the motd left out: as many resources as entries, and yet the
  // motd is gone.
  DesiredState twice = desired.state;
  std::erase_if(twice.resources,
                [](const tether::Resource& r) { return r.id == "file:/etc/motd"; });
  twice.resources.insert(twice.resources.begin(), twice.resources.front());
  REQUIRE(twice.resources.size() == inventory.entries.size());
  CHECK(prunes(engine.Plan(twice, inventory).value()) ==
        std::vector<std::string>{"file:/etc/motd"});
}

TEST_CASE("Entries read from the inventory's text keep what the JSON parser would give") {
  Host host;
  // As this version writes them (read as views of the text): a path its id does not name
  // is kept, one it names is not.
  {
    auto writer = host.store().StartInventory("c1");
    REQUIRE(writer);
    REQUIRE(writer->Add("file:/etc/motd", "file", "/etc/motd", true, nlohmann::json(), "fp1"));
    REQUIRE(writer->Add("unit:app.service", "unit", "/etc/systemd/system/app.service", false,
                        nlohmann::json(), ""));
    REQUIRE(writer->Finish());
    REQUIRE(host.store().InstallInventory());
  }
  auto inventory = host.MakeEngine().LoadInventory().value();
  const auto& motd = inventory.entries.at("file:/etc/motd");
  CHECK(motd.kind == tether::ResourceKind::kFile);
  CHECK(motd.created);
  CHECK(motd.path.empty());
  CHECK(motd.fingerprint == "fp1");
  CHECK_FALSE(motd.secret);
  CHECK(motd.on_remove == tether::OnRemove::kDefault);
  const auto& unit = inventory.entries.at("unit:app.service");
  CHECK(unit.kind == tether::ResourceKind::kUnit);
  CHECK_FALSE(unit.created);
  CHECK(unit.path == "/etc/systemd/system/app.service");
  // As 0.1.0 wrote them (schema v1, the same compact lines): every entry is secret, since
  // that version kept no such flag.
  host.state.WriteFile(
      "inventory.json",
      "{\"schema\":\"tether.inventory/v1\",\"commit\":\"c0\",\"entries\":{\n"
      "\"file:/etc/motd\":{\"created\":true,\"fingerprint\":\"fp0\",\"kind\":\"file\","
      "\"original\":null,\"path\":\"/etc/motd\"}\n}}\n");
  auto old = host.MakeEngine().LoadInventory().value();
  CHECK(old.commit == "c0");
  CHECK(old.entries.at("file:/etc/motd").secret);
  CHECK(old.entries.at("file:/etc/motd").fingerprint == "fp0");
}

TEST_CASE("An inventory entry holds its path only when its id does not name it") {
  Host host;
  host.state.WriteFile("inventory.json",
                       R"({"schema": "tether.inventory/v1", "commit": "c1", "entries": {
    "file:/etc/motd": {"kind": "file", "path": "/etc/motd", "created": true},
    "unit:app.service": {"kind": "unit", "path": "/etc/systemd/system/app.service",
                         "created": true},
    "package:nginx": {"kind": "package", "path": "nginx", "created": false}}})");
  auto inventory = host.MakeEngine().LoadInventory();
  REQUIRE(inventory);
  const auto& motd = inventory->entries.at("file:/etc/motd");
  const auto& unit = inventory->entries.at("unit:app.service");
  CHECK(motd.path.empty());  // its id says it
  CHECK(tether::InventoryPath("file:/etc/motd", motd) == "/etc/motd");
  CHECK(unit.path == "/etc/systemd/system/app.service");
  CHECK(tether::InventoryPath("unit:app.service", unit) == "/etc/systemd/system/app.service");
  CHECK(tether::InventoryPath("package:nginx", inventory->entries.at("package:nginx")) == "nginx");
}

TEST_CASE("An update shows a diff, replaces atomically and leaves no backup behind") {
  Host host;
  REQUIRE(host.Converge(Desired(kProfile).state, "c1").ok);
  Desired changed(std::string(kProfile).replace(std::string(kProfile).find("managed motd"), 12,
                                                "changed motd"));
  auto plan = host.PlanOf(changed.state);
  const auto motd = std::find_if(plan.begin(), plan.end(),
                                 [](const auto& p) { return p.action.id == "file:/etc/motd"; });
  REQUIRE(motd != plan.end());
  CHECK(motd->action.type == ActionType::kUpdate);
  CHECK(motd->action.diff.find("-managed motd\n+changed motd\n") != std::string::npos);
  REQUIRE(host.Converge(changed.state, "c2").ok);
  CHECK(host.root.ReadFile("etc/motd") == "changed motd\n");
  std::vector<std::string> names;
  for (const auto& entry : std::filesystem::directory_iterator(host.root.Path("etc"))) {
    names.push_back(entry.path().filename().string());
  }
  std::sort(names.begin(), names.end());
  CHECK(names == std::vector<std::string>{"motd", "site"});
}

TEST_CASE("Prune deletes what tether created and, with on_remove = restore, gives back the rest") {
  Host host;
  host.root.WriteFile("etc/issue", "the distribution's issue\n", 0600);
  Desired first(
      std::string(kProfile) +
      "[[file]]\npath = \"/etc/issue\"\ncontent = \"ours\\n\"\non_remove = \"restore\"\n");
  REQUIRE(host.Converge(first.state, "c1").ok);
  CHECK(host.root.ReadFile("etc/issue") == "ours\n");
  host.root.WriteFile("srv/www/user-upload", "not tether's\n");

  Desired emptied("");
  auto result = host.Converge(emptied.state, "c2");
  REQUIRE_MESSAGE(result.ok, result.error);
  CHECK(host.root.ReadFile("etc/issue") == "the distribution's issue\n");  // the original
  CHECK((std::filesystem::status(host.root.Path("etc/issue")).permissions() &
         std::filesystem::perms::all) == static_cast<std::filesystem::perms>(0600));
  CHECK_FALSE(std::filesystem::exists(host.root.Path("etc/motd")));
  CHECK_FALSE(std::filesystem::exists(host.root.Path("etc/site")));
  CHECK_FALSE(std::filesystem::exists(host.root.Path("srv/www/index.html")));
  // A directory with something tether never managed in it stays.
  CHECK(host.root.ReadFile("srv/www/user-upload") == "not tether's\n");
  // ... and stays tether's: once it is empty, a later cycle removes it.
  auto left = host.MakeEngine().LoadInventory().value();
  REQUIRE(left.entries.size() == 1);
  CHECK(left.entries.count("directory:/srv/www") == 1);
  std::filesystem::remove(host.root.Path("srv/www/user-upload"));
  REQUIRE(host.Converge(emptied.state, "c3").ok);
  CHECK_FALSE(std::filesystem::exists(host.root.Path("srv/www")));
  CHECK(host.MakeEngine().LoadInventory().value().entries.empty());
}

TEST_CASE("on_remove: taken over is left by default; keep, delete and restore; the plan shows it") {
  Host host;
  host.root.WriteFile("etc/keys", "revoked-key\n");  // taken over below
  host.root.WriteFile("etc/old.conf", "before tether\n");
  host.root.WriteFile("etc/token", "old token\n");
  const std::string declared =
      "[[file]]\npath = \"/etc/keys\"\ncontent = \"new-key\\n\"\n"
      "[[file]]\npath = \"/etc/kept\"\ncontent = \"kept\\n\"\non_remove = \"keep\"\n"
      "[[file]]\npath = \"/etc/old.conf\"\ncontent = \"ours\\n\"\non_remove = \"delete\"\n"
      "[[file]]\npath = \"/etc/issue\"\ncontent = \"ours\\n\"\non_remove = \"restore\"\n"
      "[[file]]\npath = \"/etc/token\"\ncontent = \"new token\\n\"\nsecret = true\n"
      "on_remove = \"restore\"\n";
  host.root.WriteFile("etc/issue", "the distribution's\n");
  REQUIRE(host.Converge(Desired(declared).state, "c1").ok);
  auto inventory = host.MakeEngine().LoadInventory().value();
  CHECK(inventory.entries.at("file:/etc/kept").on_remove == tether::OnRemove::kKeep);
  CHECK(inventory.entries.at("file:/etc/token").secret);
  // Only a restore keeps what was there: the default keeps no original.
  CHECK(inventory.entries.at("file:/etc/keys").original.is_null());
  CHECK(inventory.entries.at("file:/etc/issue").original.contains("content_base64"));

  auto plan = host.PlanOf(Desired("").state);
  std::map<std::string, const tether::Action*> by_id;
  for (const auto& planned : plan) by_id[planned.action.id] = &planned.action;
  CHECK(by_id.at("file:/etc/keys")->type == ActionType::kInSync);  // left, forgotten
  CHECK(by_id.at("file:/etc/kept")->type == ActionType::kInSync);
  CHECK(by_id.at("file:/etc/old.conf")->type == ActionType::kDelete);
  CHECK(by_id.at("file:/etc/old.conf")->diff ==
        "--- /etc/old.conf\n+++ /dev/null\n@@ -1 +0,0 @@\n-ours\n");
  CHECK(by_id.at("file:/etc/issue")->type == ActionType::kUpdate);
  CHECK(by_id.at("file:/etc/issue")->diff ==
        "--- /etc/issue\n+++ /etc/issue\n@@ -1 +1 @@\n-ours\n+the distribution's\n");
  CHECK(by_id.at("file:/etc/token")->diff == "(secret: 10 bytes -> 10 bytes, content hidden)\n");

  auto removed = host.Converge(Desired("").state, "c2");
  REQUIRE_MESSAGE(removed.ok, removed.error);
  CHECK(host.root.ReadFile("etc/keys") == "new-key\n");  // the revoked key does not come back
  CHECK(host.root.ReadFile("etc/kept") == "kept\n");
  CHECK_FALSE(std::filesystem::exists(host.root.Path("etc/old.conf")));
  CHECK(host.root.ReadFile("etc/issue") == "the distribution's\n");
  CHECK(host.root.ReadFile("etc/token") == "old token\n");
  CHECK(host.MakeEngine().LoadInventory().value().entries.empty());
}

TEST_CASE("A large original is kept out of the inventory, read back to restore, then dropped") {
  Host host;
  const std::string big(100'000, 'a');
  host.root.WriteFile("etc/big", big, 0640);
  host.root.WriteFile("etc/small", "small original\n");
  const std::string declared =
      "[[file]]\npath = \"/etc/big\"\ncontent = \"ours\\n\"\non_remove = \"restore\"\n"
      "[[file]]\npath = \"/etc/small\"\ncontent = \"ours\\n\"\non_remove = \"restore\"\n";
  REQUIRE(host.Converge(Desired(declared).state, "c1").ok);
  const std::string originals = host.state.Path("originals");
  auto inventory = host.MakeEngine().LoadInventory().value();
  const auto& kept = inventory.entries.at("file:/etc/big").original;
  REQUIRE(kept.contains("content_sha256"));
  CHECK_FALSE(kept.contains("content_base64"));
  CHECK(kept.value("content_size", 0) == big.size());
  const std::string blob = originals + "/" + kept.value("content_sha256", "");
  CHECK(std::filesystem::file_size(blob) == big.size());
  CHECK(std::filesystem::file_size(host.state.Path("inventory.json")) < 4096);
  // A small one stays in the inventory.
  CHECK(inventory.entries.at("file:/etc/small").original.contains("content_base64"));

  // The plan shows the restore (the original read back), and the apply makes it.
  auto plan = host.PlanOf(Desired("").state);
  const auto restore = std::find_if(plan.begin(), plan.end(),
                                    [](const auto& p) { return p.action.id == "file:/etc/big"; });
  REQUIRE(restore != plan.end());
  CHECK(restore->action.type == ActionType::kUpdate);
  CHECK(restore->action.diff.find("+" + std::string(80, 'a')) != std::string::npos);
  auto removed = host.Converge(Desired("").state, "c2");
  REQUIRE_MESSAGE(removed.ok, removed.error);
  CHECK(host.root.ReadFile("etc/big") == big);
  CHECK((std::filesystem::status(host.root.Path("etc/big")).permissions() &
         std::filesystem::perms::all) == static_cast<std::filesystem::perms>(0640));
  CHECK(host.root.ReadFile("etc/small") == "small original\n");
  CHECK(std::filesystem::is_empty(originals));  // no entry names it any more

  // A kept original that was damaged is not restored to something else: left as it is.
  REQUIRE(host.Converge(Desired(declared).state, "c3").ok);
  host.state.WriteFile("originals/" + kept.value("content_sha256", ""), "damaged");
  auto damaged = host.Converge(Desired("").state, "c4");
  REQUIRE_MESSAGE(damaged.ok, damaged.error);
  CHECK(host.root.ReadFile("etc/big") == "ours\n");
  CHECK(host.root.ReadFile("etc/small") == "small original\n");
  CHECK(std::filesystem::is_empty(originals));
}

TEST_CASE("A conflict refuses its own resource and leaves it; the others are applied") {
  Host host;
  std::filesystem::create_directories(host.root.Path("etc/motd"));
  auto result = host.Converge(Desired(kProfile).state, "c1");
  CHECK_FALSE(result.ok);
  CHECK_FALSE(result.rolled_back);
  CHECK(result.error ==
        "refused: '/etc/motd' is a directory; tether never replaces a directory with a file");
  REQUIRE(result.outcomes.size() == 1);
  CHECK(result.outcomes[0].id == "file:/etc/motd");
  CHECK(std::filesystem::is_directory(host.root.Path("etc/motd")));  // left as it is
  CHECK(host.root.ReadFile("srv/www/index.html") == "<h1>hello</h1>\n");
  const auto inventory = host.MakeEngine().LoadInventory().value();
  CHECK(inventory.entries.count("file:/etc/motd") == 0);
  CHECK(inventory.entries.count("file:/srv/www/index.html") == 1);
}

TEST_CASE("A refused update stays the commit's change, never drift, and is made once it can") {
  Host host;
  REQUIRE(host.Converge(Desired(kProfile).state, "c1").ok);
  std::string profile = kProfile;
  profile.replace(profile.find("managed motd"), 12, "motd of c2");
  // c2 changes /etc/motd, which a person has made a directory meanwhile: refused.
  std::filesystem::remove(host.root.Path("etc/motd"));
  std::filesystem::create_directories(host.root.Path("etc/motd"));
  Desired c2(profile);
  auto refused = host.Converge(c2.state, "c2");
  CHECK_FALSE(refused.ok);
  CHECK(refused.committed);  // the rest of c2 is applied
  CHECK_FALSE(refused.rolled_back);
  auto inventory = host.MakeEngine().LoadInventory().value();
  CHECK(inventory.commit == "c2");
  REQUIRE(inventory.entries.count("file:/etc/motd") == 1);
  CHECK(inventory.entries.at("file:/etc/motd").pending);  // still c1's entry
  CHECK_FALSE(inventory.entries.at("file:/srv/www/index.html").pending);

  // The directory goes, c1's file comes back: against c2 that is c2's change waiting,
  // not drift, so even drift = "report" applies it.
  std::filesystem::remove(host.root.Path("etc/motd"));
  host.root.WriteFile("etc/motd", "managed motd\n");
  Engine engine = host.MakeEngine();
  auto plan = engine.Plan(c2.state, inventory).value();
  CHECK(tether::ApplyDriftPolicy(plan, tether::DriftMode::kReport, true).empty());
  auto applied = engine.Apply(plan, std::move(inventory), "c2", &c2.state);
  REQUIRE_MESSAGE(applied.ok, applied.error);
  CHECK(host.root.ReadFile("etc/motd") == "motd of c2\n");
  CHECK_FALSE(applied.inventory.entries.at("file:/etc/motd").pending);
  CHECK_FALSE(host.MakeEngine().LoadInventory().value().entries.at("file:/etc/motd").pending);

  // Now it is drift again: a hand edit is reported under drift = "report".
  host.root.WriteFile("etc/motd", "by hand\n");
  auto drifting = host.PlanOf(c2.state);
  CHECK(tether::ApplyDriftPolicy(drifting, tether::DriftMode::kReport, true).size() == 1);
}

TEST_CASE("What is under a refused directory is refused with it; the rest is applied") {
  Host host;
  // /opt is neither there nor declared: /opt/app is refused, and /opt/app/app.conf, whose
  // parent is declared, would fail at its apply and roll everything back.
  Desired desired(std::string(kProfile) +
                  "[[directory]]\npath = \"/opt/app\"\n[[file]]\npath = "
                  "\"/opt/app/app.conf\"\ncontent = \"x\"\n[[file]]\npath = "
                  "\"/opt/application\"\ncontent = \"y\"\n");
  auto result = host.Converge(desired.state, "c1");
  CHECK_FALSE(result.ok);
  CHECK(result.committed);
  CHECK_FALSE(result.rolled_back);
  std::vector<std::string> refused;
  for (const auto& outcome : result.outcomes) {
    CHECK(outcome.type == ActionType::kConflict);
    refused.push_back(outcome.id + ": " + outcome.error);
  }
  CHECK(refused ==
        std::vector<std::string>{
            "directory:/opt/app: its parent directory '/opt' does not exist and the profile "
            "does not declare it",
            "file:/opt/app/app.conf: left as it is: '/opt/app' above it is refused",
            "file:/opt/application: its parent directory '/opt' does not exist and the "
            "profile does not declare it"});
  CHECK(host.root.ReadFile("etc/motd") == "managed motd\n");
}

namespace {

// Plans a conflict for "check:refused", and records what its Verify is told was refused.
class RefusingHandler final : public tether::KindHandler {
 public:
  bool Handles(tether::ResourceKind kind) const override {
    return kind == tether::ResourceKind::kCheck;
  }
  tether::Result<tether::Action> Plan(const tether::Resource& resource,
                                      const tether::InventoryEntry* /*previous*/,
                                      bool /*full_audit*/,
                                      const tether::PlanContext& /*context*/) override {
    if (resource.id == "check:refused") return tether::Fail(std::errc::io_error, "no bus");
    tether::Action action;
    action.id = resource.id;
    action.type = ActionType::kCreate;
    return action;
  }
  tether::Result<tether::Action> PlanPrune(const std::string& id,
                                           const tether::InventoryEntry& /*entry*/) override {
    tether::Action action;
    action.id = id;
    return action;
  }
  tether::Result<nlohmann::json> Begin(const tether::PlannedAction& /*planned*/,
                                       const std::string& /*tag*/) override {
    return nlohmann::json::object();
  }
  tether::Status Apply(std::vector<tether::Change>& changes, tether::Transaction& /*t*/) override {
    for (auto& change : changes) {
      change.entry = tether::InventoryEntry{
          tether::ResourceKind::kCheck, true, false, tether::OnRemove::kDefault, false, "", {}, ""};
      change.done = true;
    }
    return {};
  }
  tether::Status Undo(const tether::JournalStep& /*step*/) override { return {}; }
  tether::Status Discard(const tether::JournalStep& /*step*/) override { return {}; }
  tether::Status Verify(const DesiredState& /*desired*/, const tether::RefusedIds& refused,
                        std::chrono::steady_clock::time_point /*deadline*/) override {
    told.assign(refused.begin(), refused.end());
    if (tether::IsRefused(refused, "check:refused")) return {};
    return tether::Fail(std::errc::io_error, "'refused' is not as declared");
  }
  std::vector<std::string> told;
};

}  // namespace

TEST_CASE("The health gate is told what was refused, and does not fail the apply on it") {
  TempDir state("refusing-state");
  RefusingHandler handler;
  Engine engine(tether::testing::HostStateStore(state.path()), tether::EngineOptions(), {&handler});
  DesiredState desired;
  for (const char* id : {"check:fine", "check:refused"}) {
    tether::Resource resource;
    resource.kind = tether::ResourceKind::kCheck;
    resource.id = id;
    desired.resources.push_back(resource);
  }
  tether::Inventory inventory;
  auto plan = engine.Plan(desired, inventory).value();
  auto result = engine.Apply(plan, std::move(inventory), "c1", &desired);
  CHECK(handler.told == std::vector<std::string>{"check:refused"});
  CHECK(result.committed);
  CHECK_FALSE(result.rolled_back);
  CHECK(result.error == "refused: cannot plan it: no bus");
  CHECK(result.inventory.entries.count("check:fine") == 1);
}

TEST_CASE("A failure mid-apply undoes every done step: the host is exactly as before") {
  for (int fail_at = 1; fail_at <= 4; ++fail_at) {
    CAPTURE(fail_at);
    Host host;
    host.root.WriteFile("etc/motd", "original\n", 0644);
    REQUIRE(
        host.Converge(Desired("[[file]]\npath = \"/etc/keep\"\ncontent = \"k\\n\"\n").state, "c0")
            .ok);
    const Snapshot before = Take(host.root.path());
    FullDisk full(*host.fs, fail_at);
    host.paths = tether::MakePathHandler(full);
    auto result = host.Converge(Desired(kProfile).state, "c1");
    CHECK_FALSE(result.ok);
    CHECK(result.rolled_back);
    CHECK(result.error.find("No space left on device") != std::string::npos);
    CHECK(result.code == std::errc::no_space_on_device);
    CHECK(tether::IsTransient(result.code));  // not the commit's fault: never quarantined
    const Snapshot after = Take(host.root.path());
    for (const auto& [path, value] : after) {
      if (before.count(path) == 0 || before.at(path) != value) {
        MESSAGE("changed: " << path << " error: " << result.error);
      }
    }
    CHECK(after == before);
    CHECK(host.MakeEngine().LoadInventory().value().commit == "c0");
    CHECK_FALSE(std::filesystem::exists(host.state.Path("journal")));
    host.paths = tether::MakePathHandler(*host.fs);
  }
}

TEST_CASE("A file too large to keep is taken over, and left as tether left it on removal") {
  Host host;
  host.root.WriteFile("etc/big", std::string((64 << 20) + 1, 'x'), 0644);
  const std::string declared =
      "[[file]]\npath = \"/etc/big\"\ncontent = \"managed\\n\"\non_remove = \"restore\"\n";
  auto taken = host.Converge(Desired(declared).state, "c1");
  REQUIRE_MESSAGE(taken.ok, taken.error);
  CHECK(host.root.ReadFile("etc/big") == "managed\n");
  const auto inventory = host.MakeEngine().LoadInventory().value();
  const auto& original = inventory.entries.at("file:/etc/big").original;
  CHECK_FALSE(original.contains("content_base64"));  // 64 MiB never go into the inventory
  CHECK(original.value("content_not_kept", 0) == (64 << 20) + 1);
  // Removed from the profile: not "restored" to an empty file; left as it is.
  auto removed = host.Converge(Desired("").state, "c2");
  REQUIRE_MESSAGE(removed.ok, removed.error);
  CHECK(host.root.ReadFile("etc/big") == "managed\n");
  CHECK(host.MakeEngine().LoadInventory().value().entries.empty());
}

TEST_CASE("A corrupt inventory is reported, never silently reset") {
  Host host;
  host.state.WriteFile("inventory.json", "{\"schema\": \"tether.inventory/v1\", \"entr");
  auto inventory = host.MakeEngine().LoadInventory();
  REQUIRE_FALSE(inventory);
  CHECK(inventory.error().message() == "inventory '" + host.state.Path("inventory.json") +
                                           "' is corrupt (not JSON); it was left as it is: "
                                           "repair or remove it by hand");
  CHECK(host.state.ReadFile("inventory.json") == "{\"schema\": \"tether.inventory/v1\", \"entr");
}

TEST_CASE("SIGKILL at any step: the next start finishes the rollback or the commit") {
  // Counts the durable steps of one apply, then kills a fresh apply at random steps.
  const std::string initial_profile =
      "[[file]]\npath = \"/etc/old\"\ncontent = \"old\\n\"\n[[directory]]\npath = \"/srv\"\n";
  int steps = 0;
  {
    Host probe;
    probe.root.WriteFile("etc/motd", "original motd\n", 0644);
    REQUIRE(probe.Converge(Desired(initial_profile).state, "c0").ok);
    REQUIRE(
        probe.Converge(Desired(kProfile).state, "c1", [&](int n, const char*) { steps = n; }).ok);
  }
  REQUIRE(steps >= 10);
  std::mt19937 random(std::random_device{}());
  const int kRuns = 120;
  int rolled_back = 0;
  int committed = 0;
  for (int run = 0; run < kRuns; ++run) {
    const int kill_at = std::uniform_int_distribution<int>(1, steps)(random);
    CAPTURE(kill_at);
    Host host;
    host.root.WriteFile("etc/motd", "original motd\n", 0644);
    Desired initial(initial_profile);
    REQUIRE(host.Converge(initial.state, "c0").ok);
    const Snapshot before = Take(host.root.path());
    const auto before_inventory = host.MakeEngine().LoadInventory().value();
    Desired target(kProfile);

    // Half the runs die between two steps, half inside one of the atomic writes.
    const bool mid_write = run % 2 == 1;
    const pid_t child = fork();
    REQUIRE(child >= 0);
    if (child == 0) {
      if (mid_write) {
        static DyingDisk dying(*host.fs, host.root.path(), 1 + kill_at % 2);  // 2 files
        host.paths = tether::MakePathHandler(dying);
        (void)host.Converge(target.state, "c1");
      } else {
        (void)host.Converge(target.state, "c1", [&](int n, const char*) {
          if (n == kill_at) raise(SIGKILL);
        });
      }
      _exit(0);
    }
    int status = 0;
    REQUIRE(waitpid(child, &status, 0) == child);
    REQUIRE(WIFSIGNALED(status));

    Engine engine = host.MakeEngine();
    auto recovered = engine.Recover();
    REQUIRE_MESSAGE(recovered, (recovered ? "" : recovered.error().message()));
    CHECK_FALSE(std::filesystem::exists(host.state.Path("journal")));
    CHECK_FALSE(std::filesystem::exists(host.state.Path("inventory.json.new")));
    auto inventory = engine.LoadInventory();
    REQUIRE(inventory);
    const Snapshot after = Take(host.root.path());
    if (inventory->commit == "c0") {
      ++rolled_back;
      CHECK(after == before);  // exactly as before: no half-written file, no temporaries
      CHECK(inventory->entries.size() == before_inventory.entries.size());
    } else {
      ++committed;
      CHECK(inventory->commit == "c1");
      CHECK(AllInSync(host.PlanOf(target.state)));
      for (const auto& [path, value] : after) {
        CHECK_MESSAGE(path.find(".tether-") == std::string::npos, path);
      }
    }
  }
  MESSAGE(kRuns << " kills: " << rolled_back << " rolled back, " << committed << " committed");
  CHECK(rolled_back > 0);
}

TEST_CASE("Drift policy: revert, report and ignore, per resource; new commits are not drift") {
  tether::Resource reverted, reported, ignored, fresh;
  reverted.id = "file:/etc/a";
  reported.id = "file:/etc/b";
  reported.drift = tether::DriftMode::kReport;
  ignored.id = "file:/etc/c";
  ignored.drift = tether::DriftMode::kIgnore;
  fresh.id = "file:/etc/d";  // never applied: creating it is not drift
  static const tether::InventoryEntry applied_before;
  auto planned = [](const tether::Resource& r, bool previous) {
    tether::PlannedAction p;
    p.action.id = r.id;
    p.action.type = previous ? ActionType::kUpdate : ActionType::kCreate;
    p.action.changes = {"content"};
    p.resource = &r;
    if (previous) p.previous = &applied_before;
    return p;
  };
  auto plan = [&] {
    return std::vector<tether::PlannedAction>{planned(reverted, true), planned(reported, true),
                                              planned(ignored, true), planned(fresh, false)};
  };

  auto drifting = plan();
  const auto report = tether::ApplyDriftPolicy(drifting, tether::DriftMode::kRevert, true);
  REQUIRE(report.size() == 1);
  CHECK(report[0].id == "file:/etc/b");
  CHECK(drifting[0].action.type == ActionType::kUpdate);  // reverted
  CHECK(drifting[1].action.type == ActionType::kInSync);  // reported, left
  CHECK(drifting[2].action.type == ActionType::kInSync);  // ignored
  CHECK(drifting[3].action.type == ActionType::kCreate);  // not drift

  auto defaulted = plan();
  CHECK(tether::ApplyDriftPolicy(defaulted, tether::DriftMode::kReport, true).size() == 2);
  CHECK(defaulted[0].action.type == ActionType::kInSync);

  auto release = plan();
  CHECK(tether::ApplyDriftPolicy(release, tether::DriftMode::kIgnore, false).empty());
  CHECK(release[2].action.type == ActionType::kUpdate);  // a new commit is applied
}

TEST_CASE("An unchanged file is not read again; a full audit reads it; any edit is seen") {
  Host host;
  REQUIRE(host.Converge(Desired(kProfile).state, "c1").ok);
  FullDisk counting(*host.fs, 0);  // never fails; counts reads
  host.paths = tether::MakePathHandler(counting);
  Desired desired(kProfile);
  Engine engine = host.MakeEngine();
  const auto inventory = engine.LoadInventory().value();
  auto cached = engine.Plan(desired.state, inventory);
  REQUIRE(cached);
  CHECK(AllInSync(*cached));
  CHECK(counting.reads == 0);

  auto audited = engine.Plan(desired.state, inventory, /*full_audit=*/true);
  REQUIRE(audited);
  CHECK(AllInSync(*audited));
  CHECK(counting.reads == 2);  // the two files

  // Same size, same mtime put back: ctime still moved, so the edit is seen.
  const std::string motd = host.root.Path("etc/motd");
  struct stat before {};
  REQUIRE(stat(motd.c_str(), &before) == 0);
  host.root.WriteFile("etc/motd", "MANAGED motd\n", 0640);
  const timespec times[2] = {before.st_atim, before.st_mtim};
  REQUIRE(utimensat(AT_FDCWD, motd.c_str(), times, 0) == 0);
  auto replanned = engine.Plan(desired.state, inventory);
  REQUIRE(replanned);
  CHECK_FALSE(AllInSync(*replanned));
}

TEST_CASE("A repair of only the resources a watch saw keeps the rest of the inventory") {
  Host host;
  Desired desired(kProfile);
  REQUIRE(host.Converge(desired.state, "c1").ok);
  host.root.WriteFile("etc/motd", "drifted\n", 0640);
  Engine engine = host.MakeEngine();
  const auto inventory = engine.LoadInventory().value();
  const std::set<std::string> only = {"file:/etc/motd"};
  auto plan = engine.Plan(desired.state, inventory, false, &only);
  REQUIRE(plan);
  REQUIRE(plan->size() == 1);
  CHECK((*plan)[0].action.type == ActionType::kUpdate);
  auto result = engine.Apply(*plan, inventory, "c1");
  REQUIRE_MESSAGE(result.ok, result.error);
  CHECK(host.root.ReadFile("etc/motd") == "managed motd\n");
  CHECK(engine.LoadInventory().value().entries.size() == 4);
}

TEST_CASE("A repair from an inventory read in part records its fingerprints beside it") {
  Host host;
  Desired desired(kProfile);
  REQUIRE(host.Converge(desired.state, "c1").ok);
  const std::string before = host.state.ReadFile("inventory.json");
  const auto whole = host.MakeEngine().LoadInventory().value();
  host.root.WriteFile("etc/motd", "drifted\n", 0640);
  Engine engine = host.MakeEngine();
  // The files but the drifted one are left unread; the directory and the symlink are read.
  auto inventory = engine
                       .LoadInventory([](std::string_view id, std::string_view kind) {
                         return kind != "file" || id == "file:/etc/motd";
                       })
                       .value();
  CHECK(inventory.commit == "c1");
  CHECK(inventory.entries.size() == 3);
  REQUIRE(inventory.unread.lines().size() == 1);
  CHECK(inventory.unread.lines()[0].id() == "file:/srv/www/index.html");
  // A plan of every resource needs every entry.
  auto all = engine.Plan(desired.state, inventory);
  REQUIRE_FALSE(all);
  CHECK(all.error().message().find("the whole inventory") != std::string::npos);
  // What the plan takes besides the drifted file is read first (here the other file).
  const std::set<std::string> only = {"file:/etc/motd", "file:/srv/www/index.html"};
  REQUIRE(engine.ReadEntries(inventory, only));
  CHECK(inventory.unread.empty());
  // A resource of another kind at a file's path: the file's entry is read, for Plan to
  // see that it takes that file's place.
  auto replacing =
      engine.LoadInventory([](std::string_view, std::string_view kind) { return kind != "file"; })
          .value();
  REQUIRE(replacing.unread.lines().size() == 2);
  REQUIRE(engine.ReadEntries(replacing, {"symlink:/etc/motd"}));
  CHECK(replacing.entries.count("file:/etc/motd") == 1);
  CHECK(replacing.unread.lines().size() == 1);
  CHECK(inventory.entries.at("file:/srv/www/index.html").fingerprint ==
        whole.entries.at("file:/srv/www/index.html").fingerprint);

  // Only the drifted file read: the other's line goes back as it was.
  inventory = engine
                  .LoadInventory([](std::string_view id, std::string_view kind) {
                    return kind != "file" || id == "file:/etc/motd";
                  })
                  .value();
  const std::set<std::string> motd = {"file:/etc/motd"};
  REQUIRE(engine.ReadEntries(inventory, motd));
  auto plan = engine.Plan(desired.state, inventory, false, &motd);
  REQUIRE(plan);
  REQUIRE(plan->size() == 1);
  CHECK((*plan)[0].action.type == ActionType::kUpdate);
  auto result = engine.Apply(*plan, std::move(inventory), "c1");
  REQUIRE_MESSAGE(result.ok, result.error);
  CHECK(host.root.ReadFile("etc/motd") == "managed motd\n");
  const auto after = host.MakeEngine().LoadInventory().value();
  REQUIRE(after.entries.size() == whole.entries.size());
  for (const auto& [id, entry] : whole.entries) {
    CAPTURE(id);
    REQUIRE(after.entries.count(id) == 1);
    CHECK(after.entries.at(id).kind == entry.kind);
    CHECK(after.entries.at(id).created == entry.created);
    if (id != "file:/etc/motd") CHECK(after.entries.at(id).fingerprint == entry.fingerprint);
  }
  // Only the repaired file's fingerprint changed: it is recorded beside the inventory,
  // which stays as it was.
  CHECK(after.entries.at("file:/etc/motd").fingerprint !=
        whole.entries.at("file:/etc/motd").fingerprint);
  CHECK(host.state.ReadFile("inventory.json") == before);
  const auto delta = nlohmann::json::parse(host.state.ReadFile("inventory.delta"));
  CHECK(delta["commit"] == "c1");
  CHECK(delta["base"].get<std::string>().size() == tether::kStatMarkSize);
  CHECK(delta["fingerprints"] ==
        nlohmann::json{{"file:/etc/motd", after.entries.at("file:/etc/motd").fingerprint}});
  // A partial read parses what the delta names, never leaves it unread (whose line
  // would go back with the older fingerprint).
  auto next =
      host.MakeEngine()
          .LoadInventory([](std::string_view, std::string_view kind) { return kind != "file"; })
          .value();
  CHECK(next.entries.count("file:/etc/motd") == 1);
  CHECK(next.entries.at("file:/etc/motd").fingerprint ==
        after.entries.at("file:/etc/motd").fingerprint);
  for (const auto& line : next.unread.lines()) CHECK(line.id() != "file:/etc/motd");

  // A whole inventory written takes the delta in, and it goes.
  host.root.WriteFile("etc/motd", "edited again\n");
  Engine full = host.MakeEngine();
  auto whole_again = full.LoadInventory().value();
  auto every = full.Plan(desired.state, whole_again);
  REQUIRE(every);
  auto applied = full.Apply(*every, std::move(whole_again), "c1");
  REQUIRE_MESSAGE(applied.ok, applied.error);
  CHECK_FALSE(std::filesystem::exists(host.state.Path("inventory.delta")));
  CHECK(host.state.ReadFile("inventory.json") != before);
  const auto folded = host.MakeEngine().LoadInventory().value();
  CHECK(folded.entries.at("file:/etc/motd").fingerprint ==
        applied.inventory.entries.at("file:/etc/motd").fingerprint);
}

TEST_CASE("SIGKILL at every step of a repair recorded beside the inventory: nothing is lost") {
  Desired desired(kProfile);
  const std::set<std::string> motd = {"file:/etc/motd"};
  auto repair = [&](Host& host, std::function<void(int, const char*)> hook) {
    Engine engine = host.MakeEngine(std::move(hook));
    auto inventory = engine
                         .LoadInventory([](std::string_view id, std::string_view kind) {
                           return kind != "file" || id == "file:/etc/motd";
                         })
                         .value();
    REQUIRE(engine.ReadEntries(inventory, motd));
    auto plan = engine.Plan(desired.state, inventory, false, &motd);
    REQUIRE(plan);
    return engine.Apply(*plan, std::move(inventory), "c1");
  };
  auto fingerprint = [](Host& host) {
    return host.MakeEngine().LoadInventory().value().entries.at("file:/etc/motd").fingerprint;
  };
  // The second of two repairs of motd is killed: the first one's delta is what it adds to.
  auto prepare = [&](Host& host) {
    REQUIRE(host.Converge(desired.state, "c1").ok);
    host.root.WriteFile("etc/motd", "drifted\n", 0640);
    REQUIRE(repair(host, nullptr).ok);
    REQUIRE(std::filesystem::exists(host.state.Path("inventory.delta")));
    host.root.WriteFile("etc/motd", "drifted again\n", 0640);
  };
  int steps = 0;
  {
    Host probe;
    prepare(probe);
    REQUIRE(repair(probe, [&](int n, const char*) { steps = n; }).ok);
  }
  REQUIRE(steps >= 3);
  int rolled_back = 0;
  int committed = 0;
  for (int kill_at = 1; kill_at <= steps; ++kill_at) {
    CAPTURE(kill_at);
    Host host;
    prepare(host);
    const std::string base = host.state.ReadFile("inventory.json");
    const std::string first = fingerprint(host);
    const pid_t child = fork();
    REQUIRE(child >= 0);
    if (child == 0) {
      (void)repair(host, [&](int n, const char*) {
        if (n == kill_at) raise(SIGKILL);
      });
      _exit(0);
    }
    int status = 0;
    REQUIRE(waitpid(child, &status, 0) == child);
    REQUIRE(WIFSIGNALED(status));

    REQUIRE(host.MakeEngine().Recover());
    for (const char* name : {"journal", "inventory.json.new", "inventory.delta.new"}) {
      CHECK_FALSE_MESSAGE(std::filesystem::exists(host.state.Path(name)), name);
    }
    CHECK(host.state.ReadFile("inventory.json") == base);
    const std::string now = fingerprint(host);
    if (host.root.ReadFile("etc/motd") == "drifted again\n") {
      ++rolled_back;
      CHECK(now == first);
    } else {
      ++committed;
      CHECK(host.root.ReadFile("etc/motd") == "managed motd\n");
      // What the daemon compares with the file's stat to tell its own write.
      CHECK(now.substr(0, tether::kStatMarkSize) ==
            tether::StatMark(host.fs->Stat("/etc/motd").value()));
    }
  }
  MESSAGE(steps << " kills: " << rolled_back << " rolled back, " << committed << " committed");
  CHECK(rolled_back > 0);
  CHECK(committed > 0);
}

TEST_CASE("A person's write or chmod between tether's change and its stat is not taken for its") {
  const std::string motd = "/etc/motd";
  // Drift of `motd` (content and mode, or mode alone); what a person does between tether's
  // change and its stat; what the file is then. The file gets no fingerprint (were its
  // stat taken for tether's, the daemon and the next plan would leave it as it is): the
  // next plan reads it, and puts it back.
  struct Case {
    const char* name;
    const char* drifted;
    std::function<void(const std::string&)> meddle;
    const char* left;
    std::filesystem::perms mode;
  };
  const auto append = [](const std::string& file) {
    std::ofstream(file, std::ios::app) << "a person's line\n";
  };
  const auto chmod600 = [](const std::string& file) {
    std::filesystem::permissions(
        file, std::filesystem::perms::owner_read | std::filesystem::perms::owner_write);
  };
  const auto rw_r = std::filesystem::perms::owner_read | std::filesystem::perms::owner_write |
                    std::filesystem::perms::group_read;
  const Case cases[] = {
      {"content replaced, then written in place", "drifted\n", append,
       "managed motd\na person's line\n", rw_r},
      {"content replaced, then chmod", "drifted\n", chmod600, "managed motd\n",
       std::filesystem::perms::owner_read | std::filesystem::perms::owner_write},
      {"mode set in place, then written in place", "managed motd\n", append,
       "managed motd\na person's line\n", rw_r},
  };
  for (const auto& c : cases) {
    INFO(c.name);
    Host host;
    Desired desired(kProfile);
    REQUIRE(host.Converge(desired.state, "c1").ok);
    // Content drift is written afresh (a rename); mode drift is set in place.
    host.root.WriteFile("etc/motd", c.drifted, 0604);
    const std::string file = host.root.Path("etc/motd");
    MeddleAfterChange meddling(*host.fs, motd, [&] { c.meddle(file); });
    host.paths = tether::MakePathHandler(meddling);
    const auto result = host.Converge(desired.state, "c1");
    REQUIRE_MESSAGE(result.ok, result.error);
    CHECK(host.root.ReadFile("etc/motd") == c.left);
    CHECK((std::filesystem::status(file).permissions() & std::filesystem::perms::mask) == c.mode);
    CHECK(result.inventory.entries.at("file:/etc/motd").fingerprint.empty());
    host.paths = tether::MakePathHandler(*host.fs);
    const auto next = host.PlanOf(desired.state);
    const auto planned = std::find_if(
        next.begin(), next.end(), [](const auto& p) { return p.action.id == "file:/etc/motd"; });
    REQUIRE(planned != next.end());
    CHECK(planned->action.type == ActionType::kUpdate);
  }
  // Nobody meddling: a mode set in place gets its fingerprint (the next plan reads nothing),
  // of the mode the file system set: one that ignores a chmod (or drops a setgid bit) must
  // not leave the file without one, which the daemon would take for drift after each repair.
  for (const bool ignored : {false, true}) {
    CAPTURE(ignored);
    Host host;
    Desired desired(kProfile);
    REQUIRE(host.Converge(desired.state, "c1").ok);
    host.root.WriteFile("etc/motd", "managed motd\n", 0604);
    MeddleAfterChange ignoring(*host.fs, motd, [] {});
    ignoring.ignore_attributes = ignored;
    host.paths = tether::MakePathHandler(ignoring);
    const auto result = host.Converge(desired.state, "c1");
    REQUIRE_MESSAGE(result.ok, result.error);
    const auto mode = std::filesystem::status(host.root.Path("etc/motd")).permissions();
    const auto drifted_mode = std::filesystem::perms::owner_read |
                              std::filesystem::perms::owner_write |
                              std::filesystem::perms::others_read;  // 0604, as drifted
    CHECK((mode & std::filesystem::perms::mask) == (ignored ? drifted_mode : rw_r));
    const std::string& fingerprint = result.inventory.entries.at("file:/etc/motd").fingerprint;
    REQUIRE_FALSE(fingerprint.empty());
    CHECK(fingerprint.substr(0, tether::kStatMarkSize) ==
          tether::StatMark(host.fs->Stat("/etc/motd").value()));
  }
}

TEST_CASE("A path whose parent is missing and undeclared is refused, alone") {
  Host host;
  const Snapshot before = Take(host.root.path());
  Desired desired(std::string(kProfile) +
                  "[[file]]\npath = \"/etc/nginx/conf.d/site.conf\"\ncontent = \"x\"\n");
  auto result = host.Converge(desired.state, "c1");
  CHECK_FALSE(result.ok);
  CHECK(result.error ==
        "refused: its parent directory '/etc/nginx' does not exist and the profile does not "
        "declare it");
  // That file alone: the rest of the profile is applied.
  CHECK_FALSE(std::filesystem::exists(host.root.Path("etc/nginx")));
  CHECK(host.root.ReadFile("etc/motd") == "managed motd\n");
  (void)before;

  // Declared, it is created first (directories come before files).
  Desired declared(std::string(kProfile) +
                   "[[directory]]\npath = \"/etc/nginx\"\n[[directory]]\npath = "
                   "\"/etc/nginx/conf.d\"\n[[file]]\npath = \"/etc/nginx/conf.d/site.conf\"\n"
                   "content = \"x\"\n");
  auto applied = host.Converge(declared.state, "c2");
  REQUIRE_MESSAGE(applied.ok, applied.error);
  CHECK(host.root.ReadFile("etc/nginx/conf.d/site.conf") == "x");
}

TEST_CASE("A content update keeps the owner when the profile names none") {
  if (geteuid() != 0) return;  // chown needs root; CI runs as root
  Host host;
  host.root.WriteFile("etc/app.conf", "old\n", 0640);
  REQUIRE(chown(host.root.Path("etc/app.conf").c_str(), 1234, 1234) == 0);
  Desired desired("[[file]]\npath = \"/etc/app.conf\"\ncontent = \"new\\n\"\nmode = \"0640\"\n");
  REQUIRE(host.Converge(desired.state, "c1").ok);
  struct stat st {};
  REQUIRE(stat(host.root.Path("etc/app.conf").c_str(), &st) == 0);
  CHECK(host.root.ReadFile("etc/app.conf") == "new\n");
  CHECK(st.st_uid == 1234);
  CHECK(st.st_gid == 1234);
}

TEST_CASE("Files whose long names share a prefix keep their own backups through a rollback") {
  Host host;
  const std::string stem(200, 'n');
  host.root.WriteFile("etc/" + stem + "-a", "original a\n");
  host.root.WriteFile("etc/" + stem + "-b", "original b\n");
  const Snapshot before = Take(host.root.path());
  FullDisk full(*host.fs, 3);  // the third change fails: both files were replaced
  host.paths = tether::MakePathHandler(full);
  Desired desired("[[file]]\npath = \"/etc/" + stem +
                  "-a\"\ncontent = \"new a\\n\"\n[[file]]\npath = \"/etc/" + stem +
                  "-b\"\ncontent = \"new b\\n\"\n[[file]]\npath = \"/etc/z\"\ncontent = \"z\"\n");
  auto result = host.Converge(desired.state, "c1");
  CHECK_FALSE(result.ok);
  CHECK(result.rolled_back);
  CHECK(Take(host.root.path()) == before);
}

TEST_CASE("Only exact temporary names count as leftovers") {
  CHECK(tether::IsTemporaryName(".motd.tether-0123456789ab", "motd"));
  CHECK_FALSE(tether::IsTemporaryName(".motd.tether-notes", "motd"));
  CHECK_FALSE(tether::IsTemporaryName(".motd.tether-backup-0123456789ab-1", "motd"));
  CHECK_FALSE(tether::IsTemporaryName(".motd.tether-0123456789ab", "mot"));
  CHECK(tether::TemporaryPrefix(std::string(200, 'x') + "a") !=
        tether::TemporaryPrefix(std::string(200, 'x') + "b"));
}

TEST_CASE("A pruned directory comes back when the apply is rolled back") {
  Host host;
  REQUIRE(
      host.Converge(Desired("[[directory]]\npath = \"/srv/old\"\nmode = \"0750\"\n").state, "c1")
          .ok);
  const Snapshot before = Take(host.root.path());
  Desired next("[[file]]\npath = \"/etc/new\"\ncontent = \"x\"\n");
  // Killed right after the prune (the second change), before the commit.
  const pid_t child = fork();
  REQUIRE(child >= 0);
  if (child == 0) {
    int changes = 0;
    (void)host.Converge(next.state, "c2", [&](int, const char* what) {
      if (std::string(what) == "change" && ++changes == 2) raise(SIGKILL);
    });
    _exit(0);
  }
  int status = 0;
  REQUIRE(waitpid(child, &status, 0) == child);
  REQUIRE(WIFSIGNALED(status));
  CHECK_FALSE(std::filesystem::exists(host.root.Path("srv/old")));  // it was pruned
  REQUIRE(host.MakeEngine().Recover());
  CHECK(Take(host.root.path()) == before);  // /srv/old is back, mode and all
}

TEST_CASE("Recovery leaves a directory it made that has since got other files in it") {
  Host host;
  Desired desired(
      "[[directory]]\npath = \"/srv/new\"\n[[file]]\npath = \"/etc/x\"\ncontent = \"x\"\n");
  const pid_t child = fork();
  REQUIRE(child >= 0);
  if (child == 0) {
    (void)host.Converge(desired.state, "c1", [&](int, const char* what) {
      if (std::string(what) == "change") raise(SIGKILL);  // right after /srv/new was made
    });
    _exit(0);
  }
  int status = 0;
  REQUIRE(waitpid(child, &status, 0) == child);
  REQUIRE(WIFSIGNALED(status));
  host.root.WriteFile("srv/new/someone-elses", "data\n");
  auto recovered = host.MakeEngine().Recover();
  REQUIRE_MESSAGE(recovered, (recovered ? "" : recovered.error().message()));
  CHECK(host.root.ReadFile("srv/new/someone-elses") == "data\n");
  CHECK_FALSE(std::filesystem::exists(host.state.Path("journal")));
}

TEST_CASE("A path that changes kind between commits (file to symlink and back) is applied") {
  Host host;
  host.root.WriteFile("etc/issue", "the distribution's\n");  // taken over by the first commit
  REQUIRE(host.Converge(Desired("[[file]]\npath = \"/etc/site\"\ncontent = \"a file\\n\"\n"
                                "[[file]]\npath = \"/etc/issue\"\ncontent = \"ours\\n\"\n"
                                "on_remove = \"restore\"\n")
                            .state,
                        "c1")
              .ok);
  auto to_links = host.Converge(Desired("[[symlink]]\npath = \"/etc/site\"\ntarget = \"/srv\"\n"
                                        "[[symlink]]\npath = \"/etc/issue\"\ntarget = \"/srv\"\n"
                                        "on_remove = \"restore\"\n")
                                    .state,
                                "c2");
  REQUIRE_MESSAGE(to_links.ok, to_links.error);
  CHECK(std::filesystem::read_symlink(host.root.Path("etc/site")) == "/srv");
  auto inventory = host.MakeEngine().LoadInventory().value();
  CHECK(inventory.entries.size() == 2);
  CHECK(inventory.entries.at("symlink:/etc/site").created);
  CHECK_FALSE(inventory.entries.at("symlink:/etc/issue").created);  // still taken over

  // Dropping it all: what tether created goes, the original comes back.
  REQUIRE(host.Converge(Desired("").state, "c3").ok);
  CHECK_FALSE(std::filesystem::exists(host.root.Path("etc/site")));
  CHECK(host.root.ReadFile("etc/issue") == "the distribution's\n");
}

namespace {

// Counts the writes and syncs the engine asks of the filesystem.
class CountingDisk final : public tether::testing::ForwardingFilesystem {
 public:
  using ForwardingFilesystem::ForwardingFilesystem;
  tether::Status WriteFileAtomic(std::string_view p, std::string_view c,
                                 const tether::WriteOptions& o) override {
    ++atomic_writes;
    return real_.WriteFileAtomic(p, c, o);
  }
  tether::Result<std::string> WriteTemporary(std::string_view p, std::string_view c,
                                             const tether::WriteOptions& o) override {
    ++temporaries;
    return real_.WriteTemporary(p, c, o);
  }
  tether::Status SyncFilesystems(const std::vector<std::string>& p) override {
    ++syncs;
    synced.insert(synced.end(), p.begin(), p.end());
    return real_.SyncFilesystems(p);
  }
  tether::Status SyncDirectory(std::string_view p) override {
    ++syncs;
    synced.emplace_back(p);
    return real_.SyncDirectory(p);
  }
  int atomic_writes = 0;
  int temporaries = 0;
  int syncs = 0;
  std::vector<std::string> synced;  // every path asked to be made durable
};

}  // namespace

TEST_CASE("A mode changed in place is made durable with the path itself, not only its directory") {
  Host host;
  Desired desired(kProfile);
  REQUIRE(host.Converge(desired.state, "c1").ok);
  host.root.WriteFile("etc/motd", "managed motd\n", 0600);  // the content as declared
  CountingDisk counting(*host.fs);
  host.paths = tether::MakePathHandler(counting);
  auto result = host.Converge(desired.state, "c1");
  REQUIRE_MESSAGE(result.ok, result.error);
  struct stat st {};
  REQUIRE(lstat(host.root.Path("etc/motd").c_str(), &st) == 0);
  CHECK((st.st_mode & 07777) == 0640);
  CHECK(counting.temporaries == 0);  // no content written: a chmod
  CHECK(std::count(counting.synced.begin(), counting.synced.end(), "/etc/motd") == 1);
  CHECK(std::count(counting.synced.begin(), counting.synced.end(), "/etc") == 1);
}

TEST_CASE("Many files cost a couple of syncs, not one per file, and stay all-or-nothing") {
  std::string profile = "[[directory]]\npath = \"/srv/many\"\n";
  for (int i = 0; i < 50; ++i) {
    profile += "[[file]]\npath = \"/srv/many/f" + std::to_string(i) + "\"\ncontent = \"" +
               std::to_string(i) + "\\n\"\n";
  }
  Host host;
  CountingDisk counting(*host.fs);
  host.paths = tether::MakePathHandler(counting);
  auto result = host.Converge(Desired(profile).state, "c1");
  REQUIRE(result.ok);
  CHECK(host.root.ReadFile("srv/many/f49") == "49\n");
  CHECK(counting.temporaries == 50);
  CHECK(counting.atomic_writes == 0);
  CHECK(counting.syncs == 2);  // the contents before the renames; the renames before commit

  // A write failing half-way through the batch: everything is undone, temporaries too.
  Host failing;
  const Snapshot before = Take(failing.root.path());
  FullDisk full(*failing.fs, 30);  // the mkdir, then the 29th file
  failing.paths = tether::MakePathHandler(full);
  auto failed = failing.Converge(Desired(profile).state, "c1");
  CHECK_FALSE(failed.ok);
  CHECK(failed.rolled_back);
  // Resources are in id order: the 29th file is f34 (f0, f1, f10 ... f19, f2, f20 ...).
  CHECK(failed.error ==
        "apply 'file:/srv/many/f34': write '/srv/many/f34': No space left on device");
  CHECK(Take(failing.root.path()) == before);
}

TEST_CASE("Source contents are not held: read again to diff and write, and checked") {
  const std::string profile =
      "[[file]]\npath = \"/etc/app.conf\"\nsource = \"files/app.conf\"\n"
      "[[file]]\npath = \"/etc/motd\"\nsource = \"files/motd\"\ntemplate = true\n";
  Desired desired(profile,
                  {{"files/app.conf", "port = 1\n"}, {"files/motd", "on {{ host.hostname }}\n"}});
  const auto& app = std::get<tether::FileSpec>(desired.state.resources[0].spec);
  const auto& motd = std::get<tether::FileSpec>(desired.state.resources[1].spec);
  CHECK(app.lazy != nullptr);
  CHECK(app.content.empty());
  CHECK(tether::ContentSize(app) == 9);
  CHECK(motd.lazy == nullptr);  // a template's expansion is held
  CHECK(motd.content == "on h\n");

  Host host;
  host.root.WriteFile("etc/app.conf", "port = 0\n", 0644);
  auto plan = host.PlanOf(desired.state);
  REQUIRE(plan.size() == 2);
  CHECK(plan[0].action.diff.find("-port = 0\n+port = 1\n") != std::string::npos);
  REQUIRE(host.Converge(desired.state, "c1").ok);
  CHECK(host.root.ReadFile("etc/app.conf") == "port = 1\n");

  // The tree changed under a rendered state: nothing is written that was not rendered,
  // whether the change is seen when planning or when applying.
  host.root.WriteFile("etc/app.conf", "edited\n", 0644);
  Engine engine = host.MakeEngine();
  auto inventory = engine.LoadInventory().value();
  auto repair = engine.Plan(desired.state, inventory);
  REQUIRE(repair);
  desired.repo.WriteFile("files/app.conf", "port = 6\n");  // same size, other content
  auto result = engine.Apply(*repair, inventory, "c1");
  CHECK_FALSE(result.ok);
  CHECK(result.rolled_back);
  CHECK(result.error ==
        "apply 'file:/etc/app.conf': the content of '/etc/app.conf' ('files/app.conf') is not "
        "what was rendered; refusing to write it");
  CHECK(host.root.ReadFile("etc/app.conf") == "edited\n");
  // Planned again, that file is refused (and left), not the whole plan.
  auto replanned = engine.Plan(desired.state, inventory);
  REQUIRE(replanned);
  REQUIRE(replanned->size() == 2);
  CHECK((*replanned)[0].action.type == ActionType::kConflict);
  CHECK((*replanned)[0].action.reason.str().find("is not what was rendered") != std::string::npos);
}

TEST_CASE("A full audit is due once a period, and when its record is missing or odd") {
  TempDir state("audit-state");
  using std::chrono::minutes;
  const auto now = std::chrono::system_clock::time_point(std::chrono::seconds(1800000000));
  tether::StateStore& store = tether::testing::HostStateStore(state.path());
  CHECK(tether::FullAuditDue(store, minutes(10), now));  // never audited
  REQUIRE(store.RecordAudit(now));
  CHECK(state.ReadFile("last-audit") == "1800000000\n");
  CHECK_FALSE(tether::FullAuditDue(store, minutes(10), now + minutes(9)));
  CHECK(tether::FullAuditDue(store, minutes(10), now + minutes(10)));
  CHECK(tether::FullAuditDue(store, minutes(10), now - minutes(1)));  // clock set back
  state.WriteFile("last-audit", "yesterday\n");
  CHECK(tether::FullAuditDue(store, minutes(10), now));
}

TEST_CASE("A failing health check rolls the whole apply back and says which check failed") {
  Host host;
  host.health_timeout = std::chrono::milliseconds(1500);
  const std::string conf = host.root.Path("etc/app.conf");
  auto profile = [&](const std::string& content) {
    return "[[file]]\npath = \"/etc/app.conf\"\ncontent = \"" + content +
           "\\n\"\n[[check]]\nname = \"config is valid\"\nexec = [\"/bin/sh\", \"-c\", "
           "\"grep -q '^valid' " +
           conf +
           " || { echo 'app: config rejected' >&2; exit 3; }\"]\n"
           "timeout = \"2s\"\n";
  };
  REQUIRE(host.Converge(Desired(profile("valid 1")).state, "c1").ok);
  CHECK(host.root.ReadFile("etc/app.conf") == "valid 1\n");
  const Snapshot before = Take(host.root.path());

  auto result = host.Converge(Desired(profile("broken")).state, "c2");
  CHECK_FALSE(result.ok);
  CHECK(result.rolled_back);
  CHECK(result.unhealthy);
  CHECK(result.error ==
        "health check: check 'config is valid' failed: exited with status 3, expected 0: app: "
        "config rejected");
  CHECK(Take(host.root.path()) == before);  // the old file is back
  CHECK(host.MakeEngine().LoadInventory().value().commit == "c1");

  // apply.rollback = "off": the failure is reported, and the apply stays.
  tether::EngineOptions options;
  options.health_timeout = std::chrono::milliseconds(500);
  options.roll_back_unhealthy = false;
  Engine keeping(host.store(), options, {host.paths.get(), host.checks.get()});
  Desired broken(profile("broken"));
  auto inventory = keeping.LoadInventory().value();
  auto kept =
      keeping.Apply(keeping.Plan(broken.state, inventory).value(), inventory, "c2", &broken.state);
  CHECK_FALSE(kept.ok);
  CHECK(kept.unhealthy);
  CHECK_FALSE(kept.rolled_back);
  CHECK(kept.error.find("check 'config is valid' failed") != std::string::npos);
  CHECK(host.root.ReadFile("etc/app.conf") == "broken\n");
  CHECK(keeping.LoadInventory().value().commit == "c2");

  // Nothing applied, nothing to gate: a cycle without changes does not run the checks.
  const std::string failing =
      "[[file]]\npath = \"/etc/app.conf\"\ncontent = \"broken\\n\"\n[[check]]\nname = "
      "\"always fails\"\nexec = [\"/bin/false\"]\n";
  CHECK(host.Converge(Desired(failing).state, "c2").ok);
}

TEST_CASE("An HTTP check passes on the expected status, retried until the deadline") {
  tether::testing::HttpsServer server({{}, "", true});
  Host host;
  host.health_timeout = std::chrono::seconds(5);
  // Down twice, then up: retried, so the apply passes.
  server.Enqueue(tether::testing::ScriptedResponse::Respond(503));
  server.Enqueue(tether::testing::ScriptedResponse::Respond(503));
  const std::string profile =
      "[[file]]\npath = \"/etc/motd\"\ncontent = \"a\\n\"\n"
      "[[check]]\nname = \"site\"\nhttp = \"" +
      server.url("/health") + "\"\n";
  auto result = host.Converge(Desired(profile).state, "c1");
  CHECK_MESSAGE(result.ok, result.error);
  CHECK(server.request_count() == 3);

  host.health_timeout = std::chrono::milliseconds(1200);
  server.SetDefaultResponse(tether::testing::ScriptedResponse::Respond(500));
  auto failed =
      host.Converge(Desired("[[file]]\npath = \"/etc/motd\"\ncontent = \"b\\n\"\n[[check]]\nname = "
                            "\"site\"\nhttp = \"" +
                            server.url("/health") + "\"\n")
                        .state,
                    "c2");
  CHECK_FALSE(failed.ok);
  CHECK(failed.rolled_back);
  CHECK(failed.error.find("check 'site' failed: " + server.url("/health") +
                          " answered 500, expected 200") != std::string::npos);
  CHECK(host.root.ReadFile("etc/motd") == "a\n");
}

namespace {

// A handler of two kinds that share names (like unit:x.service and service:x.service),
// recording what the engine asks of it. Changes nothing.
class TwoKinds final : public tether::KindHandler {
 public:
  bool Handles(tether::ResourceKind kind) const override {
    return kind == tether::ResourceKind::kUnit || kind == tether::ResourceKind::kService;
  }
  tether::Result<tether::Action> Plan(const tether::Resource& resource,
                                      const tether::InventoryEntry* previous, bool,
                                      const tether::PlanContext&) override {
    planned_over.push_back(resource.id + (previous != nullptr ? " over an entry" : ""));
    tether::Action action;
    action.id = resource.id;
    return action;
  }
  tether::Result<tether::Action> PlanPrune(const std::string& id,
                                           const tether::InventoryEntry&) override {
    pruned.push_back(id);
    tether::Action action;
    action.id = id;
    return action;
  }
  tether::Result<nlohmann::json> Begin(const tether::PlannedAction&, const std::string&) override {
    return nlohmann::json::object();
  }
  tether::Status Apply(std::vector<tether::Change>&, tether::Transaction&) override { return {}; }
  tether::Status Undo(const tether::JournalStep&) override { return {}; }
  tether::Status Discard(const tether::JournalStep&) override { return {}; }
  std::vector<std::string> planned_over;
  std::vector<std::string> pruned;
};

}  // namespace

TEST_CASE("Kinds that only share a name are not replacements: the dropped one is pruned") {
  TempDir state("two-kinds-state");
  TwoKinds handler;
  Engine engine(tether::testing::HostStateStore(state.path()), tether::EngineOptions(), {&handler});
  tether::Inventory inventory;
  inventory.entries["service:app.service"] = {tether::ResourceKind::kService,
                                              true,
                                              false,
                                              tether::OnRemove::kDefault,
                                              false,
                                              "app.service",
                                              nlohmann::json(),
                                              ""};
  DesiredState desired;
  tether::Resource unit;
  unit.kind = tether::ResourceKind::kUnit;
  unit.id = "unit:app.service";
  unit.spec = tether::UnitSpec{"app.service", "/etc/systemd/system/app.service", "", {}, false};
  desired.resources.push_back(unit);
  auto plan = engine.Plan(desired, inventory);
  REQUIRE(plan);
  CHECK(handler.planned_over == std::vector<std::string>{"unit:app.service"});
  CHECK(handler.pruned == std::vector<std::string>{"service:app.service"});
}

namespace {

// A handler of units that creates each one (changing nothing on disk), its undo record
// keeping something aside when the unit's name says "kept"; records what is discarded.
class Keeper final : public tether::KindHandler {
 public:
  bool Handles(tether::ResourceKind kind) const override {
    return kind == tether::ResourceKind::kUnit;
  }
  tether::Result<tether::Action> Plan(const tether::Resource& resource,
                                      const tether::InventoryEntry*, bool,
                                      const tether::PlanContext&) override {
    tether::Action action;
    action.id = resource.id;
    action.type = ActionType::kCreate;
    return action;
  }
  tether::Result<tether::Action> PlanPrune(const std::string& id,
                                           const tether::InventoryEntry&) override {
    tether::Action action;
    action.id = id;
    return action;
  }
  tether::Result<nlohmann::json> Begin(const tether::PlannedAction& planned,
                                       const std::string&) override {
    return nlohmann::json{{"kept", planned.action.id.find("kept") != std::string::npos}};
  }
  tether::Status Apply(std::vector<tether::Change>& changes, tether::Transaction&) override {
    for (auto& change : changes) {
      change.entry = tether::InventoryEntry{};
      change.entry->kind = tether::ResourceKind::kUnit;
      change.done = true;
    }
    return {};
  }
  tether::Status Undo(const tether::JournalStep&) override { return {}; }
  bool KeepsAside(const nlohmann::json& undo) const override { return undo.value("kept", false); }
  tether::Status Discard(const tether::JournalStep& step) override {
    discarded.push_back(step.id);
    return {};
  }
  std::vector<std::string> discarded;
};

}  // namespace

TEST_CASE("A committed apply discards its steps only when one kept something aside") {
  for (const bool kept : {false, true}) {
    CAPTURE(kept);
    TempDir state("keeper-state");
    Keeper handler;
    Engine engine(tether::testing::HostStateStore(state.path()), tether::EngineOptions(),
                  {&handler});
    DesiredState desired;
    for (const std::string name : {"a.service", kept ? "kept.service" : "b.service"}) {
      tether::Resource unit;
      unit.kind = tether::ResourceKind::kUnit;
      unit.id = "unit:" + name;
      unit.spec = tether::UnitSpec{name, "/etc/systemd/system/" + name, "", {}, false};
      desired.resources.push_back(unit);
    }
    auto plan = engine.Plan(desired, tether::Inventory{});
    REQUIRE(plan);
    const auto result = engine.Apply(*plan, tether::Inventory{}, "c1", &desired);
    REQUIRE_MESSAGE(result.ok, result.error);
    CHECK(result.inventory.entries.size() == 2);
    // Each step is the handler's to discard (the engine cannot tell which kept what).
    CHECK(handler.discarded ==
          (kept ? std::vector<std::string>{"unit:a.service", "unit:kept.service"}
                : std::vector<std::string>{}));
    CHECK_FALSE(std::filesystem::exists(state.Path("journal")));
  }
}

namespace {

// Fails the Nth append to the state dir file `name` ("journal", "inventory.json.new")
// with ENOSPC, or its rename into place: the state dir's disk is full, or it breaks.
class FailingStateDisk final : public tether::testing::ForwardingFilesystem {
 public:
  FailingStateDisk(tether::Filesystem& real, std::string name, int fail_at)
      : ForwardingFilesystem(real), name_("/" + std::move(name)), fail_at_(fail_at) {}
  tether::Status AppendFile(std::string_view p, std::string_view d,
                            const tether::AppendOptions& o) override {
    if (Names(p) && ++appends_ == fail_at_) {
      return tether::FailErrno(ENOSPC, "write '" + std::string(p) + "'");
    }
    return real_.AppendFile(p, d, o);
  }
  tether::Status Rename(std::string_view a, std::string_view b) override {
    if (fail_renames && Names(a)) return tether::FailErrno(EIO, "rename '" + std::string(a) + "'");
    return real_.Rename(a, b);
  }
  bool fail_renames = false;
  int appends() const { return appends_; }

 private:
  bool Names(std::string_view path) const {
    return path.size() >= name_.size() && path.substr(path.size() - name_.size()) == name_;
  }

  std::string name_;
  int fail_at_;
  int appends_ = 0;
};

std::vector<std::string> StateFiles(const TempDir& state) {
  std::vector<std::string> names;
  for (const auto& entry : std::filesystem::directory_iterator(state.path())) {
    names.push_back(entry.path().filename().string());
  }
  std::sort(names.begin(), names.end());
  return names;
}

}  // namespace

namespace {

// Reads of kept originals fail with EIO, as on a disk having a bad moment.
class OriginalsUnreadable final : public tether::testing::ForwardingFilesystem {
 public:
  using ForwardingFilesystem::ForwardingFilesystem;
  tether::Result<std::string> ReadFile(std::string_view p, std::size_t max) override {
    if (p.find("/originals/") != std::string_view::npos) {
      return tether::FailErrno(EIO, "read '" + std::string(p) + "'");
    }
    return real_.ReadFile(p, max);
  }
};

}  // namespace

TEST_CASE("An original that cannot be read for the moment is kept, and its restore retried") {
  Host host;
  host.root.WriteFile("etc/big", std::string(10'000, 'b'));
  REQUIRE(host.Converge(Desired("[[file]]\npath = \"/etc/big\"\ncontent = \"ours\\n\"\n"
                                "on_remove = \"restore\"\n")
                            .state,
                        "c1")
              .ok);
  REQUIRE_FALSE(std::filesystem::is_empty(host.state.Path("originals")));
  auto real = tether::RootedFilesystem::Open("/").value();
  OriginalsUnreadable disk(*real);
  tether::StateStore store(disk, host.state.path());
  Engine engine(store, tether::EngineOptions(), {host.paths.get(), host.checks.get()});
  Desired empty("");
  auto inventory = engine.LoadInventory().value();
  auto result =
      engine.Apply(engine.Plan(empty.state, inventory).value(), inventory, "c2", &empty.state);
  CHECK_FALSE(result.ok);
  CHECK(result.committed);
  REQUIRE(result.outcomes.size() == 1);
  CHECK(result.outcomes[0].error.find("cannot plan removing it") != std::string::npos);
  CHECK(host.root.ReadFile("etc/big") == "ours\n");
  CHECK_FALSE(std::filesystem::is_empty(host.state.Path("originals")));  // not dropped
  // Readable again: restored.
  auto restored = host.Converge(empty.state, "c2");
  REQUIRE_MESSAGE(restored.ok, restored.error);
  CHECK(host.root.ReadFile("etc/big") == std::string(10'000, 'b'));
}

TEST_CASE("A refused replacement (a file that becomes a symlink) is not drift later") {
  Host host;
  REQUIRE(host.Converge(Desired("[[file]]\npath = \"/etc/x\"\ncontent = \"file\\n\"\n").state, "c1")
              .ok);
  // c2 makes it a symlink; a person made it a directory meanwhile: refused.
  std::filesystem::remove(host.root.Path("etc/x"));
  std::filesystem::create_directories(host.root.Path("etc/x"));
  Desired c2("[[symlink]]\npath = \"/etc/x\"\ntarget = \"/srv\"\n");
  auto refused = host.Converge(c2.state, "c2");
  CHECK(refused.committed);
  CHECK_FALSE(refused.ok);
  auto inventory = host.MakeEngine().LoadInventory().value();
  REQUIRE(inventory.entries.count("file:/etc/x") == 1);
  CHECK(inventory.entries.at("file:/etc/x").pending);
  // The directory gone and c1's file back: c2's symlink is still to make, drift or not.
  std::filesystem::remove(host.root.Path("etc/x"));
  host.root.WriteFile("etc/x", "file\n");
  Engine engine = host.MakeEngine();
  auto plan = engine.Plan(c2.state, inventory).value();
  CHECK(tether::ApplyDriftPolicy(plan, tether::DriftMode::kIgnore, true).empty());
  auto applied = engine.Apply(plan, std::move(inventory), "c2", &c2.state);
  REQUIRE_MESSAGE(applied.ok, applied.error);
  CHECK(std::filesystem::read_symlink(host.root.Path("etc/x")) == "/srv");
}

TEST_CASE("A failed journal write leaves the host and the state dir as they were") {
  // 1: creating the journal; 2: its first step; 3: the commit record.
  for (int fail_at = 1; fail_at <= 3; ++fail_at) {
    CAPTURE(fail_at);
    Host host;
    host.root.WriteFile("etc/motd", "original\n", 0644);
    REQUIRE(
        host.Converge(Desired("[[file]]\npath = \"/etc/keep\"\ncontent = \"k\\n\"\n").state, "c0")
            .ok);
    const Snapshot before = Take(host.root.path());
    const Snapshot state_before = Take(host.state.path());
    auto real = tether::RootedFilesystem::Open("/").value();
    FailingStateDisk disk(*real, "journal", fail_at);
    tether::StateStore store(disk, host.state.path());
    Engine engine(store, tether::EngineOptions(), {host.paths.get(), host.checks.get()});
    Desired desired(kProfile);
    auto inventory = engine.LoadInventory().value();
    auto result = engine.Apply(engine.Plan(desired.state, inventory).value(), inventory, "c1",
                               &desired.state);
    CHECK_FALSE(result.ok);
    CHECK(result.rolled_back == (fail_at > 1));  // nothing to roll back before the first step
    CHECK(result.error.find("No space left on device") != std::string::npos);
    CHECK(result.inventory.commit == "c0");
    CHECK(Take(host.root.path()) == before);
    CHECK(Take(host.state.path()) == state_before);  // no journal, the inventory of c0
    CHECK(host.MakeEngine().LoadInventory().value().commit == "c0");
    // The next cycle applies it.
    REQUIRE(host.MakeEngine().Recover());
    REQUIRE(host.Converge(desired.state, "c1").ok);
    CHECK(host.root.ReadFile("etc/motd") == "managed motd\n");
  }
}

TEST_CASE("A failed inventory write rolls the apply back: host and state as they were") {
  // 1: the first chunk of the new inventory (here the only one).
  Host host;
  host.root.WriteFile("etc/motd", "original\n", 0644);
  REQUIRE(host.Converge(Desired("[[file]]\npath = \"/etc/keep\"\ncontent = \"k\\n\"\n").state, "c0")
              .ok);
  const Snapshot before = Take(host.root.path());
  const Snapshot state_before = Take(host.state.path());
  auto real = tether::RootedFilesystem::Open("/").value();
  FailingStateDisk disk(*real, "inventory.json.new", 1);
  tether::StateStore store(disk, host.state.path());
  Engine engine(store, tether::EngineOptions(), {host.paths.get(), host.checks.get()});
  Desired desired(kProfile);
  auto inventory = engine.LoadInventory().value();
  auto result =
      engine.Apply(engine.Plan(desired.state, inventory).value(), inventory, "c1", &desired.state);
  CHECK_FALSE(result.ok);
  CHECK(result.rolled_back);
  CHECK(result.error.find("No space left on device") != std::string::npos);
  CHECK(disk.appends() == 1);
  CHECK(Take(host.root.path()) == before);
  CHECK(Take(host.state.path()) == state_before);  // no journal, no inventory.json.new
  CHECK(host.MakeEngine().LoadInventory().value().commit == "c0");
}

TEST_CASE("An inventory that cannot be put into place after the commit is, by recovery") {
  Host host;
  REQUIRE(host.Converge(Desired("[[file]]\npath = \"/etc/keep\"\ncontent = \"k\\n\"\n").state, "c0")
              .ok);
  auto real = tether::RootedFilesystem::Open("/").value();
  FailingStateDisk disk(*real, "inventory.json.new", 0);
  disk.fail_renames = true;
  tether::StateStore store(disk, host.state.path());
  Engine engine(store, tether::EngineOptions(), {host.paths.get(), host.checks.get()});
  Desired desired(kProfile);
  auto inventory = engine.LoadInventory().value();
  auto result =
      engine.Apply(engine.Plan(desired.state, inventory).value(), inventory, "c1", &desired.state);
  CHECK_FALSE(result.ok);
  CHECK_FALSE(result.rolled_back);  // committed: the host has c1
  CHECK(host.root.ReadFile("etc/motd") == "managed motd\n");
  CHECK(StateFiles(host.state) ==
        std::vector<std::string>{"inventory.json", "inventory.json.new", "journal"});
  CHECK(host.MakeEngine().LoadInventory().value().commit == "c0");
  // The next start finishes the job: the committed inventory goes into place.
  REQUIRE(host.MakeEngine().Recover());
  CHECK(StateFiles(host.state) == std::vector<std::string>{"inventory.json"});
  CHECK(host.MakeEngine().LoadInventory().value().commit == "c1");
  CHECK(host.root.ReadFile("etc/motd") == "managed motd\n");
  CHECK(AllInSync(host.PlanOf(desired.state)));
}
