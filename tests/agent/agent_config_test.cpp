#include "agent/config/agent_config.hpp"

#include <string>

#include <doctest/doctest.h>

#include "tests/support/temp_dir.hpp"

using namespace std::chrono_literals;
using tether::AgentConfig;
using tether::ConfigFile;
using tether::Diagnostics;

namespace {

constexpr char kMinimal[] = R"([source]
url = "https://git.example.com/fleet.git"
[trust]
require_signed = false
)";

// Parses `text` as agent.toml (after a minimal valid base when `with_base`), without
// checking referenced files; returns the diagnostics, one per line.
std::string Problems(const std::string& text, bool with_base = true) {
  std::vector<ConfigFile> files;
  if (with_base) files.push_back({"base.toml", kMinimal});
  files.push_back({"agent.toml", text});
  Diagnostics diagnostics;
  (void)tether::ParseAgentConfig(files, {.check_files = false}, diagnostics);
  return diagnostics.ToString();
}

}  // namespace

TEST_CASE("The example agent.toml parses with every key") {
  const char* example = std::getenv("TETHER_EXAMPLE_CONFIG");
  REQUIRE(example != nullptr);
  auto loaded = tether::LoadAgentConfig(example, {.check_files = false});
  REQUIRE_MESSAGE(loaded, (loaded ? "" : loaded.error().message()));
  CHECK(loaded->source.url == "https://git.example.com/fleet/config.git");
  CHECK(loaded->source.interval == 60s);
  CHECK(loaded->source.jitter == doctest::Approx(0.10));
  CHECK(loaded->trust.require_signed);
  CHECK(loaded->apply.drift == tether::DriftMode::kRevert);
  CHECK(loaded->apply.audit_every == 10min);
  CHECK_FALSE(loaded->packages.install_recommends);
  CHECK(loaded->packages.lock_timeout == 2min);
  CHECK(loaded->report.url == "https://fleet.example.com/v1/reports");
  CHECK(loaded->report.heartbeat == 5min);
  CHECK(loaded->labels == std::map<std::string, std::string>{{"env", "prod"}, {"site", "fra1"}});
}

TEST_CASE("Defaults apply to every key left out") {
  Diagnostics diagnostics;
  AgentConfig config = tether::ParseAgentConfig({{"agent.toml", kMinimal}}, {}, diagnostics);
  CHECK(diagnostics.ToString() == "");
  CHECK(config.source.ref == "refs/heads/main");
  CHECK(config.source.profile == "hosts/{hostname}.toml");
  CHECK(config.source.interval == 60s);
  CHECK(config.source.timeout == 30s);
  CHECK(config.source.jitter == doctest::Approx(0.10));
  CHECK_FALSE(config.trust.allow_rewind);
  CHECK(config.apply.drift == tether::DriftMode::kRevert);
  CHECK(config.apply.health_timeout == 60s);
  CHECK(config.apply.rollback == tether::RollbackMode::kAuto);
  CHECK(config.apply.allowed_paths ==
        std::vector<std::string>{"/etc", "/usr/local", "/opt", "/srv"});
  CHECK_FALSE(config.packages.install_recommends);
  CHECK(config.packages.lock_timeout == 120s);
  CHECK_FALSE(config.report.url);
  CHECK_FALSE(config.webhook.listen);
}

TEST_CASE("Each kind of mistake is reported with file, line, column and key") {
  struct Case {
    const char* toml;
    const char* expected;
  };
  const Case cases[] = {
      {"[source]\nintervall = \"5m\"\n", "agent.toml:2:1: unknown key 'source.intervall'\n"},
      {"[sauce]\n", "agent.toml:1:2: unknown key 'sauce'\n"},
      {"[source]\ninterval = 5\n",
       "agent.toml:2:12: source.interval: expected a string, got an integer\n"},
      {"[source]\ninterval = \"5x\"\n",
       "agent.toml:2:12: source.interval: invalid duration \"5x\" (use e.g. 500ms, 30s, 5m, 1h, "
       "1h30m)\n"},
      {"[source]\ninterval = \"0s\"\n", "agent.toml:2:12: source.interval: must be at least 1s\n"},
      {"[source]\njitter = \"150%\"\n",
       "agent.toml:2:10: source.jitter: invalid percentage \"150%\" (use e.g. 10%)\n"},
      {"[source]\nurl = \"git@github.com:org/fleet.git\"\n",
       "agent.toml:2:7: source.url: scp-style addresses are not supported; write "
       "ssh://user@host/path\n"},
      {"[source]\nurl = \"ftp://host/fleet.git\"\n",
       "agent.toml:2:7: source.url: unsupported scheme 'ftp' (use ssh://, https://, http://, "
       "git:// "
       "or file://)\n"},
      {"[source]\nurl = \"https://user:hunter2@host/fleet.git\"\n",
       "agent.toml:2:7: source.url: credentials in URLs are refused (they would end up in logs and "
       "reports); use source.token_file or source.ssh_key\n"},
      {"[source]\nref = \"main\"\n",
       "agent.toml:2:7: source.ref: expected a full ref name such as \"refs/heads/main\" or "
       "\"refs/tags/v1.0\"\n"},
      {"[source]\nref = \"refs/heads/a..b\"\n",
       "agent.toml:2:7: source.ref: 'refs/heads/a..b' is not a valid ref name\n"},
      {"[source]\nmax_fetch = \"lots\"\n",
       "agent.toml:2:13: source.max_fetch: invalid size \"lots\" (use e.g. 512MiB, 1GiB)\n"},
      {"[source]\nmax_fetch = \"0MiB\"\n",
       "agent.toml:2:13: source.max_fetch: must be more than 0 bytes\n"},
      {"[source]\npin = \"abc\"\n",
       "agent.toml:2:7: source.pin: expected a full commit id (40 lowercase hex digits)\n"},
      {"[source]\nprofile = \"hosts/{host}.toml\"\n",
       "agent.toml:2:11: source.profile: unknown placeholder '{host}' (use {hostname}, {fqdn} or "
       "{machine_id})\n"},
      {"[source]\nmirrors = [\"https://m/x.git\", 3]\n",
       "agent.toml:2:31: source.mirrors[1]: expected a string, got an integer\n"},
      {"[source]\nssh_key = \"relative/key\"\n",
       "agent.toml:2:11: source.ssh_key: expected an absolute path, got \"relative/key\"\n"},
      {"[trust]\nrequire_signed = true\n",
       "agent.toml:2:18: trust.require_signed: trust.allowed_signers is required when "
       "trust.require_signed is true\n"},
      {"[trust]\nrequire_signed = \"yes\"\n",
       "agent.toml:2:18: trust.require_signed: expected a boolean (true or false), got a string\n"},
      {"[apply]\ndrift = \"fix\"\n",
       "agent.toml:2:9: apply.drift: expected \"revert\", \"report\" or \"ignore\", got \"fix\"\n"},
      {"[report]\nformat = \"json\"\n",
       "agent.toml:2:10: report.format: expected \"tether.report/v1\" or \"cloudevents\", got "
       "\"json\"\n"},
      {"[apply]\nrollback = \"never\"\n",
       "agent.toml:2:12: apply.rollback: expected \"auto\" or \"off\", got \"never\"\n"},
      {"[apply]\nallowed_paths = [\"/etc/\"]\n",
       "agent.toml:2:17: apply.allowed_paths[0]: '/etc/' is not normalised (write '/etc')\n"},
      {"[apply]\nallowed_paths = [\"/etc/../root\"]\n",
       "agent.toml:2:17: apply.allowed_paths[0]: '/etc/../root' contains a '..' component\n"},
      {"[report]\nurl = \"ftp://x/\"\n",
       "agent.toml:2:7: report.url: expected an https:// (or, explicitly, http://) URL\n"},
      {"[report]\nclient_cert = \"/etc/tether/host.pem\"\n",
       "agent.toml:2:15: report.client_cert: report.client_cert and report.client_key go "
       "together\n"},
      {"[source]\npoll_url = \"ftp://host/info/refs\"\n",
       "agent.toml:2:12: source.poll_url: expected an http:// or https:// URL\n"},
      {"[source]\npoll_url = \"https://ops:pw@host/info/refs\"\n",
       "agent.toml:2:12: source.poll_url: credentials in URLs are refused (they would end up in "
       "logs); use source.token_file\n"},
      {"[webhook]\nlisten = \"0.0.0.0:99999\"\nsecret_file = \"/s\"\n",
       "agent.toml:2:10: webhook.listen: expected a port from 1 to 65535 after ':'\n"},
      {"[packages]\ninstall_recommends = \"yes\"\n",
       "agent.toml:2:22: packages.install_recommends: expected a boolean (true or false), got a "
       "string\n"},
      {"[webhook]\nlisten = \"0.0.0.0:9420\"\n",
       "agent.toml:2:10: webhook.listen: webhook.secret_file is required with webhook.listen\n"},
      {"[labels]\nEnv = \"prod\"\n",
       "agent.toml:2:7: labels.Env: label names use a-z, 0-9, '_' and '-' (at most 63)\n"},
      {"[labels]\nenv = 1\n", "agent.toml:2:7: labels.env: expected a string, got an integer\n"},
      {"[source\n",
       "agent.toml:1:8: TOML syntax error: Error while parsing table header: expected "
       "']', saw '\\n'\n"},
  };
  for (const auto& c : cases) {
    CAPTURE(std::string(c.toml));
    CHECK(Problems(c.toml) == std::string(c.expected));
  }
}

TEST_CASE("Every problem is reported, not just the first") {
  const std::string problems =
      Problems("[source]\nurl = 3\ninterval = \"x\"\n[apply]\ndrift = \"no\"\ntypo = 1\n", false);
  CHECK(problems ==
        "agent.toml:2:7: source.url: expected a string, got an integer\n"
        "agent.toml:3:12: source.interval: invalid duration \"x\" (use e.g. 500ms, 30s, 5m, 1h, "
        "1h30m)\n"
        "agent.toml:5:9: apply.drift: expected \"revert\", \"report\" or \"ignore\", got \"no\"\n"
        "agent.toml:6:1: unknown key 'apply.typo'\n"
        "agent.toml: source.url: is required: the URL of the fleet repo\n"
        "agent.toml: trust.require_signed: trust.allowed_signers is required when "
        "trust.require_signed is true\n");
}

TEST_CASE("Drop-ins override keys in lexical order and keep the rest") {
  tether::testing::TempDir dir("config");
  dir.WriteFile("agent.toml", std::string(kMinimal) + "[labels]\nenv = \"prod\"\nsite = \"a\"\n");
  dir.WriteFile("agent.d/20-late.toml", "[source]\ninterval = \"2m\"\n[labels]\nenv = \"stage\"\n");
  dir.WriteFile("agent.d/10-early.toml", "[source]\ninterval = \"5m\"\ntimeout = \"10s\"\n");
  dir.WriteFile("agent.d/ignored.conf", "not toml at all [");
  auto config = tether::LoadAgentConfig(dir.Path("agent.toml"));
  REQUIRE_MESSAGE(config, (config ? "" : config.error().message()));
  CHECK(config->source.interval == 2min);
  CHECK(config->source.timeout == 10s);
  CHECK(config->labels.at("env") == "stage");
  CHECK(config->labels.at("site") == "a");
  CHECK(config->files == std::vector<std::string>{dir.Path("agent.toml"),
                                                  dir.Path("agent.d/10-early.toml"),
                                                  dir.Path("agent.d/20-late.toml")});
}

TEST_CASE("A problem in a drop-in names the drop-in") {
  tether::testing::TempDir dir("config");
  dir.WriteFile("agent.toml", kMinimal);
  dir.WriteFile("agent.d/50-bad.toml", "[apply]\n\nhealth_timeout = \"soon\"\n");
  auto config = tether::LoadAgentConfig(dir.Path("agent.toml"));
  REQUIRE_FALSE(config);
  CHECK(config.error().message() ==
        dir.Path("agent.d/50-bad.toml") +
            ":3:18: apply.health_timeout: invalid duration \"soon\" (use e.g. 500ms, 30s, 5m, "
            "1h, 1h30m)");
}

TEST_CASE("Referenced key and token files must be readable") {
  tether::testing::TempDir dir("config");
  dir.WriteFile("signers", "ops@example.com ssh-ed25519 AAAA\n");
  dir.WriteFile("agent.toml", "[source]\nurl = \"ssh://git@host/fleet.git\"\nssh_key = \"" +
                                  dir.Path("missing-key") + "\"\nknown_hosts = \"" +
                                  dir.Path("signers") + "\"\n[trust]\nallowed_signers = \"" +
                                  dir.Path("signers") + "\"\n");
  auto config = tether::LoadAgentConfig(dir.Path("agent.toml"));
  REQUIRE_FALSE(config);
  CHECK(config.error().message() == dir.Path("agent.toml") + ":3:11: source.ssh_key: open '" +
                                        dir.Path("missing-key") + "': No such file or directory");

  auto missing = tether::LoadAgentConfig(dir.Path("nope.toml"));
  REQUIRE_FALSE(missing);
  CHECK(missing.error().message() ==
        "read agent config: open '" + dir.Path("nope.toml") + "': No such file or directory");
}
