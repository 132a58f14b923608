// What the daemon watches between cycles, from the inventory a cycle left; the state it
// shows after a cycle.
#include "agent/daemon/managed.hpp"

#include <map>
#include <optional>
#include <string>

#include <doctest/doctest.h>
#include <nlohmann/json.hpp>

#include "agent/daemon/daemon_state.hpp"
#include "tests/support/state_stores.hpp"
#include "tests/support/temp_dir.hpp"

using tether::testing::TempDir;
using Managed = std::map<std::string, std::string>;

TEST_CASE("The daemon watches the inventory's paths, a unit found in sync in the unit dir") {
  TempDir state("managed-state");
  CHECK(tether::ManagedPaths(tether::testing::HostStateStore(state.path()))
            .empty());  // no inventory yet
  state.WriteFile("inventory.json", R"({"schema": "tether.inventory/v1", "commit": "c1",
    "entries": {
      "file:/etc/motd": {"kind": "file", "path": "/etc/motd", "created": true},
      "directory:/srv/www": {"kind": "directory", "path": "/srv/www", "created": true},
      "symlink:/etc/site": {"kind": "symlink", "path": "/etc/site", "created": true},
      "unit:made.service": {"kind": "unit", "path": "/etc/systemd/system/made.service"},
      "unit:found.service": {"kind": "unit", "path": "found.service"},
      "unit:found.service.d/x.conf": {"kind": "unit", "path": "found.service.d/x.conf"},
      "service:found.service": {"kind": "service", "path": "found.service"},
      "package:nginx": {"kind": "package", "path": "nginx"}}})");
  CHECK(tether::ManagedPaths(tether::testing::HostStateStore(state.path())) ==
        Managed{{"/etc/motd", "file:/etc/motd"},
                {"/etc/site", "symlink:/etc/site"},
                {"/etc/systemd/system/found.service", "unit:found.service"},
                {"/etc/systemd/system/found.service.d/x.conf", "unit:found.service.d/x.conf"},
                {"/etc/systemd/system/made.service", "unit:made.service"},
                {"/srv/www", "directory:/srv/www"}});
  CHECK(tether::ManagedServices(tether::testing::HostStateStore(state.path())) ==
        Managed{{"found.service", "service:found.service"}});
}

TEST_CASE("The daemon reads the inventory as written the same as by the JSON parser") {
  TempDir state("managed-state");
  auto& store = tether::testing::HostStateStore(state.path());
  auto writer = store.StartInventory("c1");
  REQUIRE(writer);
  const nlohmann::json none;
  // Sorted by id: "directory:" < "file:" < "symlink:" < "unit:".
  REQUIRE(writer->Add("directory:/srv/b", "directory", "/srv/b", true, none, ""));
  REQUIRE(writer->Add("directory:/srv/b/c", "directory", "/srv/b/c", true, none, ""));
  REQUIRE(writer->Add("file:/etc/motd", "file", "/etc/motd", true, none, "fp-motd"));
  REQUIRE(writer->Add("file:/srv/a", "file", "/srv/a", true, none, "fp-a"));
  REQUIRE(writer->Add("file:/srv/b/c/d", "file", "/srv/b/c/d", false, {{"type", "file"}}, "fp-d"));
  REQUIRE(writer->Add("file:/srv/b/e", "file", "/srv/b/e", true, none, "fp-e"));
  REQUIRE(writer->Add("file:/srv/x", "file", "/srv/x", true, none, "fp-x"));
  // Services: one as most entries are written, one pending (which is parsed in any case).
  REQUIRE(writer->Add("service:app.service", "service", "app.service", false, none, "on"));
  REQUIRE(writer->Add("service:db.service", "service", "db.service", false, none, "on", true));
  REQUIRE(writer->Add("symlink:/srv/x", "symlink", "/srv/x", true, none, ""));  // the same path
  REQUIRE(writer->Add("unit:app.service", "unit", "app.service", false, none, "fp-unit"));
  REQUIRE(writer->Finish());
  REQUIRE(store.InstallInventory());
  const Managed expected{
      {"/etc/motd", "file:/etc/motd"},    {"/etc/systemd/system/app.service", "unit:app.service"},
      {"/srv/a", "file:/srv/a"},          {"/srv/b", "directory:/srv/b"},
      {"/srv/b/c", "directory:/srv/b/c"}, {"/srv/b/c/d", "file:/srv/b/c/d"},
      {"/srv/b/e", "file:/srv/b/e"},      {"/srv/x", "symlink:/srv/x"}};  // the last in id order
  const auto managed = tether::ReadManaged(
      store, {"file:/srv/a", "file:/srv/b/c/d", "unit:app.service", "file:/gone"});
  CHECK(managed.readable);
  Managed paths;
  for (std::size_t i = 0; i < managed.paths.size(); ++i) {
    if (i > 0) CHECK(managed.paths[i - 1].path < managed.paths[i].path);  // sorted, each once
    paths.emplace(managed.paths[i].path, managed.paths[i].id);
  }
  CHECK(paths == expected);
  REQUIRE(managed.touched.size() == 3);
  CHECK(managed.touched.at("file:/srv/a").path == "/srv/a");
  CHECK(managed.touched.at("file:/srv/a").fingerprint == "fp-a");
  CHECK(managed.touched.at("file:/srv/b/c/d").fingerprint == "fp-d");
  CHECK(managed.touched.at("unit:app.service").fingerprint == "");
  const Managed services{{"app.service", "service:app.service"},
                         {"db.service", "service:db.service"}};
  CHECK(tether::ManagedServices(store) == services);
  // The same inventory indented: read by the JSON parser, the same paths and services.
  state.WriteFile("inventory.json",
                  nlohmann::json::parse(state.ReadFile("inventory.json")).dump(2) + "\n");
  CHECK(tether::ManagedPaths(store) == expected);
  CHECK(tether::ManagedServices(store) == services);
}

TEST_CASE("An unreadable inventory leaves nothing watched, and no error") {
  TempDir state("managed-state");
  state.WriteFile("inventory.json", "{\"schema\": \"tether.inv");
  CHECK(tether::ManagedPaths(tether::testing::HostStateStore(state.path())).empty());
  CHECK(tether::ManagedServices(tether::testing::HostStateStore(state.path())).empty());
}

TEST_CASE("The state after a cycle says what the host is: synced, drifted, offline, ...") {
  using tether::Outcome;
  auto summary = [](Outcome outcome) {
    tether::CycleSummary summary;
    summary.outcome = outcome;
    return summary;
  };
  auto StateAfterCycle = [](const tether::CycleSummary& summary, int exit_code, bool suspended) {
    return std::string(tether::StateName(tether::StateAfterCycle(summary, exit_code, suspended)));
  };
  CHECK(StateAfterCycle(summary(Outcome::kInSync), 0, false) == "synced");
  CHECK(StateAfterCycle(summary(Outcome::kApplied), 0, false) == "synced");
  CHECK(StateAfterCycle(summary(Outcome::kDryRun), 0, true) == "suspended");
  CHECK(StateAfterCycle(summary(Outcome::kRefused), 1, false) == "refused");
  CHECK(StateAfterCycle(summary(Outcome::kRefused), 1, true) == "refused");  // even while suspended
  CHECK(StateAfterCycle(summary(Outcome::kRolledBack), 1, false) == "rolled-back");
  CHECK(StateAfterCycle(summary(Outcome::kFailed), 1, false) == "failed");
  // A cycle process that died: its summary says nothing better than the default.
  CHECK(StateAfterCycle(tether::CycleSummary{}, 137, false) == "failed");
  CHECK(StateAfterCycle(summary(Outcome::kApplied), 137, false) == "failed");

  auto offline = summary(Outcome::kInSync);
  offline.offline = true;
  CHECK(StateAfterCycle(offline, 0, false) == "offline");

  auto reported = summary(Outcome::kInSync);  // drift = "report": found, left as it is
  reported.resources.push_back({"file:/etc/motd", "drifted", "content", true, ""});
  CHECK(StateAfterCycle(reported, 0, false) == "drifted");
  auto repaired = summary(Outcome::kApplied);
  repaired.resources.push_back({"file:/etc/motd", "update", "content", true, ""});
  CHECK(StateAfterCycle(repaired, 0, false) == "synced");
}

TEST_CASE("A drift repair, which does not ask the source, keeps what the source last said") {
  using tether::DaemonState;
  // States by name, as tetherctl status shows them ("" before any cycle asked the source).
  auto state = [](const std::string& name) -> std::optional<DaemonState> {
    for (auto value : {DaemonState::kStarting, DaemonState::kApplying, DaemonState::kPlanning,
                       DaemonState::kSynced, DaemonState::kDrifted, DaemonState::kOffline,
                       DaemonState::kSuspended, DaemonState::kRefused, DaemonState::kRolledBack,
                       DaemonState::kFailed}) {
      if (tether::StateName(value) == name) return value;
    }
    return std::nullopt;
  };
  auto StateAfterDriftRepair = [&](const std::string& before, const std::string& after) {
    auto repaired = state(after);
    REQUIRE(repaired);
    return std::string(tether::StateName(tether::StateAfterDriftRepair(state(before), *repaired)));
  };
  CHECK(StateAfterDriftRepair("refused", "synced") == "refused");
  CHECK(StateAfterDriftRepair("offline", "synced") == "offline");
  CHECK(StateAfterDriftRepair("rolled-back", "synced") == "rolled-back");  // quarantined head
  CHECK(StateAfterDriftRepair("failed", "synced") == "failed");
  CHECK(StateAfterDriftRepair("synced", "synced") == "synced");
  CHECK(StateAfterDriftRepair("", "synced") == "synced");
  // What the repair found or did itself wins.
  CHECK(StateAfterDriftRepair("refused", "failed") == "failed");
  CHECK(StateAfterDriftRepair("offline", "rolled-back") == "rolled-back");
  CHECK(StateAfterDriftRepair("refused", "drifted") == "drifted");
  CHECK(StateAfterDriftRepair("offline", "suspended") == "suspended");
  CHECK(StateAfterDriftRepair("drifted", "synced") == "synced");  // the hand edit undone
}
