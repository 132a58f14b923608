// The systemd port: a client of systemd's manager (org.freedesktop.systemd1) over D-Bus,
// in our own words. The real one talks sd-bus to the system bus, or to any bus address
// (a container's system bus in tests: "unix:path=/proc/PID/root/run/dbus/system_bus_socket").
//
// Every call is synchronous and bounded by the timeout it is given. A job (start, stop,
// restart, reload) is waited for to its end: the JobRemoved signal is subscribed to before
// the job is asked for, and its result must be "done"; any other result ("failed",
// "timeout", "dependency", "canceled", ...) is an error naming the unit, the operation, the
// job result and, where the unit has one, its own Result ("exit-code", "signal", ...).
//
// Unit file operations (Enable, Disable, Mask, Unmask) change links on disk only, as
// `systemctl --no-reload` does: call DaemonReload() afterwards (once for many).
//
// Errors: timed_out when a timeout passed; the errno systemd's D-Bus error maps to
// (e.g. no_such_file_or_directory for a unit file that does not exist) otherwise; io_error
// for a job whose result is not "done". Messages quote the unit.
//
// Threading: thread-compatible. One object per thread; no global state.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "common/error.hpp"

namespace tether {

// What systemd says about a unit right now.
struct UnitState {
  std::string load_state;       // "loaded", "not-found", "masked", "bad-setting", "error", ...
  std::string active_state;     // "active", "reloading", "inactive", "failed", "activating", ...
  std::string sub_state;        // "running", "dead", "exited", "auto-restart", ...
  std::string unit_file_state;  // "enabled", "disabled", "static", "masked", ...; "" when no file
  std::string result;           // the unit's Result ("success", "exit-code", ...); "" if none
  std::string invocation_id;    // 32 hex digits, new on every start; "" when never started
  std::uint32_t main_pid = 0;   // services only; 0 when none
};

// A job on one unit, as `systemctl start|stop|restart|reload` asks for it (mode "replace").
enum class UnitJob { kStart, kStop, kRestart, kReload };

// "start", "stop", "restart", "reload".
[[nodiscard]] const char* UnitJobName(UnitJob job);

class SystemdBus {
 public:
  virtual ~SystemdBus() = default;

  // Reloads systemd's configuration (Manager.Reload) and returns once it has finished.
  [[nodiscard]] virtual Status DaemonReload(std::chrono::milliseconds timeout) = 0;

  // Queues `job` on `unit` and waits until it is over; success only when its result is
  // "done". On a timeout the job is left to systemd (a later job replaces it).
  [[nodiscard]] virtual Status RunJob(UnitJob job, const std::string& unit,
                                      std::chrono::milliseconds timeout) = 0;

  // Enables or disables `units` persistently (in /etc, not /run). Enabling a unit without
  // an [Install] section changes nothing and succeeds.
  [[nodiscard]] virtual Status Enable(const std::vector<std::string>& units,
                                      std::chrono::milliseconds timeout) = 0;
  [[nodiscard]] virtual Status Disable(const std::vector<std::string>& units,
                                       std::chrono::milliseconds timeout) = 0;
  // Masks `units` (in /run when `runtime`, else in /etc); unmasks them in both places.
  [[nodiscard]] virtual Status Mask(const std::vector<std::string>& units, bool runtime,
                                    std::chrono::milliseconds timeout) = 0;
  [[nodiscard]] virtual Status Unmask(const std::vector<std::string>& units,
                                      std::chrono::milliseconds timeout) = 0;

  // Loads `unit` if needed and reads its state. A unit without a file is no error: its
  // load_state says "not-found".
  [[nodiscard]] virtual Result<UnitState> State(const std::string& unit,
                                                std::chrono::milliseconds timeout) = 0;
};

// Connects to the system bus (`address` empty) or to `address` ("unix:path=..."). The
// connection is made again, once, when a call finds it closed (dbus or systemd restarted).
[[nodiscard]] Result<std::unique_ptr<SystemdBus>> OpenSystemdBus(const std::string& address = "");

// Tells when units change on their own between cycles, from systemd's signals: a watched
// unit's ActiveState moves (stopped, crashed or started by hand) or unit files change
// (enabled, disabled, masked by hand: the manager's UnitFilesChanged). For an event loop:
// wait until fd() is readable, then call Process().
//
// Threading: not thread-safe; one loop owns it.
class UnitWatcher {
 public:
  virtual ~UnitWatcher() = default;
  // Readable when signals wait to be processed.
  [[nodiscard]] virtual int fd() const = 0;
  // Watches exactly `units` ("nginx.service") from now on.
  [[nodiscard]] virtual Status Watch(const std::vector<std::string>& units) = 0;
  // Handles what arrived and returns the watched units that changed since the last call
  // (all of them after UnitFilesChanged), sorted.
  [[nodiscard]] virtual Result<std::vector<std::string>> Process() = 0;
};

// Connects to the system bus (or `address`), subscribes to the manager's signals
// (Manager.Subscribe) and watches no unit yet.
[[nodiscard]] Result<std::unique_ptr<UnitWatcher>> OpenUnitWatcher(const std::string& address = "");

}  // namespace tether
