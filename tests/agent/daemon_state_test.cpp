// What the daemon watches between cycles, from the inventory a cycle left; the state it
// shows after a cycle.
#include "agent/daemon/managed.hpp"

#include <map>
#include <optional>
#include <string>

#include <doctest/doctest.h>

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
