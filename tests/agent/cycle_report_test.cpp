// A cycle's report: the text tetherd --once prints, the colours tetherctl gives it, the
// summary and the JSON are all made from the same data.
#include "agent/cycle/cycle_report.hpp"

#include <string>

#include <doctest/doctest.h>

namespace {

tether::CycleReport Applied() {
  tether::CycleReport report;
  report.outcome = tether::Outcome::kApplied;
  report.commit = "74e69f760a145a0510e01cb2b516b368a85dcbcc";
  report.signer = "ops@example.com (ssh-ed25519 SHA256:abc)";
  report.course = {
      {tether::StepKind::kSource, report.commit, "git://127.0.0.1:9418/fleet.git", true},
      {tether::StepKind::kVerified, report.commit, report.signer, false},
  };
  report.actions = {
      {"file:/etc/motd", "update", "content", "--- a\n+++ b\n@@ -1 +1 @@\n-old\n+new\n", "", true},
      {"file:/etc/new", "create", "0644, 4 bytes", "", "", true},
      {"directory:/srv", "in sync", "", "", "", true},
  };
  report.drifted = {{"file:/etc/hosts", "drifted", "mode 0644 -> 0600", "", "", true}};
  report.skipped = {{"package:nginx", "a --root sandbox manages files only"}};
  report.skipped_count = 1;
  report.applied = true;
  report.changes = 2;
  report.kinds = {{"file", 3}, {"directory", 1}, {"package", 1}};
  report.in_sync = 1;
  report.elapsed_ms = 43;
  report.problems = {"hosts/h.toml:3:1: warning: something"};
  return report;
}

}  // namespace

TEST_CASE("The course is the text tetherd --once prints") {
  const auto report = Applied();
  CHECK(tether::FormatCourse(report) ==
        "source   git://127.0.0.1:9418/fleet.git at 74e69f760a14 (fetched)\n"
        "verified signed by ops@example.com (ssh-ed25519 SHA256:abc)\n"
        "update   file:/etc/motd: content\n"
        "--- a\n+++ b\n@@ -1 +1 @@\n-old\n+new\n"
        "create   file:/etc/new (0644, 4 bytes)\n"
        "in sync  directory:/srv\n"
        "drifted  file:/etc/hosts: mode 0644 -> 0600 (drift = \"report\": left as it is)\n"
        "skipped  package:nginx: a --root sandbox manages files only\n"
        "applied 74e69f760a14: 2 changes in 43 ms\n");
  // The two parts tetherd --once prints before and after an apply make the whole.
  CHECK(tether::FormatCourse(report, {}, tether::CoursePart::kPlan) +
            tether::FormatCourse(report, {}, tether::CoursePart::kResult) ==
        tether::FormatCourse(report));
  CHECK(tether::FormatProblems(report) == "hosts/h.toml:3:1: warning: something\n");
  CHECK(tether::ExitCode(report) == 0);
}

TEST_CASE("A rollback, a dry run and an in-sync cycle end as they always did") {
  auto report = Applied();
  report.outcome = tether::Outcome::kRolledBack;
  report.apply_failed = true;
  report.undone = {"file:/etc/motd", "file:/etc/new"};
  report.quarantined = true;
  const std::string rolled = tether::FormatCourse(report, {}, tether::CoursePart::kResult);
  CHECK(rolled ==
        "undone   file:/etc/motd, file:/etc/new\n"
        "rolled back commit 74e69f760a14 after 43 ms\n"
        "quarantined commit 74e69f760a14: not applied again until a newer commit\n");
  CHECK(tether::ExitCode(report) == 1);

  report = Applied();
  report.outcome = tether::Outcome::kDryRun;
  report.applied = false;
  report.changes = 1;
  CHECK(tether::FormatCourse(report, {}, tether::CoursePart::kResult) ==
        "dry run: 1 change planned, nothing changed\n");
  CHECK(tether::ExitCode(report) == 0);

  report = Applied();
  report.outcome = tether::Outcome::kInSync;
  report.changes = 0;
  CHECK(tether::FormatCourse(report, {}, tether::CoursePart::kResult) ==
        "in sync with 74e69f760a14: 1 resource (43 ms)\n");

  // A cycle stopped before its apply (a refused commit) says so in its problems only.
  const auto refused = tether::FailedReport(
      tether::Error(std::errc::permission_denied, "refusing commit 74e69f760a14: not signed"));
  CHECK(tether::FormatCourse(refused).empty());
  CHECK(tether::FormatProblems(refused) == "tetherd: refusing commit 74e69f760a14: not signed\n");
}

TEST_CASE("tetherctl's colours come from the report, not from the text") {
  const auto report = Applied();
  const std::string painted =
      tether::FormatCourse(report, [](std::string_view text, tether::Tone tone) {
        const char* mark = tone == tether::Tone::kGood     ? "G"
                           : tone == tether::Tone::kChange ? "Y"
                           : tone == tether::Tone::kBad    ? "R"
                                                           : "D";
        return std::string("<") + mark + ">" + std::string(text) + "</>";
      });
  CHECK(painted.find("<Y>update   file:/etc/motd: content</>\n") != std::string::npos);
  CHECK(painted.find("<R>-old</>\n<G>+new</>") != std::string::npos);
  CHECK(painted.find("<D>@@ -1 +1 @@</>") != std::string::npos);
  CHECK(painted.find("--- a\n+++ b\n") != std::string::npos);  // file headers stay plain
  CHECK(painted.find("<G>create   file:/etc/new (0644, 4 bytes)</>") != std::string::npos);
  CHECK(painted.find("in sync  directory:/srv\n") != std::string::npos);
  CHECK(painted.find("<Y>drifted  file:/etc/hosts") != std::string::npos);
}

TEST_CASE("The summary lists what was not in sync; the JSON goes there and back") {
  const auto report = Applied();
  const auto summary = tether::Summarize(report);
  CHECK(summary.outcome == tether::Outcome::kApplied);
  CHECK(summary.changes == 2);
  CHECK(summary.skipped == 1);
  REQUIRE(summary.resources.size() == 3);
  CHECK(summary.resources[0].id == "file:/etc/motd");
  CHECK(summary.resources[0].action == "update");
  CHECK(summary.resources[2].action == "drifted");

  const auto again = tether::CycleReportFromJson(tether::CycleReportToJson(report));
  CHECK(tether::FormatCourse(again) == tether::FormatCourse(report));
  CHECK(tether::FormatProblems(again) == tether::FormatProblems(report));
  CHECK(tether::CycleReportToJson(again) == tether::CycleReportToJson(report));
}

TEST_CASE("A report read from JSON of the wrong shape takes defaults, never throws") {
  for (const char* text :
       {"null", "[]", "5", R"({"outcome": 5, "course": "x", "actions": [1, null, {"id": 3}]})",
        R"({"kinds": {"file": -1}, "changes": "many", "problems": [1, "p"], "undone": {}})",
        R"({"course": [{"step": "nonsense"}, {"step": "audit"}], "elapsed_ms": 1e300})"}) {
    CAPTURE(text);
    const auto report = tether::CycleReportFromJson(nlohmann::json::parse(text));
    CHECK(report.outcome == tether::Outcome::kFailed);
    (void)tether::FormatCourse(report);
  }
  const auto odd = tether::CycleReportFromJson(nlohmann::json::parse(
      R"({"course": [{"step": "nonsense"}, {"step": "audit"}], "problems": [1, "p"]})"));
  REQUIRE(odd.course.size() == 1);
  CHECK(odd.course[0].kind == tether::StepKind::kAudit);
  CHECK(odd.problems == std::vector<std::string>{"p"});
}

TEST_CASE("A report too large for the history or the daemon keeps every change, not every diff") {
  auto report = Applied();
  report.actions[0].diff = std::string(100000, 'x');
  tether::TrimReport(report, 4096);
  CHECK(report.actions[0].diff == "(a diff of 100000 bytes, not kept)\n");
  CHECK(report.actions.size() == 3);
  auto small = Applied();
  tether::TrimReport(small, 1 << 20);
  CHECK(small.actions[0].diff == Applied().actions[0].diff);

  // Thousands of changes: past the diffs, the changes at the end go, counted and said.
  auto many = Applied();
  many.actions.clear();
  for (int i = 0; i < 5000; ++i) {
    many.actions.push_back(
        {"file:/srv/f" + std::to_string(i), "create", "0644, 1 KiB", "", "", true});
  }
  tether::TrimReport(many, 64 << 10);
  CHECK(many.actions.size() < 1000);
  CHECK(many.omitted == 5000 - many.actions.size());
  CHECK(tether::CycleReportToJson(many).dump().size() < (80 << 10));
  CHECK(tether::FormatCourse(many).find("...      " + std::to_string(many.omitted) +
                                        " more changes not kept in this report\n") !=
        std::string::npos);
}

TEST_CASE("A cycle stopped before its plan could be acted on counts no changes") {
  auto stopped = Applied();
  stopped.outcome = tether::Outcome::kFailed;
  stopped.applied = false;
  stopped.error = "service:app.service: systemd cannot be reached: ...";
  CHECK(tether::Summarize(stopped).changes == 0);
  CHECK(tether::Summarize(Applied()).changes == 2);
}
