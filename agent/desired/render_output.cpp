#include "agent/desired/render_output.hpp"

#include <cstdio>

#include "common/duration.hpp"
#include "common/encoding.hpp"
#include "common/sha256.hpp"

namespace tether {

namespace {

using Json = nlohmann::ordered_json;

std::string Indented(const std::string& content) {
  std::string result;
  std::size_t pos = 0;
  while (pos < content.size()) {
    const auto end = std::min(content.find('\n', pos), content.size());
    result += "    | " + content.substr(pos, end - pos) + "\n";
    pos = end + 1;
  }
  return result;
}

// Empty: unset.
std::string Ownership(const std::string& owner, const std::string& group) {
  if (owner.empty() && group.empty()) return "";
  return ", " + (owner.empty() ? std::string("-") : owner) + ":" +
         (group.empty() ? std::string("-") : group);
}

std::string Quoted(const std::vector<std::string>& words) {
  std::string result;
  for (const auto& word : words) result += (result.empty() ? "" : " ") + Json(word).dump();
  return result;
}

void ContentToJson(Json& out, const std::string& content, bool secret) {
  out["size"] = content.size();
  if (secret) {
    out["secret"] = true;
    return;
  }
  out["sha256"] = Sha256Hex(content);
  if (IsValidUtf8(content)) {
    out["content"] = content;
  } else {
    out["content_base64"] = Base64Encode(content);  // JSON strings are text; this is bytes
  }
}

}  // namespace

std::string FormatMode(std::uint32_t mode) {
  char buffer[8];
  std::snprintf(buffer, sizeof(buffer), "%04o", mode & 07777);
  return buffer;
}

std::string DesiredStateToText(const DesiredState& state, const HostFacts& host) {
  std::string out = "# " + state.profile + " for host " + host.hostname + ": " +
                    std::to_string(state.resources.size()) + " resources\n";
  for (const auto& resource : state.resources) {
    out += "\n" + resource.id + "  (" + DeclaredLocation(state, resource).ToString() + ")\n";
    std::visit(
        [&](const auto& spec) {
          using Spec = std::decay_t<decltype(spec)>;
          if constexpr (std::is_same_v<Spec, FileSpec>) {
            out += "  file, mode " + FormatMode(spec.mode) + Ownership(spec.owner, spec.group) +
                   ", " + std::to_string(ContentSize(spec)) + " bytes" +
                   (spec.source.empty() ? "" : ", from " + spec.source) +
                   (spec.templated ? ", template" : "") + "\n";
            out += spec.secret ? "    (secret: content hidden)\n"
                               : Indented(ContentOf(spec).value_or("(unreadable)\n"));
          } else if constexpr (std::is_same_v<Spec, DirectorySpec>) {
            out += "  directory, mode " + FormatMode(spec.mode) +
                   Ownership(spec.owner, spec.group) + "\n";
          } else if constexpr (std::is_same_v<Spec, SymlinkSpec>) {
            out += "  symlink -> " + spec.target + "\n";
          } else if constexpr (std::is_same_v<Spec, PackageSpec>) {
            out += std::string("  package, ") + (spec.present ? "present" : "absent") +
                   (spec.version ? ", version " + *spec.version : "") + "\n";
          } else if constexpr (std::is_same_v<Spec, UnitSpec>) {
            out += "  unit file " + spec.path + ", " + std::to_string(spec.content.size()) +
                   " bytes" + (spec.source ? ", from " + *spec.source : "") + "\n";
            out += Indented(spec.content);
          } else if constexpr (std::is_same_v<Spec, ServiceSpec>) {
            out += std::string("  service, ") + (spec.running ? "running" : "stopped") + ", " +
                   (spec.enabled ? "enabled" : "disabled");
            if (!spec.restart_on.empty()) {
              out += std::string(", ") + (spec.reload ? "reload" : "restart") + " on " +
                     Quoted(spec.restart_on);
            }
            out += "\n";
          } else if constexpr (std::is_same_v<Spec, CheckSpec>) {
            out += "  check, " +
                   (spec.http ? "http " + *spec.http + " -> " + std::to_string(spec.expect_status)
                              : "exec " + Quoted(spec.exec) + " -> exit " +
                                    std::to_string(spec.expect_exit)) +
                   ", timeout " + FormatDuration(spec.timeout) + "\n";
          }
        },
        resource.spec);
    if (resource.drift) out += std::string("  drift: ") + DriftModeName(*resource.drift) + "\n";
    if (resource.on_remove != OnRemove::kDefault) {
      out += std::string("  on_remove: ") + OnRemoveName(resource.on_remove) + "\n";
    }
  }
  return out;
}

Json DesiredStateToJson(const DesiredState& state, const HostFacts& host) {
  Json resources = Json::array();
  for (const auto& resource : state.resources) {
    Json out;
    out["id"] = resource.id;
    out["kind"] = ResourceKindName(resource.kind);
    out["declared_at"] = DeclaredLocation(state, resource).ToString();
    if (resource.drift) out["drift"] = DriftModeName(*resource.drift);
    if (resource.on_remove != OnRemove::kDefault)
      out["on_remove"] = OnRemoveName(resource.on_remove);
    std::visit(
        [&](const auto& spec) {
          using Spec = std::decay_t<decltype(spec)>;
          if constexpr (std::is_same_v<Spec, FileSpec>) {
            out["path"] = spec.path;
            out["mode"] = FormatMode(spec.mode);
            if (!spec.owner.empty()) out["owner"] = spec.owner;
            if (!spec.group.empty()) out["group"] = spec.group;
            if (!spec.source.empty()) out["source"] = spec.source;
            out["template"] = spec.templated;
            ContentToJson(out, ContentOf(spec).value_or(""), spec.secret);
          } else if constexpr (std::is_same_v<Spec, DirectorySpec>) {
            out["path"] = spec.path;
            out["mode"] = FormatMode(spec.mode);
            if (!spec.owner.empty()) out["owner"] = spec.owner;
            if (!spec.group.empty()) out["group"] = spec.group;
          } else if constexpr (std::is_same_v<Spec, SymlinkSpec>) {
            out["path"] = spec.path;
            out["target"] = spec.target;
          } else if constexpr (std::is_same_v<Spec, PackageSpec>) {
            out["name"] = spec.name;
            out["state"] = spec.present ? "present" : "absent";
            if (spec.version) out["version"] = *spec.version;
          } else if constexpr (std::is_same_v<Spec, UnitSpec>) {
            out["name"] = spec.name;
            out["path"] = spec.path;
            if (spec.source) out["source"] = *spec.source;
            out["template"] = spec.templated;
            ContentToJson(out, spec.content, false);
          } else if constexpr (std::is_same_v<Spec, ServiceSpec>) {
            out["name"] = spec.name;
            out["state"] = spec.running ? "running" : "stopped";
            out["enabled"] = spec.enabled;
            out["restart_on"] = spec.restart_on;
            out["reload"] = spec.reload;
          } else if constexpr (std::is_same_v<Spec, CheckSpec>) {
            out["name"] = spec.name;
            if (spec.http) {
              out["http"] = *spec.http;
              out["expect_status"] = spec.expect_status;
            } else {
              out["exec"] = spec.exec;
              out["expect_exit"] = spec.expect_exit;
            }
            out["timeout"] = FormatDuration(spec.timeout);
          }
        },
        resource.spec);
    resources.push_back(std::move(out));
  }
  Json result;
  result["schema"] = "tether.desired/v1";
  result["profile"] = state.profile;
  result["files"] = state.files;
  result["host"] = {{"hostname", host.hostname},     {"fqdn", host.fqdn},
                    {"machine_id", host.machine_id}, {"os_id", host.os_id},
                    {"os_version", host.os_version}, {"arch", host.arch}};
  result["vars"] = state.vars;
  result["resources"] = std::move(resources);
  return result;
}

}  // namespace tether
