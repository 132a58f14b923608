// Planning paths, for the kinds that manage them (files, directories and symlinks; unit
// files): observe a path (reads only), then decide, in pure functions, what an apply would
// do to it. Dry-run is observe + plan.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "agent/desired/desired_state.hpp"
#include "agent/engine/action.hpp"
#include "common/error.hpp"
#include "common/filesystem.hpp"
#include "common/sparse_text.hpp"

namespace tether {

// What is at a path now. `content` is read only for regular files when asked.
struct PathObservation {
  bool exists = false;
  FileStat stat;
  std::optional<std::string> content;
  std::optional<ContentId> content_id;  // of `content`, when read
  std::optional<std::string> target;    // of a symlink
  // A regular file larger than what may be read: not read. Its content differs from any
  // a profile may declare (those are smaller), so it is replaced without being read.
  bool oversized = false;
};

// How a path whose resource left the profile is pruned, by its inventory entry (see
// OnRemove): left as it is, removed, or given back what was there before tether. A
// "restore" without a recorded original (on_remove = "restore" set after tether took the
// path over, or a file too large to keep) is left as it is.
enum class PruneWay { kLeave, kRemove, kRestore };
[[nodiscard]] PruneWay HowToPrune(bool created, OnRemove on_remove, const nlohmann::json& original);

// Whether taking a path over records what was there (only a "restore" needs it: the
// inventory stays small otherwise).
[[nodiscard]] inline bool KeepsOriginal(OnRemove on_remove) {
  return on_remove == OnRemove::kRestore;
}

// What tether takes over at a path, as the inventory's `original` records it (what
// RestoreOriginal puts back): type, mode, owner, and a file's content or a symlink's
// target. A file too large to read is recorded as such (content_not_kept, its size):
// removing the resource later leaves it as tether left it.
[[nodiscard]] nlohmann::json OriginalOf(const PathObservation& observed);

// What a prune of `way` changes at a path, as `current` is: for a regular file, the diff
// of its content to nothing (kRemove) or to the original's (kRestore), or a summary of
// sizes when `secret`. Empty when there is nothing to show.
[[nodiscard]] std::string PruneDiff(PruneWay way, const PathObservation& current,
                                    const nlohmann::json& original, bool secret,
                                    const std::string& path);

// Puts back at `path` what tether took over there, as the inventory's `original` recorded
// it: a file's content, mode and owner; a symlink's target; a directory's mode and owner.
// "none" (nothing was there) does nothing. Shared by the kinds that take over paths.
[[nodiscard]] Status RestoreOriginal(Filesystem& fs, const std::string& path,
                                     const nlohmann::json& original);

// What the observation found, as undo records and inventories name it: "none", "file",
// "directory", "symlink" or "other".
[[nodiscard]] const char* ObservedTypeName(const PathObservation& observed);

// Reads what is at `path` (never following a symlink). A missing path is an observation
// (exists = false), not an error; so is a file over `max_size` (oversized, not read).
[[nodiscard]] Result<PathObservation> ObservePath(Filesystem& fs, std::string_view path,
                                                  bool read_content, std::size_t max_size);

// The owner and group a resource asks for, as ids (names resolved by the caller); unset:
// whatever is there (new paths get the writer's).
struct Ownership {
  std::optional<std::uint32_t> uid;
  std::optional<std::uint32_t> gid;
};

// True when a plan of `spec` against `observed` shows the desired content itself (a
// diff): something is there, and it is not that content. The caller then passes the
// content (ContentOf) to PlanFile; otherwise the content is never read.
[[nodiscard]] bool NeedsContent(const FileSpec& spec, const PathObservation& observed);

// `content`: the desired content when NeedsContent and the spec does not hold it.
[[nodiscard]] Action PlanFile(const std::string& id, const FileSpec& spec, const Ownership& owner,
                              const PathObservation& observed, std::string_view content = {});
[[nodiscard]] Action PlanDirectory(const std::string& id, const DirectorySpec& spec,
                                   const Ownership& owner, const PathObservation& observed);
[[nodiscard]] Action PlanSymlink(const std::string& id, const SymlinkSpec& spec,
                                 const PathObservation& observed);

// Looks `name` up in the text of a passwd (or group) file: the third field of the line
// whose first field is `name`. A number is taken as an id. ENOENT when there is no such
// line.
[[nodiscard]] Result<std::uint32_t> LookupId(std::string_view database, std::string_view name,
                                             const std::string& database_name);

}  // namespace tether
