// agent.toml: tetherd's local configuration, with drop-ins.
//
// The defaults below are the one place they are written in the code; README.md mirrors
// them. Secrets (tokens, keys) are only ever referenced by path.
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "agent/toml/diagnostics.hpp"
#include "common/error.hpp"

namespace tether {

enum class DriftMode : std::uint8_t { kRevert, kReport, kIgnore };
enum class RollbackMode { kAuto, kOff };

[[nodiscard]] const char* DriftModeName(DriftMode mode);
// "revert", "report" or "ignore"; nothing for anything else.
[[nodiscard]] std::optional<DriftMode> ParseDriftMode(std::string_view name);
inline constexpr char kDriftModeChoices[] = "\"revert\", \"report\" or \"ignore\"";

struct SourceConfig {
  std::string url;                                // required
  std::string ref = "refs/heads/main";            // a full ref name
  std::optional<std::string> pin;                 // a commit id; overrides ref
  std::vector<std::string> mirrors;               // tried in order when url fails
  std::string profile = "hosts/{hostname}.toml";  // {hostname} {fqdn} {machine_id}
  std::chrono::milliseconds interval = std::chrono::seconds(60);
  double jitter = 0.10;  // fraction of interval
  std::chrono::milliseconds timeout = std::chrono::seconds(30);
  // The most one fetch may bring from the server: past it, the fetch is stopped and
  // what it brought is removed.
  std::uint64_t max_fetch = std::uint64_t{1} << 30;
  std::optional<std::string> ssh_key;
  std::optional<std::string> known_hosts;
  std::optional<std::string> token_file;
  std::optional<std::string> ca_file;
  // An http(s):// URL whose answer changes when the fleet repo does (the repo's dumb-HTTP
  // info/refs, a forge API's commit of the ref): polled with If-None-Match /
  // If-Modified-Since before any Git talk, a 304 (or the same body again) meaning no
  // change. None: every poll asks the Git source.
  std::optional<std::string> poll_url;
};

struct TrustConfig {
  bool require_signed = true;
  std::optional<std::string> allowed_signers;  // required when require_signed
  bool allow_rewind = false;
};

struct ApplyConfig {
  DriftMode drift = DriftMode::kRevert;
  std::chrono::milliseconds audit_every = std::chrono::minutes(10);
  std::chrono::milliseconds health_timeout = std::chrono::seconds(60);
  RollbackMode rollback = RollbackMode::kAuto;
  std::vector<std::string> allowed_paths = {"/etc", "/usr/local", "/opt", "/srv"};
};

// Packages (apt): what a transaction pulls in, and how long it waits for another dpkg.
struct PackagesConfig {
  bool install_recommends = false;
  std::chrono::milliseconds lock_timeout = std::chrono::seconds(120);
};

struct ReportConfig {
  std::optional<std::string> url;  // none: reports are not sent
  std::optional<std::string> token_file;
  std::optional<std::string> client_cert;
  std::optional<std::string> client_key;
  std::optional<std::string> ca_file;
  std::chrono::milliseconds heartbeat = std::chrono::minutes(5);
  // How a report is sent: kReportFormatTether (the JSON body, tether.report/v1) or
  // kReportFormatCloudEvents (the same body as a CloudEvents 1.0 event, HTTP binary mode).
  std::string format = "tether.report/v1";
};
inline constexpr char kReportFormatTether[] = "tether.report/v1";
inline constexpr char kReportFormatCloudEvents[] = "cloudevents";

struct WebhookConfig {
  std::optional<std::string> listen;  // "address:port"; none: no webhook listener
  std::optional<std::string> secret_file;
};

struct MetricsConfig {
  std::optional<std::string> listen;  // "address:port"; none: metrics only via tetherctl
};

struct AgentConfig {
  SourceConfig source;
  TrustConfig trust;
  ApplyConfig apply;
  PackagesConfig packages;
  ReportConfig report;
  WebhookConfig webhook;
  MetricsConfig metrics;
  std::map<std::string, std::string> labels;
  std::vector<std::string> files;  // the files read, in order
};

struct ConfigFile {
  std::string name;  // as shown in messages
  std::string text;
};

struct ConfigOptions {
  bool check_files = true;  // referenced key/token/CA files must be readable
};

// Parses `files` in order, each later file overriding the keys it sets, then validates
// the result. Every problem is reported in `diagnostics`; the config is meaningful only
// when it has no errors.
[[nodiscard]] AgentConfig ParseAgentConfig(const std::vector<ConfigFile>& files,
                                           const ConfigOptions& options, Diagnostics& diagnostics);

// Reads `path`, then every `*.toml` in the directory `agent.d` beside it, in lexical
// order (what LoadAgentConfig parses).
[[nodiscard]] Result<std::vector<ConfigFile>> ReadAgentConfigFiles(const std::string& path);

// Reads the files (ReadAgentConfigFiles) and parses them. On failure the error's message
// lists every diagnostic, one per line.
[[nodiscard]] Result<AgentConfig> LoadAgentConfig(const std::string& path,
                                                  const ConfigOptions& options = {});

}  // namespace tether
