#include "agent/daemon/daemon.hpp"

#include <grp.h>
#include <malloc.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <systemd/sd-daemon.h>
#include <unistd.h>

#include <boost/asio/io_context.hpp>
#include <boost/asio/local/stream_protocol.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/read_until.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/streambuf.hpp>
#include <boost/asio/write.hpp>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstring>
#include <deque>
#include <fstream>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <random>
#include <sstream>
#include <thread>

#include <nlohmann/json.hpp>

#include "agent/config/agent_config.hpp"
#include "agent/daemon/cycle_process.hpp"
#include "agent/daemon/daemon_reports.hpp"
#include "agent/daemon/managed.hpp"
#include "agent/diagnostics.hpp"
#include "agent/engine/drift_watcher.hpp"
#include "agent/git/poll_schedule.hpp"
#include "agent/report/send_process.hpp"
#include "agent/state/history.hpp"
#include "common/filesystem.hpp"
#include "common/log.hpp"
#include "common/systemd_bus.hpp"
#include "version.hpp"

namespace tether {

namespace {

namespace asio = boost::asio;
using Local = asio::local::stream_protocol;
using Json = nlohmann::json;
using SteadyClock = std::chrono::steady_clock;
using SystemClock = std::chrono::system_clock;

constexpr std::size_t kMaxRequest = 64 << 10;
constexpr auto kRequestTimeout = std::chrono::seconds(10);
// Events not yet written to a subscriber before it is dropped.
constexpr std::size_t kMaxEventsQueued = 1024;
// A burst of edits (an editor's write, rename and chmod) is one drift repair.
constexpr auto kDriftSettle = std::chrono::milliseconds(100);

std::int64_t UnixSeconds(SystemClock::time_point when) {
  return std::chrono::duration_cast<std::chrono::seconds>(when.time_since_epoch()).count();
}

// What one cycle did.
struct CycleResult {
  std::string trigger;  // "start", "poll", "manual", "drift"
  int exit_code = -1;
  std::string out;
  std::string err;
  SystemClock::time_point started;
  std::chrono::milliseconds duration{0};
  CycleSummary summary;
};

// How the worker starts a cycle's process.
struct CycleRunner {
  std::vector<std::string> argv;
  std::vector<std::string> env;
};

// The worker thread: one cycle at a time, its result handed back on the loop.
class Worker {
 public:
  explicit Worker(asio::io_context& io) : io_(io), thread_([this] { Loop(); }) {}
  ~Worker() {
    {
      std::lock_guard lock(mutex_);
      stop_ = true;
    }
    wake_.notify_one();
    thread_.join();
  }
  Worker(const Worker&) = delete;
  Worker& operator=(const Worker&) = delete;

  // Starts a cycle; `done` runs on the loop afterwards. The caller makes sure that only
  // one runs at a time (busy()).
  void Start(CycleRunner runner, std::vector<ConfigFile> config_files, CycleOptions options,
             std::string trigger, std::function<void(const CycleResult&)> done) {
    {
      std::lock_guard lock(mutex_);
      job_ = Job{std::move(runner), std::move(config_files), std::move(options), std::move(trigger),
                 std::move(done)};
    }
    busy_ = true;
    wake_.notify_one();
  }
  [[nodiscard]] bool busy() const { return busy_; }

 private:
  struct Job {
    CycleRunner runner;
    std::vector<ConfigFile> config_files;
    CycleOptions options;
    std::string trigger;
    std::function<void(const CycleResult&)> done;
  };

  void Loop() {
    while (true) {
      std::optional<Job> job;
      {
        std::unique_lock lock(mutex_);
        wake_.wait(lock, [&] { return stop_ || job_.has_value(); });
        if (!job_) return;  // stopping, nothing left to do
        job = std::move(job_);
        job_.reset();
      }
      auto result = std::make_shared<CycleResult>();
      result->trigger = job->trigger;
      result->started = SystemClock::now();
      const auto start = SteadyClock::now();
      CycleOutput output =
          RunCycleProcess(job->runner.argv, job->runner.env, job->config_files, job->options);
      result->duration =
          std::chrono::duration_cast<std::chrono::milliseconds>(SteadyClock::now() - start);
      result->exit_code = output.exit_code;
      result->out = std::move(output.out);
      result->err = std::move(output.err);
      result->summary = std::move(output.summary);
      job->options = CycleOptions();
      job->config_files.clear();
      // What the cycle allocated goes back to the system, not only to malloc: an idle
      // daemon stays small.
      malloc_trim(0);
      asio::post(io_, [this, result, done = std::move(job->done)] {
        busy_ = false;
        done(*result);
      });
    }
  }

  asio::io_context& io_;
  std::mutex mutex_;
  std::condition_variable wake_;
  std::optional<Job> job_;
  bool stop_ = false;
  bool busy_ = false;  // touched on the loop only
  std::thread thread_;
};

enum class Role { kNone, kReader, kAdmin };

// The commit in state_dir/inventory.json, or "".
std::string AppliedCommit(const std::string& state_dir) {
  auto text = ReadLocalFile(state_dir + "/inventory.json", 256 << 20);
  if (!text) return "";
  // Only the beginning is needed: the commit comes before the entries.
  const Json json = Json::parse(*text, nullptr, false);
  return json.is_object() ? json.value("commit", "") : "";
}

std::string QuarantinedCommit(const std::string& state_dir) {
  auto text = ReadLocalFile(state_dir + "/quarantine.json", 1 << 20);
  if (!text) return "";
  const Json json = Json::parse(*text, nullptr, false);
  return json.is_object() ? json.value("commit", "") : "";
}

// Whether the process `pid` (a socket peer) has group `gid`, primary or supplementary.
bool HasGroup(pid_t pid, gid_t primary, gid_t gid) {
  if (primary == gid) return true;
  std::ifstream status("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(status, line)) {
    if (line.rfind("Groups:", 0) != 0) continue;
    std::istringstream groups(line.substr(7));
    long id = 0;
    while (groups >> id) {
      if (static_cast<gid_t>(id) == gid) return true;
    }
  }
  return false;
}

class Daemon;

// One control connection: requests in, replies out, each bounded in size and time.
class Connection : public std::enable_shared_from_this<Connection> {
 public:
  Connection(Daemon& daemon, Local::socket socket, Role role)
      : daemon_(daemon),
        socket_(std::move(socket)),
        timer_(socket_.get_executor()),
        input_(kMaxRequest),
        role_(role) {}

  void Start() { ReadRequest(); }
  void Reply(const Json& reply);
  // A reply that comes later (sync --wait, plan), when a cycle is over: the request
  // deadline does not run while one is owed, however long the cycle takes.
  void Defer() {
    ++deferred_;
    timer_.cancel();
  }
  void ReplyDeferred(const Json& reply) {
    if (deferred_ > 0 && --deferred_ == 0 && !subscribed_) ArmDeadline();
    Reply(reply);
  }
  [[nodiscard]] Role role() const { return role_; }
  // An events subscriber: no request deadline any more; a reader that falls too far
  // behind is dropped (its connection closed) rather than buffered without end.
  void Subscribe() { subscribed_ = true; }

 private:
  void ReadRequest();
  void ArmDeadline();
  void WriteNext();

  Daemon& daemon_;
  Local::socket socket_;
  asio::steady_timer timer_;
  asio::streambuf input_;
  Role role_;
  bool subscribed_ = false;
  int deferred_ = 0;  // replies owed (Defer)
  std::deque<std::string> outbox_;
};

class Daemon {
 public:
  explicit Daemon(DaemonOptions options)
      : options_(std::move(options)),
        signals_(io_, SIGTERM, SIGINT, SIGHUP),
        poll_timer_(io_),
        watchdog_timer_(io_),
        drift_timer_(io_),
        heartbeat_timer_(io_),
        acceptor_(io_),
        worker_(io_),
        random_(std::random_device{}()),
        schedule_(MakeSchedule()) {}

  int Run() {
    log_ = GetLogger("daemon");
    // The state dir holds the suspension, the pin and the report outbox from the start.
    if (mkdir(options_.cycle.state_dir.c_str(), 0700) != 0 && errno != EEXIST) {
      log_->error("state dir '{}': {}", options_.cycle.state_dir, std::strerror(errno));
      return 1;
    }
    if (auto opened = OpenSocket(); !opened) {
      log_->error("control socket: {}", opened.error().message());
      return 1;
    }
    WaitForSignal();
    StartWatchdog();
    StartDriftWatch();
    StartUnitWatch();
    Accept();
    commit_ = AppliedCommit(options_.cycle.state_dir);
    LoadSuspension();
    LoadPin();
    StartReports();
    sd_notify(0, "READY=1");
    log_->info("tetherd {} started; control socket {}", TETHER_VERSION, options_.socket_path);
    StartCycle("start");
    io_.run();
    sd_notify(0, "STATUS=stopped");
    log_->info("stopped");
    return 0;
  }

  // Control requests.
  void Handle(const std::shared_ptr<Connection>& connection, const Json& request) {
    const std::string command = request.is_object() ? request.value("command", "") : "";
    if (command == "status") return connection->Reply(StatusReply());
    if (command == "sync") {
      if (connection->role() != Role::kAdmin) {
        return connection->Reply(Refusal("permission denied: 'sync' needs root"));
      }
      if (stopping_) return connection->Reply(Refusal("tetherd is stopping"));
      const bool wait = request.value("wait", false);
      // Answered by the cycle this request starts, never by one already running, which
      // may predate it (and the commit the caller just pushed).
      if (wait) {
        connection->Defer();
        next_waiters_.push_back(connection);
      }
      if (reports_) reports_->RetryNow();  // queued reports too, now
      if (worker_.busy()) {
        pending_ = "manual";  // once more after the one in progress, which may predate it
      } else {
        StartCycle("manual");
      }
      if (!wait) connection->Reply(Json{{"ok", true}, {"started", true}});
      return;
    }
    if (command == "plan") {
      // A dry run now, its output the reply; it changes nothing, not even the status.
      if (stopping_) return connection->Reply(Refusal("tetherd is stopping"));
      if (worker_.busy()) {
        return connection->Reply(Refusal("a cycle is running; ask again when it is over"));
      }
      CycleOptions dry = options_.cycle;
      dry.dry_run = true;
      if (pinned_) dry.pin = *pinned_;  // what the next cycle would do
      state_before_plan_ = state_;
      state_ = "planning";
      connection->Defer();
      worker_.Start({options_.cycle_argv, options_.cycle_env}, options_.config_files,
                    std::move(dry), "plan", [this, connection](const CycleResult& result) {
                      state_ = state_before_plan_;
                      connection->ReplyDeferred(Json{{"ok", result.exit_code == 0},
                                                     {"schema", "tether.ctl/v1"},
                                                     {"cycle", CycleJson(result)}});
                      if (stopping_) return Finish();
                      if (pending_) {
                        const std::string trigger = *pending_;
                        pending_.reset();
                        StartCycle(trigger);
                      }
                    });
      return;
    }
    if (command == "history" || command == "show") {
      auto entries = LoadHistory(options_.cycle.state_dir);
      if (!entries) return connection->Reply(Refusal(entries.error().message()));
      if (command == "history") {
        Json list = Json::array();
        for (const auto& entry : *entries) list.push_back(HistoryJson(entry, false));
        return connection->Reply(
            Json{{"ok", true}, {"schema", "tether.ctl/v1"}, {"entries", list}});
      }
      const auto id = request.value("id", std::int64_t{0});
      for (const auto& entry : *entries) {
        if (entry.id == id) {
          return connection->Reply(
              Json{{"ok", true}, {"schema", "tether.ctl/v1"}, {"entry", HistoryJson(entry, true)}});
        }
      }
      return connection->Reply(Refusal("no apply " + std::to_string(id) + " in the history"));
    }
    if (command == "events") {
      connection->Subscribe();
      subscribers_.push_back(connection);
      return connection->Reply(
          Json{{"ok", true}, {"schema", "tether.ctl/v1"}, {"subscribed", true}});
    }
    if (command == "metrics") {
      return connection->Reply(
          Json{{"ok", true}, {"schema", "tether.ctl/v1"}, {"text", Metrics()}});
    }
    if (command == "rollback") {
      if (connection->role() != Role::kAdmin) {
        return connection->Reply(Refusal("permission denied: 'rollback' needs root"));
      }
      // From the local history: an applied commit, named by a prefix of its id.
      const std::string wanted = request.value("commit", "");
      auto entries = LoadHistory(options_.cycle.state_dir);
      if (!entries) return connection->Reply(Refusal(entries.error().message()));
      std::string found;
      for (const auto& entry : *entries) {
        if (entry.outcome == "applied" && wanted.size() >= 4 &&
            entry.commit.rfind(wanted, 0) == 0) {
          found = entry.commit;
        }
      }
      if (found.empty()) {
        return connection->Reply(
            Refusal("no applied commit '" + wanted + "' in the local history (tetherctl history)"));
      }
      pinned_ = found;
      SavePin();
      log_->info("rollback to {}: pinned until resumed", found);
      Publish("pinned", {{"commit", found}});
      if (worker_.busy()) {
        pending_ = "manual";
      } else if (!stopping_) {
        StartCycle("manual");
      }
      return connection->Reply(StatusReply());
    }
    if (command == "suspend" || command == "resume") {
      if (connection->role() != Role::kAdmin) {
        return connection->Reply(Refusal("permission denied: '" + command + "' needs root"));
      }
      if (command == "suspend") {
        suspended_ = request.value("reason", "");
        log_->info("suspended{}{}: cycles only plan until resumed", suspended_->empty() ? "" : ": ",
                   *suspended_);
        Publish("suspended", {{"reason", *suspended_}});
      } else {
        suspended_.reset();
        pinned_.reset();
        SavePin();
        log_->info("resumed");
        Publish("resumed", Json::object());
        if (worker_.busy()) {
          pending_ = "manual";  // the cycle in progress may still be pinned
        } else if (!stopping_) {
          StartCycle("manual");
        }
      }
      SaveSuspension();
      NotifyStatus();
      return connection->Reply(StatusReply());
    }
    connection->Reply(Refusal(command.empty() ? "a request is {\"command\": NAME, ...}"
                                              : "unknown command '" + command + "'"));
  }

  // Sends an event to every subscriber (tetherctl events): {"event": NAME, "time": unix
  // seconds, ...fields}.
  void Publish(const std::string& name, Json fields) {
    if (subscribers_.empty()) return;
    Json event = {{"event", name}, {"time", UnixSeconds(SystemClock::now())}};
    for (auto& [key, value] : fields.items()) event[key] = value;
    auto it = subscribers_.begin();
    while (it != subscribers_.end()) {
      if (auto connection = it->lock()) {
        connection->Reply(event);
        ++it;
      } else {
        it = subscribers_.erase(it);
      }
    }
  }

  static Json HistoryJson(const HistoryEntry& entry, bool with_output) {
    Json json = {{"id", entry.id},           {"commit", entry.commit},
                 {"signer", entry.signer},   {"trigger", entry.trigger},
                 {"outcome", entry.outcome}, {"changes", entry.changes},
                 {"started", entry.started}, {"duration_ms", entry.duration_ms}};
    if (with_output) {
      json["output"] = entry.output;
      json["errors"] = entry.errors;
    }
    return json;
  }

  [[nodiscard]] Role RoleOf(const Local::socket& socket) {
    ucred peer{};
    socklen_t length = sizeof(peer);
    if (getsockopt(const_cast<Local::socket&>(socket).native_handle(), SOL_SOCKET, SO_PEERCRED,
                   &peer, &length) != 0) {
      return Role::kNone;
    }
    if (peer.uid == 0) return Role::kAdmin;
    if (read_gid_ && HasGroup(peer.pid, peer.gid, *read_gid_)) return Role::kReader;
    return Role::kNone;
  }

  static Json Refusal(const std::string& error) {
    return Json{{"ok", false}, {"schema", "tether.ctl/v1"}, {"error", error}};
  }

 private:
  // Suspension survives a restart: state_dir/suspended (its reason).
  void LoadSuspension() {
    auto text = ReadLocalFile(options_.cycle.state_dir + "/suspended", 4096);
    if (text) suspended_ = *text;
  }

  // A rollback's pin survives a restart too: state_dir/pinned (the commit).
  void LoadPin() {
    auto text = ReadLocalFile(options_.cycle.state_dir + "/pinned", 4096);
    if (text && text->size() >= 40) pinned_ = text->substr(0, 40);
  }

  void SavePin() { SaveStateValue("pinned", pinned_, "rollback"); }

  void SaveSuspension() { SaveStateValue("suspended", suspended_, "suspend"); }

  // state_dir/NAME holds `value`, or is removed when there is none.
  void SaveStateValue(const char* name, const std::optional<std::string>& value, const char* what) {
    const std::string path = options_.cycle.state_dir + "/" + name;
    auto host = RootedFilesystem::Open("/");
    if (!host) return;
    if (value) {
      WriteOptions write;
      write.mode = 0600;
      if (auto saved = (*host)->WriteFileAtomic(path, *value, write); !saved) {
        log_->error("{}: {}", what, saved.error().message());
      }
    } else {
      (void)(*host)->Remove(path);
    }
  }

  // Prometheus text format.
  std::string Metrics() const {
    std::string text;
    auto metric = [&](const std::string& name, const char* type, const char* help,
                      const std::vector<std::pair<std::string, double>>& samples) {
      text += "# HELP " + name + " " + help + "\n# TYPE " + name + " " + type + "\n";
      for (const auto& [labels, value] : samples) {
        char number[64];
        std::snprintf(number, sizeof(number), "%.17g", value);
        text += name + labels + " " + number + "\n";
      }
    };
    metric("tether_info", "gauge", "The agent's version.",
           {{std::string("{version=\"") + TETHER_VERSION + "\"}", 1}});
    std::vector<std::pair<std::string, double>> cycles;
    for (const auto& [trigger, count] : cycles_by_trigger_) {
      cycles.emplace_back("{trigger=\"" + trigger + "\"}", static_cast<double>(count));
    }
    metric("tether_cycles_total", "counter", "Cycles run (each polls, plans and applies).", cycles);
    std::vector<std::pair<std::string, double>> outcomes;
    for (const auto& [outcome, count] : cycles_by_outcome_) {
      outcomes.emplace_back("{outcome=\"" + outcome + "\"}", static_cast<double>(count));
    }
    metric("tether_cycle_outcomes_total", "counter",
           "Cycles by outcome: in sync, applied, rolled back, failed, dry run.", outcomes);
    metric(
        "tether_drift_events_total", "counter", "Cycles started by a change of a managed path.",
        {{"", static_cast<double>(
                  cycles_by_trigger_.count("drift") != 0 ? cycles_by_trigger_.at("drift") : 0)}});
    metric("tether_failures_total", "counter", "Cycles that failed, were refused or rolled back.",
           {{"", static_cast<double>(failures_)}});
    metric("tether_cycle_duration_seconds", "summary", "How long cycles took.",
           {{"_sum", cycle_seconds_}, {"_count", static_cast<double>(cycle_count_)}});
    metric("tether_last_success_timestamp_seconds", "gauge",
           "When a cycle last ended in sync or applied (unix time; 0: never).",
           {{"", static_cast<double>(last_success_)}});
    metric("tether_suspended", "gauge", "1 while applying is suspended.",
           {{"", suspended_ ? 1.0 : 0.0}});
    return text;
  }

  PollSchedule MakeSchedule() {
    return PollSchedule(options_.cycle.config.source.interval, options_.cycle.config.source.jitter,
                        [this] { return std::uniform_real_distribution<double>(0, 1)(random_); });
  }

  Status OpenSocket() {
    if (group* found = getgrnam(options_.read_group.c_str())) read_gid_ = found->gr_gid;
    // Socket activation: systemd passes the listening socket.
    if (sd_listen_fds(1) == 1) {
      boost::system::error_code code;
      acceptor_.assign(Local(), SD_LISTEN_FDS_START, code);
      if (code)
        return Fail(std::errc::bad_file_descriptor, "the socket systemd passed: " + code.message());
      return {};
    }
    const std::string& path = options_.socket_path;
    const auto slash = path.rfind('/');
    if (slash != std::string::npos && slash > 0) mkdir(path.substr(0, slash).c_str(), 0755);
    unlink(path.c_str());  // a socket left by a killed tetherd
    boost::system::error_code code;
    acceptor_.open(Local(), code);
    if (!code) acceptor_.bind(Local::endpoint(path), code);
    if (!code) acceptor_.listen(64, code);
    if (code) return Fail(std::errc::address_in_use, "bind '" + path + "': " + code.message());
    // Readers (group tether) may connect; the peer check decides what they may do.
    if (read_gid_) (void)chown(path.c_str(), 0, *read_gid_);
    (void)chmod(path.c_str(), read_gid_ ? 0660 : 0600);
    return {};
  }

  void Accept() {
    acceptor_.async_accept([this](boost::system::error_code code, Local::socket socket) {
      if (code == asio::error::operation_aborted || stopping_) return;
      if (!code) {
        const Role role = RoleOf(socket);
        auto connection = std::make_shared<Connection>(*this, std::move(socket), role);
        if (role == Role::kNone) {
          connection->Reply(
              Refusal("permission denied: root or the group '" + options_.read_group + "' only"));
        } else {
          connection->Start();
        }
      }
      Accept();
    });
  }

  void WaitForSignal() {
    signals_.async_wait([this](boost::system::error_code code, int signal) {
      if (code) return;
      if (signal == SIGHUP) {
        Reload();
        WaitForSignal();
        return;
      }
      Stop(signal);
    });
  }

  void Reload() {
    const auto now =
        std::chrono::duration_cast<std::chrono::microseconds>(SteadyClock::now().time_since_epoch())
            .count();
    sd_notifyf(0, "RELOADING=1\nMONOTONIC_USEC=%lld", static_cast<long long>(now));
    auto files = ReadAgentConfigFiles(options_.config_path);
    Diagnostics diagnostics;
    AgentConfig config;
    if (files) config = ParseAgentConfig(*files, ConfigOptions(), diagnostics);
    if (!files || diagnostics.has_errors()) {
      std::string message = files ? diagnostics.ToString() : files.error().message();
      while (!message.empty() && message.back() == '\n') message.pop_back();
      log_->error("reload: {}; keeping the configuration in use", message);
      Publish("reloaded", {{"ok", false}, {"error", message}});
    } else {
      const bool reports_changed = ReportConfigChanged(options_.cycle.config.report, config.report);
      options_.cycle.config = std::move(config);
      options_.config_files = std::move(*files);
      if (reports_changed) {
        if (reports_) reports_->Stop();
        reports_.reset();
        heartbeat_timer_.cancel();
        StartReports();
      }
      schedule_ = MakeSchedule();
      log_->info("reloaded {}", options_.config_path);
      Publish("reloaded", {{"ok", true}});
    }
    sd_notify(0, "READY=1");
    NotifyStatus();
  }

  void Stop(int signal) {
    if (stopping_) return;
    stopping_ = true;
    sd_notify(0, "STOPPING=1");
    Publish("stopping", {{"signal", signal}});
    log_->info("signal {}: stopping{}", signal,
               worker_.busy() ? " once the cycle in progress is over" : "");
    boost::system::error_code ignored;
    acceptor_.close(ignored);
    poll_timer_.cancel();
    if (!worker_.busy()) Finish();
  }

  void Finish() {
    signals_.cancel();
    heartbeat_timer_.cancel();
    // Queued reports stay in the outbox for the next start; an attempt in progress ends
    // within its deadline.
    if (reports_) reports_->Stop();
    watchdog_timer_.cancel();
    drift_timer_.cancel();
    if (watch_fd_) watch_fd_->close();
    if (unit_fd_) unit_fd_->close();
    poll_timer_.cancel();
    for (auto& waiter : waiters_) waiter->ReplyDeferred(Refusal("tetherd stopped"));
    for (auto& waiter : next_waiters_) waiter->ReplyDeferred(Refusal("tetherd stopped"));
    waiters_.clear();
    next_waiters_.clear();
    if (options_.socket_path.size() > 0 && sd_listen_fds(0) <= 0) {
      unlink(options_.socket_path.c_str());
    }
    io_.stop();
  }

  // Reports, when report.url is set: the outbox is delivered from the start (what a
  // previous run left), and a heartbeat goes out every report.heartbeat.
  void StartReports() {
    const AgentConfig& config = options_.cycle.config;
    if (!config.report.url) return;
    auto started = DaemonReports::Start(config, options_.cycle.state_dir, options_.cycle.root,
                                        MakeProcessSender(options_.http_argv, options_.cycle_env));
    if (!started) {
      log_->error("reports: {}; no reports are sent", started.error().message());
      return;
    }
    reports_ = std::move(*started);
    ScheduleHeartbeat();
  }

  void ScheduleHeartbeat() {
    const auto period = options_.cycle.config.report.heartbeat;
    if (period <= std::chrono::milliseconds(0)) return;
    heartbeat_timer_.expires_after(period);
    heartbeat_timer_.async_wait([this](boost::system::error_code code) {
      if (code || stopping_ || !reports_) return;
      // A state a drift repair kept goes with the summary that explains it.
      const CycleSummary& summary = state_kept_ ? source_summary_
                                    : last_     ? last_->summary
                                                : source_summary_;
      reports_->Heartbeat(state_, summary);
      ScheduleHeartbeat();
    });
  }

  static bool ReportConfigChanged(const ReportConfig& a, const ReportConfig& b) {
    return a.url != b.url || a.token_file != b.token_file || a.client_cert != b.client_cert ||
           a.client_key != b.client_key || a.ca_file != b.ca_file || a.heartbeat != b.heartbeat;
  }

  void StartWatchdog() {
    std::uint64_t usec = 0;
    if (sd_watchdog_enabled(0, &usec) <= 0 || usec == 0) return;
    watchdog_period_ = std::chrono::microseconds(usec / 2);
    Watchdog();
  }

  void Watchdog() {
    sd_notify(0, "WATCHDOG=1");
    watchdog_timer_.expires_after(watchdog_period_);
    watchdog_timer_.async_wait([this](boost::system::error_code code) {
      if (!code) Watchdog();
    });
  }

  // Drift: inotify on every managed path; an event starts a cycle (after a short settle),
  // which reverts or reports what changed. The daemon's own writes are drained after each
  // cycle, so they never start another.
  void StartDriftWatch() {
    auto watcher = DriftWatcher::Create(options_.cycle.root);
    if (!watcher) {
      log_->warn("drift watch: {}; drift is found by the polls and audits only",
                 watcher.error().message());
      return;
    }
    watcher_ = std::move(*watcher);
    watch_fd_.emplace(io_, dup(watcher_->fd()));
    Rewatch();
    WaitForDrift();
  }

  // Watches what the inventory now names. Returns true when events came in during the
  // cycle: its own writes, or a hand edit made while it ran (after its write of that
  // path, say); they cannot be told apart, so the caller confirms with one more cycle,
  // which writes nothing when all was ours (and so ends there).
  bool Rewatch() {
    if (!watcher_) return false;
    auto events = watcher_->Read();
    const bool pending = events && (!events->ids.empty() || events->overflow);
    if (auto watched = watcher_->Watch(ManagedPaths(options_.cycle.state_dir)); !watched) {
      log_->warn("drift watch: {}", watched.error().message());
    }
    return pending;
  }

  // Service drift between polls: systemd's signals for the services tether manages (a
  // stop, a crash, a start, an enable or disable by hand) start a drift cycle, as inotify
  // does for paths. On the whole host only: under --root services are not managed.
  void StartUnitWatch() {
    if (options_.cycle.root != "/") return;
    auto watcher = OpenUnitWatcher();
    if (!watcher) {
      log_->warn("service watch: {}; service drift is found by the polls and audits only",
                 watcher.error().message());
      return;
    }
    unit_watcher_ = std::move(*watcher);
    unit_fd_.emplace(io_, dup(unit_watcher_->fd()));
    RewatchUnits();
    WaitForUnits();
  }

  // Watches the services the inventory names; true when changes came in meanwhile (see
  // Rewatch).
  bool RewatchUnits() {
    if (!unit_watcher_) return false;
    services_ = ManagedServices(options_.cycle.state_dir);
    std::vector<std::string> units;
    for (const auto& [unit, id] : services_) units.push_back(unit);
    if (auto watched = unit_watcher_->Watch(units); !watched) {
      log_->warn("service watch: {}", watched.error().message());
    }
    auto changed = unit_watcher_->Process();
    return changed && !changed->empty();
  }

  void WaitForUnits() {
    unit_fd_->async_wait(
        asio::posix::stream_descriptor::wait_read, [this](boost::system::error_code code) {
          if (code || stopping_) return;
          auto changed = unit_watcher_->Process();
          if (!changed) {
            log_->warn("service watch: {}", changed.error().message());
          } else if (!changed->empty()) {
            DriftEvents events;
            for (const auto& unit : *changed) {
              auto id = services_.find(unit);
              events.ids.insert(id != services_.end() ? id->second : "service:" + unit);
            }
            OnDrift(events);
          }
          WaitForUnits();
        });
  }

  void WaitForDrift() {
    watch_fd_->async_wait(asio::posix::stream_descriptor::wait_read,
                          [this](boost::system::error_code code) {
                            if (code || stopping_) return;
                            auto events = watcher_->Read();
                            if (events && (!events->ids.empty() || events->overflow))
                              OnDrift(*events);
                            WaitForDrift();
                          });
  }

  void OnDrift(const DriftEvents& events) {
    Json ids = Json::array();
    for (const auto& id : events.ids) ids.push_back(id);
    Publish("drift-detected", {{"resources", std::move(ids)}, {"overflow", events.overflow}});
    if (worker_.busy()) {
      // The cycle's own writes, or a hand edit made while it runs: one more cycle once
      // it is over tells (it writes nothing when all was ours).
      if (!pending_) pending_ = "drift";
      return;
    }
    drift_timer_.expires_after(kDriftSettle);
    drift_timer_.async_wait([this](boost::system::error_code late) {
      if (late || stopping_) return;
      if (!worker_.busy()) return StartCycle("drift");
      if (!pending_) pending_ = "drift";  // a plan started meanwhile: it repairs nothing
    });
  }

  void StartCycle(const std::string& trigger) {
    for (auto& waiter : next_waiters_) waiters_.push_back(std::move(waiter));
    next_waiters_.clear();
    state_ = "applying";
    NotifyStatus();
    Publish("cycle-started", {{"trigger", trigger}});
    if (trigger != "drift") {  // it asks the source: the next poll is an interval after it
      poll_timer_.cancel();
      ++poll_generation_;  // even a poll whose timer has fired, its handler not yet run
      next_poll_.reset();
    }
    CycleOptions cycle = options_.cycle;
    if (suspended_) cycle.dry_run = true;  // polling goes on; nothing is applied
    if (pinned_) cycle.pin = *pinned_;
    // Drift is repaired from the applied commit, at once, whatever the source is doing.
    cycle.enforce_applied = trigger == "drift";
    worker_.Start({options_.cycle_argv, options_.cycle_env}, options_.config_files,
                  std::move(cycle), trigger, [this](const CycleResult& result) { Done(result); });
  }

  void Done(const CycleResult& result) {
    last_ = result;
    commit_ = AppliedCommit(options_.cycle.state_dir);
    // Paths touched while the cycle ran: confirmed by a drift cycle (see Rewatch).
    const bool paths_touched = Rewatch();
    const bool units_changed = RewatchUnits();
    if ((paths_touched || units_changed) && !pending_ && !stopping_) pending_ = "drift";
    state_ = StateAfterCycle(result.summary, result.exit_code, suspended_.has_value());
    if (result.trigger != "drift") {
      source_state_ = state_;
      source_summary_ = result.summary;
      state_kept_ = false;
    } else {
      const std::string repaired = state_;
      state_ = StateAfterDriftRepair(source_state_, repaired);
      state_kept_ = state_ != repaired;
    }
    LogOutput(result);
    Count(result);
    Record(result);
    if (reports_) {
      reports_->CycleDone({result.trigger, result.summary, UnixSeconds(result.started) * 1000,
                           result.duration.count()});
    }
    NotifyStatus();
    Json finished = CycleSummaryToJson(result.summary);
    finished["trigger"] = result.trigger;
    finished["exit"] = result.exit_code;
    finished["duration_ms"] = result.duration.count();
    finished["state"] = state_;
    Publish("cycle-finished", std::move(finished));
    const Json reply = CycleJson(result);
    for (auto& waiter : waiters_) {
      waiter->ReplyDeferred(
          Json{{"ok", result.exit_code == 0}, {"schema", "tether.ctl/v1"}, {"cycle", reply}});
    }
    waiters_.clear();
    if (stopping_) return Finish();
    if (pending_) {
      const std::string trigger = *pending_;
      pending_.reset();
      return StartCycle(trigger);
    }
    // A drift repair did not ask the source: the poll it found scheduled stays as it was.
    if (result.trigger == "drift" && next_poll_) return;
    const auto delay = result.exit_code == 0 ? schedule_.AfterSuccess() : schedule_.AfterFailure();
    next_poll_ = SteadyClock::now() + delay;
    poll_timer_.expires_after(delay);
    poll_timer_.async_wait([this, generation = poll_generation_](boost::system::error_code code) {
      if (code || stopping_ || generation != poll_generation_) return;
      next_poll_.reset();
      if (!worker_.busy()) return StartCycle("poll");
      // A drift repair or a plan is running: the poll comes right after it. It repairs
      // drift too, so it takes the place of a drift cycle queued meanwhile.
      if (!pending_ || *pending_ == "drift") pending_ = "poll";
    });
  }

  void Count(const CycleResult& result) {
    ++cycles_by_trigger_[result.trigger];
    ++cycles_by_outcome_[result.summary.outcome];
    if (result.exit_code != 0) ++failures_;
    ++cycle_count_;
    cycle_seconds_ += static_cast<double>(result.duration.count()) / 1000.0;
    if (result.exit_code == 0) last_success_ = UnixSeconds(SystemClock::now());
  }

  // Applies, failures and rollbacks go into the history; cycles in sync do not.
  void Record(const CycleResult& result) {
    const std::string& outcome = result.summary.outcome;
    if (outcome == "in sync" || outcome == "dry run") return;
    // A refused head is refused again at every poll: recorded once per commit and reason,
    // so that it does not push the applies out of the bounded history.
    if (outcome == "refused") {
      const std::string refusal = result.summary.commit + "\n" + result.summary.error;
      if (refusal == last_refusal_recorded_) return;
      last_refusal_recorded_ = refusal;
    }
    HistoryEntry entry;
    entry.commit = result.summary.commit;
    entry.signer = result.summary.signer;
    entry.trigger = result.trigger;
    entry.outcome = outcome;
    entry.changes = result.summary.changes;
    entry.started = UnixSeconds(result.started);
    entry.duration_ms = result.duration.count();
    entry.output = result.out;
    entry.errors = result.err;
    if (auto recorded = AppendHistory(options_.cycle.state_dir, std::move(entry)); !recorded) {
      log_->error("history: {}", recorded.error().message());
    }
  }

  void LogOutput(const CycleResult& result) {
    auto log_lines = [&](const std::string& text, bool problem) {
      std::istringstream lines(text);
      std::string line;
      while (std::getline(lines, line)) {
        if (line.empty()) continue;
        if (problem) {
          log_->warn("{}", line);
        } else {
          log_->info("{}", line);
        }
      }
    };
    log_lines(result.out, false);
    log_lines(result.err, true);
  }

  void NotifyStatus() {
    std::string status = "STATUS=" + state_;
    if (!commit_.empty()) status += " at " + commit_.substr(0, 12);
    sd_notify(0, status.c_str());
  }

  static Json CycleJson(const CycleResult& result) {
    return Json{{"trigger", result.trigger},
                {"exit", result.exit_code},
                {"started", UnixSeconds(result.started)},
                {"duration_ms", result.duration.count()},
                {"outcome", result.summary.outcome},
                {"changes", result.summary.changes},
                {"summary", CycleSummaryToJson(result.summary)},
                {"output", result.out},
                {"errors", result.err}};
  }

  Json StatusReply() const {
    Json status = {{"ok", true},
                   {"schema", "tether.ctl/v1"},
                   {"version", TETHER_VERSION},
                   {"state", state_},
                   {"commit", commit_},
                   {"source", options_.cycle.config.source.url},
                   {"ref", options_.cycle.config.source.ref}};
    const std::string quarantined = QuarantinedCommit(options_.cycle.state_dir);
    status["quarantined"] = quarantined.empty() ? Json() : Json(quarantined);
    status["last_cycle"] = last_ ? CycleJson(*last_) : Json();
    // Why the state is what it is: the last cycle's error, or, when a drift repair kept
    // the state of the last cycle that asked the source, that cycle's.
    const std::string& why = state_kept_ ? source_summary_.error
                             : last_     ? last_->summary.error
                                         : source_summary_.error;
    status["state_error"] = why.empty() ? Json() : Json(why);
    status["endpoint"] = reports_ ? reports_->Status() : Json();
    status["suspended"] = suspended_ ? Json{{"reason", *suspended_}} : Json();
    status["pinned"] = pinned_ ? Json(*pinned_) : Json();
    if (next_poll_) {
      status["next_poll_ms"] = std::max<std::int64_t>(
          0, std::chrono::duration_cast<std::chrono::milliseconds>(*next_poll_ - SteadyClock::now())
                 .count());
    } else {
      status["next_poll_ms"] = Json();
    }
    return status;
  }

  DaemonOptions options_;
  asio::io_context io_;
  asio::signal_set signals_;
  asio::steady_timer poll_timer_;
  asio::steady_timer watchdog_timer_;
  asio::steady_timer drift_timer_;
  asio::steady_timer heartbeat_timer_;
  std::unique_ptr<DaemonReports> reports_;  // none without report.url
  std::unique_ptr<DriftWatcher> watcher_;
  std::optional<asio::posix::stream_descriptor> watch_fd_;
  std::unique_ptr<UnitWatcher> unit_watcher_;  // none under --root
  std::optional<asio::posix::stream_descriptor> unit_fd_;
  std::map<std::string, std::string> services_;  // watched unit -> resource id
  Local::acceptor acceptor_;
  Worker worker_;
  std::mt19937 random_;
  PollSchedule schedule_;
  std::shared_ptr<spdlog::logger> log_;
  std::optional<gid_t> read_gid_;
  std::chrono::microseconds watchdog_period_{0};
  bool stopping_ = false;
  std::string state_ = "starting";
  // The state and summary the last cycle that asked the source left (every one but a
  // drift repair), and whether state_ is still that state after a repair.
  std::string source_state_;
  CycleSummary source_summary_;
  bool state_kept_ = false;
  std::string commit_;
  std::optional<CycleResult> last_;
  std::optional<SteadyClock::time_point> next_poll_;
  std::uint64_t poll_generation_ = 0;  // a poll timer's handler is stale once it changed
  std::optional<std::string> pending_;
  std::optional<std::string> suspended_;  // its reason
  std::optional<std::string> pinned_;     // tetherctl rollback
  std::string state_before_plan_;
  std::map<std::string, std::uint64_t> cycles_by_trigger_;
  std::map<std::string, std::uint64_t> cycles_by_outcome_;
  std::uint64_t failures_ = 0;
  std::uint64_t cycle_count_ = 0;
  double cycle_seconds_ = 0;
  std::int64_t last_success_ = 0;
  std::vector<std::shared_ptr<Connection>> waiters_;       // `sync --wait`: the running cycle
  std::vector<std::shared_ptr<Connection>> next_waiters_;  // ... and the one pending_ starts
  std::vector<std::weak_ptr<Connection>> subscribers_;     // tetherctl events
  std::string last_refusal_recorded_;  // commit and reason of the last refusal in the history
};

// A client that sends no request for kRequestTimeout is disconnected.
void Connection::ArmDeadline() {
  auto self = shared_from_this();
  timer_.expires_after(kRequestTimeout);
  timer_.async_wait([self](boost::system::error_code code) {
    if (!code) {
      boost::system::error_code ignored;
      self->socket_.close(ignored);  // too slow: the read in progress ends with an error
    }
  });
}

void Connection::ReadRequest() {
  auto self = shared_from_this();
  if (!subscribed_ && deferred_ == 0) ArmDeadline();
  asio::async_read_until(
      socket_, input_, '\n', [self](boost::system::error_code code, std::size_t length) {
        self->timer_.cancel();
        if (code == asio::error::not_found) {
          return self->Reply(Daemon::Refusal("request too long (the limit is 64 KiB)"));
        }
        if (code) return;  // closed, or too slow
        std::string line(
            asio::buffers_begin(self->input_.data()),
            asio::buffers_begin(self->input_.data()) + static_cast<std::ptrdiff_t>(length));
        self->input_.consume(length);
        const Json request = Json::parse(line, nullptr, false);
        if (request.is_discarded()) {
          self->Reply(Daemon::Refusal("a request is one line of JSON"));
        } else {
          self->daemon_.Handle(self, request);
        }
        self->ReadRequest();
      });
}

void Connection::Reply(const Json& reply) {
  if (!socket_.is_open()) return;
  if (subscribed_ && outbox_.size() >= kMaxEventsQueued) {
    boost::system::error_code ignored;
    socket_.close(ignored);  // a subscriber that does not read: dropped
    outbox_.clear();
    return;
  }
  const bool idle = outbox_.empty();
  outbox_.push_back(reply.dump(-1, ' ', false, Json::error_handler_t::replace) + "\n");
  if (idle) WriteNext();
}

void Connection::WriteNext() {
  auto self = shared_from_this();
  asio::async_write(socket_, asio::buffer(outbox_.front()),
                    [self](boost::system::error_code code, std::size_t) {
                      if (code) return;
                      self->outbox_.pop_front();
                      if (!self->outbox_.empty()) self->WriteNext();
                    });
}

}  // namespace

int RunDaemon(DaemonOptions options) {
  Daemon daemon(std::move(options));
  return daemon.Run();
}

}  // namespace tether
