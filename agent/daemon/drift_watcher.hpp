// Drift detection between applies: inotify on the directories that hold managed paths,
// so an edit, chmod, chown, delete or replace is seen as it happens. Events only say
// which resources to look at; whether they drifted is decided by planning them. What a
// cycle touches is told from a person's edits after it (ChangeWatch::Rewatch), so
// tether's own writes never cause a loop. A full audit still runs periodically.
//
// Threading: one caller at a time. fd() may be polled by an event loop.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "common/error.hpp"
#include "common/unique_fd.hpp"

namespace tether {

struct DriftEvents {
  std::set<std::string> ids;  // resources whose path was touched
  bool overflow = false;      // events were lost: audit everything
  // Of `ids`, the files whose last write seen was made in place (modified, or closed after
  // writing), and those whose last was a replacement (a name moved or created there, or
  // removed). tether replaces a file it writes (a new file renamed into place), never
  // writes one in place: a file written in place since it was last replaced is someone
  // else's edit, whatever its stat, which may have been taken after that edit.
  std::set<std::string> in_place;
  std::set<std::string> replaced;
};

// Adds `more`, seen after `events`, to them.
inline void Merge(DriftEvents& events, DriftEvents&& more) {
  for (const auto& id : more.replaced) events.in_place.erase(id);
  for (const auto& id : more.in_place) events.replaced.erase(id);
  events.in_place.merge(more.in_place);
  events.replaced.merge(more.replaced);
  events.ids.merge(more.ids);
  events.overflow = events.overflow || more.overflow;
}

class DriftWatcher {
 public:
  // `root` is the --root the managed paths are below ("/" normally).
  [[nodiscard]] static Result<std::unique_ptr<DriftWatcher>> Create(std::string root);

  // Watches these managed paths (path -> resource id), replacing the previous set. A
  // directory that does not exist yet is skipped (the audit covers it).
  [[nodiscard]] Status Watch(const std::map<std::string, std::string>& paths);
  // The same, of paths sorted by path, each once (views, needed only during the call).
  struct PathId {
    std::string_view path;
    std::string_view id;
  };
  [[nodiscard]] Status WatchSorted(const std::vector<PathId>& paths);

  // True when `path` is watched as resource `id`: the table names it so, and its directory
  // has had its watch since the last Watch, as has every directory that Watch was given.
  // What a daemon needs to know that a set of paths it was told of is watched as it is,
  // without reading them all again.
  [[nodiscard]] bool Watches(std::string_view path, std::string_view id) const;

  // Readable (POLLIN) when events wait.
  [[nodiscard]] int fd() const { return inotify_.get(); }

  // Reads every pending event without blocking.
  [[nodiscard]] Result<DriftEvents> Read();

 private:
  // One managed path: the directory it is in (an index, shared by the paths in one
  // directory), and its name and resource id, kept in names_. A table of these, rather than
  // a map of strings, is what a daemon watching many paths holds all the time.
  struct Entry {
    std::uint32_t dir = 0;
    std::uint32_t offset = 0;  // in names_: the name, then the id
    std::uint32_t name_size = 0;
    std::uint32_t id_size = 0;
  };
  // A watched directory.
  struct Directory {
    std::uint32_t dir = 0;  // its index, as in Entry::dir
    // The entry of the directory itself, when it is a managed path too; else entries_.size().
    std::size_t self = 0;
  };

  DriftWatcher(std::string root, UniqueFd inotify)
      : root_(std::move(root)), inotify_(std::move(inotify)) {}

  [[nodiscard]] std::string_view NameOf(const Entry& entry) const {
    return std::string_view(names_).substr(entry.offset, entry.name_size);
  }
  [[nodiscard]] std::string_view IdOf(const Entry& entry) const {
    return std::string_view(names_).substr(entry.offset + entry.name_size, entry.id_size);
  }
  // The index in entries_ of the first entry of directory `dir` whose name is not before
  // `name`: with "", the first of the directory. entries_.size() when there is none.
  [[nodiscard]] std::size_t LowerBound(std::uint32_t dir, std::string_view name) const;
  // The index in entries_ of `name` in directory `dir`; entries_.size() when there is none.
  [[nodiscard]] std::size_t Find(std::uint32_t dir, std::string_view name) const;

  std::string root_;
  UniqueFd inotify_;
  std::map<int, Directory> directories_;  // wd -> the directory
  // The directories' paths (sorted) and indexes, for Watches.
  std::vector<std::pair<std::string, std::uint32_t>> directory_paths_;
  // Every directory Watch was given has had its watch since: none was missing, and none
  // went or moved (which ends or misplaces its watch).
  bool complete_ = false;
  std::vector<Entry> entries_;  // ordered by directory, then name
  std::string names_;
};

}  // namespace tether
