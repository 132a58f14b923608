#include "common/diff.hpp"

#include <algorithm>
#include <vector>

namespace tether {

namespace {

std::vector<std::string_view> Lines(std::string_view text) {
  std::vector<std::string_view> lines;
  std::size_t pos = 0;
  while (pos < text.size()) {
    const auto end = text.find('\n', pos);
    if (end == std::string_view::npos) {
      lines.push_back(text.substr(pos));
      break;
    }
    lines.push_back(text.substr(pos, end - pos + 1));
    pos = end + 1;
  }
  return lines;
}

struct Edit {
  char op;  // ' ', '-', '+'
  std::string_view line;
  std::size_t old_line;  // 1-based position in before (next line for '+')
  std::size_t new_line;  // 1-based position in after (next line for '-')
};

void AppendLine(std::string& out, char op, std::string_view line) {
  out += op;
  out += line;
  if (line.empty() || line.back() != '\n') out += "\n\\ No newline at end of file\n";
}

}  // namespace

std::string UnifiedDiff(std::string_view before, std::string_view after, std::string_view old_label,
                        std::string_view new_label, std::size_t max_work) {
  if (before == after) return "";
  const auto a = Lines(before);
  const auto b = Lines(after);
  // Common prefix and suffix need no table.
  std::size_t prefix = 0;
  while (prefix < a.size() && prefix < b.size() && a[prefix] == b[prefix]) ++prefix;
  std::size_t suffix = 0;
  while (suffix < a.size() - prefix && suffix < b.size() - prefix &&
         a[a.size() - 1 - suffix] == b[b.size() - 1 - suffix]) {
    ++suffix;
  }
  const std::size_t n = a.size() - prefix - suffix;
  const std::size_t m = b.size() - prefix - suffix;
  const std::string header =
      "--- " + std::string(old_label) + "\n+++ " + std::string(new_label) + "\n";
  if ((n + 1) * (m + 1) > max_work) {
    return header + "@@ (" + std::to_string(a.size()) + " lines -> " + std::to_string(b.size()) +
           " lines: too large to diff) @@\n";
  }
  // Longest common subsequence of the middle parts.
  std::vector<std::vector<std::uint32_t>> lcs(n + 1, std::vector<std::uint32_t>(m + 1, 0));
  for (std::size_t i = n; i-- > 0;) {
    for (std::size_t j = m; j-- > 0;) {
      lcs[i][j] = a[prefix + i] == b[prefix + j] ? lcs[i + 1][j + 1] + 1
                                                 : std::max(lcs[i + 1][j], lcs[i][j + 1]);
    }
  }
  std::vector<Edit> edits;
  for (std::size_t k = 0; k < prefix; ++k) edits.push_back({' ', a[k], k + 1, k + 1});
  std::size_t i = 0;
  std::size_t j = 0;
  while (i < n || j < m) {
    if (i < n && j < m && a[prefix + i] == b[prefix + j]) {
      edits.push_back({' ', a[prefix + i], prefix + i + 1, prefix + j + 1});
      ++i;
      ++j;
    } else if (i < n && (j == m || lcs[i + 1][j] >= lcs[i][j + 1])) {
      edits.push_back({'-', a[prefix + i], prefix + i + 1, prefix + j + 1});  // deletions first
      ++i;
    } else {
      edits.push_back({'+', b[prefix + j], prefix + i + 1, prefix + j + 1});
      ++j;
    }
  }
  for (std::size_t k = 0; k < suffix; ++k) {
    edits.push_back(
        {' ', a[a.size() - suffix + k], a.size() - suffix + k + 1, b.size() - suffix + k + 1});
  }

  // Hunks: changes with up to 3 lines of context, merged when their contexts touch.
  constexpr std::size_t kContext = 3;
  std::string out = header;
  std::size_t k = 0;
  while (k < edits.size()) {
    while (k < edits.size() && edits[k].op == ' ') ++k;
    if (k == edits.size()) break;
    const std::size_t start = k > kContext ? k - kContext : 0;
    std::size_t last_change_end = k + 1;
    std::size_t scan = k + 1;
    while (scan < edits.size()) {
      if (edits[scan].op != ' ') {
        last_change_end = ++scan;
        continue;
      }
      std::size_t run_end = scan;
      while (run_end < edits.size() && edits[run_end].op == ' ') ++run_end;
      if (run_end == edits.size() || run_end - scan > 2 * kContext) break;
      scan = run_end;
    }
    const std::size_t end = std::min(last_change_end + kContext, edits.size());
    std::size_t old_count = 0;
    std::size_t new_count = 0;
    for (std::size_t e = start; e < end; ++e) {
      if (edits[e].op != '+') ++old_count;
      if (edits[e].op != '-') ++new_count;
    }
    const std::size_t old_start =
        old_count == 0 ? edits[start].old_line - 1 : edits[start].old_line;
    const std::size_t new_start =
        new_count == 0 ? edits[start].new_line - 1 : edits[start].new_line;
    out += "@@ -" + std::to_string(old_start) +
           (old_count == 1 ? "" : "," + std::to_string(old_count)) + " +" +
           std::to_string(new_start) + (new_count == 1 ? "" : "," + std::to_string(new_count)) +
           " @@\n";
    for (std::size_t e = start; e < end; ++e) AppendLine(out, edits[e].op, edits[e].line);
    k = end;
  }
  return out;
}

}  // namespace tether
