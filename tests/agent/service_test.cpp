// Units and services on a real systemd: the engine, with the path handler and the service
// handler, applies rendered profiles to a container's root and its own systemd (reached
// over its system bus from the host). Nothing happens on the host itself.
#include "agent/kinds/checks/check_handler.hpp"
#include "agent/kinds/files/path_handler.hpp"
#include "agent/kinds/services/service_handler.hpp"

#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <string_view>

#include <doctest/doctest.h>

#include "agent/desired/render.hpp"
#include "agent/engine/engine.hpp"
#include "tests/agent/desired_fixture.hpp"
#include "tests/support/state_stores.hpp"
#include "tests/support/systemd_container.hpp"
#include "tests/support/temp_dir.hpp"
#include "tests/support/wait_for.hpp"

using namespace std::chrono_literals;
using tether::ActionType;
using tether::DesiredState;
using tether::Engine;
using tether::PlannedAction;
using tether::testing::SystemdContainer;
using tether::testing::TempDir;
using tether::testing::WaitFor;

namespace {

const bool kNotRoot = geteuid() != 0;

constexpr char kApp[] = "tether-app.service";
constexpr char kConf[] = "/etc/tether-app.conf";

// The service copies its configuration where the test can see which one it started with
// (and ExecReload copies it again), then sleeps.
constexpr char kGoodExec[] =
    "/bin/sh -c 'cp /etc/tether-app.conf /run/tether-app.seen; exec sleep infinity'";
// Exits 3 a moment after it started: the start job itself succeeds.
constexpr char kCrashingExec[] = "/bin/sh -c 'sleep 0.3; exit 3'";

struct Profile {
  std::string conf = "version 1\n";
  std::string exec = kGoodExec;
  std::string type = "simple";
  std::string description = "tether test app";
  bool unit = true;
  bool service = true;
  bool reload = false;
  std::string check;  // [[check]] tables, if any

  std::string Text() const {
    std::string text =
        check + "[[file]]\npath = \"/etc/tether-app.conf\"\ncontent = '''\n" + conf + "'''\n";
    if (unit) {
      text += "[[unit]]\nname = \"tether-app.service\"\ncontent = '''\n[Unit]\nDescription=" +
              description + "\n[Service]\nType=" + type + "\nExecStart=" + exec +
              "\nExecReload=/bin/cp /etc/tether-app.conf /run/tether-app.seen\n"
              "[Install]\nWantedBy=multi-user.target\n'''\n";
    }
    if (service) {
      text += std::string("[[service]]\nname = \"tether-app.service\"\nstate = \"running\"\n") +
              "enabled = true\nrestart_on = [\"/etc/tether-app.conf\"]\n" +
              (reload ? "reload = true\n" : "");
    }
    return text;
  }
};

// A desired state rendered from profile text, as tetherd renders it.
struct Desired : tether::testing::Desired {
  using tether::testing::Desired::Desired;
  explicit Desired(const Profile& profile) : tether::testing::Desired(profile.Text()) {}
};

tether::ServiceHandlerOptions TestOptions() {
  tether::ServiceHandlerOptions options;
  options.job_timeout = 30s;
  options.call_timeout = 30s;
  options.stable_for = 1500ms;  // longer than kCrashingExec lives
  options.poll_interval = 50ms;
  return options;
}

SystemdContainer StartContainer() {
  auto started = SystemdContainer::Start();
  REQUIRE_MESSAGE(started, (started ? "" : started.error().message()));
  return std::move(*started);
}

// The handlers of one tetherd: the container's root and its systemd.
struct Agent {
  std::unique_ptr<tether::RootedFilesystem> fs;
  std::unique_ptr<tether::SystemdBus> bus;
  std::unique_ptr<tether::KindHandler> paths;
  std::unique_ptr<tether::KindHandler> services;
  std::unique_ptr<tether::KindHandler> checks = tether::MakeCheckHandler(tether::HttpFetch);

  static tether::Result<Agent> Open(const SystemdContainer& container) {
    Agent agent;
    auto fs = tether::RootedFilesystem::Open(container.root());
    if (!fs) return tether::Fail(fs.error());
    auto bus = tether::OpenSystemdBus(container.bus_address());
    if (!bus) return tether::Fail(bus.error());
    agent.fs = std::move(*fs);
    agent.bus = std::move(*bus);
    agent.paths = tether::MakePathHandler(*agent.fs);
    agent.services = tether::MakeServiceHandler(*agent.fs, *agent.bus, TestOptions());
    return agent;
  }

  Engine MakeEngine(const std::string& state_dir,
                    std::function<void(int, const char*)> hook = nullptr) {
    tether::EngineOptions options;
    options.health_timeout = 20s;
    options.after_step = std::move(hook);
    return Engine(tether::testing::HostStateStore(state_dir), options,
                  {paths.get(), services.get(), checks.get()});
  }
};

struct World {
  SystemdContainer container = StartContainer();
  TempDir state{"service-state"};
  Agent agent;

  World() {
    auto opened = Agent::Open(container);
    REQUIRE_MESSAGE(opened, (opened ? "" : opened.error().message()));
    agent = std::move(*opened);
  }

  Engine MakeEngine() { return agent.MakeEngine(state.path()); }

  std::vector<PlannedAction> PlanOf(const DesiredState& desired) {
    Engine engine = MakeEngine();
    auto inventory = engine.LoadInventory();
    REQUIRE(inventory);
    auto plan = engine.Plan(desired, *inventory);
    REQUIRE_MESSAGE(plan, (plan ? "" : plan.error().message()));
    return *plan;
  }

  tether::ApplyResult Converge(const DesiredState& desired, const std::string& commit) {
    Engine engine = MakeEngine();
    auto inventory = engine.LoadInventory();
    REQUIRE(inventory);
    auto plan = engine.Plan(desired, *inventory);
    REQUIRE_MESSAGE(plan, (plan ? "" : plan.error().message()));
    std::vector<tether::Action> actions;
    for (const auto& planned : *plan) actions.push_back(planned.action);
    MESSAGE("plan for " << commit << ":\n" << tether::FormatPlan(actions));
    return engine.Apply(*plan, *inventory, commit, &desired);
  }

  void MustConverge(const DesiredState& desired, const std::string& commit) {
    auto result = Converge(desired, commit);
    REQUIRE_MESSAGE(result.ok, result.error);
  }

  tether::Inventory Inventory() {
    auto inventory = MakeEngine().LoadInventory();
    REQUIRE(inventory);
    return *inventory;
  }

  // What a command inside prints, trimmed.
  std::string Inside(const std::vector<std::string>& argv) const {
    auto run = container.Run(argv, 30s);
    REQUIRE(run);
    std::string out = run->out;
    while (!out.empty() && out.back() == '\n') out.pop_back();
    return out;
  }
  std::string Show(const std::string& property, const std::string& unit = kApp) const {
    return Inside({"systemctl", "show", "-P", property, unit});
  }
  std::string IsActive(const std::string& unit = kApp) const {
    return Inside({"systemctl", "is-active", unit});
  }
  std::string IsEnabled(const std::string& unit = kApp) const {
    return Inside({"systemctl", "is-enabled", unit});
  }

  // A file in the container (its root as the host sees it; /run as the container does).
  std::string Read(const std::string& path) const {
    if (path.rfind("/run/", 0) == 0) return Inside({"cat", path}) + "\n";
    std::ifstream file(container.root() + path, std::ios::binary);
    std::ostringstream text;
    text << file.rdbuf();
    return text.str();
  }
  bool Exists(const std::string& path) const {
    return std::filesystem::exists(std::filesystem::symlink_status(container.root() + path));
  }

  // Backups and temporary files next to the unit file.
  std::vector<std::string> Leftovers() const {
    std::vector<std::string> found;
    const std::string prefix = tether::TemporaryPrefix("tether-app.service");
    for (const auto& entry :
         std::filesystem::directory_iterator(container.root() + "/etc/systemd/system")) {
      const std::string name = entry.path().filename().string();
      if (name.rfind(prefix, 0) == 0) found.push_back(name);
    }
    return found;
  }

  // The configuration the running service started (or last reloaded) with.
  std::string Seen() const { return Read("/run/tether-app.seen"); }

  // A unit outside /etc (a package's would be in /usr/lib, which is the host's here).
  void WriteVendorUnit(const std::string& name, const std::string& content) const {
    auto run = container.Run({.argv = {"sh", "-c",
                                       "mkdir -p /run/systemd/system && cat > "
                                       "/run/systemd/system/" +
                                           name + " && systemctl daemon-reload"},
                              .input = content});
    REQUIRE(run);
    REQUIRE_MESSAGE(run->ok(), run->err);
  }
};

const PlannedAction* Find(const std::vector<PlannedAction>& plan, const std::string& id) {
  for (const auto& planned : plan) {
    if (planned.action.id == id) return &planned;
  }
  return nullptr;
}

bool HasChange(const PlannedAction* planned, const std::string& prefix) {
  if (planned == nullptr) return false;
  return std::any_of(planned->action.changes.begin(), planned->action.changes.end(),
                     [&](std::string_view change) { return change.rfind(prefix, 0) == 0; });
}

bool AllInSync(const std::vector<PlannedAction>& plan) {
  return std::all_of(plan.begin(), plan.end(),
                     [](const PlannedAction& p) { return p.action.type == ActionType::kInSync; });
}

std::string UnitText(const Profile& profile) {
  for (const auto& resource : Desired(profile).state.resources) {
    if (const auto* unit = std::get_if<tether::UnitSpec>(&resource.spec)) return unit->content;
  }
  return "";
}

}  // namespace

TEST_SUITE("system") {
  TEST_CASE("A unit is written, its service enabled and started; the next plan is in sync" *
            doctest::skip(kNotRoot)) {
    World world;
    const Profile v1;
    Desired desired(v1);

    const auto plan = world.PlanOf(desired.state);
    const PlannedAction* unit = Find(plan, "unit:tether-app.service");
    const PlannedAction* service = Find(plan, "service:tether-app.service");
    REQUIRE(unit != nullptr);
    REQUIRE(service != nullptr);
    CHECK(unit->action.type == ActionType::kCreate);
    CHECK(service->action.type == ActionType::kUpdate);
    CHECK(HasChange(service, "enable"));
    CHECK(HasChange(service, "start (now inactive)"));
    CHECK_FALSE(HasChange(service, "restart"));  // not running yet: a start is enough

    world.MustConverge(desired.state, "c1");
    CHECK(world.Read("/etc/systemd/system/tether-app.service") == UnitText(v1));
    struct stat st {};
    REQUIRE(lstat((world.container.root() + "/etc/systemd/system/tether-app.service").c_str(),
                  &st) == 0);
    CHECK((st.st_mode & 07777) == 0644);
    CHECK(world.IsActive() == "active");
    CHECK(world.IsEnabled() == "enabled");
    CHECK(world.Show("NeedDaemonReload") == "no");
    CHECK(world.Seen() == "version 1\n");
    CHECK(world.Leftovers().empty());

    const tether::Inventory inventory = world.Inventory();
    REQUIRE(inventory.entries.count("service:tether-app.service") == 1);
    CHECK(inventory.entries.at("service:tether-app.service").created);  // from nothing
    CHECK(inventory.entries.at("unit:tether-app.service").created);
    CHECK(tether::InventoryPath("unit:tether-app.service",
                                inventory.entries.at("unit:tether-app.service")) ==
          "/etc/systemd/system/tether-app.service");

    CHECK(AllInSync(world.PlanOf(desired.state)));
  }

  TEST_CASE(
      "A change of a restart_on file or of the unit restarts the service; reload = true "
      "reloads it" *
      doctest::skip(kNotRoot)) {
    World world;
    Profile profile;
    world.MustConverge(Desired(profile).state, "c1");
    const std::string pid1 = world.Show("MainPID");
    REQUIRE(pid1 != "0");

    profile.conf = "version 2\n";
    Desired v2(profile);
    auto plan = world.PlanOf(v2.state);
    const PlannedAction* service = Find(plan, "service:tether-app.service");
    REQUIRE(service != nullptr);
    CHECK(service->action.changes ==
          std::vector<std::string>{"restart: /etc/tether-app.conf changed"});
    world.MustConverge(v2.state, "c2");
    const std::string pid2 = world.Show("MainPID");
    CHECK(pid2 != "0");
    CHECK(pid2 != pid1);
    CHECK(world.Seen() == "version 2\n");

    // The unit itself: reloaded into systemd, then the service restarted on it.
    profile.description = "tether test app, second edition";
    Desired v3(profile);
    plan = world.PlanOf(v3.state);
    CHECK(Find(plan, "unit:tether-app.service")->action.type == ActionType::kUpdate);
    CHECK(Find(plan, "unit:tether-app.service")
              ->action.diff.find("+Description=tether test app, "
                                 "second edition") != std::string::npos);
    CHECK(Find(plan, "service:tether-app.service")->action.changes ==
          std::vector<std::string>{"restart: unit tether-app.service changed"});
    world.MustConverge(v3.state, "c3");
    CHECK(world.Show("Description") == "tether test app, second edition");
    CHECK(world.Show("NeedDaemonReload") == "no");
    const std::string pid3 = world.Show("MainPID");
    CHECK(pid3 != pid2);

    // reload = true: ExecReload in the same process.
    profile.reload = true;
    profile.conf = "version 4\n";
    Desired v4(profile);
    plan = world.PlanOf(v4.state);
    CHECK(Find(plan, "service:tether-app.service")->action.changes ==
          std::vector<std::string>{"reload: /etc/tether-app.conf changed"});
    world.MustConverge(v4.state, "c4");
    CHECK(world.Show("MainPID") == pid3);
    CHECK(world.Seen() == "version 4\n");
    CHECK(AllInSync(world.PlanOf(v4.state)));
  }

  TEST_CASE(
      "A change that breaks the service is rolled back: the old unit runs again on the "
      "old configuration" *
      doctest::skip(kNotRoot)) {
    World world;
    const Profile good;
    Desired v1(good);
    world.MustConverge(v1.state, "c1");
    const std::string pid1 = world.Show("MainPID");
    REQUIRE(world.Seen() == "version 1\n");

    Profile broken = good;
    broken.conf = "version 2\n";
    bool unhealthy = false;
    std::string blamed;
    SUBCASE("the restart fails") {
      broken.type = "exec";
      broken.exec = "/nonexistent/tether-app";
      blamed = "apply 'service:tether-app.service': restart 'tether-app.service'";
    }
    SUBCASE("it crashes a moment after it started") {
      broken.exec = kCrashingExec;
      unhealthy = true;
      blamed = "service 'tether-app.service' is not running";
    }
    SUBCASE("it runs, but a health check fails") {
      // The check (run by tetherd, here on the host) reads what the service started with.
      broken.check =
          "[[check]]\nname = \"runs version 1\"\nexec = [\"/bin/grep\", \"-q\", "
          "\"version 1\", \"/proc/" +
          std::to_string(world.container.pid1()) + "/root/run/tether-app.seen\"]\n";
      unhealthy = true;
      blamed = "health check: check 'runs version 1' failed: exited with status 1";
    }
    Desired v2(broken);
    const auto result = world.Converge(v2.state, "c2");
    MESSAGE(result.error);
    CHECK_FALSE(result.ok);
    CHECK(result.rolled_back);
    CHECK(result.unhealthy == unhealthy);
    CHECK(result.error.find(blamed) != std::string::npos);

    // The files are back, systemd has them, and the service runs them.
    CHECK(world.Read("/etc/systemd/system/tether-app.service") == UnitText(good));
    CHECK(world.Read(kConf) == "version 1\n");
    CHECK(world.Show("NeedDaemonReload") == "no");
    CHECK(world.Show("ExecStart").find("exec sleep infinity") != std::string::npos);
    CHECK(WaitFor([&] { return world.IsActive() == "active"; }, 10s));
    CHECK(world.Show("MainPID") != pid1);  // restarted, on the old configuration
    CHECK(world.Seen() == "version 1\n");
    CHECK(world.IsEnabled() == "enabled");
    CHECK(world.Inventory().commit == "c1");
    CHECK(world.Leftovers().empty());
    CHECK(AllInSync(world.PlanOf(v1.state)));
  }

  TEST_CASE("A service stopped, disabled or masked by hand is brought back by the next apply" *
            doctest::skip(kNotRoot)) {
    World world;
    Desired desired(Profile{});
    world.MustConverge(desired.state, "c1");

    world.Inside({"systemctl", "disable", "--now", kApp});
    REQUIRE(world.IsActive() == "inactive");
    auto plan = world.PlanOf(desired.state);
    const PlannedAction* service = Find(plan, "service:tether-app.service");
    REQUIRE(service != nullptr);
    CHECK(service->action.changes ==
          std::vector<std::string>{"enable (now disabled)", "start (now inactive)"});
    CHECK(Find(plan, "unit:tether-app.service")->action.type == ActionType::kInSync);
    world.MustConverge(desired.state, "c1");
    CHECK(world.IsActive() == "active");
    CHECK(world.IsEnabled() == "enabled");
    CHECK(AllInSync(world.PlanOf(desired.state)));

    // A unit tether does not write (a package's), masked and stopped by hand.
    world.WriteVendorUnit("tether-vendor.service",
                          "[Service]\nExecStart=/usr/bin/sleep infinity\n"
                          "[Install]\nWantedBy=multi-user.target\n");
    Desired vendor(std::string("[[service]]\nname = \"tether-vendor.service\"\n") +
                   "enabled = false\n");
    world.MustConverge(vendor.state, "c2");
    CHECK(world.IsActive("tether-vendor.service") == "active");
    world.Inside({"systemctl", "mask", "--now", "tether-vendor.service"});
    REQUIRE(world.IsEnabled("tether-vendor.service") == "masked");
    REQUIRE(world.IsActive("tether-vendor.service") == "inactive");
    plan = world.PlanOf(vendor.state);
    CHECK(Find(plan, "service:tether-vendor.service")->action.changes ==
          std::vector<std::string>{"unmask", "start (now inactive)"});
    world.MustConverge(vendor.state, "c2");
    CHECK(world.IsActive("tether-vendor.service") == "active");
    CHECK(world.IsEnabled("tether-vendor.service") == "disabled");
    CHECK_FALSE(world.Exists("/etc/systemd/system/tether-vendor.service"));

    // And stopped when the profile says so.
    Desired stopped(std::string("[[service]]\nname = \"tether-vendor.service\"\n") +
                    "state = \"stopped\"\nenabled = false\n");
    world.MustConverge(stopped.state, "c3");
    CHECK(world.IsActive("tether-vendor.service") == "inactive");
  }

  TEST_CASE("A dropped service is stopped and disabled only if tether started it from nothing" *
            doctest::skip(kNotRoot)) {
    World world;
    // Running (by hand) before tether: tether only enables it.
    world.WriteVendorUnit("tether-vendor.service",
                          "[Service]\nExecStart=/usr/bin/sleep infinity\n"
                          "[Install]\nWantedBy=multi-user.target\n");
    world.Inside({"systemctl", "start", "tether-vendor.service"});
    Profile profile;
    std::string vendor = "[[service]]\nname = \"tether-vendor.service\"\n";
    world.MustConverge(Desired(profile.Text() + vendor).state, "c1");
    REQUIRE(world.IsActive() == "active");
    REQUIRE(world.IsEnabled("tether-vendor.service") == "enabled");
    CHECK_FALSE(world.Inventory().entries.at("service:tether-vendor.service").created);

    // Both services dropped, the unit file kept.
    profile.service = false;
    Desired dropped(profile);
    auto plan = world.PlanOf(dropped.state);
    const PlannedAction* app = Find(plan, "service:tether-app.service");
    REQUIRE(app != nullptr);
    CHECK(app->action.type == ActionType::kDelete);
    CHECK(HasChange(app, "stop"));
    CHECK(HasChange(app, "disable"));
    CHECK(Find(plan, "service:tether-vendor.service")->action.type == ActionType::kInSync);
    world.MustConverge(dropped.state, "c2");
    CHECK(world.IsActive() == "inactive");
    CHECK(world.IsEnabled() == "disabled");
    CHECK(world.Exists("/etc/systemd/system/tether-app.service"));
    CHECK(world.IsActive("tether-vendor.service") == "active");  // left as it is
    CHECK(world.IsEnabled("tether-vendor.service") == "enabled");
    CHECK(world.Inventory().entries.count("service:tether-app.service") == 0);
    CHECK(world.Inventory().entries.count("service:tether-vendor.service") == 0);
    CHECK(AllInSync(world.PlanOf(dropped.state)));

    // The unit dropped too: its file goes, and systemd forgets it.
    Desired nothing("[vars]\n");
    plan = world.PlanOf(nothing.state);
    CHECK(Find(plan, "unit:tether-app.service")->action.type == ActionType::kDelete);
    world.MustConverge(nothing.state, "c3");
    CHECK_FALSE(world.Exists("/etc/systemd/system/tether-app.service"));
    CHECK_FALSE(world.Exists(kConf));
    CHECK(world.Show("LoadState") == "not-found");
  }

  TEST_CASE("A drop-in gets its directory, which goes again with it" * doctest::skip(kNotRoot)) {
    World world;
    Profile profile;
    const std::string dropin =
        "[[unit]]\nname = \"tether-app.service.d/override.conf\"\n"
        "content = '''\n[Service]\nEnvironment=TETHER_FLAVOUR=dropped-in\n'''\n";
    world.MustConverge(Desired(profile).state, "c1");
    const std::string pid1 = world.Show("MainPID");
    auto plan = world.PlanOf(Desired(profile.Text() + dropin).state);
    CHECK(Find(plan, "service:tether-app.service")->action.changes ==
          std::vector<std::string>{"restart: a drop-in of tether-app.service changed"});
    world.MustConverge(Desired(profile.Text() + dropin).state, "c2");
    CHECK(world.Exists("/etc/systemd/system/tether-app.service.d/override.conf"));
    CHECK(world.Show("Environment") == "TETHER_FLAVOUR=dropped-in");
    CHECK(world.Show("MainPID") != pid1);

    world.MustConverge(Desired(profile).state, "c3");
    CHECK_FALSE(world.Exists("/etc/systemd/system/tether-app.service.d"));
    CHECK(world.Show("Environment").empty());
  }

  TEST_CASE(
      "Killed at any step of an apply, recovery leaves the old or the new, whole and "
      "running" *
      doctest::skip(kNotRoot)) {
    World world;
    Profile v1;
    Desired old_state(v1);
    world.MustConverge(old_state.state, "c1");
    Profile v2 = v1;
    v2.conf = "version 2\n";
    v2.description = "tether test app, second edition";
    Desired new_state(v2);

    bool completed = false;
    for (int kill_at = 1; kill_at < 40 && !completed; ++kill_at) {
      CAPTURE(kill_at);
      const pid_t child = fork();
      REQUIRE(child >= 0);
      if (child == 0) {
        // A tetherd of its own (a bus connection does not survive fork), killed at step N.
        auto agent = Agent::Open(world.container);
        if (!agent) _exit(2);
        Engine engine = agent->MakeEngine(world.state.path(), [&](int count, const char*) {
          if (count == kill_at) raise(SIGKILL);
        });
        auto inventory = engine.LoadInventory();
        if (!inventory) _exit(2);
        auto plan = engine.Plan(new_state.state, *inventory);
        if (!plan) _exit(2);
        auto result = engine.Apply(*plan, *inventory, "c2", &new_state.state);
        _exit(result.ok ? 0 : 1);
      }
      int status = 0;
      REQUIRE(waitpid(child, &status, 0) == child);
      if (WIFEXITED(status)) {
        REQUIRE(WEXITSTATUS(status) == 0);
        completed = true;
      } else {
        REQUIRE(WIFSIGNALED(status));
      }
      Engine engine = world.MakeEngine();
      auto recovered = engine.Recover();
      REQUIRE_MESSAGE(recovered, (recovered ? "" : recovered.error().message()));
      const bool committed = world.Inventory().commit == "c2";
      const Profile& expected = committed ? v2 : v1;
      CHECK(world.Read("/etc/systemd/system/tether-app.service") == UnitText(expected));
      CHECK(world.Read(kConf) == expected.conf);
      CHECK(world.Show("NeedDaemonReload") == "no");
      CHECK(world.Show("Description") == expected.description);
      CHECK(WaitFor([&] { return world.IsActive() == "active"; }, 10s));
      CHECK(world.Seen() == expected.conf);
      CHECK(world.Leftovers().empty());
      if (!committed) {
        CHECK(AllInSync(world.PlanOf(old_state.state)));
      } else {
        CHECK(AllInSync(world.PlanOf(new_state.state)));
        // Back to the old one for the next kill point.
        world.MustConverge(old_state.state, "c1");
      }
    }
    CHECK(completed);
  }
}
