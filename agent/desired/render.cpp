#include "agent/desired/render.hpp"

#include <algorithm>
#include <deque>
#include <set>

#include "agent/desired/template.hpp"
#include "agent/toml/toml_reader.hpp"
#include "common/filesystem.hpp"

namespace tether {

namespace {

constexpr ResourceKind kKinds[] = {
    ResourceKind::kPackage, ResourceKind::kDirectory, ResourceKind::kFile, ResourceKind::kSymlink,
    ResourceKind::kUnit,    ResourceKind::kService,   ResourceKind::kCheck};

bool IsIdentifierKind(ResourceKind kind) {
  return kind == ResourceKind::kFile || kind == ResourceKind::kDirectory ||
         kind == ResourceKind::kSymlink;
}

// A [[kind]] table as declared, before its keys are checked.
struct Declaration {
  ResourceKind kind;
  std::string id;
  const toml::table* table;
  std::string file;
  Location where;
  std::uint32_t file_index;  // of `file` in DesiredState::files
};

bool OnlyChars(std::string_view text, std::string_view allowed) {
  return text.find_first_not_of(allowed) == std::string_view::npos;
}

constexpr std::string_view kLower = "abcdefghijklmnopqrstuvwxyz";
constexpr std::string_view kDigits = "0123456789";

bool IsUserName(std::string_view name) {
  if (name.empty() || name.size() > 32) return false;
  if (OnlyChars(name, kDigits)) return true;  // a numeric id
  std::string_view body = name;
  if (body.back() == '$') body.remove_suffix(1);
  if (body.empty()) return false;
  if (body.front() != '_' && kLower.find(body.front()) == std::string_view::npos) return false;
  return OnlyChars(body, "abcdefghijklmnopqrstuvwxyz0123456789_-");
}

bool IsUnitName(std::string_view name) {
  static constexpr std::string_view kTypes[] = {".service", ".socket",    ".timer",  ".path",
                                                ".mount",   ".automount", ".target", ".slice",
                                                ".swap",    ".device",    ".scope"};
  if (name.empty() || name.size() > 255) return false;
  if (!OnlyChars(name, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789:_.\\@-")) {
    return false;
  }
  const auto dot = name.rfind('.');
  if (dot == 0 || dot == std::string_view::npos) return false;
  const std::string_view type = name.substr(dot);
  return std::find(std::begin(kTypes), std::end(kTypes), type) != std::end(kTypes);
}

// "app.service" or a drop-in "app.service.d/override.conf".
bool IsUnitFileName(std::string_view name) {
  const auto slash = name.find('/');
  if (slash == std::string_view::npos) return IsUnitName(name);
  const std::string_view directory = name.substr(0, slash);
  const std::string_view file = name.substr(slash + 1);
  return directory.size() > 2 && directory.substr(directory.size() - 2) == ".d" &&
         IsUnitName(directory.substr(0, directory.size() - 2)) && file.size() > 5 &&
         file.substr(file.size() - 5) == ".conf" && file.find('/') == std::string_view::npos &&
         file.front() != '.' &&
         OnlyChars(file, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789:_.@-");
}

bool IsPackageName(std::string_view name) {
  return name.size() >= 2 && name.size() <= 128 &&
         (kLower.find(name.front()) != std::string_view::npos ||
          kDigits.find(name.front()) != std::string_view::npos) &&
         OnlyChars(name, "abcdefghijklmnopqrstuvwxyz0123456789+.-");
}

bool IsPathInside(std::string_view path, std::string_view base) {
  if (base == "/") return true;
  return path == base || (path.size() > base.size() && path.substr(0, base.size()) == base &&
                          path[base.size()] == '/');
}

std::string JoinPaths(const std::vector<std::string>& paths) {
  std::string result;
  for (const auto& path : paths) result += (result.empty() ? "" : ", ") + path;
  return result;
}

class Renderer {
 public:
  Renderer(Tree& tree, const RenderOptions& options, Diagnostics& diagnostics)
      : tree_(tree), options_(options), diagnostics_(diagnostics) {}

  DesiredState Render() {
    state_.profile = options_.profile;
    std::vector<std::string> chain;
    Load(options_.profile, Location{options_.profile, 0, 0}, chain);
    if (loaded_any_ && !over_limit_) BuildResources();
    return std::move(state_);
  }

 private:
  // Reads one profile file and, first, everything it includes.
  void Load(const std::string& path, const Location& included_from,
            std::vector<std::string>& chain) {
    if (over_limit_) return;  // said once
    if (++files_read_ > options_.limits.max_profile_files) {
      diagnostics_.Error(included_from,
                         "more than " + std::to_string(options_.limits.max_profile_files) +
                             " profile files read (includes repeat: " + ChainText(chain, path) +
                             ")");
      over_limit_ = true;
      return;
    }
    if (std::find(chain.begin(), chain.end(), path) != chain.end()) {
      diagnostics_.Error(included_from, "include cycle: " + ChainText(chain, path));
      return;
    }
    if (static_cast<int>(chain.size()) >= options_.limits.max_include_depth) {
      diagnostics_.Error(included_from, "includes nested deeper than " +
                                            std::to_string(options_.limits.max_include_depth) +
                                            ": " + ChainText(chain, path));
      over_limit_ = true;
      return;
    }
    auto text = ReadTreeFile(tree_, path, options_.limits.max_profile_size);
    if (!text) {
      diagnostics_.Error(included_from, "cannot read profile '" + path + "': " +
                                            (text.error().Is(std::errc::no_such_file_or_directory)
                                                 ? std::string("no such file in the repo")
                                                 : text.error().message()));
      return;
    }
    profile_bytes_ += text->size();
    if (profile_bytes_ > options_.limits.max_profile_bytes) {
      diagnostics_.Error(included_from, "the profile files read pass " +
                                            std::to_string(options_.limits.max_profile_bytes) +
                                            " bytes together (the limit), at '" + path + "'");
      over_limit_ = true;
      return;
    }
    auto document = ParseToml(*text, path, diagnostics_);
    if (!document) return;
    loaded_any_ = true;
    documents_.push_back(std::move(*document));
    const toml::table& top = documents_.back();
    TomlTable reader(top, path, "", diagnostics_);

    chain.push_back(path);
    if (auto includes = reader.Strings("include")) {
      const toml::array& array = *top.get("include")->as_array();
      for (std::size_t i = 0; i < includes->size(); ++i) {
        const Location where = NodeLocation(*array.get(i), path);
        auto checked = CheckRepoPath((*includes)[i]);
        if (!checked) {
          diagnostics_.Error(where, "include: " + checked.error().message());
          continue;
        }
        Load(*checked, where, chain);
      }
    }
    chain.pop_back();
    state_.files.push_back(path);  // after its includes: the order of merging

    if (const toml::table* vars = reader.Table("vars")) ReadVars(*vars, path);
    std::map<std::string, Location> ids_in_file;
    for (ResourceKind kind : kKinds) {
      const toml::array* array = reader.Array(ResourceKindName(kind));
      if (array == nullptr) continue;
      for (const toml::node& element : *array) {
        const toml::table* table = element.as_table();
        if (table == nullptr) {
          diagnostics_.Error(NodeLocation(element, path),
                             std::string(ResourceKindName(kind)) + ": expected [[" +
                                 ResourceKindName(kind) + "]] tables, got " +
                                 TomlTypeName(element.type()));
          continue;
        }
        Declare(kind, *table, path, ids_in_file);
      }
    }
    reader.ReportUnknownKeys();
  }

  static std::string ChainText(const std::vector<std::string>& chain, const std::string& last) {
    std::string text;
    for (const auto& file : chain) text += file + " -> ";
    return text + last;
  }

  void ReadVars(const toml::table& vars, const std::string& file) {
    for (const auto& [key, node] : vars) {
      const std::string name(key.str());
      const Location where = NodeLocation(node, file);
      if (name.empty() ||
          !OnlyChars(name, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_")) {
        diagnostics_.Error(where, "vars." + name + ": variable names use letters, digits and '_'");
        continue;
      }
      if (const auto* string = node.as_string()) {
        state_.vars[name] = string->get();
      } else if (const auto* integer = node.as_integer()) {
        state_.vars[name] = std::to_string(integer->get());
      } else if (const auto* boolean = node.as_boolean()) {
        state_.vars[name] = boolean->get() ? "true" : "false";
      } else {
        diagnostics_.Error(where, "vars." + name +
                                      ": expected a string, an integer or a boolean, got " +
                                      TomlTypeName(node.type()));
      }
    }
  }

  void Declare(ResourceKind kind, const toml::table& table, const std::string& file,
               std::map<std::string, Location>& ids_in_file) {
    const Location where = NodeLocation(table, file);
    // Declared while its file is read, which is the last one in the state's files so far.
    const auto file_index = static_cast<std::uint32_t>(state_.files.size() - 1);
    const char* key = IsIdentifierKind(kind) ? "path" : "name";
    const toml::node* identifier = table.get(key);
    if (identifier == nullptr || !identifier->is_string() ||
        identifier->as_string()->get().empty()) {
      diagnostics_.Error(where, std::string(ResourceKindName(kind)) + ": '" + key +
                                    "' is required and must be a non-empty string");
      return;
    }
    const std::string id =
        std::string(ResourceKindName(kind)) + ":" + identifier->as_string()->get();
    auto [it, inserted] = ids_in_file.emplace(id, where);
    if (!inserted) {
      diagnostics_.Error(where, "duplicate resource '" + id + "' (first declared at " +
                                    it->second.ToString() + ")");
      return;
    }
    auto existing = declared_.find(id);
    if (existing == declared_.end() && declared_.size() >= options_.limits.max_resources) {
      if (!over_limit_) {
        diagnostics_.Error(where, "too many resources: more than " +
                                      std::to_string(options_.limits.max_resources) +
                                      " (the limit)");
      }
      over_limit_ = true;
      return;
    }
    if (existing != declared_.end()) {
      existing->second = Declaration{kind, id, &table, file, where, file_index};  // later wins
    } else {
      declared_.emplace(id, Declaration{kind, id, &table, file, where, file_index});
    }
  }

  void BuildResources() {
    // Room for all at once, and sorted in place (ids are unique: no two compare equal): a
    // vector doubling, or stable_sort's buffer, would hold the resources twice at the peak.
    state_.resources.reserve(declared_.size());
    for (const auto& [id, declaration] : declared_) {
      if (auto resource = Build(declaration)) state_.resources.push_back(std::move(*resource));
      // Counted as they are made: contents held past the limit would be memory spent on
      // a render that fails anyway.
      if (total_size_ > options_.limits.max_total_size) {
        diagnostics_.Error({options_.profile, 0, 0},
                           "the rendered contents pass " +
                               std::to_string(options_.limits.max_total_size) +
                               " bytes together (the limit), at " + id);
        return;
      }
    }
    std::sort(state_.resources.begin(), state_.resources.end(),
              [](const Resource& a, const Resource& b) {
                return std::tie(a.kind, a.id) < std::tie(b.kind, b.id);
              });
    CheckPaths();
  }

  std::optional<Resource> Build(const Declaration& declaration) {
    const std::size_t errors_before = diagnostics_.error_count();
    TomlTable t(*declaration.table, declaration.file, ResourceKindName(declaration.kind),
                diagnostics_);
    Resource resource;
    resource.kind = declaration.kind;
    resource.id = declaration.id;
    resource.declared_at = {declaration.file_index, declaration.where.line,
                            declaration.where.column};
    if (declaration.kind != ResourceKind::kCheck) resource.drift = Drift(t);
    if (declaration.kind == ResourceKind::kFile || declaration.kind == ResourceKind::kDirectory ||
        declaration.kind == ResourceKind::kSymlink || declaration.kind == ResourceKind::kUnit) {
      resource.on_remove = OnRemoveOf(t);
    }
    switch (declaration.kind) {
      case ResourceKind::kFile:
        resource.spec = BuildFile(t);
        break;
      case ResourceKind::kDirectory:
        resource.spec = BuildDirectory(t);
        break;
      case ResourceKind::kSymlink:
        resource.spec = BuildSymlink(t);
        break;
      case ResourceKind::kPackage:
        resource.spec = BuildPackage(t);
        break;
      case ResourceKind::kUnit:
        resource.spec = BuildUnit(t);
        break;
      case ResourceKind::kService:
        resource.spec = BuildService(t);
        break;
      case ResourceKind::kCheck:
        resource.spec = BuildCheck(t);
        break;
    }
    t.ReportUnknownKeys();
    if (diagnostics_.error_count() != errors_before) return std::nullopt;
    return resource;
  }

  std::optional<DriftMode> Drift(TomlTable& t) {
    auto drift = t.String("drift");
    if (!drift) return std::nullopt;
    auto mode = ParseDriftMode(*drift);
    if (!mode)
      t.Error("drift", std::string("expected ") + kDriftModeChoices + ", got \"" + *drift + "\"");
    return mode;
  }

  OnRemove OnRemoveOf(TomlTable& t) {
    auto on_remove = t.String("on_remove");
    if (!on_remove) return OnRemove::kDefault;
    auto value = ParseOnRemove(*on_remove);
    if (!value) {
      t.Error("on_remove",
              std::string("expected ") + kOnRemoveChoices + ", got \"" + *on_remove + "\"");
    }
    return value.value_or(OnRemove::kDefault);
  }

  // A managed path: absolute, normalised, inside apply.allowed_paths.
  std::string ManagedPath(TomlTable& t) {
    std::string path = t.String("path").value_or("");
    auto normalised = NormalizePath(path);
    if (!normalised) {
      t.Error("path", normalised.error().message());
    } else if (*normalised != path) {
      t.Error("path", "'" + path + "' is not normalised (write '" + *normalised + "')");
    } else if (*normalised == "/") {
      t.Error("path", "'/' cannot be managed");
    } else if (std::none_of(options_.allowed_paths.begin(), options_.allowed_paths.end(),
                            [&](const std::string& base) { return IsPathInside(path, base); })) {
      t.Error("path", "'" + path + "' is outside apply.allowed_paths (" +
                          JoinPaths(options_.allowed_paths) + ")");
    }
    return path;
  }

  std::uint32_t Mode(TomlTable& t, std::uint32_t fallback) {
    const toml::node* node = t.Node("mode");
    if (node == nullptr) return fallback;
    if (const auto* string = node->as_string()) {
      const std::string& text = string->get();
      if ((text.size() == 3 || text.size() == 4) && OnlyChars(text, "01234567")) {
        return static_cast<std::uint32_t>(std::stoul(text, nullptr, 8));
      }
    } else if (const auto* integer = node->as_integer()) {
      if (!!(integer->flags() & toml::value_flags::format_as_octal) && integer->get() >= 0 &&
          integer->get() <= 07777) {
        return static_cast<std::uint32_t>(integer->get());
      }
    }
    t.Error("mode", "expected an octal mode such as \"0644\" (a string) or 0o644");
    return fallback;
  }

  // Empty when not given (an empty name is refused, so cannot be meant).
  std::string Owner(TomlTable& t, const char* key) {
    auto name = t.String(key);
    if (name && !IsUserName(*name)) {
      t.Error(key, "'" + *name + "' is not a valid user or group name (nor a numeric id)");
    }
    return std::move(name).value_or("");
  }

  // Reads `source` or `content` (exactly one) and expands it when `template` is true. With
  // `unread`, a `source` taken as it is, when the tree records its id and size (a commit
  // does) and contents are read again when needed, is not read here at all: `blob` is set
  // instead of `text`.
  struct Content {
    std::string text;
    std::optional<std::string> source;
    std::optional<TreeBlob> blob;
    bool templated = false;
    [[nodiscard]] std::size_t size() const { return blob ? blob->size : text.size(); }
  };
  Content ReadContent(TomlTable& t, bool unread = false) {
    Content result;
    auto source = t.String("source");
    auto content = t.String("content");
    result.templated = t.Bool("template").value_or(false);
    if (source.has_value() == content.has_value()) {
      t.Error(source ? "content" : "source",
              source ? "give either source or content, not both"
                     : "one of source (a file in the repo) or content is required");
      return result;
    }
    Location origin = t.Where("content");
    bool inline_origin = true;
    if (source) {
      auto read = ReadSource(
          *source, unread && !result.templated && options_.content_tree != nullptr, result);
      if (!read) {
        t.Error("source", read.error().Is(std::errc::no_such_file_or_directory)
                              ? "'" + *source + "': no such file in the repo"
                              : read.error().message());
        return result;
      }
      result.source = source;
      origin = {*source, 1, 1};
      inline_origin = false;
    } else {
      result.text = std::move(*content);
    }
    if (result.templated) {
      TemplateContext context{state_.vars, options_.host, options_.labels, options_.labels_known};
      const std::size_t room = std::min(
          options_.limits.max_file_size,
          options_.limits.max_total_size - std::min(total_size_, options_.limits.max_total_size));
      auto expanded =
          ExpandTemplate(result.text, origin, context, diagnostics_, inline_origin, room);
      if (expanded) result.text = std::move(*expanded);
    }
    if (result.size() > options_.limits.max_file_size) {
      t.Error(source ? "source" : "content",
              "the content is " + std::to_string(result.size()) + " bytes (the limit is " +
                  std::to_string(options_.limits.max_file_size) + ")");
    }
    total_size_ += result.size();
    return result;
  }

  // The repo file `source` into `result`: its blob when `unread` allows and the tree
  // records it, its text otherwise.
  Result<void> ReadSource(const std::string& source, bool unread, Content& result) {
    auto checked = CheckRepoPath(source);
    if (!checked) return Fail(checked.error());
    if (unread) {
      auto path = ResolveInTree(tree_, source);
      if (!path) return Fail(path.error());
      auto blob = tree_.Blob(*path);
      if (!blob) return Fail(blob.error());
      if (*blob) {
        result.blob = **blob;
        return {};
      }
    }
    auto text = ReadTreeFile(tree_, source, options_.limits.max_file_size);
    if (!text) return Fail(text.error());
    result.text = std::move(*text);
    return {};
  }

  FileSpec BuildFile(TomlTable& t) {
    FileSpec spec;
    spec.path = ManagedPath(t);
    Content content = ReadContent(t, true);
    spec.content_size = content.size();
    spec.content_id = content.blob ? content.blob->id : ContentIdOf(content.text);
    if (options_.content_tree && content.source && !content.templated) {
      spec.lazy = options_.content_tree;  // read again when it is written or diffed
    } else {
      spec.content = std::move(content.text);
    }
    spec.source = std::move(content.source).value_or("");
    spec.templated = content.templated;
    spec.secret = t.Bool("secret").value_or(false);
    spec.mode = Mode(t, 0644);
    spec.owner = Owner(t, "owner");
    spec.group = Owner(t, "group");
    return spec;
  }

  DirectorySpec BuildDirectory(TomlTable& t) {
    DirectorySpec spec;
    spec.path = ManagedPath(t);
    spec.mode = Mode(t, 0755);
    spec.owner = Owner(t, "owner");
    spec.group = Owner(t, "group");
    return spec;
  }

  SymlinkSpec BuildSymlink(TomlTable& t) {
    SymlinkSpec spec;
    spec.path = ManagedPath(t);
    auto target = t.String("target");
    if (!target || target->empty()) {
      t.Error("target", "is required: what the symlink points to");
    } else if (target->size() > 4095) {
      t.Error("target", "is longer than 4095 bytes");
    } else {
      spec.target = *target;
    }
    return spec;
  }

  PackageSpec BuildPackage(TomlTable& t) {
    PackageSpec spec;
    spec.name = t.String("name").value_or("");
    if (!IsPackageName(spec.name)) {
      t.Error("name", "'" + spec.name +
                          "' is not a valid package name (lowercase letters, digits, '+', '-', "
                          "'.')");
    }
    spec.version = t.String("version");
    if (spec.version &&
        (spec.version->empty() ||
         !OnlyChars(*spec.version,
                    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.+~:*-"))) {
      t.Error("version", "'" + *spec.version +
                             "' is not a valid version or pattern (e.g. "
                             "\"1.22.1-1\" or \"1.22.*\")");
    }
    if (auto state = t.String("state")) {
      if (*state == "absent") {
        spec.present = false;
      } else if (*state != "present") {
        t.Error("state", "expected \"present\" or \"absent\", got \"" + *state + "\"");
      }
    }
    if (!spec.present && spec.version) {
      t.Error("version", "a version makes no sense with state = \"absent\"");
    }
    return spec;
  }

  UnitSpec BuildUnit(TomlTable& t) {
    UnitSpec spec;
    spec.name = t.String("name").value_or("");
    if (!IsUnitFileName(spec.name)) {
      t.Error("name", "'" + spec.name +
                          "' is not a unit file name (e.g. \"app.service\" or a drop-in "
                          "\"app.service.d/override.conf\")");
    }
    spec.path = "/etc/systemd/system/" + spec.name;
    Content content = ReadContent(t);
    spec.content = std::move(content.text);
    spec.source = std::move(content.source);
    spec.templated = content.templated;
    return spec;
  }

  ServiceSpec BuildService(TomlTable& t) {
    ServiceSpec spec;
    spec.name = t.String("name").value_or("");
    if (!IsUnitName(spec.name)) {
      t.Error("name", "'" + spec.name + "' is not a unit name (e.g. \"nginx.service\")");
    }
    if (auto state = t.String("state")) {
      if (*state == "stopped") {
        spec.running = false;
      } else if (*state != "running") {
        t.Error("state", "expected \"running\" or \"stopped\", got \"" + *state + "\"");
      }
    }
    spec.enabled = t.Bool("enabled").value_or(true);
    spec.reload = t.Bool("reload").value_or(false);
    if (auto paths = t.Strings("restart_on")) {
      for (const auto& path : *paths) {
        auto normalised = NormalizePath(path);
        if (!normalised || *normalised != path) {
          t.Error("restart_on", "'" + path + "' is not an absolute, normalised path");
        }
      }
      spec.restart_on = std::move(*paths);
      restart_on_.push_back({t.Where("restart_on"), spec.restart_on});
    }
    return spec;
  }

  CheckSpec BuildCheck(TomlTable& t) {
    CheckSpec spec;
    spec.name = t.String("name").value_or("");
    auto exec = t.Strings("exec");
    spec.http = t.String("http");
    if (exec.has_value() == spec.http.has_value()) {
      t.Error("exec", exec ? "give either exec or http, not both"
                           : "one of exec (a command) or http (a URL) is required");
    }
    if (exec) {
      if (exec->empty() || exec->front().empty() || exec->front().front() != '/') {
        t.Error("exec",
                "expected a command with an absolute program path, e.g. "
                "[\"/usr/bin/curl\", \"-fsS\", \"http://127.0.0.1/\"]");
      }
      spec.exec = std::move(*exec);
    }
    if (spec.http && spec.http->substr(0, 7) != "http://" &&
        spec.http->substr(0, 8) != "https://") {
      t.Error("http", "expected an http:// or https:// URL");
    }
    if (auto code = t.Integer("expect_exit")) {
      if (*code < 0 || *code > 255) t.Error("expect_exit", "expected an exit status from 0 to 255");
      spec.expect_exit = static_cast<int>(*code);
    }
    if (auto status = t.Integer("expect_status")) {
      if (*status < 100 || *status > 599) {
        t.Error("expect_status", "expected an HTTP status from 100 to 599");
      }
      spec.expect_status = static_cast<int>(*status);
    }
    if (auto timeout = t.Duration("timeout")) {
      if (timeout->count() <= 0) t.Error("timeout", "must be more than 0s");
      spec.timeout = *timeout;
    }
    return spec;
  }

  // One path, one resource; and nothing managed below a file or a symlink.
  void CheckPaths() {
    std::map<std::string, const Resource*> by_path;
    for (const auto& resource : state_.resources) {
      std::string path;
      if (const auto* file = std::get_if<FileSpec>(&resource.spec)) path = file->path;
      if (const auto* dir = std::get_if<DirectorySpec>(&resource.spec)) path = dir->path;
      if (const auto* link = std::get_if<SymlinkSpec>(&resource.spec)) path = link->path;
      if (const auto* unit = std::get_if<UnitSpec>(&resource.spec)) path = unit->path;
      if (path.empty()) continue;
      auto [it, inserted] = by_path.emplace(path, &resource);
      if (!inserted) {
        diagnostics_.Error(DeclaredLocation(state_, resource),
                           "'" + path + "' is declared twice: as " + it->second->id + " (" +
                               DeclaredLocation(state_, *it->second).ToString() + ") and as " +
                               resource.id);
      }
    }
    for (const auto& [path, resource] : by_path) {
      for (auto slash = path.rfind('/'); slash != 0 && slash != std::string::npos;
           slash = path.rfind('/', slash - 1)) {
        auto parent = by_path.find(path.substr(0, slash));
        if (parent != by_path.end() && parent->second->kind != ResourceKind::kDirectory) {
          diagnostics_.Error(DeclaredLocation(state_, *resource),
                             "'" + path + "' is below " + parent->second->id + " (" +
                                 DeclaredLocation(state_, *parent->second).ToString() +
                                 "), which is not a directory");
          break;
        }
      }
    }
    // With errors, resources were dropped: "not managed" would then be noise.
    if (diagnostics_.has_errors()) return;
    for (const auto& [where, paths] : restart_on_) {
      for (const auto& path : paths) {
        auto it = by_path.find(path);
        if (it == by_path.end()) {
          diagnostics_.Warning(where, "restart_on: '" + path +
                                          "' is not managed by this profile, so a change to it "
                                          "is never seen");
        }
      }
    }
  }

  Tree& tree_;
  const RenderOptions& options_;
  Diagnostics& diagnostics_;
  DesiredState state_;
  std::deque<toml::table> documents_;  // keeps the declarations' tables alive
  std::map<std::string, Declaration> declared_;
  std::vector<std::pair<Location, std::vector<std::string>>> restart_on_;
  std::size_t total_size_ = 0;
  bool loaded_any_ = false;
  std::size_t files_read_ = 0;     // profile files read so far, repeats counted
  std::size_t profile_bytes_ = 0;  // their bytes
  bool over_limit_ = false;        // a count passed its limit: nothing more is read
};

}  // namespace

const char* ResourceKindName(ResourceKind kind) {
  switch (kind) {
    case ResourceKind::kPackage:
      return "package";
    case ResourceKind::kDirectory:
      return "directory";
    case ResourceKind::kFile:
      return "file";
    case ResourceKind::kSymlink:
      return "symlink";
    case ResourceKind::kUnit:
      return "unit";
    case ResourceKind::kService:
      return "service";
    case ResourceKind::kCheck:
      return "check";
  }
  return "unknown";
}

const char* OnRemoveName(OnRemove on_remove) {
  switch (on_remove) {
    case OnRemove::kDefault:
      return "";
    case OnRemove::kKeep:
      return "keep";
    case OnRemove::kRestore:
      return "restore";
    case OnRemove::kDelete:
      return "delete";
  }
  return "";
}

std::optional<OnRemove> ParseOnRemove(std::string_view name) {
  for (auto value : {OnRemove::kKeep, OnRemove::kRestore, OnRemove::kDelete}) {
    if (name == OnRemoveName(value)) return value;
  }
  return std::nullopt;
}

DesiredState RenderProfile(Tree& tree, const RenderOptions& options, Diagnostics& diagnostics) {
  return Renderer(tree, options, diagnostics).Render();
}

}  // namespace tether

namespace tether {

Result<std::string> ContentOf(const FileSpec& file) {
  if (!file.lazy) return file.content.str();
  // By its id when the render recorded it: a drift repair of one file of a folder of
  // thousands does not read that folder's tree.
  auto text = file.content_id
                  ? file.lazy->ReadBlob(file.source, *file.content_id, file.content_size + 1)
                  : ReadTreeFile(*file.lazy, file.source, file.content_size + 1);
  if (!text) {
    return Fail(text.error().WithContext("read the content of '" + file.path + "' from '" +
                                         file.source + "'"));
  }
  if (!file.content_id || ContentIdOf(*text) != *file.content_id) {
    return Fail(std::errc::io_error, "the content of '" + file.path + "' ('" + file.source +
                                         "') is not what was rendered; refusing to write it");
  }
  return text;
}

ContentId ContentIdOf(const FileSpec& file) {
  return file.content_id ? *file.content_id : ContentIdOf(file.content.str());
}

Location DeclaredLocation(const DesiredState& state, const Resource& resource) {
  const DeclaredAt& at = resource.declared_at;
  return {at.file < state.files.size() ? state.files[at.file] : std::string(), at.line, at.column};
}

std::size_t ContentSize(const FileSpec& file) {
  return file.lazy ? file.content_size : file.content.size();
}

}  // namespace tether
