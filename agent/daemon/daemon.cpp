#include "agent/daemon/daemon.hpp"

#include <fcntl.h>
#include <malloc.h>
#include <sys/stat.h>
#include <systemd/sd-daemon.h>
#include <unistd.h>

#include <algorithm>
#include <boost/asio/io_context.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/steady_timer.hpp>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <optional>
#include <random>
#include <set>
#include <sstream>
#include <thread>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "agent/config/agent_config.hpp"
#include "agent/daemon/change_signal.hpp"
#include "agent/daemon/control_server.hpp"
#include "agent/daemon/daemon_reports.hpp"
#include "agent/daemon/daemon_state.hpp"
#include "agent/daemon/metrics.hpp"
#include "agent/daemon/poll_schedule.hpp"
#include "agent/daemon/watchers.hpp"
#include "agent/daemon/webhook.hpp"
#include "agent/daemon/worker.hpp"
#include "agent/protocol/protocol.hpp"
#include "agent/report/send_process.hpp"
#include "agent/state/state_store.hpp"
#include "agent/toml/diagnostics.hpp"
#include "common/filesystem.hpp"
#include "common/http_keepalive.hpp"
#include "common/http_server.hpp"
#include "common/log.hpp"
#include "version.hpp"

namespace tether {

namespace {

namespace asio = boost::asio;
using Json = nlohmann::json;
using SteadyClock = std::chrono::steady_clock;
using SystemClock = std::chrono::system_clock;

// A burst of edits (an editor's write, rename and chmod, microseconds apart) is one drift
// repair. Short: what comes after the settle, while the repair runs, is told from the
// repair's own writes by its stat, and repaired next.
constexpr auto kDriftSettle = std::chrono::milliseconds(10);

// Resources touched while a cycle runs, kept by id up to this many; past it, all are
// looked at.
constexpr std::size_t kMaxDriftIds = 4096;

std::int64_t UnixSeconds(SystemClock::time_point when) {
  return std::chrono::duration_cast<std::chrono::seconds>(when.time_since_epoch()).count();
}

// The commit the inventory names, or "" (none yet, or unreadable: the cycle says why).
std::string AppliedCommit(const StateStore& state) { return state.AppliedCommit().value_or(""); }

// Webhook-triggered polls start at most this often; triggers in between (a forge that
// sends one event per pushed branch, a script in a loop) are folded into one poll at the
// end of the spacing. Triggers during a cycle are folded into one more cycle anyway.
constexpr auto kWebhookSpacing = std::chrono::milliseconds(250);

// With source.poll_url, a poll asks the Git source anyway when none has for this long.
constexpr auto kSignalTrustedFor = std::chrono::hours(1);

// Sockets systemd passed (socket activation), by the name their unit gives them
// (FileDescriptorName=): "webhook" and "metrics" are the HTTP listeners; the first with
// any other name is the control socket.
struct PassedSockets {
  std::optional<int> control;
  std::optional<int> webhook;
  std::optional<int> metrics;
};

PassedSockets TakePassedSockets() {
  PassedSockets passed;
  char** names = nullptr;
  const int count = sd_listen_fds_with_names(1, &names);
  for (int i = 0; i < count; ++i) {
    const int fd = SD_LISTEN_FDS_START + i;
    (void)fcntl(fd, F_SETFD, FD_CLOEXEC);
    const std::string name = names != nullptr && names[i] != nullptr ? names[i] : "";
    if (name == "webhook") {
      passed.webhook = fd;
    } else if (name == "metrics") {
      passed.metrics = fd;
    } else if (!passed.control) {
      passed.control = fd;
    }
  }
  if (names != nullptr) {
    for (int i = 0; i < count; ++i) std::free(names[i]);
    std::free(static_cast<void*>(names));
  }
  return passed;
}

// The quarantined commit, or "" (none, or unreadable: the cycle says why).
std::string QuarantinedCommit(const StateStore& state) {
  auto quarantine = state.LoadQuarantine();
  return quarantine && *quarantine ? (*quarantine)->commit : "";
}

class Daemon final : public RequestHandler {
 public:
  explicit Daemon(DaemonOptions options)
      : options_(std::move(options)),
        signals_(io_, SIGTERM, SIGINT, SIGHUP),
        poll_timer_(io_),
        watchdog_timer_(io_),
        drift_timer_(io_),
        heartbeat_timer_(io_),
        webhook_timer_(io_),
        control_(io_, *this, options_.read_group),
        worker_(io_),
        random_(std::random_device{}()),
        schedule_(MakeSchedule()) {}

  int Run() {
    log_ = GetLogger("daemon");
    // The state dir holds the suspension, the pin and the report outbox from the start.
    auto state_dir = PrepareStateDir(options_.cycle.state_dir);
    if (!state_dir) {
      log_->error("state dir: {}", state_dir.error().message());
      return 1;
    }
    auto host = RootedFilesystem::Open("/");
    if (!host) {
      log_->error("state dir: {}", host.error().message());
      return 1;
    }
    host_ = std::move(*host);
    options_.cycle.state_dir = *state_dir;
    store_.emplace(*host_, *state_dir);
    passed_ = TakePassedSockets();
    if (pipe2(signal_cancel_, O_CLOEXEC) != 0) {
      log_->error("pipe: {}", std::strerror(errno));
      return 1;
    }
    signal_key_ = SignalKey();
    if (auto opened = control_.Open(options_.socket_path, passed_.control); !opened) {
      log_->error("control socket: {}", opened.error().message());
      return 1;
    }
    WaitForSignal();
    StartWatchdog();
    StartWatches();
    control_.Start();
    SyncListeners();
    commit_ = AppliedCommit(*store_);
    LoadSuspension();
    LoadPin();
    StartReports();
    sd_notify(0, "READY=1");
    log_->info("tetherd {} started; control socket {}", TETHER_VERSION, options_.socket_path);
    StartCycle(Trigger::kStart);
    io_.run();
    sd_notify(0, "STATUS=stopped");
    log_->info("stopped");
    return 0;
  }

  // A control request the peer may send (the control server checked its role).
  void Handle(const std::shared_ptr<Connection>& connection,
              const protocol::Request& request) override {
    using Handler = void (Daemon::*)(const std::shared_ptr<Connection>&, const protocol::Request&);
    static constexpr std::pair<protocol::Command, Handler> kHandlers[] = {
        {protocol::Command::kStatus, &Daemon::OnStatus},
        {protocol::Command::kSync, &Daemon::OnSync},
        {protocol::Command::kPlan, &Daemon::OnPlan},
        {protocol::Command::kHistory, &Daemon::OnHistory},
        {protocol::Command::kShow, &Daemon::OnShow},
        {protocol::Command::kEvents, &Daemon::OnEvents},
        {protocol::Command::kMetrics, &Daemon::OnMetrics},
        {protocol::Command::kRollback, &Daemon::OnRollback},
        {protocol::Command::kSuspend, &Daemon::OnSuspend},
        {protocol::Command::kResume, &Daemon::OnResume},
    };
    for (const auto& [command, handler] : kHandlers) {
      if (command == request.command) return (this->*handler)(connection, request);
    }
    connection->Reply(protocol::Refusal("this tetherd does not handle '" +
                                        std::string(protocol::InfoOf(request.command).name) + "'"));
  }

 private:
  using ConnectionPtr = std::shared_ptr<Connection>;

  void OnStatus(const ConnectionPtr& connection, const protocol::Request& request) {
    connection->Reply(StatusReply(request.detail));
  }

  void OnSync(const ConnectionPtr& connection, const protocol::Request& request) {
    if (stopping_) return connection->Reply(protocol::Refusal("tetherd is stopping"));
    // Answered by the cycle this request starts, never by one already running, which
    // may predate it (and the commit the caller just pushed).
    if (request.wait) {
      connection->Defer();
      next_waiters_.push_back(connection);
    }
    if (reports_) reports_->RetryNow();  // queued reports too, now
    CycleSoon();
    if (!request.wait) connection->Reply(Json{{"ok", true}, {"started", true}});
  }

  void OnPlan(const ConnectionPtr& connection, const protocol::Request&) {
    // A dry run now, its output the reply; it changes nothing, not even the status.
    if (stopping_) return connection->Reply(protocol::Refusal("tetherd is stopping"));
    if (worker_.busy()) {
      return connection->Reply(protocol::Refusal("a cycle is running; ask again when it is over"));
    }
    CycleOptions dry = options_.cycle;
    dry.dry_run = true;
    if (pinned_) dry.pin = *pinned_;  // what the next cycle would do
    state_before_plan_ = state_;
    state_ = DaemonState::kPlanning;
    connection->Defer();
    worker_.Start({options_.cycle_argv, options_.cycle_env}, options_.config_files, std::move(dry),
                  Trigger::kPlan, [this, connection](const CycleResult& result) {
                    state_ = state_before_plan_;
                    connection->ReplyDeferred(Json{{"ok", result.exit_code == 0},
                                                   {"schema", protocol::kSchema},
                                                   {"cycle", CycleJson(result)}});
                    if (stopping_) return Finish();
                    // A plan writes nothing: what was touched meanwhile was a person's.
                    DriftEvents touched;
                    for (auto& watch : watches_)
                      Add(touched, std::exchange(watch.during_cycle, {}));
                    if (!touched.ids.empty() || touched.overflow) {
                      PublishDrift(touched);
                      Add(to_repair_, std::move(touched));
                      if (!pending_) pending_ = Trigger::kDrift;
                    }
                    StartPending();
                  });
  }

  void OnHistory(const ConnectionPtr& connection, const protocol::Request&) {
    auto entries = store_->LoadHistory();
    if (!entries) return connection->Reply(protocol::Refusal(entries.error().message()));
    Json list = Json::array();
    for (const auto& entry : *entries) list.push_back(HistoryJson(entry, false));
    connection->Reply(Json{{"ok", true}, {"schema", protocol::kSchema}, {"entries", list}});
  }

  void OnShow(const ConnectionPtr& connection, const protocol::Request& request) {
    auto entries = store_->LoadHistory();
    if (!entries) return connection->Reply(protocol::Refusal(entries.error().message()));
    for (const auto& entry : *entries) {
      if (entry.id == request.id) {
        return connection->Reply(
            Json{{"ok", true}, {"schema", protocol::kSchema}, {"entry", HistoryJson(entry, true)}});
      }
    }
    connection->Reply(
        protocol::Refusal("no apply " + std::to_string(request.id) + " in the history"));
  }

  void OnEvents(const ConnectionPtr& connection, const protocol::Request&) {
    connection->Subscribe();
    subscribers_.push_back(connection);
    connection->Reply(Json{{"ok", true}, {"schema", protocol::kSchema}, {"subscribed", true}});
  }

  void OnMetrics(const ConnectionPtr& connection, const protocol::Request&) {
    connection->Reply(Json{{"ok", true}, {"schema", protocol::kSchema}, {"text", MetricsText()}});
  }

  std::string MetricsText() const {
    std::vector<std::pair<std::string, HttpServerCounts>> listeners;
    if (webhook_server_) listeners.emplace_back("webhook", webhook_server_->counts());
    if (metrics_server_) listeners.emplace_back("metrics", metrics_server_->counts());
    return metrics_.Text(suspended_.has_value(), listeners);
  }

  // The HTTP listeners as the config says (webhook.listen and metrics.listen, or the
  // sockets systemd passed): at start, and again on reload. One that cannot listen is
  // logged, and the daemon goes on without it: polls, drift repair and the control socket
  // do not depend on it.
  void SyncListeners() {
    const AgentConfig& config = options_.cycle.config;
    if (config.webhook.listen || passed_.webhook) LoadWebhookSecret();
    SyncListener("webhook", config.webhook.listen, passed_.webhook, webhook_listen_,
                 webhook_server_,
                 [this](const HttpServerRequest& request) { return OnWebhook(request); });
    SyncListener("metrics", config.metrics.listen, passed_.metrics, metrics_listen_,
                 metrics_server_,
                 [this](const HttpServerRequest& request) { return OnMetricsRequest(request); });
  }

  // Keeps `server` when it listens where it should (a socket systemd passed stays as it
  // is); otherwise closes it and listens on `listen` or `passed`, if any.
  void SyncListener(const char* name, const std::optional<std::string>& listen,
                    std::optional<int> passed, std::optional<std::string>& listening,
                    std::unique_ptr<HttpServer>& server, HttpServer::Handler handler) {
    if (server && (passed || listen == listening)) return;
    if (server) server->Close();
    server.reset();
    listening = listen;
    if (!listen && !passed) return;
    server = std::make_unique<HttpServer>(io_, HttpServerLimits{}, std::move(handler));
    const Status opened = passed ? server->Adopt(*passed) : server->Listen(*listen);
    if (!opened) {
      log_->error("{} listener: {}; not listening", name, opened.error().message());
      server.reset();
      return;
    }
    server->Start();
    log_->info("{} listener on {}", name,
               passed ? "the socket systemd passed"
                      : *listen + " (port " + std::to_string(server->port()) + ")");
  }

  // webhook.secret_file, its trailing newline dropped. Without a secret every webhook is
  // refused.
  void LoadWebhookSecret() {
    webhook_secret_.clear();
    const auto& file = options_.cycle.config.webhook.secret_file;
    if (!file) {
      log_->error("webhook: webhook.secret_file is not set; every webhook is refused");
      return;
    }
    auto secret = ReadSecretFile(*file);
    if (!secret || secret->empty()) {
      log_->error("webhook: {}; every webhook is refused",
                  secret ? *file + " is empty" : secret.error().message());
      return;
    }
    webhook_secret_ = std::move(*secret);
  }

  HttpServerReply OnWebhook(const HttpServerRequest& request) {
    WebhookCheck check;
    if (webhook_secret_.empty()) {
      check.reason = "no webhook secret is configured";
    } else {
      check = CheckWebhook(request, webhook_secret_, options_.cycle.config.source.ref);
    }
    metrics_.CountWebhook(WebhookVerdictName(check.verdict));
    if (check.verdict == WebhookVerdict::kUnauthorized) {
      // Once a minute at most: a scanner must not fill the journal.
      const auto now = SteadyClock::now();
      ++webhooks_refused_;
      if (!last_refusal_logged_ || now - *last_refusal_logged_ > std::chrono::minutes(1)) {
        log_->warn("webhook from {} refused: {} ({} refused since the last such message)",
                   request.peer, check.reason, webhooks_refused_);
        webhooks_refused_ = 0;
        last_refusal_logged_ = now;
      }
    } else if (check.verdict == WebhookVerdict::kTrigger) {
      log_->info("webhook ({}) from {}: polling", check.forge, request.peer);
      Publish("webhook", {{"forge", check.forge}});
      WebhookTrigger();
    }
    HttpServerReply reply;
    reply.status = WebhookStatus(check.verdict);
    reply.body = check.reason + "\n";
    if (check.verdict == WebhookVerdict::kBadMethod) reply.headers = {{"Allow", "POST"}};
    return reply;
  }

  // A webhook wakes the poll: now, or at the end of the spacing, or after the cycle in
  // progress. Many triggers make one more cycle.
  void WebhookTrigger() {
    if (stopping_ || webhook_waiting_) return;
    const auto now = SteadyClock::now();
    if (last_webhook_poll_ && now - *last_webhook_poll_ < kWebhookSpacing) {
      webhook_waiting_ = true;
      webhook_timer_.expires_at(*last_webhook_poll_ + kWebhookSpacing);
      webhook_timer_.async_wait([this](boost::system::error_code code) {
        webhook_waiting_ = false;
        if (code || stopping_) return;
        WebhookPoll();
      });
      return;
    }
    WebhookPoll();
  }

  void WebhookPoll() {
    last_webhook_poll_ = SteadyClock::now();
    if (!worker_.busy()) return StartCycle(Trigger::kWebhook);
    // It asks the source, so it takes the place of a drift cycle queued meanwhile (which
    // it repairs too); a poll or manual cycle queued already asks the source.
    if (!pending_ || *pending_ == Trigger::kDrift) pending_ = Trigger::kWebhook;
  }

  HttpServerReply OnMetricsRequest(const HttpServerRequest& request) {
    HttpServerReply reply;
    if (request.method != "GET") {
      reply.status = 405;
      reply.body = "only GET is accepted\n";
      reply.headers = {{"Allow", "GET"}};
      return reply;
    }
    const std::string path = request.target.substr(0, request.target.find('?'));
    if (path != "/metrics") {
      reply.status = 404;
      reply.body = "not found: the metrics are at /metrics\n";
      return reply;
    }
    reply.content_type = "text/plain; version=0.0.4; charset=utf-8";
    reply.body = MetricsText();
    return reply;
  }

  void OnRollback(const ConnectionPtr& connection, const protocol::Request& request) {
    // From the local history: an applied commit, named by a prefix of its id.
    auto entries = store_->LoadHistory();
    if (!entries) return connection->Reply(protocol::Refusal(entries.error().message()));
    std::string found;
    for (const auto& entry : *entries) {
      if (entry.outcome == OutcomeName(Outcome::kApplied) && request.commit.size() >= 4 &&
          entry.commit.rfind(request.commit, 0) == 0) {
        found = entry.commit;
      }
    }
    if (found.empty()) {
      return connection->Reply(protocol::Refusal("no applied commit '" + request.commit +
                                                 "' in the local history (tetherctl history)"));
    }
    pinned_ = found;
    SavePin();
    log_->info("rollback to {}: pinned until resumed", found);
    Publish("pinned", {{"commit", found}});
    if (!stopping_) CycleSoon();
    connection->Reply(StatusReply());
  }

  void OnSuspend(const ConnectionPtr& connection, const protocol::Request& request) {
    suspended_ = request.reason;
    log_->info("suspended{}{}: cycles only plan until resumed", suspended_->empty() ? "" : ": ",
               *suspended_);
    Publish("suspended", {{"reason", *suspended_}});
    const bool saved = SaveSuspension();
    NotifyStatus();
    if (!saved) {
      connection->Reply(protocol::Refusal(
          "suspended, but the suspension could not be saved in the state dir (see the log): "
          "a restart of tetherd would end it"));
      return;
    }
    connection->Reply(StatusReply());
  }

  void OnResume(const ConnectionPtr& connection, const protocol::Request&) {
    suspended_.reset();
    pinned_.reset();
    SavePin();
    log_->info("resumed");
    Publish("resumed", Json::object());
    // The cycle in progress may still be pinned: one more after it.
    if (!stopping_) CycleSoon();
    SaveSuspension();
    NotifyStatus();
    connection->Reply(StatusReply());
  }

  // A manual cycle now, or right after the one in progress (which may predate the request).
  void CycleSoon() {
    if (worker_.busy()) {
      pending_ = Trigger::kManual;
    } else {
      StartCycle(Trigger::kManual);
    }
  }

  // Starts the cycle queued while another ran, if any.
  void StartPending() {
    if (!pending_) return;
    const Trigger trigger = *pending_;
    pending_.reset();
    StartCycle(trigger);
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
      json["report"] = entry.report;
    }
    return json;
  }

  // Suspension survives a restart (its reason is kept in the state dir). One that cannot
  // be read back keeps the host suspended: an operator stopped changes for a reason this
  // daemon cannot know, and `tetherctl resume` ends it.
  void LoadSuspension() {
    auto suspended = store_->LoadSuspension();
    if (!suspended) {
      suspended_ = "the suspension could not be read back (" + suspended.error().message() +
                   "); still suspended until tetherctl resume";
      log_->error("suspension: {}; staying suspended until tetherctl resume",
                  suspended.error().message());
    } else {
      suspended_ = std::move(*suspended);
    }
  }

  // A rollback's pin survives a restart too.
  void LoadPin() {
    auto pinned = store_->LoadPin();
    if (!pinned) {
      log_->warn("rollback pin: {}; not pinned", pinned.error().message());
    } else {
      pinned_ = std::move(*pinned);
    }
  }

  void SavePin() {
    if (auto saved = store_->SavePin(pinned_); !saved && pinned_) {
      log_->error("rollback: {}", saved.error().message());
    }
  }

  // False (logged) when it could not be saved.
  bool SaveSuspension() {
    auto saved = store_->SaveSuspension(suspended_);
    if (saved) return true;
    if (suspended_) {
      log_->error("suspend: {}; suspended until tetherd restarts", saved.error().message());
    } else {
      log_->error("resume: {}; a restart would be suspended again", saved.error().message());
    }
    return false;
  }

  PollSchedule MakeSchedule() {
    return PollSchedule(options_.cycle.config.source.interval, options_.cycle.config.source.jitter,
                        [this] { return std::uniform_real_distribution<double>(0, 1)(random_); });
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
      if (SignalKey() != signal_key_) {  // what the signal's answers were about changed
        signal_.Reset();
        signal_key_ = SignalKey();
      }
      SyncListeners();
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
    control_.StopAccepting();
    if (webhook_server_) webhook_server_->Close();
    if (metrics_server_) metrics_server_->Close();
    webhook_timer_.cancel();
    poll_timer_.cancel();
    if (!worker_.busy()) Finish();
  }

  void Finish() {
    signal_http_.Close();
    // A change-signal check in flight is given up now (its child killed).
    if (signal_thread_.joinable()) {
      const char stop = 1;
      (void)!write(signal_cancel_[1], &stop, 1);
      signal_thread_.join();
    }
    signals_.cancel();
    heartbeat_timer_.cancel();
    // Queued reports stay in the outbox for the next start; an attempt in progress ends
    // within its deadline.
    if (reports_) reports_->Stop();
    watchdog_timer_.cancel();
    drift_timer_.cancel();
    for (auto& watch : watches_) watch.fd.close();
    poll_timer_.cancel();
    for (auto& waiter : waiters_) waiter->ReplyDeferred(protocol::Refusal("tetherd stopped"));
    for (auto& waiter : next_waiters_) waiter->ReplyDeferred(protocol::Refusal("tetherd stopped"));
    waiters_.clear();
    next_waiters_.clear();
    control_.Close();
    io_.stop();
  }

  // Reports, when report.url is set: the outbox is delivered from the start (what a
  // previous run left), and a heartbeat goes out every report.heartbeat.
  void StartReports() {
    const AgentConfig& config = options_.cycle.config;
    if (!config.report.url) return;
    ProcessSender sender = StartProcessSender(options_.http_argv, options_.cycle_env);
    auto started = DaemonReports::Start(config, store_->OutboxDir(), options_.cycle.root,
                                        std::move(sender.send), std::move(sender.release));
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

  // Drift: inotify on every managed path, and systemd's signals for every managed service
  // (a stop, a crash, a start, an enable or disable by hand; on the whole host only: under
  // --root services are not managed). An event starts a cycle after a short settle, which
  // reverts or reports what changed.
  void StartWatches() {
    // `what`: "drift watch: ...; drift is found by ...", as the log has always said.
    auto add = [&](Result<std::unique_ptr<ChangeWatch>> opened, const char* what,
                   const char* drift) {
      if (!opened) {
        log_->warn("{}: {}; {} is found by the polls and audits only", what,
                   opened.error().message(), drift);
        return;
      }
      const int fd = dup((*opened)->fd());
      watches_.push_back({std::move(*opened), asio::posix::stream_descriptor(io_, fd)});
    };
    add(OpenPathWatch(options_.cycle.root), "drift watch", "drift");
    if (options_.cycle.root == "/") add(OpenServiceWatch(), "service watch", "service drift");
    (void)Rewatch();
    for (std::size_t i = 0; i < watches_.size(); ++i) WaitForChanges(i);
  }

  // Watches what the inventory now names, and returns what drifted while the cycle ran:
  // what each watch saw touched (`during_cycle`, and the events still waiting) that is
  // not as the cycle left it (see ChangeWatch::Rewatch). The cycle's own writes start no
  // cycle.
  DriftEvents Rewatch(const std::vector<RecordedEntry>* recorded = nullptr) {
    DriftEvents drifted;
    for (auto& watch : watches_) {
      auto rewatched =
          watch.watch->Rewatch(*store_, std::exchange(watch.during_cycle, {}), recorded);
      if (rewatched.error) log_->warn("{}: {}", watch.watch->name(), rewatched.error->message());
      Add(drifted, std::move(rewatched.drifted));
    }
    return drifted;
  }

  void WaitForChanges(std::size_t index) {
    watches_[index].fd.async_wait(asio::posix::stream_descriptor::wait_read,
                                  [this, index](boost::system::error_code code) {
                                    if (code || stopping_) return;
                                    ChangeWatch& watch = *watches_[index].watch;
                                    auto events = watch.Read();
                                    if (!events) {
                                      log_->warn("{}: {}", watch.name(), events.error().message());
                                    } else if (!events->ids.empty() || events->overflow) {
                                      OnDrift(index, std::move(*events));
                                    }
                                    WaitForChanges(index);
                                  });
  }

  void OnDrift(std::size_t index, DriftEvents events) {
    if (worker_.busy()) {
      // The cycle's own writes, or a hand edit made while it runs: told apart by the watch
      // that saw them once the cycle is over (Rewatch). A drift repair writes only what it
      // repairs: a path of another resource was touched by someone else, and the repair
      // that follows this one gets its process ready now.
      if (repairing_ && !ready_cycle_ && !events.overflow &&
          std::any_of(events.ids.begin(), events.ids.end(),
                      [&](const std::string& id) { return repairing_->count(id) == 0; })) {
        auto started = StartCycleProcess(options_.cycle_argv, options_.cycle_env);
        if (started) ready_cycle_ = std::move(*started);
      }
      Add(watches_[index].during_cycle, std::move(events));
      return;
    }
    PublishDrift(events);
    Add(to_repair_, std::move(events));
    // The repair's process starts now, and gets ready while more events settle.
    if (!ready_cycle_) {
      auto started = StartCycleProcess(options_.cycle_argv, options_.cycle_env);
      if (started) ready_cycle_ = std::move(*started);
    }
    drift_timer_.expires_after(kDriftSettle);
    drift_timer_.async_wait([this](boost::system::error_code late) {
      if (late || stopping_) return;
      if (!worker_.busy()) return StartCycle(Trigger::kDrift);
      if (!pending_) pending_ = Trigger::kDrift;  // a plan started meanwhile: it repairs nothing
    });
  }

  // Adds `more` to `events`; a flood is kept as "look at everything".
  static void Add(DriftEvents& events, DriftEvents more) {
    Merge(events, std::move(more));
    if (events.ids.size() > kMaxDriftIds) {
      events = {};
      events.overflow = true;
    }
  }

  void PublishDrift(const DriftEvents& events) {
    Json ids = Json::array();
    for (const auto& id : events.ids) ids.push_back(id);
    Publish("drift-detected", {{"resources", std::move(ids)}, {"overflow", events.overflow}});
  }

  void StartCycle(Trigger trigger) {
    ++cycles_started_;
    for (auto& waiter : next_waiters_) waiters_.push_back(std::move(waiter));
    next_waiters_.clear();
    state_ = DaemonState::kApplying;
    NotifyStatus();
    Publish("cycle-started", {{"trigger", TriggerName(trigger)}});
    if (trigger != Trigger::kDrift) {  // it asks the source: the next poll is an interval after it
      poll_timer_.cancel();
      ++poll_generation_;  // even a poll whose timer has fired, its handler not yet run
      next_poll_.reset();
    }
    CycleOptions cycle = options_.cycle;
    if (suspended_) cycle.dry_run = true;  // polling goes on; nothing is applied
    if (pinned_) cycle.pin = *pinned_;
    // Drift is repaired from the applied commit, at once, whatever the source is doing;
    // just what was touched, when that is known. Any other cycle plans everything.
    cycle.enforce_applied = trigger == Trigger::kDrift;
    repairing_.reset();
    // Whatever the cycle, what was written in place is read (a poll takes the place of a
    // drift repair queued meanwhile); a flood of them is lost, as lost events are.
    written_in_place_.insert(to_repair_.in_place.begin(), to_repair_.in_place.end());
    if (written_in_place_.size() > kMaxDriftIds) written_in_place_.clear();
    cycle.written_in_place.assign(written_in_place_.begin(), written_in_place_.end());
    in_place_sent_ = written_in_place_;
    if (trigger == Trigger::kDrift && !to_repair_.overflow) {
      repairing_ = to_repair_.ids;
      repairing_->insert(written_in_place_.begin(), written_in_place_.end());
      cycle.drifted.assign(repairing_->begin(), repairing_->end());
    }
    to_repair_ = {};
    std::optional<StartedCycle> started = std::move(ready_cycle_);
    ready_cycle_.reset();
    worker_.Start(
        {options_.cycle_argv, options_.cycle_env}, options_.config_files, std::move(cycle), trigger,
        [this](const CycleResult& result) { Done(result); }, std::move(started));
  }

  void Done(const CycleResult& result) {
    // What was written in place is as the cycle recorded it when it planned and committed
    // (the drift it reported excepted, which stays as the person left it).
    const Outcome outcome = result.summary.outcome;
    if (result.exit_code == 0 && (outcome == Outcome::kApplied || outcome == Outcome::kInSync)) {
      for (const auto& id : in_place_sent_) written_in_place_.erase(id);
      for (const auto& action : result.report.drifted) {
        if (in_place_sent_.count(action.id) != 0) written_in_place_.insert(action.id);
      }
    }
    in_place_sent_.clear();
    last_ = result;
    last_->report.recorded.reset();  // for the watches only: not kept while idle
    // A cycle that asked the source confirms (or drops) what the change signal said.
    // Only a cycle that fetched the ref's head counts: not one that could not reach the
    // source (it enforced the applied commit, and exits 0), nor a pinned one.
    if (result.trigger != Trigger::kDrift) {
      const bool fetched_head = result.exit_code == 0 && !result.summary.offline && !pinned_ &&
                                !options_.cycle.config.source.pin;
      signal_.CycleEnded(cycles_started_, fetched_head);
      if (fetched_head) last_source_ok_ = SteadyClock::now();
    }
    commit_ = AppliedCommit(*store_);
    // Paths or services a person touched while the cycle ran: repaired by a drift cycle.
    // After a repair that read the inventory in part, what it read is all that changed.
    const auto& recorded = result.report.recorded;
    if (DriftEvents drifted =
            Rewatch(result.trigger == Trigger::kDrift && recorded ? &*recorded : nullptr);
        !drifted.ids.empty() || drifted.overflow) {
      PublishDrift(drifted);
      Add(to_repair_, std::move(drifted));
      if (!pending_ && !stopping_) pending_ = Trigger::kDrift;
    }
    UpdateState(result);
    LogOutput(result);
    metrics_.CountCycle(result.trigger, result.summary.outcome, result.exit_code == 0,
                        result.duration, UnixSeconds(SystemClock::now()));
    NotifyStatus();
    Announce(result);
    repairing_.reset();
    // A cycle waiting (a drift repair, most often) starts before this one is written to
    // the history and the report outbox, which takes a while with a long history: its
    // process works meanwhile. Both are written before any request is served.
    const bool next = pending_ && !stopping_;
    if (next) StartPending();
    Record(result);
    if (reports_) {
      reports_->CycleDone({result.trigger, result.summary, UnixSeconds(result.started) * 1000,
                           result.duration.count()});
    }
    if (stopping_) return Finish();
    if (next) return;
    // Idle from here: a process made ready for a repair that did not come is stopped, and
    // what reading the inventory for the watches took goes back to the system, not only
    // to malloc, so the waiting daemon stays small.
    ready_cycle_.reset();
    malloc_trim(0);
    // A drift repair did not ask the source: the poll it found scheduled stays as it was.
    if (result.trigger == Trigger::kDrift && next_poll_) return;
    SchedulePoll(result.exit_code == 0 ? schedule_.AfterSuccess() : schedule_.AfterFailure());
  }

  // The state the cycle left; a drift repair keeps what the last cycle that asked the
  // source said (StateAfterDriftRepair).
  void UpdateState(const CycleResult& result) {
    const DaemonState after =
        StateAfterCycle(result.summary, result.exit_code, suspended_.has_value());
    if (result.trigger != Trigger::kDrift) {
      state_ = after;
      source_state_ = after;
      source_summary_ = result.summary;
      state_kept_ = false;
    } else {
      state_ = StateAfterDriftRepair(source_state_, after);
      state_kept_ = state_ != after;
    }
  }

  // Tells the subscribers and the `sync --wait` callers how the cycle ended.
  void Announce(const CycleResult& result) {
    Json finished = CycleSummaryToJson(result.summary);
    finished["trigger"] = TriggerName(result.trigger);
    finished["exit"] = result.exit_code;
    finished["duration_ms"] = result.duration.count();
    finished["state"] = StateName(state_);
    Publish("cycle-finished", std::move(finished));
    const Json reply = CycleJson(result);
    for (auto& waiter : waiters_) {
      waiter->ReplyDeferred(
          Json{{"ok", result.exit_code == 0}, {"schema", protocol::kSchema}, {"cycle", reply}});
    }
    waiters_.clear();
  }

  void SchedulePoll(std::chrono::milliseconds delay) {
    next_poll_ = SteadyClock::now() + delay;
    poll_timer_.expires_after(delay);
    poll_timer_.async_wait([this, generation = poll_generation_](boost::system::error_code code) {
      if (code || stopping_ || generation != poll_generation_) return;
      next_poll_.reset();
      // The signal is trusted for a while only: an answer that did not change when the
      // repo did (a server whose ETag is mtime and size, two pushes in one second) is
      // caught by a Git poll at least every kSignalTrustedFor.
      if (options_.cycle.config.source.poll_url && last_source_ok_ &&
          SteadyClock::now() - *last_source_ok_ < kSignalTrustedFor) {
        // A check still in flight (a slow server) answers for this poll too.
        if (!signal_in_flight_) CheckChangeSignal();
        return;
      }
      QueuePoll();
    });
  }

  // What the change signal's answers are about: its URL, the repo and the ref.
  std::string SignalKey() const {
    const SourceConfig& source = options_.cycle.config.source;
    return source.poll_url.value_or("") + "\n" + source.url + "\n" + source.ref;
  }

  // A poll now, or right after the cycle in progress (a drift repair or a plan). It
  // repairs drift too, so it takes the place of a drift cycle queued meanwhile.
  void QueuePoll() {
    if (!worker_.busy()) return StartCycle(Trigger::kPoll);
    if (!pending_ || *pending_ == Trigger::kDrift) pending_ = Trigger::kPoll;
  }

  // source.poll_url before the Git source. Over http://, on the loop, on a connection
  // kept open between checks; over https://, in the HTTP child (no OpenSSL in the
  // daemon), waited for on a thread of its own, the answer coming back to the loop.
  void CheckChangeSignal() {
    signal_in_flight_ = true;
    if (signal_thread_.joinable()) signal_thread_.join();  // its answer was handled
    const SourceConfig& source = options_.cycle.config.source;
    if (source.poll_url->rfind("http://", 0) == 0) {
      signal_http_.Fetch(signal_.Request(source, ""),
                         [this](Result<HttpResponse> response) { OnChangeSignal(response); });
      return;
    }
    // An unreadable token file: the check goes without (and fails if the server wants
    // one, which falls back to the Git poll, where the error is said).
    std::string token;
    if (source.token_file) token = ReadSecretFile(*source.token_file).value_or("");
    HttpRequest request = signal_.Request(source, token);
    request.cancel_fd = signal_cancel_[0];
    signal_thread_ =
        std::thread([this, request = std::move(request),
                     send = MakeProcessSender(options_.http_argv, options_.cycle_env)]() mutable {
          auto response = send(request);
          asio::post(io_, [this, response = std::move(response)] { OnChangeSignal(response); });
        });
  }

  void OnChangeSignal(const Result<HttpResponse>& response) {
    signal_in_flight_ = false;
    if (stopping_) return;
    const SignalAnswer answer = signal_.Read(response, cycles_started_);
    metrics_.CountChangeSignal(SignalAnswerName(answer));
    if (answer == SignalAnswer::kUnchanged) {
      signal_failing_ = false;
      // Nothing changed, and nothing more is done: the next check an interval later.
      if (!next_poll_) SchedulePoll(schedule_.AfterSuccess());
      return;
    }
    if (answer == SignalAnswer::kError && !signal_failing_) {
      signal_failing_ = true;  // said once, until the signal answers again
      log_->warn("source.poll_url: {}; polling the Git source",
                 response ? "HTTP status " + std::to_string(response->status)
                          : response.error().message());
    } else if (answer == SignalAnswer::kChanged) {
      signal_failing_ = false;
    }
    if (!next_poll_) QueuePoll();
  }

  // Applies, failures and rollbacks go into the history; cycles in sync do not.
  void Record(const CycleResult& result) {
    const Outcome outcome = result.summary.outcome;
    if (outcome == Outcome::kInSync || outcome == Outcome::kDryRun) return;
    // A refused head is refused again at every poll: recorded once per commit and reason,
    // so that it does not push the applies out of the bounded history.
    if (outcome == Outcome::kRefused) {
      const std::string refusal = result.summary.commit + "\n" + result.summary.error;
      if (refusal == last_refusal_recorded_) return;
      last_refusal_recorded_ = refusal;
    }
    HistoryEntry entry;
    entry.commit = result.summary.commit;
    entry.signer = result.summary.signer;
    entry.trigger = TriggerName(result.trigger);
    entry.outcome = OutcomeName(outcome);
    entry.changes = result.summary.changes;
    entry.started = UnixSeconds(result.started);
    entry.duration_ms = result.duration.count();
    entry.output = FormatCourse(result.report);
    entry.errors = FormatProblems(result.report);
    CycleReport kept = result.report;
    TrimReport(kept, kHistoryOutput);
    entry.report = CycleReportToJson(kept);
    if (auto recorded = store_->AppendHistory(std::move(entry)); !recorded) {
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
    log_lines(FormatCourse(result.report), false);
    log_lines(FormatProblems(result.report), true);
  }

  void NotifyStatus() {
    std::string status = "STATUS=" + std::string(StateName(state_));
    if (!commit_.empty()) status += " at " + commit_.substr(0, 12);
    sd_notify(0, status.c_str());
  }

  // A cycle as replies carry it; without `detail`, its summary only (a status reply stays
  // a few KiB, whatever the cycle printed).
  static Json CycleJson(const CycleResult& result, bool detail = true) {
    Json json{
        {"trigger", TriggerName(result.trigger)},         {"exit", result.exit_code},
        {"started", UnixSeconds(result.started)},         {"duration_ms", result.duration.count()},
        {"outcome", OutcomeName(result.summary.outcome)}, {"changes", result.summary.changes},
        {"summary", CycleSummaryToJson(result.summary)}};
    if (detail) {
      json["output"] = FormatCourse(result.report);
      json["errors"] = FormatProblems(result.report);
      json["report"] = CycleReportToJson(result.report);
    }
    return json;
  }

  Json StatusReply(bool detail = false) const {
    Json status = {{"ok", true},
                   {"schema", protocol::kSchema},
                   {"version", TETHER_VERSION},
                   {"state", StateName(state_)},
                   {"commit", commit_},
                   {"source", options_.cycle.config.source.url},
                   {"ref", options_.cycle.config.source.ref}};
    const std::string quarantined = QuarantinedCommit(*store_);
    status["quarantined"] = quarantined.empty() ? Json() : Json(quarantined);
    status["last_cycle"] = last_ ? CycleJson(*last_, detail) : Json();
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

  // A watch, its descriptor on the loop, and what it saw touched while a cycle runs.
  struct Watch {
    std::unique_ptr<ChangeWatch> watch;
    asio::posix::stream_descriptor fd;
    DriftEvents during_cycle = {};
  };

  DaemonOptions options_;
  std::unique_ptr<Filesystem> host_;  // the host's filesystem, for the state dir
  std::optional<StateStore> store_;   // set by Run() before anything else
  asio::io_context io_;
  asio::signal_set signals_;
  asio::steady_timer poll_timer_;
  asio::steady_timer watchdog_timer_;
  asio::steady_timer drift_timer_;
  asio::steady_timer heartbeat_timer_;
  asio::steady_timer webhook_timer_;        // a webhook poll held back by kWebhookSpacing
  std::unique_ptr<DaemonReports> reports_;  // none without report.url
  std::vector<Watch> watches_;              // managed paths; services on the whole host
  ControlServer control_;
  Worker worker_;
  // The next cycle's process, started at the first drift event while the events settle.
  std::optional<StartedCycle> ready_cycle_;
  // What the drift repair under way repairs (all of it when unset, or no repair).
  std::optional<std::set<std::string>> repairing_;
  // Files seen written in place (DriftEvents::in_place) that no cycle has planned and
  // committed since: every cycle reads them whatever their fingerprint says (it may be the
  // stat of that edit), until one applies or finds them in sync, which records what they
  // are now. A dry run, a refused commit, a rollback or a failure keeps them.
  std::set<std::string> written_in_place_;
  std::set<std::string> in_place_sent_;  // those the cycle under way was given
  std::mt19937 random_;
  PollSchedule schedule_;
  DaemonMetrics metrics_;
  std::shared_ptr<spdlog::logger> log_;
  std::chrono::microseconds watchdog_period_{0};
  bool stopping_ = false;
  DaemonState state_ = DaemonState::kStarting;
  // The state and summary the last cycle that asked the source left (every one but a
  // drift repair), and whether state_ is still that state after a repair.
  std::optional<DaemonState> source_state_;
  CycleSummary source_summary_;
  bool state_kept_ = false;
  std::string commit_;
  std::optional<CycleResult> last_;
  std::optional<SteadyClock::time_point> next_poll_;
  std::uint64_t poll_generation_ = 0;     // a poll timer's handler is stale once it changed
  DriftEvents to_repair_;                 // drifted: what the next drift cycle plans
  std::optional<Trigger> pending_;        // a cycle to start once the one in progress is over
  std::optional<std::string> suspended_;  // its reason
  std::optional<std::string> pinned_;     // tetherctl rollback
  DaemonState state_before_plan_ = DaemonState::kStarting;
  std::vector<ConnectionPtr> waiters_;                  // `sync --wait`: the running cycle
  std::vector<ConnectionPtr> next_waiters_;             // ... and the one pending_ starts
  std::vector<std::weak_ptr<Connection>> subscribers_;  // tetherctl events
  std::string last_refusal_recorded_;  // commit and reason of the last refusal in the history
  PassedSockets passed_;               // by systemd
  std::unique_ptr<HttpServer> webhook_server_;  // none without webhook.listen
  std::unique_ptr<HttpServer> metrics_server_;  // none without metrics.listen
  ChangeSignal signal_;                         // source.poll_url
  HttpKeepAlive signal_http_{io_};              // its checks over http://
  std::string signal_key_;                      // SignalKey() of the answers signal_ has seen
  std::thread signal_thread_;                   // a check in flight (or its finished thread)
  int signal_cancel_[2] = {-1, -1};             // written at stop: the check's child is killed
  bool signal_failing_ = false;                 // the last check failed and said so
  bool signal_in_flight_ = false;               // a check has not answered yet
  std::uint64_t cycles_started_ = 0;
  // When a cycle that asked the source last succeeded.
  std::optional<SteadyClock::time_point> last_source_ok_;
  std::optional<std::string> webhook_listen_;  // what the servers listen on
  std::optional<std::string> metrics_listen_;
  std::string webhook_secret_;  // never logged
  std::optional<SteadyClock::time_point> last_webhook_poll_;
  bool webhook_waiting_ = false;  // webhook_timer_ is armed
  std::uint64_t webhooks_refused_ = 0;
  std::optional<SteadyClock::time_point> last_refusal_logged_;
};

}  // namespace

int RunDaemon(DaemonOptions options) {
  Daemon daemon(std::move(options));
  return daemon.Run();
}

}  // namespace tether
