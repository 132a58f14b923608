#include "agent/kinds/packages/debian_version.hpp"

#include <cstdint>

namespace tether {

namespace {

bool IsDigit(char c) { return c >= '0' && c <= '9'; }
bool IsAlpha(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); }

struct Parts {
  std::uint64_t epoch = 0;
  std::string_view upstream;
  std::string_view revision;
};

Parts Split(std::string_view version) {
  Parts parts;
  if (const auto colon = version.find(':'); colon != std::string_view::npos) {
    for (char c : version.substr(0, colon)) {
      if (!IsDigit(c)) break;
      // Saturates rather than wraps: a silly epoch still sorts above a sane one.
      parts.epoch = parts.epoch > (UINT64_MAX - 9) / 10 ? UINT64_MAX : parts.epoch * 10 + (c - '0');
    }
    version.remove_prefix(colon + 1);
  }
  if (const auto hyphen = version.rfind('-'); hyphen != std::string_view::npos) {
    parts.revision = version.substr(hyphen + 1);
    version = version.substr(0, hyphen);
  }
  parts.upstream = version;
  return parts;
}

// dpkg's order of a non-digit character: '~' first, then the end of the string (0), then
// letters, then everything else.
int Order(char c) {
  if (IsDigit(c)) return 0;
  if (IsAlpha(c)) return static_cast<unsigned char>(c);
  if (c == '~') return -1;
  return static_cast<unsigned char>(c) + 256;
}

// dpkg's verrevcmp: alternating runs of non-digits (by Order) and digits (as numbers).
int CompareFragment(std::string_view a, std::string_view b) {
  std::size_t i = 0;
  std::size_t j = 0;
  auto at = [](std::string_view s, std::size_t k) { return k < s.size() ? s[k] : '\0'; };
  while (i < a.size() || j < b.size()) {
    while ((i < a.size() && !IsDigit(a[i])) || (j < b.size() && !IsDigit(b[j]))) {
      const int ac = i < a.size() ? Order(a[i]) : 0;
      const int bc = j < b.size() ? Order(b[j]) : 0;
      if (ac != bc) return ac - bc;
      ++i;
      ++j;
    }
    while (at(a, i) == '0') ++i;
    while (at(b, j) == '0') ++j;
    int first_diff = 0;
    while (IsDigit(at(a, i)) && IsDigit(at(b, j))) {
      if (first_diff == 0) first_diff = a[i] - b[j];
      ++i;
      ++j;
    }
    if (IsDigit(at(a, i))) return 1;  // a's number has more digits
    if (IsDigit(at(b, j))) return -1;
    if (first_diff != 0) return first_diff;
  }
  return 0;
}

}  // namespace

int CompareDebianVersions(std::string_view a, std::string_view b) {
  const Parts pa = Split(a);
  const Parts pb = Split(b);
  if (pa.epoch != pb.epoch) return pa.epoch < pb.epoch ? -1 : 1;
  if (const int upstream = CompareFragment(pa.upstream, pb.upstream); upstream != 0) {
    return upstream;
  }
  return CompareFragment(pa.revision, pb.revision);
}

bool IsValidDebianVersion(std::string_view version) {
  if (version.empty()) return false;
  if (const auto colon = version.find(':'); colon != std::string_view::npos) {
    const std::string_view epoch = version.substr(0, colon);
    if (epoch.empty() || epoch.size() > 9) return false;
    for (char c : epoch) {
      if (!IsDigit(c)) return false;
    }
    version.remove_prefix(colon + 1);
  }
  std::string_view revision;
  bool has_revision = false;
  if (const auto hyphen = version.rfind('-'); hyphen != std::string_view::npos) {
    revision = version.substr(hyphen + 1);
    version = version.substr(0, hyphen);
    has_revision = true;
  }
  if (version.empty() || !IsDigit(version.front())) return false;
  for (char c : version) {
    if (!IsDigit(c) && !IsAlpha(c) && c != '.' && c != '+' && c != '~' && c != '-' && c != ':') {
      return false;
    }
  }
  if (has_revision && revision.empty()) return false;
  for (char c : revision) {
    if (!IsDigit(c) && !IsAlpha(c) && c != '.' && c != '+' && c != '~') return false;
  }
  return true;
}

}  // namespace tether
