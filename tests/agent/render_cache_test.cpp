// A render kept for the next cycle: it reads back as the desired state it was, under its
// key only, and anything else in its place is not a render.
#include "agent/desired/render_cache.hpp"

#include <algorithm>
#include <functional>

#include <doctest/doctest.h>

#include "agent/desired/render_output.hpp"
#include "tests/agent/desired_fixture.hpp"

using tether::CachedRender;
using tether::DecodeRender;
using tether::EncodeRender;
using tether::RenderKey;
using tether::RenderOptions;

namespace {

// Every kind, and every field a profile can set.
constexpr char kProfile[] = R"(include = ["roles/base.toml"]
[vars]
greeting = "hello"
count = 3

[[file]]
path = "/etc/motd"
source = "files/motd"

[[file]]
path = "/etc/app/token"
content = "s3cret\n"
secret = true
mode = "0600"
owner = "root"
group = "0"
drift = "report"

[[file]]
path = "/etc/app/greeting"
content = "{{ vars.greeting }} x{{ vars.count }} from {{ host.hostname }}\n"
template = true

[[directory]]
path = "/etc/app"
mode = "0750"
owner = "0"

[[symlink]]
path = "/etc/app/current"
target = "greeting"

[[package]]
name = "nginx"
version = "1.22.*"

[[package]]
name = "telnetd"
state = "absent"

[[unit]]
name = "app.service"
content = "[Service]\nExecStart=/bin/true\n"

[[service]]
name = "app.service"
enabled = false
reload = true
restart_on = ["/etc/motd", "/etc/app/greeting"]

[[check]]
name = "runs"
exec = ["/bin/true", "--flag"]
expect_exit = 3
timeout = "2s"

[[check]]
name = "answers"
http = "http://127.0.0.1:8080/health"
expect_status = 204
)";

const std::map<std::string, std::string> kFiles = {
    {"roles/base.toml",
     "[[file]]\npath = \"/etc/base\"\ncontent = \"base\\n\"\ndrift = \"ignore\"\n"},
    {"files/motd", "message of the day\n"}};

std::shared_ptr<tether::Tree> TreeOf(const tether::testing::Desired& desired) {
  for (const auto& resource : desired.state.resources) {
    if (const auto* file = std::get_if<tether::FileSpec>(&resource.spec); file && file->lazy) {
      return file->lazy;
    }
  }
  return nullptr;
}

}  // namespace

TEST_CASE("A render reads back as the desired state it was") {
  tether::testing::Desired desired(kProfile, kFiles);
  const auto tree = TreeOf(desired);
  REQUIRE(tree != nullptr);
  const std::string key(64, 'a');
  const CachedRender kept{desired.state, {"hosts/h.toml:1:1: warning: something"}};
  const std::string bytes = EncodeRender(key, kept);

  auto read = DecodeRender(bytes, key, tree);
  REQUIRE(read);
  CHECK(read->problems == kept.problems);
  const tether::DesiredState& state = read->desired;
  tether::HostFacts host;
  host.hostname = "h";
  // What a person or a script sees of it (secrets hidden), and the rest field by field.
  CHECK(tether::DesiredStateToJson(state, host).dump() ==
        tether::DesiredStateToJson(desired.state, host).dump());
  CHECK(state.profile == desired.state.profile);
  CHECK(state.files == desired.state.files);
  CHECK(state.vars == desired.state.vars);
  REQUIRE(state.resources.size() == desired.state.resources.size());
  for (std::size_t i = 0; i < state.resources.size(); ++i) {
    const auto& got = state.resources[i];
    const auto& want = desired.state.resources[i];
    CAPTURE(want.id);
    CHECK(got.id == want.id);
    CHECK(got.kind == want.kind);
    CHECK(got.drift == want.drift);
    CHECK(tether::DeclaredLocation(state, got).ToString() ==
          tether::DeclaredLocation(desired.state, want).ToString());
    if (const auto* file = std::get_if<tether::FileSpec>(&want.spec)) {
      const auto& read_file = std::get<tether::FileSpec>(got.spec);
      CHECK(read_file.lazy == file->lazy);
      CHECK(read_file.content_id == file->content_id);
      CHECK(read_file.secret == file->secret);
      CHECK(read_file.templated == file->templated);
      CHECK(tether::ContentSize(read_file) == tether::ContentSize(*file));
      CHECK(tether::ContentOf(read_file).value() == tether::ContentOf(*file).value());
    }
  }
  auto token_resource = std::find_if(state.resources.begin(), state.resources.end(),
                                     [](const auto& r) { return r.id == "file:/etc/app/token"; });
  REQUIRE(token_resource != state.resources.end());
  const auto& token = std::get<tether::FileSpec>(token_resource->spec);
  CHECK(token.content.str() == "s3cret\n");
  CHECK(token.mode == 0600);
  CHECK(token.group.str() == "0");
}

TEST_CASE("A drift repair's decode keeps the files it asks for, and every other kind") {
  tether::testing::Desired desired(kProfile, kFiles);
  const auto tree = TreeOf(desired);
  const std::string key(64, 'a');
  const std::string bytes = EncodeRender(key, {desired.state, {"a warning"}});

  std::vector<std::string> asked;
  const tether::FileFilter keep = [&](std::string_view id, std::optional<tether::DriftMode> drift) {
    asked.emplace_back(id);
    return id == "file:/etc/motd" || drift == tether::DriftMode::kReport;
  };
  auto read = DecodeRender(bytes, key, tree, keep);
  REQUIRE(read);
  CHECK(read->problems == std::vector<std::string>{"a warning"});
  // Asked of each file, in order; the others' records are skipped, not read.
  std::vector<std::string> files;
  std::vector<std::string> want;
  for (const auto& resource : desired.state.resources) {
    if (resource.kind == tether::ResourceKind::kFile) files.push_back(resource.id);
    if (resource.id != "file:/etc/base" && resource.id != "file:/etc/app/greeting") {
      want.push_back(resource.id);
    }
  }
  CHECK(files.size() == 4);
  CHECK(asked == files);
  CHECK(read->files_left_out == 2);
  std::vector<std::string> ids;
  for (const auto& resource : read->desired.resources) ids.push_back(resource.id);
  CHECK(ids == want);
  CHECK(want.size() == desired.state.resources.size() - 2);
  auto motd = std::find_if(read->desired.resources.begin(), read->desired.resources.end(),
                           [](const auto& r) { return r.id == "file:/etc/motd"; });
  REQUIRE(motd != read->desired.resources.end());
  CHECK(tether::ContentOf(std::get<tether::FileSpec>(motd->spec)).value() ==
        "message of the day\n");

  // Without a filter nothing is left out; a changed byte in a skipped record is still
  // caught (the checksum covers every record).
  CHECK(DecodeRender(bytes, key, tree)->files_left_out == 0);
  const auto base = bytes.find("/etc/base");
  REQUIRE(base != std::string::npos);
  std::string changed = bytes;
  changed[base + 1] = 'E';
  CHECK_FALSE(DecodeRender(changed, key, tree, keep));
}

TEST_CASE("A render is read only under its own key, whole and unaltered") {
  tether::testing::Desired desired(kProfile, kFiles);
  const auto tree = TreeOf(desired);
  const std::string key(64, 'a');
  const std::string bytes = EncodeRender(key, {desired.state, {}});
  REQUIRE(DecodeRender(bytes, key, tree));

  CHECK_FALSE(DecodeRender(bytes, std::string(64, 'b'), tree));
  CHECK_FALSE(DecodeRender("", key, tree));
  CHECK_FALSE(DecodeRender("not a render at all", key, tree));
  // Contents read again from the commit need its tree.
  CHECK_FALSE(DecodeRender(bytes, key, nullptr));
  // Cut anywhere, or any byte changed: not a render (and never an exception).
  for (std::size_t size = 0; size < bytes.size(); size += 7) {
    CHECK_FALSE(DecodeRender(std::string_view(bytes).substr(0, size), key, tree));
  }
  for (std::size_t at = 0; at < bytes.size(); at += 5) {
    std::string changed = bytes;
    changed[at] = static_cast<char>(changed[at] ^ 0x20);
    CHECK_FALSE(DecodeRender(changed, key, tree));
  }
}

TEST_CASE("A render keeps the host's name and FQDN it was made with, readable before its key") {
  tether::testing::Desired desired(kProfile, kFiles);
  const auto tree = TreeOf(desired);
  const std::string key(64, 'a');
  CachedRender kept{desired.state, {}};
  kept.name = {"web1", "web1.dc2.example.org"};
  const std::string bytes = EncodeRender(key, kept);

  // Read without the key (a drift repair makes its key with it), and with it.
  const auto name = tether::RenderedNameOf(bytes);
  REQUIRE(name);
  CHECK(name->hostname == "web1");
  CHECK(name->fqdn == "web1.dc2.example.org");
  auto read = DecodeRender(bytes, key, tree);
  REQUIRE(read);
  CHECK(read->name == kept.name);

  // Anything else: no name (and never an exception).
  CHECK_FALSE(tether::RenderedNameOf(""));
  CHECK_FALSE(tether::RenderedNameOf("not a render at all"));
  std::string older = bytes;
  older.replace(0, 16, "tether.render/3\n");
  CHECK_FALSE(tether::RenderedNameOf(older));
  CHECK_FALSE(DecodeRender(older, key, tree));
  for (std::size_t size = 0; size < 16 + 64 + 4 + 4; ++size) {
    CHECK_FALSE(tether::RenderedNameOf(std::string_view(bytes).substr(0, size)));
  }
}

TEST_CASE("A render's key changes with everything a render depends on") {
  tether::testing::TempDir repo{"render-key"};
  std::shared_ptr<tether::Tree> tree = tether::DirectoryTree::Open(repo.path()).value();
  RenderOptions options;
  options.profile = "hosts/h.toml";
  options.host.hostname = "h";
  const std::string commit = "3f2a9c0d1e4b5a6978c0d1e2f3a4b5c6d7e8f901";
  const std::string key = RenderKey(commit, options);
  CHECK(key.size() == 64);
  CHECK(RenderKey(commit, options) == key);

  std::vector<std::pair<const char*, std::function<void(RenderOptions&)>>> changes = {
      {"profile", [](RenderOptions& o) { o.profile = "hosts/g.toml"; }},
      {"hostname", [](RenderOptions& o) { o.host.hostname = "g"; }},
      {"fqdn", [](RenderOptions& o) { o.host.fqdn = "h.example.com"; }},
      {"machine id", [](RenderOptions& o) { o.host.machine_id = std::string(32, '1'); }},
      {"os", [](RenderOptions& o) { o.host.os_id = "ubuntu"; }},
      {"os version", [](RenderOptions& o) { o.host.os_version = "13"; }},
      {"arch", [](RenderOptions& o) { o.host.arch = "aarch64"; }},
      {"a label", [](RenderOptions& o) { o.labels["role"] = "web"; }},
      {"labels known", [](RenderOptions& o) { o.labels_known = false; }},
      {"allowed paths", [](RenderOptions& o) { o.allowed_paths = {"/srv"}; }},
      {"a limit", [](RenderOptions& o) { o.limits.max_resources = 10; }},
      {"contents held", [&](RenderOptions& o) { o.content_tree = tree; }},
  };
  for (auto& [what, change] : changes) {
    CAPTURE(what);
    RenderOptions changed = options;
    change(changed);
    CHECK(RenderKey(commit, changed) != key);
  }
  CHECK(RenderKey("c0ffee0000000000000000000000000000000000", options) != key);
  // Text boundaries are kept: "ab" + "c" is not "a" + "bc".
  RenderOptions a = options, b = options;
  a.labels = {{"ab", "c"}};
  b.labels = {{"a", "bc"}};
  CHECK(RenderKey(commit, a) != RenderKey(commit, b));
}
