// tetherctl: query and drive tetherd; validate a fleet repo offline.
#include <chrono>
#include <cstdio>
#include <ctime>
#include <optional>
#include <string>

#include <CLI/CLI.hpp>

#include "agent/cli.hpp"
#include "agent/ctl/control_client.hpp"
#include "agent/ctl/offline.hpp"
#include "version.hpp"

namespace {

constexpr char kDescription[] =
    "tetherctl - control the tether agent and check fleet repos\n\n"
    "tetherctl talks to tetherd over its control socket (status, plan, sync, history,\n"
    "show, rollback, suspend, resume, metrics; events is not built yet) and checks a\n"
    "fleet repo checkout offline (validate, render), for the fleet repo's own CI.";

constexpr char kFooter[] =
    "EXAMPLES\n"
    "  tetherctl status                          what tetherd applied and is doing\n"
    "  tetherctl sync --wait                     poll and apply now, wait for the result\n"
    "  tetherctl validate .                      check every hosts/*.toml of this checkout\n"
    "  tetherctl validate . --host web-01        check one host\n"
    "  tetherctl render . --host web-01 --json   what web-01 would get, as JSON\n\n"
    "ACCESS\n"
    "  root may do everything; members of the group tether may only read (status, plan,\n"
    "  history, show, metrics).\n\n"
    "EXIT STATUS\n"
    "  0 success, 1 failure (an invalid profile, a failed cycle, tetherd not running or\n"
    "  access denied), 2 usage error.\n\n"
    "SEE ALSO\n"
    "  tetherd(8), README.md";

constexpr char kFactsHelp[] =
    "Host facts when rendering another host: hostname and fqdn are the host name, machine_id\n"
    "is 32 zeros, os_id, os_version and arch are this machine's; --fact overrides any.";

void AddOfflineOptions(CLI::App* command, tether::OfflineOptions& options) {
  command->add_option("DIR", options.dir, "The fleet repo checkout")->required();
  command
      ->add_option("--fact", options.facts,
                   "Set a host fact: hostname, fqdn, machine_id, os_id, os_version, arch")
      ->type_name("NAME=VALUE");
  command
      ->add_option("--label", options.labels,
                   "Set a host label (as [labels] in agent.toml); without any, labels used in "
                   "templates are only warned about")
      ->type_name("NAME=VALUE");
  command
      ->add_option("--config", options.config,
                   "Take source.profile, apply.allowed_paths and [labels] from this agent.toml")
      ->type_name("FILE");
}

// The reply, or a message on stderr and exit status 1.
std::optional<nlohmann::json> Call(const std::string& socket, const nlohmann::json& request,
                                   std::chrono::milliseconds timeout) {
  auto reply = tether::CallDaemon(socket, request, timeout);
  if (!reply) {
    std::fprintf(stderr, "tetherctl: %s\n", reply.error().message().c_str());
    return std::nullopt;
  }
  if (!reply->value("ok", false) && reply->contains("error")) {
    std::fprintf(stderr, "tetherctl: %s\n", reply->value("error", "").c_str());
    return std::nullopt;
  }
  return std::move(*reply);
}

std::string Text(const nlohmann::json& value) {
  return value.is_string() ? value.get<std::string>() : (value.is_null() ? "" : value.dump());
}

void PrintCycle(const nlohmann::json& cycle) {
  if (!cycle.is_object()) return;
  std::printf("%-10s %s, exit %d, %lld ms\n", "last", Text(cycle["trigger"]).c_str(),
              cycle.value("exit", -1), static_cast<long long>(cycle.value("duration_ms", 0)));
}

int RunStatus(const std::string& socket, bool json) {
  auto reply = Call(socket, {{"command", "status"}}, std::chrono::seconds(10));
  if (!reply) return 1;
  if (json) {
    std::printf("%s\n", reply->dump(2).c_str());
    return 0;
  }
  std::printf("%-10s %s\n", "state", Text((*reply)["state"]).c_str());
  std::printf("%-10s %s\n", "commit", Text((*reply)["commit"]).c_str());
  std::printf("%-10s %s (%s)\n", "source", Text((*reply)["source"]).c_str(),
              Text((*reply)["ref"]).c_str());
  if (!(*reply)["quarantined"].is_null()) {
    std::printf("%-10s %s\n", "quarantined", Text((*reply)["quarantined"]).c_str());
  }
  PrintCycle((*reply)["last_cycle"]);
  if ((*reply)["next_poll_ms"].is_number()) {
    std::printf("%-10s in %lld s\n", "next poll",
                static_cast<long long>((*reply)["next_poll_ms"].get<std::int64_t>() / 1000));
  }
  return 0;
}

std::string When(std::int64_t unix_seconds) {
  const std::time_t time = static_cast<std::time_t>(unix_seconds);
  std::tm local{};
  localtime_r(&time, &local);
  char text[32];
  std::strftime(text, sizeof(text), "%Y-%m-%d %H:%M:%S", &local);
  return text;
}

int RunHistory(const std::string& socket, bool json) {
  auto reply = Call(socket, {{"command", "history"}}, std::chrono::seconds(10));
  if (!reply) return 1;
  if (json) {
    std::printf("%s\n", reply->dump(2).c_str());
    return 0;
  }
  std::printf("%-5s %-19s %-7s %-12s %7s  %-11s %s\n", "ID", "STARTED", "TRIGGER", "COMMIT",
              "CHANGES", "OUTCOME", "DURATION");
  for (const auto& entry : (*reply)["entries"]) {
    std::printf("%-5lld %-19s %-7s %-12s %7zu  %-11s %lld ms\n",
                static_cast<long long>(entry.value("id", std::int64_t{0})),
                When(entry.value("started", std::int64_t{0})).c_str(),
                entry.value("trigger", "").c_str(), entry.value("commit", "").substr(0, 12).c_str(),
                entry.value("changes", std::size_t{0}), entry.value("outcome", "").c_str(),
                static_cast<long long>(entry.value("duration_ms", std::int64_t{0})));
  }
  return 0;
}

int RunShow(const std::string& socket, std::int64_t id, bool json) {
  auto reply = Call(socket, {{"command", "show"}, {"id", id}}, std::chrono::seconds(10));
  if (!reply) return 1;
  if (json) {
    std::printf("%s\n", reply->dump(2).c_str());
    return 0;
  }
  const auto& entry = (*reply)["entry"];
  std::printf("apply %lld: %s, %s, %zu change%s, %lld ms\n",
              static_cast<long long>(entry.value("id", std::int64_t{0})),
              When(entry.value("started", std::int64_t{0})).c_str(),
              entry.value("outcome", "").c_str(), entry.value("changes", std::size_t{0}),
              entry.value("changes", std::size_t{0}) == 1 ? "" : "s",
              static_cast<long long>(entry.value("duration_ms", std::int64_t{0})));
  std::printf("commit %s%s%s (trigger: %s)\n\n", entry.value("commit", "").c_str(),
              entry.value("signer", "").empty() ? "" : ", signed by ",
              entry.value("signer", "").c_str(), entry.value("trigger", "").c_str());
  std::fputs(entry.value("output", "").c_str(), stdout);
  std::fputs(entry.value("errors", "").c_str(), stdout);
  return 0;
}

int RunSync(const std::string& socket, bool wait, bool json) {
  auto reply = tether::CallDaemon(socket, {{"command", "sync"}, {"wait", wait}},
                                  wait ? std::chrono::hours(2) : std::chrono::seconds(10));
  if (!reply) {
    std::fprintf(stderr, "tetherctl: %s\n", reply.error().message().c_str());
    return 1;
  }
  if (json) {
    std::printf("%s\n", reply->dump(2).c_str());
    return reply->value("ok", false) ? 0 : 1;
  }
  if (reply->contains("error")) {
    std::fprintf(stderr, "tetherctl: %s\n", reply->value("error", "").c_str());
    return 1;
  }
  if (!wait) {
    std::printf("sync started\n");
    return 0;
  }
  const auto& cycle = (*reply)["cycle"];
  std::fputs(Text(cycle["output"]).c_str(), stdout);
  std::fputs(Text(cycle["errors"]).c_str(), stderr);
  return reply->value("ok", false) ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app(kDescription, "tetherctl");
  app.footer(kFooter);
  app.set_version_flag("--version", std::string("tetherctl ") + TETHER_VERSION);
  std::string socket = "/run/tether/tether.sock";
  app.add_option("--socket", socket, "tetherd's control socket")
      ->type_name("PATH")
      ->capture_default_str();
  app.require_subcommand(0, 1);

  tether::OfflineOptions validate_options;
  CLI::App* validate = app.add_subcommand(
      "validate",
      "Check a fleet repo checkout offline: every host profile (or the --host ones), with\n"
      "its includes, templates and files. Prints every problem as file:line:col: message.");
  validate->footer(kFactsHelp);
  AddOfflineOptions(validate, validate_options);
  validate->add_option("--host", validate_options.hosts, "Check this host's profile only")
      ->type_name("NAME");

  tether::OfflineOptions render_options;
  CLI::App* render = app.add_subcommand(
      "render", "Print the desired state a host would get from a fleet repo checkout.");
  render->footer(kFactsHelp);
  AddOfflineOptions(render, render_options);
  render->add_option("--host", render_options.hosts, "The host to render")
      ->type_name("NAME")
      ->required()
      ->expected(1);
  render->add_flag("--json", render_options.json, "Print JSON (schema tether.desired/v1)");

  bool status_json = false;
  CLI::App* status = app.add_subcommand(
      "status",
      "Show what tetherd applied and is doing: state (applying, synced, failed), the applied\n"
      "commit, a quarantined one, the last cycle and the next poll.");
  status->add_flag("--json", status_json, "Print the reply as JSON (schema tether.ctl/v1)");
  bool sync_wait = false;
  bool sync_json = false;
  CLI::App* sync = app.add_subcommand("sync", "Poll and apply now (root only).");
  sync->add_flag("--wait", sync_wait, "Wait for the cycle to finish and show its outcome");
  sync->add_flag("--json", sync_json, "Print the reply as JSON");

  bool plan_json = false;
  CLI::App* plan = app.add_subcommand(
      "plan", "What the next cycle would change, with diffs (secrets hidden); changes nothing.");
  plan->alias("diff");
  plan->add_flag("--json", plan_json, "Print JSON");
  bool history_json = false;
  CLI::App* history = app.add_subcommand(
      "history", "List past applies: id, when, trigger, commit, changes, outcome, duration.");
  history->add_flag("--json", history_json, "Print JSON");
  std::int64_t show_id = 0;
  bool show_json = false;
  CLI::App* show = app.add_subcommand("show", "Show one past apply: its plan, diffs and outcome.");
  show->add_option("ID", show_id, "The id, from tetherctl history")->required();
  show->add_flag("--json", show_json, "Print JSON");
  std::string rollback_commit;
  CLI::App* rollback = app.add_subcommand(
      "rollback",
      "Apply an earlier commit from the local history (root only; works with Git offline)\n"
      "and stay on it, whatever the fleet repo says, until tetherctl resume.");
  rollback->add_option("COMMIT", rollback_commit, "An applied commit, or a prefix of it")
      ->required();
  std::string suspend_reason;
  CLI::App* suspend = app.add_subcommand(
      "suspend", "Stop applying (root only): cycles go on planning; drift is not reverted.");
  suspend->add_option("--reason", suspend_reason, "Why, shown in status")->type_name("TEXT");
  CLI::App* resume = app.add_subcommand(
      "resume", "Apply again, and follow the fleet repo again after a rollback (root only).");
  CLI::App* metrics = app.add_subcommand("metrics", "Print metrics in Prometheus text format.");

  if (auto parsed = tether::ParseCommandLine(app, argc, argv)) return *parsed;
  if (plan->parsed()) {
    auto reply = Call(socket, {{"command", "plan"}}, std::chrono::hours(1));
    if (!reply) return 1;
    if (plan_json) {
      std::printf("%s\n", reply->dump(2).c_str());
    } else {
      std::fputs(Text((*reply)["cycle"]["output"]).c_str(), stdout);
      std::fputs(Text((*reply)["cycle"]["errors"]).c_str(), stderr);
    }
    return reply->value("ok", false) ? 0 : 1;
  }
  if (history->parsed()) return RunHistory(socket, history_json);
  if (show->parsed()) return RunShow(socket, show_id, show_json);
  if (rollback->parsed()) {
    auto reply = Call(socket, {{"command", "rollback"}, {"commit", rollback_commit}},
                      std::chrono::seconds(10));
    if (!reply) return 1;
    std::printf("pinned to %s until tetherctl resume\n", Text((*reply)["pinned"]).c_str());
    return 0;
  }
  if (suspend->parsed() || resume->parsed()) {
    nlohmann::json request = {{"command", suspend->parsed() ? "suspend" : "resume"}};
    if (suspend->parsed()) request["reason"] = suspend_reason;
    auto reply = Call(socket, request, std::chrono::seconds(10));
    if (!reply) return 1;
    std::printf("%s\n", suspend->parsed() ? "suspended" : "resumed");
    return 0;
  }
  if (metrics->parsed()) {
    auto reply = Call(socket, {{"command", "metrics"}}, std::chrono::seconds(10));
    if (!reply) return 1;
    std::fputs(Text((*reply)["text"]).c_str(), stdout);
    return 0;
  }
  if (status->parsed()) return RunStatus(socket, status_json);
  if (sync->parsed()) return RunSync(socket, sync_wait, sync_json);
  if (validate->parsed()) return tether::RunValidate(validate_options, stdout, stderr);
  if (render->parsed()) return tether::RunRender(render_options, stdout, stderr);
  std::fputs(app.help().c_str(), stdout);
  return 0;
}
