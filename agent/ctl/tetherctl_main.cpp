// tetherctl: query and drive tetherd; validate a fleet repo offline.
#include <unistd.h>

#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <functional>
#include <optional>
#include <string>
#include <string_view>

#include <CLI/CLI.hpp>

#include "agent/ctl/control_client.hpp"
#include "agent/ctl/offline.hpp"
#include "agent/cycle/cycle_report.hpp"
#include "agent/protocol/protocol.hpp"
#include "agent/tetherd/cli.hpp"
#include "common/json_fields.hpp"
#include "version.hpp"

namespace {

constexpr char kDescription[] =
    "tetherctl - control the tether agent and check fleet repos\n\n"
    "tetherctl talks to tetherd over its control socket (status, plan, sync, history,\n"
    "show, rollback, suspend, resume, events, metrics) and checks a fleet repo checkout\n"
    "offline (validate, render), for the fleet repo's own CI.";

constexpr char kFooter[] =
    "EXAMPLES\n"
    "  tetherctl status                          what tetherd applied and is doing\n"
    "  tetherctl sync --wait                     poll and apply now, wait for the result\n"
    "  tetherctl validate .                      check every hosts/*.toml of this checkout\n"
    "  tetherctl validate . --host web-01        check one host\n"
    "  tetherctl render . --host web-01 --json   what web-01 would get, as JSON\n"
    "  tetherctl events                          follow what tetherd does, as it happens\n\n"
    "ACCESS\n"
    "  root may do everything; members of the group tether may only read (status, plan,\n"
    "  history, show, events, metrics).\n\n"
    "COLOUR\n"
    "  Human output is coloured when stdout is a terminal, unless NO_COLOR is set or\n"
    "  TERM is dumb; --json output never is.\n\n"
    "EXIT STATUS\n"
    "  0 success, 1 failure (an invalid profile, a failed cycle, tetherd not running or\n"
    "  access denied), 2 usage error.\n\n"
    "SEE ALSO\n"
    "  tetherd(8), tether-agent.toml(5), tether-profile(5); man tetherctl";

constexpr char kFactsHelp[] =
    "Host facts when rendering another host: hostname and fqdn are the host name, machine_id\n"
    "is 32 zeros, os_id, os_version and arch are this machine's; --fact overrides any.";

// Colour: only on a terminal, never with NO_COLOR (no-color.org) or TERM=dumb.
bool colour = false;

constexpr char kGreen[] = "32";
constexpr char kYellow[] = "33";
constexpr char kRed[] = "31";
constexpr char kDim[] = "2";

bool WantColour() {
  if (isatty(STDOUT_FILENO) == 0 || std::getenv("NO_COLOR") != nullptr) return false;
  const char* term = std::getenv("TERM");
  return term == nullptr || std::strcmp(term, "dumb") != 0;
}

std::string Paint(std::string_view text, const char* code) {
  if (!colour || text.empty()) return std::string(text);
  return "\033[" + std::string(code) + "m" + std::string(text) + "\033[0m";
}

// The colour of a state or an outcome: good, under way, bad.
const char* ColourOf(std::string_view word) {
  if (word == "synced" || word == "applied" || word == "in sync" || word == "reverted") {
    return kGreen;
  }
  if (word == "failed" || word == "rolled back" || word == "rolled-back" || word == "refused" ||
      word == "quarantined") {
    return kRed;
  }
  return kYellow;
}

// A cycle's course as tetherd printed it, coloured from its report (changes, diffs,
// failures); an entry without a report (from an older tetherd) as it was printed.
std::string Course(const nlohmann::json& holder) {
  const auto report = holder.find("report");
  if (report == holder.end() || !report->is_object()) {
    return tether::protocol::Fields(holder).StringOr("output");
  }
  return tether::FormatCourse(tether::CycleReportFromJson(*report),
                              [](std::string_view text, tether::Tone tone) {
                                switch (tone) {
                                  case tether::Tone::kGood:
                                    return Paint(text, kGreen);
                                  case tether::Tone::kChange:
                                    return Paint(text, kYellow);
                                  case tether::Tone::kBad:
                                    return Paint(text, kRed);
                                  case tether::Tone::kDim:
                                    return Paint(text, kDim);
                                }
                                return std::string(text);
                              });
}

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

using tether::protocol::Command;
using tether::protocol::Request;

// A request line for tetherd: `command`, with what `fill` sets.
nlohmann::json Ask(Command command, const std::function<void(Request&)>& fill = {}) {
  Request request;
  request.command = command;
  if (fill) fill(request);
  return tether::protocol::RequestJson(request);
}

// What a reply holds, read without throwing whatever tetherd sent (a wrong type reads as
// the fallback).
std::string Str(const nlohmann::json& json, std::string_view key) {
  return tether::JsonFields(json).StringOr(key);
}
std::int64_t Int(const nlohmann::json& json, std::string_view key) {
  return tether::JsonFields(json).IntOr(key, 0);
}
std::size_t Count(const nlohmann::json& json, std::string_view key) {
  return static_cast<std::size_t>(std::max<std::int64_t>(0, Int(json, key)));
}
bool Bool(const nlohmann::json& json, std::string_view key, bool fallback) {
  return tether::JsonFields(json).BoolOr(key, fallback);
}

// The reply, or a message on stderr and exit status 1.
std::optional<nlohmann::json> Call(const std::string& socket, const nlohmann::json& request,
                                   std::chrono::milliseconds timeout) {
  auto reply = tether::CallDaemon(socket, request, timeout);
  if (!reply) {
    std::fprintf(stderr, "tetherctl: %s\n", reply.error().message().c_str());
    return std::nullopt;
  }
  if (!reply->is_object()) {
    std::fprintf(stderr, "tetherctl: tetherd's reply is not a JSON object\n");
    return std::nullopt;
  }
  if (!Bool(*reply, "ok", false) && reply->contains("error")) {
    std::fprintf(stderr, "tetherctl: %s\n", Str(*reply, "error").c_str());
    return std::nullopt;
  }
  return std::move(*reply);
}

std::string Text(const nlohmann::json& value) {
  return value.is_string() ? value.get<std::string>() : (value.is_null() ? "" : value.dump());
}

std::string When(std::int64_t unix_seconds);

void PrintCycle(const nlohmann::json& cycle) {
  if (!cycle.is_object()) return;
  const std::string outcome = Text(cycle["outcome"]);
  std::printf("%-10s %s, %s, %lld ms\n", "last", Text(cycle["trigger"]).c_str(),
              Paint(outcome, ColourOf(outcome)).c_str(),
              static_cast<long long>(Int(cycle, "duration_ms")));
  const nlohmann::json& summary = cycle["summary"];
  if (!summary.is_object()) return;
  if (!Text(summary["error"]).empty()) {
    std::printf("%-10s %s\n", "error", Paint(Text(summary["error"]), kRed).c_str());
  }
  // Resources: how many of each kind, how many in sync, then each one that is not.
  std::size_t total = 0;
  std::string kinds;
  if (summary["kinds"].is_object()) {
    for (const auto& [kind, count] : summary["kinds"].items()) {
      if (!count.is_number_unsigned()) continue;
      total += count.get<std::size_t>();
      kinds += (kinds.empty() ? "" : ", ") + std::to_string(count.get<std::size_t>()) + " " + kind;
    }
  }
  if (total == 0) return;
  // What the listed resources are, by the cycle's outcome: changed by an apply, undone by
  // a rollback, to change in a dry run; drifted (drift = "report") or failed either way.
  const auto& listed = summary["resources"];
  const char* verb = outcome == "rolled back" ? " undone"
                     : outcome == "dry run"   ? " to change"
                     : outcome == "applied"   ? " changed"
                                              : " not applied";
  std::size_t failed = 0;
  std::size_t drifted = 0;
  std::size_t other = 0;
  if (listed.is_array()) {
    for (const auto& resource : listed) {
      if (!Bool(resource, "ok", true)) {
        ++failed;
      } else if (Str(resource, "action") == "drifted") {
        ++drifted;
      } else {
        ++other;
      }
    }
  }
  std::string counts = std::to_string(Count(summary, "in_sync")) + " in sync";
  if (other > 0) counts += ", " + std::to_string(other) + verb;
  if (drifted > 0) counts += ", " + Paint(std::to_string(drifted) + " drifted", kYellow);
  if (failed > 0) counts += ", " + Paint(std::to_string(failed) + " failed", kRed);
  if (Count(summary, "skipped") > 0) {
    counts += ", " + std::to_string(Count(summary, "skipped")) + " skipped";
  }
  std::printf("%-10s %zu (%s): %s\n", "resources", total, kinds.c_str(), counts.c_str());
  if (!listed.is_array()) return;
  constexpr std::size_t kShown = 20;
  std::size_t shown = 0;
  for (const auto& resource : listed) {
    if (shown++ == kShown) {
      std::printf("%-10s ... %zu more (tetherctl status --json)\n", "", listed.size() - kShown);
      break;
    }
    const std::string action = Text(resource["action"]);
    const bool ok = Bool(resource, "ok", true);
    std::string line = Paint(action, ok ? (action == "drifted" ? kYellow : kGreen) : kRed) +
                       std::string(action.size() < 8 ? 8 - action.size() : 1, ' ') +
                       Text(resource["id"]);
    if (!Text(resource["changes"]).empty()) line += " (" + Text(resource["changes"]) + ")";
    if (!ok && !Text(resource["error"]).empty()) {
      line += ": " + Paint(Text(resource["error"]), kRed);
    }
    std::printf("%-10s %s\n", "", line.c_str());
  }
}

// The report endpoint: where reports go and how delivery fares.
void PrintEndpoint(const nlohmann::json& endpoint) {
  if (!endpoint.is_object()) return;
  std::string line =
      Text(endpoint["url"]) + ", " + std::to_string(Count(endpoint, "queued")) + " queued";
  if (endpoint["last_delivery"].is_number()) {
    line += ", last delivery " + When(Int(endpoint, "last_delivery"));
  }
  if (Count(endpoint, "dropped") > 0) {
    line += ", " + std::to_string(Count(endpoint, "dropped")) + " dropped";
  }
  std::printf("%-10s %s\n", "reports", line.c_str());
  if (!Text(endpoint["last_error"]).empty()) {
    std::string error = Text(endpoint["last_error"]);
    if (endpoint["next_attempt"].is_number()) {
      error += " (next attempt " + When(Int(endpoint, "next_attempt")) + ")";
    }
    std::printf("%-10s %s\n", "", Paint("last error: " + error, kYellow).c_str());
  }
}

int RunStatus(const std::string& socket, bool json, bool detail) {
  auto reply = Call(socket, Ask(Command::kStatus, [&](Request& r) { r.detail = detail; }),
                    std::chrono::seconds(10));
  if (!reply) return 1;
  if (json) {
    std::printf("%s\n", reply->dump(2).c_str());
    return 0;
  }
  const std::string state = Text((*reply)["state"]);
  std::printf("%-10s %s\n", "state", Paint(state, ColourOf(state)).c_str());
  // The reason for a state a drift repair kept (the last cycle's own error is below).
  const std::string why = Text((*reply)["state_error"]);
  const auto& last = (*reply)["last_cycle"];
  if (!why.empty() &&
      !(last.is_object() && last["summary"].is_object() && Text(last["summary"]["error"]) == why)) {
    std::printf("%-10s %s\n", "because", Paint(why, kRed).c_str());
  }
  if ((*reply)["suspended"].is_object()) {
    const std::string reason = Text((*reply)["suspended"]["reason"]);
    std::printf("%-10s %s\n", "suspended",
                Paint(reason.empty() ? "yes (tetherctl resume)" : reason, kYellow).c_str());
  }
  if (!(*reply)["pinned"].is_null()) {
    std::printf("%-10s %s (tetherctl resume)\n", "pinned",
                Paint(Text((*reply)["pinned"]), kYellow).c_str());
  }
  std::printf("%-10s %s\n", "commit", Text((*reply)["commit"]).c_str());
  std::printf("%-10s %s (%s)\n", "source", Text((*reply)["source"]).c_str(),
              Text((*reply)["ref"]).c_str());
  if (!(*reply)["quarantined"].is_null()) {
    std::printf("%-10s %s\n", "quarantined", Paint(Text((*reply)["quarantined"]), kRed).c_str());
  }
  PrintCycle((*reply)["last_cycle"]);
  if ((*reply)["next_poll_ms"].is_number()) {
    std::printf("%-10s in %lld s\n", "next poll",
                static_cast<long long>(Int(*reply, "next_poll_ms") / 1000));
  }
  PrintEndpoint((*reply)["endpoint"]);
  if (detail && (*reply)["last_cycle"].is_object()) {
    std::printf("\n");
    std::fputs(Course((*reply)["last_cycle"]).c_str(), stdout);
  }
  return 0;
}

// One event, as a line (or a few) for a person.
void PrintEvent(const nlohmann::json& event) {
  const std::string name = Text(event["event"]);
  const std::string time = When(Int(event, "time")).substr(11);
  std::string text;
  if (name == "cycle-started") {
    text = "cycle started (" + Text(event["trigger"]) + ")";
  } else if (name == "cycle-finished") {
    const std::string outcome = Text(event["outcome"]);
    text = Paint(outcome, ColourOf(outcome)) + " " + Text(event["commit"]).substr(0, 12) + " (" +
           Text(event["trigger"]) + "): " + std::to_string(Int(event, "changes")) +
           " change(s) in " + std::to_string(Int(event, "duration_ms")) + " ms";
    if (!Text(event["error"]).empty()) text += "\n         " + Paint(Text(event["error"]), kRed);
    if (event["resources"].is_array()) {
      for (const auto& resource : event["resources"]) {
        text += "\n         " + Text(resource["action"]) + " " + Text(resource["id"]);
        if (!Bool(resource, "ok", true)) text += ": " + Paint(Text(resource["error"]), kRed);
      }
    }
  } else if (name == "drift-detected") {
    std::string ids;
    if (event["resources"].is_array()) {
      for (const auto& id : event["resources"]) ids += (ids.empty() ? "" : ", ") + Text(id);
    }
    text = Paint("drift", kYellow) + " " +
           (Bool(event, "overflow", false) ? "(too many events: a full audit) " : "") + ids;
  } else if (name == "reloaded") {
    text = Bool(event, "ok", false) ? "agent.toml reloaded"
                                    : Paint("reload refused: " + Text(event["error"]), kRed);
  } else if (name == "suspended") {
    text = Paint("suspended", kYellow) +
           (Text(event["reason"]).empty() ? "" : ": " + Text(event["reason"]));
  } else if (name == "resumed") {
    text = "resumed";
  } else if (name == "pinned") {
    text = Paint("pinned", kYellow) + " to " + Text(event["commit"]) + " (tetherctl rollback)";
  } else if (name == "stopping") {
    text = "tetherd is stopping";
  } else {
    text = name;
  }
  std::printf("%s %s\n", Paint(time, kDim).c_str(), text.c_str());
  std::fflush(stdout);
}

int RunEvents(const std::string& socket, bool json) {
  bool stopping = false;
  bool refused = false;
  auto streamed = tether::StreamDaemon(
      socket, Ask(Command::kEvents), std::chrono::seconds(10), [&](const nlohmann::json& line) {
        if (line.contains("ok")) {
          if (!Bool(line, "ok", false)) {
            std::fprintf(stderr, "tetherctl: %s\n", Text(line["error"]).c_str());
            refused = true;
            return false;
          }
          return true;  // subscribed
        }
        if (json) {
          std::printf("%s\n", line.dump().c_str());
          std::fflush(stdout);
        } else {
          PrintEvent(line);
        }
        stopping = stopping || Str(line, "event") == "stopping";
        return true;
      });
  if (refused) return 1;
  if (streamed || stopping) return 0;  // tetherd stopped: the stream is over
  std::fprintf(stderr, "tetherctl: %s\n", streamed.error().message().c_str());
  return 1;
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
  auto reply = Call(socket, Ask(Command::kHistory), std::chrono::seconds(10));
  if (!reply) return 1;
  if (json) {
    std::printf("%s\n", reply->dump(2).c_str());
    return 0;
  }
  std::printf("%-5s %-19s %-7s %-12s %7s  %-11s %s\n", "ID", "STARTED", "TRIGGER", "COMMIT",
              "CHANGES", "OUTCOME", "DURATION");
  for (const auto& entry : (*reply)["entries"]) {
    std::string outcome = Str(entry, "outcome");
    outcome = Paint(outcome, ColourOf(outcome)) +
              std::string(outcome.size() < 11 ? 11 - outcome.size() : 0, ' ');
    std::printf("%-5lld %-19s %-7s %-12s %7zu  %s %lld ms\n",
                static_cast<long long>(Int(entry, "id")), When(Int(entry, "started")).c_str(),
                Str(entry, "trigger").c_str(), Str(entry, "commit").substr(0, 12).c_str(),
                Count(entry, "changes"), outcome.c_str(),
                static_cast<long long>(Int(entry, "duration_ms")));
  }
  return 0;
}

int RunShow(const std::string& socket, std::int64_t id, bool json) {
  auto reply =
      Call(socket, Ask(Command::kShow, [&](Request& r) { r.id = id; }), std::chrono::seconds(10));
  if (!reply) return 1;
  if (json) {
    std::printf("%s\n", reply->dump(2).c_str());
    return 0;
  }
  const auto& entry = (*reply)["entry"];
  std::printf(
      "apply %lld: %s, %s, %zu change%s, %lld ms\n", static_cast<long long>(Int(entry, "id")),
      When(Int(entry, "started")).c_str(), Str(entry, "outcome").c_str(), Count(entry, "changes"),
      Count(entry, "changes") == 1 ? "" : "s", static_cast<long long>(Int(entry, "duration_ms")));
  std::printf("commit %s%s%s (trigger: %s)\n\n", Str(entry, "commit").c_str(),
              Str(entry, "signer").empty() ? "" : ", signed by ", Str(entry, "signer").c_str(),
              Str(entry, "trigger").c_str());
  std::fputs(Course(entry).c_str(), stdout);
  std::fputs(Str(entry, "errors").c_str(), stdout);
  return 0;
}

int RunSync(const std::string& socket, bool wait, bool json) {
  auto reply = tether::CallDaemon(socket, Ask(Command::kSync, [&](Request& r) { r.wait = wait; }),
                                  wait ? std::chrono::hours(2) : std::chrono::seconds(10));
  if (!reply) {
    std::fprintf(stderr, "tetherctl: %s\n", reply.error().message().c_str());
    return 1;
  }
  if (json) {
    std::printf("%s\n", reply->dump(2).c_str());
    return Bool(*reply, "ok", false) ? 0 : 1;
  }
  if (!reply->is_object()) {
    std::fprintf(stderr, "tetherctl: tetherd's reply is not a JSON object\n");
    return 1;
  }
  if (reply->contains("error")) {
    std::fprintf(stderr, "tetherctl: %s\n", Str(*reply, "error").c_str());
    return 1;
  }
  if (!wait) {
    std::printf("sync started\n");
    return 0;
  }
  const auto& cycle = (*reply)["cycle"];
  std::fputs(Course(cycle).c_str(), stdout);
  std::fputs(Str(cycle, "errors").c_str(), stderr);
  return Bool(*reply, "ok", false) ? 0 : 1;
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
      "Show what tetherd applied and is doing: state (applying, synced, drifted, offline,\n"
      "suspended, refused, rolled-back, failed) and why; a drift repair, which does not\n"
      "ask the Git source, leaves refused, offline, rolled-back and failed as they were.\n"
      "Then the applied commit, a pin or a quarantined commit, the last cycle with its\n"
      "resources (per kind; in sync, changed, drifted, failed, skipped; each one not in\n"
      "sync), the next poll and the report endpoint (last delivery, queued reports, last\n"
      "error).");
  status->add_flag("--json", status_json, "Print the reply as JSON (schema tether.ctl/v1)");
  bool status_detail = false;
  status->add_flag("--detail", status_detail,
                   "Also the last cycle's course: its plan with diffs and its outcome (in JSON: "
                   "last_cycle.output, errors and report)");
  bool sync_wait = false;
  bool sync_json = false;
  CLI::App* sync = app.add_subcommand(
      "sync",
      "Poll and apply now (root only), or right after the cycle in progress; a backoff wait\n"
      "of the report queue ends too.");
  sync->add_flag("--wait", sync_wait,
                 "Wait for the cycle it starts (never one already running): show\n"
                 "its plan and outcome; exit 1 if it failed or was refused");
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
  bool events_json = false;
  CLI::App* events = app.add_subcommand(
      "events",
      "Follow what tetherd does as it happens (cycles started and finished, drift, reloads,\n"
      "suspend, resume, rollback) until interrupted or tetherd stops.");
  events->add_flag("--json", events_json, "One JSON object per line (schema tether.ctl/v1)");

  if (auto parsed = tether::ParseCommandLine(app, argc, argv)) return *parsed;
  colour = WantColour();
  if (plan->parsed()) {
    auto reply = Call(socket, Ask(Command::kPlan), std::chrono::hours(1));
    if (!reply) return 1;
    if (plan_json) {
      std::printf("%s\n", reply->dump(2).c_str());
    } else {
      std::fputs(Course((*reply)["cycle"]).c_str(), stdout);
      std::fputs(Text((*reply)["cycle"]["errors"]).c_str(), stderr);
    }
    return Bool(*reply, "ok", false) ? 0 : 1;
  }
  if (events->parsed()) return RunEvents(socket, events_json);
  if (history->parsed()) return RunHistory(socket, history_json);
  if (show->parsed()) return RunShow(socket, show_id, show_json);
  if (rollback->parsed()) {
    auto reply =
        Call(socket, Ask(Command::kRollback, [&](Request& r) { r.commit = rollback_commit; }),
             std::chrono::seconds(10));
    if (!reply) return 1;
    std::printf("pinned to %s until tetherctl resume\n", Text((*reply)["pinned"]).c_str());
    return 0;
  }
  if (suspend->parsed() || resume->parsed()) {
    auto reply = Call(socket,
                      Ask(suspend->parsed() ? Command::kSuspend : Command::kResume,
                          [&](Request& r) { r.reason = suspend_reason; }),
                      std::chrono::seconds(10));
    if (!reply) return 1;
    std::printf("%s\n", suspend->parsed() ? "suspended" : "resumed");
    return 0;
  }
  if (metrics->parsed()) {
    auto reply = Call(socket, Ask(Command::kMetrics), std::chrono::seconds(10));
    if (!reply) return 1;
    std::fputs(Text((*reply)["text"]).c_str(), stdout);
    return 0;
  }
  if (status->parsed()) return RunStatus(socket, status_json, status_detail);
  if (sync->parsed()) return RunSync(socket, sync_wait, sync_json);
  if (validate->parsed()) return tether::RunValidate(validate_options, stdout, stderr);
  if (render->parsed()) return tether::RunRender(render_options, stdout, stderr);
  std::fputs(app.help().c_str(), stdout);
  return 0;
}
