#include "agent/desired/render.hpp"

#include <algorithm>
#include <filesystem>
#include <map>
#include <string>

#include <doctest/doctest.h>

#include "agent/desired/render_output.hpp"
#include "agent/desired/template.hpp"
#include "tests/support/temp_dir.hpp"

using tether::DesiredState;
using tether::Diagnostics;
using tether::RenderOptions;
using tether::testing::TempDir;

namespace {

using Files = std::map<std::string, std::string>;

struct Rendered {
  DesiredState state;
  std::string problems;  // every diagnostic, one per line
};

// Renders host web-01 from a repo made of `files` (profile hosts/web-01.toml).
Rendered Render(const Files& files, RenderOptions options = {}) {
  TempDir repo("repo");
  for (const auto& [path, content] : files) repo.WriteFile(path, content);
  auto tree = tether::DirectoryTree::Open(repo.path());
  REQUIRE(tree);
  if (options.profile.empty()) options.profile = "hosts/web-01.toml";
  if (options.host.hostname.empty()) {
    options.host = {"web-01", "web-01.example.com", std::string(32, 'a'), "debian", "12", "x86_64"};
  }
  if (options.labels.empty()) options.labels = {{"env", "prod"}};
  Diagnostics diagnostics;
  Rendered result{tether::RenderProfile(**tree, options, diagnostics), diagnostics.ToString()};
  return result;
}

std::string Problems(const std::string& profile, Files extra = {}) {
  extra["hosts/web-01.toml"] = profile;
  return Render(extra).problems;
}

const tether::FileSpec& FileAt(const DesiredState& state, const std::string& id) {
  for (const auto& resource : state.resources) {
    if (resource.id == id) return std::get<tether::FileSpec>(resource.spec);
  }
  FAIL("no resource " << id);
  static tether::FileSpec none;
  return none;
}

}  // namespace

TEST_CASE("Includes merge in order: later wins per resource id and per variable") {
  auto rendered = Render({
      {"hosts/web-01.toml",
       "include = [\"roles/base.toml\", \"roles/web.toml\"]\n[vars]\nport = 8080\n"
       "[[file]]\npath = \"/etc/motd\"\ncontent = \"host wins\\n\"\n"},
      {"roles/base.toml",
       "[vars]\nport = 80\nname = \"base\"\n[[file]]\npath = \"/etc/motd\"\ncontent = \"base\"\n"
       "[[file]]\npath = \"/etc/role\"\ncontent = \"base\"\n"},
      {"roles/web.toml",
       "[[file]]\npath = \"/etc/role\"\ncontent = \"{{ vars.name }}:{{ vars.port }}\"\n"
       "template = true\n[[package]]\nname = \"nginx\"\n"},
  });
  CHECK(rendered.problems == "");
  CHECK(rendered.state.files ==
        std::vector<std::string>{"roles/base.toml", "roles/web.toml", "hosts/web-01.toml"});
  CHECK(FileAt(rendered.state, "file:/etc/motd").content == "host wins\n");
  // The role's template sees the host's override of a variable.
  CHECK(FileAt(rendered.state, "file:/etc/role").content == "base:8080");
  const auto& role = rendered.state.resources.at(2);
  CHECK(role.id == "file:/etc/role");
  CHECK(tether::DeclaredLocation(rendered.state, role).ToString() == "roles/web.toml:1:1");
  // A resource no profile declared (made by hand) has no location, not the first file's.
  CHECK(tether::DeclaredLocation(rendered.state, tether::Resource{}).ToString().empty());
  // Sorted by kind (packages first), then id.
  std::vector<std::string> ids;
  for (const auto& resource : rendered.state.resources) ids.push_back(resource.id);
  CHECK(ids == std::vector<std::string>{"package:nginx", "file:/etc/motd", "file:/etc/role"});
}

TEST_CASE("Every error class is reported with its exact location and message") {
  struct Case {
    const char* name;
    const char* profile;
    Files extra;
    const char* expected;
  };
  const Case cases[] = {
      {"syntax",
       "[[file]\n",
       {},
       "hosts/web-01.toml:1:8: TOML syntax error: Error while parsing table header: expected "
       "']', saw '\\n'\n"},
      {"unknown top-level key",
       "services = 1\n",
       {},
       "hosts/web-01.toml:1:1: unknown key 'services'\n"},
      {"unknown resource key",
       "[[file]]\npath = \"/etc/a\"\ncontent = \"\"\nmdoe = \"0644\"\n",
       {},
       "hosts/web-01.toml:4:1: unknown key 'file.mdoe'\n"},
      {"missing include",
       "include = [\"roles/nope.toml\"]\n",
       {},
       "hosts/web-01.toml:1:12: cannot read profile 'roles/nope.toml': no such file in the repo\n"},
      {"include with ..",
       "include = [\"../secret.toml\"]\n",
       {},
       "hosts/web-01.toml:1:12: include: '../secret.toml' leaves the repo ('..')\n"},
      {"absolute include",
       "include = [\"/etc/passwd\"]\n",
       {},
       "hosts/web-01.toml:1:12: include: '/etc/passwd' is absolute; paths in the repo are "
       "relative to its top\n"},
      {"include cycle",
       "include = [\"roles/a.toml\"]\n",
       {{"roles/a.toml", "include = [\"roles/b.toml\"]\n"},
        {"roles/b.toml", "include = [\"hosts/web-01.toml\"]\n"}},
       "roles/b.toml:1:12: include cycle: hosts/web-01.toml -> roles/a.toml -> roles/b.toml -> "
       "hosts/web-01.toml\n"},
      {"duplicate id in one file",
       "[[file]]\npath = \"/etc/a\"\ncontent = \"1\"\n[[file]]\npath = \"/etc/a\"\ncontent = "
       "\"2\"\n",
       {},
       "hosts/web-01.toml:4:1: duplicate resource 'file:/etc/a' (first declared at "
       "hosts/web-01.toml:1:1)\n"},
      {"missing path",
       "[[file]]\ncontent = \"x\"\n",
       {},
       "hosts/web-01.toml:1:1: file: 'path' is required and must be a non-empty string\n"},
      {"relative path",
       "[[file]]\npath = \"etc/a\"\ncontent = \"\"\n",
       {},
       "hosts/web-01.toml:2:8: file.path: 'etc/a' is not an absolute path\n"},
      {"path with ..",
       "[[directory]]\npath = \"/etc/../root\"\n",
       {},
       "hosts/web-01.toml:2:8: directory.path: '/etc/../root' contains a '..' component\n"},
      {"unnormalised path",
       "[[symlink]]\npath = \"/etc//a/\"\ntarget = \"b\"\n",
       {},
       "hosts/web-01.toml:2:8: symlink.path: '/etc//a/' is not normalised (write '/etc/a')\n"},
      {"outside allowed_paths",
       "[[file]]\npath = \"/root/.ssh/authorized_keys\"\ncontent = \"\"\n",
       {},
       "hosts/web-01.toml:2:8: file.path: '/root/.ssh/authorized_keys' is outside "
       "apply.allowed_paths (/etc, /usr/local, /opt, /srv)\n"},
      {"prefix is not a parent",
       "[[file]]\npath = \"/etcetera\"\ncontent = \"\"\n",
       {},
       "hosts/web-01.toml:2:8: file.path: '/etcetera' is outside apply.allowed_paths (/etc, "
       "/usr/local, /opt, /srv)\n"},
      {"source with ..",
       "[[file]]\npath = \"/etc/a\"\nsource = \"files/../../x\"\n",
       {},
       "hosts/web-01.toml:3:10: file.source: 'files/../../x' leaves the repo ('..')\n"},
      {"missing source",
       "[[file]]\npath = \"/etc/a\"\nsource = \"files/none\"\n",
       {},
       "hosts/web-01.toml:3:10: file.source: 'files/none': no such file in the repo\n"},
      {"source and content",
       "[[file]]\npath = \"/etc/a\"\nsource = \"f\"\ncontent = \"x\"\n",
       {},
       "hosts/web-01.toml:4:11: file.content: give either source or content, not both\n"},
      {"no content",
       "[[file]]\npath = \"/etc/a\"\n",
       {},
       "hosts/web-01.toml:1:1: file.source: one of source (a file in the repo) or content is "
       "required\n"},
      {"decimal mode",
       "[[file]]\npath = \"/etc/a\"\ncontent = \"\"\nmode = 644\n",
       {},
       "hosts/web-01.toml:4:8: file.mode: expected an octal mode such as \"0644\" (a string) or "
       "0o644\n"},
      {"bad mode string",
       "[[directory]]\npath = \"/etc/a\"\nmode = \"0999\"\n",
       {},
       "hosts/web-01.toml:3:8: directory.mode: expected an octal mode such as \"0644\" (a string) "
       "or 0o644\n"},
      {"bad owner",
       "[[file]]\npath = \"/etc/a\"\ncontent = \"\"\nowner = \"Root; rm\"\n",
       {},
       "hosts/web-01.toml:4:9: file.owner: 'Root; rm' is not a valid user or group name (nor a "
       "numeric id)\n"},
      {"bad package",
       "[[package]]\nname = \"Nginx\"\n",
       {},
       "hosts/web-01.toml:2:8: package.name: 'Nginx' is not a valid package name (lowercase "
       "letters, digits, '+', '-', '.')\n"},
      {"bad version",
       "[[package]]\nname = \"nginx\"\nversion = \"1.22; rm -rf\"\n",
       {},
       "hosts/web-01.toml:3:11: package.version: '1.22; rm -rf' is not a valid version or "
       "pattern (e.g. \"1.22.1-1\" or \"1.22.*\")\n"},
      {"bad package state",
       "[[package]]\nname = \"nginx\"\nstate = \"latest\"\n",
       {},
       "hosts/web-01.toml:3:9: package.state: expected \"present\" or \"absent\", got "
       "\"latest\"\n"},
      {"bad unit name",
       "[[unit]]\nname = \"../../etc/shadow\"\ncontent = \"\"\n",
       {},
       "hosts/web-01.toml:2:8: unit.name: '../../etc/shadow' is not a unit file name (e.g. "
       "\"app.service\" or a drop-in \"app.service.d/override.conf\")\n"},
      {"bad service state",
       "[[service]]\nname = \"a.service\"\nstate = \"up\"\n",
       {},
       "hosts/web-01.toml:3:9: service.state: expected \"running\" or \"stopped\", got \"up\"\n"},
      {"check without command",
       "[[check]]\nname = \"c\"\n",
       {},
       "hosts/web-01.toml:1:1: check.exec: one of exec (a command) or http (a URL) is "
       "required\n"},
      {"check with relative program",
       "[[check]]\nname = \"c\"\nexec = [\"curl\"]\n",
       {},
       "hosts/web-01.toml:3:8: check.exec: expected a command with an absolute program path, "
       "e.g. [\"/usr/bin/curl\", \"-fsS\", \"http://127.0.0.1/\"]\n"},
      {"bad drift",
       "[[file]]\npath = \"/etc/a\"\ncontent = \"\"\ndrift = \"fix\"\n",
       {},
       "hosts/web-01.toml:4:9: file.drift: expected \"revert\", \"report\" or \"ignore\", got "
       "\"fix\"\n"},
      {"bad on_remove",
       "[[file]]\npath = \"/etc/a\"\ncontent = \"\"\non_remove = \"purge\"\n",
       {},
       "hosts/web-01.toml:4:13: file.on_remove: expected \"keep\", \"restore\" or \"delete\", got "
       "\"purge\"\n"},
      {"on_remove on a package",
       "[[package]]\nname = \"curl\"\non_remove = \"keep\"\n",
       {},
       "hosts/web-01.toml:3:1: unknown key 'package.on_remove'\n"},
      {"var of a wrong type",
       "[vars]\nlist = [1]\n",
       {},
       "hosts/web-01.toml:2:8: vars.list: expected a string, an integer or a boolean, got an "
       "array\n"},
      {"unknown variable in a source file",
       "[[file]]\npath = \"/etc/a\"\nsource = \"files/a\"\ntemplate = true\n",
       {{"files/a", "line one\nport {{ vars.port }}\n"}},
       "files/a:2:6: unknown variable 'vars.port' (not set in any [vars])\n"},
      {"unknown fact in inline content",
       "[[file]]\npath = \"/etc/a\"\ncontent = \"{{host.ip}}\"\ntemplate = true\n",
       {},
       "hosts/web-01.toml:3:11: unknown host fact 'host.ip' (known: hostname, fqdn, machine_id, "
       "os_id, os_version, arch)\n"},
      {"unknown label",
       "[[file]]\npath = \"/etc/a\"\ncontent = \"{{ labels.dc }}\"\n"
       "template = true\n",
       {},
       "hosts/web-01.toml:3:11: unknown label 'labels.dc' (not in [labels] of agent.toml)\n"},
      {"code in a template",
       "[[file]]\npath = \"/etc/a\"\nsource = \"f\"\ntemplate = true\n",
       {{"f", "{{ system('id') }}"}},
       "f:1:1: unknown template expression 'system('id')' (use vars.NAME, host.FACT, labels.NAME "
       "or \"text\")\n"},
      {"unterminated template",
       "[[file]]\npath = \"/etc/a\"\nsource = \"f\"\ntemplate = true\n",
       {{"f", "ok\n  {{ vars.x \n"}},
       "f:2:3: unterminated '{{' (no '}}' follows; write {{ \"{{\" }} for a literal '{{')\n"},
      {"one path, two kinds",
       "[[file]]\npath = \"/etc/a\"\ncontent = \"\"\n[[directory]]\npath = \"/etc/a\"\n",
       {},
       "hosts/web-01.toml:1:1: '/etc/a' is declared twice: as directory:/etc/a "
       "(hosts/web-01.toml:4:1) and as file:/etc/a\n"},
      {"below a file",
       "[[file]]\npath = \"/etc/a\"\ncontent = \"\"\n[[file]]\npath = \"/etc/a/b\"\ncontent = "
       "\"\"\n",
       {},
       "hosts/web-01.toml:4:1: '/etc/a/b' is below file:/etc/a (hosts/web-01.toml:1:1), "
       "which is not a directory\n"},
      {"restart_on an unmanaged path",
       "[[service]]\nname = \"a.service\"\nrestart_on = [\"/etc/a.conf\"]\n",
       {},
       "hosts/web-01.toml:3:14: warning: restart_on: '/etc/a.conf' is not managed by this "
       "profile, so a change to it is never seen\n"},
  };
  for (const auto& c : cases) {
    CAPTURE(std::string(c.name));
    CHECK(Problems(c.profile, c.extra) == std::string(c.expected));
  }
}

TEST_CASE("A missing profile says which one") {
  auto rendered = Render({{"hosts/other.toml", ""}});
  CHECK(rendered.problems ==
        "hosts/web-01.toml: cannot read profile 'hosts/web-01.toml': no such file in the repo\n");
  CHECK(rendered.state.resources.empty());
}

TEST_CASE("Includes nested too deep are refused with the chain") {
  Files files = {{"hosts/web-01.toml", "include = [\"r/1.toml\"]\n"}};
  for (int i = 1; i <= 20; ++i) {
    files["r/" + std::to_string(i) + ".toml"] =
        "include = [\"r/" + std::to_string(i + 1) + ".toml\"]\n";
  }
  RenderOptions options;
  options.limits.max_include_depth = 3;
  auto rendered = Render(files, options);
  CHECK(rendered.problems ==
        "r/2.toml:1:12: includes nested deeper than 3: hosts/web-01.toml -> r/1.toml -> r/2.toml "
        "-> r/3.toml\n");
}

TEST_CASE("Symlinks in the repo are followed only while they stay inside it") {
  TempDir outside("outside");
  outside.WriteFile("secret", "host secret");
  Files files = {{"files/real", "real content"},
                 {"hosts/web-01.toml",
                  "[[file]]\npath = \"/etc/in\"\nsource = \"files/link\"\n"
                  "[[file]]\npath = \"/etc/dir\"\nsource = \"dirlink/real\"\n"
                  "[[file]]\npath = \"/etc/out\"\nsource = \"files/escape\"\n"
                  "[[file]]\npath = \"/etc/abs\"\nsource = \"files/absolute\"\n"}};
  TempDir repo("repo");
  for (const auto& [path, content] : files) repo.WriteFile(path, content);
  std::filesystem::create_symlink("real", repo.Path("files/link"));
  std::filesystem::create_directory_symlink("files", repo.Path("dirlink"));
  std::filesystem::create_symlink(
      "../../" + std::filesystem::path(outside.path()).filename().string() + "/secret",
      repo.Path("files/escape"));
  std::filesystem::create_symlink(outside.Path("secret"), repo.Path("files/absolute"));
  auto tree = tether::DirectoryTree::Open(repo.path());
  REQUIRE(tree);
  RenderOptions options;
  options.profile = "hosts/web-01.toml";
  options.host.hostname = "web-01";
  Diagnostics diagnostics;
  auto state = tether::RenderProfile(**tree, options, diagnostics);
  CHECK(diagnostics.ToString() ==
        "hosts/web-01.toml:12:10: file.source: symlink 'files/absolute' -> '" +
            outside.Path("secret") +
            "' points outside the repo\n"
            "hosts/web-01.toml:9:10: file.source: a symlink in "
            "'files/escape' points outside the repo\n");
  REQUIRE(state.resources.size() == 2);
  CHECK(FileAt(state, "file:/etc/in").content == "real content");
  CHECK(FileAt(state, "file:/etc/dir").content == "real content");
}

TEST_CASE("Size limits apply to each file, to the whole render and to the resource count") {
  RenderOptions options;
  options.limits.max_file_size = 10;
  options.limits.max_total_size = 15;
  auto rendered = Render({{"hosts/web-01.toml",
                           "[[file]]\npath = \"/etc/a\"\ncontent = \"0123456789\"\n"
                           "[[file]]\npath = \"/etc/b\"\ncontent = \"0123456789\"\n"
                           "[[file]]\npath = \"/etc/c\"\nsource = \"big\"\n"},
                          {"big", std::string(11, 'x')}},
                         options);
  CHECK(rendered.problems ==
        "hosts/web-01.toml: the rendered contents pass 15 bytes together (the limit), at "
        "file:/etc/b\n");

  RenderOptions few;
  few.limits.max_resources = 1;
  auto counted = Render({{"hosts/web-01.toml",
                          "[[package]]\nname = \"aa\"\n[[package]]\nname = "
                          "\"bb\"\n"}},
                        few);
  CHECK(counted.problems == "hosts/web-01.toml:3:1: too many resources: more than 1 (the limit)\n");
}

TEST_CASE("Includes that repeat are counted as they are read, and stopped at the limit") {
  // 14 small files, each including the next 4 times: 4^13 reads if nothing counted them.
  std::map<std::string, std::string> files;
  for (int i = 0; i < 14; ++i) {
    const std::string next = "p" + std::to_string(i + 1) + ".toml";
    files["p" + std::to_string(i) + ".toml"] = i == 13 ? "[vars]\nx = \"1\"\n"
                                                       : "include = [\"" + next + "\", \"" + next +
                                                             "\", \"" + next + "\", \"" + next +
                                                             "\"]\n";
  }
  files["hosts/web-01.toml"] = "include = [\"p0.toml\"]\n";
  auto rendered = Render(files);
  CHECK(rendered.problems.find("more than 1000 profile files read (includes repeat: "
                               "hosts/web-01.toml -> p0.toml -> p1.toml") != std::string::npos);
  CHECK_MESSAGE(std::count(rendered.problems.begin(), rendered.problems.end(), '\n') == 1,
                rendered.problems.substr(0, 600));  // said once

  RenderOptions small;
  small.limits.max_profile_bytes = 100;
  auto bytes = Render({{"hosts/web-01.toml", "include = [\"a.toml\", \"b.toml\"]\n"},
                       {"a.toml", "# " + std::string(60, 'a') + "\n"},
                       {"b.toml", "# " + std::string(60, 'b') + "\n"}},
                      small);
  CHECK(bytes.problems ==
        "hosts/web-01.toml:1:22: the profile files read pass 100 bytes together (the limit), "
        "at 'b.toml'\n");
}

TEST_CASE("A template is stopped at the size limit as it expands, at the expression") {
  // A 900 KB variable used 10,000 times: 9 GB if expanded before the check.
  std::string uses;
  for (int i = 0; i < 10'000; ++i) uses += "{{ vars.big }}";
  auto rendered =
      Render({{"hosts/web-01.toml", "[vars]\nbig = \"" + std::string(900'000, 'x') +
                                        "\"\n[[file]]\npath = \"/etc/bomb\"\nsource = \"bomb\"\n"
                                        "template = true\n"},
              {"bomb", "line\n" + uses}});
  CHECK(rendered.problems ==
        "bomb:2:57: the expanded content would pass 4194304 bytes (the limit)\n");
}

TEST_CASE("Templates: literals, spaces, facts and labels") {
  const std::map<std::string, std::string> vars = {{"port", "8080"}};
  const tether::HostFacts host = {"web-01", "web-01.example.com", "abc", "debian", "12", "x86_64"};
  const std::map<std::string, std::string> labels = {{"env", "prod"}};
  tether::TemplateContext context{vars, host, labels};
  Diagnostics diagnostics;
  auto text = tether::ExpandTemplate(
      "{{vars.port}} {{  host.fqdn  }} {{ labels.env }} {{ \"{{\" }} }} {{ '\"' }} "
      "{{host.os_id}}{{host.os_version}} {{ host.arch }} {{host.machine_id}}",
      {"t", 1, 1}, context, diagnostics);
  CHECK(diagnostics.ToString() == "");
  REQUIRE(text);
  CHECK(*text == "8080 web-01.example.com prod {{ }} \" debian12 x86_64 abc");

  tether::TemplateContext unknown_labels{vars, host, {}, false};
  auto warned =
      tether::ExpandTemplate("a {{ labels.env }}", {"t", 3, 5}, unknown_labels, diagnostics);
  CHECK(warned == "a <labels.env>");
  CHECK(diagnostics.ToString() ==
        "t:3:7: warning: label 'labels.env' is not known here (labels are set in each host's "
        "agent.toml; pass --label to check it)\n");
  CHECK_FALSE(diagnostics.has_errors());
}

TEST_CASE("Secret contents never appear in text or JSON output") {
  auto rendered = Render({{"hosts/web-01.toml",
                           "[[file]]\npath = \"/etc/token\"\ncontent = \"hunter2\"\nsecret = "
                           "true\nmode = 0o600\n"}});
  REQUIRE(rendered.problems == "");
  const tether::HostFacts host = {"web-01", "", "", "", "", ""};
  const std::string text = tether::DesiredStateToText(rendered.state, host);
  const std::string json = tether::DesiredStateToJson(rendered.state, host).dump();
  CHECK(text.find("hunter2") == std::string::npos);
  CHECK(json.find("hunter2") == std::string::npos);
  CHECK(text.find("mode 0600") != std::string::npos);
  CHECK(json.find("\"secret\":true") != std::string::npos);
  CHECK(json.find("\"sha256\"") == std::string::npos);  // a hash of a short secret leaks it
}

TEST_CASE("Rendering is deterministic") {
  const Files files = {{"hosts/web-01.toml",
                        "[[file]]\npath = \"/srv/b\"\ncontent = \"b\"\n[[check]]\nname = "
                        "\"z\"\nhttp = \"http://127.0.0.1/\"\n[[file]]\npath = \"/etc/a\"\ncontent "
                        "= \"a\"\n[[service]]\nname = \"a.service\"\n[[directory]]\npath = "
                        "\"/srv\"\n"}};
  const tether::HostFacts host = {"web-01", "", "", "", "", ""};
  const auto first = tether::DesiredStateToJson(Render(files).state, host).dump();
  const auto second = tether::DesiredStateToJson(Render(files).state, host).dump();
  CHECK(first == second);
  CHECK(first.find("directory:/srv") < first.find("file:/etc/a"));
  CHECK(first.find("file:/etc/a") < first.find("file:/srv/b"));
  CHECK(first.find("file:/srv/b") < first.find("service:a.service"));
  CHECK(first.find("service:a.service") < first.find("check:z"));
}

TEST_CASE("Binary file contents are shown as base64 in JSON") {
  auto rendered =
      Render({{"hosts/web-01.toml", "[[file]]\npath = \"/etc/blob\"\nsource = \"blob\"\n"},
              {"blob", std::string("\xBE\x00\xFF", 3)}});
  REQUIRE(rendered.problems == "");
  const tether::HostFacts host = {"web-01", "", "", "", "", ""};
  const std::string json = tether::DesiredStateToJson(rendered.state, host).dump();
  CHECK(json.find("\"content_base64\":\"vgD/\"") != std::string::npos);
  CHECK(json.find("\"content\":") == std::string::npos);
}
