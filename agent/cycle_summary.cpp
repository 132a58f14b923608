// The cycle's summary as JSON: what the daemon's cycle process hands back to the daemon.
#include "agent/cycle.hpp"

namespace tether {

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
          {"changes", summary.changes}, {"outcome", summary.outcome},
          {"error", summary.error},     {"offline", summary.offline},
          {"kinds", summary.kinds},     {"in_sync", summary.in_sync},
          {"skipped", summary.skipped}, {"resources", std::move(resources)}};
}

CycleSummary CycleSummaryFromJson(const nlohmann::json& json) {
  CycleSummary summary;
  if (!json.is_object()) return summary;
  summary.commit = json.value("commit", "");
  summary.signer = json.value("signer", "");
  summary.changes = json.value("changes", std::size_t{0});
  summary.outcome = json.value("outcome", "failed");
  summary.error = json.value("error", "");
  summary.offline = json.value("offline", false);
  summary.in_sync = json.value("in_sync", std::size_t{0});
  summary.skipped = json.value("skipped", std::size_t{0});
  if (auto kinds = json.find("kinds"); kinds != json.end() && kinds->is_object()) {
    for (const auto& [kind, count] : kinds->items()) {
      if (count.is_number_unsigned()) summary.kinds[kind] = count.get<std::size_t>();
    }
  }
  if (auto resources = json.find("resources"); resources != json.end() && resources->is_array()) {
    for (const auto& item : *resources) {
      if (!item.is_object()) continue;
      summary.resources.push_back({item.value("id", ""), item.value("action", ""),
                                   item.value("changes", ""), item.value("ok", true),
                                   item.value("error", "")});
    }
  }
  return summary;
}

}  // namespace tether
