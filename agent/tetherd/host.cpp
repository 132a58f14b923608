#include "agent/tetherd/host.hpp"

#include <pwd.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <optional>

#include "agent/cycle/cycle.hpp"
#include "agent/git/git_source.hpp"
#include "agent/kinds/checks/check_handler.hpp"
#include "agent/kinds/files/path_handler.hpp"
#include "agent/kinds/packages/apt.hpp"
#include "agent/kinds/packages/package_handler.hpp"
#include "agent/kinds/services/service_handler.hpp"
#include "agent/report/send_process.hpp"
#include "agent/state/state_store.hpp"
#include "common/clock.hpp"
#include "common/filesystem.hpp"
#include "common/privileges.hpp"
#include "common/process.hpp"
#include "common/systemd_bus.hpp"

namespace tether {

namespace {

// The cache dir, made if missing, absolute and symlink-free.
Result<std::string> PrepareCacheDir(const std::string& path) {
  if (mkdir(path.c_str(), 0700) != 0 && errno != EEXIST) {
    return FailErrno(errno, "create '" + path + "'");
  }
  char* real = realpath(path.c_str(), nullptr);
  if (real == nullptr) return FailErrno(errno, "'" + path + "'");
  std::string resolved = real;
  std::free(real);
  return resolved;
}

// How HTTP checks make their requests: in tetherd-http, started at the first one, so that
// this process parses no server's answer and loads no TLS library. As root, the child
// runs as the git worker's user, as the daemon's report deliveries do.
HttpSender CheckSender(const std::vector<std::string>& http_argv) {
  return [http_argv, send = HttpSender()](const HttpRequest& request) mutable {
    if (!send) {
      std::vector<std::string> argv = http_argv;
      if (geteuid() == 0 && getpwnam(kUnprivilegedUser) != nullptr) {
        argv.insert(argv.end(), {"--http-fetch-user", kUnprivilegedUser});
      }
      send = MakeProcessSender(std::move(argv), kCleanEnvironment);
    }
    return send(request);
  };
}

Result<CycleReport> Run(const CycleOptions& given,
                        const std::function<void(const CycleReport&)>& planned) {
  CycleOptions options = given;
  auto state_dir = PrepareStateDir(options.state_dir);
  if (!state_dir) return Fail(state_dir.error());
  options.state_dir = std::move(*state_dir);
  auto cache_dir = PrepareCacheDir(options.cache_dir);
  if (!cache_dir) return Fail(cache_dir.error());
  options.cache_dir = std::move(*cache_dir);
  auto host_fs = RootedFilesystem::Open("/");
  if (!host_fs) return Fail(host_fs.error());
  StateStore state(**host_fs, options.state_dir);
  // This is a cycle's process (tetherd-cycle), never the daemon: its large state files are
  // mapped, not copied.
  state.set_map_files(true);
  // One cycle at a time per state dir: a second tetherd (even a dry run) must never
  // recover, that is roll back, an apply that is still going on.
  bool waited = false;
  const auto busy = std::make_error_code(std::errc::operation_would_block);
  auto lock = state.Lock(false);
  if (!lock && lock.error().code() == busy && options.wait_for_lock) {
    waited = true;
    lock = state.Lock(true);
  }
  if (!lock) {
    return Fail(std::errc::resource_unavailable_try_again,
                "another tetherd is working on '" + options.state_dir + "'" +
                    (lock.error().code() == busy ? "" : ": " + lock.error().message()));
  }

  auto fs = RootedFilesystem::Open(options.root);
  if (!fs) return Fail(fs.error().WithContext("--root"));

  // Packages, units, services and checks belong to the host itself: under a --root
  // sandbox only its files are managed (checks too when asked).
  const bool whole_host = options.root == "/";
  auto paths = MakePathHandler(**fs);
  auto checks = MakeCheckHandler(CheckSender(options.http_argv));
  AptOptions apt_options;
  apt_options.install_recommends = options.config.packages.install_recommends;
  apt_options.lock_timeout =
      std::chrono::ceil<std::chrono::seconds>(options.config.packages.lock_timeout);
  AptPackageManager apt(apt_options);
  auto packages = MakePackageHandler(apt);
  std::unique_ptr<SystemdBus> bus;
  std::unique_ptr<KindHandler> services;
  Host host(state);
  host.whole_host = whole_host;
  host.open_source = [&options](bool will_poll) {
    GitSourceOptions source_options;
    source_options.source = options.config.source;
    source_options.cache_dir = options.cache_dir;
    source_options.worker_argv = options.worker_argv;
    // A file:// source's poll reads its ref without the worker (local_ref.hpp): the worker
    // starts only for a fetch.
    source_options.start_worker = will_poll && options.config.source.url.rfind("file://", 0) != 0;
    // A cycle that will not poll (a drift repair, a pin) reads the mirror only.
    source_options.use_worker = will_poll;
    return GitSource::Create(source_options);
  };
  if (whole_host) {
    host.kinds.push_back(packages.get());
    host.kinds.push_back(paths.get());
    // Units and services: systemd's, over the system bus (a later error names what could
    // not be reached, when the profile has any).
    if (auto opened = OpenSystemdBus()) {
      bus = std::move(*opened);
      services = MakeServiceHandler(**fs, *bus);
      host.kinds.push_back(services.get());
    } else {
      host.no_systemd = opened.error();
    }
    host.kinds.push_back(checks.get());
  } else {
    host.kinds.push_back(paths.get());
    if (options.root_checks) host.kinds.push_back(checks.get());
  }
  // The wait, when there was one, comes first in the course.
  auto with_wait = [&](CycleReport report) {
    if (waited) {
      report.course.insert(report.course.begin(),
                           {StepKind::kWaitingForLock, "", options.state_dir, false});
    }
    return report;
  };
  auto report = RunCycle(host, options, [&](const CycleReport& so_far) {
    if (!planned) return;
    if (waited) return planned(with_wait(so_far));
    planned(so_far);  // not copied: it lists every change, and maybe every resource
  });
  return with_wait(report ? std::move(*report) : FailedReport(report.error()));
}

}  // namespace

CycleReport RunCycleOnHost(const CycleOptions& options,
                           const std::function<void(const CycleReport&)>& planned) {
  auto report = Run(options, planned);
  return report ? std::move(*report) : FailedReport(report.error());
}

}  // namespace tether
