#include "agent/kinds/packages/package_manager.hpp"

#include <fnmatch.h>

#include <algorithm>

namespace tether {

namespace {

bool IsAlnum(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
}

bool GlobMatch(const std::string& pattern, const std::string& text) {
  return fnmatch(pattern.c_str(), text.c_str(), 0) == 0;
}

// "2.0-1, 1.1-1, 1.0-1", at most `limit` of them.
std::string ListVersions(std::vector<std::string> versions, VersionCompare compare) {
  std::sort(versions.begin(), versions.end(),
            [compare](const std::string& a, const std::string& b) { return compare(a, b) > 0; });
  constexpr std::size_t kLimit = 10;
  std::string list;
  for (std::size_t i = 0; i < versions.size() && i < kLimit; ++i) {
    list += (i == 0 ? "" : ", ") + versions[i];
  }
  if (versions.size() > kLimit) {
    list += " and " + std::to_string(versions.size() - kLimit) + " more";
  }
  return list;
}

}  // namespace

bool IsVersionPattern(std::string_view request) {
  return request.find_first_of("*?[") != std::string_view::npos;
}

bool VersionSatisfies(const std::optional<std::string>& request, std::string_view version,
                      VersionCompare compare) {
  if (!request) return true;
  if (!IsVersionPattern(*request)) return compare(*request, version) == 0;
  const std::string text(version);
  if (GlobMatch(*request, text)) return true;
  const auto colon = text.find(':');
  return colon != std::string::npos && request->find(':') == std::string::npos &&
         GlobMatch(*request, text.substr(colon + 1));
}

Result<std::string> ChooseVersion(std::string_view name, const std::optional<std::string>& request,
                                  const std::vector<std::string>& available,
                                  VersionCompare compare) {
  const std::string quoted = "'" + std::string(name) + "'";
  if (available.empty()) {
    return Fail(std::errc::no_such_file_or_directory,
                "no archive offers package " + quoted + " (unknown package)");
  }
  const std::string* best = nullptr;
  for (const auto& version : available) {
    if (!VersionSatisfies(request, version, compare)) continue;
    if (best == nullptr || compare(version, *best) > 0) best = &version;
  }
  if (best == nullptr) {
    return Fail(std::errc::no_such_file_or_directory,
                "no available version of " + quoted + " matches '" + request.value_or("") +
                    "' (available: " + ListVersions(available, compare) + ")");
  }
  return *best;
}

Status CheckPackageRequest(std::string_view name, const std::optional<std::string>& request) {
  const bool name_ok =
      !name.empty() && IsAlnum(name.front()) && std::all_of(name.begin(), name.end(), [](char c) {
        return IsAlnum(c) || c == '+' || c == '-' || c == '.' || c == '_';
      });
  if (!name_ok) {
    return Fail(std::errc::invalid_argument,
                "invalid package name '" + std::string(name) +
                    "' (letters, digits and '+-._', starting with a letter or digit)");
  }
  if (!request) return {};
  auto glob = [](char c) { return c == '*' || c == '?' || c == '[' || c == ']' || c == '!'; };
  const bool version_ok = !request->empty() &&
                          (IsAlnum(request->front()) || glob(request->front())) &&
                          std::all_of(request->begin(), request->end(), [&](char c) {
                            return IsAlnum(c) || glob(c) || c == '+' || c == '-' || c == '.' ||
                                   c == '_' || c == '~' || c == ':';
                          });
  if (!version_ok) {
    return Fail(std::errc::invalid_argument,
                "invalid version '" + *request + "' for package '" + std::string(name) + "'");
  }
  return {};
}

}  // namespace tether
