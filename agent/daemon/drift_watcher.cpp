#include "agent/daemon/drift_watcher.hpp"

#include <sys/inotify.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <limits>

namespace tether {

namespace {

constexpr std::uint32_t kEvents = IN_ATTRIB | IN_CLOSE_WRITE | IN_MODIFY | IN_CREATE | IN_DELETE |
                                  IN_MOVED_FROM | IN_MOVED_TO | IN_DELETE_SELF | IN_MOVE_SELF |
                                  IN_ONLYDIR | IN_DONT_FOLLOW;

// (directory, name) of a path: ("/etc", "motd"); ("/", "etc"); ("/", "") for "/".
std::pair<std::string_view, std::string_view> Split(std::string_view path) {
  const auto slash = path.rfind('/');
  return {slash == 0 ? std::string_view("/") : path.substr(0, slash), path.substr(slash + 1)};
}

}  // namespace

Result<std::unique_ptr<DriftWatcher>> DriftWatcher::Create(std::string root) {
  UniqueFd fd(inotify_init1(IN_NONBLOCK | IN_CLOEXEC));
  if (!fd.valid()) return FailErrno(errno, "inotify_init1");
  if (!root.empty() && root.back() == '/') root.pop_back();
  return std::unique_ptr<DriftWatcher>(new DriftWatcher(std::move(root), std::move(fd)));
}

std::size_t DriftWatcher::LowerBound(std::uint32_t dir, std::string_view name) const {
  auto it = std::lower_bound(entries_.begin(), entries_.end(), std::pair(dir, name),
                             [&](const Entry& entry, const auto& key) {
                               return std::pair(entry.dir, NameOf(entry)) < key;
                             });
  return static_cast<std::size_t>(it - entries_.begin());
}

std::size_t DriftWatcher::Find(std::uint32_t dir, std::string_view name) const {
  const std::size_t k = LowerBound(dir, name);
  if (k == entries_.size() || entries_[k].dir != dir || NameOf(entries_[k]) != name) {
    return entries_.size();
  }
  return k;
}

Status DriftWatcher::Watch(const std::map<std::string, std::string>& paths) {
  std::vector<PathId> views;
  views.reserve(paths.size());
  for (const auto& [path, id] : paths) views.push_back({path, id});
  return WatchSorted(views);
}

Status DriftWatcher::WatchSorted(const std::vector<PathId>& paths) {
  entries_.clear();
  names_.clear();
  // The directories, numbered; then the table, its names and ids in one string of the
  // exact size.
  std::map<std::string_view, std::uint32_t> dirs;
  std::size_t size = 0;
  // Sorted by path, the paths of one directory mostly come one after another, not always:
  // "/a/b", "/a/b-c/d", "/a/c" split those of /a. Each run is looked up once (emplace
  // keeps a directory's first number).
  std::string_view last_dir;
  for (const auto& [path, id] : paths) {
    const auto [dir, name] = Split(path);
    if (dirs.empty() || dir != last_dir) {
      dirs.emplace(dir, static_cast<std::uint32_t>(dirs.size()));
      last_dir = dir;
    }
    size += name.size() + id.size();
  }
  if (size > std::numeric_limits<std::uint32_t>::max()) {
    return Fail(std::errc::value_too_large, "watch: too many paths");
  }
  std::vector<Entry>(paths.size()).swap(entries_);
  std::string(size, '\0').swap(names_);
  std::size_t k = 0;
  std::uint32_t offset = 0;
  std::uint32_t last_index = 0;
  last_dir = {};
  for (const auto& [path, id] : paths) {
    const auto [dir, name] = Split(path);
    if (k == 0 || dir != last_dir) {
      last_index = dirs.at(dir);
      last_dir = dir;
    }
    Entry& entry = entries_[k++];
    entry.dir = last_index;
    entry.offset = offset;
    entry.name_size = static_cast<std::uint32_t>(name.size());
    entry.id_size = static_cast<std::uint32_t>(id.size());
    offset += static_cast<std::uint32_t>(name.copy(names_.data() + offset, name.size()));
    offset += static_cast<std::uint32_t>(id.copy(names_.data() + offset, id.size()));
  }
  auto by_dir = [&](const Entry& a, const Entry& b) {
    return std::pair(a.dir, NameOf(a)) < std::pair(b.dir, NameOf(b));
  };
  // In that case the table is not yet in (directory, name) order: sorted here.
  if (!std::is_sorted(entries_.begin(), entries_.end(), by_dir)) {
    std::sort(entries_.begin(), entries_.end(), by_dir);
  }
  // A directory watched already keeps its watch (inotify_add_watch gives its wd again):
  // no event on it is lost, neither in between nor queued under its wd. Only the watches
  // of directories no longer named go.
  std::map<int, Directory> watched;
  Status status;
  complete_ = true;
  directory_paths_.clear();
  directory_paths_.reserve(dirs.size());
  for (const auto& [dir, index] : dirs) {
    directory_paths_.emplace_back(dir, index);  // in order: `dirs` is sorted
    const std::string host_dir = root_ + (dir == "/" && !root_.empty() ? "" : std::string(dir));
    const int wd =
        inotify_add_watch(inotify_.get(), host_dir.empty() ? "/" : host_dir.c_str(), kEvents);
    if (wd < 0) {
      complete_ = false;
      if (errno == ENOENT || errno == ENOTDIR) continue;  // not there yet: the audit sees it
      if (status) status = FailErrno(errno, "watch '" + std::string(dir) + "'");
      continue;
    }
    const auto [parent, name] = Split(dir);
    auto parent_index = dirs.find(parent);
    watched[wd] = {index,
                   parent_index == dirs.end() ? entries_.size() : Find(parent_index->second, name)};
  }
  for (const auto& [wd, dir] : directories_) {
    if (watched.count(wd) == 0) inotify_rm_watch(inotify_.get(), wd);
  }
  directories_ = std::move(watched);
  return status;
}

bool DriftWatcher::Watches(std::string_view path, std::string_view id) const {
  if (!complete_) return false;
  const auto [dir, name] = Split(path);
  const auto it = std::lower_bound(directory_paths_.begin(), directory_paths_.end(), dir,
                                   [](const std::pair<std::string, std::uint32_t>& a,
                                      std::string_view b) { return a.first < b; });
  if (it == directory_paths_.end() || it->first != dir) return false;
  const std::size_t found = Find(it->second, name);
  return found < entries_.size() && IdOf(entries_[found]) == id;
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
      auto watched = directories_.find(event->wd);
      if (watched == directories_.end()) continue;
      const Directory& dir = watched->second;
      if ((event->mask & (IN_DELETE_SELF | IN_MOVE_SELF | IN_IGNORED)) != 0) {
        // The directory itself went: everything in it is to be looked at, and it is
        // watched again only by the next Watch.
        complete_ = false;
        for (std::size_t k = LowerBound(dir.dir, "");
             k < entries_.size() && entries_[k].dir == dir.dir; ++k) {
          events.ids.emplace(IdOf(entries_[k]));
        }
        continue;
      }
      if (event->len == 0) {
        // The watched directory itself changed (e.g. chmod): it may be a managed path too.
        if (dir.self < entries_.size()) events.ids.emplace(IdOf(entries_[dir.self]));
        continue;
      }
      const std::size_t found = Find(dir.dir, event->name);
      if (found >= entries_.size()) continue;
      const std::string& id = *events.ids.emplace(IdOf(entries_[found])).first;
      if ((event->mask & (IN_MODIFY | IN_CLOSE_WRITE)) != 0) {
        events.replaced.erase(id);
        events.in_place.insert(id);
      } else if ((event->mask & (IN_CREATE | IN_DELETE | IN_MOVED_FROM | IN_MOVED_TO)) != 0) {
        events.in_place.erase(id);
        events.replaced.insert(id);
      }
    }
  }
  return events;
}

}  // namespace tether
