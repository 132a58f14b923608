#include "agent/git/git_source.hpp"

#include <fcntl.h>
#include <git2.h>
#include <pwd.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <functional>
#include <mutex>
#include <unordered_map>

#include "agent/git/libgit2_start.hpp"
#include "agent/git/local_ref.hpp"
#include "common/filesystem.hpp"
#include "common/json_fields.hpp"
#include "common/log.hpp"
#include "common/process.hpp"
#include "common/unique_fd.hpp"

namespace tether {

namespace {

std::string GitErrorText() {
  const git_error* error = git_error_last();
  return error != nullptr ? error->message : "unknown libgit2 error";
}

void InitLibgit2Once() {
  static std::once_flag once;
  std::call_once(once, [] {
    // Local reads only in this process (the git worker fetches): no TLS, no SSH. Never
    // shut down.
    StartLibgit2WithoutTransports();
    git_libgit2_opts(GIT_OPT_SET_MWINDOW_FILE_LIMIT, 64);
    // Packs are read through small windows, few of them mapped at a time: a render reads
    // the header of every source blob, which would otherwise keep the whole pack in the
    // process's memory (its pages count in RSS).
    git_libgit2_opts(GIT_OPT_SET_MWINDOW_SIZE, static_cast<std::size_t>(512 << 10));
    git_libgit2_opts(GIT_OPT_SET_MWINDOW_MAPPED_LIMIT, static_cast<std::size_t>(2 << 20));
    // The mirror belongs to the git worker's user; it is ours to read all the same.
    git_libgit2_opts(GIT_OPT_SET_OWNER_VALIDATION, 0);
  });
}

bool IsCommitId(std::string_view text) {
  return text.size() == 40 && text.find_first_not_of("0123456789abcdef") == std::string::npos;
}

Result<git_oid> ParseOid(const std::string& commit) {
  git_oid oid;
  if (!IsCommitId(commit) || git_oid_fromstr(&oid, commit.c_str()) != 0) {
    return Fail(std::errc::invalid_argument, "'" + commit + "' is not a commit id");
  }
  return oid;
}

// A commit's tree in the mirror. Each directory's tree is read and parsed once and kept
// while this object lives, so looking up many paths costs one binary search each in their
// directory, not a walk from the root through trees libgit2 would parse again (it caches
// no tree over 4 KiB: a folder of thousands of sources made each lookup cost the folder).
class CommitTree final : public Tree {
 public:
  CommitTree(git_repository* repo, git_tree* tree) : repo_(repo), tree_(tree) {}
  ~CommitTree() override {
    for (auto& [dir, tree] : trees_) git_tree_free(tree);
    git_tree_free(tree_);
    git_odb_free(odb_);
  }
  CommitTree(const CommitTree&) = delete;
  CommitTree& operator=(const CommitTree&) = delete;

  Result<TreeEntryType> Type(std::string_view path) override {
    auto entry = Entry(path);
    if (!entry) return Fail(entry.error());
    const git_filemode_t mode = git_tree_entry_filemode(*entry);
    if (mode == GIT_FILEMODE_TREE) return TreeEntryType::kDirectory;
    if (mode == GIT_FILEMODE_LINK) return TreeEntryType::kSymlink;
    if (mode == GIT_FILEMODE_BLOB || mode == GIT_FILEMODE_BLOB_EXECUTABLE) {
      return TreeEntryType::kFile;
    }
    return TreeEntryType::kOther;
  }

  Result<std::string> ReadFile(std::string_view path, std::size_t max_size) override {
    auto entry = Entry(path);
    if (!entry) return Fail(entry.error());
    return ReadBlob(path, *entry, max_size);
  }

  Result<std::string> ReadSymlink(std::string_view path) override {
    auto entry = Entry(path);
    if (!entry) return Fail(entry.error());
    return ReadBlob(path, *entry, 4096);
  }

  // The blob id is in the tree entry; the size is in the object's header, which for a
  // packed object costs a few bytes of inflate, not the whole content.
  Result<std::optional<TreeBlob>> Blob(std::string_view path) override {
    auto entry = Entry(path);
    if (!entry) return Fail(entry.error());
    if (git_tree_entry_type(*entry) != GIT_OBJECT_BLOB) return NotAFile(path);
    if (odb_ == nullptr && git_repository_odb(&odb_, repo_) != 0) {
      return Fail(std::errc::io_error, "open the object database: " + GitErrorText());
    }
    const git_oid* oid = git_tree_entry_id(*entry);
    std::size_t size = 0;
    git_object_t type = GIT_OBJECT_INVALID;
    if (git_odb_read_header(&size, &type, odb_, oid) != 0) {
      return Fail(std::errc::io_error, "read '" + std::string(path) + "': " + GitErrorText());
    }
    TreeBlob blob;
    std::copy(std::begin(oid->id), std::end(oid->id), blob.id.begin());
    blob.size = size;
    return blob;
  }

  Result<std::string> ReadBlob(std::string_view path, const ContentId& id,
                               std::size_t max_size) override {
    static_assert(std::tuple_size_v<ContentId> == GIT_OID_RAWSZ);
    git_oid oid{};
    git_oid_fromraw(&oid, id.data());
    git_blob* blob = nullptr;
    if (git_blob_lookup(&blob, repo_, &oid) != 0) {
      return Fail(std::errc::io_error, "read '" + std::string(path) + "': " + GitErrorText());
    }
    return TakeContent(path, blob, max_size);
  }

  Result<std::vector<std::string>> List(std::string_view path) override {
    auto tree = Directory(path);
    if (!tree) return Fail(tree.error());
    std::vector<std::string> names;
    names.reserve(git_tree_entrycount(*tree));
    for (size_t i = 0; i < git_tree_entrycount(*tree); ++i) {
      names.emplace_back(git_tree_entry_name(git_tree_entry_byindex(*tree, i)));
    }
    std::sort(names.begin(), names.end());
    return names;
  }

 private:
  static tl::unexpected<Error> NotAFile(std::string_view path) {
    return Fail(std::errc::invalid_argument, "'" + std::string(path) + "' is not a file");
  }
  static tl::unexpected<Error> NoSuchFile(std::string_view path) {
    return Fail(std::errc::no_such_file_or_directory,
                "'" + std::string(path) + "': no such file in the commit");
  }

  // The tree of directory `dir` ("" for the top), read once.
  Result<const git_tree*> Directory(std::string_view dir) {
    if (dir.empty()) return tree_;
    if (auto known = trees_.find(dir); known != trees_.end()) return known->second;
    const auto slash = dir.rfind('/');
    auto parent = Directory(slash == std::string_view::npos ? "" : dir.substr(0, slash));
    if (!parent) return Fail(parent.error());
    const std::string name(slash == std::string_view::npos ? dir : dir.substr(slash + 1));
    const git_tree_entry* entry = git_tree_entry_byname(*parent, name.c_str());
    if (entry == nullptr) return NoSuchFile(dir);
    git_tree* tree = nullptr;
    if (git_tree_entry_type(entry) != GIT_OBJECT_TREE ||
        git_tree_lookup(&tree, repo_, git_tree_entry_id(entry)) != 0) {
      return Fail(std::errc::not_a_directory, "'" + std::string(dir) + "' is not a directory");
    }
    trees_.emplace(std::string(dir), tree);
    return tree;
  }

  // The entry of `path`, owned by its directory's tree.
  Result<const git_tree_entry*> Entry(std::string_view path) {
    const auto slash = path.rfind('/');
    auto dir = Directory(slash == std::string_view::npos ? "" : path.substr(0, slash));
    if (!dir) return NoSuchFile(path);
    const std::string name(slash == std::string_view::npos ? path : path.substr(slash + 1));
    const git_tree_entry* entry =
        name.empty() ? nullptr : git_tree_entry_byname(*dir, name.c_str());
    if (entry == nullptr) return NoSuchFile(path);
    return entry;
  }

  Result<std::string> ReadBlob(std::string_view path, const git_tree_entry* entry,
                               std::size_t max_size) {
    if (git_tree_entry_type(entry) != GIT_OBJECT_BLOB) return NotAFile(path);
    git_blob* blob = nullptr;
    if (git_blob_lookup(&blob, repo_, git_tree_entry_id(entry)) != 0) {
      return Fail(std::errc::io_error, "read '" + std::string(path) + "': " + GitErrorText());
    }
    return TakeContent(path, blob, max_size);
  }

  // The content of `blob`, which it frees.
  static Result<std::string> TakeContent(std::string_view path, git_blob* blob,
                                         std::size_t max_size) {
    const auto size = static_cast<std::size_t>(git_blob_rawsize(blob));
    if (size > max_size) {
      git_blob_free(blob);
      return Fail(std::errc::file_too_large, "'" + std::string(path) + "' is larger than " +
                                                 std::to_string(max_size) + " bytes");
    }
    std::string content(static_cast<const char*>(git_blob_rawcontent(blob)), size);
    git_blob_free(blob);
    return content;
  }

  // Transparent lookup by string_view.
  struct Hash {
    using is_transparent = void;
    std::size_t operator()(std::string_view text) const {
      return std::hash<std::string_view>()(text);
    }
  };

  git_repository* repo_;
  git_tree* tree_;
  git_odb* odb_ = nullptr;  // opened by the first Blob
  std::unordered_map<std::string, git_tree*, Hash, std::equal_to<>> trees_;  // dir -> its tree
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

void PrepareLibgit2() { InitLibgit2Once(); }

Result<std::unique_ptr<GitSource>> GitSource::Create(GitSourceOptions options) {
  if (!options.use_worker) {
    // Only the mirror is read: nothing of the worker is looked up or prepared.
    options.start_worker = false;
    std::unique_ptr<GitSource> source(new GitSource(std::move(options), nlohmann::json::object()));
    InitLibgit2Once();
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
    options.worker_argv.push_back("--git-worker-user");
    options.worker_argv.push_back(*options.worker_user);
  }
  auto dirs =
      PrepareWorkerDirs(options.cache_dir, JsonFields(credentials).StringOr("known_hosts"), user);
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
    options.worker_argv.push_back("--git-worker-ca-file");
    options.worker_argv.push_back(copy);
  }
  const bool start_worker = options.start_worker;
  std::unique_ptr<GitSource> source(new GitSource(std::move(options), std::move(credentials)));
  // A worker that cannot start says so at the first request, as it would have anyway.
  if (start_worker) (void)source->worker_.Start();
  InitLibgit2Once();
  return source;
}

GitSource::GitSource(GitSourceOptions options, nlohmann::json credentials)
    : options_(std::move(options)),
      credentials_(std::move(credentials)),
      worker_(options_.worker_argv, WorkerEnvironment(options_.cache_dir)),
      mirror_(options_.cache_dir + "/mirror.git") {}

GitSource::~GitSource() {
  if (repo_ != nullptr) git_repository_free(repo_);
}

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
    auto answer = worker_.Call(request, options_.source.timeout);
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
    auto answer = worker_.Call(request, options_.source.timeout);
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

Result<git_repository*> GitSource::Repository() {
  if (repo_ == nullptr) {
    if (git_repository_open_bare(&repo_, mirror_.c_str()) != 0) {
      repo_ = nullptr;
      return Fail(std::errc::no_such_file_or_directory,
                  "open mirror '" + mirror_ + "': " + GitErrorText());
    }
  } else {
    // Packs written by the worker since we opened it become visible.
    git_odb* odb = nullptr;
    if (git_repository_odb(&odb, repo_) == 0) {
      git_odb_refresh(odb);
      git_odb_free(odb);
    }
  }
  return repo_;
}

bool GitSource::HasCommit(const std::string& commit) {
  auto repo = Repository();
  auto oid = ParseOid(commit);
  if (!repo || !oid) return false;
  git_commit* found = nullptr;
  if (git_commit_lookup(&found, *repo, &*oid) != 0) return false;
  git_commit_free(found);
  return true;
}

Result<std::string> GitSource::ReadCommit(const std::string& commit) {
  auto repo = Repository();
  if (!repo) return Fail(repo.error());
  auto oid = ParseOid(commit);
  if (!oid) return Fail(oid.error());
  git_odb* odb = nullptr;
  if (git_repository_odb(&odb, *repo) != 0) return Fail(std::errc::io_error, GitErrorText());
  git_odb_object* object = nullptr;
  const int rc = git_odb_read(&object, odb, &*oid);
  git_odb_free(odb);
  if (rc != 0 || git_odb_object_type(object) != GIT_OBJECT_COMMIT) {
    if (object != nullptr) git_odb_object_free(object);
    return Fail(std::errc::no_such_file_or_directory, "commit " + commit + " is not in the mirror");
  }
  std::string raw(static_cast<const char*>(git_odb_object_data(object)),
                  git_odb_object_size(object));
  git_odb_object_free(object);
  return raw;
}

Result<std::optional<std::pair<std::string, std::string>>> GitSource::CommitSignature(
    const std::string& commit) {
  auto repo = Repository();
  if (!repo) return Fail(repo.error());
  auto oid = ParseOid(commit);
  if (!oid) return Fail(oid.error());
  git_buf signature = GIT_BUF_INIT;
  git_buf payload = GIT_BUF_INIT;
  const int rc = git_commit_extract_signature(&signature, &payload, *repo, &*oid, nullptr);
  if (rc == GIT_ENOTFOUND) {
    git_buf_dispose(&signature);
    git_buf_dispose(&payload);
    return std::optional<std::pair<std::string, std::string>>();
  }
  if (rc != 0)
    return Fail(std::errc::io_error, "read signature of " + commit + ": " + GitErrorText());
  std::pair<std::string, std::string> result(std::string(payload.ptr, payload.size),
                                             std::string(signature.ptr, signature.size));
  git_buf_dispose(&signature);
  git_buf_dispose(&payload);
  return std::optional(std::move(result));
}

Result<bool> GitSource::Descends(const std::string& commit, const std::string& ancestor) {
  if (commit == ancestor) return true;
  auto repo = Repository();
  if (!repo) return Fail(repo.error());
  auto a = ParseOid(commit);
  auto b = ParseOid(ancestor);
  if (!a) return Fail(a.error());
  if (!b) return Fail(b.error());
  const int rc = git_graph_descendant_of(*repo, &*a, &*b);
  if (rc < 0) return Fail(std::errc::io_error, "compare history: " + GitErrorText());
  return rc == 1;
}

Result<std::unique_ptr<Tree>> GitSource::OpenTree(const std::string& commit) {
  auto repo = Repository();
  if (!repo) return Fail(repo.error());
  auto oid = ParseOid(commit);
  if (!oid) return Fail(oid.error());
  git_commit* found = nullptr;
  if (git_commit_lookup(&found, *repo, &*oid) != 0) {
    return Fail(std::errc::no_such_file_or_directory, "commit " + commit + " is not in the mirror");
  }
  git_tree* tree = nullptr;
  const int rc = git_commit_tree(&tree, found);
  git_commit_free(found);
  if (rc != 0) return Fail(std::errc::io_error, "read tree of " + commit + ": " + GitErrorText());
  return std::unique_ptr<Tree>(new CommitTree(*repo, tree));
}

}  // namespace tether
