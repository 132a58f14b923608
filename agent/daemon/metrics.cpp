#include "agent/daemon/metrics.hpp"

#include <algorithm>
#include <cstdio>
#include <utility>
#include <vector>

#include "version.hpp"

namespace tether {

void DaemonMetrics::CountCycle(Trigger trigger, Outcome outcome, bool ok,
                               std::chrono::milliseconds duration, std::int64_t now) {
  ++cycles_by_trigger_[trigger];
  ++cycles_by_outcome_[outcome];
  if (!ok) ++failures_;
  ++cycle_count_;
  cycle_seconds_ += static_cast<double>(duration.count()) / 1000.0;
  if (ok) last_success_ = now;
}

std::string DaemonMetrics::Text(
    bool suspended, const std::vector<std::pair<std::string, HttpServerCounts>>& listeners) const {
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
    cycles.emplace_back("{trigger=\"" + std::string(TriggerName(trigger)) + "\"}",
                        static_cast<double>(count));
  }
  std::sort(cycles.begin(), cycles.end());  // by label, as scrapers have always seen them
  metric("tether_cycles_total", "counter", "Cycles run (each polls, plans and applies).", cycles);
  std::vector<std::pair<std::string, double>> outcomes;
  for (const auto& [outcome, count] : cycles_by_outcome_) {
    outcomes.emplace_back("{outcome=\"" + std::string(OutcomeName(outcome)) + "\"}",
                          static_cast<double>(count));
  }
  std::sort(outcomes.begin(), outcomes.end());
  metric("tether_cycle_outcomes_total", "counter",
         "Cycles by outcome: in sync, applied, rolled back, failed, dry run.", outcomes);
  const auto drift = cycles_by_trigger_.find(Trigger::kDrift);
  metric("tether_drift_events_total", "counter", "Cycles started by a change of a managed path.",
         {{"", static_cast<double>(drift != cycles_by_trigger_.end() ? drift->second : 0)}});
  metric("tether_failures_total", "counter", "Cycles that failed, were refused or rolled back.",
         {{"", static_cast<double>(failures_)}});
  metric("tether_cycle_duration_seconds", "summary", "How long cycles took.",
         {{"_sum", cycle_seconds_}, {"_count", static_cast<double>(cycle_count_)}});
  metric("tether_last_success_timestamp_seconds", "gauge",
         "When a cycle last ended in sync or applied (unix time; 0: never).",
         {{"", static_cast<double>(last_success_)}});
  metric("tether_suspended", "gauge", "1 while applying is suspended.",
         {{"", suspended ? 1.0 : 0.0}});
  auto by_label = [](const char* label, const std::map<std::string, std::uint64_t>& counts) {
    std::vector<std::pair<std::string, double>> samples;
    for (const auto& [value, count] : counts) {
      samples.emplace_back(std::string("{") + label + "=\"" + value + "\"}",
                           static_cast<double>(count));
    }
    return samples;
  };
  if (!webhooks_.empty()) {
    metric("tether_webhook_requests_total", "counter",
           "Webhook requests by result: trigger, ignored (another ref or event), unauthorized "
           "(a wrong or missing signature), bad_method.",
           by_label("result", webhooks_));
  }
  if (!change_signals_.empty()) {
    metric("tether_change_signal_checks_total", "counter",
           "Checks of source.poll_url: unchanged (304, no Git talk), changed, error.",
           by_label("result", change_signals_));
  }
  if (!listeners.empty()) {
    std::vector<std::pair<std::string, double>> refused;
    for (const auto& [name, counts] : listeners) {
      const std::string listener = "{listener=\"" + name + "\",reason=\"";
      refused.emplace_back(listener + "connections\"}",
                           static_cast<double>(counts.connections_refused));
      refused.emplace_back(listener + "bad_request\"}", static_cast<double>(counts.bad_requests));
      refused.emplace_back(listener + "timeout\"}", static_cast<double>(counts.timeouts));
    }
    metric("tether_http_refused_total", "counter",
           "HTTP connections and requests the listeners refused before reading them: over the "
           "connection limit, malformed or too large, too slow.",
           refused);
  }
  return text;
}

}  // namespace tether
