// Debian version numbers, "[epoch:]upstream[-revision]" (deb-version(5)), and their order as
// dpkg has it. Pure functions: no I/O.
#pragma once

#include <string_view>

namespace tether {

// Orders two Debian versions as `dpkg --compare-versions` does: < 0 when `a` sorts before
// `b`, 0 when they are equal, > 0 when after. The epoch (absent: 0) compares as a number;
// then the upstream version, then the revision (absent: "0"), each by dpkg's rule: runs of
// digits compare as numbers, other characters by ASCII with every letter before every
// non-letter, and '~' before everything, even the end ("1.0~rc1" < "1.0" < "1.0a" < "1.0+b1").
// Defined on every string; a malformed version (see IsValidDebianVersion) is compared as
// far as it goes, never an error.
[[nodiscard]] int CompareDebianVersions(std::string_view a, std::string_view b);

// True for a version dpkg accepts without complaint: an optional numeric epoch and ':', an
// upstream version that starts with a digit and has only letters, digits and ". + ~ -"
// (':' only after an epoch), and an optional non-empty "-revision" of letters, digits and
// ". + ~". Such a string never starts with '-', so it is safe as a command-line argument.
[[nodiscard]] bool IsValidDebianVersion(std::string_view version);

}  // namespace tether
