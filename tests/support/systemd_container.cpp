#include "tests/support/systemd_container.hpp"

#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string_view>
#include <system_error>
#include <utility>

#include "tests/support/temp_dir.hpp"
#include "tests/support/wait_for.hpp"

namespace tether::testing {

namespace fs = std::filesystem;
using std::chrono::milliseconds;

namespace {

constexpr char kCgroupRoot[] = "/sys/fs/cgroup";
constexpr char kPropagateDir[] = "/run/systemd/nspawn/propagate/";
constexpr std::size_t kMaxNameLength = 64;  // nspawn machine names are host names
// How much longer than its deadline a command in the container may take before the host
// kills nsenter: the deadline proper is enforced inside (see Run).
constexpr milliseconds kRunBackstop{std::chrono::seconds(10)};

// Moves itself into the container's cgroups, then becomes nspawn. Arguments: the
// cgroup.procs files, "--", the nspawn command line.
//
// Why a shell: nspawn makes the cgroup it is started in the container's cgroup, so it must
// start in cgroups of its own, or it shares (and clashes over) the host's roots. Our
// process runner uses posix_spawn, with no hook between fork and exec; the shell is that
// hook. `exec` keeps the pid through sh -> setpriv -> systemd-nspawn, so the Child we hold
// is nspawn itself and its parent is still the thread that called Start().
//
// Why `setpriv --pdeathsig TERM`: if the test process dies (crash, abort, a meson timeout),
// the kernel sends nspawn SIGTERM and nspawn halts the container cleanly. Not KILL: a
// SIGKILLed nspawn leaves the container's PID 1 running, reparented to the host's init.
//
// No setsid: the Child already has its own process group, so a terminal's ^C reaches only
// the test (and then nspawn via the parent-death signal).
constexpr char kLaunchScript[] =
    R"(while [ "$1" != -- ]; do echo $$ > "$1" || exit 125; shift; done; shift; )"
    R"(exec setpriv --pdeathsig TERM -- "$@")";

std::atomic<int> container_counter{0};

// "WHAT: strerror" with the code of a std::filesystem error.
tl::unexpected<Error> FailWith(const std::error_code& ec, const std::string& what) {
  return Fail(Error(ec, what + ": " + ec.message()));
}

std::string ReadText(const std::string& path) {
  std::ifstream stream(path, std::ios::binary);
  std::ostringstream buffer;
  buffer << stream.rdbuf();
  return buffer.str();
}

Status WriteText(const std::string& path, std::string_view content) {
  std::ofstream stream(path, std::ios::binary | std::ios::trunc);
  stream.write(content.data(), static_cast<std::streamsize>(content.size()));
  stream.close();
  if (!stream) return Fail(std::errc::io_error, "write '" + path + "'");
  return {};
}

std::string Trim(std::string_view text) {
  while (!text.empty() && (text.back() == '\n' || text.back() == ' ')) text.remove_suffix(1);
  return std::string(text);
}

// Runs a host command that must succeed; the error names it and quotes its stderr.
Status RunOnHost(const std::vector<std::string>& argv) {
  const RunOptions options{.argv = argv, .timeout = std::chrono::seconds(60)};
  auto result = tether::Run(options);
  std::string command;
  for (const auto& arg : argv) command += (command.empty() ? "" : " ") + arg;
  if (!result) return Fail(result.error().WithContext(command));
  if (!result->ok()) {
    return Fail(std::errc::io_error,
                command + ": " + result->Describe(options.timeout) + ": " + Trim(result->err));
  }
  return {};
}

bool ValidName(std::string_view name) {
  if (name.size() > kMaxNameLength || name.rfind(kTestMachinePrefix, 0) != 0) return false;
  return std::all_of(name.begin(), name.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
           c == '.';
  });
}

// The meson build dir this binary was built in: the nearest ancestor of /proc/self/exe with
// a build.ninja. None: the binary's own directory.
std::string FindBuildDir() {
  std::error_code ec;
  const fs::path exe = fs::read_symlink("/proc/self/exe", ec);
  if (ec) return {};
  for (fs::path dir = exe.parent_path(); !dir.empty() && dir != dir.root_path();
       dir = dir.parent_path()) {
    if (fs::exists(dir / "build.ninja", ec)) return dir.string();
  }
  return exe.parent_path().string();
}

// Hybrid hierarchy (this machine): name=systemd v1 plus unified v2. Pure v2: one dir.
std::vector<std::string> CgroupDirsFor(const std::string& name) {
  const std::string root = kCgroupRoot;
  std::error_code ec;
  if (fs::exists(root + "/unified", ec)) {
    return {root + "/systemd/" + name, root + "/unified/" + name};
  }
  if (fs::exists(root + "/cgroup.controllers", ec)) return {root + "/" + name};
  return {root + "/systemd/" + name};
}

// Unescapes the octal escapes (\040 for a space, ...) of /proc/self/mountinfo.
std::string UnescapeMountPath(std::string_view field) {
  std::string path;
  for (std::size_t i = 0; i < field.size(); ++i) {
    if (field[i] == '\\' && i + 3 < field.size()) {
      const std::string octal(field.substr(i + 1, 3));
      path += static_cast<char>(std::strtol(octal.c_str(), nullptr, 8));
      i += 3;
    } else {
      path += field[i];
    }
  }
  return path;
}

// Mount points in this mount namespace at or under `dir`.
std::vector<std::string> MountsUnder(const std::string& dir) {
  std::vector<std::string> mounts;
  std::istringstream mountinfo(ReadText("/proc/self/mountinfo"));
  std::string line;
  while (std::getline(mountinfo, line)) {
    // "ID PARENT MAJ:MIN ROOT MOUNT_POINT ...": the fifth field.
    std::istringstream fields(line);
    std::string field;
    for (int i = 0; i < 5 && fields >> field; ++i) {
    }
    const std::string mount_point = UnescapeMountPath(field);
    if (mount_point == dir || mount_point.rfind(dir + "/", 0) == 0) mounts.push_back(mount_point);
  }
  return mounts;
}

bool IsDigit(char c) { return c >= '0' && c <= '9'; }

// Whether `pid` is the container's PID 1: a child of nspawn whose NSpid line ends in " 1"
// (its pid in the container's pid namespace).
bool IsPid1Of(pid_t pid, pid_t nspawn_pid) {
  std::istringstream status(ReadText("/proc/" + std::to_string(pid) + "/status"));
  std::string line;
  bool child_of_nspawn = false;
  bool pid1_inside = false;
  while (std::getline(status, line)) {
    std::istringstream fields(line);
    std::string key;
    fields >> key;
    if (key == "PPid:") {
      pid_t ppid = -1;
      fields >> ppid;
      child_of_nspawn = ppid == nspawn_pid;
    } else if (key == "NSpid:") {
      std::vector<long> ids;
      for (long id = 0; fields >> id;) ids.push_back(id);
      pid1_inside = ids.size() >= 2 && ids.back() == 1;
    }
  }
  return child_of_nspawn && pid1_inside;
}

// The container's PID 1; -1 while there is none yet.
pid_t FindPid1(pid_t nspawn_pid) {
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator("/proc", ec)) {
    const std::string pid = entry.path().filename().string();
    if (pid.empty() || !std::all_of(pid.begin(), pid.end(), IsDigit)) continue;
    if (IsPid1Of(static_cast<pid_t>(std::stol(pid)), nspawn_pid)) {
      return static_cast<pid_t>(std::stol(pid));
    }
  }
  return -1;
}

// The cgroup dirs under `top` (itself included), deepest first.
std::vector<std::string> CgroupTree(const std::string& top) {
  std::vector<std::string> dirs;
  std::error_code ec;
  if (!fs::is_directory(top, ec)) return dirs;
  dirs.push_back(top);
  for (fs::recursive_directory_iterator it(top, ec), end; !ec && it != end; it.increment(ec)) {
    if (it->is_directory(ec)) dirs.push_back(it->path().string());
  }
  std::sort(dirs.begin(), dirs.end(),
            [](const std::string& a, const std::string& b) { return a.size() > b.size(); });
  return dirs;
}

// SIGKILLs whatever is left in the cgroups and removes them, bottom up. Only our own
// cgroups are passed here: what is in them is the container (or nspawn) and nothing else.
Status RemoveCgroups(const std::vector<std::string>& tops, milliseconds timeout) {
  std::string remaining;
  const bool removed = WaitFor(
      [&] {
        remaining.clear();
        for (const auto& top : tops) {
          for (const auto& dir : CgroupTree(top)) {
            std::istringstream procs(ReadText(dir + "/cgroup.procs"));
            for (pid_t pid = 0; procs >> pid;) {
              if (pid > 0) kill(pid, SIGKILL);
              remaining += " " + std::to_string(pid);
            }
            if (rmdir(dir.c_str()) != 0 && errno != ENOENT) {
              remaining += " (" + dir + ": " + std::strerror(errno) + ")";
            }
          }
        }
        return remaining.empty();
      },
      timeout);
  if (!removed) return Fail(std::errc::device_or_resource_busy, "cgroups left:" + remaining);
  return {};
}

// A throwaway root dir in "host mode": the host's /etc with nothing enabled, /usr bound by
// nspawn. See docs in the notes on real components in tests.
Status BuildRoot(const std::string& root, const std::string& name) {
  std::error_code ec;
  for (const char* dir : {"usr", "proc", "sys", "dev", "run", "tmp", "var", "root"}) {
    fs::create_directories(root + "/" + dir, ec);
    if (ec) return FailWith(ec, "mkdir '" + root + "/" + dir + "'");
  }
  // The host is merged-/usr: /bin -> usr/bin and so on. Copy those links.
  for (const char* dir : {"bin", "sbin", "lib", "lib32", "lib64", "libx32"}) {
    const std::string host = std::string("/") + dir;
    if (!fs::exists(host, ec)) continue;
    if (!fs::is_symlink(host, ec)) {
      return Fail(std::errc::not_supported, "host is not merged-/usr: '" + host + "' is no link");
    }
    fs::create_symlink(fs::read_symlink(host, ec), root + host, ec);
    if (ec) return FailWith(ec, "symlink '" + root + host + "'");
  }

  if (auto copied = RunOnHost({"cp", "-a", "/etc", root + "/etc"}); !copied) return copied;
  const std::string etc = root + "/etc";
  // Nothing the host enabled starts inside: only the vendor defaults from /usr.
  for (const char* dir : {"systemd/system", "systemd/user", "init.d"}) {
    for (const auto& entry : fs::directory_iterator(etc + "/" + dir, ec)) {
      fs::remove_all(entry.path(), ec);
    }
  }
  for (const auto& entry : fs::directory_iterator(etc, ec)) {
    const std::string file = entry.path().filename().string();
    if (file.size() == 5 && file.rfind("rc", 0) == 0 && file.substr(3) == ".d") {
      fs::remove_all(entry.path(), ec);
    }
  }
  fs::remove(etc + "/rc.local", ec);
  fs::create_directories(etc + "/systemd/system", ec);
  if (ec) return FailWith(ec, "mkdir '" + etc + "/systemd/system'");

  // /etc/os-release links into /usr, which nspawn binds only later: it checks for an OS
  // tree before. A copy then.
  fs::remove(etc + "/os-release", ec);
  fs::copy_file("/etc/os-release", etc + "/os-release", ec);
  if (ec) return FailWith(ec, "copy /etc/os-release");

  // A non-empty machine id: empty means "first boot" (presets, and a firstboot prompt that
  // waits forever).
  std::string machine_id = Trim(ReadText("/proc/sys/kernel/random/uuid"));
  std::erase(machine_id, '-');
  if (machine_id.size() != 32) return Fail(std::errc::io_error, "no random uuid from the kernel");
  for (const auto& [file, content] : std::vector<std::pair<std::string, std::string>>{
           {"/fstab", ""}, {"/machine-id", machine_id + "\n"}, {"/hostname", name + "\n"}}) {
    if (auto written = WriteText(etc + file, content); !written) return written;
  }

  return {};
}

}  // namespace

Result<SystemdContainer> SystemdContainer::Start(const ContainerOptions& options) {
  const std::string name = options.name.empty() ? kTestMachinePrefix + std::to_string(getpid()) +
                                                      "-" + std::to_string(container_counter++)
                                                : options.name;
  const std::string context = "start systemd container '" + name + "'";
  if (!ValidName(name)) {
    return Fail(std::errc::invalid_argument,
                context + ": the name must start with '" + kTestMachinePrefix +
                    "', have at most 64 characters, only letters, digits, '-' and '.'");
  }
  if (geteuid() != 0) return Fail(std::errc::operation_not_permitted, context + ": needs root");

  SystemdContainer container;
  container.name_ = name;
  container.stop_timeout_ = options.stop_timeout;
  container.temp_dir_ = std::make_unique<TempDir>("nspawn");
  container.dir_ = container.temp_dir_->path();
  container.root_ = container.dir_ + "/root";
  container.log_path_ = container.dir_ + "/nspawn.log";
  container.build_dir_ = options.build_dir.empty() ? FindBuildDir() : options.build_dir;
  if (container.build_dir_.empty()) {
    return Fail(std::errc::no_such_file_or_directory, context + ": no build dir found");
  }

  if (auto built = BuildRoot(container.root_, name); !built) {
    return AddContext(built, context + ": build root dir");
  }

  // The container's own cgroups. EEXIST: a leftover of a killed run, or a name in use.
  std::vector<std::string> launch = {"sh", "-c", kLaunchScript, "sh"};
  for (const auto& dir : CgroupDirsFor(name)) {
    if (mkdir(dir.c_str(), 0755) != 0) {
      const int err = errno;
      return Fail(Error::FromErrno(err, "mkdir '" + dir + "'")
                      .WithContext(err == EEXIST ? context + " (a leftover? scripts/lib/"
                                                             "reap-test-containers removes those)"
                                                 : context));
    }
    container.cgroup_dirs_.push_back(dir);
    launch.push_back(dir + "/cgroup.procs");
  }
  launch.push_back("--");

  const std::vector<std::string> nspawn = {
      "systemd-nspawn", "--boot", "--register=no", "--keep-unit", "--link-journal=no",
      // The console goes to the log: what failed to boot is in the error message.
      "--console=read-only", "--setenv=SYSTEMD_COLORS=0", "--directory=" + container.root_,
      "--machine=" + name, "--bind=" + container.build_dir_};
  launch.insert(launch.end(), nspawn.begin(), nspawn.end());
  if (options.writable_usr) {
    // Overlays on the host's dirs: only what the container changes is copied up, into the
    // temp dir (nspawn puts its overlay work dirs next to the upper dirs).
    for (const auto& [lower, upper_name] :
         {std::pair{"/usr", "usr-upper"}, std::pair{"/var/lib/dpkg", "dpkg-upper"}}) {
      const std::string upper = container.dir_ + "/" + upper_name;
      std::error_code ec;
      for (const std::string& dir : {upper, container.root_ + lower}) {  // nspawn makes no parents
        fs::create_directories(dir, ec);
        if (ec) return FailWith(ec, context + ": mkdir '" + dir + "'");
      }
      launch.push_back(std::string("--overlay=") + lower + ":" + upper + ":" + lower);
    }
  } else {
    launch.push_back("--bind-ro=/usr");
  }
  for (const auto& bind : options.binds) launch.push_back("--bind=" + bind);
  for (const auto& bind : options.read_only_binds) launch.push_back("--bind-ro=" + bind);

  SpawnOptions spawn{
      .argv = launch, .stdout_path = container.log_path_, .stderr_path = container.log_path_};
  // The container's systemd gets the unified (v2) hierarchy, not the host's hybrid one.
  spawn.env.push_back("SYSTEMD_NSPAWN_UNIFIED_HIERARCHY=1");
  auto child = Spawn(spawn);
  if (!child) return AddContext(child, context);
  container.nspawn_ = std::move(*child);

  // Until PID 1 is there and `systemctl is-system-running` says running or degraded, or
  // nspawn gives up.
  int nspawn_status = -1;
  std::string state;
  const auto nspawn_exited = [&] {
    auto status = container.nspawn_.Wait(milliseconds(0));
    if (status) nspawn_status = *status;
    return !container.nspawn_.running();
  };
  const auto started = std::chrono::steady_clock::now();
  const bool ready = WaitFor(
      [&] {
        if (nspawn_exited()) return true;
        if (container.pid1_ <= 0) container.pid1_ = FindPid1(container.nspawn_.pid());
        if (container.pid1_ <= 0) return false;
        auto result = container.Run({"systemctl", "is-system-running"}, std::chrono::seconds(10));
        state = result ? Trim(result->out + result->err) : result.error().message();
        return state == "running" || state == "degraded";
      },
      options.ready_timeout);
  if (!ready || !container.nspawn_.running()) {
    std::string what;
    if (!container.nspawn_.running()) {
      what = "systemd-nspawn exited (wait status " + std::to_string(nspawn_status) + ")";
    } else {
      const auto waited =
          std::chrono::duration_cast<milliseconds>(std::chrono::steady_clock::now() - started);
      what = "not ready after " + std::to_string(waited.count()) + " ms (" +
             (container.pid1_ <= 0 ? std::string("no PID 1 found")
                                   : "is-system-running: '" + state + "'") +
             ")";
      if (auto failed = container.Run({"systemctl", "--failed", "--no-pager", "--no-legend"},
                                      std::chrono::seconds(10));
          failed && !failed->out.empty()) {
        what += "\nfailed units:\n" + Trim(failed->out);
      }
    }
    what += "\n--- last lines of " + container.log_path_ + " ---\n" + container.LogTail();
    const auto code = container.nspawn_.running() ? std::errc::timed_out : std::errc::io_error;
    const Status stopped = container.Stop();
    if (!stopped) what += "\n--- and cleaning up failed: " + stopped.error().message();
    return Fail(code, context + ": " + what);
  }
  return container;
}

SystemdContainer::SystemdContainer(SystemdContainer&& other) noexcept
    : temp_dir_(std::move(other.temp_dir_)),
      name_(std::exchange(other.name_, {})),
      dir_(std::exchange(other.dir_, {})),
      root_(std::exchange(other.root_, {})),
      build_dir_(std::exchange(other.build_dir_, {})),
      log_path_(std::exchange(other.log_path_, {})),
      cgroup_dirs_(std::exchange(other.cgroup_dirs_, {})),
      stop_timeout_(other.stop_timeout_),
      nspawn_(std::move(other.nspawn_)),
      pid1_(std::exchange(other.pid1_, -1)) {}

SystemdContainer& SystemdContainer::operator=(SystemdContainer&& other) noexcept {
  if (this != &other) {
    if (auto stopped = Stop(); !stopped) {
      std::fprintf(stderr, "SystemdContainer: %s\n", stopped.error().message().c_str());
    }
    temp_dir_ = std::move(other.temp_dir_);
    name_ = std::exchange(other.name_, {});
    dir_ = std::exchange(other.dir_, {});
    root_ = std::exchange(other.root_, {});
    build_dir_ = std::exchange(other.build_dir_, {});
    log_path_ = std::exchange(other.log_path_, {});
    cgroup_dirs_ = std::exchange(other.cgroup_dirs_, {});
    stop_timeout_ = other.stop_timeout_;
    nspawn_ = std::move(other.nspawn_);
    pid1_ = std::exchange(other.pid1_, -1);
  }
  return *this;
}

SystemdContainer::~SystemdContainer() {
  if (auto stopped = Stop(); !stopped) {
    std::fprintf(stderr, "SystemdContainer: %s\n", stopped.error().message().c_str());
  }
}

Result<RunResult> SystemdContainer::Run(const std::vector<std::string>& argv,
                                        milliseconds timeout) const {
  return Run(RunOptions{.argv = argv, .timeout = timeout});
}

Result<RunResult> SystemdContainer::Run(const RunOptions& options) const {
  // Checked every time: nsenter into a pid that died and was reused would run the command
  // somewhere else entirely.
  if (pid1_ <= 0 || !IsPid1Of(pid1_, nspawn_.pid())) {
    return Fail(std::errc::no_such_process, "run in container '" + name_ + "': not running");
  }
  // nsenter passes on its (clean) environment; entering the mount namespace makes the
  // container's root "/" the root and working directory.
  //
  // The deadline is enforced inside, by coreutils' timeout (which SIGKILLs its process
  // group: the command, all it started, and itself). Killed from the host, nsenter could go
  // before the command, which would then be reparented to the host's init: the container's
  // systemd would never see it exit, and a halt would wait 10 s for it. The host-side
  // deadline stays as a backstop.
  const auto started = std::chrono::steady_clock::now();
  char seconds[32];
  std::snprintf(seconds, sizeof(seconds), "%.3f",
                static_cast<double>(std::max<long long>(options.timeout.count(), 1)) / 1000);
  RunOptions host = options;
  host.cwd.clear();
  host.timeout = options.timeout + kRunBackstop;
  // Absolute paths: the caller's env (and its PATH) is for the command.
  host.argv = {"/usr/bin/nsenter", "--target", std::to_string(pid1_), "--all", "--"};
  host.argv.insert(host.argv.end(), {"/usr/bin/timeout", "--signal=KILL", seconds});
  if (!options.cwd.empty()) {
    host.argv.insert(host.argv.end(), {"/usr/bin/env", "--chdir=" + options.cwd, "--"});
  }
  host.argv.insert(host.argv.end(), options.argv.begin(), options.argv.end());
  auto result = tether::Run(host);
  if (!result) return AddContext(result, "run in container '" + name_ + "'");
  // timeout's own process group kill shows as SIGKILL (via nsenter); its exit status 124
  // or 137 when it got out first.
  const bool deadline_passed = std::chrono::steady_clock::now() - started >= options.timeout;
  if (deadline_passed &&
      (result->signal == SIGKILL || result->exit_code == 124 || result->exit_code == 137)) {
    result->timed_out = true;
    result->exit_code = -1;
    result->signal = SIGKILL;
  }
  return result;
}

Status SystemdContainer::Stop() {
  std::string errors;
  const auto note = [&](const std::string& error) {
    errors += (errors.empty() ? "" : "; ") + error;
  };

  // SIGTERM makes nspawn halt the container (SIGRTMIN+3 to its systemd) and wait for it.
  // After stop_timeout both get SIGKILL: nspawn from Child::Stop, the container (which a
  // dead nspawn leaves running) below, with everything else in the cgroups.
  if (nspawn_.running()) nspawn_.Stop(SIGTERM, stop_timeout_);
  pid1_ = -1;

  if (!cgroup_dirs_.empty()) {
    if (auto removed = RemoveCgroups(cgroup_dirs_, std::chrono::seconds(10)); removed) {
      cgroup_dirs_.clear();
    } else {
      note(removed.error().message());
    }
  }

  if (!name_.empty()) {
    // Made by nspawn, removed by it on a clean exit; a plain empty dir on the host.
    const std::string propagate = kPropagateDir + name_;
    std::error_code ec;
    if (fs::exists(propagate, ec)) {
      if (const auto mounts = MountsUnder(propagate); !mounts.empty()) {
        note("'" + propagate + "' is still mounted");
      } else if (fs::remove_all(propagate, ec); ec) {
        note("remove '" + propagate + "': " + ec.message());
      }
    }
  }

  if (temp_dir_) {
    if (const auto mounts = MountsUnder(dir_); !mounts.empty()) {
      // Removing it would reach through the mount (e.g. into the host's /usr): keep it.
      note("kept '" + dir_ + "': '" + mounts.front() + "' is still mounted");
      (void)temp_dir_.release();  // deliberately leaked: its destructor would remove it
    } else {
      temp_dir_.reset();
      const char* keep = std::getenv("TETHER_KEEP_TEMP");
      std::error_code ec;
      if (!(keep != nullptr && std::string_view(keep) == "1") && fs::exists(dir_, ec)) {
        note("could not remove '" + dir_ + "'");
      }
    }
  }

  if (!errors.empty()) {
    return Fail(std::errc::device_or_resource_busy, "stop '" + name_ + "': " + errors);
  }
  return {};
}

std::string SystemdContainer::bus_address() const {
  return "unix:path=/proc/" + std::to_string(pid1_) + "/root/run/dbus/system_bus_socket";
}

std::string SystemdContainer::LogTail(std::size_t lines) const {
  std::string log = ReadText(log_path_);
  std::erase(log, '\r');
  while (!log.empty() && log.back() == '\n') log.pop_back();
  std::size_t start = log.size();
  for (std::size_t n = 0; n < lines && start > 0; ++n) {
    const std::size_t newline = log.rfind('\n', start - 1);
    start = newline == std::string::npos ? 0 : newline;
  }
  if (start > 0) ++start;  // after the newline
  return log.substr(start);
}

}  // namespace tether::testing
