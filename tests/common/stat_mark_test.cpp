#include "common/stat_mark.hpp"

#include <set>
#include <string>

#include <doctest/doctest.h>

using tether::FileStat;
using tether::StatMark;

TEST_CASE("A stat mark is 7 base64 characters and moves with every field of the stat") {
  FileStat stat;
  stat.type = tether::FileType::kRegular;
  stat.mode = 0644;
  stat.uid = 1000;
  stat.gid = 1000;
  stat.size = 1024;
  stat.mtime_ns = 1'764'000'000'123'456'789;
  stat.ctime_ns = 1'764'000'000'123'456'789;
  stat.inode = 131'073;
  stat.device = 2049;
  const std::string mark = StatMark(stat);
  CHECK(mark.size() == tether::kStatMarkSize);
  CHECK(
      mark.find_first_not_of("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/") ==
      std::string::npos);
  CHECK(StatMark(stat) == mark);  // a function of the stat alone
  // As every release made it (inventories keep marks): FNV-1a over the bytes of type,
  // device, inode, size, mtime, ctime, mode, uid and gid, SplitMix64's finaliser, then the
  // first 7 characters of the base64 of its 8 bytes, worked out by hand for this stat.
  CHECK(mark == "K19Y0To");
  const tether::StatMarkChars chars = tether::StatMarkOf(stat);
  CHECK(std::string(chars.begin(), chars.end()) == mark);

  // One step in any one field: a write (size, mtime, ctime), a replacement (inode), a
  // chmod or chown, another filesystem, another type.
  std::set<std::string> marks = {mark};
  auto changed = [&](auto edit) {
    FileStat other = stat;
    edit(other);
    return marks.insert(StatMark(other)).second;
  };
  CHECK(changed([](FileStat& s) { s.size += 1; }));
  CHECK(changed([](FileStat& s) { s.mtime_ns += 1; }));
  CHECK(changed([](FileStat& s) { s.ctime_ns += 1; }));
  CHECK(changed([](FileStat& s) { s.inode += 1; }));
  CHECK(changed([](FileStat& s) { s.device += 1; }));
  CHECK(changed([](FileStat& s) { s.mode = 0600; }));
  CHECK(changed([](FileStat& s) { s.uid = 0; }));
  CHECK(changed([](FileStat& s) { s.gid = 0; }));
  CHECK(changed([](FileStat& s) { s.type = tether::FileType::kSymlink; }));
  // Two fields swapped are not the same stat either.
  CHECK(changed([](FileStat& s) { std::swap(s.uid, s.mode); }));

  // Spread: 10,000 successive ctimes give 10,000 marks.
  std::set<std::string> spread;
  for (int i = 0; i < 10'000; ++i) {
    FileStat other = stat;
    other.ctime_ns += i;
    spread.insert(StatMark(other));
  }
  CHECK(spread.size() == 10'000);
}
