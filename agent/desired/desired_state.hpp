// The desired state: what a host's profile, with its includes and templates, asks for.
// The renderer produces it; the engine converges the host to it.
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "agent/config/agent_config.hpp"
#include "agent/toml/diagnostics.hpp"
#include "common/content_id.hpp"
#include "common/error.hpp"
#include "common/sparse_text.hpp"

namespace tether {

class Tree;

// In apply order: packages, then the filesystem, then units, services, and checks last.
enum class ResourceKind : std::uint8_t {
  kPackage,
  kDirectory,
  kFile,
  kSymlink,
  kUnit,
  kService,
  kCheck
};

// "package", "directory", "file", "symlink", "unit", "service", "check".
[[nodiscard]] const char* ResourceKindName(ResourceKind kind);

// What becomes of a path (a file, directory, symlink or unit file) when its resource
// leaves the profile: `on_remove =`. kDefault: what tether created is removed, what it
// took over is left as tether left it. kKeep: left as it is either way. kRestore: what was
// there before tether is put back (what it created is removed). kDelete: removed either
// way. A directory that still holds what tether does not manage is never removed.
enum class OnRemove : std::uint8_t { kDefault, kKeep, kRestore, kDelete };

// "keep", "restore", "delete" ("" for kDefault); and back (nothing for anything else).
[[nodiscard]] const char* OnRemoveName(OnRemove on_remove);
[[nodiscard]] std::optional<OnRemove> ParseOnRemove(std::string_view name);
inline constexpr char kOnRemoveChoices[] = "\"keep\", \"restore\" or \"delete\"";

struct FileSpec {
  std::string path;
  // Final (templates expanded). Empty when `lazy` is set: the content is then the file
  // `source` of that tree, read again (ContentOf) only to be written or diffed, so that a
  // desired state of many files does not hold them all. (A SparseText, as are owner and
  // group below: one pointer while empty, which counts when a desired state has many files.)
  SparseText content;
  std::size_t content_size = 0;  // of the content, when `lazy` is set
  // The repo file it came from; empty: none. (Here and for owner and group below, an empty
  // text means unset: the renderer refuses an empty value.)
  std::string source;
  std::shared_ptr<Tree> lazy;
  bool templated = false;
  bool secret = false;  // content never shown in logs, diffs or reports
  // Of the content (for a `source` file, the blob id its commit records, so that the file
  // is not read to know it): set by the renderer (or unset: computed from `content`).
  // Placed here, it takes the room the fields around it leave, not room of its own.
  std::optional<ContentId> content_id;
  std::uint32_t mode = 0644;
  SparseText owner;  // a user name or a numeric id; empty: unset (root on create)
  SparseText group;  // likewise
};

// The content of `file`: held, or read again from its tree and checked against its hash
// (an error when the tree no longer has it as rendered).
[[nodiscard]] Result<std::string> ContentOf(const FileSpec& file);
// Its content id, computed when the spec does not carry it.
[[nodiscard]] ContentId ContentIdOf(const FileSpec& file);
// Its size in bytes.
[[nodiscard]] std::size_t ContentSize(const FileSpec& file);

struct DirectorySpec {
  std::string path;
  std::uint32_t mode = 0755;
  SparseText owner;  // as in FileSpec: empty when unset
  SparseText group;
};

struct SymlinkSpec {
  std::string path;
  std::string target;
};

struct PackageSpec {
  std::string name;
  std::optional<std::string> version;  // exact ("1.22.1-1") or a pattern ("1.22.*")
  bool present = true;
};

// Where unit files are written: NAME is /etc/systemd/system/NAME.
inline constexpr char kUnitDirectory[] = "/etc/systemd/system";

struct UnitSpec {
  std::string name;  // "app.service", or a drop-in: "app.service.d/override.conf"
  std::string path;  // /etc/systemd/system/NAME
  std::string content;
  std::optional<std::string> source;
  bool templated = false;
};

struct ServiceSpec {
  std::string name;
  bool running = true;
  bool enabled = true;
  std::vector<std::string> restart_on;  // managed paths whose change restarts (or reloads)
  bool reload = false;                  // reload instead of restart
};

struct CheckSpec {
  std::string name;
  std::vector<std::string> exec;    // argv; or
  std::optional<std::string> http;  // a URL that must answer expect_status
  int expect_exit = 0;
  int expect_status = 200;
  std::chrono::milliseconds timeout = std::chrono::seconds(10);
};

// Where a resource was declared: the profile file, as an index into its desired state's
// `files` (kUnknownFile for none), and the line and column of its table (0 when unknown).
// DeclaredLocation gives it as a Location: this takes twelve bytes in each resource rather
// than a Location's 40 and a copy of the file's name.
struct DeclaredAt {
  static constexpr std::uint32_t kUnknownFile = 0xffffffff;
  std::uint32_t file = kUnknownFile;
  std::uint32_t line = 0;
  std::uint32_t column = 0;
};

struct Resource {
  ResourceKind kind = ResourceKind::kFile;
  // Per-resource override of apply.drift. With `kind` and `declared_at`, it takes the two
  // words before `id`.
  std::optional<DriftMode> drift;
  OnRemove on_remove = OnRemove::kDefault;  // paths and units only
  DeclaredAt declared_at;  // the [[kind]] table that declared it (the last one, after merging)
  std::string id;          // "file:/etc/motd", "package:nginx", ...
  std::variant<FileSpec, DirectorySpec, SymlinkSpec, PackageSpec, UnitSpec, ServiceSpec, CheckSpec>
      spec;
};

struct DesiredState {
  std::string profile;                      // repo path of the host's profile
  std::vector<std::string> files;           // profile files read, in include order
  std::map<std::string, std::string> vars;  // merged [vars], as text
  std::vector<Resource> resources;          // sorted by kind, then id: deterministic
};

// Where `resource`, one of `state`'s, was declared: "hosts/web-01.toml:12:1".
[[nodiscard]] Location DeclaredLocation(const DesiredState& state, const Resource& resource);

}  // namespace tether
