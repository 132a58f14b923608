// tetherctl: query and drive tetherd; validate a fleet repo offline.
#include <cstdio>
#include <string>

#include <CLI/CLI.hpp>

#include "version.hpp"

namespace {

constexpr char kDescription[] =
    "tetherctl - control the tether agent and check fleet repos\n\n"
    "tetherctl talks to tetherd over its control socket (status, plan, sync, history,\n"
    "rollback, suspend, resume, events, metrics) and checks a fleet repo checkout offline\n"
    "(validate, render), for the fleet repo's own CI.";

constexpr char kFooter[] =
    "EXIT STATUS\n"
    "  0 success, 1 failure, 2 usage error.\n\n"
    "STATUS\n"
    "  This version parses its command line only; the commands are not built yet.\n\n"
    "SEE ALSO\n"
    "  tetherd(8), README.md";

}  // namespace

int main(int argc, char** argv) {
  CLI::App app(kDescription, "tetherctl");
  app.footer(kFooter);
  app.set_version_flag("--version", std::string("tetherctl ") + TETHER_VERSION);
  std::string socket = "/run/tether/tether.sock";
  app.add_option("--socket", socket, "tetherd's control socket")
      ->type_name("PATH")
      ->capture_default_str();
  app.require_subcommand(0, 1);

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
  // No command given: show what there is.
  std::fputs(app.help().c_str(), stdout);
  return 0;
}
