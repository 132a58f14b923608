#include "agent/kinds/paths/path_plan.hpp"

#include <algorithm>
#include <cstdio>
#include <cstring>

#include "agent/desired/render_output.hpp"
#include "common/diff.hpp"
#include "common/encoding.hpp"

namespace tether {

namespace {

const char* TypeOf(const PathObservation& observed) {
  switch (observed.stat.type) {
    case FileType::kRegular:
      return "a file";
    case FileType::kDirectory:
      return "a directory";
    case FileType::kSymlink:
      return "a symlink";
    default:
      return "a special file";
  }
}

void CompareAttributes(std::uint32_t mode, const Ownership& owner, const PathObservation& observed,
                       Action& action) {
  if (observed.stat.mode != mode) {
    action.changes.push_back("mode " + FormatMode(observed.stat.mode) + " -> " + FormatMode(mode));
  }
  if (owner.uid && observed.stat.uid != *owner.uid) {
    action.changes.push_back("owner " + std::to_string(observed.stat.uid) + " -> " +
                             std::to_string(*owner.uid));
  }
  if (owner.gid && observed.stat.gid != *owner.gid) {
    action.changes.push_back("group " + std::to_string(observed.stat.gid) + " -> " +
                             std::to_string(*owner.gid));
  }
}

Action Conflict(const std::string& id, std::string reason) {
  Action action;
  action.id = id;
  action.type = ActionType::kConflict;
  action.reason = std::move(reason);
  return action;
}

std::string SecretSummary(std::size_t before, std::size_t after) {
  return "(secret: " + std::to_string(before) + " bytes -> " + std::to_string(after) +
         " bytes, content hidden)\n";
}

}  // namespace

const char* ObservedTypeName(const PathObservation& observed) {
  if (!observed.exists) return "none";
  switch (observed.stat.type) {
    case FileType::kRegular:
      return "file";
    case FileType::kDirectory:
      return "directory";
    case FileType::kSymlink:
      return "symlink";
    default:
      return "other";
  }
}

Result<PathObservation> ObservePath(Filesystem& fs, std::string_view path, bool read_content,
                                    std::size_t max_size) {
  PathObservation observed;
  auto stat = fs.Stat(path);
  if (!stat) {
    if (stat.error().Is(std::errc::no_such_file_or_directory)) return observed;
    return Fail(stat.error());
  }
  observed.exists = true;
  observed.stat = *stat;
  if (stat->type == FileType::kRegular && read_content && stat->size > max_size) {
    observed.oversized = true;
  } else if (stat->type == FileType::kRegular && read_content) {
    auto content = fs.ReadFile(path, max_size);
    if (!content) return Fail(content.error());
    observed.content_id = ContentIdOf(*content);
    observed.content = std::move(*content);
  } else if (stat->type == FileType::kSymlink) {
    auto target = fs.ReadSymlink(path);
    if (!target) return Fail(target.error());
    observed.target = std::move(*target);
  }
  return observed;
}

namespace {

bool SameContent(const FileSpec& spec, const PathObservation& observed) {
  if (observed.oversized) return false;
  const auto& current = observed.content_id;
  return (current ? *current : ContentIdOf(observed.content.value_or(""))) == ContentIdOf(spec);
}

}  // namespace

bool NeedsContent(const FileSpec& spec, const PathObservation& observed) {
  if (!observed.exists || observed.stat.type == FileType::kDirectory) return false;
  return observed.stat.type != FileType::kRegular || !SameContent(spec, observed);
}

Action PlanFile(const std::string& id, const FileSpec& spec, const Ownership& owner,
                const PathObservation& observed, std::string_view content) {
  Action action;
  action.id = id;
  const std::string label = spec.path;
  const std::string_view desired = spec.lazy ? content : std::string_view(spec.content.str());
  if (!observed.exists) {
    action.type = ActionType::kCreate;
    action.changes.push_back(FormatMode(spec.mode) + ", " + std::to_string(ContentSize(spec)) +
                             " bytes");
    return action;  // no diff: all of it is new (and a first apply of many files stays cheap)
  }
  if (observed.stat.type == FileType::kDirectory) {
    return Conflict(
        id, "'" + spec.path + "' is a directory; tether never replaces a directory with a file");
  }
  if (observed.stat.type != FileType::kRegular) {
    action.type = ActionType::kUpdate;
    action.changes.push_back(std::string("replace ") + TypeOf(observed) + " with a file");
    action.diff = spec.secret ? SecretSummary(0, ContentSize(spec))
                              : UnifiedDiff("", desired, "/dev/null", label);
    return action;
  }
  if (!SameContent(spec, observed)) {
    const std::string current = observed.content.value_or("");
    action.changes.push_back("content");
    if (observed.oversized) {
      action.diff = "(" + std::to_string(observed.stat.size) +
                    " bytes, more than tether reads: replaced, not shown)\n";
    } else {
      action.diff = spec.secret ? SecretSummary(current.size(), ContentSize(spec))
                                : UnifiedDiff(current, desired, label, label);
    }
  }
  CompareAttributes(spec.mode, owner, observed, action);
  action.type = action.changes.empty() ? ActionType::kInSync : ActionType::kUpdate;
  return action;
}

Action PlanDirectory(const std::string& id, const DirectorySpec& spec, const Ownership& owner,
                     const PathObservation& observed) {
  Action action;
  action.id = id;
  if (!observed.exists) {
    action.type = ActionType::kCreate;
    action.changes.push_back(FormatMode(spec.mode));
    return action;
  }
  if (observed.stat.type != FileType::kDirectory) {
    return Conflict(id, "'" + spec.path + "' is " + TypeOf(observed) +
                            "; tether never replaces it with a directory");
  }
  CompareAttributes(spec.mode, owner, observed, action);
  action.type = action.changes.empty() ? ActionType::kInSync : ActionType::kUpdate;
  return action;
}

Action PlanSymlink(const std::string& id, const SymlinkSpec& spec,
                   const PathObservation& observed) {
  Action action;
  action.id = id;
  if (!observed.exists) {
    action.type = ActionType::kCreate;
    action.changes.push_back("-> " + spec.target);
    return action;
  }
  if (observed.stat.type == FileType::kDirectory) {
    return Conflict(
        id, "'" + spec.path + "' is a directory; tether never replaces a directory with a symlink");
  }
  if (observed.stat.type != FileType::kSymlink) {
    action.type = ActionType::kUpdate;
    action.changes.push_back(std::string("replace ") + TypeOf(observed) + " with a symlink -> " +
                             spec.target);
    return action;
  }
  if (observed.target != spec.target) {
    action.type = ActionType::kUpdate;
    action.changes.push_back("target " + observed.target.value_or("") + " -> " + spec.target);
  }
  return action;
}

Result<std::uint32_t> LookupId(std::string_view database, std::string_view name,
                               const std::string& database_name) {
  if (!name.empty() && name.find_first_not_of("0123456789") == std::string_view::npos &&
      name.size() <= 9) {
    return static_cast<std::uint32_t>(std::stoul(std::string(name)));
  }
  std::size_t pos = 0;
  while (pos < database.size()) {
    const auto end = std::min(database.find('\n', pos), database.size());
    const std::string_view line = database.substr(pos, end - pos);
    pos = end + 1;
    const auto first = line.find(':');
    if (first == std::string_view::npos || line.substr(0, first) != name) continue;
    const auto second = line.find(':', first + 1);
    const auto third = second == std::string_view::npos ? second : line.find(':', second + 1);
    if (third == std::string_view::npos) break;
    const std::string_view id = line.substr(second + 1, third - second - 1);
    if (id.empty() || id.size() > 9 ||
        id.find_first_not_of("0123456789") != std::string_view::npos) {
      break;
    }
    return static_cast<std::uint32_t>(std::stoul(std::string(id)));
  }
  return Fail(std::errc::no_such_file_or_directory,
              "no '" + std::string(name) + "' in " + database_name);
}

PruneWay HowToPrune(bool created, OnRemove on_remove, const nlohmann::json& original) {
  switch (on_remove) {
    case OnRemove::kKeep:
      return PruneWay::kLeave;
    case OnRemove::kDelete:
      return PruneWay::kRemove;
    case OnRemove::kRestore:
      if (created) return PruneWay::kRemove;
      if (!original.is_object() || !original.contains("type") ||
          original.contains("content_not_kept")) {
        return PruneWay::kLeave;
      }
      return PruneWay::kRestore;
    case OnRemove::kDefault:
      break;
  }
  return created ? PruneWay::kRemove : PruneWay::kLeave;
}

std::string PruneDiff(PruneWay way, const PathObservation& current, const nlohmann::json& original,
                      bool secret, const std::string& path) {
  if (way == PruneWay::kLeave || !current.exists || current.stat.type != FileType::kRegular) {
    return "";
  }
  if (!current.content) {
    return "(" + std::to_string(current.stat.size) + " bytes, too large to show)\n";
  }
  std::string after;
  if (way == PruneWay::kRestore) {
    if (original.value("type", "") != "file") return "";
    auto decoded = Base64Decode(original.value("content_base64", ""));
    if (!decoded) return "";
    after = std::move(*decoded);
  }
  if (secret) return SecretSummary(current.content->size(), after.size());
  return way == PruneWay::kRemove ? UnifiedDiff(*current.content, "", path, "/dev/null")
                                  : UnifiedDiff(*current.content, after, path, path);
}

nlohmann::json OriginalOf(const PathObservation& observed) {
  nlohmann::json original = {{"type", ObservedTypeName(observed)},
                             {"mode", observed.stat.mode},
                             {"uid", observed.stat.uid},
                             {"gid", observed.stat.gid}};
  if (observed.content) original["content_base64"] = Base64Encode(*observed.content);
  if (observed.oversized) original["content_not_kept"] = observed.stat.size;
  if (observed.target) original["target"] = *observed.target;
  return original;
}

Status RestoreOriginal(Filesystem& fs, const std::string& path, const nlohmann::json& original) {
  const std::string type = original.value("type", "none");
  if (type == "file" && original.contains("content_not_kept")) return {};  // left as it is
  if (type == "file") {
    // Kept aside and not read back (Engine hydrates a prune's entry): never an empty file.
    if (!original.contains("content_base64")) {
      return Fail(std::errc::no_such_file_or_directory,
                  "the original of " + path + " was not read");
    }
    auto content = Base64Decode(original.value("content_base64", ""));
    if (!content) return Fail(std::errc::illegal_byte_sequence, "corrupt original of " + path);
    WriteOptions options;
    options.mode = original.value("mode", 0644u);
    options.uid = original.value("uid", 0u);
    options.gid = original.value("gid", 0u);
    return fs.WriteFileAtomic(path, *content, options);
  }
  if (type == "symlink") return fs.CreateSymlink(path, original.value("target", ""));
  if (type == "directory") {
    return fs.SetAttributes(path, original.value("mode", 0755u), original.value("uid", 0u),
                            original.value("gid", 0u));
  }
  return {};
}

}  // namespace tether
