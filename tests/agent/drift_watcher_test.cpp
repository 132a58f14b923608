#include "agent/daemon/drift_watcher.hpp"

#include <poll.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <string>

#include <doctest/doctest.h>

#include "agent/daemon/watchers.hpp"
#include "common/stat_mark.hpp"
#include "tests/support/state_stores.hpp"
#include "tests/support/temp_dir.hpp"

using tether::DriftWatcher;
using tether::testing::TempDir;

namespace {

struct Watched {
  TempDir root{"drift"};
  std::unique_ptr<DriftWatcher> watcher;

  Watched() {
    root.WriteFile("etc/motd", "managed\n");
    root.WriteFile("etc/other", "not managed\n");
    root.WriteFile("srv/www/index.html", "<h1>hi</h1>\n");
    auto created = DriftWatcher::Create(root.path());
    REQUIRE(created);
    watcher = std::move(*created);
    REQUIRE(watcher->Watch({{"/etc/motd", "file:/etc/motd"},
                            {"/srv/www", "directory:/srv/www"},
                            {"/srv/www/index.html", "file:/srv/www/index.html"},
                            {"/opt/missing/x", "file:/opt/missing/x"}}));
  }

  // Waits (bounded) for the fd to become readable, then reads.
  std::set<std::string> Next() {
    pollfd fd = {watcher->fd(), POLLIN, 0};
    REQUIRE(poll(&fd, 1, 2000) == 1);
    auto events = watcher->Read();
    REQUIRE(events);
    return events->ids;
  }

  // Nothing about a managed path waits.
  bool Quiet() {
    auto events = watcher->Read();
    REQUIRE(events);
    return events->ids.empty() && !events->overflow;
  }
};

}  // namespace

TEST_CASE("Edits, chmod, delete and replace of managed paths are seen; others are not") {
  Watched w;
  std::ofstream(w.root.Path("etc/motd"), std::ios::app) << "edit\n";
  CHECK(w.Next() == std::set<std::string>{"file:/etc/motd"});

  chmod(w.root.Path("srv/www/index.html").c_str(), 0600);
  CHECK(w.Next() == std::set<std::string>{"file:/srv/www/index.html"});

  chmod(w.root.Path("srv/www").c_str(), 0700);  // the directory resource itself
  CHECK(w.Next() == std::set<std::string>{"directory:/srv/www"});

  std::filesystem::remove(w.root.Path("etc/motd"));
  CHECK(w.Next() == std::set<std::string>{"file:/etc/motd"});

  w.root.WriteFile("etc/.motd.new", "replacement\n");
  std::filesystem::rename(w.root.Path("etc/.motd.new"), w.root.Path("etc/motd"));
  CHECK(w.Next() == std::set<std::string>{"file:/etc/motd"});

  std::ofstream(w.root.Path("etc/other"), std::ios::app) << "x\n";
  CHECK(w.Quiet());
}

TEST_CASE("Watching the paths again loses no event, and drops directories no longer named") {
  Watched w;
  const std::map<std::string, std::string> paths = {
      {"/etc/motd", "file:/etc/motd"}, {"/srv/www/index.html", "file:/srv/www/index.html"}};
  // An edit queued before the paths are watched again (as after each cycle) is still read.
  std::ofstream(w.root.Path("etc/motd"), std::ios::app) << "edit\n";
  REQUIRE(w.watcher->Watch(paths));
  CHECK(w.Next() == std::set<std::string>{"file:/etc/motd"});
  // And one made after, of course.
  std::ofstream(w.root.Path("srv/www/index.html"), std::ios::app) << "edit\n";
  CHECK(w.Next() == std::set<std::string>{"file:/srv/www/index.html"});
  // /srv/www is no longer watched for itself, /etc/motd no longer at all.
  REQUIRE(w.watcher->Watch({{"/srv/www/index.html", "file:/srv/www/index.html"}}));
  std::ofstream(w.root.Path("etc/motd"), std::ios::app) << "edit\n";
  chmod(w.root.Path("srv/www").c_str(), 0700);
  CHECK(w.Quiet());
}

TEST_CASE("Watches says a path is watched as an id only while every directory has its watch") {
  Watched w;
  // /opt/missing was missing when watched: nothing is known to be watched as it is.
  CHECK_FALSE(w.watcher->Watches("/etc/motd", "file:/etc/motd"));
  const std::map<std::string, std::string> paths = {
      {"/etc/motd", "file:/etc/motd"},
      {"/srv/www", "directory:/srv/www"},
      {"/srv/www/index.html", "file:/srv/www/index.html"}};
  REQUIRE(w.watcher->Watch(paths));
  for (const auto& [path, id] : paths) CHECK(w.watcher->Watches(path, id));
  CHECK_FALSE(w.watcher->Watches("/etc/motd", "file:/etc/other"));   // another id
  CHECK_FALSE(w.watcher->Watches("/etc/other", "file:/etc/other"));  // not named
  CHECK_FALSE(w.watcher->Watches("/opt/x", "file:/opt/x"));          // nor its directory
  // A directory that went loses its watch: nothing is known to be watched as it is until
  // the paths are watched again.
  std::filesystem::remove_all(w.root.Path("srv/www"));
  CHECK(w.Next().count("file:/srv/www/index.html") == 1);
  CHECK_FALSE(w.watcher->Watches("/etc/motd", "file:/etc/motd"));
  w.root.WriteFile("srv/www/index.html", "<h1>back</h1>\n");
  REQUIRE(w.watcher->Watch(paths));
  CHECK(w.watcher->Watches("/srv/www/index.html", "file:/srv/www/index.html"));
}

TEST_CASE("A lost event queue is reported as an overflow") {
  Watched w;
  const std::string path = w.root.Path("etc/motd");
  // Alternate two kinds of events, so the kernel cannot merge them, past its queue size.
  for (int i = 0; i < 20000; ++i) {
    chmod(path.c_str(), (i % 2) != 0 ? 0600 : 0644);
    std::ofstream(path, std::ios::app) << "x";
  }
  auto events = w.watcher->Read();
  REQUIRE(events);
  CHECK(events->overflow);
}

TEST_CASE("After a cycle, its own writes are told from a person's by their stat") {
  TempDir root("rewatch-root");
  TempDir state("rewatch-state");
  root.WriteFile("etc/motd", "as tether wrote it\n");
  root.WriteFile("etc/issue", "as tether wrote it\n");
  root.WriteFile("etc/hosts", "as tether wrote it\n");
  auto host = tether::RootedFilesystem::Open(root.path());
  REQUIRE(host);
  auto mark = [&](const char* path) {
    auto stat = (*host)->Stat(path);
    REQUIRE(stat);
    return tether::StatMark(*stat) + "AAAAAAAA";  // and the desired state's part
  };
  // What a cycle recorded: motd and issue as it left them; hosts with no fingerprint (a
  // kind tether does not mark); a directory.
  state.WriteFile("inventory.json", R"({"schema": "tether.inventory/v1", "commit": "c1",
    "entries": {
      "file:/etc/motd": {"kind": "file", "path": "/etc/motd", "created": true,
                         "fingerprint": ")" +
                                        mark("/etc/motd") + R"("},
      "file:/etc/issue": {"kind": "file", "path": "/etc/issue", "created": true,
                          "fingerprint": ")" +
                                        mark("/etc/issue") + R"("},
      "file:/etc/hosts": {"kind": "file", "path": "/etc/hosts", "created": true},
      "directory:/etc": {"kind": "directory", "path": "/etc", "created": false}}})");
  auto watch = tether::OpenPathWatch(root.path());
  REQUIRE(watch);
  auto& store = tether::testing::HostStateStore(state.path());
  REQUIRE((*watch)->Rewatch(store, {}, nullptr).drifted.ids.empty());

  // The cycle wrote all four (seen while it ran), then a person edited issue.
  tether::DriftEvents seen;
  seen.ids = {"file:/etc/motd", "file:/etc/issue", "file:/etc/hosts", "directory:/etc",
              "file:/etc/gone"};
  std::ofstream(root.Path("etc/issue"), std::ios::app) << "and a person's line\n";
  auto rewatched = (*watch)->Rewatch(store, seen, nullptr);
  CHECK_FALSE(rewatched.error);
  CHECK_FALSE(rewatched.drifted.overflow);
  // motd is as recorded; issue was edited; hosts and the directory cannot be told by their
  // stat; gone is no longer managed.
  CHECK(rewatched.drifted.ids ==
        std::set<std::string>{"file:/etc/issue", "file:/etc/hosts", "directory:/etc"});

  // A chmod is a person's too; the events still waiting count as much as those seen.
  chmod(root.Path("etc/motd").c_str(), 0600);
  rewatched = (*watch)->Rewatch(store, {}, nullptr);
  CHECK(rewatched.drifted.ids == std::set<std::string>{"file:/etc/motd"});

  // Without an inventory to go by, whatever was touched is looked at.
  std::filesystem::remove(state.Path("inventory.json"));
  seen.ids = {"file:/etc/motd"};
  CHECK((*watch)->Rewatch(store, seen, nullptr).drifted.ids == seen.ids);
}

TEST_CASE("A write in place is told from a replacement, in the order they came") {
  Watched w;
  auto next = [&] {
    pollfd fd = {w.watcher->fd(), POLLIN, 0};
    REQUIRE(poll(&fd, 1, 2000) == 1);
    auto events = w.watcher->Read();
    REQUIRE(events);
    return *events;
  };
  // As tether writes: a new file renamed into place.
  w.root.WriteFile("etc/.motd.new", "replacement\n");
  std::filesystem::rename(w.root.Path("etc/.motd.new"), w.root.Path("etc/motd"));
  auto replaced = next();
  CHECK(replaced.replaced == std::set<std::string>{"file:/etc/motd"});
  CHECK(replaced.in_place.empty());
  // As a person edits, in place; then replaced again: the last one counts.
  std::ofstream(w.root.Path("etc/motd"), std::ios::app) << "edit\n";
  auto edited = next();
  CHECK(edited.in_place == std::set<std::string>{"file:/etc/motd"});
  CHECK(edited.replaced.empty());
  w.root.WriteFile("etc/.motd.new", "replacement\n");
  std::filesystem::rename(w.root.Path("etc/.motd.new"), w.root.Path("etc/motd"));
  std::ofstream(w.root.Path("srv/www/index.html"), std::ios::app) << "edit\n";
  auto both = next();
  CHECK(both.in_place == std::set<std::string>{"file:/srv/www/index.html"});
  CHECK(both.replaced == std::set<std::string>{"file:/etc/motd"});
  // Merged in the order seen: the later batch's says how each was last written.
  tether::DriftEvents merged = edited;
  tether::Merge(merged, tether::DriftEvents(both));
  CHECK(merged.in_place == std::set<std::string>{"file:/srv/www/index.html"});
  CHECK(merged.replaced == std::set<std::string>{"file:/etc/motd"});
  merged = replaced;
  tether::Merge(merged, tether::DriftEvents(edited));
  CHECK(merged.in_place == std::set<std::string>{"file:/etc/motd"});
  CHECK(merged.replaced.empty());
}

TEST_CASE("An edit in place right after the cycle's write is a person's, whatever the stat") {
  // The cycle renames its file into place and takes its stat just after: a person's edit
  // in place in between is in that stat. The events say which came last.
  TempDir root("rewatch-root");
  TempDir state("rewatch-state");
  root.WriteFile("etc/motd", "as tether wrote it\n");
  auto watch = tether::OpenPathWatch(root.path());
  REQUIRE(watch);
  auto& store = tether::testing::HostStateStore(state.path());
  auto record = [&] {
    auto host = tether::RootedFilesystem::Open(root.path());
    REQUIRE(host);
    auto stat = (*host)->Stat("/etc/motd");
    REQUIRE(stat);
    state.WriteFile("inventory.json",
                    R"({"schema": "tether.inventory/v2", "commit": "c1", "entries": {
      "file:/etc/motd": {"kind": "file", "path": "/etc/motd", "created": true,
                         "fingerprint": ")" +
                        tether::StatMark(*stat) + R"(AAAAAAAA"}}})");
  };
  record();
  REQUIRE((*watch)->Rewatch(store, {}, nullptr).drifted.ids.empty());

  // The cycle's write, then a person's edit in place, then the cycle's stat.
  root.WriteFile("etc/.motd.new", "as tether wrote it\n");
  std::filesystem::rename(root.Path("etc/.motd.new"), root.Path("etc/motd"));
  std::ofstream(root.Path("etc/motd"), std::ios::app) << "a person's line\n";
  record();
  const auto rewatched = (*watch)->Rewatch(store, {}, nullptr);
  CHECK(rewatched.drifted.ids == std::set<std::string>{"file:/etc/motd"});
  // Which the repair is told, so that it reads the file whatever its fingerprint says.
  CHECK(rewatched.drifted.in_place == std::set<std::string>{"file:/etc/motd"});

  // A person's edit in place, then the cycle's write (which puts it back) and its stat:
  // the cycle's own.
  std::ofstream(root.Path("etc/motd"), std::ios::app) << "a person's line\n";
  root.WriteFile("etc/.motd.new", "as tether wrote it\n");
  std::filesystem::rename(root.Path("etc/.motd.new"), root.Path("etc/motd"));
  record();
  const auto replaced = (*watch)->Rewatch(store, {}, nullptr);
  CHECK(replaced.drifted.ids.empty());
  CHECK(replaced.drifted.in_place.empty());
}

TEST_CASE("After a repair that names the entries it read, the inventory is not read again") {
  TempDir root("rewatch-root");
  TempDir state("rewatch-state");
  root.WriteFile("etc/motd", "as tether wrote it\n");
  root.WriteFile("etc/issue", "as tether wrote it\n");
  auto host = tether::RootedFilesystem::Open(root.path());
  REQUIRE(host);
  auto mark = [&](const char* path) {
    auto stat = (*host)->Stat(path);
    REQUIRE(stat);
    return tether::StatMark(*stat) + "AAAAAAAA";
  };
  state.WriteFile("inventory.json", R"({"schema": "tether.inventory/v1", "commit": "c1",
    "entries": {
      "file:/etc/motd": {"kind": "file", "path": "/etc/motd", "created": true,
                         "fingerprint": "old"},
      "file:/etc/issue": {"kind": "file", "path": "/etc/issue", "created": true,
                          "fingerprint": ")" +
                                        mark("/etc/issue") + R"("}}})");
  auto watch = tether::OpenPathWatch(root.path());
  REQUIRE(watch);
  auto& store = tether::testing::HostStateStore(state.path());
  REQUIRE((*watch)->Rewatch(store, {}, nullptr).drifted.ids.empty());

  // A repair of motd wrote it, and names it as it left it; a person edited issue
  // meanwhile, which the repair did not read. The inventory is gone: had it been read
  // again, both would be looked at (nothing to go by).
  root.WriteFile("etc/.motd.new", "as the repair wrote it\n");  // as tether writes
  std::filesystem::rename(root.Path("etc/.motd.new"), root.Path("etc/motd"));
  std::ofstream(root.Path("etc/issue"), std::ios::app) << "and a person's line\n";
  std::filesystem::remove(state.Path("inventory.json"));
  const std::vector<tether::RecordedEntry> repaired = {
      {"file:/etc/motd", "file", "/etc/motd", mark("/etc/motd")},
      {"package:curl", "package", "curl", ""}};  // of no path: not watched
  tether::DriftEvents seen;
  seen.ids = {"file:/etc/motd"};
  auto rewatched = (*watch)->Rewatch(store, seen, &repaired);
  CHECK_FALSE(rewatched.error);
  CHECK(rewatched.drifted.ids == std::set<std::string>{"file:/etc/issue"});
  // The watches stand: an edit after is seen.
  std::ofstream(root.Path("etc/motd"), std::ios::app) << "a person's line\n";
  pollfd fd = {(*watch)->fd(), POLLIN, 0};
  REQUIRE(poll(&fd, 1, 2000) == 1);
  auto events = (*watch)->Read();
  REQUIRE(events);
  CHECK(events->ids == std::set<std::string>{"file:/etc/motd"});

  // Lost events have it read again, whatever the repair names: with no inventory, what was
  // touched is looked at.
  const std::vector<tether::RecordedEntry> as_now = {
      {"file:/etc/motd", "file", "/etc/motd", mark("/etc/motd")}};
  tether::DriftEvents lost = seen;
  lost.overflow = true;
  rewatched = (*watch)->Rewatch(store, lost, &as_now);
  CHECK(rewatched.drifted.overflow);
  CHECK(rewatched.drifted.ids == seen.ids);

  // An entry at a path not watched (added, or moved) has the inventory read again: with
  // none, what was touched is looked at, the recorded fingerprint notwithstanding.
  const std::vector<tether::RecordedEntry> moved = {
      {"file:/etc/motd", "file", "/etc/motd.d/motd", mark("/etc/motd")}};
  CHECK((*watch)->Rewatch(store, seen, &moved).drifted.ids == seen.ids);
}
