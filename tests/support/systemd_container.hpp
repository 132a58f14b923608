// A real systemd as PID 1 for service tests: a systemd-nspawn container booted from a
// throwaway root directory built from the host ("host mode": a copy of /etc with nothing
// enabled, the host's /usr bound read-only), entered with nsenter.
//
// What a container leaves on the host while it runs, all removed by Stop():
//  - a temp dir "<tmp>/tether-nspawn-XXXXXX" (root/, nspawn.log, overlay upper dirs);
//  - the cgroups /sys/fs/cgroup/{systemd,unified}/NAME (its own, so containers don't clash);
//  - /run/systemd/nspawn/propagate/NAME (made by nspawn).
// No mounts: nspawn mounts only in its own mount namespace.
// If the test process dies, nspawn gets SIGTERM (parent-death signal) and halts the
// container; the cgroups and the propagate dir left then are swept by
// scripts/lib/reap-test-containers, which the test command runs before and after the suites.
// The temp dir stays, as any TempDir of a killed test does.
//
// REQUIRES: root; systemd-container, util-linux (nsenter, setpriv).
// Threading: a SystemdContainer is not thread-safe. Start() it from a thread that outlives
// it (the parent-death signal fires when the starting *thread* exits).
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstddef>
#include <memory>
#include <string>
#include <vector>

#include "common/error.hpp"
#include "common/process.hpp"

namespace tether::testing {

class TempDir;

// Every machine name starts with this, so the reaper finds leftovers. Names of the form
// "tether-test-<pid>-..." whose <pid> is alive are left alone by the reaper.
inline constexpr char kTestMachinePrefix[] = "tether-test-";

struct ContainerOptions {
  // The machine name (also the cgroup name). Empty: "tether-test-<pid>-<counter>".
  // Must start with kTestMachinePrefix and be unique among running containers.
  std::string name{};
  // Bound into the container read-write at the same path, so host-built test binaries run
  // inside. Empty: the meson build dir this test binary lives in (found from
  // /proc/self/exe); no build dir found: the binary's own directory.
  std::string build_dir{};
  // Extra nspawn --bind= / --bind-ro= entries: "PATH" or "HOST_PATH:CONTAINER_PATH".
  std::vector<std::string> binds{};
  std::vector<std::string> read_only_binds{};
  // Writable /usr and /var/lib/dpkg, for dpkg/apt tests: overlays on the host's, with the
  // upper dirs in the temp dir; the host's stay untouched. Default: /usr bound read-only.
  bool writable_usr = false;
  // From nspawn start to `systemctl is-system-running` saying running or degraded.
  std::chrono::milliseconds ready_timeout{std::chrono::seconds(60)};
  // How long a clean halt may take before nspawn and the container are SIGKILLed.
  std::chrono::milliseconds stop_timeout{std::chrono::seconds(15)};
};

class SystemdContainer {
 public:
  // Builds the root dir, boots the container and waits until it is ready. On failure
  // everything is cleaned up again and the error message ends with the tail of the nspawn
  // log (the container's console). Fails with std::errc::operation_not_permitted when not
  // root, std::errc::timed_out when not ready in time, std::errc::io_error when nspawn exited.
  [[nodiscard]] static Result<SystemdContainer> Start(const ContainerOptions& options = {});

  SystemdContainer(SystemdContainer&& other) noexcept;
  SystemdContainer& operator=(SystemdContainer&& other) noexcept;
  SystemdContainer(const SystemdContainer&) = delete;
  SystemdContainer& operator=(const SystemdContainer&) = delete;
  // Stop(); a failure is printed to stderr.
  ~SystemdContainer();

  // Runs `argv` inside the container (all its namespaces, root dir "/") with the clean
  // environment, and waits up to `timeout`. Same contract as tether::Run (on a timeout the
  // command and all it started inside are SIGKILLed). Fails with std::errc::no_such_process
  // after Stop() or when the container died.
  [[nodiscard]] Result<RunResult> Run(
      const std::vector<std::string>& argv,
      std::chrono::milliseconds timeout = std::chrono::seconds(60)) const;
  // As above with all of RunOptions: argv, env, input and timeout apply inside the
  // container; `cwd` is a path inside the container (empty: "/").
  [[nodiscard]] Result<RunResult> Run(const RunOptions& options) const;

  // Halts the container (SIGTERM to nspawn; SIGKILL to it and to everything in its cgroups
  // after stop_timeout), removes the cgroups, the propagate dir and the temp dir. Idempotent:
  // a second call does nothing and succeeds. Refuses (and keeps the temp dir) if anything
  // is still mounted under it.
  [[nodiscard]] Status Stop();

  [[nodiscard]] const std::string& name() const { return name_; }
  // The container's root dir on the host: write e.g. root() + "/etc/systemd/system/x.service"
  // and run `systemctl daemon-reload`. The host's /usr is not under it (bound by nspawn).
  [[nodiscard]] const std::string& root() const { return root_; }
  // The temp dir holding root(), the log and the overlay upper dir.
  [[nodiscard]] const std::string& dir() const { return dir_; }
  [[nodiscard]] const std::string& build_dir() const { return build_dir_; }
  [[nodiscard]] const std::string& log_path() const { return log_path_; }
  // The container's cgroup dirs on the host (hybrid hierarchy: name=systemd and unified).
  [[nodiscard]] const std::vector<std::string>& cgroup_dirs() const { return cgroup_dirs_; }
  // Host pids of systemd-nspawn and of the container's PID 1; -1 after Stop().
  [[nodiscard]] pid_t nspawn_pid() const { return nspawn_.pid(); }
  [[nodiscard]] pid_t pid1() const { return pid1_; }
  // The container's system bus, reachable from the host:
  // "unix:path=/proc/PID1/root/run/dbus/system_bus_socket".
  [[nodiscard]] std::string bus_address() const;
  // The last `lines` lines of the nspawn log (the container's console).
  [[nodiscard]] std::string LogTail(std::size_t lines = 40) const;

 private:
  SystemdContainer() = default;

  std::unique_ptr<TempDir> temp_dir_;
  std::string name_;
  std::string dir_;
  std::string root_;
  std::string build_dir_;
  std::string log_path_;
  std::vector<std::string> cgroup_dirs_;
  std::chrono::milliseconds stop_timeout_{0};
  Child nspawn_;
  pid_t pid1_ = -1;
};

}  // namespace tether::testing
