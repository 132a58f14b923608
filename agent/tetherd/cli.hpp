// Command-line parsing shared by tetherd and tetherctl.
#pragma once

#include <optional>

#include <CLI/CLI.hpp>

namespace tether {

// Parses the command line. Returns the exit status when the program should stop now:
// 0 after --help or --version (printed), 2 after a usage error (explained on stderr).
// CLI11 reports through exceptions; they stop here.
[[nodiscard]] inline std::optional<int> ParseCommandLine(CLI::App& app, int argc, char** argv) {
  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForVersion& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    app.exit(e);
    return 2;
  }
  return std::nullopt;
}

}  // namespace tether
