// tetherctl: query and drive tetherd; validate a fleet repo offline.
#include <cstdio>
#include <string>

#include <CLI/CLI.hpp>

#include "agent/cli.hpp"
#include "agent/ctl/offline.hpp"
#include "version.hpp"

namespace {

constexpr char kDescription[] =
    "tetherctl - control the tether agent and check fleet repos\n\n"
    "tetherctl talks to tetherd over its control socket (status, plan, sync, history,\n"
    "rollback, suspend, resume, events, metrics: not built yet) and checks a fleet repo\n"
    "checkout offline (validate, render), for the fleet repo's own CI.";

constexpr char kFooter[] =
    "EXAMPLES\n"
    "  tetherctl validate .                      check every hosts/*.toml of this checkout\n"
    "  tetherctl validate . --host web-01        check one host\n"
    "  tetherctl render . --host web-01 --json   what web-01 would get, as JSON\n\n"
    "EXIT STATUS\n"
    "  0 success, 1 failure (e.g. an invalid profile), 2 usage error.\n\n"
    "SEE ALSO\n"
    "  tetherd(8), README.md";

constexpr char kFactsHelp[] =
    "Host facts when rendering another host: hostname and fqdn are the host name, machine_id\n"
    "is 32 zeros, os_id, os_version and arch are this machine's; --fact overrides any.";

void AddOfflineOptions(CLI::App* command, tether::OfflineOptions& options) {
  command->add_option("DIR", options.dir, "The fleet repo checkout")->required();
  command
      ->add_option("--fact", options.facts,
                   "Set a host fact: hostname, fqdn, machine_id, os_id, os_version, arch")
      ->type_name("NAME=VALUE");
  command
      ->add_option("--label", options.labels,
                   "Set a host label (as [labels] in agent.toml); without any, labels used in "
                   "templates are only warned about")
      ->type_name("NAME=VALUE");
  command
      ->add_option("--config", options.config,
                   "Take source.profile, apply.allowed_paths and [labels] from this agent.toml")
      ->type_name("FILE");
}

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

  tether::OfflineOptions validate_options;
  CLI::App* validate = app.add_subcommand(
      "validate",
      "Check a fleet repo checkout offline: every host profile (or the --host ones), with\n"
      "its includes, templates and files. Prints every problem as file:line:col: message.");
  validate->footer(kFactsHelp);
  AddOfflineOptions(validate, validate_options);
  validate->add_option("--host", validate_options.hosts, "Check this host's profile only")
      ->type_name("NAME");

  tether::OfflineOptions render_options;
  CLI::App* render = app.add_subcommand(
      "render", "Print the desired state a host would get from a fleet repo checkout.");
  render->footer(kFactsHelp);
  AddOfflineOptions(render, render_options);
  render->add_option("--host", render_options.hosts, "The host to render")
      ->type_name("NAME")
      ->required()
      ->expected(1);
  render->add_flag("--json", render_options.json, "Print JSON (schema tether.desired/v1)");

  if (auto status = tether::ParseCommandLine(app, argc, argv)) return *status;
  if (validate->parsed()) return tether::RunValidate(validate_options, stdout, stderr);
  if (render->parsed()) return tether::RunRender(render_options, stdout, stderr);
  std::fputs(app.help().c_str(), stdout);
  return 0;
}
