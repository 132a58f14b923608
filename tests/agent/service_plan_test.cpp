// The services kind's planner, as a table: declared spec x systemd's state -> the plan, and
// what Apply and a prune then do. No systemd needed (the handler is tested against a real
// one in the system suite).
#include "agent/kinds/services/service_plan.hpp"

#include <string>
#include <vector>

#include <doctest/doctest.h>

namespace {

tether::ServiceSpec Spec(bool running, bool enabled, bool reload = false) {
  tether::ServiceSpec spec;
  spec.name = "app.service";
  spec.running = running;
  spec.enabled = enabled;
  spec.reload = reload;
  spec.restart_on = {"/etc/app.conf"};
  return spec;
}

tether::UnitState State(std::string active, std::string file, std::string load = "loaded") {
  tether::UnitState state;
  state.load_state = std::move(load);
  state.active_state = std::move(active);
  state.unit_file_state = std::move(file);
  return state;
}

}  // namespace

TEST_CASE("A service's plan: start, stop, enable, disable, unmask, or in sync") {
  struct Row {
    bool running;
    bool enabled;
    std::string active;
    std::string file;
    std::string load;
    std::vector<std::string> changes;  // empty: in sync
  };
  const std::vector<Row> rows = {
      {true, true, "active", "enabled", "loaded", {}},
      {true, true, "inactive", "enabled", "loaded", {"start (now inactive)"}},
      {true, true, "failed", "disabled", "loaded", {"enable (now disabled)", "start (now failed)"}},
      {true, true, "active", "", "loaded", {"enable"}},
      {true, true, "active", "static", "loaded", {}},  // nothing to enable
      {true, true, "active", "alias", "loaded", {}},
      {true, false, "active", "enabled", "loaded", {"disable"}},
      {true, false, "active", "disabled", "loaded", {}},
      {false, false, "active", "disabled", "loaded", {"stop (now active)"}},
      {false, false, "inactive", "disabled", "loaded", {}},
      {false, false, "failed", "disabled", "loaded", {}},
      {false, true, "inactive", "enabled", "loaded", {}},
      {true,
       true,
       "inactive",
       "masked",
       "masked",
       {"unmask", "enable (now masked)", "start (now inactive)"}},
      {false, false, "inactive", "masked", "masked", {}},  // masked and unwanted: left so
  };
  for (const auto& row : rows) {
    CAPTURE(row.running);
    CAPTURE(row.enabled);
    CAPTURE(row.active);
    CAPTURE(row.file);
    const auto action = tether::PlanService("service:app.service", Spec(row.running, row.enabled),
                                            State(row.active, row.file, row.load), {});
    CHECK(action.id == "service:app.service");
    CHECK(action.type ==
          (row.changes.empty() ? tether::ActionType::kInSync : tether::ActionType::kUpdate));
    CHECK(action.changes == row.changes);
  }
}

TEST_CASE("A running service restarts (or reloads) when a trigger changed in the same plan") {
  const auto running = State("active", "enabled");
  struct Row {
    std::vector<std::string_view> changed;
    bool reload;
    std::vector<std::string> changes;
  };
  const std::vector<Row> rows = {
      {{}, false, {}},
      {{"file:/etc/other.conf"}, false, {}},
      {{"file:/etc/app.conf"}, false, {"restart: /etc/app.conf changed"}},
      {{"file:/etc/app.conf"}, true, {"reload: /etc/app.conf changed"}},
      {{"unit:app.service"}, false, {"restart: unit app.service changed"}},
      {{"unit:app.service.d/override.conf"}, false, {"restart: a drop-in of app.service changed"}},
      {{"unit:app.service", "symlink:/etc/app.conf"},
       false,
       {"restart: unit app.service, /etc/app.conf changed"}},
  };
  for (const auto& row : rows) {
    CAPTURE(row.changes.size());
    const auto action = tether::PlanService("service:app.service", Spec(true, true, row.reload),
                                            running, row.changed);
    CHECK(action.changes == row.changes);
    const auto work = tether::DecideWork(Spec(true, true, row.reload), action, "active", "enabled");
    if (row.changes.empty()) {
      CHECK_FALSE(work.job);
    } else {
      REQUIRE(work.job);
      CHECK(*work.job == (row.reload ? tether::UnitJob::kReload : tether::UnitJob::kRestart));
    }
  }
  // An instance restarts when its template's unit file changed.
  auto instance = Spec(true, true);
  instance.name = "worker@1.service";
  CHECK(tether::WhatChanged(instance, {"unit:worker@.service"}) == "unit worker@.service");
  // A stopped service that must run is started, not restarted.
  const auto start = tether::PlanService("service:app.service", Spec(true, true),
                                         State("inactive", "enabled"), {"file:/etc/app.conf"});
  CHECK(start.changes == std::vector<std::string>{"start (now inactive)"});
  CHECK(*tether::DecideWork(Spec(true, true), start, "inactive", "enabled").job ==
        tether::UnitJob::kStart);
}

TEST_CASE("Apply decides from the state just before it, not from the plan's") {
  const auto planned = tether::PlanService("service:app.service", Spec(true, true),
                                           State("inactive", "disabled"), {});
  // Started meanwhile by someone else: no job; still to enable.
  const auto work = tether::DecideWork(Spec(true, true), planned, "active", "disabled");
  CHECK_FALSE(work.job);
  CHECK(work.enable);
  const auto masked = tether::DecideWork(Spec(true, true), planned, "inactive", "masked");
  CHECK(masked.unmask);
  CHECK(masked.enable);
  CHECK(*masked.job == tether::UnitJob::kStart);
  const auto stop = tether::DecideWork(Spec(false, false), planned, "active", "enabled");
  CHECK(stop.disable);
  CHECK(*stop.job == tether::UnitJob::kStop);
}

TEST_CASE("A pruned service tether started from nothing is put back as it found it") {
  struct Row {
    std::string before;  // unit file state before tether
    std::string active;
    std::string file;
    bool stop, disable, mask, mask_runtime;
  };
  const std::vector<Row> rows = {
      {"disabled", "active", "enabled", true, true, false, false},
      {"enabled", "active", "enabled", true, false, false, false},  // it was enabled: stays
      {"masked", "active", "enabled", true, true, true, false},
      {"masked-runtime", "inactive", "disabled", false, false, true, true},
      {"masked", "inactive", "masked", false, false, false, false},  // masked again already
      {"", "failed", "disabled", false, false, false, false},
  };
  for (const auto& row : rows) {
    CAPTURE(row.before);
    CAPTURE(row.active);
    const auto work = tether::PruneWork(row.before, row.active, row.file);
    CHECK(work.job.has_value() == row.stop);
    CHECK(work.disable == row.disable);
    CHECK(work.mask == row.mask);
    CHECK(work.mask_runtime == row.mask_runtime);
  }
}
