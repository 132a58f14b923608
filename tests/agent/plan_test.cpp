#include "agent/kinds/paths/path_plan.hpp"

#include <unistd.h>

#include <filesystem>
#include <string>

#include <doctest/doctest.h>

#include "tests/support/temp_dir.hpp"

using tether::ActionType;
using tether::FileSpec;
using tether::FileType;
using tether::Ownership;
using tether::PathObservation;

namespace {

PathObservation Missing() { return {}; }

PathObservation Regular(std::string content, std::uint32_t mode = 0644, std::uint32_t uid = 0,
                        std::uint32_t gid = 0) {
  PathObservation observed;
  observed.exists = true;
  observed.stat.type = FileType::kRegular;
  observed.stat.mode = mode;
  observed.stat.uid = uid;
  observed.stat.gid = gid;
  observed.stat.size = content.size();
  observed.content = std::move(content);
  return observed;
}

PathObservation OfType(FileType type, std::uint32_t mode = 0755) {
  PathObservation observed;
  observed.exists = true;
  observed.stat.type = type;
  observed.stat.mode = mode;
  if (type == FileType::kSymlink) observed.target = "/etc/old";
  return observed;
}

FileSpec File(std::string content, std::uint32_t mode = 0644, bool secret = false) {
  FileSpec spec;
  spec.path = "/etc/motd";
  spec.content = std::move(content);
  spec.mode = mode;
  spec.secret = secret;
  return spec;
}

}  // namespace

TEST_CASE("PlanFile: create, in sync, update content, mode and owner, conflicts") {
  struct Case {
    const char* name;
    FileSpec spec;
    Ownership owner;
    PathObservation observed;
    ActionType type;
    std::string plan;  // FormatPlan of the single action
  };
  const Case cases[] = {
      {"create",
       File("hi\n"),
       {},
       Missing(),
       ActionType::kCreate,
       "create   file:/etc/motd (0644, 3 bytes)\n"},
      {"in sync",
       File("hi\n"),
       {},
       Regular("hi\n"),
       ActionType::kInSync,
       "in sync  file:/etc/motd\n"},
      {"content",
       File("new\n"),
       {},
       Regular("old\n"),
       ActionType::kUpdate,
       "update   file:/etc/motd: content\n--- /etc/motd\n+++ /etc/motd\n@@ -1 +1 @@\n-old\n"
       "+new\n"},
      {"mode",
       File("x", 0600),
       {},
       Regular("x", 0644),
       ActionType::kUpdate,
       "update   file:/etc/motd: mode 0644 -> 0600\n"},
      {"owner and group",
       File("x"),
       {33, 34},
       Regular("x", 0644, 0, 0),
       ActionType::kUpdate,
       "update   file:/etc/motd: owner 0 -> 33, group 0 -> 34\n"},
      {"owner not asked for",
       File("x"),
       {},
       Regular("x", 0644, 1000, 1000),
       ActionType::kInSync,
       "in sync  file:/etc/motd\n"},
      {"secret content hidden",
       File("s3cret-new", 0600, true),
       {},
       Regular("s3cret-old", 0600),
       ActionType::kUpdate,
       "update   file:/etc/motd: content\n(secret: 10 bytes -> 10 bytes, content hidden)\n"},
      {"symlink replaced",
       File("x\n"),
       {},
       OfType(FileType::kSymlink),
       ActionType::kUpdate,
       "update   file:/etc/motd: replace a symlink with a file\n--- /dev/null\n+++ /etc/motd\n"
       "@@ -0,0 +1 @@\n+x\n"},
      {"directory refused",
       File("x"),
       {},
       OfType(FileType::kDirectory),
       ActionType::kConflict,
       "conflict file:/etc/motd: '/etc/motd' is a directory; tether never replaces a directory "
       "with a file\n"},
  };
  for (const auto& c : cases) {
    CAPTURE(std::string(c.name));
    const auto action = tether::PlanFile("file:/etc/motd", c.spec, c.owner, c.observed);
    CHECK(action.type == c.type);
    CHECK(tether::FormatPlan({action}) == c.plan);
  }
}

TEST_CASE("PlanDirectory and PlanSymlink") {
  tether::DirectorySpec dir;
  dir.path = "/srv/www";
  dir.mode = 0750;
  CHECK(tether::FormatPlan({tether::PlanDirectory("directory:/srv/www", dir, {}, Missing())}) ==
        "create   directory:/srv/www (0750)\n");
  CHECK(tether::PlanDirectory("d", dir, {}, OfType(FileType::kDirectory, 0750)).type ==
        ActionType::kInSync);
  CHECK(tether::FormatPlan({tether::PlanDirectory("directory:/srv/www", dir, {},
                                                  OfType(FileType::kDirectory, 0755))}) ==
        "update   directory:/srv/www: mode 0755 -> 0750\n");
  const auto refused = tether::PlanDirectory("d", dir, {}, Regular("x"));
  CHECK(refused.type == ActionType::kConflict);
  CHECK(refused.reason == "'/srv/www' is a file; tether never replaces it with a directory");

  tether::SymlinkSpec link;
  link.path = "/etc/site";
  link.target = "/etc/new";
  CHECK(tether::FormatPlan({tether::PlanSymlink("symlink:/etc/site", link, Missing())}) ==
        "create   symlink:/etc/site (-> /etc/new)\n");
  CHECK(tether::FormatPlan(
            {tether::PlanSymlink("symlink:/etc/site", link, OfType(FileType::kSymlink))}) ==
        "update   symlink:/etc/site: target /etc/old -> /etc/new\n");
  CHECK(tether::PlanSymlink("s", link, Regular("x")).changes ==
        std::vector<std::string>{"replace a file with a symlink -> /etc/new"});
  CHECK(tether::PlanSymlink("s", link, OfType(FileType::kDirectory)).type == ActionType::kConflict);
  link.target = "/etc/old";
  CHECK(tether::PlanSymlink("s", link, OfType(FileType::kSymlink)).type == ActionType::kInSync);
}

TEST_CASE("ObservePath reads real files under a root without following symlinks") {
  tether::testing::TempDir root("observe");
  root.WriteFile("etc/motd", "hello\n", 0640);
  std::filesystem::create_symlink("/etc/shadow", root.Path("etc/link"));
  auto fs = tether::RootedFilesystem::Open(root.path());
  REQUIRE(fs);

  auto file = tether::ObservePath(**fs, "/etc/motd", true, 1 << 20);
  REQUIRE(file);
  CHECK(file->exists);
  CHECK(file->stat.mode == 0640);
  CHECK(file->content == "hello\n");

  auto link = tether::ObservePath(**fs, "/etc/link", true, 1 << 20);
  REQUIRE(link);
  CHECK(link->stat.type == FileType::kSymlink);
  CHECK(link->target == "/etc/shadow");
  CHECK_FALSE(link->content);

  auto missing = tether::ObservePath(**fs, "/etc/none", true, 1 << 20);
  REQUIRE(missing);
  CHECK_FALSE(missing->exists);

  // The plan from real observations: in sync after the change a create would make.
  FileSpec spec = File("hello\n", 0640);
  CHECK(tether::PlanFile("file:/etc/motd", spec, {}, *file).type == ActionType::kInSync);
}

TEST_CASE("LookupId reads passwd and group text, and takes numbers as ids") {
  const std::string passwd = "root:x:0:0:root:/root:/bin/bash\nwww-data:x:33:33::/var/www:/x\n";
  CHECK(tether::LookupId(passwd, "www-data", "passwd").value() == 33);
  CHECK(tether::LookupId(passwd, "root", "passwd").value() == 0);
  CHECK(tether::LookupId(passwd, "1234", "passwd").value() == 1234);
  auto missing = tether::LookupId(passwd, "nginx", "/etc/passwd");
  REQUIRE_FALSE(missing);
  CHECK(missing.error().message() == "no 'nginx' in /etc/passwd");
  CHECK_FALSE(tether::LookupId("bad:x:notanumber:0\n", "bad", "passwd"));
}
