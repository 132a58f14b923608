#include "agent/state/quarantine.hpp"

#include <nlohmann/json.hpp>

#include "common/filesystem.hpp"

namespace tether {

namespace {

using Json = nlohmann::json;

std::string PathIn(const std::string& state_dir) { return state_dir + "/quarantine.json"; }

// State files live on the host whatever --root says, never through a symlink.
Result<std::unique_ptr<RootedFilesystem>> Host() { return RootedFilesystem::Open("/"); }

}  // namespace

Result<std::optional<Quarantine>> LoadQuarantine(const std::string& state_dir) {
  const std::string path = PathIn(state_dir);
  auto text = ReadLocalFile(path, 1 << 20);
  if (!text) {
    if (text.error().Is(std::errc::no_such_file_or_directory)) return std::nullopt;
    return Fail(text.error());
  }
  const Json json = Json::parse(*text, nullptr, false);
  if (json.is_discarded() || !json.is_object() || !json.contains("commit") ||
      !json["commit"].is_string() || json.value("schema", "") != "tether.quarantine/v1") {
    return Fail(
        std::errc::illegal_byte_sequence,
        "quarantine '" + path + "' is corrupt; it was left as it is: repair or remove it by hand");
  }
  Quarantine quarantine;
  quarantine.commit = json["commit"].get<std::string>();
  quarantine.reason = json.value("reason", "");
  quarantine.since = json.value("since", std::int64_t{0});
  return quarantine;
}

Status SaveQuarantine(const std::string& state_dir, const Quarantine& quarantine) {
  auto host = Host();
  if (!host) return Fail(host.error());
  const Json json = {{"schema", "tether.quarantine/v1"},
                     {"commit", quarantine.commit},
                     {"reason", quarantine.reason},
                     {"since", quarantine.since}};
  WriteOptions options;
  options.mode = 0600;
  return (*host)->WriteFileAtomic(
      PathIn(state_dir), json.dump(1, ' ', false, Json::error_handler_t::replace) + "\n", options);
}

Status ClearQuarantine(const std::string& state_dir) {
  auto host = Host();
  if (!host) return Fail(host.error());
  auto removed = (*host)->Remove(PathIn(state_dir));
  if (!removed && !removed.error().Is(std::errc::no_such_file_or_directory)) return removed;
  return {};
}

}  // namespace tether
