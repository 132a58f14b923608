// The binaries' command lines: --help, --version, usage errors, exit codes.
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include <doctest/doctest.h>

#include "common/process.hpp"
#include "tests/support/temp_dir.hpp"

namespace {

std::string Binary(const char* variable) {
  const char* path = std::getenv(variable);
  REQUIRE_MESSAGE(path != nullptr, variable << " is set by meson");
  return path;
}

tether::RunResult Invoke(const std::string& binary, std::vector<std::string> args) {
  tether::RunOptions options;
  options.argv = {binary};
  options.argv.insert(options.argv.end(), args.begin(), args.end());
  auto result = tether::Run(options);
  REQUIRE(result);
  return *result;
}

}  // namespace

TEST_CASE("tetherd and tetherctl answer --version with their name and the project version") {
  for (const char* name : {"tetherd", "tetherctl"}) {
    CAPTURE(name);
    const std::string variable = std::string(name) == "tetherd" ? "TETHERD" : "TETHERCTL";
    auto result = Invoke(Binary(variable.c_str()), {"--version"});
    CHECK(result.exit_code == 0);
    CHECK(result.out == std::string(name) + " " + std::getenv("TETHER_VERSION") + "\n");
  }
}

TEST_CASE("tetherd --help documents its options, files and exit status") {
  auto result = Invoke(Binary("TETHERD"), {"--help"});
  CHECK(result.exit_code == 0);
  for (const char* expected :
       {"Usage: tetherd [OPTIONS]", "--config FILE=/etc/tether/agent.toml", "--state-dir DIR",
        "--cache-dir DIR", "--socket PATH", "--root DIR", "--once", "--dry-run", "FILES",
        "/etc/tether/agent.d/*.toml", "EXIT STATUS"}) {
    CAPTURE(expected);
    CHECK(result.out.find(expected) != std::string::npos);
  }
}

TEST_CASE("tetherctl --help describes the tool") {
  auto result = Invoke(Binary("TETHERCTL"), {"--help"});
  CHECK(result.exit_code == 0);
  CHECK(result.out.find("Usage: tetherctl") != std::string::npos);
  CHECK(result.out.find("EXIT STATUS") != std::string::npos);
}

TEST_CASE("A usage error exits 2 and says what was wrong") {
  for (const char* variable : {"TETHERD", "TETHERCTL"}) {
    CAPTURE(variable);
    auto result = Invoke(Binary(variable), {"--no-such-flag"});
    CHECK(result.exit_code == 2);
    CHECK(result.err.find("--no-such-flag") != std::string::npos);
  }
  auto level = Invoke(Binary("TETHERD"), {"--log-level", "loud"});
  CHECK(level.exit_code == 2);
  CHECK(level.err.find("unknown log level 'loud'") != std::string::npos);
}

TEST_CASE("tetherctl validate accepts the bundled example fleet repo") {
  const std::string fleet = std::string(std::getenv("TETHER_SOURCE_ROOT")) + "/config/fleet";
  const std::string config = std::string(std::getenv("TETHER_SOURCE_ROOT")) + "/config/agent.toml";
  auto result = Invoke(Binary("TETHERCTL"), {"validate", fleet, "--config", config});
  CHECK(result.exit_code == 0);
  CHECK(result.out == "2 profiles checked, 17 resources: 0 errors, 0 warnings\n");

  // Without the host's labels, a label in a template is only a warning.
  auto unlabelled = Invoke(Binary("TETHERCTL"), {"validate", fleet, "--host", "web-01"});
  CHECK(unlabelled.exit_code == 0);
  CHECK(unlabelled.out.find(fleet + "/files/motd:1:22: warning: label 'labels.env'") == 0);
}

TEST_CASE("tetherctl validate prints every problem as file:line:col and exits 1") {
  tether::testing::TempDir repo("fleet");
  repo.WriteFile("hosts/a.toml",
                 "include = [\"roles/r.toml\"]\n[[file]]\npath = \"/tmp/x\"\n"
                 "content = \"\"\n");
  repo.WriteFile("hosts/b.toml", "include = [\"roles/r.toml\"]\n");
  repo.WriteFile("roles/r.toml", "[[package]]\nname = \"Bad Name\"\n");
  auto result = Invoke(Binary("TETHERCTL"), {"validate", repo.path()});
  CHECK(result.exit_code == 1);
  // The role's problem shows once although two hosts include it.
  CHECK(result.out ==
        repo.Path("hosts/a.toml") +
            ":3:8: file.path: '/tmp/x' is outside apply.allowed_paths (/etc, /usr/local, /opt, "
            "/srv)\n" +
            repo.Path("roles/r.toml") +
            ":2:8: package.name: 'Bad Name' is not a valid package name (lowercase letters, "
            "digits, '+', '-', '.')\n"
            "2 profiles checked, 0 resources: 2 errors, 0 warnings\n");
}

TEST_CASE("tetherctl render prints a host's desired state, with facts from the command line") {
  tether::testing::TempDir repo("fleet");
  repo.WriteFile("hosts/db-01.toml",
                 "[[file]]\npath = \"/etc/id\"\ncontent = \"{{ host.fqdn }} {{ host.machine_id }} "
                 "{{ labels.dc }}\"\ntemplate = true\n");
  auto json =
      Invoke(Binary("TETHERCTL"), {"render", repo.path(), "--host", "db-01", "--json", "--fact",
                                   "fqdn=db-01.example.com", "--label", "dc=fra1"});
  CHECK(json.exit_code == 0);
  CHECK(json.out.find("\"schema\": \"tether.desired/v1\"") != std::string::npos);
  CHECK(json.out.find("\"content\": \"db-01.example.com 00000000000000000000000000000000 "
                      "fra1\"") != std::string::npos);

  auto text =
      Invoke(Binary("TETHERCTL"), {"render", repo.path(), "--host", "db-01", "--label", "dc=fra1"});
  CHECK(text.exit_code == 0);
  CHECK(text.out.find("file:/etc/id  (hosts/db-01.toml:1:1)") != std::string::npos);

  auto bad_fact = Invoke(Binary("TETHERCTL"),
                         {"render", repo.path(), "--host", "db-01", "--fact", "ip=1.2.3.4"});
  CHECK(bad_fact.exit_code == 2);
  CHECK(bad_fact.err ==
        "tetherctl: --fact: unknown fact 'ip' (known: hostname, fqdn, "
        "machine_id, os_id, os_version, arch)\n");

  auto no_host = Invoke(Binary("TETHERCTL"), {"render", repo.path()});
  CHECK(no_host.exit_code == 2);

  auto missing = Invoke(Binary("TETHERCTL"), {"render", repo.path(), "--host", "web-09"});
  CHECK(missing.exit_code == 1);
  CHECK(missing.err == repo.Path("hosts/web-09.toml") +
                           ": cannot read profile 'hosts/web-09.toml': no such file in the repo\n");
}

TEST_CASE("tetherd, which runs every --once cycle, loads only the C libraries a cycle needs") {
  // What the dynamic loader would map at its start (as ldd lists it). Each library it
  // loads is paid for by every cycle: the bus library is loaded when a profile has units,
  // libgit2 and TLS live in the git worker, the C++ runtime is linked in.
  tether::RunOptions options;
  options.argv = {Binary("TETHERD"), "--version"};
  options.env.push_back("LD_TRACE_LOADED_OBJECTS=1");
  auto listed = tether::Run(options);
  REQUIRE(listed);
  REQUIRE(listed->ok());
  CHECK(listed->out.find("libc.so.6") != std::string::npos);
  for (const char* library : {"libsystemd", "libgit2", "libssl", "libcrypto", "libstdc++",
                              "libgcc_s", "libfmt", "libspdlog", "libtomlplusplus"}) {
    CAPTURE(library);
    CHECK(listed->out.find(library) == std::string::npos);
  }
}

TEST_CASE("tetherd runs a cycle itself and becomes the program for any other mode") {
  // tetherd (tetherd-cycle, copied) beside three stand-ins that say which one ran, with what
  // arguments.
  tether::testing::TempDir dir("launch");
  const std::string tetherd = dir.Path("tetherd");
  auto copied = tether::Run({.argv = {"cp", Binary("TETHERD"), tetherd}});
  REQUIRE((copied && copied->ok()));
  for (const char* name : {"tetherd-daemon", "tetherd-git", "tetherd-http"}) {
    dir.WriteFile(name, std::string("#!/bin/sh\necho ") + name + " \"$@\"\n", 0755);
  }
  const struct {
    std::vector<std::string> args;
    const char* program;
  } handed_over[] = {
      {{}, "tetherd-daemon"},
      {{"--log-level", "debug"}, "tetherd-daemon"},
      {{"--git-worker", "--git-worker-user", "tether-git"}, "tetherd-git"},
      {{"--http-fetch", "--http-fetch-user", "tether-git"}, "tetherd-http"},
      {{"--once", "--git-worker"}, "tetherd-git"},  // as the daemon's own main chooses
      {{"--cycle-process", "--http-fetch"}, "tetherd-http"},
      // A value is a value, whatever it looks like; a flag set false is not set.
      {{"--config", "--once"}, "tetherd-daemon"},
      {{"--root", "--git-worker"}, "tetherd-daemon"},
      {{"--once=false"}, "tetherd-daemon"},
      {{"--once=0"}, "tetherd-daemon"},
      {{"--git-worker-user=--once"}, "tetherd-daemon"},
  };
  for (const auto& c : handed_over) {
    std::string joined;
    for (const auto& arg : c.args) joined += " " + arg;
    CAPTURE(joined);
    auto result = Invoke(tetherd, c.args);
    CHECK(result.exit_code == 0);
    CHECK(result.out == c.program + joined + "\n");
  }
  // A cycle runs in tetherd itself: here it stops at the configuration it cannot read, and
  // no stand-in runs.
  const std::string missing_config = dir.Path("missing.toml");
  for (const std::vector<std::string>& args :
       {std::vector<std::string>{"--once", "--config", missing_config},
        std::vector<std::string>{"--once=true", "--dry-run", "--config=" + missing_config}}) {
    CAPTURE(args[0]);
    auto result = Invoke(tetherd, args);
    CHECK(result.exit_code == 2);
    CHECK(result.out.empty());
    CHECK(result.err.find(missing_config) != std::string::npos);
  }
  // --help is tetherd's own, and a command line CLI11 refuses is refused before any hand-over.
  auto help = Invoke(tetherd, {"--help"});
  CHECK(help.exit_code == 0);
  CHECK(help.out.find("tetherd - pull-based GitOps agent for hosts") == 0);
  auto refused = Invoke(tetherd, {"--", "--once"});
  CHECK(refused.exit_code == 2);
  CHECK(refused.out.empty());
  // A program that cannot be run: an error naming it, and not the exit status of a
  // configuration error (2), after which systemd would not restart the unit.
  std::remove(dir.Path("tetherd-daemon").c_str());
  auto missing = Invoke(tetherd, {});
  CHECK(missing.exit_code == 127);
  CHECK(missing.err.find("tetherd: cannot run '") != std::string::npos);
}
