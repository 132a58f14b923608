// Unified diffs of text, for showing a planned change to a person.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

namespace tether {

// A unified diff (as `diff -u` prints it, with 3 lines of context) from `before` to
// `after`, headed "--- OLD_LABEL" / "+++ NEW_LABEL"; empty when they are equal. Files
// whose line counts multiply past `max_work` get a one-line summary instead, so a diff
// never costs more than that.
[[nodiscard]] std::string UnifiedDiff(std::string_view before, std::string_view after,
                                      std::string_view old_label, std::string_view new_label,
                                      std::size_t max_work = 4'000'000);

}  // namespace tether
