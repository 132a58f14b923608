#include "agent/state/history.hpp"

#include <nlohmann/json.hpp>

#include "common/filesystem.hpp"

namespace tether {

namespace {

using Json = nlohmann::json;

std::string PathIn(const std::string& state_dir) { return state_dir + "/history.json"; }

Json ToJson(const HistoryEntry& entry) {
  Json json{{"id", entry.id},           {"commit", entry.commit},
            {"signer", entry.signer},   {"trigger", entry.trigger},
            {"outcome", entry.outcome}, {"changes", entry.changes},
            {"started", entry.started}, {"duration_ms", entry.duration_ms},
            {"output", entry.output},   {"errors", entry.errors}};
  if (entry.report.is_object()) json["report"] = entry.report;
  return json;
}

}  // namespace

Result<std::vector<HistoryEntry>> LoadHistory(const std::string& state_dir) {
  const std::string path = PathIn(state_dir);
  auto text = ReadLocalFile(path, 64 << 20);
  if (!text) {
    if (text.error().Is(std::errc::no_such_file_or_directory)) return std::vector<HistoryEntry>();
    return Fail(text.error());
  }
  const Json json = Json::parse(*text, nullptr, false);
  if (json.is_discarded() || !json.is_object() || json.value("schema", "") != "tether.history/v1" ||
      !json.contains("entries") || !json["entries"].is_array()) {
    return Fail(std::errc::illegal_byte_sequence,
                "history '" + path + "' is corrupt; it was left as it is: repair or remove it");
  }
  std::vector<HistoryEntry> entries;
  for (const auto& item : json["entries"]) {
    if (!item.is_object()) continue;
    HistoryEntry entry;
    entry.id = item.value("id", std::int64_t{0});
    entry.commit = item.value("commit", "");
    entry.signer = item.value("signer", "");
    entry.trigger = item.value("trigger", "");
    entry.outcome = item.value("outcome", "");
    entry.changes = item.value("changes", std::size_t{0});
    entry.started = item.value("started", std::int64_t{0});
    entry.duration_ms = item.value("duration_ms", std::int64_t{0});
    entry.output = item.value("output", "");
    entry.errors = item.value("errors", "");
    if (auto report = item.find("report"); report != item.end() && report->is_object()) {
      entry.report = *report;
    }
    entries.push_back(std::move(entry));
  }
  return entries;
}

Result<std::int64_t> AppendHistory(const std::string& state_dir, HistoryEntry entry) {
  auto entries = LoadHistory(state_dir);
  if (!entries) return Fail(entries.error());
  entry.id = entries->empty() ? 1 : entries->back().id + 1;
  if (entry.output.size() > kHistoryOutput) entry.output.resize(kHistoryOutput);
  if (entry.errors.size() > kHistoryOutput) entry.errors.resize(kHistoryOutput);
  entries->push_back(std::move(entry));
  if (entries->size() > kHistoryKept) {
    entries->erase(entries->begin(),
                   entries->begin() + static_cast<std::ptrdiff_t>(entries->size() - kHistoryKept));
  }
  Json list = Json::array();
  for (const auto& item : *entries) list.push_back(ToJson(item));
  const Json json = {{"schema", "tether.history/v1"}, {"entries", list}};
  auto host = RootedFilesystem::Open("/");
  if (!host) return Fail(host.error());
  WriteOptions options;
  options.mode = 0600;
  if (auto written = (*host)->WriteFileAtomic(
          PathIn(state_dir), json.dump(-1, ' ', false, Json::error_handler_t::replace) + "\n",
          options);
      !written) {
    return Fail(written.error());
  }
  return entries->back().id;
}

}  // namespace tether
