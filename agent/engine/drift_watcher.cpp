#include "agent/engine/drift_watcher.hpp"

#include <sys/inotify.h>
#include <unistd.h>

#include <cerrno>

namespace tether {

namespace {

constexpr std::uint32_t kEvents = IN_ATTRIB | IN_CLOSE_WRITE | IN_MODIFY | IN_CREATE | IN_DELETE |
                                  IN_MOVED_FROM | IN_MOVED_TO | IN_DELETE_SELF | IN_MOVE_SELF |
                                  IN_ONLYDIR | IN_DONT_FOLLOW;

std::pair<std::string, std::string> Split(const std::string& path) {
  const auto slash = path.rfind('/');
  return {slash == 0 ? "/" : path.substr(0, slash), path.substr(slash + 1)};
}

}  // namespace

Result<std::unique_ptr<DriftWatcher>> DriftWatcher::Create(std::string root) {
  UniqueFd fd(inotify_init1(IN_NONBLOCK | IN_CLOEXEC));
  if (!fd.valid()) return FailErrno(errno, "inotify_init1");
  if (!root.empty() && root.back() == '/') root.pop_back();
  return std::unique_ptr<DriftWatcher>(new DriftWatcher(std::move(root), std::move(fd)));
}

Status DriftWatcher::Watch(const std::map<std::string, std::string>& paths) {
  for (const auto& [wd, dir] : directories_) inotify_rm_watch(inotify_.get(), wd);
  directories_.clear();
  ids_.clear();
  std::map<std::string, int> watched;
  for (const auto& [path, id] : paths) {
    const auto [dir, name] = Split(path);
    ids_[{dir, name}] = id;
    if (watched.count(dir) > 0) continue;
    const std::string host_dir = root_ + (dir == "/" && !root_.empty() ? "" : dir);
    const int wd =
        inotify_add_watch(inotify_.get(), host_dir.empty() ? "/" : host_dir.c_str(), kEvents);
    if (wd < 0) {
      if (errno == ENOENT || errno == ENOTDIR) continue;  // not there yet: the audit sees it
      return FailErrno(errno, "watch '" + dir + "'");
    }
    watched[dir] = wd;
    directories_[wd] = dir;
  }
  return {};
}

Result<DriftEvents> DriftWatcher::Read() {
  DriftEvents events;
  alignas(inotify_event) char buffer[64 * 1024];
  while (true) {
    const ssize_t n = read(inotify_.get(), buffer, sizeof(buffer));
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN) break;
      return FailErrno(errno, "read inotify events");
    }
    if (n == 0) break;
    for (ssize_t offset = 0; offset < n;) {
      const auto* event = reinterpret_cast<const inotify_event*>(buffer + offset);
      offset += static_cast<ssize_t>(sizeof(inotify_event) + event->len);
      if ((event->mask & IN_Q_OVERFLOW) != 0) {
        events.overflow = true;
        continue;
      }
      auto dir = directories_.find(event->wd);
      if (dir == directories_.end()) continue;
      if ((event->mask & (IN_DELETE_SELF | IN_MOVE_SELF | IN_IGNORED)) != 0) {
        // The directory itself went: everything in it is to be looked at.
        for (const auto& [key, id] : ids_) {
          if (key.first == dir->second) events.ids.insert(id);
        }
        continue;
      }
      if (event->len == 0) {
        // The watched directory itself changed (e.g. chmod): it may be a managed path too.
        auto self = ids_.find(Split(dir->second));
        if (self != ids_.end()) events.ids.insert(self->second);
        continue;
      }
      auto id = ids_.find({dir->second, std::string(event->name)});
      if (id != ids_.end()) events.ids.insert(id->second);
    }
  }
  return events;
}

}  // namespace tether
