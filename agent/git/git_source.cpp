#include "agent/git/git_source.hpp"

#include <fcntl.h>
#include <pwd.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <deque>
#include <functional>
#include <set>
#include <unordered_map>

#include "agent/git/local_ref.hpp"
#include "common/filesystem.hpp"
#include "common/json_fields.hpp"
#include "common/log.hpp"
#include "common/process.hpp"
#include "common/unique_fd.hpp"

namespace tether {

namespace {

bool IsCommitId(std::string_view text) {
  return text.size() == 40 && text.find_first_not_of("0123456789abcdef") == std::string::npos;
}

Result<ObjectId> ParseCommitId(const std::string& commit) {
  auto id = IsCommitId(commit) ? ParseObjectId(commit) : std::nullopt;
  if (!id) return Fail(std::errc::invalid_argument, "'" + commit + "' is not a commit id");
  return *id;
}

// What a commit links to: its tree, on its first line, and its parents, on the lines
// right after it (where git reads them; such lines elsewhere are not links).
struct CommitLinks {
  std::optional<ObjectId> tree;
  std::vector<ObjectId> parents;
};

CommitLinks LinksOf(std::string_view commit) {
  CommitLinks links;
  const auto field = [&](std::string_view name) -> std::optional<ObjectId> {
    const auto eol = commit.find('\n');
    if (eol != name.size() + 41 || commit.substr(0, name.size() + 1) != std::string(name) + " ") {
      return std::nullopt;
    }
    auto id = ParseObjectId(commit.substr(name.size() + 1, 40));
    if (id) commit.remove_prefix(eol + 1);
    return id;
  };
  links.tree = field("tree");
  if (!links.tree) return links;
  while (auto parent = field("parent")) links.parents.push_back(*parent);
  return links;
}

// The largest commit and tree objects read: far past what a fleet repo makes, far below
// what would strain the cycle's memory.
constexpr std::size_t kMaxCommitSize = std::size_t{16} << 20;
constexpr std::size_t kMaxTreeSize = std::size_t{64} << 20;

// A commit's tree in the mirror. Each directory's tree is read, checked and parsed once and
// kept while this object lives, so looking up many paths costs one binary search each in
// their directory, not a walk from the root.
class CommitTree final : public Tree {
 public:
  CommitTree(ObjectStore& store, std::unique_ptr<const ParsedTree> root) : store_(store) {
    trees_.emplace(std::string(), std::move(root));
  }

  // Reads and parses tree `id`; `what` names it in errors.
  static Result<std::unique_ptr<const ParsedTree>> Load(ObjectStore& store, const ObjectId& id,
                                                        std::string_view what) {
    auto object = store.Read(id, kMaxTreeSize);
    if (!object) return Fail(object.error().WithContext("read " + std::string(what)));
    if (object->type != ObjectType::kTree) {
      return Fail(std::errc::not_a_directory, std::string(what) + " is not a tree");
    }
    auto tree = ParsedTree::Parse(std::move(object->data));
    if (!tree) return Fail(tree.error().WithContext(std::string(what)));
    return std::unique_ptr<const ParsedTree>(std::move(*tree));
  }

  Result<TreeEntryType> Type(std::string_view path) override {
    auto entry = Entry(path);
    if (!entry) return Fail(entry.error());
    switch ((*entry)->mode & 0170000u) {
      case 0040000u:
        return TreeEntryType::kDirectory;
      case 0120000u:
        return TreeEntryType::kSymlink;
      case 0100000u:
        return TreeEntryType::kFile;
      default:
        return TreeEntryType::kOther;
    }
  }

  Result<std::string> ReadFile(std::string_view path, std::size_t max_size) override {
    auto entry = Entry(path);
    if (!entry) return Fail(entry.error());
    if (!IsBlob(**entry)) return NotAFile(path);
    return ReadBlob(path, (*entry)->id, max_size);
  }

  Result<std::string> ReadSymlink(std::string_view path) override {
    auto entry = Entry(path);
    if (!entry) return Fail(entry.error());
    if (!IsBlob(**entry)) return NotAFile(path);
    return ReadBlob(path, (*entry)->id, 4096);
  }

  // The blob id is in the tree entry; the size is in the object's header, which for a
  // packed object costs a few bytes of inflate, not the whole content.
  Result<std::optional<TreeBlob>> Blob(std::string_view path) override {
    auto entry = Entry(path);
    if (!entry) return Fail(entry.error());
    if (!IsBlob(**entry)) return NotAFile(path);
    auto header = store_.Header((*entry)->id);
    if (!header) return Unreadable(path, header.error());
    TreeBlob blob;
    blob.id = (*entry)->id;
    blob.size = header->size;
    return blob;
  }

  Result<std::string> ReadBlob(std::string_view path, const ContentId& id,
                               std::size_t max_size) override {
    auto object = store_.Read(id, max_size);
    if (!object) {
      if (object.error().Is(std::errc::file_too_large)) {
        return Fail(std::errc::file_too_large, "'" + std::string(path) + "' is larger than " +
                                                   std::to_string(max_size) + " bytes");
      }
      return Unreadable(path, object.error());
    }
    if (object->type != ObjectType::kBlob) return NotAFile(path);
    return std::move(object->data);
  }

  Result<std::vector<std::string>> List(std::string_view path) override {
    auto tree = Directory(path);
    if (!tree) return Fail(tree.error());
    std::vector<std::string> names;
    names.reserve((*tree)->entries.size());
    for (const auto& entry : (*tree)->entries) names.emplace_back(entry.name);
    return names;  // sorted, as the entries are
  }

 private:
  static bool IsBlob(const ParsedTree::Entry& entry) {
    const auto type = entry.mode & 0170000u;
    return type == 0100000u || type == 0120000u;
  }
  // An object of the commit the mirror cannot give: an I/O error, whatever the cause.
  static tl::unexpected<Error> Unreadable(std::string_view path, const Error& error) {
    return Fail(std::errc::io_error, "read '" + std::string(path) + "': " + error.message());
  }
  static tl::unexpected<Error> NotAFile(std::string_view path) {
    return Fail(std::errc::invalid_argument, "'" + std::string(path) + "' is not a file");
  }
  static tl::unexpected<Error> NoSuchFile(std::string_view path) {
    return Fail(std::errc::no_such_file_or_directory,
                "'" + std::string(path) + "': no such file in the commit");
  }

  // The tree of directory `dir` ("" for the top), read once.
  Result<const ParsedTree*> Directory(std::string_view dir) {
    if (auto known = trees_.find(dir); known != trees_.end()) return known->second.get();
    const auto slash = dir.rfind('/');
    auto parent = Directory(slash == std::string_view::npos ? "" : dir.substr(0, slash));
    if (!parent) return Fail(parent.error());
    const auto* entry =
        (*parent)->Find(slash == std::string_view::npos ? dir : dir.substr(slash + 1));
    if (entry == nullptr) return NoSuchFile(dir);
    if ((entry->mode & 0170000u) != 0040000u) {
      return Fail(std::errc::not_a_directory, "'" + std::string(dir) + "' is not a directory");
    }
    auto tree = Load(store_, entry->id, "'" + std::string(dir) + "'");
    if (!tree) return Fail(tree.error());
    return trees_.emplace(std::string(dir), std::move(*tree)).first->second.get();
  }

  // The entry of `path`, owned by its directory's tree.
  Result<const ParsedTree::Entry*> Entry(std::string_view path) {
    const auto slash = path.rfind('/');
    auto dir = Directory(slash == std::string_view::npos ? "" : path.substr(0, slash));
    if (!dir) return NoSuchFile(path);
    const std::string_view name = slash == std::string_view::npos ? path : path.substr(slash + 1);
    const auto* entry = name.empty() ? nullptr : (*dir)->Find(name);
    if (entry == nullptr) return NoSuchFile(path);
    return entry;
  }

  // Transparent lookup by string_view.
  struct Hash {
    using is_transparent = void;
    std::size_t operator()(std::string_view text) const {
      return std::hash<std::string_view>()(text);
    }
  };

  ObjectStore& store_;
  // dir -> its tree
  std::unordered_map<std::string, std::unique_ptr<const ParsedTree>, Hash, std::equal_to<>> trees_;
};

// libgit2 1.5 reads $HOME/.ssh/known_hosts for ssh:// (to choose the host key type) and
// fails without it. The worker gets a HOME of its own in the cache dir; the host key
// itself is checked against source.known_hosts in the worker's certificate callback.
std::string WorkerHome(const std::string& cache_dir) { return cache_dir + "/worker-home"; }

std::vector<std::string> WorkerEnvironment(const std::string& cache_dir) {
  std::vector<std::string> env = kCleanEnvironment;
  env.push_back("HOME=" + WorkerHome(cache_dir));
  return env;
}

// Writes `content` to `path` unless the file there already is that, with that mode and
// owner: every cycle prepares the worker's files, and a write makes them durable (two
// fsyncs, each a journal commit).
Status WriteUnlessSame(Filesystem& fs, const std::string& path, const std::string& content,
                       const WriteOptions& options) {
  auto stat = fs.Stat(path);
  if (stat && stat->type == FileType::kRegular && stat->mode == options.mode &&
      stat->uid == options.uid.value_or(geteuid()) &&
      stat->gid == options.gid.value_or(getegid()) && stat->size == content.size()) {
    auto now = fs.ReadFile(path, content.size());
    if (now && *now == content) return {};
  }
  return fs.WriteFileAtomic(path, content, options);
}

// The directories the worker writes (its home, the mirror), owned by the worker's user.
Status PrepareWorkerDirs(const std::string& cache_dir, const std::string& known_hosts,
                         const passwd* user) {
  auto fs = RootedFilesystem::Open("/");
  if (!fs) return Fail(fs.error());
  const std::string home = WorkerHome(cache_dir);
  const std::optional<std::uint32_t> uid =
      user != nullptr ? std::optional<std::uint32_t>(user->pw_uid) : std::nullopt;
  const std::optional<std::uint32_t> gid =
      user != nullptr ? std::optional<std::uint32_t>(user->pw_gid) : std::nullopt;
  if (user != nullptr) {
    // The worker must get through the cache dir to its own directories, and see no more.
    auto stat = (*fs)->Stat(cache_dir);
    if (!stat) return Fail(stat.error());
    if (auto set = (*fs)->SetAttributes(cache_dir, stat->mode | 0111, std::nullopt, std::nullopt);
        !set) {
      return Fail(set.error());
    }
  }
  for (const std::string& dir : {home, home + "/.ssh", cache_dir + "/mirror.git"}) {
    auto made = (*fs)->CreateDirectory(dir, 0700);
    if (!made && !made.error().Is(std::errc::file_exists)) return Fail(made.error());
    if (user != nullptr) {
      // Inside a directory the worker's user owns, something else could be there instead
      // (a hard link to a root-only file, a symlink, swapped in at any moment): only a
      // real directory is chown'ed, through a descriptor opened as one.
      UniqueFd opened(open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
      if (!opened.valid()) {
        if (errno == ENOTDIR || errno == ELOOP) {
          return Fail(std::errc::not_a_directory,
                      "'" + dir + "' is not a directory; refusing to hand it to the git worker");
        }
        return FailErrno(errno, "open '" + dir + "'");
      }
      if (fchown(opened.get(), *uid, *gid) != 0 || fchmod(opened.get(), 0700) != 0) {
        return FailErrno(errno, "hand '" + dir + "' to the git worker");
      }
    }
  }
  WriteOptions options;
  options.mode = 0600;
  options.uid = uid;
  options.gid = gid;
  return WriteUnlessSame(**fs, home + "/.ssh/known_hosts", known_hosts, options);
}

}  // namespace

Result<std::unique_ptr<GitSource>> GitSource::Create(GitSourceOptions options) {
  if (!options.use_worker) {
    // Only the mirror is read: nothing of the worker is looked up or prepared.
    options.start_worker = false;
    std::unique_ptr<GitSource> source(new GitSource(std::move(options), nlohmann::json::object()));
    return source;
  }
  nlohmann::json credentials = nlohmann::json::object();
  // Secrets are read here, by tetherd, and reach the worker only in its requests.
  struct Secret {
    const std::optional<std::string>& path;
    const char* config_key;  // for messages: source.KEY
    const char* name;        // in the request's "credentials"
    bool trim;               // a token file's trailing newline is not part of the token
  };
  for (const Secret& secret :
       {Secret{options.source.token_file, "token_file", "token", true},
        Secret{options.source.ssh_key, "ssh_key", "ssh_key", false},
        Secret{options.source.known_hosts, "known_hosts", "known_hosts", false}}) {
    if (!secret.path) continue;
    auto content = ReadLocalFile(*secret.path, 1 << 20);
    if (!content) {
      return Fail(content.error().WithContext(std::string("source.") + secret.config_key));
    }
    while (secret.trim && !content->empty() &&
           (content->back() == '\n' || content->back() == '\r')) {
      content->pop_back();
    }
    credentials[secret.name] = std::move(*content);
  }
  const bool start_worker = options.start_worker;
  std::unique_ptr<GitSource> source(new GitSource(std::move(options), std::move(credentials)));
  if (start_worker) {
    auto worker = source->Worker();
    if (!worker) return Fail(worker.error());
    // A worker that cannot start says so at the first request, as it would have anyway.
    (void)(*worker)->Start();
  }
  return source;
}

Result<GitWorkerClient*> GitSource::Worker() {
  if (worker_) return &*worker_;
  worker_setup_failed_ = true;  // until it is ready
  GitSourceOptions& options = options_;
  std::vector<std::string> argv = options.worker_argv;
  if (!options.worker_user && geteuid() == 0 && getpwnam(kDefaultWorkerUser) != nullptr) {
    options.worker_user = kDefaultWorkerUser;
  }
  const passwd* user = nullptr;
  if (options.worker_user) {
    user = getpwnam(options.worker_user->c_str());
    if (user == nullptr) {
      return Fail(std::errc::invalid_argument,
                  "git worker user '" + *options.worker_user + "' does not exist");
    }
    argv.push_back("--git-worker-user");
    argv.push_back(*options.worker_user);
  }
  auto dirs =
      PrepareWorkerDirs(options.cache_dir, JsonFields(credentials_).StringOr("known_hosts"), user);
  if (!dirs) return Fail(dirs.error().WithContext("prepare the git worker's directories"));
  if (options.source.ca_file) {
    // A copy in the worker's home: the worker's user may not read the original.
    auto ca = ReadLocalFile(*options.source.ca_file, 4 << 20);
    if (!ca) return Fail(ca.error().WithContext("source.ca_file"));
    auto fs = RootedFilesystem::Open("/");
    if (!fs) return Fail(fs.error());
    WriteOptions write;
    write.mode = 0644;
    const std::string copy = WorkerHome(options.cache_dir) + "/ca.pem";
    if (auto written = WriteUnlessSame(**fs, copy, *ca, write); !written) {
      return Fail(written.error());
    }
    argv.push_back("--git-worker-ca-file");
    argv.push_back(copy);
  }
  worker_.emplace(std::move(argv), WorkerEnvironment(options.cache_dir));
  worker_setup_failed_ = false;
  return &*worker_;
}

GitSource::GitSource(GitSourceOptions options, nlohmann::json credentials)
    : options_(std::move(options)),
      credentials_(std::move(credentials)),
      mirror_(options_.cache_dir + "/mirror.git") {}

GitSource::~GitSource() = default;

namespace {

std::string HostOf(const std::string& url) {
  const auto start = url.find("://");
  if (start == std::string::npos) return "";
  std::string authority = url.substr(start + 3, url.find('/', start + 3) - start - 3);
  if (auto at = authority.rfind('@'); at != std::string::npos) authority.erase(0, at + 1);
  return authority;
}

}  // namespace

nlohmann::json GitSource::CredentialsFor(const std::string& url) const {
  nlohmann::json scoped = nlohmann::json::object();
  // The HTTPS token only over https://, and only to the host of source.url: never in clear
  // text, never to a mirror run by someone else.
  if (credentials_.contains("token") && url.rfind("https://", 0) == 0 &&
      HostOf(url) == HostOf(options_.source.url)) {
    scoped["token"] = credentials_["token"];
  }
  if (url.rfind("ssh://", 0) == 0) {
    for (const char* key : {"ssh_key", "known_hosts"}) {
      if (credentials_.contains(key)) scoped[key] = credentials_[key];
    }
  }
  return scoped;
}

std::vector<std::string> GitSource::urls() const {
  std::vector<std::string> urls = {options_.source.url};
  urls.insert(urls.end(), options_.source.mirrors.begin(), options_.source.mirrors.end());
  return urls;
}

Result<PollResult> GitSource::Poll() {
  if (!options_.use_worker) {
    return Fail(std::errc::operation_not_permitted,
                "this cycle reads the mirror only: it does not ask the source");
  }
  const auto all = urls();
  std::string failures;
  for (std::size_t i = 0; i < all.size(); ++i) {
    // A file:// source's ref is read here when it names a commit the mirror has: a poll
    // that finds nothing new starts no worker.
    if (auto local = ReadLocalRef(all[i], options_.source.ref); local && HasCommit(*local)) {
      return PollResult{*local, i};
    }
    nlohmann::json request = {{"op", "ls"}, {"url", all[i]}, {"ref", options_.source.ref}};
    if (auto scoped = CredentialsFor(all[i]); !scoped.empty()) request["credentials"] = scoped;
    auto worker = Worker();
    if (!worker) return Fail(worker.error());
    auto answer = (*worker)->Call(request, options_.source.timeout);
    std::string error;
    if (!answer) {
      error = answer.error().message();
    } else if (!JsonFields(*answer).BoolOr("ok", false)) {
      error = JsonFields(*answer).StringOr("error", "unknown error");
    } else {
      return PollResult{JsonFields(*answer).StringOr("commit"), i};
    }
    failures += (failures.empty() ? "" : "; ") + std::string("'") + all[i] + "': " + error;
  }
  return Fail(std::errc::host_unreachable, "poll " + failures);
}

Result<UpdateResult> GitSource::Update() {
  if (options_.source.pin && HasCommit(*options_.source.pin)) {
    return UpdateResult{*options_.source.pin, false, 0};
  }
  auto polled = Poll();
  if (!polled) return Fail(polled.error());
  UpdateResult result{polled->commit, false, polled->source};
  if (!HasCommit(polled->commit)) {
    RemoveStaleLocks();
    nlohmann::json request = {{"op", "fetch"},
                              {"url", urls()[polled->source]},
                              {"ref", options_.source.ref},
                              {"mirror", mirror_},
                              {"max_fetch", options_.source.max_fetch}};
    if (auto scoped = CredentialsFor(urls()[polled->source]); !scoped.empty()) {
      request["credentials"] = scoped;
    }
    auto worker = Worker();
    if (!worker) return Fail(worker.error());
    auto answer = (*worker)->Call(request, options_.source.timeout);
    if (!answer) return Fail(answer.error().WithContext("fetch '" + urls()[polled->source] + "'"));
    const JsonFields fields(*answer);
    if (!fields.BoolOr("ok", false)) {
      return Fail(std::errc::io_error, fields.StringOr("error", "fetch failed"));
    }
    ++fetch_count_;
    if (auto repack = fields.StringOr("repack_error"); !repack.empty()) {
      GetLogger("source")->warn("the mirror's packs were not repacked: {}", repack);
    }
    result.fetched = true;
    result.commit = fields.StringOr("commit", polled->commit);
  }
  if (options_.source.pin) {
    if (!HasCommit(*options_.source.pin)) {
      return Fail(std::errc::no_such_file_or_directory, "pinned commit " + *options_.source.pin +
                                                            " is not in the history of '" +
                                                            options_.source.ref + "'");
    }
    result.commit = *options_.source.pin;
  }
  return result;
}

void GitSource::RemoveStaleLocks() {
  // Only our worker writes the mirror, and it is idle between requests: a lock file now
  // is one a worker killed at its deadline left, and would fail every later fetch.
  auto fs = RootedFilesystem::Open("/");
  if (!fs) return;
  for (const char* name : {"config.lock", "packed-refs.lock", "HEAD.lock", "FETCH_HEAD.lock",
                           "shallow.lock", "refs/tether/fetched.lock"}) {
    (void)(*fs)->Remove(mirror_ + "/" + name);
  }
}

Result<ObjectStore*> GitSource::Objects() {
  if (objects_ == nullptr) {
    auto store = ObjectStore::Open(mirror_ + "/objects");
    if (!store) return Fail(store.error().WithContext("open mirror '" + mirror_ + "'"));
    objects_ = std::move(*store);
  }
  return objects_.get();
}

bool GitSource::HasCommit(const std::string& commit) {
  auto objects = Objects();
  auto id = ParseCommitId(commit);
  if (!objects || !id) return false;
  auto header = (*objects)->Header(*id);
  return header && header->type == ObjectType::kCommit;
}

Result<std::string> GitSource::ReadCommit(const std::string& commit) {
  auto objects = Objects();
  if (!objects) return Fail(objects.error());
  auto id = ParseCommitId(commit);
  if (!id) return Fail(id.error());
  auto object = (*objects)->Read(*id, kMaxCommitSize);
  if (!object) {
    if (object.error().Is(std::errc::no_such_file_or_directory)) {
      return Fail(std::errc::no_such_file_or_directory,
                  "commit " + commit + " is not in the mirror");
    }
    return Fail(object.error().WithContext("read commit " + commit));
  }
  if (object->type != ObjectType::kCommit) {
    return Fail(std::errc::no_such_file_or_directory, "commit " + commit + " is not in the mirror");
  }
  return std::move(object->data);
}

Result<bool> GitSource::Descends(const std::string& commit, const std::string& ancestor) {
  if (commit == ancestor) return true;
  auto objects = Objects();
  if (!objects) return Fail(objects.error());
  auto from = ParseCommitId(commit);
  auto to = ParseCommitId(ancestor);
  if (!from) return Fail(from.error());
  if (!to) return Fail(to.error());
  // Every commit `commit` reaches, nearest first, until `ancestor` is one of them.
  std::deque<ObjectId> next = {*from};
  std::set<ObjectId> seen = {*from};
  while (!next.empty()) {
    const ObjectId id = next.front();
    next.pop_front();
    auto object = (*objects)->Read(id, kMaxCommitSize);
    if (!object || object->type != ObjectType::kCommit) {
      return Fail(std::errc::io_error, "compare history: commit " + ContentIdHex(id) + ": " +
                                           (object ? "not a commit" : object.error().message()));
    }
    for (const auto& parent : LinksOf(object->data).parents) {
      if (parent == *to) return true;
      if (seen.insert(parent).second) next.push_back(parent);
    }
  }
  return false;
}

Result<std::unique_ptr<Tree>> GitSource::OpenTree(const std::string& commit) {
  auto raw = ReadCommit(commit);
  if (!raw) return Fail(raw.error());
  const auto tree_id = LinksOf(*raw).tree;
  if (!tree_id) {
    return Fail(std::errc::io_error, "read tree of " + commit + ": the commit names no tree");
  }
  auto root = CommitTree::Load(**Objects(), *tree_id, "the tree of " + commit);
  if (!root) return Fail(root.error());
  return std::unique_ptr<Tree>(new CommitTree(**Objects(), std::move(*root)));
}

}  // namespace tether
