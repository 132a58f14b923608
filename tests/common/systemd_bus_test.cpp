// The systemd bus client against a real systemd: the system bus of a container, reached
// from the host.
#include "common/systemd_bus.hpp"

#include <poll.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <string>

#include <doctest/doctest.h>

#include "tests/support/systemd_container.hpp"

using namespace std::chrono_literals;
using tether::SystemdBus;
using tether::UnitJob;
using tether::UnitState;
using tether::testing::SystemdContainer;

namespace {

using Clock = std::chrono::steady_clock;

const bool kNotRoot = geteuid() != 0;

struct World {
  SystemdContainer container;
  std::unique_ptr<SystemdBus> bus;

  World() : container(Start()) {
    auto opened = tether::OpenSystemdBus(container.bus_address());
    REQUIRE_MESSAGE(opened, (opened ? "" : opened.error().message()));
    bus = std::move(*opened);
  }

  static SystemdContainer Start() {
    auto started = SystemdContainer::Start();
    REQUIRE_MESSAGE(started, (started ? "" : started.error().message()));
    return std::move(*started);
  }

  // Writes a unit file into the container's /etc/systemd/system.
  void WriteUnit(const std::string& name, const std::string& content) const {
    std::ofstream(container.root() + "/etc/systemd/system/" + name) << content;
  }

  UnitState State(const std::string& unit) const {
    auto state = bus->State(unit, 10s);
    REQUIRE_MESSAGE(state, (state ? "" : state.error().message()));
    return *state;
  }

  // What systemctl inside says, for a second opinion.
  std::string Systemctl(const std::vector<std::string>& args) const {
    std::vector<std::string> argv = {"systemctl"};
    argv.insert(argv.end(), args.begin(), args.end());
    auto run = container.Run(argv, 30s);
    REQUIRE(run);
    std::string out = run->out;
    while (!out.empty() && out.back() == '\n') out.pop_back();
    return out;
  }
};

void RequireOk(const tether::Status& status) {
  REQUIRE_MESSAGE(status, (status ? "" : status.error().message()));
}

const char kSleeper[] = R"([Unit]
Description=tether test sleeper

[Service]
ExecStart=/usr/bin/sleep infinity

[Install]
WantedBy=multi-user.target
)";

}  // namespace

TEST_SUITE("system") {
  TEST_CASE("A unit is loaded after a daemon reload, started, restarted and stopped" *
            doctest::skip(kNotRoot)) {
    World world;
    SystemdBus& bus = *world.bus;

    // Unknown before the reload (not an error: a state).
    UnitState before = world.State("tether-sleeper.service");
    CHECK(before.load_state == "not-found");
    CHECK(before.active_state == "inactive");
    CHECK(before.unit_file_state == "");

    world.WriteUnit("tether-sleeper.service", kSleeper);
    RequireOk(bus.DaemonReload(30s));
    UnitState loaded = world.State("tether-sleeper.service");
    CHECK(loaded.load_state == "loaded");
    CHECK(loaded.active_state == "inactive");
    CHECK(loaded.sub_state == "dead");
    CHECK(loaded.unit_file_state == "disabled");
    CHECK(loaded.main_pid == 0);

    RequireOk(bus.RunJob(UnitJob::kStart, "tether-sleeper.service", 30s));
    UnitState started = world.State("tether-sleeper.service");
    CHECK(started.active_state == "active");
    CHECK(started.sub_state == "running");
    CHECK(started.result == "success");
    CHECK(started.main_pid > 0);
    CHECK(started.invocation_id.size() == 32);
    CHECK(world.Systemctl({"is-active", "tether-sleeper.service"}) == "active");
    CHECK(world.Systemctl({"show", "-P", "MainPID", "tether-sleeper.service"}) ==
          std::to_string(started.main_pid));

    RequireOk(bus.RunJob(UnitJob::kRestart, "tether-sleeper.service", 30s));
    UnitState restarted = world.State("tether-sleeper.service");
    CHECK(restarted.active_state == "active");
    CHECK(restarted.main_pid > 0);
    CHECK(restarted.main_pid != started.main_pid);
    CHECK(restarted.invocation_id != started.invocation_id);

    // No ExecReload: systemd refuses, and says so.
    auto reloaded = bus.RunJob(UnitJob::kReload, "tether-sleeper.service", 30s);
    REQUIRE_FALSE(reloaded);
    CHECK(reloaded.error().message().find("reload 'tether-sleeper.service'") == 0);
    MESSAGE(reloaded.error().message());

    RequireOk(bus.RunJob(UnitJob::kStop, "tether-sleeper.service", 30s));
    UnitState stopped = world.State("tether-sleeper.service");
    CHECK(stopped.active_state == "inactive");
    CHECK(stopped.main_pid == 0);
    CHECK(world.Systemctl({"is-active", "tether-sleeper.service"}) == "inactive");
  }

  TEST_CASE("A reload runs ExecReload in the same process" * doctest::skip(kNotRoot)) {
    World world;
    world.WriteUnit("tether-reloader.service", R"([Service]
ExecStart=/usr/bin/sleep infinity
ExecReload=/usr/bin/touch /run/tether-reloaded
)");
    RequireOk(world.bus->DaemonReload(30s));
    RequireOk(world.bus->RunJob(UnitJob::kStart, "tether-reloader.service", 30s));
    const UnitState started = world.State("tether-reloader.service");
    RequireOk(world.bus->RunJob(UnitJob::kReload, "tether-reloader.service", 30s));
    const UnitState reloaded = world.State("tether-reloader.service");
    CHECK(reloaded.active_state == "active");
    CHECK(reloaded.main_pid == started.main_pid);
    CHECK(reloaded.invocation_id == started.invocation_id);
    CHECK(world.container.Run({"test", "-f", "/run/tether-reloaded"})->ok());
  }

  TEST_CASE("A unit that fails to start is a clear error" * doctest::skip(kNotRoot)) {
    World world;
    world.WriteUnit("tether-broken.service", R"([Service]
Type=oneshot
ExecStart=/usr/bin/false
)");
    world.WriteUnit("tether-missing-binary.service", R"([Service]
Type=exec
ExecStart=/nonexistent/tether-binary
)");
    RequireOk(world.bus->DaemonReload(30s));

    auto failed = world.bus->RunJob(UnitJob::kStart, "tether-broken.service", 30s);
    REQUIRE_FALSE(failed);
    const std::string& message = failed.error().message();
    MESSAGE(message);
    CHECK(message.find("start 'tether-broken.service'") == 0);
    CHECK(message.find("the job ended 'failed'") != std::string::npos);
    CHECK(message.find("result 'exit-code'") != std::string::npos);
    CHECK(message.find("journalctl -u tether-broken.service") != std::string::npos);
    CHECK(failed.error().Is(std::errc::io_error));
    const UnitState state = world.State("tether-broken.service");
    CHECK(state.active_state == "failed");
    CHECK(state.result == "exit-code");

    auto missing = world.bus->RunJob(UnitJob::kStart, "tether-missing-binary.service", 30s);
    REQUIRE_FALSE(missing);
    MESSAGE(missing.error().message());
    CHECK(missing.error().message().find("'failed'") != std::string::npos);
    CHECK(missing.error().message().find("result 'exit-code'") != std::string::npos);

    // A unit with no file at all: systemd's own words.
    auto unknown = world.bus->RunJob(UnitJob::kStart, "tether-nowhere.service", 30s);
    REQUIRE_FALSE(unknown);
    MESSAGE(unknown.error().message());
    CHECK(unknown.error().message().find("start 'tether-nowhere.service'") == 0);
    CHECK(unknown.error().message().find("not found") != std::string::npos);
    CHECK(unknown.error().Is(std::errc::no_such_file_or_directory));
  }

  TEST_CASE("Waiting for a job is bounded by its timeout" * doctest::skip(kNotRoot)) {
    World world;
    // Never tells systemd it is ready: the start job would wait 60 s.
    world.WriteUnit("tether-slow.service", R"([Service]
Type=notify
ExecStart=/usr/bin/sleep infinity
TimeoutStartSec=60
)");
    RequireOk(world.bus->DaemonReload(30s));
    const auto start = Clock::now();
    auto slow = world.bus->RunJob(UnitJob::kStart, "tether-slow.service", 700ms);
    const auto took = Clock::now() - start;
    REQUIRE_FALSE(slow);
    MESSAGE(slow.error().message());
    CHECK(slow.error().Is(std::errc::timed_out));
    CHECK(slow.error().message().find("start 'tether-slow.service': timed out") == 0);
    CHECK(took >= 700ms);
    CHECK(took < 5s);
    CHECK(world.State("tether-slow.service").active_state == "activating");

    // A stop replaces the pending start.
    RequireOk(world.bus->RunJob(UnitJob::kStop, "tether-slow.service", 30s));
    CHECK(world.State("tether-slow.service").active_state != "activating");

    // A call to a bus nobody answers on fails, rather than hang.
    auto nowhere = tether::OpenSystemdBus("unix:path=/nonexistent/tether-bus-socket");
    REQUIRE_FALSE(nowhere);
    CHECK(nowhere.error().message().find("/nonexistent/tether-bus-socket") != std::string::npos);
  }

  TEST_CASE("Enable, disable, mask and unmask change links on disk" * doctest::skip(kNotRoot)) {
    World world;
    SystemdBus& bus = *world.bus;
    const std::string etc = world.container.root() + "/etc/systemd/system";
    world.WriteUnit("tether-sleeper.service", kSleeper);
    RequireOk(bus.DaemonReload(30s));

    RequireOk(bus.Enable({"tether-sleeper.service"}, 30s));
    CHECK(world.State("tether-sleeper.service").unit_file_state == "enabled");
    CHECK(std::filesystem::is_symlink(etc + "/multi-user.target.wants/tether-sleeper.service"));
    RequireOk(bus.DaemonReload(30s));
    CHECK(world.Systemctl({"is-enabled", "tether-sleeper.service"}) == "enabled");

    RequireOk(bus.Disable({"tether-sleeper.service"}, 30s));
    CHECK(world.State("tether-sleeper.service").unit_file_state == "disabled");
    CHECK_FALSE(std::filesystem::exists(
        std::filesystem::symlink_status(etc + "/multi-user.target.wants/tether-sleeper.service")));

    // A unit without [Install]: enabling changes nothing, and is no error.
    world.WriteUnit("tether-static.service", "[Service]\nExecStart=/usr/bin/sleep infinity\n");
    RequireOk(bus.DaemonReload(30s));
    RequireOk(bus.Enable({"tether-static.service"}, 30s));
    CHECK(world.State("tether-static.service").unit_file_state == "static");

    // A vendor unit (in /run here: /usr is the host's, read-only) masked in /etc.
    auto vendor = world.container.Run({.argv = {"sh", "-c",
                                                "mkdir -p /run/systemd/system && cat > "
                                                "/run/systemd/system/tether-vendor.service"},
                                       .input = std::string(kSleeper)});
    REQUIRE(vendor);
    REQUIRE(vendor->ok());
    RequireOk(bus.DaemonReload(30s));
    CHECK(world.State("tether-vendor.service").unit_file_state == "disabled");
    RequireOk(bus.Mask({"tether-vendor.service"}, false, 30s));
    RequireOk(bus.DaemonReload(30s));
    const UnitState masked = world.State("tether-vendor.service");
    CHECK(masked.unit_file_state == "masked");
    CHECK(masked.load_state == "masked");
    CHECK(std::filesystem::read_symlink(etc + "/tether-vendor.service") == "/dev/null");
    auto refused = bus.RunJob(UnitJob::kStart, "tether-vendor.service", 30s);
    REQUIRE_FALSE(refused);
    MESSAGE(refused.error().message());
    CHECK(refused.error().message().find("masked") != std::string::npos);

    RequireOk(bus.Unmask({"tether-vendor.service"}, 30s));
    RequireOk(bus.DaemonReload(30s));
    CHECK(world.State("tether-vendor.service").unit_file_state == "disabled");
    RequireOk(bus.RunJob(UnitJob::kStart, "tether-vendor.service", 30s));
    CHECK(world.State("tether-vendor.service").active_state == "active");

    // Errors name what was asked.
    auto missing = bus.Enable({"tether-nowhere.service"}, 30s);
    REQUIRE_FALSE(missing);
    MESSAGE(missing.error().message());
    CHECK(missing.error().message().find("enable 'tether-nowhere.service'") == 0);
  }

  TEST_CASE("The unit watcher tells when a watched unit is stopped, started or disabled by hand" *
            doctest::skip(kNotRoot)) {
    World world;
    world.WriteUnit("tether-watched.service", kSleeper);
    world.WriteUnit("tether-other.service", kSleeper);
    RequireOk(world.bus->DaemonReload(30s));
    RequireOk(world.bus->RunJob(UnitJob::kStart, "tether-watched.service", 30s));
    RequireOk(world.bus->RunJob(UnitJob::kStart, "tether-other.service", 30s));
    auto opened = tether::OpenUnitWatcher(world.container.bus_address());
    REQUIRE_MESSAGE(opened, (opened ? "" : opened.error().message()));
    auto& watcher = **opened;
    RequireOk(watcher.Watch({"tether-watched.service"}));
    REQUIRE(watcher.Process());  // nothing yet

    // Waits (event-driven, bounded) until the watcher names something, and returns it.
    auto next = [&](std::chrono::milliseconds timeout) {
      const auto deadline = Clock::now() + timeout;
      while (Clock::now() < deadline) {
        pollfd ready{watcher.fd(), POLLIN, 0};
        const auto left =
            std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
        if (poll(&ready, 1, static_cast<int>(std::max<long long>(left.count(), 1))) < 0) break;
        auto changed = watcher.Process();
        REQUIRE(changed);
        if (!changed->empty()) return *changed;
      }
      return std::vector<std::string>{};
    };

    // An unwatched unit stopped: nothing.
    world.Systemctl({"stop", "tether-other.service"});
    CHECK(next(1500ms).empty());
    // The watched one stopped by hand, then started by hand.
    world.Systemctl({"stop", "tether-watched.service"});
    CHECK(next(10s) == std::vector<std::string>{"tether-watched.service"});
    world.Systemctl({"start", "tether-watched.service"});
    CHECK(next(10s) == std::vector<std::string>{"tether-watched.service"});
    // Enabled by hand: unit files changed, every watched unit is named.
    world.Systemctl({"enable", "tether-watched.service"});
    CHECK(next(10s) == std::vector<std::string>{"tether-watched.service"});
    // Watched no more: its changes are not named.
    RequireOk(watcher.Watch({}));
    world.Systemctl({"stop", "tether-watched.service"});
    CHECK(next(1500ms).empty());
  }
}
