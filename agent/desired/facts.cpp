#include "agent/desired/facts.hpp"

#include <netdb.h>
#include <sys/utsname.h>
#include <unistd.h>

#include <cstring>

#include "common/filesystem.hpp"

namespace tether {

namespace {

constexpr std::pair<std::string_view, std::string HostFacts::*> kFacts[] = {
    {"hostname", &HostFacts::hostname},     {"fqdn", &HostFacts::fqdn},
    {"machine_id", &HostFacts::machine_id}, {"os_id", &HostFacts::os_id},
    {"os_version", &HostFacts::os_version}, {"arch", &HostFacts::arch},
};

std::string Trim(std::string_view text) {
  const auto begin = text.find_first_not_of(" \t\r\n");
  if (begin == std::string_view::npos) return "";
  const auto end = text.find_last_not_of(" \t\r\n");
  return std::string(text.substr(begin, end - begin + 1));
}

// The value of `key` in an os-release file, unquoted.
std::string OsReleaseValue(const std::string& text, std::string_view key) {
  std::size_t pos = 0;
  while (pos < text.size()) {
    const auto end = std::min(text.find('\n', pos), text.size());
    const std::string_view line = std::string_view(text).substr(pos, end - pos);
    pos = end + 1;
    if (line.size() > key.size() && line.substr(0, key.size()) == key && line[key.size()] == '=') {
      std::string value = Trim(line.substr(key.size() + 1));
      if (value.size() >= 2 && (value.front() == '"' || value.front() == '\'') &&
          value.back() == value.front()) {
        value = value.substr(1, value.size() - 2);
      }
      return value;
    }
  }
  return "";
}

void ReadOsRelease(const std::string& root, HostFacts& facts) {
  const std::string prefix = root == "/" ? "" : root;
  auto text = ReadLocalFile(prefix + "/etc/os-release", 64 << 10);
  if (!text) text = ReadLocalFile(prefix + "/usr/lib/os-release", 64 << 10);
  if (!text) return;
  facts.os_id = OsReleaseValue(*text, "ID");
  facts.os_version = OsReleaseValue(*text, "VERSION_ID");
}

std::string Arch() {
  struct utsname name {};
  if (uname(&name) != 0) return "";
  return name.machine;
}

}  // namespace

HostFacts LocalHostFacts(const std::string& root) {
  HostFacts facts;
  char hostname[256] = {};
  if (gethostname(hostname, sizeof(hostname) - 1) == 0) {
    facts.hostname = hostname;
    if (const auto dot = facts.hostname.find('.'); dot != std::string::npos) {
      facts.fqdn = facts.hostname;
      facts.hostname.resize(dot);
    }
  }
  const std::string prefix = root == "/" ? "" : root;
  if (auto id = ReadLocalFile(prefix + "/etc/machine-id", 4096)) facts.machine_id = Trim(*id);
  ReadOsRelease(root, facts);
  facts.arch = Arch();
  return facts;
}

std::string ResolveFqdn(const std::string& hostname) {
  if (hostname.empty()) return hostname;
  std::string fqdn = hostname;
  addrinfo hints{};
  hints.ai_flags = AI_CANONNAME;
  addrinfo* info = nullptr;
  if (getaddrinfo(hostname.c_str(), nullptr, &hints, &info) == 0) {
    if (info != nullptr && info->ai_canonname != nullptr) fqdn = info->ai_canonname;
    freeaddrinfo(info);
  }
  return fqdn;
}

HostFacts FactsForHost(const std::string& hostname) {
  HostFacts facts;
  facts.hostname = hostname;
  facts.fqdn = hostname;
  facts.machine_id = std::string(32, '0');
  ReadOsRelease("/", facts);
  facts.arch = Arch();
  return facts;
}

const std::string* FindFact(const HostFacts& facts, std::string_view name) {
  for (const auto& [fact_name, member] : kFacts) {
    if (fact_name == name) return &(facts.*member);
  }
  return nullptr;
}

Status SetFact(HostFacts& facts, std::string_view assignment) {
  const auto equals = assignment.find('=');
  if (equals == std::string_view::npos) {
    return Fail(std::errc::invalid_argument,
                "expected NAME=VALUE, got '" + std::string(assignment) + "'");
  }
  const std::string_view name = assignment.substr(0, equals);
  for (const auto& [fact_name, member] : kFacts) {
    if (fact_name == name) {
      facts.*member = std::string(assignment.substr(equals + 1));
      return {};
    }
  }
  return Fail(std::errc::invalid_argument,
              "unknown fact '" + std::string(name) +
                  "' (known: hostname, fqdn, machine_id, os_id, os_version, arch)");
}

std::string ExpandProfilePath(std::string_view pattern, const HostFacts& facts) {
  std::string result;
  std::size_t pos = 0;
  while (pos < pattern.size()) {
    const auto open = pattern.find('{', pos);
    const auto close = open == std::string_view::npos ? open : pattern.find('}', open);
    if (close == std::string_view::npos) {
      result += pattern.substr(pos);
      break;
    }
    result += pattern.substr(pos, open - pos);
    const std::string_view name = pattern.substr(open + 1, close - open - 1);
    const std::string* value = name == "hostname" || name == "fqdn" || name == "machine_id"
                                   ? FindFact(facts, name)
                                   : nullptr;
    result += value != nullptr ? *value : std::string(pattern.substr(open, close - open + 1));
    pos = close + 1;
  }
  return result;
}

}  // namespace tether
