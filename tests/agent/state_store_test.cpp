// The state dir through StateStore, on real files under a temp dir: every file round trips,
// a corrupt file is an error naming it (never an exception), and a state dir written by
// the code before StateStore (its exact bytes, by hand) is read as it is.
#include "agent/state/state_store.hpp"
#include "common/log.hpp"

#include <sys/stat.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <string>
#include <vector>

#include <doctest/doctest.h>
#include <spdlog/sinks/ringbuffer_sink.h>

#include "tests/support/temp_dir.hpp"

using tether::StateStore;
using tether::StoredEntry;
using tether::testing::TempDir;
using Json = nlohmann::json;

namespace {

struct StateDir {
  TempDir dir{"state-store"};
  std::unique_ptr<tether::RootedFilesystem> host = tether::RootedFilesystem::Open("/").value();
  StateStore store{*host, dir.path()};

  std::uint32_t ModeOf(const std::string& name) {
    struct stat st {};
    REQUIRE(lstat(dir.Path(name).c_str(), &st) == 0);
    return st.st_mode & 07777;
  }
};

struct Entry {
  std::string id;
  StoredEntry entry;
};

// The inventory's commit and entries, in the order read.
tether::Result<std::string> Load(const StateStore& store, std::vector<Entry>& entries) {
  return store.LoadInventory([&](std::string id, StoredEntry&& entry) {
    entries.push_back({std::move(id), std::move(entry)});
    return true;
  });
}

std::vector<std::string> JournalLines(const StateStore& store) {
  std::vector<std::string> lines;
  auto read = store.ReadJournal([&](std::string_view line) { lines.emplace_back(line); });
  REQUIRE(read);
  return lines;
}

// The exact bytes the code before StateStore wrote (engine.cpp's WriteInventory,
// quarantine.cpp, history.cpp, the daemon's pin and suspension, the last audit).
constexpr char kOldInventory[] =
    "{\"schema\":\"tether.inventory/v1\",\"commit\":\"3f2a9c0d1e4b5a6978c0d1e2f3a4b5c6d7e8f901\","
    "\"entries\":{\n"
    "\"file:/etc/motd\":{\"created\":true,\"fingerprint\":\"sha256:ab 0644 0:0\",\"kind\":"
    "\"file\",\"original\":null,\"path\":\"/etc/motd\"},\n"
    "\"package:nginx\":{\"created\":false,\"fingerprint\":\"\",\"kind\":\"package\","
    "\"original\":{\"installed\":false},\"path\":\"nginx\"},\n"
    "\"unit:app.service\":{\"created\":false,\"fingerprint\":\"x\",\"kind\":\"unit\","
    "\"original\":{\"content\":\"[Unit]\\n\",\"mode\":420},\"path\":"
    "\"/etc/systemd/system/app.service\"}\n"
    "}}\n";
constexpr char kOldQuarantine[] =
    "{\n \"commit\": \"c0ffee0000000000000000000000000000000000\",\n \"reason\": \"apply "
    "'file:/etc/motd': write: No space left on device\",\n \"schema\": "
    "\"tether.quarantine/v1\",\n \"since\": 1800000000\n}\n";
constexpr char kOldHistory[] =
    "{\"entries\":[{\"changes\":2,\"commit\":\"c1\",\"duration_ms\":1532,\"errors\":\"\","
    "\"id\":7,\"outcome\":\"applied\",\"output\":\"applied c1: 2 changes\\n\",\"signer\":"
    "\"ops (ssh-ed25519 SHA256:x)\",\"started\":1800000000,\"trigger\":\"poll\"}],\"schema\":"
    "\"tether.history/v1\"}\n";
constexpr char kOldJournal[] =
    "{\"begin\":\"0123456789ab\",\"commit\":\"c2\"}\n"
    "{\"step\":{\"id\":\"file:/etc/motd\",\"kind\":\"file\",\"undo\":{\"path\":\"/etc/motd\"}}}\n"
    "{\"committed\":true}\n";

}  // namespace

TEST_CASE("The inventory round trips, written aside and then put into place") {
  StateDir state;
  std::vector<Entry> none;
  auto empty = Load(state.store, none);
  REQUIRE(empty);
  CHECK(*empty == "");  // no inventory yet
  CHECK(none.empty());

  auto writer = state.store.StartInventory("c1");
  REQUIRE(writer);
  REQUIRE(writer->Add("file:/etc/motd", "file", "/etc/motd", true, Json(), "fp1"));
  REQUIRE(writer->Add("package:nginx", "package", "nginx", false, Json{{"installed", false}}, ""));
  REQUIRE(writer->Finish());
  CHECK_FALSE(std::filesystem::exists(state.dir.Path("inventory.json")));  // aside until...
  REQUIRE(state.store.InstallInventory());
  CHECK_FALSE(std::filesystem::exists(state.dir.Path("inventory.json.new")));
  CHECK(state.ModeOf("inventory.json") == 0600);

  std::vector<Entry> entries;
  auto commit = Load(state.store, entries);
  REQUIRE(commit);
  CHECK(*commit == "c1");
  CHECK(state.store.AppliedCommit().value() == "c1");
  REQUIRE(entries.size() == 2);
  CHECK(entries[0].id == "file:/etc/motd");
  CHECK(entries[0].entry.kind == "file");
  CHECK(entries[0].entry.path == "/etc/motd");
  CHECK(entries[0].entry.created);
  CHECK(entries[0].entry.original.is_null());
  CHECK(entries[0].entry.fingerprint == "fp1");
  CHECK_FALSE(entries[0].entry.secret);  // v2 records it
  CHECK(entries[1].entry.original == Json{{"installed", false}});

  // A next one written aside and discarded leaves the installed one.
  auto next = state.store.StartInventory("c2");
  REQUIRE(next);
  REQUIRE(next->Finish());
  REQUIRE(state.store.DiscardInventory());
  REQUIRE(state.store.DiscardInventory());  // none: nothing to do
  CHECK(state.store.AppliedCommit().value() == "c1");
  CHECK(state.store.InstallInventory().error().Is(std::errc::no_such_file_or_directory));
}

TEST_CASE("Fingerprints recorded beside the inventory are read over it, bound to it") {
  StateDir state;
  auto write = [&](const std::string& commit, const std::string& motd_fingerprint) {
    auto writer = state.store.StartInventory(commit);
    REQUIRE(writer);
    REQUIRE(writer->Add("file:/etc/issue", "file", "/etc/issue", true, Json(), "i1"));
    REQUIRE(writer->Add("file:/etc/motd", "file", "/etc/motd", true, Json(), motd_fingerprint));
    REQUIRE(writer->Add("package:nginx", "package", "nginx", false, Json(), ""));
    REQUIRE(writer->Finish());
    REQUIRE(state.store.InstallInventory());
  };
  auto fingerprints = [&] {
    std::map<std::string, std::string> out;
    std::vector<Entry> entries;
    REQUIRE(Load(state.store, entries));
    for (auto& [id, entry] : entries) out[id] = entry.fingerprint;
    return out;
  };
  write("c1", "m1");
  const std::string base = state.dir.ReadFile("inventory.json");

  // Aside until installed, like a whole inventory; discarded likewise.
  REQUIRE(state.store.StartInventoryDelta("c1", {{"file:/etc/motd", "m2"}}));
  CHECK(fingerprints()["file:/etc/motd"] == "m1");
  REQUIRE(state.store.DiscardInventory());
  CHECK_FALSE(std::filesystem::exists(state.dir.Path("inventory.delta.new")));
  REQUIRE(state.store.StartInventoryDelta("c1", {{"file:/etc/motd", "m2"}}));
  REQUIRE(state.store.InstallInventory());
  CHECK(state.ModeOf("inventory.delta") == 0600);
  CHECK(state.dir.ReadFile("inventory.json") == base);
  CHECK(fingerprints() == std::map<std::string, std::string>{{"file:/etc/issue", "i1"},
                                                             {"file:/etc/motd", "m2"},
                                                             {"package:nginx", ""}});

  // A next delta keeps what the last one recorded.
  REQUIRE(state.store.StartInventoryDelta("c1", {{"file:/etc/issue", "i2"}}));
  REQUIRE(state.store.InstallInventory());
  CHECK(fingerprints()["file:/etc/issue"] == "i2");
  CHECK(fingerprints()["file:/etc/motd"] == "m2");

  // What an apply left aside and never installed (a crash, a failed write) is not
  // installed by the next one, whichever of the two each is.
  state.dir.WriteFile("inventory.json.new", "left aside\n");
  REQUIRE(state.store.StartInventoryDelta("c1", {{"file:/etc/issue", "i2"}}));
  REQUIRE(state.store.InstallInventory());
  CHECK(state.dir.ReadFile("inventory.json") == base);
  CHECK_FALSE(std::filesystem::exists(state.dir.Path("inventory.json.new")));
  CHECK(fingerprints()["file:/etc/motd"] == "m2");
  state.dir.WriteFile("inventory.delta.new", "left aside\n");
  {
    auto writer = state.store.StartInventory("c1");
    REQUIRE(writer);
    CHECK_FALSE(std::filesystem::exists(state.dir.Path("inventory.delta.new")));
  }
  REQUIRE(state.store.DiscardInventory());
  CHECK(state.dir.ReadFile("inventory.json") == base);

  // Read in part: what the delta names is read (never left unread), with its fingerprint.
  std::vector<Entry> read;
  tether::UnreadEntries unread;
  REQUIRE(state.store.LoadInventory(
      [&](std::string id, StoredEntry&& entry) {
        read.push_back({std::move(id), std::move(entry)});
        return true;
      },
      [](std::string_view, std::string_view kind) { return kind != "file"; }, unread));
  REQUIRE(read.size() == 3);
  CHECK(read[1].entry.fingerprint == "m2");
  CHECK(unread.empty());

  // Of another inventory (a commit or a size it was not recorded over), or not one at
  // all: not used. It holds only fingerprints, which save reads. One that is not a delta
  // is said so in the log; one of another inventory is no fault.
  const std::string delta = state.dir.ReadFile("inventory.delta");
  auto log = std::make_shared<spdlog::sinks::ringbuffer_sink_mt>(10);
  tether::GetLogger("state")->sinks().push_back(log);
  struct Change {
    std::string from;
    std::string to;
    bool corrupt;
  };
  for (const auto& [from, to, corrupt] :
       std::vector<Change>{{"\"commit\":\"c1\"", "\"commit\":\"c0\"", false},
                           {"\"base\":\"", "\"base\":\"x", false},
                           {"\"fingerprints\":{", "\"fingerprints\":{\"x\":1,", true},
                           {"{", "[", true}}) {
    CAPTURE(to);
    std::string changed = delta;
    REQUIRE(changed.find(from) != std::string::npos);
    changed.replace(changed.find(from), from.size(), to);
    state.dir.WriteFile("inventory.delta", changed);
    CHECK(fingerprints()["file:/etc/motd"] == "m1");
    const auto said = log->last_formatted();
    CHECK(said.size() == (corrupt ? 1 : 0));
    if (corrupt && !said.empty()) {
      CHECK(said[0].find("'" + state.dir.Path("inventory.delta") +
                         "' is corrupt; it is not used") != std::string::npos);
    }
    log = std::make_shared<spdlog::sinks::ringbuffer_sink_mt>(10);
    tether::GetLogger("state")->sinks().back() = log;
  }
  tether::GetLogger("state")->sinks().pop_back();
  state.dir.WriteFile("inventory.delta", delta);
  CHECK(fingerprints()["file:/etc/motd"] == "m2");
  // The same bytes in another file (as a version that knows no delta writes the next
  // inventory, or a restore from a backup): not the inventory it was recorded over.
  {
    const std::string copy = state.dir.Path("inventory.copy");
    std::filesystem::copy_file(state.dir.Path("inventory.json"), copy);
    std::filesystem::rename(copy, state.dir.Path("inventory.json"));
    CHECK(state.dir.ReadFile("inventory.json") == base);
    CHECK(fingerprints()["file:/etc/motd"] == "m1");
    // Recorded again over this one.
    REQUIRE(state.store.StartInventoryDelta("c1", {{"file:/etc/motd", "m2"}}));
    REQUIRE(state.store.InstallInventory());
    CHECK(fingerprints()["file:/etc/motd"] == "m2");
    CHECK(fingerprints()["file:/etc/issue"] == "i1");  // the other one was not kept
    REQUIRE(state.store.StartInventoryDelta("c1", {{"file:/etc/issue", "i2"}}));
    REQUIRE(state.store.InstallInventory());
  }

  // At most kMaxDeltaEntries (two are recorded): past that, the whole inventory is to be
  // written. One recorded already is replaced, not added.
  StateStore::Fingerprints many;
  for (std::size_t i = 0; i + 2 < StateStore::kMaxDeltaEntries; ++i) {
    many.emplace("file:/srv/" + std::to_string(i), "f");
  }
  REQUIRE(state.store.StartInventoryDelta("c1", many));
  REQUIRE(state.store.InstallInventory());
  CHECK(Json::parse(state.dir.ReadFile("inventory.delta"))["fingerprints"].size() ==
        StateStore::kMaxDeltaEntries);
  const std::string full = state.dir.ReadFile("inventory.delta");
  auto refused = state.store.StartInventoryDelta("c1", {{"file:/srv/one more", "f"}});
  REQUIRE_FALSE(refused);
  CHECK(refused.error().Is(std::errc::file_too_large));
  CHECK(state.dir.ReadFile("inventory.delta") == full);  // the one in place stays
  CHECK(fingerprints()["file:/etc/motd"] == "m2");
  REQUIRE(state.store.StartInventoryDelta("c1", {{"file:/etc/motd", "m2b"}}));
  REQUIRE(state.store.InstallInventory());
  CHECK(fingerprints()["file:/etc/motd"] == "m2b");

  // A whole inventory takes the delta's place.
  write("c1", "m3");
  CHECK_FALSE(std::filesystem::exists(state.dir.Path("inventory.delta")));
  CHECK(fingerprints()["file:/etc/motd"] == "m3");
  CHECK(fingerprints()["file:/etc/issue"] == "i1");
}

TEST_CASE("The applied commit is read from the inventory's head, when it is whole") {
  StateDir state;
  const std::string commit(40, 'e');
  auto writer = state.store.StartInventory(commit);
  REQUIRE(writer);
  REQUIRE(writer->Add("file:/etc/motd", "file", "/etc/motd", true, Json(), "fp1"));
  REQUIRE(writer->Finish());
  REQUIRE(state.store.InstallInventory());
  CHECK(state.store.AppliedCommit().value() == commit);
  // An entry that is not one is not read for the commit (a cycle reads the entries).
  std::string text = state.dir.ReadFile("inventory.json");
  const auto created = text.find("\"created\":true");
  REQUIRE(created != std::string::npos);
  text.replace(created, 15, "\"created\":1234");
  state.dir.WriteFile("inventory.json", text);
  CHECK(state.store.AppliedCommit().value() == commit);
  CHECK_FALSE(state.store.LoadInventory([](std::string, StoredEntry&&) { return true; }));
  // Cut short, or its commit not one: read whole, and corrupt.
  state.dir.WriteFile("inventory.json", text.substr(0, text.size() - 2));
  CHECK(state.store.AppliedCommit().error().message().find("is corrupt") != std::string::npos);
  state.dir.WriteFile("inventory.json", "{\"schema\":\"tether.inventory/v2\",\"commit\":\"" +
                                            std::string(40, 'X') + "\",\"entries\":{\n}}\n");
  CHECK(state.store.AppliedCommit().value() == std::string(40, 'X'));  // read whole: valid JSON
}

TEST_CASE("An inventory of many entries is written a chunk at a time, whole") {
  StateDir state;
  auto writer = state.store.StartInventory("c1");
  REQUIRE(writer);
  for (int i = 0; i < 3000; ++i) {
    char id[32];
    std::snprintf(id, sizeof(id), "file:/srv/f%05d", i);
    REQUIRE(writer->Add(id, "file", id + 5, true, Json(), std::string(40, 'f')));
  }
  REQUIRE(writer->Finish());
  REQUIRE(state.store.InstallInventory());
  std::vector<Entry> entries;
  REQUIRE(Load(state.store, entries));
  REQUIRE(entries.size() == 3000);
  CHECK(entries.back().entry.path == "/srv/f02999");

  // Mapped (as a cycle's process reads it), read in part: the lines left unread are views
  // of the mapping, which they keep, even once the file is replaced.
  const std::string written = state.dir.ReadFile("inventory.json");
  state.store.set_map_files(true);
  entries.clear();
  tether::UnreadEntries unread;
  auto commit = state.store.LoadInventory(
      [&](std::string id, StoredEntry&& entry) {
        entries.push_back({std::move(id), std::move(entry)});
        return true;
      },
      [](std::string_view id, std::string_view) { return id == "file:/srv/f01500"; }, unread);
  REQUIRE(commit);
  CHECK(*commit == "c1");
  REQUIRE(entries.size() == 1);
  REQUIRE(unread.lines().size() == 2999);
  // Mapped, not read: the file is among this process's mappings while its lines are.
  auto mapped = [&] {
    std::ifstream maps("/proc/self/maps");
    std::string line;
    while (std::getline(maps, line)) {
      if (line.find(state.dir.Path("inventory.json")) != std::string::npos) return line;
    }
    return std::string();
  };
  CHECK(mapped() != "");
  state.dir.WriteFile("replaced", "replaced");
  std::filesystem::rename(state.dir.Path("replaced"), state.dir.Path("inventory.json"));
  CHECK(mapped().find("(deleted)") != std::string::npos);  // the old file, kept for the lines
  auto again = state.store.StartInventory("c1");
  REQUIRE(again);
  for (const auto& line : unread.lines()) {
    if (line.id() > entries[0].id && entries.size() == 1) {
      const auto& e = entries[0].entry;
      REQUIRE(again->Add(entries[0].id, e.kind, e.path, e.created, e.original, e.fingerprint));
      entries.push_back({});
    }
    REQUIRE(again->Add(line));
  }
  REQUIRE(again->Finish());
  REQUIRE(state.store.InstallInventory());
  CHECK(state.dir.ReadFile("inventory.json") == written);
}

TEST_CASE("Any bytes in an inventory entry's strings are written as JSON writes them") {
  StateDir state;
  std::vector<std::string> names = {
      "/srv/plain",       "/srv/with \"quotes\" and \\", "/srv/tab\there\nnewline",
      "/srv/caf\xc3\xa9", "/srv/bad\xff\xfeutf8",        std::string("/srv/nul\0x", 10),
      "/srv/del\x7f"};
  std::sort(names.begin(), names.end());  // ids in order
  auto writer = state.store.StartInventory("c1");
  REQUIRE(writer);
  std::string expected = "{\"schema\":\"tether.inventory/v2\",\"commit\":\"c1\",\"entries\":{";
  bool first = true;
  auto dump = [](const Json& json) {
    return json.dump(-1, ' ', false, Json::error_handler_t::replace);
  };
  for (const auto& name : names) {
    const std::string id = "file:" + name;
    REQUIRE(writer->Add(id, "file", name, false, Json{{"type", name}}, name));
    expected += first ? "\n" : ",\n";
    first = false;
    expected += dump(Json(id)) + ":" +
                dump(Json{{"kind", "file"},
                          {"path", name},
                          {"created", false},
                          {"original", {{"type", name}}},
                          {"fingerprint", name}});
  }
  expected += "\n}}\n";
  REQUIRE(writer->Finish());
  REQUIRE(state.store.InstallInventory());
  CHECK(state.dir.ReadFile("inventory.json") == expected);
  std::vector<Entry> entries;
  REQUIRE(Load(state.store, entries));
  CHECK(entries.size() == names.size());
}

TEST_CASE("A read in part leaves unread exactly the lines whose strings are plain") {
  // Each byte but the newline, at each place in an 8-byte word, in an id and in a path
  // (near the line's end, where the check takes the bytes one at a time): the line is left
  // unread (written back as it is) only when the byte is printable ASCII other than '"'
  // and '\\', which the writer writes as they are; else read through the parser.
  StateDir state;
  struct Written {
    std::string path;
    bool plain = false;
  };
  std::map<std::string, Written> written;  // by id
  for (int byte = 1; byte < 256; ++byte) {
    if (byte == '\n') continue;
    const char c = static_cast<char>(byte);
    const bool plain = byte >= 0x20 && byte < 0x7f && c != '"' && c != '\\';
    for (std::size_t at = 0; at < 8; ++at) {
      const std::string tag = std::to_string(byte) + "-" + std::to_string(at);
      written["file:/srv/" + std::string(at, 'a') + c + "-" + tag] = {"", plain};
      written["file:/srv/path-" + tag] = {"/srv/" + std::string(at, 'p') + c, plain};
    }
  }
  auto writer = state.store.StartInventory("c1");
  REQUIRE(writer);
  for (const auto& [id, entry] : written) {
    REQUIRE(writer->Add(id, "file", entry.path, true, Json(), "fp"));
  }
  REQUIRE(writer->Finish());
  REQUIRE(state.store.InstallInventory());
  std::set<std::string> handed;
  tether::UnreadEntries unread;
  REQUIRE(state.store.LoadInventory(
      [&](std::string id, StoredEntry&& entry) {
        CHECK(entry.fingerprint == "fp");
        handed.insert(std::move(id));
        return true;
      },
      [](std::string_view, std::string_view) { return false; }, unread));
  std::set<std::string> left;
  for (const auto& line : unread.lines()) left.emplace(line.id());
  CHECK(handed.size() + left.size() == written.size());
  for (const auto& [id, entry] : written) {
    CAPTURE(id);
    CHECK(left.count(id) == (entry.plain ? 1u : 0u));
    // Not UTF-8 (a byte over 0x7f alone), an id is written with U+FFFD in its place.
    if (id.starts_with("file:/srv/path-") ||
        static_cast<unsigned char>(id[id.find('-') - 1]) < 0x80) {
      CHECK(handed.count(id) == (entry.plain ? 0u : 1u));
    }
  }
}

namespace {

// Paths of entries of every form the writer has: plain strings, strings it escapes.
const std::vector<std::string> kEveryForm = {"/srv/a plain one", "/srv/b \"quoted\"", "/srv/c\ttab",
                                             "/srv/d caf\xc3\xa9", "/srv/e plain again"};

// Installs an inventory of commit "c1" with an entry "file:PATH" of each of kEveryForm:
// every other one with an original, every third one created, the last one's path
// `last_path` (none: the one its id names), fingerprints "fp0", "fp1"...
void WriteEveryForm(StateDir& state, const std::string& last_path) {
  auto writer = state.store.StartInventory("c1");
  REQUIRE(writer);
  for (std::size_t i = 0; i < kEveryForm.size(); ++i) {
    const Json original = i % 2 == 1 ? Json{{"type", "file"}, {"mode", 420}} : Json();
    REQUIRE(writer->Add("file:" + kEveryForm[i], "file", i == 4 ? last_path : "", i % 3 == 0,
                        original, "fp" + std::to_string(i)));
  }
  REQUIRE(writer->Finish());
  REQUIRE(state.store.InstallInventory());
}

}  // namespace

TEST_CASE("An inventory is read the same line by line as by the JSON parser") {
  StateDir state;
  const std::vector<std::string>& names = kEveryForm;
  WriteEveryForm(state, names.back());
  std::vector<Entry> by_line;
  REQUIRE(Load(state.store, by_line));
  REQUIRE(by_line.size() == names.size());

  // The same inventory indented: no longer as the writer writes it, read by the JSON parser.
  state.dir.WriteFile("inventory.json",
                      Json::parse(state.dir.ReadFile("inventory.json")).dump(2) + "\n");
  std::vector<Entry> by_parser;
  auto commit = Load(state.store, by_parser);
  REQUIRE(commit);
  CHECK(*commit == "c1");
  REQUIRE(by_parser.size() == by_line.size());
  for (std::size_t i = 0; i < by_line.size(); ++i) {
    CAPTURE(i);
    CHECK(by_line[i].id == "file:" + names[i]);
    CHECK(by_line[i].id == by_parser[i].id);
    CHECK(by_line[i].entry.kind == by_parser[i].entry.kind);
    CHECK(by_line[i].entry.path == by_parser[i].entry.path);
    CHECK(by_line[i].entry.created == by_parser[i].entry.created);
    CHECK(by_line[i].entry.created == (i % 3 == 0));
    CHECK(by_line[i].entry.fingerprint == "fp" + std::to_string(i));
    CHECK(by_line[i].entry.fingerprint == by_parser[i].entry.fingerprint);
    CHECK(by_line[i].entry.original == by_parser[i].entry.original);
    CHECK(by_line[i].entry.original.is_null() == (i % 2 == 0));
  }
}

TEST_CASE(
    "An inventory read in part leaves the lines turned down as written, and writes them back") {
  StateDir state;
  auto writer = state.store.StartInventory("c1");
  REQUIRE(writer);
  // Plain files (most), a file with an original, a pending one, a secret one, a file with a
  // quoted name, and a package.
  REQUIRE(writer->Add("file:/srv/a", "file", "", true, Json(), "fa"));
  REQUIRE(writer->Add("file:/srv/b", "file", "", false, Json(), "fb"));
  REQUIRE(writer->Add("file:/srv/c \"q\"", "file", "", true, Json(), "fc"));
  REQUIRE(writer->Add("file:/srv/d", "file", "", true, Json{{"type", "file"}}, "fd"));
  REQUIRE(writer->Add("file:/srv/e", "file", "", true, Json(), "fe", true));
  REQUIRE(writer->Add("file:/srv/f", "file", "", true, Json(), "ff", false, {}, true));
  REQUIRE(writer->Add("file:/srv/g", "file", "/srv/g", true, Json(), "fg"));
  REQUIRE(writer->Add("package:nginx", "package", "nginx", false, Json(), "1.22"));
  REQUIRE(writer->Finish());
  REQUIRE(state.store.InstallInventory());
  const std::string written = state.dir.ReadFile("inventory.json");

  std::vector<Entry> entries;
  tether::UnreadEntries unread;
  std::vector<std::pair<std::string, std::string>> asked;
  auto commit = state.store.LoadInventory(
      [&](std::string id, StoredEntry&& entry) {
        entries.push_back({std::move(id), std::move(entry)});
        return true;
      },
      [&](std::string_view id, std::string_view kind) {
        asked.emplace_back(id, kind);
        return kind != "file" || id == "file:/srv/b";
      },
      unread);
  REQUIRE(commit);
  CHECK(*commit == "c1");
  // Asked of the plain entries only: the others are handed over whatever it says.
  CHECK(asked == std::vector<std::pair<std::string, std::string>>{{"file:/srv/a", "file"},
                                                                  {"file:/srv/b", "file"},
                                                                  {"file:/srv/g", "file"},
                                                                  {"package:nginx", "package"}});
  std::vector<std::string> ids;
  for (const auto& entry : entries) ids.push_back(entry.id);
  CHECK(ids == std::vector<std::string>{"file:/srv/b", "file:/srv/c \"q\"", "file:/srv/d",
                                        "file:/srv/e", "file:/srv/f", "package:nginx"});
  CHECK(entries[2].entry.original == Json{{"type", "file"}});
  CHECK(entries[3].entry.pending);
  CHECK(entries[4].entry.secret);
  REQUIRE(unread.lines().size() == 2);
  CHECK(unread.lines()[0].id() == "file:/srv/a");
  CHECK(unread.lines()[1].id() == "file:/srv/g");
  CHECK(unread.lines()[0].path() == "");
  CHECK(unread.lines()[1].path() == "/srv/g");
  CHECK(written.find("\n" + std::string(unread.lines()[1].text()) + ",\n") != std::string::npos);
  const std::string taken_line_g(unread.lines()[1].text());

  // Copies share the text; taking one parses it as a whole read would, and forgets it.
  const tether::UnreadEntries copy = unread;
  std::vector<Entry> taken;
  auto take = [&](std::string id, StoredEntry&& entry) {
    taken.push_back({std::move(id), std::move(entry)});
    return true;
  };
  CHECK(unread.Take({"file:/srv/b", "file:/srv/g", "file:/srv/z"}, take));
  REQUIRE(taken.size() == 1);
  CHECK(taken[0].id == "file:/srv/g");
  CHECK(taken[0].entry.kind == "file");
  CHECK(taken[0].entry.path == "/srv/g");
  CHECK(taken[0].entry.fingerprint == "fg");
  CHECK(taken[0].entry.created);
  REQUIRE(unread.lines().size() == 1);
  CHECK(unread.lines()[0].id() == "file:/srv/a");
  CHECK(copy.lines().size() == 2);
  CHECK_FALSE(unread.Take({"file:/srv/a"}, [](std::string, StoredEntry&&) { return false; }));

  // The unread lines written back among the entries read give the same bytes.
  auto again = state.store.StartInventory("c1");
  REQUIRE(again);
  std::size_t next = 0;
  for (const auto& entry : entries) {
    for (; next < copy.lines().size() && copy.lines()[next].id() < entry.id; ++next) {
      REQUIRE(again->Add(copy.lines()[next]));
    }
    const auto& e = entry.entry;
    REQUIRE(again->Add(entry.id, e.kind, e.path, e.created, e.original, e.fingerprint, e.pending,
                       e.on_remove, e.secret));
  }
  for (; next < copy.lines().size(); ++next) REQUIRE(again->Add(copy.lines()[next]));
  REQUIRE(again->Finish());
  REQUIRE(state.store.InstallInventory());
  CHECK(state.dir.ReadFile("inventory.json") == written);

  // Not as this version writes it (v1, or indented): read whole, nothing left unread.
  state.dir.WriteFile("inventory.json", Json::parse(written).dump(2) + "\n");
  entries.clear();
  auto whole = state.store.LoadInventory(
      [&](std::string id, StoredEntry&& entry) {
        entries.push_back({std::move(id), std::move(entry)});
        return true;
      },
      [](std::string_view, std::string_view) { return false; }, unread);
  REQUIRE(whole);
  CHECK(entries.size() == 8);
  CHECK(unread.empty());

  // Lines out of id order (edited by hand), or one id twice: read whole as well, since
  // lines left unread are merged back by their order.
  const std::string line_a = "\n" + std::string(copy.lines()[0].text()) + ",";
  const std::string line_g = "\n" + std::string(taken_line_g) + ",";
  for (const std::string& edited : {[&] {
                                      std::string text = written;
                                      text.erase(text.find(line_g), line_g.size());
                                      text.insert(text.find(line_a), line_g);  // g before a
                                      return text;
                                    }(),
                                    [&] {
                                      std::string text = written;
                                      text.insert(text.find(line_a), line_a);  // a twice
                                      return text;
                                    }()}) {
    state.dir.WriteFile("inventory.json", edited);
    entries.clear();
    auto read = state.store.LoadInventory(
        [&](std::string id, StoredEntry&& entry) {
          entries.push_back({std::move(id), std::move(entry)});
          return true;
        },
        [](std::string_view, std::string_view) { return false; }, unread);
    REQUIRE(read);
    CHECK(entries.size() >= 8);
    CHECK(unread.empty());
  }
  // A read in part hands over what it keeps once the whole text is found as written: an
  // entry kept before the line out of order is not handed over twice.
  {
    std::string text = written;
    text.erase(text.find(line_g), line_g.size());
    text.insert(text.find(line_a), line_g);  // g, kept, before a
    state.dir.WriteFile("inventory.json", text);
    std::map<std::string, int> handed;
    auto read = state.store.LoadInventory(
        [&](std::string id, StoredEntry&&) {
          ++handed[id];
          return true;
        },
        [](std::string_view id, std::string_view) { return id == "file:/srv/g"; }, unread);
    REQUIRE(read);
    CHECK(handed.size() == 8);
    CHECK(handed["file:/srv/g"] == 1);
    CHECK(unread.empty());
  }
}

TEST_CASE("The journal is created once, appended to, read back by lines, and removed") {
  StateDir state;
  CHECK_FALSE(state.store.ReadJournal([](std::string_view) {}).value());  // none
  REQUIRE(state.store.CreateJournal("{\"begin\":\"t\"}\n"));
  CHECK(state.ModeOf("journal") == 0600);
  CHECK(state.store.CreateJournal("again\n").error().Is(std::errc::file_exists));
  REQUIRE(state.store.AppendJournal("one\n", false));
  REQUIRE(state.store.AppendJournal("two\nthree\ntorn"));
  CHECK(JournalLines(state.store) ==
        std::vector<std::string>{"{\"begin\":\"t\"}", "one", "two", "three"});
  // Longer than a read chunk: lines across chunk boundaries come whole.
  const std::string line(100000, 'x');
  REQUIRE(state.store.AppendJournal("\n" + line + "\nlast\n"));
  auto lines = JournalLines(state.store);
  REQUIRE(lines.size() == 7);
  CHECK(lines[4] == "torn");
  CHECK(lines[5] == line);
  CHECK(lines[6] == "last");
  REQUIRE(state.store.RemoveJournal());
  CHECK_FALSE(std::filesystem::exists(state.dir.Path("journal")));
  REQUIRE(state.store.RemoveJournal());  // none: nothing to do
}

TEST_CASE("The quarantine, history, last audit, pin and suspension round trip") {
  StateDir state;
  CHECK_FALSE(state.store.LoadQuarantine().value());
  REQUIRE(state.store.SaveQuarantine({"c0ffee", "it failed", 1800000000}));
  CHECK(state.ModeOf("quarantine.json") == 0600);
  auto quarantine = state.store.LoadQuarantine();
  REQUIRE(quarantine);
  REQUIRE(*quarantine);
  CHECK((*quarantine)->commit == "c0ffee");
  CHECK((*quarantine)->reason == "it failed");
  CHECK((*quarantine)->since == 1800000000);
  REQUIRE(state.store.ClearQuarantine());
  CHECK_FALSE(state.store.LoadQuarantine().value());
  REQUIRE(state.store.ClearQuarantine());  // none: nothing to do

  CHECK(state.store.LoadHistory().value().empty());
  tether::HistoryEntry entry;
  entry.commit = "c1";
  entry.outcome = "applied";
  entry.changes = 3;
  entry.output = std::string(tether::kHistoryOutput + 10, 'o');
  CHECK(state.store.AppendHistory(entry).value() == 1);
  for (std::size_t i = 0; i < tether::kHistoryKept; ++i) REQUIRE(state.store.AppendHistory(entry));
  auto history = state.store.LoadHistory();
  REQUIRE(history);
  REQUIRE(history->size() == tether::kHistoryKept);
  CHECK(history->front().id == 2);  // the oldest went
  CHECK(history->back().id == static_cast<std::int64_t>(tether::kHistoryKept) + 1);
  CHECK(history->back().changes == 3);
  CHECK(history->back().output.size() == tether::kHistoryOutput);

  const auto when = std::chrono::system_clock::time_point(std::chrono::seconds(1800000000));
  CHECK_FALSE(state.store.LastAudit().value());
  REQUIRE(state.store.RecordAudit(when));
  CHECK(state.store.LastAudit().value() == when);

  CHECK_FALSE(state.store.LoadPin().value());
  const std::string commit(40, 'a');
  REQUIRE(state.store.SavePin(commit));
  CHECK(state.store.LoadPin().value() == commit);
  REQUIRE(state.store.SavePin(std::nullopt));
  CHECK_FALSE(state.store.LoadPin().value());
  CHECK_FALSE(std::filesystem::exists(state.dir.Path("pinned")));

  CHECK_FALSE(state.store.LoadSuspension().value());
  REQUIRE(state.store.SaveSuspension(std::string()));  // suspended, no reason given
  CHECK(state.store.LoadSuspension().value() == "");
  REQUIRE(state.store.SaveSuspension("maintenance"));
  CHECK(state.store.LoadSuspension().value() == "maintenance");
  REQUIRE(state.store.SaveSuspension(std::nullopt));
  CHECK_FALSE(state.store.LoadSuspension().value());
  // Longer than the control socket allows (written by hand, or by an older tetherd): read.
  const std::string long_reason(5000, 'r');
  REQUIRE(state.store.SaveSuspension(long_reason));
  CHECK(state.store.LoadSuspension().value() == long_reason);
  REQUIRE(state.store.SaveSuspension(std::nullopt));

  CHECK(state.store.OutboxDir() == state.dir.Path("outbox"));
}

TEST_CASE("The files seen written in place are kept, named or as all, until none are") {
  StateDir state;
  CHECK(state.store.LoadWrittenInPlace().value() == tether::WrittenInPlace{});
  REQUIRE(state.store.SaveWrittenInPlace({{"file:/etc/b", "file:/etc/a"}, false}));
  CHECK(state.ModeOf("written-in-place.json") == 0600);
  CHECK(state.store.LoadWrittenInPlace().value() ==
        tether::WrittenInPlace{{"file:/etc/a", "file:/etc/b"}, false});
  // More than it names: every file is to be read.
  std::vector<std::string> many;
  for (std::size_t i = 0; i <= tether::kMaxWrittenInPlace; ++i) {
    many.push_back("file:/srv/" + std::to_string(i));
  }
  REQUIRE(state.store.SaveWrittenInPlace({many, false}));
  CHECK(state.store.LoadWrittenInPlace().value() == tether::WrittenInPlace{{}, true});
  many.pop_back();
  REQUIRE(state.store.SaveWrittenInPlace({many, false}));
  CHECK(state.store.LoadWrittenInPlace().value().ids.size() == tether::kMaxWrittenInPlace);
  // None left: the file goes.
  REQUIRE(state.store.SaveWrittenInPlace({}));
  CHECK_FALSE(std::filesystem::exists(state.dir.Path("written-in-place.json")));
  CHECK(state.store.LoadWrittenInPlace().value() == tether::WrittenInPlace{});
  REQUIRE(state.store.SaveWrittenInPlace({}));  // none: nothing to do
}

TEST_CASE("The state dir's lock is held by one at a time, until released") {
  StateDir state;
  auto held = state.store.Lock(false);
  REQUIRE(held);
  auto second = state.store.Lock(false);
  REQUIRE_FALSE(second);
  CHECK(second.error().Is(std::errc::operation_would_block));
  held->reset();
  CHECK(state.store.Lock(false));
}

TEST_CASE("A corrupt state file is an error naming it, never an exception") {
  struct Case {
    const char* file;
    const char* content;
  };
  // Not JSON, the wrong schema, and members of the wrong type (which nlohmann's value()
  // would throw on).
  const Case cases[] = {
      {"inventory.json", "{\"schema\": \"tether.inv"},
      {"inventory.json", "{\"schema\": 1, \"commit\": \"c\", \"entries\": {}}"},
      {"inventory.json", "{\"schema\": \"tether.inventory/v1\", \"commit\": 5, \"entries\": {}}"},
      {"inventory.json",
       "{\"schema\": \"tether.inventory/v1\", \"commit\": \"c\", \"entries\": {\"file:/x\": "
       "{\"kind\": \"file\", \"path\": \"/x\", \"created\": \"yes\"}}}"},
      {"inventory.json",
       "{\"schema\": \"tether.inventory/v1\", \"commit\": \"c\", \"entries\": {\"file:/x\": "
       "{\"kind\": 3, \"path\": \"/x\"}}}"},
      // Entries are read as the parser finishes each: one that is not an object, entries
      // that are not an object, and a good entry before a bad one.
      {"inventory.json",
       "{\"schema\": \"tether.inventory/v1\", \"commit\": \"c\", \"entries\": {\"file:/x\": 7}}"},
      {"inventory.json",
       "{\"schema\": \"tether.inventory/v1\", \"commit\": \"c\", \"entries\": [{\"kind\": "
       "\"file\", \"path\": \"\", \"created\": true, \"fingerprint\": \"\"}]}"},
      {"inventory.json",
       "{\"schema\": \"tether.inventory/v1\", \"commit\": \"c\", \"entries\": {\"file:/a\": "
       "{\"kind\": \"file\", \"path\": \"\", \"created\": true, \"fingerprint\": \"\"}, "
       "\"file:/b\": {\"kind\": \"file\"}}}"},
      // As this version writes an inventory (read a line at a time), with an entry that
      // is not one, and cut short.
      {"inventory.json",
       "{\"schema\":\"tether.inventory/v1\",\"commit\":\"c\",\"entries\":{\n"
       "\"file:/a\":{\"created\":true,\"fingerprint\":\"\",\"kind\":\"file\",\"original\":null,"
       "\"path\":\"\"},\n"
       "\"file:/b\":{\"created\":\"yes\",\"fingerprint\":\"\",\"kind\":\"file\",\"original\":null,"
       "\"path\":\"\"}\n}}\n"},
      {"inventory.json",
       "{\"schema\":\"tether.inventory/v1\",\"commit\":\"c\",\"entries\":{\n"
       "\"file:/a\":{\"created\":true,\"fingerprint\":\"\",\"kind\":\"file\",\"original\":null,"
       "\"path\":\"\"},\n"
       "\"file:/b\":{\"created\":true,\"fingerprint\":\"\",\"kind\":\"file\",\"original\":null,"
       "\"path\":\"\"},\n"},
      {"inventory.json",
       "{\"schema\":\"tether.inventory/v1\",\"commit\":\"c\",\"entries\":{\n"
       "\"file:/a\":{\"created\":true,\"fingerprint\":\"\",\"kind\":\"file\",\"original\":null,"
       "\"path\":\"\"}\n}"},
      {"quarantine.json", "[1, 2]"},
      {"quarantine.json",
       "{\"schema\": \"tether.quarantine/v1\", \"commit\": \"c\", \"since\": \"today\"}"},
      {"quarantine.json",
       "{\"schema\": \"tether.quarantine/v1\", \"commit\": \"c\", \"reason\": "
       "{}}"},
      {"history.json", "{\"schema\": \"tether.history/v1\", \"entries\": {}}"},
      {"history.json",
       "{\"schema\": \"tether.history/v1\", \"entries\": [{\"id\": \"one\", \"commit\": \"c\"}]}"},
      {"history.json",
       "{\"schema\": \"tether.history/v1\", \"entries\": [{\"id\": 1, \"changes\": -2}]}"},
      {"last-audit", "yesterday\n"},
      {"written-in-place.json", "{\"schema\": \"tether.written-in-place/v1\", \"ids\": {}}"},
      {"written-in-place.json",
       "{\"schema\": \"tether.written-in-place/v1\", \"all\": 0, \"ids\": []}"},
      {"written-in-place.json",
       "{\"schema\": \"tether.written-in-place/v1\", \"ids\": [\"file:/a\", 7]}"},
      {"written-in-place.json", "{\"schema\": \"tether.written-in-place/v2\", \"ids\": []}"},
      {"written-in-place.json", "[\"file:/a\"]"},
  };
  for (const auto& [file, content] : cases) {
    CAPTURE(file);
    CAPTURE(content);
    StateDir state;
    state.dir.WriteFile(file, content);
    const std::string name = file;
    tether::Status status;
    CHECK_NOTHROW(status = [&]() -> tether::Status {
      if (name == "inventory.json") {
        std::vector<Entry> entries;
        if (auto loaded = Load(state.store, entries); !loaded) return tether::Fail(loaded.error());
        return state.store.AppliedCommit().map([](const std::string&) {});
      }
      if (name == "quarantine.json") return state.store.LoadQuarantine().map([](const auto&) {});
      if (name == "written-in-place.json") {
        return state.store.LoadWrittenInPlace().map([](const auto&) {});
      }
      if (name == "history.json") {
        if (auto appended = state.store.AppendHistory({}); !appended) {
          return tether::Fail(appended.error());
        }
        return state.store.LoadHistory().map([](const auto&) {});
      }
      return state.store.LastAudit().map([](const auto&) {});
    }());
    REQUIRE_FALSE(status);
    CHECK(status.error().message().find("'" + state.dir.Path(file) + "' is corrupt") !=
          std::string::npos);
    CHECK(state.dir.ReadFile(file) == content);  // left as it is
  }
}

TEST_CASE(
    "Plain entries are handed over as views, the others parsed; a delta's through the parser") {
  StateDir state;
  WriteEveryForm(state, "/srv/elsewhere");
  std::vector<Entry> whole;
  REQUIRE(Load(state.store, whole));
  REQUIRE(whole.size() == kEveryForm.size());

  std::vector<Entry> mixed;
  std::vector<std::string> as_views;
  auto read = [&](const tether::StateStore::PlainEntryVisitor& on_plain) {
    mixed.clear();
    as_views.clear();
    tether::UnreadEntries unread;
    return state.store.LoadInventory(
        [&](std::string id, StoredEntry&& entry) {
          mixed.push_back({std::move(id), std::move(entry)});
          return true;
        },
        on_plain, nullptr, unread);
  };
  auto keep = [&](const tether::PlainStoredEntry& plain) {
    as_views.emplace_back(plain.id);
    StoredEntry entry;
    entry.kind = plain.kind;
    entry.path = plain.path;
    entry.created = plain.created;
    entry.fingerprint = plain.fingerprint;
    mixed.push_back({std::string(plain.id), std::move(entry)});
    return true;
  };
  auto same_as_whole = [&] {
    REQUIRE(mixed.size() == whole.size());
    for (std::size_t i = 0; i < whole.size(); ++i) {
      CAPTURE(i);
      CHECK(mixed[i].id == whole[i].id);
      CHECK(mixed[i].entry.kind == whole[i].entry.kind);
      CHECK(mixed[i].entry.path == whole[i].entry.path);
      CHECK(mixed[i].entry.created == whole[i].entry.created);
      CHECK(mixed[i].entry.fingerprint == whole[i].entry.fingerprint);
      CHECK(mixed[i].entry.original == whole[i].entry.original);
    }
  };
  auto commit = read(keep);
  REQUIRE(commit);
  CHECK(*commit == "c1");
  same_as_whole();
  // No original, no byte the writer escapes: those two, in id order with the others.
  CHECK(as_views == std::vector<std::string>{"file:/srv/a plain one", "file:/srv/e plain again"});

  // One refused as a view: the inventory is corrupt, and says which entry.
  auto refused = read(
      [](const tether::PlainStoredEntry& plain) { return plain.id != "file:/srv/e plain again"; });
  REQUIRE_FALSE(refused);
  CHECK(refused.error().message().find("is corrupt (bad entry 'file:/srv/e plain again')") !=
        std::string::npos);

  // With fingerprints recorded beside it, every entry goes through the parser's visitor
  // (which gives it the newer fingerprint).
  REQUIRE(state.store.StartInventoryDelta("c1", {{"file:/srv/a plain one", "newer"}}));
  REQUIRE(state.store.InstallInventory());
  whole.clear();
  REQUIRE(Load(state.store, whole));
  CHECK(whole.front().entry.fingerprint == "newer");
  REQUIRE(read(keep));
  CHECK(as_views.empty());
  same_as_whole();
}

TEST_CASE("An entry the reader refuses (an unknown kind) makes the inventory corrupt") {
  StateDir state;
  state.dir.WriteFile("inventory.json",
                      "{\"schema\":\"tether.inventory/v1\",\"commit\":\"c\",\"entries\":{\n"
                      "\"gadget:x\":{\"kind\":\"gadget\",\"path\":\"x\"}\n}}\n");
  auto loaded = state.store.LoadInventory([](std::string, StoredEntry&&) { return false; });
  REQUIRE_FALSE(loaded);
  CHECK(loaded.error().message() == "inventory '" + state.dir.Path("inventory.json") +
                                        "' is corrupt (bad entry 'gadget:x'); it was left as it "
                                        "is: repair or remove it by hand");

  // Refused under an empty id, as the writer writes it and in any other form: corrupt too.
  for (const char* separator : {"\n", " \n "}) {
    CAPTURE(separator);
    state.dir.WriteFile(
        "inventory.json",
        std::string("{\"schema\":\"tether.inventory/v1\",\"commit\":\"c\",\"entries\":{") +
            separator +
            "\"\":{\"created\":true,\"fingerprint\":\"\",\"kind\":\"gadget\","
            "\"original\":null,\"path\":\"x\"}" +
            separator + "}}\n");
    auto empty_id = state.store.LoadInventory([](std::string, StoredEntry&&) { return false; });
    REQUIRE_FALSE(empty_id);
    CHECK(empty_id.error().message().find("is corrupt (bad entry '')") != std::string::npos);
  }
}

TEST_CASE("A state dir written before StateStore is read as it is, and written the same way") {
  StateDir state;
  state.dir.WriteFile("inventory.json", kOldInventory);
  state.dir.WriteFile("quarantine.json", kOldQuarantine);
  state.dir.WriteFile("history.json", kOldHistory);
  state.dir.WriteFile("journal", kOldJournal);
  state.dir.WriteFile("last-audit", "1800000000\n");
  state.dir.WriteFile("pinned", "3f2a9c0d1e4b5a6978c0d1e2f3a4b5c6d7e8f901");
  state.dir.WriteFile("suspended", "until the migration is over");

  std::vector<Entry> entries;
  auto commit = Load(state.store, entries);
  REQUIRE_MESSAGE(commit, (commit ? "" : commit.error().message()));
  CHECK(*commit == "3f2a9c0d1e4b5a6978c0d1e2f3a4b5c6d7e8f901");
  REQUIRE(entries.size() == 3);
  // v1 did not record which files are secret: every entry is taken as one (a prune's
  // diff then shows sizes only).
  CHECK(std::all_of(entries.begin(), entries.end(), [](const Entry& e) { return e.entry.secret; }));
  CHECK(entries[0].id == "file:/etc/motd");
  CHECK(entries[0].entry.fingerprint == "sha256:ab 0644 0:0");
  CHECK(entries[1].entry.kind == "package");
  CHECK(entries[1].entry.original == Json{{"installed", false}});
  CHECK(entries[2].entry.path == "/etc/systemd/system/app.service");
  CHECK(entries[2].entry.original["content"] == "[Unit]\n");

  auto quarantine = state.store.LoadQuarantine().value();
  REQUIRE(quarantine);
  CHECK(quarantine->commit == "c0ffee0000000000000000000000000000000000");
  CHECK(quarantine->reason == "apply 'file:/etc/motd': write: No space left on device");
  CHECK(quarantine->since == 1800000000);

  auto history = state.store.LoadHistory().value();
  REQUIRE(history.size() == 1);
  CHECK(history[0].id == 7);
  CHECK(history[0].signer == "ops (ssh-ed25519 SHA256:x)");
  CHECK(history[0].changes == 2);
  CHECK(history[0].started == 1800000000);
  CHECK(history[0].duration_ms == 1532);
  CHECK(history[0].output == "applied c1: 2 changes\n");

  CHECK(JournalLines(state.store).size() == 3);
  CHECK(state.store.LastAudit().value() ==
        std::chrono::system_clock::time_point(std::chrono::seconds(1800000000)));
  CHECK(state.store.LoadPin().value() == "3f2a9c0d1e4b5a6978c0d1e2f3a4b5c6d7e8f901");
  CHECK(state.store.LoadSuspension().value() == "until the migration is over");

  // Written again, each file has the same bytes: the next version reads what this one
  // writes as the previous one did.
  auto writer = state.store.StartInventory(*commit);
  REQUIRE(writer);
  for (const auto& [id, entry] : entries) {
    REQUIRE(
        writer->Add(id, entry.kind, entry.path, entry.created, entry.original, entry.fingerprint));
  }
  REQUIRE(writer->Finish());
  REQUIRE(state.store.InstallInventory());
  std::string rewritten = kOldInventory;  // as v2 now, nothing else changed
  rewritten.replace(rewritten.find("inventory/v1"), 12, "inventory/v2");
  CHECK(state.dir.ReadFile("inventory.json") == rewritten);
  REQUIRE(state.store.SaveQuarantine(*quarantine));
  CHECK(state.dir.ReadFile("quarantine.json") == kOldQuarantine);
  std::filesystem::remove(state.dir.Path("history.json"));
  tether::HistoryEntry again = history[0];
  REQUIRE(state.store.AppendHistory(again));
  std::string expected = kOldHistory;
  expected.replace(expected.find("\"id\":7"), 6, "\"id\":1");  // ids start over in a new file
  CHECK(state.dir.ReadFile("history.json") == expected);
  REQUIRE(state.store.RecordAudit(state.store.LastAudit().value().value()));
  CHECK(state.dir.ReadFile("last-audit") == "1800000000\n");
  REQUIRE(state.store.SavePin(std::string("3f2a9c0d1e4b5a6978c0d1e2f3a4b5c6d7e8f901")));
  CHECK(state.dir.ReadFile("pinned") == "3f2a9c0d1e4b5a6978c0d1e2f3a4b5c6d7e8f901");
  REQUIRE(state.store.SaveSuspension("until the migration is over"));
  CHECK(state.dir.ReadFile("suspended") == "until the migration is over");
}
