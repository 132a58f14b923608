// Giving up root for good, for the children that parse what servers send (the git worker,
// the HTTP child).
#pragma once

#include <string>

#include "common/error.hpp"

namespace tether {

// The user those children run as when tetherd runs as root and the user exists (made by
// systemd/tether.sysusers).
inline constexpr char kUnprivilegedUser[] = "tether-git";

// Becomes `user` for good: no supplementary groups, then its group, then the user (real,
// effective and saved ids); then checks that root cannot be regained. Fails with
// std::errc::invalid_argument when there is no such user, with the errno of the failed
// call otherwise, and with std::errc::operation_not_permitted if root could be regained.
[[nodiscard]] Status DropPrivileges(const std::string& user);

}  // namespace tether
