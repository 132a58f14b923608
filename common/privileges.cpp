#include "common/privileges.hpp"

#include <grp.h>
#include <pwd.h>
#include <unistd.h>

#include <cerrno>
#include <system_error>

namespace tether {

Status DropPrivileges(const std::string& user) {
  const passwd* entry = getpwnam(user.c_str());
  if (entry == nullptr) return Fail(std::errc::invalid_argument, "unknown user '" + user + "'");
  if (setgroups(0, nullptr) != 0 || setresgid(entry->pw_gid, entry->pw_gid, entry->pw_gid) != 0 ||
      setresuid(entry->pw_uid, entry->pw_uid, entry->pw_uid) != 0) {
    const std::error_code error(errno, std::generic_category());
    return Fail(Error(error, "cannot become '" + user + "': " + error.message()));
  }
  if (entry->pw_uid != 0 && setuid(0) == 0) {
    return Fail(std::errc::operation_not_permitted, "could become root again after '" + user + "'");
  }
  return {};
}

}  // namespace tether
