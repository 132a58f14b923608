#include "common/filesystem.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>

#include <doctest/doctest.h>

#include "tests/support/temp_dir.hpp"

using tether::FileType;
using tether::NormalizePath;
using tether::RootedFilesystem;
using tether::WriteOptions;
using tether::testing::TempDir;

namespace {

struct Fixture {
  TempDir dir{"fs"};
  TempDir outside{"fs-outside"};
  std::unique_ptr<RootedFilesystem> fs;

  Fixture() {
    std::filesystem::create_directories(dir.Path("etc"));
    auto opened = RootedFilesystem::Open(dir.path());
    REQUIRE(opened);
    fs = std::move(*opened);
  }

  [[nodiscard]] std::string Host(const std::string& path) const { return dir.path() + path; }

  [[nodiscard]] struct stat LStat(const std::string& path) const {
    struct stat st {};
    REQUIRE(lstat(Host(path).c_str(), &st) == 0);
    return st;
  }

  // Names in the host directory, to prove no temporary file was left behind.
  [[nodiscard]] std::size_t EntriesIn(const std::string& path) const {
    std::size_t count = 0;
    for ([[maybe_unused]] const auto& entry : std::filesystem::directory_iterator(Host(path))) {
      ++count;
    }
    return count;
  }
};

WriteOptions Mode(std::uint32_t mode) {
  WriteOptions options;
  options.mode = mode;
  return options;
}

}  // namespace

TEST_CASE("NormalizePath accepts absolute paths and refuses ones that could climb out") {
  struct Case {
    const char* input;
    const char* normalised;  // nullptr: refused
  };
  const Case cases[] = {
      {"/etc/motd", "/etc/motd"},
      {"//etc///motd/", "/etc/motd"},
      {"/", "/"},
      {"///", "/"},
      {"etc/motd", nullptr},
      {"", nullptr},
      {"/etc/../root", nullptr},
      {"/etc/./motd", nullptr},
      {"/..", nullptr},
      {"/etc/..hidden", "/etc/..hidden"},
  };
  for (const auto& c : cases) {
    CAPTURE(c.input);
    auto result = NormalizePath(c.input);
    if (c.normalised == nullptr) {
      CHECK_FALSE(result);
      if (!result) CHECK(result.error().Is(std::errc::invalid_argument));
    } else {
      REQUIRE(result);
      CHECK(*result == c.normalised);
    }
  }
  CHECK_FALSE(NormalizePath(std::string_view("/etc/a\0b", 8)));
}

TEST_CASE_FIXTURE(Fixture,
                  "WriteFileAtomic creates a file with its exact mode, whatever the umask") {
  const mode_t old_umask = umask(0077);
  REQUIRE(fs->WriteFileAtomic("/etc/motd", "hello\n", Mode(0644)));
  umask(old_umask);
  CHECK(dir.ReadFile("etc/motd") == "hello\n");
  CHECK((LStat("/etc/motd").st_mode & 07777) == 0644);
  CHECK(EntriesIn("/etc") == 1);

  REQUIRE(fs->WriteFileAtomic("/etc/secret", "s3cret", Mode(0600)));
  CHECK((LStat("/etc/secret").st_mode & 07777) == 0600);
}

TEST_CASE_FIXTURE(Fixture, "WriteFileAtomic replaces by rename: readers keep the old file") {
  REQUIRE(fs->WriteFileAtomic("/etc/motd", "old\n", Mode(0644)));
  const int reader = open(Host("/etc/motd").c_str(), O_RDONLY);
  REQUIRE(reader >= 0);
  const ino_t old_inode = LStat("/etc/motd").st_ino;

  REQUIRE(fs->WriteFileAtomic("/etc/motd", "new\n", Mode(0640)));
  CHECK(dir.ReadFile("etc/motd") == "new\n");
  CHECK(LStat("/etc/motd").st_ino != old_inode);
  CHECK((LStat("/etc/motd").st_mode & 07777) == 0640);
  char buffer[8] = {};
  CHECK(read(reader, buffer, sizeof(buffer)) == 4);
  CHECK(std::string(buffer) == "old\n");
  close(reader);
  CHECK(EntriesIn("/etc") == 1);
}

TEST_CASE_FIXTURE(Fixture, "WriteFileAtomic sets the owner and group before the content lands") {
  if (geteuid() != 0) return;  // chown needs root; CI runs as root
  WriteOptions options = Mode(0640);
  options.uid = 65534;
  options.gid = 65534;
  REQUIRE(fs->WriteFileAtomic("/etc/owned", "x", options));
  CHECK(LStat("/etc/owned").st_uid == 65534);
  CHECK(LStat("/etc/owned").st_gid == 65534);
  CHECK((LStat("/etc/owned").st_mode & 07777) == 0640);
}

TEST_CASE_FIXTURE(Fixture, "A symlink in a parent directory is never followed") {
  std::filesystem::create_directory_symlink(outside.path(), Host("/etc/evil"));
  auto written = fs->WriteFileAtomic("/etc/evil/passwd", "pwned", Mode(0644));
  REQUIRE_FALSE(written);
  CHECK(written.error().Is(std::errc::too_many_symbolic_link_levels));
  CHECK(written.error().message() ==
        "'/etc/evil' is a symlink; refusing to follow it for '/etc/evil/passwd'");
  CHECK(std::filesystem::is_empty(outside.path()));

  outside.WriteFile("data", "outside");
  CHECK_FALSE(fs->ReadFile("/etc/evil/data", 100));
  CHECK_FALSE(fs->Stat("/etc/evil/data"));
  CHECK_FALSE(fs->Remove("/etc/evil/data"));
  CHECK_FALSE(fs->CreateDirectory("/etc/evil/dir", 0755));
  CHECK_FALSE(fs->CreateSymlink("/etc/evil/link", "/x"));
  CHECK_FALSE(fs->SetAttributes("/etc/evil/data", 0777, std::nullopt, std::nullopt));
  CHECK_FALSE(fs->ListDirectory("/etc/evil"));
  CHECK(outside.ReadFile("data") == "outside");
  CHECK((std::filesystem::status(outside.Path("data")).permissions() &
         std::filesystem::perms::others_write) == std::filesystem::perms::none);

  // The root's own symlinks are refused too: an absolute link cannot lead out.
  std::filesystem::create_directory_symlink("/", Host("/host"));
  CHECK_FALSE(fs->WriteFileAtomic("/host/tmp/x", "x", Mode(0644)));
}

TEST_CASE_FIXTURE(Fixture, "Stats in one directory in a row, then after it was replaced") {
  dir.WriteFile("etc/a", "a");
  dir.WriteFile("etc/b", "bb");
  CHECK(fs->Stat("/etc/a").value().size == 1);
  CHECK(fs->Stat("/etc/b").value().size == 2);
  CHECK(fs->Stat("/etc//b").value().size == 2);
  CHECK(fs->Stat("//etc/b/").value().size == 2);  // as NormalizePath has it
  for (const char* climbing : {"/etc/./b", "/etc/../etc/b", "etc/b", "", "/etc/.."}) {
    CAPTURE(climbing);
    auto refused = fs->Stat(climbing);
    REQUIRE_FALSE(refused);
    CHECK(refused.error().Is(std::errc::invalid_argument));
  }
  auto missing = fs->Stat("/etc/c");
  REQUIRE_FALSE(missing);
  CHECK(missing.error().Is(std::errc::no_such_file_or_directory));
  CHECK(missing.error().message() == "stat '/etc/c': No such file or directory");
  CHECK(fs->Stat("/etc//c").error().message() == "stat '/etc/c': No such file or directory");
  dir.WriteFile("etc/c", "ccc");
  CHECK(fs->Stat("/etc/c").value().size == 3);  // what is there now, not what was

  // The directory removed and made a symlink to outside, through this filesystem: a Stat
  // after that resolves the path again, and refuses the symlink.
  outside.WriteFile("a", "outside");
  REQUIRE(fs->Remove("/etc/a"));
  REQUIRE(fs->Remove("/etc/b"));
  REQUIRE(fs->Remove("/etc/c"));
  REQUIRE(fs->Remove("/etc"));
  REQUIRE(fs->CreateSymlink("/etc", outside.path()));
  auto refused = fs->Stat("/etc/a");
  REQUIRE_FALSE(refused);
  CHECK(refused.error().Is(std::errc::too_many_symbolic_link_levels));
}

TEST_CASE_FIXTURE(Fixture, "Stats after renames see what the renames did") {
  dir.WriteFile("srv/app/conf", "old");
  dir.WriteFile("srv/app/.conf.new", "newer");
  CHECK(fs->Stat("/srv/app/conf").value().size == 3);
  // A file renamed in the directory Stat keeps open: the next Stat sees the new file.
  REQUIRE(fs->Rename("/srv/app/.conf.new", "/srv/app/conf"));
  CHECK(fs->Stat("/srv/app/conf").value().size == 5);
  CHECK(fs->Stat("/srv/app/.conf.new").error().Is(std::errc::no_such_file_or_directory));
  // That directory renamed away (or one above it): its old path holds nothing any more.
  REQUIRE(fs->Rename("/srv", "/srv-old"));
  CHECK(fs->Stat("/srv/app/conf").error().Is(std::errc::no_such_file_or_directory));
  CHECK(fs->Stat("/srv-old/app/conf").value().size == 5);
  // A directory put back in its place under the old name is the one looked at.
  std::filesystem::create_directories(Host("/srv/app"));
  dir.WriteFile("srv/app/conf", "replaced!");
  REQUIRE(fs->Stat("/srv-old/app/conf"));
  REQUIRE(fs->Rename("/srv-old/app", "/srv/app2"));
  CHECK(fs->Stat("/srv-old/app/conf").error().Is(std::errc::no_such_file_or_directory));
  CHECK(fs->Stat("/srv/app2/conf").value().size == 5);
  CHECK(fs->Stat("/srv/app/conf").value().size == 9);
  // Not a file below a directory that does not exist, at any depth.
  auto missing = fs->Stat("/srv/none/deeper/file");
  REQUIRE_FALSE(missing);
  CHECK(missing.error().Is(std::errc::no_such_file_or_directory));
  CHECK(missing.error().message().find("'/srv/none/deeper'") != std::string::npos);
  CHECK_FALSE(fs->Rename("/srv/app/conf", "/"));
}

TEST_CASE_FIXTURE(Fixture, "A symlink as the last component is replaced or read, never followed") {
  outside.WriteFile("target", "outside");
  std::filesystem::create_symlink(outside.Path("target"), Host("/etc/motd"));

  auto read = fs->ReadFile("/etc/motd", 100);
  REQUIRE_FALSE(read);
  CHECK(read.error().Is(std::errc::too_many_symbolic_link_levels));

  auto stat = fs->Stat("/etc/motd");
  REQUIRE(stat);
  CHECK(stat->type == FileType::kSymlink);
  CHECK(fs->ReadSymlink("/etc/motd").value() == outside.Path("target"));

  REQUIRE(fs->SetAttributes("/etc/motd", 0777, std::nullopt, std::nullopt));
  CHECK((std::filesystem::status(outside.Path("target")).permissions() &
         std::filesystem::perms::others_write) == std::filesystem::perms::none);

  REQUIRE(fs->WriteFileAtomic("/etc/motd", "managed\n", Mode(0644)));
  CHECK(outside.ReadFile("target") == "outside");
  CHECK(S_ISREG(LStat("/etc/motd").st_mode));
}

TEST_CASE_FIXTURE(Fixture, "A directory is never replaced by a file or a symlink") {
  REQUIRE(fs->CreateDirectory("/etc/conf.d", 0755));
  auto as_file = fs->WriteFileAtomic("/etc/conf.d", "x", Mode(0644));
  REQUIRE_FALSE(as_file);
  CHECK(as_file.error().Is(std::errc::is_a_directory));
  CHECK(as_file.error().message() ==
        "'/etc/conf.d' is a directory; refusing to replace it with a file");
  auto as_link = fs->CreateSymlink("/etc/conf.d", "/tmp");
  REQUIRE_FALSE(as_link);
  CHECK(as_link.error().Is(std::errc::is_a_directory));
  CHECK(std::filesystem::is_directory(Host("/etc/conf.d")));
  CHECK(EntriesIn("/etc") == 1);
}

TEST_CASE_FIXTURE(Fixture, "Errors name the path and keep the errno") {
  auto missing_parent = fs->WriteFileAtomic("/srv/www/index.html", "x", Mode(0644));
  REQUIRE_FALSE(missing_parent);
  CHECK(missing_parent.error().Is(std::errc::no_such_file_or_directory));
  CHECK(missing_parent.error().message() == "open '/srv': No such file or directory");

  auto missing = fs->Stat("/etc/nothing");
  REQUIRE_FALSE(missing);
  CHECK(missing.error().Is(std::errc::no_such_file_or_directory));
  CHECK(missing.error().message() == "stat '/etc/nothing': No such file or directory");

  auto relative = fs->Stat("etc/motd");
  REQUIRE_FALSE(relative);
  CHECK(relative.error().message() == "'etc/motd' is not an absolute path");
}

TEST_CASE_FIXTURE(Fixture, "ReadFile enforces its size limit and refuses non-regular files") {
  dir.WriteFile("etc/big", std::string(1000, 'x'));
  CHECK(fs->ReadFile("/etc/big", 1000).value().size() == 1000);
  auto too_big = fs->ReadFile("/etc/big", 999);
  REQUIRE_FALSE(too_big);
  CHECK(too_big.error().Is(std::errc::file_too_large));

  REQUIRE(mkfifo(Host("/etc/fifo").c_str(), 0644) == 0);
  auto fifo = fs->ReadFile("/etc/fifo", 100);  // must not block
  REQUIRE_FALSE(fifo);
  CHECK(fifo.error().message() == "'/etc/fifo' is not a regular file");
  CHECK_FALSE(fs->ReadFile("/etc", 100));
}

TEST_CASE_FIXTURE(Fixture, "ReadBytes maps a large file when asked, else copies; the same bytes") {
  std::string large;
  for (int i = 0; large.size() < (200 << 10); ++i) large += "line " + std::to_string(i) + "\n";
  dir.WriteFile("etc/large", large);
  dir.WriteFile("etc/small", "small\n");
  auto mapped = fs->ReadBytes("/etc/large", 1 << 20, true);
  REQUIRE(mapped);
  CHECK(mapped->mapped());
  CHECK(mapped->view() == large);
  auto copied = fs->ReadBytes("/etc/large", 1 << 20, false);
  REQUIRE(copied);
  CHECK_FALSE(copied->mapped());
  CHECK(copied->view() == large);
  auto small = fs->ReadBytes("/etc/small", 100, true);
  REQUIRE(small);
  CHECK_FALSE(small->mapped());  // a page or so: read
  CHECK(small->view() == "small\n");

  // A mapping keeps the file it mapped: replaced by a rename (as tether replaces its
  // state files), the bytes stay those read; moved from, they go with the move.
  dir.WriteFile("etc/large.new", "replaced\n");
  REQUIRE(std::rename(Host("/etc/large.new").c_str(), Host("/etc/large").c_str()) == 0);
  CHECK(mapped->view() == large);
  tether::FileBytes moved = std::move(*mapped);
  CHECK(moved.view() == large);
  CHECK(mapped->view().empty());
  moved = std::move(*copied);
  CHECK_FALSE(moved.mapped());
  CHECK(moved.view() == large);

  // The same refusals as ReadFile, mapped or not.
  dir.WriteFile("etc/large", large);
  for (const bool map : {true, false}) {
    CAPTURE(map);
    auto too_big = fs->ReadBytes("/etc/large", large.size() - 1, map);
    REQUIRE_FALSE(too_big);
    CHECK(too_big.error().Is(std::errc::file_too_large));
    auto missing = fs->ReadBytes("/etc/none", 100, map);
    REQUIRE_FALSE(missing);
    CHECK(missing.error().Is(std::errc::no_such_file_or_directory));
    CHECK_FALSE(fs->ReadBytes("/etc", 100, map));
  }
  std::filesystem::create_symlink(Host("/etc/large"), Host("/etc/link"));
  auto link = fs->ReadBytes("/etc/link", 1 << 20, true);
  REQUIRE_FALSE(link);
  CHECK(link.error().Is(std::errc::too_many_symbolic_link_levels));
}

TEST_CASE_FIXTURE(Fixture, "Directories, symlinks, attributes, removal and rename") {
  const mode_t old_umask = umask(0077);
  REQUIRE(fs->CreateDirectory("/srv", 0755));
  umask(old_umask);
  CHECK((LStat("/srv").st_mode & 07777) == 0755);
  auto again = fs->CreateDirectory("/srv", 0755);
  REQUIRE_FALSE(again);
  CHECK(again.error().Is(std::errc::file_exists));

  REQUIRE(fs->CreateSymlink("/etc/link", "/srv"));
  CHECK(std::filesystem::read_symlink(Host("/etc/link")) == "/srv");
  REQUIRE(fs->CreateSymlink("/etc/link", "/opt"));  // replaced atomically
  CHECK(std::filesystem::read_symlink(Host("/etc/link")) == "/opt");

  REQUIRE(fs->WriteFileAtomic("/srv/a", "a", Mode(0644)));
  REQUIRE(fs->WriteFileAtomic("/srv/c", "c", Mode(0644)));
  REQUIRE(fs->CreateDirectory("/srv/b", 0700));
  CHECK(fs->ListDirectory("/srv").value() == std::vector<std::string>{"a", "b", "c"});
  CHECK(fs->ListDirectory("/").value() == std::vector<std::string>{"etc", "srv"});

  REQUIRE(fs->SetAttributes("/srv/a", 04755, std::nullopt, std::nullopt));
  CHECK((LStat("/srv/a").st_mode & 07777) == 04755);
  auto stat = fs->Stat("/srv/a");
  REQUIRE(stat);
  CHECK(stat->type == FileType::kRegular);
  CHECK(stat->mode == 04755);
  CHECK(stat->size == 1);

  REQUIRE(fs->Rename("/srv/a", "/etc/a"));
  CHECK(dir.ReadFile("etc/a") == "a");
  REQUIRE(fs->Remove("/etc/a"));
  REQUIRE(fs->Remove("/etc/link"));
  REQUIRE(fs->Remove("/srv/b"));
  CHECK_FALSE(fs->Remove("/srv"));  // not empty
  CHECK_FALSE(fs->Remove("/"));
  CHECK(fs->ListDirectory("/srv").value() == std::vector<std::string>{"c"});
}

TEST_CASE("RootedFilesystem::Open refuses a root that is not a directory") {
  auto missing = RootedFilesystem::Open("/nonexistent/tether-root");
  REQUIRE_FALSE(missing);
  CHECK(missing.error().message() ==
        "open root '/nonexistent/tether-root': No such file or directory");
}

TEST_CASE_FIXTURE(Fixture, "Link keeps the old inode when the path is replaced: a free backup") {
  REQUIRE(fs->WriteFileAtomic("/etc/motd", "old\n", Mode(0640)));
  REQUIRE(fs->Link("/etc/motd", "/etc/.motd.backup"));
  REQUIRE(fs->WriteFileAtomic("/etc/motd", "new\n", Mode(0644)));
  CHECK(dir.ReadFile("etc/.motd.backup") == "old\n");
  CHECK((LStat("/etc/.motd.backup").st_mode & 07777) == 0640);
  auto exists = fs->Link("/etc/motd", "/etc/.motd.backup");
  REQUIRE_FALSE(exists);
  CHECK(exists.error().Is(std::errc::file_exists));

  // A symlink is linked itself, not what it points to.
  std::filesystem::create_symlink(outside.Path("x"), Host("/etc/link"));
  REQUIRE(fs->Link("/etc/link", "/etc/.link.backup"));
  CHECK(std::filesystem::read_symlink(Host("/etc/.link.backup")) == outside.Path("x"));
  REQUIRE(fs->SyncDirectory("/etc"));
  CHECK(tether::TemporaryPrefix("motd") == ".motd.tether-");
}

TEST_CASE_FIXTURE(Fixture, "WriteTemporary writes aside; SyncFilesystems then Rename lands it") {
  REQUIRE(fs->WriteFileAtomic("/etc/motd", "old\n", Mode(0644)));
  std::filesystem::create_directories(Host("/etc/deep/er"));
  WriteOptions options;
  options.mode = 0600;
  options.uid = getuid();
  options.gid = getgid();
  auto temp = fs->WriteTemporary("/etc/motd", "new\n", options);
  REQUIRE(temp);
  // Next to its file, with a name recovery recognises, its final mode already set, and
  // the file itself untouched until the rename.
  CHECK(temp->rfind("/etc/.motd.tether-", 0) == 0);
  CHECK(tether::IsTemporaryName(temp->substr(5), "motd"));
  CHECK((LStat(*temp).st_mode & 07777) == 0600);
  CHECK(dir.ReadFile(temp->substr(1)) == "new\n");
  CHECK(dir.ReadFile("etc/motd") == "old\n");
  auto other = fs->WriteTemporary("/etc/deep/er/x", "x\n", Mode(0644));
  REQUIRE(other);
  // Paths on one filesystem: one sync; a directory path and a file path are both fine.
  REQUIRE(fs->SyncFilesystems({*temp, *other, "/etc/deep", "/"}));
  // In any order, many in one directory, and what is missing among them is an error.
  REQUIRE(fs->SyncFilesystems({"/", "/etc", "/etc/motd", *temp, "/etc/deep/er/x", "/etc/deep"}));
  auto gone = fs->SyncFilesystems({"/etc/motd", "/etc/nothing/x"});
  REQUIRE_FALSE(gone);
  CHECK(gone.error().message().find("'/etc/nothing'") != std::string::npos);
  // Many paths (more than are synced each): one syncfs, and the same errors.
  std::vector<std::string> many;
  for (int i = 0; i < 40; ++i) {
    auto made = fs->WriteTemporary("/etc/deep/er/f" + std::to_string(i), "x\n", Mode(0644));
    REQUIRE(made);
    many.push_back(*made);
  }
  many.push_back("/etc/deep/er/not-there");
  REQUIRE(fs->SyncFilesystems(many));
  many.push_back("/etc/nothing/x");
  auto many_gone = fs->SyncFilesystems(many);
  REQUIRE_FALSE(many_gone);
  CHECK(many_gone.error().message().find("'/etc/nothing'") != std::string::npos);
  // Few: a path not there, or a symlink, syncs its directory.
  std::filesystem::create_symlink("/etc/motd", Host("/etc/deep/link"));
  REQUIRE(fs->SyncFilesystems({"/etc/deep/er/not-there", "/etc/deep/link", *temp}));
  REQUIRE(fs->Rename(*temp, "/etc/motd"));
  CHECK(dir.ReadFile("etc/motd") == "new\n");
  CHECK((LStat("/etc/motd").st_mode & 07777) == 0600);

  // The same refusals as WriteFileAtomic, and nothing left behind.
  std::filesystem::create_directory_symlink(outside.path(), Host("/etc/evil"));
  auto refused = fs->WriteTemporary("/etc/evil/passwd", "pwned", Mode(0644));
  REQUIRE_FALSE(refused);
  CHECK(refused.error().message() ==
        "'/etc/evil' is a symlink; refusing to follow it for '/etc/evil/passwd'");
  CHECK(std::filesystem::is_empty(outside.path()));
  auto directory = fs->WriteTemporary("/etc/deep", "x", Mode(0644));
  REQUIRE_FALSE(directory);
  CHECK(directory.error().Is(std::errc::is_a_directory));
  CHECK_FALSE(fs->SyncFilesystems({"/etc/evil/x"}));
  CHECK_FALSE(fs->SyncFilesystems({"/nowhere/x"}));
}

TEST_CASE_FIXTURE(Fixture, "AppendFile creates once, appends in order, and follows no symlink") {
  tether::AppendOptions create;
  create.mode = 0640;
  create.create = true;
  REQUIRE(fs->AppendFile("/etc/log", "one\n", create));
  CHECK((LStat("/etc/log").st_mode & 07777) == 0640);
  auto again = fs->AppendFile("/etc/log", "x", create);
  REQUIRE_FALSE(again);
  CHECK(again.error().Is(std::errc::file_exists));
  tether::AppendOptions append;
  append.sync = false;
  REQUIRE(fs->AppendFile("/etc/log", "two\n", append));
  REQUIRE(fs->AppendFile("/etc/log", "three\n", tether::AppendOptions()));
  CHECK(dir.ReadFile("etc/log") == "one\ntwo\nthree\n");
  CHECK((LStat("/etc/log").st_mode & 07777) == 0640);  // appends keep the mode

  auto missing = fs->AppendFile("/etc/none", "x", append);
  REQUIRE_FALSE(missing);
  CHECK(missing.error().Is(std::errc::no_such_file_or_directory));
  CHECK(fs->AppendFile("/etc", "x", append).error().Is(std::errc::is_a_directory));
  std::filesystem::create_directory_symlink(outside.path(), Host("/etc/evil"));
  CHECK_FALSE(fs->AppendFile("/etc/evil/log", "pwned", create));
  outside.WriteFile("target", "theirs\n");
  std::filesystem::create_symlink(outside.Path("target"), Host("/etc/link"));
  CHECK_FALSE(fs->AppendFile("/etc/link", "pwned", append));
  CHECK(outside.ReadFile("target") == "theirs\n");
}

TEST_CASE_FIXTURE(Fixture, "ReadFileRange reads a file a piece at a time, none past its end") {
  dir.WriteFile("etc/data", "0123456789");
  CHECK(fs->ReadFileRange("/etc/data", 0, 4).value() == "0123");
  CHECK(fs->ReadFileRange("/etc/data", 4, 100).value() == "456789");
  CHECK(fs->ReadFileRange("/etc/data", 10, 4).value().empty());
  CHECK(fs->ReadFileRange("/etc/data", 50, 4).value().empty());
  CHECK(fs->ReadFileRange("/etc/none", 0, 4).error().Is(std::errc::no_such_file_or_directory));
  CHECK(fs->ReadFileRange("/etc", 0, 4).error().Is(std::errc::invalid_argument));
  std::filesystem::create_symlink(Host("/etc/data"), Host("/etc/link"));
  CHECK_FALSE(fs->ReadFileRange("/etc/link", 0, 4));
}

TEST_CASE_FIXTURE(Fixture, "LockFile holds a lock until released; a second one waits or fails") {
  auto held = fs->LockFile("/etc/lock", false);
  REQUIRE(held);
  CHECK((LStat("/etc/lock").st_mode & 07777) == 0600);
  auto busy = fs->LockFile("/etc/lock", false);
  REQUIRE_FALSE(busy);
  CHECK(busy.error().Is(std::errc::operation_would_block));
  held->reset();
  auto again = fs->LockFile("/etc/lock", true);  // free: no wait
  CHECK(again);
  std::filesystem::create_symlink(outside.Path("lock"), Host("/etc/link"));
  CHECK_FALSE(fs->LockFile("/etc/link", false));
  CHECK_FALSE(std::filesystem::exists(outside.Path("lock")));
}

TEST_CASE("ReadSecretFile drops trailing newlines and refuses what is not a small file") {
  TempDir dir("secret");
  dir.WriteFile("token", "s3cret\r\n\n");
  auto token = tether::ReadSecretFile(dir.Path("token"));
  REQUIRE(token);
  CHECK(*token == "s3cret");
  dir.WriteFile("inner", "two\nlines\n");
  CHECK(tether::ReadSecretFile(dir.Path("inner")).value_or("") == "two\nlines");
  // A device or a huge file is refused, not read without end.
  const auto device = tether::ReadSecretFile("/dev/zero");
  REQUIRE_FALSE(device);
  CHECK(device.error().Is(std::errc::invalid_argument));
  dir.WriteFile("big", std::string(70 << 10, 'x'));
  const auto big = tether::ReadSecretFile(dir.Path("big"));
  REQUIRE_FALSE(big);
  CHECK(big.error().Is(std::errc::file_too_large));
  CHECK_FALSE(tether::ReadSecretFile(dir.Path("missing")));
}

TEST_CASE("A file that says it is empty is read whole: /proc answers only a first read") {
  // pid_max is a sysctl whose handler returns the value to a read at offset 0 only.
  std::ifstream direct("/proc/sys/kernel/pid_max");
  std::string expected((std::istreambuf_iterator<char>(direct)), std::istreambuf_iterator<char>());
  REQUIRE(expected.size() > 2);
  auto fs = RootedFilesystem::Open("/");
  REQUIRE(fs);
  CHECK((*fs)->ReadFile("/proc/sys/kernel/pid_max", 1 << 20).value() == expected);
  CHECK((*fs)->ReadFile("/proc/sys/kernel/pid_max", 1).error().Is(std::errc::file_too_large));
}
