// Validates status reports against docs/report-schema.json (JSON Schema draft 2020-12)
// with python3-jsonschema, as the report endpoint's side would. The schema's path comes
// from TETHER_REPORT_SCHEMA (set by meson for the tests that use it).
#pragma once

#include <cstdlib>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/process.hpp"
#include "tests/support/temp_dir.hpp"

namespace tether::testing {

// "" when every report is valid; otherwise what is wrong, one line per problem ("report
// 2: $.state: 'x' is not one of [...]"), or why it could not be checked.
inline std::string ReportSchemaProblems(const std::vector<nlohmann::json>& reports) {
  const char* schema = std::getenv("TETHER_REPORT_SCHEMA");
  if (schema == nullptr) return "TETHER_REPORT_SCHEMA is not set (run through meson test)";
  TempDir dir("report-schema");
  dir.WriteFile("reports.json", nlohmann::json(reports).dump());
  static constexpr char kValidate[] = R"(
import json, sys
import jsonschema
schema = json.load(open(sys.argv[1]))
jsonschema.Draft202012Validator.check_schema(schema)
validator = jsonschema.Draft202012Validator(schema, format_checker=jsonschema.FormatChecker())
bad = 0
for i, report in enumerate(json.load(open(sys.argv[2]))):
    for error in validator.iter_errors(report):
        print("report %d: %s: %s" % (i, error.json_path, error.message))
        bad += 1
sys.exit(1 if bad else 0)
)";
  RunOptions run;
  run.argv = {"python3", "-c", kValidate, schema, dir.Path("reports.json")};
  auto result = Run(run);
  if (!result) return result.error().message();
  return result->ok() ? "" : result->out + result->err;
}

}  // namespace tether::testing
