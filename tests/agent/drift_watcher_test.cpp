#include "agent/daemon/drift_watcher.hpp"

#include <poll.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <string>

#include <doctest/doctest.h>

#include "tests/support/temp_dir.hpp"

using tether::DriftWatcher;
using tether::testing::TempDir;

namespace {

struct Watched {
  TempDir root{"drift"};
  std::unique_ptr<DriftWatcher> watcher;

  Watched() {
    root.WriteFile("etc/motd", "managed\n");
    root.WriteFile("etc/other", "not managed\n");
    root.WriteFile("srv/www/index.html", "<h1>hi</h1>\n");
    auto created = DriftWatcher::Create(root.path());
    REQUIRE(created);
    watcher = std::move(*created);
    REQUIRE(watcher->Watch({{"/etc/motd", "file:/etc/motd"},
                            {"/srv/www", "directory:/srv/www"},
                            {"/srv/www/index.html", "file:/srv/www/index.html"},
                            {"/opt/missing/x", "file:/opt/missing/x"}}));
  }

  // Waits (bounded) for the fd to become readable, then reads.
  std::set<std::string> Next() {
    pollfd fd = {watcher->fd(), POLLIN, 0};
    REQUIRE(poll(&fd, 1, 2000) == 1);
    auto events = watcher->Read();
    REQUIRE(events);
    return events->ids;
  }

  // Nothing about a managed path waits.
  bool Quiet() {
    auto events = watcher->Read();
    REQUIRE(events);
    return events->ids.empty() && !events->overflow;
  }
};

}  // namespace

TEST_CASE("Edits, chmod, delete and replace of managed paths are seen; others are not") {
  Watched w;
  std::ofstream(w.root.Path("etc/motd"), std::ios::app) << "edit\n";
  CHECK(w.Next() == std::set<std::string>{"file:/etc/motd"});

  chmod(w.root.Path("srv/www/index.html").c_str(), 0600);
  CHECK(w.Next() == std::set<std::string>{"file:/srv/www/index.html"});

  chmod(w.root.Path("srv/www").c_str(), 0700);  // the directory resource itself
  CHECK(w.Next() == std::set<std::string>{"directory:/srv/www"});

  std::filesystem::remove(w.root.Path("etc/motd"));
  CHECK(w.Next() == std::set<std::string>{"file:/etc/motd"});

  w.root.WriteFile("etc/.motd.new", "replacement\n");
  std::filesystem::rename(w.root.Path("etc/.motd.new"), w.root.Path("etc/motd"));
  CHECK(w.Next() == std::set<std::string>{"file:/etc/motd"});

  std::ofstream(w.root.Path("etc/other"), std::ios::app) << "x\n";
  CHECK(w.Quiet());
}

TEST_CASE("A lost event queue is reported as an overflow") {
  Watched w;
  const std::string path = w.root.Path("etc/motd");
  // Alternate two kinds of events, so the kernel cannot merge them, past its queue size.
  for (int i = 0; i < 20000; ++i) {
    chmod(path.c_str(), (i % 2) != 0 ? 0600 : 0644);
    std::ofstream(path, std::ios::app) << "x";
  }
  auto events = w.watcher->Read();
  REQUIRE(events);
  CHECK(events->overflow);
}
