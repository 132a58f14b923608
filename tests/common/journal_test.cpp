// Logging under a real systemd: a service's records reach journald with their fields.
#include <unistd.h>

#include <cstdlib>
#include <string>

#include <doctest/doctest.h>

#include "tests/support/systemd_container.hpp"

using namespace std::chrono_literals;

TEST_CASE("Under systemd, records go to the journal with the component as a field" *
          doctest::skip(geteuid() != 0)) {
  const char* probe = std::getenv("TETHER_LOG_PROBE");
  REQUIRE(probe != nullptr);
  auto container = tether::testing::SystemdContainer::Start();
  REQUIRE_MESSAGE(container, (container ? "" : container.error().message()));

  // A transient service: stderr is the journal stream and JOURNAL_STREAM says so.
  auto run = container->Run({"systemd-run", "--wait", "--quiet", "--unit=tether-log-probe", "-p",
                             "StandardError=journal", probe, "info"},
                            60s);
  REQUIRE(run);
  REQUIRE_MESSAGE(run->ok(), (run->out + run->err));

  auto journal = container->Run(
      {"journalctl", "--no-pager", "-o", "json", "SYSLOG_IDENTIFIER=tether-log-probe"}, 30s);
  REQUIRE(journal);
  REQUIRE(journal->ok());
  const std::string& out = journal->out;
  CHECK(out.find("\"MESSAGE\":\"info record\"") != std::string::npos);
  CHECK(out.find("\"TETHER_COMPONENT\":\"probe\"") != std::string::npos);
  CHECK(out.find("\"TETHER_COMPONENT\":\"other\"") != std::string::npos);
  CHECK(out.find("\"PRIORITY\":\"4\"") != std::string::npos);  // the warning
  CHECK(out.find("\"PRIORITY\":\"3\"") != std::string::npos);  // the error
  CHECK(out.find("debug record") == std::string::npos);        // below the level
  // TETHER_COMPONENT only comes from tether's journal sink: it chose the journal by itself.
}
