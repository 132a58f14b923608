#include "agent/desired/render_cache.hpp"

#include <cstdint>
#include <cstring>

#include "common/crc32.hpp"
#include "common/sha256.hpp"
#include "version.hpp"

namespace tether {

namespace {

// 2: each resource's record is preceded by its size, so that a decode skips a file it
// does not keep without reading it.
// 3: the host's name and FQDN follow the key (RenderedNameOf).
// 4: a CRC-32 at the end rather than a SHA-256: it checks for a file cut short or damaged
// (it is written without a sync), which a CRC sees as well, at a tenth of the cost (a
// drift repair checks the whole render, 4 MB at 50,000 files, to decode a few records of it).
constexpr std::string_view kMagic = "tether.render/4\n";
constexpr std::size_t kKeySize = 64;
constexpr std::size_t kChecksumSize = 4;

// Numbers as LEB128 varints, texts as their size and bytes.
class Writer {
 public:
  void Number(std::uint64_t value) {
    while (value >= 0x80) {
      out_ += static_cast<char>((value & 0x7f) | 0x80);
      value >>= 7;
    }
    out_ += static_cast<char>(value);
  }
  void Text(std::string_view text) {
    Number(text.size());
    out_ += text;
  }
  void Texts(const std::vector<std::string>& texts) {
    Number(texts.size());
    for (const auto& text : texts) Text(text);
  }
  void MaybeText(const std::optional<std::string>& text) {
    Number(text ? 1 : 0);
    if (text) Text(*text);
  }
  std::string& out() { return out_; }

 private:
  std::string out_;
};

// Reads what Writer wrote; after the first thing that is not there, every read is false
// and `ok()` stays false.
class Reader {
 public:
  explicit Reader(std::string_view in, bool ok = true) : in_(in), ok_(ok) {}

  bool ok() const { return ok_; }
  bool done() const { return ok_ && in_.empty(); }
  void Fail() { ok_ = false; }

  std::uint64_t Number() {
    std::uint64_t value = 0;
    for (int shift = 0; shift < 64; shift += 7) {
      if (in_.empty()) break;
      const auto byte = static_cast<unsigned char>(in_.front());
      in_.remove_prefix(1);
      value |= static_cast<std::uint64_t>(byte & 0x7f) << shift;
      if ((byte & 0x80) == 0) return value;
    }
    ok_ = false;
    return 0;
  }
  template <typename T>
  T Small(T limit) {
    const std::uint64_t value = Number();
    if (value > static_cast<std::uint64_t>(limit)) ok_ = false;
    return ok_ ? static_cast<T>(value) : T{};
  }
  bool Flag() { return Small<int>(1) == 1; }
  std::string Text() { return std::string(View()); }
  // A text, as a view of the bytes read.
  std::string_view View() {
    const std::uint64_t size = Number();
    if (!ok_ || size > in_.size()) {
      ok_ = false;
      return {};
    }
    const std::string_view text = in_.substr(0, size);
    in_.remove_prefix(size);
    return text;
  }
  std::vector<std::string> Texts() {
    std::vector<std::string> texts(Small<std::size_t>(in_.size()));
    for (auto& text : texts) text = Text();
    return texts;
  }
  std::optional<std::string> MaybeText() {
    if (!Flag()) return std::nullopt;
    return Text();
  }
  // The next `size` bytes, as a reader of their own; they are skipped here.
  Reader Part(std::uint64_t size) {
    if (!ok_ || size > in_.size()) {
      ok_ = false;
      return Reader({}, false);
    }
    Reader part(in_.substr(0, size));
    in_.remove_prefix(size);
    return part;
  }

 private:
  std::string_view in_;
  bool ok_ = true;
};

void WriteFile(Writer& w, const FileSpec& file) {
  w.Text(file.path);
  w.Text(file.lazy ? std::string_view() : std::string_view(file.content.str()));
  w.Number(file.content_size);
  w.Text(file.source);
  w.Number((file.lazy ? 1 : 0) | (file.templated ? 2 : 0) | (file.secret ? 4 : 0) |
           (file.content_id ? 8 : 0));
  if (file.content_id) {
    w.Text(std::string_view(reinterpret_cast<const char*>(file.content_id->data()),
                            file.content_id->size()));
  }
  w.Number(file.mode);
  w.Text(file.owner.str());
  w.Text(file.group.str());
}

// Into `file`, a FileSpec of a resource being decoded: made in place, with a copy of a
// text only where a FileSpec keeps one (a render is decoded by every cycle).
void ReadFile(Reader& r, const std::shared_ptr<Tree>& tree, FileSpec& file) {
  file.path = r.View();
  if (const std::string_view content = r.View(); !content.empty()) {
    file.content = std::string(content);
  }
  file.content_size = r.Small<std::size_t>(SIZE_MAX);
  file.source = r.View();
  const auto flags = r.Small<unsigned>(15);
  if ((flags & 1) != 0) {
    if (tree == nullptr) r.Fail();  // a content read again needs its tree
    file.lazy = tree;
  }
  file.templated = (flags & 2) != 0;
  file.secret = (flags & 4) != 0;
  if ((flags & 8) != 0) {
    const std::string_view id = r.View();
    ContentId content_id{};
    if (id.size() != content_id.size()) {
      r.Fail();
    } else {
      std::memcpy(content_id.data(), id.data(), id.size());
      file.content_id = content_id;
    }
  }
  file.mode = r.Small<std::uint32_t>(07777);
  if (const std::string_view owner = r.View(); !owner.empty()) file.owner = std::string(owner);
  if (const std::string_view group = r.View(); !group.empty()) file.group = std::string(group);
}

void WriteResource(Writer& w, const Resource& resource) {
  w.Number(static_cast<unsigned>(resource.kind));
  // The drift mode (0 for none, else 1 + mode) and on_remove, times 4, in one number.
  w.Number((resource.drift ? static_cast<unsigned>(*resource.drift) + 1 : 0) +
           4 * static_cast<unsigned>(resource.on_remove));
  w.Number(resource.declared_at.file);
  w.Number(resource.declared_at.line);
  w.Number(resource.declared_at.column);
  w.Text(resource.id);
  std::visit(
      [&](const auto& spec) {
        using Spec = std::decay_t<decltype(spec)>;
        if constexpr (std::is_same_v<Spec, FileSpec>) {
          WriteFile(w, spec);
        } else if constexpr (std::is_same_v<Spec, DirectorySpec>) {
          w.Text(spec.path);
          w.Number(spec.mode);
          w.Text(spec.owner.str());
          w.Text(spec.group.str());
        } else if constexpr (std::is_same_v<Spec, SymlinkSpec>) {
          w.Text(spec.path);
          w.Text(spec.target);
        } else if constexpr (std::is_same_v<Spec, PackageSpec>) {
          w.Text(spec.name);
          w.MaybeText(spec.version);
          w.Number(spec.present ? 1 : 0);
        } else if constexpr (std::is_same_v<Spec, UnitSpec>) {
          w.Text(spec.name);
          w.Text(spec.path);
          w.Text(spec.content);
          w.MaybeText(spec.source);
          w.Number(spec.templated ? 1 : 0);
        } else if constexpr (std::is_same_v<Spec, ServiceSpec>) {
          w.Text(spec.name);
          w.Number((spec.running ? 1 : 0) | (spec.enabled ? 2 : 0) | (spec.reload ? 4 : 0));
          w.Texts(spec.restart_on);
        } else {
          static_assert(std::is_same_v<Spec, CheckSpec>);
          w.Text(spec.name);
          w.Texts(spec.exec);
          w.MaybeText(spec.http);
          w.Number(static_cast<std::uint32_t>(spec.expect_exit));
          w.Number(static_cast<std::uint32_t>(spec.expect_status));
          w.Number(static_cast<std::uint64_t>(spec.timeout.count()));
        }
      },
      resource.spec);
}

// What comes first in a resource's record: enough to tell whether a decode keeps it.
struct RecordHead {
  ResourceKind kind = ResourceKind::kFile;
  std::optional<DriftMode> drift;
  OnRemove on_remove = OnRemove::kDefault;
  DeclaredAt declared_at;
  std::string_view id;  // in the record's bytes
};

RecordHead ReadHead(Reader& r) {
  RecordHead head;
  head.kind = static_cast<ResourceKind>(r.Small<unsigned>(6));
  const auto modes = r.Small<unsigned>(15);
  if (const unsigned drift = modes % 4; drift > 0) head.drift = static_cast<DriftMode>(drift - 1);
  head.on_remove = static_cast<OnRemove>(modes / 4);
  head.declared_at.file = r.Small<std::uint32_t>(UINT32_MAX);
  head.declared_at.line = r.Small<std::uint32_t>(UINT32_MAX);
  head.declared_at.column = r.Small<std::uint32_t>(UINT32_MAX);
  head.id = r.View();
  return head;
}

// Into `resource`, as it was written; false when it is not one.
bool ReadResource(Reader& r, const RecordHead& head, const std::shared_ptr<Tree>& tree,
                  Resource& resource) {
  resource.kind = head.kind;
  resource.drift = head.drift;
  resource.on_remove = head.on_remove;
  resource.declared_at = head.declared_at;
  resource.id = head.id;
  switch (resource.kind) {
    case ResourceKind::kFile:
      ReadFile(r, tree, resource.spec.emplace<FileSpec>());
      break;
    case ResourceKind::kDirectory: {
      DirectorySpec spec;
      spec.path = r.Text();
      spec.mode = r.Small<std::uint32_t>(07777);
      if (std::string owner = r.Text(); !owner.empty()) spec.owner = std::move(owner);
      if (std::string group = r.Text(); !group.empty()) spec.group = std::move(group);
      resource.spec = std::move(spec);
      break;
    }
    case ResourceKind::kSymlink: {
      SymlinkSpec spec;
      spec.path = r.Text();
      spec.target = r.Text();
      resource.spec = std::move(spec);
      break;
    }
    case ResourceKind::kPackage: {
      PackageSpec spec;
      spec.name = r.Text();
      spec.version = r.MaybeText();
      spec.present = r.Flag();
      resource.spec = std::move(spec);
      break;
    }
    case ResourceKind::kUnit: {
      UnitSpec spec;
      spec.name = r.Text();
      spec.path = r.Text();
      spec.content = r.Text();
      spec.source = r.MaybeText();
      spec.templated = r.Flag();
      resource.spec = std::move(spec);
      break;
    }
    case ResourceKind::kService: {
      ServiceSpec spec;
      spec.name = r.Text();
      const auto flags = r.Small<unsigned>(7);
      spec.running = (flags & 1) != 0;
      spec.enabled = (flags & 2) != 0;
      spec.reload = (flags & 4) != 0;
      spec.restart_on = r.Texts();
      resource.spec = std::move(spec);
      break;
    }
    case ResourceKind::kCheck: {
      CheckSpec spec;
      spec.name = r.Text();
      spec.exec = r.Texts();
      spec.http = r.MaybeText();
      spec.expect_exit = static_cast<int>(r.Small<std::uint32_t>(UINT32_MAX));
      spec.expect_status = static_cast<int>(r.Small<std::uint32_t>(UINT32_MAX));
      spec.timeout = std::chrono::milliseconds(r.Small<std::uint64_t>(INT64_MAX));
      resource.spec = std::move(spec);
      break;
    }
  }
  return r.ok();
}

}  // namespace

std::string RenderKey(std::string_view commit, const RenderOptions& options) {
  Writer w;
  w.Text(kMagic);
  w.Text(TETHER_VERSION);
  w.Text(commit);
  w.Text(options.profile);
  const HostFacts& host = options.host;
  for (const std::string* fact :
       {&host.hostname, &host.fqdn, &host.machine_id, &host.os_id, &host.os_version, &host.arch}) {
    w.Text(*fact);
  }
  w.Number(options.labels.size());
  for (const auto& [name, value] : options.labels) {
    w.Text(name);
    w.Text(value);
  }
  w.Number(options.labels_known ? 1 : 0);
  w.Texts(options.allowed_paths);
  const RenderLimits& limits = options.limits;
  w.Number(limits.max_profile_size);
  w.Number(limits.max_file_size);
  w.Number(limits.max_total_size);
  w.Number(limits.max_resources);
  w.Number(static_cast<std::uint64_t>(limits.max_include_depth));
  w.Number(options.content_tree ? 1 : 0);
  return Sha256Hex(w.out());
}

std::optional<RenderedName> RenderedNameOf(std::string_view bytes) {
  if (bytes.size() < kMagic.size() + kKeySize + kChecksumSize || !bytes.starts_with(kMagic)) {
    return std::nullopt;
  }
  const std::size_t head = kMagic.size() + kKeySize;
  Reader r(bytes.substr(head, bytes.size() - kChecksumSize - head));
  RenderedName name;
  name.hostname = r.Text();
  name.fqdn = r.Text();
  if (!r.ok()) return std::nullopt;
  return name;
}

std::string EncodeRender(std::string_view key, const CachedRender& render) {
  Writer w;
  w.out() += kMagic;
  w.out() += key;
  w.Text(render.name.hostname);
  w.Text(render.name.fqdn);
  w.Texts(render.problems);
  const DesiredState& desired = render.desired;
  w.Text(desired.profile);
  w.Texts(desired.files);
  w.Number(desired.vars.size());
  for (const auto& [name, value] : desired.vars) {
    w.Text(name);
    w.Text(value);
  }
  w.Number(desired.resources.size());
  Writer record;
  for (const auto& resource : desired.resources) {
    record.out().clear();
    WriteResource(record, resource);
    w.Text(record.out());
  }
  const Crc32Bytes checksum = Crc32(w.out());
  w.out().append(reinterpret_cast<const char*>(checksum.data()), checksum.size());
  return std::move(w.out());
}

std::optional<CachedRender> DecodeRender(std::string_view bytes, std::string_view key,
                                         const std::shared_ptr<Tree>& tree,
                                         const FileFilter& keep) {
  if (key.size() != kKeySize || bytes.size() < kMagic.size() + kKeySize + kChecksumSize ||
      !bytes.starts_with(kMagic) || bytes.substr(kMagic.size(), kKeySize) != key) {
    return std::nullopt;
  }
  const std::string_view body = bytes.substr(0, bytes.size() - kChecksumSize);
  const Crc32Bytes checksum = Crc32(body);
  if (std::memcmp(checksum.data(), bytes.data() + body.size(), kChecksumSize) != 0) {
    return std::nullopt;
  }
  Reader r(body.substr(kMagic.size() + kKeySize));
  CachedRender render;
  render.name.hostname = r.Text();
  render.name.fqdn = r.Text();
  render.problems = r.Texts();
  DesiredState& desired = render.desired;
  desired.profile = r.Text();
  desired.files = r.Texts();
  for (auto vars = r.Small<std::size_t>(body.size()); vars > 0 && r.ok(); --vars) {
    std::string name = r.Text();
    desired.vars[std::move(name)] = r.Text();
  }
  const auto count = r.Small<std::size_t>(body.size());
  if (!keep) desired.resources.reserve(count);
  for (std::size_t i = 0; i < count && r.ok(); ++i) {
    Reader record = r.Part(r.Number());
    const RecordHead head = ReadHead(record);
    if (!record.ok()) return std::nullopt;
    if (keep && head.kind == ResourceKind::kFile && !keep(head.id, head.drift)) {
      ++render.files_left_out;
      continue;
    }
    if (!ReadResource(record, head, tree, desired.resources.emplace_back()) || !record.done()) {
      return std::nullopt;
    }
  }
  if (!r.done()) return std::nullopt;
  return render;
}

}  // namespace tether
