// Planning the filesystem resources: observe a path (reads only), then decide, in pure
// functions, what an apply would do to it. The engine's transaction (to come) applies
// these actions; dry-run is observe + plan.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "agent/desired/desired_state.hpp"
#include "common/error.hpp"
#include "common/filesystem.hpp"

namespace tether {

enum class ActionType {
  kInSync,    // nothing to do
  kCreate,    // nothing is there yet
  kUpdate,    // content, attributes, target, or a file replaced by a symlink (or back)
  kDelete,    // prune: tether made it and the profile no longer has it
  kConflict,  // refused: e.g. a directory where the profile wants a file
};

// "in sync", "create", "update", "delete", "conflict".
[[nodiscard]] const char* ActionTypeName(ActionType type);

struct Action {
  std::string id;
  ActionType type = ActionType::kInSync;
  std::vector<std::string> changes;  // what differs: "content", "mode 0644 -> 0600", ...
  std::string diff;                  // a unified diff of the content; a summary for secrets
  std::string reason;                // why, for kConflict
  // For an in-sync path: what it looked like (size, times, inode, attributes, content
  // hash), so the next plan can trust an unchanged stat instead of reading it again.
  std::string fingerprint;
};

// What is at a path now. `content` is read only for regular files when asked.
struct PathObservation {
  bool exists = false;
  FileStat stat;
  std::optional<std::string> content;
  std::string content_sha256;         // of `content`, when read
  std::optional<std::string> target;  // of a symlink
};

// What the observation found, as undo records and inventories name it: "none", "file",
// "directory", "symlink" or "other".
[[nodiscard]] const char* ObservedTypeName(const PathObservation& observed);

// Reads what is at `path` (never following a symlink). A missing path is an observation
// (exists = false), not an error.
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

// A plan a person can read: one line per action ("create   file:/etc/motd (0644, 95 bytes)",
// "update   file:/etc/a: content, mode 0644 -> 0600"), each update's diff below it.
[[nodiscard]] std::string FormatPlan(const std::vector<Action>& actions);

// Looks `name` up in the text of a passwd (or group) file: the third field of the line
// whose first field is `name`. A number is taken as an id. ENOENT when there is no such
// line.
[[nodiscard]] Result<std::uint32_t> LookupId(std::string_view database, std::string_view name,
                                             const std::string& database_name);

}  // namespace tether
