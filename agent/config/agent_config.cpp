#include "agent/config/agent_config.hpp"

#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <functional>
#include <map>

#include "agent/toml/toml_reader.hpp"
#include "common/duration.hpp"
#include "common/filesystem.hpp"

namespace tether {

namespace {

constexpr std::size_t kMaxConfigSize = 1 << 20;

// Where each key got its final value, for checks that span keys.
using Origins = std::map<std::string, Location, std::less<>>;

class ConfigParser {
 public:
  ConfigParser(AgentConfig& config, Diagnostics& diagnostics)
      : config_(config), diagnostics_(diagnostics) {}

  void ParseFile(const ConfigFile& file) {
    auto document = ParseToml(file.text, file.name, diagnostics_);
    if (!document) return;
    TomlTable top(*document, file.name, "", diagnostics_);
    Section(top, "source", [&](TomlTable& t) { Source(t); });
    Section(top, "trust", [&](TomlTable& t) { Trust(t); });
    Section(top, "apply", [&](TomlTable& t) { Apply(t); });
    Section(top, "packages", [&](TomlTable& t) { Packages(t); });
    Section(top, "report", [&](TomlTable& t) { Report(t); });
    Section(top, "webhook", [&](TomlTable& t) { Webhook(t); });
    Section(top, "metrics", [&](TomlTable& t) { Metrics(t); });
    Section(top, "labels", [&](TomlTable& t) { Labels(t); });
    top.ReportUnknownKeys();
  }

  const Origins& origins() const { return origins_; }

 private:
  void Section(TomlTable& top, const char* name, const std::function<void(TomlTable&)>& parse) {
    const toml::table* table = top.Table(name);
    if (table == nullptr) return;
    TomlTable section(*table, top.file(), name, diagnostics_);
    parse(section);
    section.ReportUnknownKeys();
  }

  template <typename T>
  void Set(TomlTable& t, std::string_view key, std::optional<T> value, T& target) {
    if (!value) return;
    target = std::move(*value);
    origins_[t.Name(key)] = t.Where(key);
  }
  template <typename T>
  void Set(TomlTable& t, std::string_view key, std::optional<T> value, std::optional<T>& target) {
    if (!value) return;
    target = std::move(*value);
    origins_[t.Name(key)] = t.Where(key);
  }

  void Source(TomlTable& t) {
    auto& s = config_.source;
    Set(t, "url", t.String("url"), s.url);
    Set(t, "ref", t.String("ref"), s.ref);
    Set(t, "pin", t.String("pin"), s.pin);
    Set(t, "mirrors", t.Strings("mirrors"), s.mirrors);
    Set(t, "profile", t.String("profile"), s.profile);
    Set(t, "interval", t.Duration("interval"), s.interval);
    if (auto jitter = t.String("jitter")) {
      auto fraction = ParsePercentage(*jitter);
      if (fraction) {
        Set(t, "jitter", std::optional<double>(*fraction), s.jitter);
      } else {
        t.Error("jitter", fraction.error().message());
      }
    }
    Set(t, "timeout", t.Duration("timeout"), s.timeout);
    if (auto size = t.String("max_fetch")) {
      auto bytes = ParseSize(*size);
      if (bytes && *bytes > 0) {
        Set(t, "max_fetch", std::optional<std::uint64_t>(*bytes), s.max_fetch);
      } else {
        t.Error("max_fetch", bytes ? "must be more than 0 bytes" : bytes.error().message());
      }
    }
    Set(t, "ssh_key", t.String("ssh_key"), s.ssh_key);
    Set(t, "known_hosts", t.String("known_hosts"), s.known_hosts);
    Set(t, "token_file", t.String("token_file"), s.token_file);
    Set(t, "ca_file", t.String("ca_file"), s.ca_file);
    Set(t, "poll_url", t.String("poll_url"), s.poll_url);
  }

  void Trust(TomlTable& t) {
    auto& s = config_.trust;
    Set(t, "require_signed", t.Bool("require_signed"), s.require_signed);
    Set(t, "allowed_signers", t.String("allowed_signers"), s.allowed_signers);
    Set(t, "allow_rewind", t.Bool("allow_rewind"), s.allow_rewind);
  }

  void Apply(TomlTable& t) {
    auto& s = config_.apply;
    if (auto drift = t.String("drift")) {
      if (auto mode = ParseDriftMode(*drift)) {
        Set(t, "drift", mode, s.drift);
      } else {
        t.Error("drift", std::string("expected ") + kDriftModeChoices + ", got \"" + *drift + "\"");
      }
    }
    Set(t, "audit_every", t.Duration("audit_every"), s.audit_every);
    Set(t, "health_timeout", t.Duration("health_timeout"), s.health_timeout);
    if (auto rollback = t.String("rollback")) {
      if (*rollback == "auto") {
        Set(t, "rollback", std::optional(RollbackMode::kAuto), s.rollback);
      } else if (*rollback == "off") {
        Set(t, "rollback", std::optional(RollbackMode::kOff), s.rollback);
      } else {
        t.Error("rollback", "expected \"auto\" or \"off\", got \"" + *rollback + "\"");
      }
    }
    Set(t, "allowed_paths", t.Strings("allowed_paths"), s.allowed_paths);
  }

  void Packages(TomlTable& t) {
    auto& s = config_.packages;
    Set(t, "install_recommends", t.Bool("install_recommends"), s.install_recommends);
    Set(t, "lock_timeout", t.Duration("lock_timeout"), s.lock_timeout);
  }

  void Report(TomlTable& t) {
    auto& s = config_.report;
    Set(t, "url", t.String("url"), s.url);
    Set(t, "token_file", t.String("token_file"), s.token_file);
    Set(t, "client_cert", t.String("client_cert"), s.client_cert);
    Set(t, "client_key", t.String("client_key"), s.client_key);
    Set(t, "ca_file", t.String("ca_file"), s.ca_file);
    Set(t, "heartbeat", t.Duration("heartbeat"), s.heartbeat);
    if (auto format = t.String("format")) {
      if (*format == kReportFormatTether || *format == kReportFormatCloudEvents) {
        Set(t, "format", format, s.format);
      } else {
        t.Error("format", std::string("expected \"") + kReportFormatTether + "\" or \"" +
                              kReportFormatCloudEvents + "\", got \"" + *format + "\"");
      }
    }
  }

  void Webhook(TomlTable& t) {
    Set(t, "listen", t.String("listen"), config_.webhook.listen);
    Set(t, "secret_file", t.String("secret_file"), config_.webhook.secret_file);
  }

  void Metrics(TomlTable& t) { Set(t, "listen", t.String("listen"), config_.metrics.listen); }

  void Labels(TomlTable& t) {
    // Every key is a label; values must be strings.
    for (const auto& key : t.Keys()) {
      if (key.empty() || key.size() > 63 ||
          key.find_first_not_of("abcdefghijklmnopqrstuvwxyz0123456789_-") != std::string::npos) {
        t.Node(key);
        t.Error(key, "label names use a-z, 0-9, '_' and '-' (at most 63)");
        continue;
      }
      Set(t, key, t.String(key), config_.labels[key]);
    }
  }

  AgentConfig& config_;
  Diagnostics& diagnostics_;
  Origins origins_;
};

bool IsHex(std::string_view text) {
  return !text.empty() && text.find_first_not_of("0123456789abcdef") == std::string_view::npos;
}

// Checks a Git URL: a supported scheme, a host (but for file://), and no credentials.
std::optional<std::string> CheckGitUrl(std::string_view url) {
  const auto scheme_end = url.find("://");
  if (scheme_end == std::string_view::npos) {
    if (url.find(':') != std::string_view::npos && url.find('@') != std::string_view::npos) {
      return "scp-style addresses are not supported; write ssh://user@host/path";
    }
    return "expected a URL with a scheme (ssh://, https://, http://, git:// or file://)";
  }
  const std::string_view scheme = url.substr(0, scheme_end);
  if (scheme != "ssh" && scheme != "https" && scheme != "http" && scheme != "git" &&
      scheme != "file") {
    return "unsupported scheme '" + std::string(scheme) +
           "' (use ssh://, https://, http://, git:// or file://)";
  }
  const std::string_view rest = url.substr(scheme_end + 3);
  const std::string_view authority = rest.substr(0, rest.find('/'));
  if (scheme == "file") {
    if (!authority.empty()) return "file:// URLs take an absolute path: file:///srv/fleet.git";
    return std::nullopt;
  }
  if (authority.empty()) return "the URL has no host";
  const auto at = authority.rfind('@');
  if (at != std::string_view::npos) {
    const std::string_view userinfo = authority.substr(0, at);
    if (scheme != "ssh" || userinfo.find(':') != std::string_view::npos) {
      return "credentials in URLs are refused (they would end up in logs and reports); "
             "use source.token_file or source.ssh_key";
    }
  }
  if (rest.size() <= authority.size() + 1) return "the URL has no repository path";
  return std::nullopt;
}

// git check-ref-format's rules, as far as a configuration needs them.
std::optional<std::string> CheckRef(std::string_view ref) {
  if (ref.substr(0, 5) != "refs/" || ref.size() == 5) {
    return "expected a full ref name such as \"refs/heads/main\" or \"refs/tags/v1.0\"";
  }
  if (ref.find("..") != std::string_view::npos || ref.find("//") != std::string_view::npos ||
      ref.find("@{") != std::string_view::npos || ref.back() == '/' || ref.back() == '.' ||
      (ref.size() >= 5 && ref.substr(ref.size() - 5) == ".lock")) {
    return "'" + std::string(ref) + "' is not a valid ref name";
  }
  for (unsigned char c : ref) {
    if (c < 0x20 || c == 0x7f || c == ' ' || c == '~' || c == '^' || c == ':' || c == '?' ||
        c == '*' || c == '[' || c == '\\') {
      return "'" + std::string(ref) + "' is not a valid ref name";
    }
  }
  return std::nullopt;
}

// "address:port" or "[v6]:port".
// An http:// or https:// URL with a host and no credentials (source.poll_url).
std::optional<std::string> CheckHttpUrl(std::string_view url) {
  std::string_view rest;
  if (url.rfind("https://", 0) == 0) {
    rest = url.substr(8);
  } else if (url.rfind("http://", 0) == 0) {
    rest = url.substr(7);
  } else {
    return "expected an http:// or https:// URL";
  }
  const std::string_view authority = rest.substr(0, rest.find('/'));
  if (authority.empty()) return "the URL has no host";
  if (authority.find('@') != std::string_view::npos) {
    return "credentials in URLs are refused (they would end up in logs); use source.token_file";
  }
  return std::nullopt;
}

std::optional<std::string> CheckListen(std::string_view listen) {
  const auto colon = listen.rfind(':');
  if (colon == std::string_view::npos || colon == 0) return "expected \"address:port\"";
  const std::string_view port = listen.substr(colon + 1);
  if (port.empty() || port.size() > 5 ||
      port.find_first_not_of("0123456789") != std::string_view::npos ||
      std::stoi(std::string(port)) < 1 || std::stoi(std::string(port)) > 65535) {
    return "expected a port from 1 to 65535 after ':'";
  }
  return std::nullopt;
}

class ConfigChecker {
 public:
  ConfigChecker(const AgentConfig& config, const Origins& origins, const ConfigOptions& options,
                Diagnostics& diagnostics)
      : config_(config), origins_(origins), options_(options), diagnostics_(diagnostics) {}

  void Check() {
    const auto& source = config_.source;
    if (source.url.empty()) {
      Error("source.url", "is required: the URL of the fleet repo");
    } else if (auto problem = CheckGitUrl(source.url)) {
      Error("source.url", *problem);
    }
    for (std::size_t i = 0; i < source.mirrors.size(); ++i) {
      if (auto problem = CheckGitUrl(source.mirrors[i])) {
        Error("source.mirrors", "[" + std::to_string(i) + "]: " + *problem, false);
      }
    }
    if (source.poll_url) {
      if (auto problem = CheckHttpUrl(*source.poll_url)) Error("source.poll_url", *problem);
    }
    if (auto problem = CheckRef(source.ref)) Error("source.ref", *problem);
    if (source.pin &&
        !((source.pin->size() == 40 || source.pin->size() == 64) && IsHex(*source.pin))) {
      Error("source.pin", "expected a full commit id (40 lowercase hex digits)");
    }
    CheckProfile(source.profile);
    AtLeast("source.interval", source.interval, std::chrono::seconds(1));
    AtLeast("source.timeout", source.timeout, std::chrono::seconds(1));
    AtLeast("apply.audit_every", config_.apply.audit_every, std::chrono::seconds(1));
    AtLeast("apply.health_timeout", config_.apply.health_timeout, std::chrono::seconds(1));
    AtLeast("report.heartbeat", config_.report.heartbeat, std::chrono::seconds(1));

    Readable("source.ssh_key", source.ssh_key);
    Readable("source.known_hosts", source.known_hosts);
    Readable("source.token_file", source.token_file);
    Readable("source.ca_file", source.ca_file);
    if (source.ssh_key && source.url.substr(0, 6) == "ssh://" && !source.known_hosts) {
      Error("source.ssh_key",
            "source.known_hosts is required with ssh:// so the server's host key is checked");
    }

    if (config_.trust.require_signed && !config_.trust.allowed_signers) {
      Error("trust.require_signed",
            "trust.allowed_signers is required when trust.require_signed is true");
    }
    Readable("trust.allowed_signers", config_.trust.allowed_signers);

    for (std::size_t i = 0; i < config_.apply.allowed_paths.size(); ++i) {
      const auto& path = config_.apply.allowed_paths[i];
      auto normalised = NormalizePath(path);
      if (!normalised) {
        Error("apply.allowed_paths", "[" + std::to_string(i) + "]: " + normalised.error().message(),
              false);
      } else if (*normalised != path) {
        Error("apply.allowed_paths",
              "[" + std::to_string(i) + "]: '" + path + "' is not normalised (write '" +
                  *normalised + "')",
              false);
      }
    }

    const auto& report = config_.report;
    if (report.url) {
      const std::string_view url = *report.url;
      if (url.substr(0, 8) != "https://" && url.substr(0, 7) != "http://") {
        Error("report.url", "expected an https:// (or, explicitly, http://) URL");
      } else if (url.substr(url.find("://") + 3).find('@') <
                 url.substr(url.find("://") + 3).find('/')) {
        Error("report.url", "credentials in URLs are refused; use report.token_file");
      }
    }
    if (report.client_cert.has_value() != report.client_key.has_value()) {
      Error(report.client_cert ? "report.client_cert" : "report.client_key",
            "report.client_cert and report.client_key go together");
    }
    Readable("report.token_file", report.token_file);
    Readable("report.client_cert", report.client_cert);
    Readable("report.client_key", report.client_key);
    Readable("report.ca_file", report.ca_file);

    if (config_.webhook.listen) {
      if (auto problem = CheckListen(*config_.webhook.listen)) Error("webhook.listen", *problem);
      if (!config_.webhook.secret_file) {
        Error("webhook.listen", "webhook.secret_file is required with webhook.listen");
      }
    }
    Readable("webhook.secret_file", config_.webhook.secret_file);
    if (config_.metrics.listen) {
      if (auto problem = CheckListen(*config_.metrics.listen)) Error("metrics.listen", *problem);
    }
  }

 private:
  Location Where(std::string_view key) const {
    auto it = origins_.find(key);
    if (it != origins_.end()) return it->second;
    return {config_.files.empty() ? std::string("agent.toml") : config_.files.front(), 0, 0};
  }

  void Error(std::string_view key, const std::string& message, bool separator = true) {
    diagnostics_.Error(Where(key), std::string(key) + (separator ? ": " : "") + message);
  }

  void AtLeast(std::string_view key, std::chrono::milliseconds value,
               std::chrono::milliseconds minimum) {
    if (value < minimum) Error(key, "must be at least " + FormatDuration(minimum));
  }

  void CheckProfile(const std::string& profile) {
    if (profile.empty() || profile.front() == '/') {
      Error("source.profile",
            "expected a path relative to the repo, e.g. \"hosts/{hostname}.toml\"");
      return;
    }
    std::size_t pos = 0;
    while ((pos = profile.find('{', pos)) != std::string::npos) {
      const auto end = profile.find('}', pos);
      const std::string name =
          profile.substr(pos + 1, end == std::string::npos ? std::string::npos : end - pos - 1);
      if (end == std::string::npos ||
          (name != "hostname" && name != "fqdn" && name != "machine_id")) {
        Error("source.profile",
              "unknown placeholder '{" + name + "}' (use {hostname}, {fqdn} or {machine_id})");
        return;
      }
      pos = end + 1;
    }
  }

  void Readable(std::string_view key, const std::optional<std::string>& path) {
    if (!path) return;
    if (path->empty() || path->front() != '/') {
      Error(key, "expected an absolute path, got \"" + *path + "\"");
      return;
    }
    if (!options_.check_files) return;
    auto content = ReadLocalFile(*path, 1 << 20);
    if (!content) Error(key, content.error().message());
  }

  const AgentConfig& config_;
  const Origins& origins_;
  const ConfigOptions& options_;
  Diagnostics& diagnostics_;
};

}  // namespace

const char* DriftModeName(DriftMode mode) {
  switch (mode) {
    case DriftMode::kRevert:
      return "revert";
    case DriftMode::kReport:
      return "report";
    case DriftMode::kIgnore:
      return "ignore";
  }
  return "revert";
}

std::optional<DriftMode> ParseDriftMode(std::string_view name) {
  for (DriftMode mode : {DriftMode::kRevert, DriftMode::kReport, DriftMode::kIgnore}) {
    if (name == DriftModeName(mode)) return mode;
  }
  return std::nullopt;
}

AgentConfig ParseAgentConfig(const std::vector<ConfigFile>& files, const ConfigOptions& options,
                             Diagnostics& diagnostics) {
  AgentConfig config;
  ConfigParser parser(config, diagnostics);
  for (const auto& file : files) {
    config.files.push_back(file.name);
    parser.ParseFile(file);
  }
  ConfigChecker(config, parser.origins(), options, diagnostics).Check();
  return config;
}

Result<std::vector<ConfigFile>> ReadAgentConfigFiles(const std::string& path) {
  std::vector<ConfigFile> files;
  auto main_text = ReadLocalFile(path, kMaxConfigSize);
  if (!main_text) return AddContext(main_text, "read agent config");
  files.push_back({path, std::move(*main_text)});

  const std::filesystem::path dropin_dir = std::filesystem::path(path).parent_path() / "agent.d";
  std::error_code ec;
  std::vector<std::string> dropins;
  for (const auto& entry : std::filesystem::directory_iterator(dropin_dir, ec)) {
    if (entry.path().extension() == ".toml") dropins.push_back(entry.path().string());
  }
  if (ec && ec != std::errc::no_such_file_or_directory) {
    return Fail(Error(ec, "read drop-in directory '" + dropin_dir.string() + "': " + ec.message()));
  }
  std::sort(dropins.begin(), dropins.end());
  for (const auto& dropin : dropins) {
    auto text = ReadLocalFile(dropin, kMaxConfigSize);
    if (!text) return AddContext(text, "read agent config drop-in");
    files.push_back({dropin, std::move(*text)});
  }
  return files;
}

Result<AgentConfig> LoadAgentConfig(const std::string& path, const ConfigOptions& options) {
  auto files = ReadAgentConfigFiles(path);
  if (!files) return Fail(files.error());
  Diagnostics diagnostics;
  AgentConfig config = ParseAgentConfig(*files, options, diagnostics);
  if (diagnostics.has_errors()) {
    std::string message = diagnostics.ToString();
    if (!message.empty() && message.back() == '\n') message.pop_back();
    return Fail(std::errc::invalid_argument, message);
  }
  return config;
}

}  // namespace tether
