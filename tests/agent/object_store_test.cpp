// ObjectStore against repositories git wrote: every object of loose objects, of packs with
// offset deltas and with reference deltas, read back and compared with what
// `git cat-file` says; and damaged files, which must give errors, never wrong content.
#include "agent/git/object_store.hpp"

#include <sys/stat.h>
#include <sys/types.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include <doctest/doctest.h>

#include "common/process.hpp"
#include "tests/support/git_repo.hpp"
#include "tests/support/temp_dir.hpp"

namespace fs = std::filesystem;
using tether::ObjectHeader;
using tether::ObjectId;
using tether::ObjectStore;
using tether::ObjectType;
using tether::ObjectTypeName;
using tether::ParseObjectId;
using tether::testing::CommitFiles;
using tether::testing::CommitOptions;
using tether::testing::CreateBareRepo;
using tether::testing::TempDir;

namespace {

struct Repo {
  Repo() { CreateBareRepo(path); }

  // git's stdout; the test stops when git fails.
  std::string Git(std::vector<std::string> args, const std::string& input = {}) const {
    tether::RunOptions run;
    run.argv = {"git", "-C", path};
    run.argv.insert(run.argv.end(), args.begin(), args.end());
    run.env = tether::testing::GitEnvironment(home.path());
    if (!input.empty()) run.input = input;
    run.max_output = std::size_t{256} << 20;
    auto result = tether::Run(run);
    REQUIRE(result);
    REQUIRE_MESSAGE(result->ok(), "git " << args.front() << ": " << result->err);
    return result->out;
  }

  // Commits whose files are mostly alike, so that a repack makes deltas of them.
  void CommitAlike(int commits, int files) {
    std::string text;
    for (int line = 0; line < 200; ++line) text += "line " + std::to_string(line) + " of a file\n";
    for (int commit = 0; commit < commits; ++commit) {
      std::map<std::string, std::string> tree;
      for (int file = 0; file < files; ++file) {
        tree["dir" + std::to_string(file % 3) + "/f" + std::to_string(file)] =
            text + "file " + std::to_string(file) + " number " + std::to_string(serial_++) + "\n";
      }
      CommitOptions options;
      options.message = "commit " + std::to_string(commit);
      CommitFiles(path, tree, options);
    }
  }

  std::string ObjectsDir() const { return path + "/objects"; }

  int serial_ = 0;  // makes every file written unique
  TempDir dir{"object-store"};
  TempDir home{"object-store-home"};
  std::string path = dir.Path("fleet.git");
};

struct Expected {
  ObjectId id{};
  std::string type;
  std::string data;
};

// Every object of the repository, as `git cat-file --batch` prints it.
std::vector<Expected> AllObjects(const Repo& repo) {
  const std::string out = repo.Git({"cat-file", "--batch-all-objects", "--batch"});
  std::vector<Expected> objects;
  std::size_t at = 0;
  while (at < out.size()) {
    const auto eol = out.find('\n', at);
    REQUIRE(eol != std::string::npos);
    const std::string line = out.substr(at, eol - at);
    const auto first = line.find(' ');
    const auto second = line.find(' ', first + 1);
    REQUIRE(second != std::string::npos);
    Expected object;
    const auto id = ParseObjectId(line.substr(0, first));
    REQUIRE(id);
    object.id = *id;
    object.type = line.substr(first + 1, second - first - 1);
    const std::size_t size = std::stoul(line.substr(second + 1));
    object.data = out.substr(eol + 1, size);
    at = eol + 1 + size + 1;
    objects.push_back(std::move(object));
  }
  return objects;
}

// Reads every object git lists through a new store, and checks each against git.
void ExpectEveryObjectRead(const Repo& repo, std::size_t at_least) {
  const auto objects = AllObjects(repo);
  REQUIRE(objects.size() >= at_least);
  auto store = ObjectStore::Open(repo.ObjectsDir());
  REQUIRE_MESSAGE(store, (store ? "" : store.error().message()));
  for (const auto& expected : objects) {
    CAPTURE(tether::ContentIdHex(expected.id));
    CHECK((*store)->Has(expected.id));
    auto header = (*store)->Header(expected.id);
    REQUIRE_MESSAGE(header, (header ? "" : header.error().message()));
    CHECK(ObjectTypeName(header->type) == expected.type);
    CHECK(header->size == expected.data.size());
    auto object = (*store)->Read(expected.id);
    REQUIRE_MESSAGE(object, (object ? "" : object.error().message()));
    CHECK(ObjectTypeName(object->type) == expected.type);
    CHECK(object->data == expected.data);
  }
}

// How many objects of the repository's packs are deltas, as `git verify-pack` counts them.
std::size_t DeltaCount(const Repo& repo) {
  std::size_t deltas = 0;
  for (const auto& entry : fs::directory_iterator(repo.ObjectsDir() + "/pack")) {
    if (entry.path().extension() != ".idx") continue;
    const std::string out = repo.Git({"verify-pack", "-v", entry.path().string()});
    std::size_t at = 0;
    // "chain length = 3: 17 objects"
    while ((at = out.find("chain length = ", at)) != std::string::npos) {
      at = out.find(": ", at) + 2;
      deltas += std::stoul(out.substr(at));
    }
  }
  return deltas;
}

std::string PackPath(const Repo& repo, const std::string& extension) {
  for (const auto& entry : fs::directory_iterator(repo.ObjectsDir() + "/pack")) {
    if (entry.path().extension() == extension) return entry.path().string();
  }
  FAIL("no " << extension << " file");
  return {};
}

void FlipByte(const std::string& path, std::streamoff offset) {
  chmod(path.c_str(), 0644);
  std::fstream file(path, std::ios::in | std::ios::out | std::ios::binary);
  file.seekg(offset);
  const char byte = static_cast<char>(file.get());
  file.seekp(offset);
  file.put(static_cast<char>(byte ^ 0x5a));
}

}  // namespace

TEST_CASE("object store: reads every loose object as git does") {
  Repo repo;
  repo.CommitAlike(3, 12);
  REQUIRE(DeltaCount(repo) == 0);
  ExpectEveryObjectRead(repo, 3 * (12 + 3 + 1 + 1));
}

TEST_CASE("object store: reads every object of a pack with offset deltas") {
  Repo repo;
  repo.CommitAlike(8, 30);
  repo.Git({"repack", "-adf", "--window=50", "--depth=50"});
  REQUIRE(!fs::exists(repo.ObjectsDir() + "/" + repo.Git({"rev-parse", "main"}).substr(0, 2)));
  CHECK(DeltaCount(repo) > 100);
  ExpectEveryObjectRead(repo, 8 * (30 + 4));
}

TEST_CASE("object store: reads every object of a pack with reference deltas") {
  Repo repo;
  repo.CommitAlike(6, 20);
  repo.Git({"-c", "repack.useDeltaBaseOffset=false", "repack", "-adf", "--window=50"});
  CHECK(DeltaCount(repo) > 50);
  ExpectEveryObjectRead(repo, 6 * (20 + 4));
}

TEST_CASE("object store: reads loose objects and several packs side by side") {
  Repo repo;
  repo.CommitAlike(3, 10);
  repo.Git({"repack", "-d"});
  repo.CommitAlike(2, 10);  // loose, on top of the first pack
  repo.Git({"repack"});     // a second pack beside the first, the loose objects kept
  repo.CommitAlike(1, 10);
  ExpectEveryObjectRead(repo, 6 * (10 + 4));
}

TEST_CASE("object store: finds a pack written after it was opened") {
  Repo repo;
  repo.CommitAlike(1, 4);
  repo.Git({"repack", "-ad"});
  auto store = ObjectStore::Open(repo.ObjectsDir());
  REQUIRE(store);
  const std::string before = repo.Git({"rev-parse", "main"}).substr(0, 40);
  CHECK((*store)->Read(*ParseObjectId(before)));
  repo.CommitAlike(1, 4);
  repo.Git({"repack", "-ad"});  // the first pack is gone, a new one holds both commits
  const std::string after = repo.Git({"rev-parse", "main"}).substr(0, 40);
  auto commit = (*store)->Read(*ParseObjectId(after));
  REQUIRE_MESSAGE(commit, (commit ? "" : commit.error().message()));
  CHECK(commit->type == ObjectType::kCommit);
  CHECK(commit->data.find("parent " + before) != std::string::npos);
}

TEST_CASE("object store: an object it does not have, or one too large, is an error") {
  Repo repo;
  CommitFiles(repo.path, {{"big", std::string(100000, 'x')}});
  auto store = ObjectStore::Open(repo.ObjectsDir());
  REQUIRE(store);
  const auto missing = (*store)->Read(*ParseObjectId(std::string(40, 'a')));
  REQUIRE(!missing);
  CHECK(missing.error().Is(std::errc::no_such_file_or_directory));
  CHECK(missing.error().message().find(std::string(40, 'a')) != std::string::npos);
  CHECK(!(*store)->Has(*ParseObjectId(std::string(40, 'a'))));

  const auto big = *ParseObjectId(repo.Git({"rev-parse", "main:big"}).substr(0, 40));
  CHECK((*store)->Read(big, 100000));
  const auto too_large = (*store)->Read(big, 99999);
  REQUIRE(!too_large);
  CHECK(too_large.error().Is(std::errc::file_too_large));

  CHECK(!ParseObjectId("abc"));
  CHECK(!ParseObjectId(std::string(39, 'a') + "g"));
  CHECK(ParseObjectId(std::string(40, 'A')) == ParseObjectId(std::string(40, 'a')));
}

TEST_CASE("object store: a loose object that is another's content is refused") {
  Repo repo;
  CommitFiles(repo.path, {{"a", "the file a\n"}, {"b", "the file b\n"}});
  const std::string a = repo.Git({"rev-parse", "main:a"}).substr(0, 40);
  const std::string b = repo.Git({"rev-parse", "main:b"}).substr(0, 40);
  const std::string a_path = repo.ObjectsDir() + "/" + a.substr(0, 2) + "/" + a.substr(2);
  const std::string b_path = repo.ObjectsDir() + "/" + b.substr(0, 2) + "/" + b.substr(2);
  fs::remove(a_path);
  fs::copy_file(b_path, a_path);  // a's name, b's content: what a hostile writer could do
  auto store = ObjectStore::Open(repo.ObjectsDir());
  REQUIRE(store);
  const auto read = (*store)->Read(*ParseObjectId(a));
  REQUIRE(!read);
  CHECK(read.error().Is(std::errc::illegal_byte_sequence));
  CHECK(read.error().message().find("does not hash to its id") != std::string::npos);
  CHECK((*store)->Read(*ParseObjectId(b)));
}

TEST_CASE("object store: a damaged pack gives errors, never other content") {
  Repo repo;
  repo.CommitAlike(4, 12);
  repo.Git({"repack", "-adf", "--window=50"});
  const auto objects = AllObjects(repo);
  const std::string pack = PackPath(repo, ".pack");
  const auto size = static_cast<std::streamoff>(fs::file_size(pack));
  // Damage one byte at a time, at offsets across the pack; every read either gives git's
  // content or fails.
  std::size_t failures = 0;
  for (std::streamoff offset = 12; offset < size - 20; offset += size / 23) {
    FlipByte(pack, offset);
    auto store = ObjectStore::Open(repo.ObjectsDir());
    REQUIRE(store);
    for (const auto& expected : objects) {
      auto object = (*store)->Read(expected.id);
      if (object) {
        CHECK(object->data == expected.data);
      } else {
        ++failures;
        CHECK(object.error().message().find("corrupt") != std::string::npos);
      }
    }
    FlipByte(pack, offset);  // back as it was
  }
  CHECK(failures > 0);
  ExpectEveryObjectRead(repo, objects.size());
}

TEST_CASE("object store: a damaged pack index is an error that names it") {
  Repo repo;
  repo.CommitAlike(1, 3);
  repo.Git({"repack", "-ad"});
  const std::string idx = PackPath(repo, ".idx");
  SUBCASE("not an index") { FlipByte(idx, 0); }
  SUBCASE("cut short") {
    chmod(idx.c_str(), 0644);
    fs::resize_file(idx, 1000);
  }
  SUBCASE("a fan-out that goes down") { FlipByte(idx, 8 + 4 * 200 + 3); }
  const auto store = ObjectStore::Open(repo.ObjectsDir());
  REQUIRE(!store);
  CHECK(store.error().Is(std::errc::illegal_byte_sequence));
  CHECK(store.error().message().find(idx) != std::string::npos);
}

TEST_CASE("object store: a tree's entries parse as git lists them") {
  Repo repo;
  const std::string commit =
      CommitFiles(repo.path, {{"b.txt", "b\n"}, {"a/x", "x\n"}, {"a.b", "ab\n"}, {"a-", "dash\n"}});
  auto store = ObjectStore::Open(repo.ObjectsDir());
  REQUIRE(store);
  const auto tree_id = ParseObjectId(repo.Git({"rev-parse", commit + "^{tree}"}).substr(0, 40));
  auto object = (*store)->Read(*tree_id);
  REQUIRE(object);
  auto tree = tether::ParsedTree::Parse(object->data);
  REQUIRE(tree);
  // git ls-tree: "MODE TYPE ID\tNAME", in git's order; the parsed entries are in name order.
  std::map<std::string, std::pair<std::uint32_t, std::string>> listed;
  std::istringstream lines(repo.Git({"ls-tree", commit}));
  for (std::string line; std::getline(lines, line);) {
    const auto tab = line.find('\t');
    listed[line.substr(tab + 1)] = {
        static_cast<std::uint32_t>(std::stoul(line.substr(0, 6), nullptr, 8)),
        line.substr(tab - 40, 40)};
  }
  REQUIRE((*tree)->entries.size() == listed.size());
  auto expected = listed.begin();
  for (const auto& entry : (*tree)->entries) {
    CHECK(entry.name == expected->first);
    CHECK(entry.mode == expected->second.first);
    CHECK(tether::ContentIdHex(entry.id) == expected->second.second);
    ++expected;
  }
  REQUIRE((*tree)->Find("a") != nullptr);
  CHECK((*tree)->Find("a")->mode == 040000u);
  CHECK((*tree)->Find("a.") == nullptr);
  CHECK((*tree)->Find("") == nullptr);

  // Malformed trees are errors.
  for (const std::string& bad : {std::string("100644 a"), std::string("100644 a\0short", 15),
                                 std::string("1x0644 a\0", 9) + std::string(20, 'i'),
                                 std::string("100644 \0", 8) + std::string(20, 'i'),
                                 std::string("100644 ..\0", 10) + std::string(20, 'i'),
                                 std::string("100644 a\0", 9) + std::string(20, 'i') +
                                     std::string("100644 a\0", 9) + std::string(20, 'j')}) {
    CAPTURE(bad);
    const auto parsed = tether::ParsedTree::Parse(bad);
    REQUIRE(!parsed);
    CHECK(parsed.error().Is(std::errc::illegal_byte_sequence));
  }
}

TEST_CASE("object store: a limit holds for an object an earlier read kept as a base") {
  Repo repo;
  repo.CommitAlike(6, 20);
  repo.Git({"repack", "-adf", "--window=50", "--depth=50"});
  REQUIRE(DeltaCount(repo) > 50);
  const auto objects = AllObjects(repo);
  auto store = ObjectStore::Open(repo.ObjectsDir());
  REQUIRE(store);
  for (const auto& expected : objects) REQUIRE((*store)->Read(expected.id));
  // Now many are kept as bases: each, asked for with a limit one byte under its size,
  // is too large all the same.
  for (const auto& expected : objects) {
    if (expected.data.empty()) continue;
    CAPTURE(tether::ContentIdHex(expected.id));
    const auto read = (*store)->Read(expected.id, expected.data.size() - 1);
    REQUIRE(!read);
    CHECK(read.error().Is(std::errc::file_too_large));
  }
}

TEST_CASE("object store: what the mirror's owner could put there is refused, not followed") {
  Repo repo;
  repo.CommitAlike(1, 3);
  const std::string blob = repo.Git({"rev-parse", "main:dir0/f0"}).substr(0, 40);
  const std::string fan = repo.ObjectsDir() + "/" + blob.substr(0, 2);

  SUBCASE("a FIFO as a loose object: an error, not a wait for a writer") {
    fs::remove(fan + "/" + blob.substr(2));
    REQUIRE(mkfifo((fan + "/" + blob.substr(2)).c_str(), 0644) == 0);
    auto store = ObjectStore::Open(repo.ObjectsDir());
    REQUIRE(store);
    const auto read = (*store)->Read(*ParseObjectId(blob));
    REQUIRE(!read);  // as if it were not there
    CHECK(read.error().Is(std::errc::no_such_file_or_directory));
  }
  SUBCASE("a FIFO as a pack index") {
    fs::create_directories(repo.ObjectsDir() + "/pack");
    REQUIRE(mkfifo((repo.ObjectsDir() + "/pack/pack-0.idx").c_str(), 0644) == 0);
    const auto store = ObjectStore::Open(repo.ObjectsDir());
    REQUIRE(!store);
    CHECK(store.error().message().find("pack-0.idx is not a file") != std::string::npos);
  }
  SUBCASE("a directory of loose objects that is a symlink") {
    const std::string elsewhere = repo.dir.Path("elsewhere");
    fs::rename(fan, elsewhere);
    fs::create_directory_symlink(elsewhere, fan);
    auto store = ObjectStore::Open(repo.ObjectsDir());
    REQUIRE(store);
    const auto read = (*store)->Read(*ParseObjectId(blob));
    REQUIRE(!read);
    CHECK(read.error().Is(std::errc::no_such_file_or_directory));
  }
  SUBCASE("a pack directory that is a symlink") {
    repo.Git({"repack", "-ad"});
    const std::string elsewhere = repo.dir.Path("elsewhere");
    fs::rename(repo.ObjectsDir() + "/pack", elsewhere);
    fs::create_directory_symlink(elsewhere, repo.ObjectsDir() + "/pack");
    const auto store = ObjectStore::Open(repo.ObjectsDir());
    REQUIRE(!store);
    CHECK(store.error().message().find("/pack") != std::string::npos);
  }
  SUBCASE("a loose object whose header claims far more than its data") {
    // "blob 200000000\0" and nothing else, compressed: allocated as read, so refused at once.
    const std::string path = fan + "/" + blob.substr(2);
    fs::remove(path);
    tether::RunOptions deflate;
    deflate.argv = {
        "python3", "-c",
        "import sys, zlib; sys.stdout.buffer.write(zlib.compress(b'blob 200000000\\0'))"};
    auto made = tether::Run(deflate);
    REQUIRE(made);
    REQUIRE(made->ok());
    std::ofstream(path, std::ios::binary) << made->out;
    auto store = ObjectStore::Open(repo.ObjectsDir());
    REQUIRE(store);
    const auto read = (*store)->Read(*ParseObjectId(blob));
    REQUIRE(!read);
    CHECK(read.error().Is(std::errc::illegal_byte_sequence));
  }
}

TEST_CASE("object store: a pack index rewritten after it was opened reads no further") {
  Repo repo;
  repo.CommitAlike(2, 10);
  repo.Git({"repack", "-ad"});
  const auto objects = AllObjects(repo);
  auto store = ObjectStore::Open(repo.ObjectsDir());
  REQUIRE(store);
  // Every fan-out entry says "all of the file's ids and more": a lookup that believed it
  // would read far past the index.
  const std::string idx = PackPath(repo, ".idx");
  chmod(idx.c_str(), 0644);
  {
    std::fstream file(idx, std::ios::in | std::ios::out | std::ios::binary);
    file.seekp(8);
    for (int entry = 0; entry < 256; ++entry) file.write("\xff\xff\xff\xff", 4);
  }
  for (const auto& expected : objects) {
    auto object = (*store)->Read(expected.id);
    REQUIRE_MESSAGE(object, (object ? "" : object.error().message()));
    CHECK(object->data == expected.data);
  }
}
