#include "agent/cycle/cycle_report.hpp"

#include <algorithm>
#include <array>
#include <utility>

#include "agent/protocol/protocol.hpp"

namespace tether {

namespace {

constexpr std::array<std::pair<Outcome, std::string_view>, 6> kOutcomes = {{
    {Outcome::kInSync, "in sync"},
    {Outcome::kApplied, "applied"},
    {Outcome::kDryRun, "dry run"},
    {Outcome::kRolledBack, "rolled back"},
    {Outcome::kFailed, "failed"},
    {Outcome::kRefused, "refused"},
}};

}  // namespace

std::string_view OutcomeName(Outcome outcome) {
  for (const auto& [value, name] : kOutcomes) {
    if (value == outcome) return name;
  }
  return "failed";
}

std::optional<Outcome> OutcomeFromName(std::string_view name) {
  for (const auto& [value, known] : kOutcomes) {
    if (known == name) return value;
  }
  return std::nullopt;
}

bool IsFailure(Outcome outcome) {
  return outcome == Outcome::kRefused || outcome == Outcome::kRolledBack ||
         outcome == Outcome::kFailed;
}

nlohmann::json CycleSummaryToJson(const CycleSummary& summary) {
  nlohmann::json resources = nlohmann::json::array();
  for (const auto& resource : summary.resources) {
    nlohmann::json item = {{"id", resource.id},
                           {"action", resource.action},
                           {"changes", resource.changes},
                           {"ok", resource.ok}};
    if (!resource.error.empty()) item["error"] = resource.error;
    resources.push_back(std::move(item));
  }
  return {{"commit", summary.commit},   {"signer", summary.signer},
          {"changes", summary.changes}, {"outcome", OutcomeName(summary.outcome)},
          {"error", summary.error},     {"offline", summary.offline},
          {"kinds", summary.kinds},     {"in_sync", summary.in_sync},
          {"skipped", summary.skipped}, {"resources", std::move(resources)}};
}

CycleSummary CycleSummaryFromJson(const nlohmann::json& json) {
  CycleSummary summary;
  if (!json.is_object()) return summary;
  const protocol::Fields fields(json);
  auto count = [&](std::string_view key) {
    return static_cast<std::size_t>(std::max<std::int64_t>(0, fields.IntOr(key, 0)));
  };
  summary.commit = fields.StringOr("commit");
  summary.signer = fields.StringOr("signer");
  summary.changes = count("changes");
  summary.outcome = OutcomeFromName(fields.StringOr("outcome")).value_or(Outcome::kFailed);
  summary.error = fields.StringOr("error");
  summary.offline = fields.BoolOr("offline", false);
  summary.in_sync = count("in_sync");
  summary.skipped = count("skipped");
  if (auto kinds = json.find("kinds"); kinds != json.end() && kinds->is_object()) {
    for (const auto& [kind, n] : kinds->items()) {
      if (n.is_number_unsigned()) summary.kinds[kind] = n.get<std::size_t>();
    }
  }
  if (auto resources = json.find("resources"); resources != json.end() && resources->is_array()) {
    for (const auto& item : *resources) {
      if (!item.is_object()) continue;
      const protocol::Fields resource(item);
      summary.resources.push_back({resource.StringOr("id"), resource.StringOr("action"),
                                   resource.StringOr("changes"), resource.BoolOr("ok", true),
                                   resource.StringOr("error")});
    }
  }
  return summary;
}

namespace {

using Json = nlohmann::json;

constexpr std::array<std::pair<StepKind, std::string_view>, 10> kSteps = {{
    {StepKind::kWaitingForLock, "waiting-for-lock"},
    {StepKind::kSource, "source"},
    {StepKind::kPinned, "pinned"},
    {StepKind::kEnforced, "enforced"},
    {StepKind::kOffline, "offline"},
    {StepKind::kRetryQuarantined, "retry-quarantined"},
    {StepKind::kQuarantinedHead, "quarantined-head"},
    {StepKind::kEnforcingApplied, "enforcing-applied"},
    {StepKind::kVerified, "verified"},
    {StepKind::kAudit, "audit"},
}};

std::string Short(const std::string& commit) { return commit.substr(0, 12); }

std::string Plural(std::size_t n, const char* word) {
  return std::to_string(n) + " " + word + (n == 1 ? "" : "s");
}

// "create   " : the action's word, padded as the plan's lines are.
std::string Padded(std::string_view word) {
  std::string text(word);
  text.resize(std::max<std::size_t>(text.size() + 1, 9), ' ');
  return text;
}

std::string CourseLine(const CourseStep& step) {
  switch (step.kind) {
    case StepKind::kWaitingForLock:
      return "waiting  for another cycle on '" + step.detail + "' to end";
    case StepKind::kSource:
      return "source   " + step.detail + " at " + Short(step.commit) +
             (step.flag ? " (fetched)" : "");
    case StepKind::kPinned:
      return "pinned   " + Short(step.commit) + " (tetherctl rollback), until tetherctl resume";
    case StepKind::kEnforced:
      return "applied  " + Short(step.commit) + " enforced again (a drift repair: no fetch)";
    case StepKind::kOffline:
      return "offline  enforcing the applied commit " + Short(step.commit);
    case StepKind::kRetryQuarantined:
      return "retry    quarantined commit " + Short(step.commit) + ", as asked";
    case StepKind::kQuarantinedHead:
      return "quarantined commit " + Short(step.commit) + ": it failed before (" + step.detail +
             "); not applied again until a newer commit arrives (or --retry-quarantined)";
    case StepKind::kEnforcingApplied:
      return "enforcing the applied commit " + Short(step.commit);
    case StepKind::kVerified:
      return "verified signed by " + step.detail;
    case StepKind::kAudit:
      return "audit    every managed path is read and hashed";
  }
  return {};
}

// A unified diff, each line painted by what it is: added, removed, a hunk header.
std::string PaintDiff(const std::string& diff, const Painter& paint) {
  if (!paint) return diff;
  std::string painted;
  std::size_t pos = 0;
  while (pos < diff.size()) {
    std::size_t end = diff.find('\n', pos);
    if (end == std::string::npos) end = diff.size();
    const std::string_view line(diff.data() + pos, end - pos);
    if (line.starts_with("+") && !line.starts_with("+++")) {
      painted += paint(line, Tone::kGood);
    } else if (line.starts_with("-") && !line.starts_with("---")) {
      painted += paint(line, Tone::kBad);
    } else if (line.starts_with("@@")) {
      painted += paint(line, Tone::kDim);
    } else {
      painted += line;
    }
    if (end < diff.size()) painted += '\n';
    pos = end + 1;
  }
  return painted;
}

Json ActionJson(const ReportedAction& action) {
  Json json = {{"id", action.id}, {"type", action.type}, {"changes", action.changes}};
  if (!action.diff.empty()) json["diff"] = action.diff;
  if (!action.reason.empty()) json["reason"] = action.reason;
  if (!action.ok) json["ok"] = false;
  if (!action.error.empty()) json["error"] = action.error;
  return json;
}

ReportedAction ActionFromJson(const Json& json) {
  const protocol::Fields fields(json);
  return {fields.StringOr("id"),   fields.StringOr("type"),   fields.StringOr("changes"),
          fields.StringOr("diff"), fields.StringOr("reason"), fields.BoolOr("ok", true),
          fields.StringOr("error")};
}

template <typename T, typename F>
std::vector<T> ArrayFromJson(const Json& json, std::string_view key, F from) {
  std::vector<T> items;
  const auto it = json.find(key);
  if (it == json.end() || !it->is_array()) return items;
  for (const auto& item : *it) {
    if (auto value = from(item)) items.push_back(std::move(*value));
  }
  return items;
}

std::size_t Count(const protocol::Fields& fields, std::string_view key) {
  return static_cast<std::size_t>(std::max<std::int64_t>(0, fields.IntOr(key, 0)));
}

std::string FormatPlanPart(const CycleReport& report, const Painter& given, const Painter& paint) {
  std::string out;
  for (const auto& step : report.course) {
    const std::string line = CourseLine(step);
    out += (step.kind == StepKind::kQuarantinedHead ? paint(line, Tone::kBad) : line) + "\n";
  }
  for (const auto& action : report.actions) {
    std::string line = Padded(action.type) + action.id;
    if (action.type == "conflict") {
      line += ": " + action.reason;
    } else if (!action.changes.empty()) {
      line += action.type == "create" ? " (" + action.changes + ")" : ": " + action.changes;
    }
    const Tone tone = action.type == "create"   ? Tone::kGood
                      : action.type == "update" ? Tone::kChange
                                                : Tone::kBad;
    out +=
        (action.type == "in sync" || action.type == "conflict" ? line : paint(line, tone)) + "\n";
    if (action.type == "update") out += PaintDiff(action.diff, given);
  }
  if (report.omitted > 0) {
    out += "...      " + Plural(report.omitted, "more change") + " not kept in this report\n";
  }
  for (const auto& action : report.drifted) {
    out += paint("drifted  " + action.id + ": " + action.changes +
                     " (drift = \"report\": left as it is)",
                 Tone::kChange) +
           "\n" + PaintDiff(action.diff, given);
  }
  for (const auto& [id, why] : report.skipped) out += "skipped  " + id + ": " + why + "\n";
  return out;
}

}  // namespace

CycleReport FailedReport(const Error& error) {
  CycleReport report;
  report.outcome = Outcome::kFailed;
  report.error = error.message();
  report.problems.push_back("tetherd: " + error.message());
  return report;
}

int ExitCode(const CycleReport& report) { return IsFailure(report.outcome) ? 1 : 0; }

CycleSummary Summarize(const CycleReport& report) {
  CycleSummary summary;
  summary.commit = report.commit;
  summary.signer = report.signer;
  // Changes are counted once the plan stood: a dry run or an apply (a cycle stopped
  // before, at an unreachable systemd say, planned nothing it could act on).
  summary.changes = report.applied || report.outcome == Outcome::kDryRun ? report.changes : 0;
  summary.outcome = report.outcome;
  summary.error = report.error;
  summary.offline = report.offline;
  summary.kinds = report.kinds;
  summary.in_sync = report.in_sync;
  summary.skipped = report.skipped_count;
  auto list = [&](const ReportedAction& action, const std::string& what) {
    if (summary.resources.size() >= kMaxResourcesListed) return;
    summary.resources.push_back({action.id, what, action.changes, action.ok, action.error});
  };
  for (const auto& action : report.actions) {
    if (action.type != "in sync") list(action, action.type);
  }
  for (const auto& action : report.drifted) list(action, "drifted");
  return summary;
}

Json CycleReportToJson(const CycleReport& report) {
  Json course = Json::array();
  for (const auto& step : report.course) {
    std::string_view kind;
    for (const auto& [value, name] : kSteps) {
      if (value == step.kind) kind = name;
    }
    Json item = {{"step", kind}, {"commit", step.commit}};
    if (!step.detail.empty()) item["detail"] = step.detail;
    if (step.flag) item["flag"] = true;
    course.push_back(std::move(item));
  }
  Json actions = Json::array();
  for (const auto& action : report.actions) actions.push_back(ActionJson(action));
  Json drifted = Json::array();
  for (const auto& action : report.drifted) drifted.push_back(ActionJson(action));
  Json skipped = Json::array();
  for (const auto& [id, why] : report.skipped) skipped.push_back({{"id", id}, {"why", why}});
  return {{"outcome", OutcomeName(report.outcome)},
          {"commit", report.commit},
          {"signer", report.signer},
          {"offline", report.offline},
          {"error", report.error},
          {"course", std::move(course)},
          {"actions", std::move(actions)},
          {"drifted", std::move(drifted)},
          {"skipped", std::move(skipped)},
          {"applied", report.applied},
          {"apply_failed", report.apply_failed},
          {"undone", report.undone},
          {"quarantined", report.quarantined},
          {"changes", report.changes},
          {"skipped_count", report.skipped_count},
          {"omitted", report.omitted},
          {"kinds", report.kinds},
          {"in_sync", report.in_sync},
          {"elapsed_ms", report.elapsed_ms},
          {"problems", report.problems}};
}

CycleReport CycleReportFromJson(const Json& json) {
  CycleReport report;
  if (!json.is_object()) return report;
  const protocol::Fields fields(json);
  report.outcome = OutcomeFromName(fields.StringOr("outcome")).value_or(Outcome::kFailed);
  report.commit = fields.StringOr("commit");
  report.signer = fields.StringOr("signer");
  report.offline = fields.BoolOr("offline", false);
  report.error = fields.StringOr("error");
  report.course = ArrayFromJson<CourseStep>(json, "course", [](const Json& item) {
    const protocol::Fields step(item);
    const std::string name = step.StringOr("step");
    for (const auto& [value, known] : kSteps) {
      if (known == name) {
        return std::optional(CourseStep{value, step.StringOr("commit"), step.StringOr("detail"),
                                        step.BoolOr("flag", false)});
      }
    }
    return std::optional<CourseStep>();
  });
  auto action = [](const Json& item) {
    return item.is_object() ? std::optional(ActionFromJson(item)) : std::nullopt;
  };
  report.actions = ArrayFromJson<ReportedAction>(json, "actions", action);
  report.drifted = ArrayFromJson<ReportedAction>(json, "drifted", action);
  report.skipped =
      ArrayFromJson<std::pair<std::string, std::string>>(json, "skipped", [](const Json& item) {
        const protocol::Fields skip(item);
        return std::optional(std::pair(skip.StringOr("id"), skip.StringOr("why")));
      });
  auto text = [](const Json& item) {
    return item.is_string() ? std::optional(item.get<std::string>()) : std::nullopt;
  };
  report.applied = fields.BoolOr("applied", false);
  report.apply_failed = fields.BoolOr("apply_failed", false);
  report.undone = ArrayFromJson<std::string>(json, "undone", text);
  report.quarantined = fields.BoolOr("quarantined", false);
  report.changes = Count(fields, "changes");
  report.skipped_count = Count(fields, "skipped_count");
  report.omitted = Count(fields, "omitted");
  if (auto kinds = json.find("kinds"); kinds != json.end() && kinds->is_object()) {
    for (const auto& [kind, n] : kinds->items()) {
      if (n.is_number_unsigned()) report.kinds[kind] = n.get<std::size_t>();
    }
  }
  report.in_sync = Count(fields, "in_sync");
  report.elapsed_ms = fields.IntOr("elapsed_ms", 0);
  report.problems = ArrayFromJson<std::string>(json, "problems", text);
  return report;
}

std::string FormatCourse(const CycleReport& report, const Painter& given, CoursePart part) {
  const Painter paint =
      given ? given : [](std::string_view text, Tone) { return std::string(text); };
  std::string out;
  if (part != CoursePart::kResult) out = FormatPlanPart(report, given, paint);
  if (part == CoursePart::kPlan) return out;
  const std::string ms = std::to_string(report.elapsed_ms) + " ms";
  if (report.outcome == Outcome::kDryRun) {
    out += "dry run: " + Plural(report.changes, "change") + " planned, nothing changed\n";
  } else if (report.apply_failed) {
    std::string undone;
    for (const auto& id : report.undone) undone += (undone.empty() ? "" : ", ") + id;
    if (!undone.empty()) out += "undone   " + undone + "\n";
    const bool rolled_back = report.outcome == Outcome::kRolledBack;
    out += paint(std::string(rolled_back ? "rolled back" : "FAILED to apply") + " commit " +
                     Short(report.commit) + " after " + ms,
                 Tone::kBad) +
           "\n";
    if (report.quarantined) {
      out += paint("quarantined commit " + Short(report.commit) +
                       ": not applied again until a newer commit",
                   Tone::kBad) +
             "\n";
    }
  } else if (report.applied && report.changes == 0) {
    // Each resource in sync is listed only when asked for (show_in_sync): here, how many.
    out += "in sync with " + Short(report.commit) +
           (report.in_sync > 0 ? ": " + Plural(report.in_sync, "resource") : "") + " (" + ms +
           ")\n";
  } else if (report.applied) {
    out += "applied " + Short(report.commit) + ": " + Plural(report.changes, "change") + " in " +
           ms + "\n";
  }
  return out;
}

std::string FormatProblems(const CycleReport& report, std::size_t first) {
  std::string err;
  for (std::size_t i = first; i < report.problems.size(); ++i) err += report.problems[i] + "\n";
  return err;
}

void TrimReport(CycleReport& report, std::size_t max_bytes) {
  constexpr std::size_t kPerAction = 64;  // the JSON around an action's strings
  std::size_t total = 0;
  std::vector<std::string*> diffs;
  for (auto* list : {&report.actions, &report.drifted}) {
    for (auto& action : *list) {
      total += action.id.size() + action.changes.size() + action.diff.size() + kPerAction;
      if (!action.diff.empty()) diffs.push_back(&action.diff);
    }
  }
  std::sort(diffs.begin(), diffs.end(),
            [](const std::string* a, const std::string* b) { return a->size() > b->size(); });
  for (std::string* diff : diffs) {
    if (total <= max_bytes) break;
    const std::string note = "(a diff of " + std::to_string(diff->size()) + " bytes, not kept)\n";
    if (note.size() >= diff->size()) break;  // the rest are smaller than a note
    total -= diff->size() - note.size();
    *diff = note;
  }
  // Still too large: the changes at the end of the list go, counted.
  while (total > max_bytes && !report.actions.empty()) {
    const auto& last = report.actions.back();
    total -= last.id.size() + last.changes.size() + last.diff.size() + kPerAction;
    if (last.type != "in sync") ++report.omitted;
    report.actions.pop_back();
  }
}

}  // namespace tether
