// The cycle's summary as JSON: what the daemon's cycle process hands back to the daemon.
#include "agent/cycle/cycle.hpp"

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

}  // namespace tether
