#include "agent/git/git_worker.hpp"

#include <dirent.h>
#include <git2.h>
#include <signal.h>
#include <strings.h>
#include <unistd.h>

#include <fcntl.h>

#include <cctype>
#include <cstdio>
#include <cstring>
#include <iostream>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "agent/git/known_hosts.hpp"
#include "agent/git/libgit2_start.hpp"
#include "agent/git/local_fetch.hpp"
#include "common/privileges.hpp"

namespace tether {

namespace {

using Json = nlohmann::json;

struct Credentials {
  std::optional<std::string> token;
  std::optional<std::string> ssh_key;
  std::optional<std::string> known_hosts;
};

// What the callbacks need; also where they leave a better message than libgit2's.
struct CallbackState {
  const Credentials* credentials = nullptr;
  std::string host;
  int port = 0;
  int credential_attempts = 0;
  std::string failure;
  std::uint64_t max_fetch = 0;  // bytes a fetch may bring; 0: no bound
};

// Stops a fetch that brings more than it may (returning non-zero makes libgit2 abort).
int TransferProgress(const git_indexer_progress* progress, void* payload) {
  auto* state = static_cast<CallbackState*>(payload);
  if (state->max_fetch == 0 || progress->received_bytes <= state->max_fetch) return 0;
  state->failure = "the server sent more than source.max_fetch (" +
                   std::to_string(state->max_fetch) + " bytes); stopped";
  return -1;
}

// Removes what a fetch that did not finish left in `mirror`: libgit2 writes an incoming
// pack to objects/pack/pack_git2_* (a file:// fetch, to tmp_pack_* and tmp_idx_*) and
// renames it only when the fetch completes, so a fetch stopped, failed or killed (at
// source.timeout) leaves its temporary files.
void RemovePartialPacks(const std::string& mirror) {
  const std::string packs = mirror + "/objects/pack";
  DIR* dir = opendir(packs.c_str());
  if (dir == nullptr) return;
  while (const dirent* entry = readdir(dir)) {
    const std::string_view name = entry->d_name;
    if (name.starts_with("pack_git2_") || name.starts_with("tmp_pack_") ||
        name.starts_with("tmp_idx_")) {
      unlinkat(dirfd(dir), entry->d_name, 0);
    }
  }
  closedir(dir);
}

std::string LastGitError(const char* what) {
  const git_error* error = git_error_last();
  return std::string(what) + ": " + (error != nullptr ? error->message : "unknown error");
}

// The path of a file:// URL (the agent's configuration allows no host in one), or nullopt
// for any other URL, and for one with %-escapes, which libgit2's transport decodes.
std::optional<std::string> LocalPath(const std::string& url) {
  if (url.compare(0, 8, "file:///") != 0 || url.find('%') != std::string::npos) return {};
  return url.substr(7);
}

// Each fetch adds a pack to the mirror; past this many, the fetch repacks them into one.
constexpr std::size_t kMaxPacks = 32;

// The names of the packs (pack-*.pack) in `mirror`.
std::vector<std::string> Packs(const std::string& mirror) {
  std::vector<std::string> names;
  DIR* dir = opendir((mirror + "/objects/pack").c_str());
  if (dir == nullptr) return names;
  while (const dirent* entry = readdir(dir)) {
    const std::string_view name = entry->d_name;
    if (name.starts_with("pack-") && name.ends_with(".pack")) names.emplace_back(name);
  }
  closedir(dir);
  return names;
}

bool SyncPath(const std::string& path, int flags) {
  const int fd = open(path.c_str(), flags | O_RDONLY | O_CLOEXEC);
  if (fd < 0) return false;
  const bool synced = fsync(fd) == 0;
  close(fd);
  return synced;
}

// Packs every object of `repo` (at `mirror`) into one new pack, made durable, then
// removes the other packs and the loose objects. Nothing is pruned: an object no ref
// reaches may be the applied commit, which the agent enforces from the mirror. False,
// with `error`, when the new pack could not be made (the mirror is then as it was).
bool Repack(git_repository* repo, const std::string& mirror, std::string& error) {
  const std::vector<std::string> before = Packs(mirror);
  git_odb* odb = nullptr;
  git_packbuilder* builder = nullptr;
  auto done = [&](bool ok) {
    if (!ok && error.empty()) error = LastGitError("repack");
    git_packbuilder_free(builder);
    git_odb_free(odb);
    return ok;
  };
  if (git_repository_odb(&odb, repo) != 0 || git_packbuilder_new(&builder, repo) != 0) {
    return done(false);
  }
  git_packbuilder_set_threads(builder, 1);
  if (git_odb_foreach(
          odb,
          [](const git_oid* id, void* payload) {
            return git_packbuilder_insert(static_cast<git_packbuilder*>(payload), id, nullptr);
          },
          builder) != 0) {
    return done(false);
  }
  const std::string packs = mirror + "/objects/pack";
  if (git_packbuilder_write(builder, packs.c_str(), 0, nullptr, nullptr) != 0) return done(false);
  const std::string made = std::string("pack-") + git_packbuilder_name(builder);
  // Durable before anything else goes: the new pack holds every object from now on.
  if (!SyncPath(packs + "/" + made + ".pack", 0) || !SyncPath(packs + "/" + made + ".idx", 0) ||
      !SyncPath(packs, O_DIRECTORY)) {
    error = "repack: sync the new pack: " + std::string(std::strerror(errno));
    return done(false);
  }
  for (const auto& pack : before) {
    const std::string stem = pack.substr(0, pack.size() - 5);
    if (stem == made) continue;
    for (const char* ext : {".idx", ".rev", ".pack"}) unlink((packs + "/" + stem + ext).c_str());
  }
  // The loose objects: objects/XX/ for two hex digits.
  const std::string objects = mirror + "/objects";
  if (DIR* dir = opendir(objects.c_str())) {
    while (const dirent* entry = readdir(dir)) {
      const std::string_view name = entry->d_name;
      if (name.size() != 2 || !std::isxdigit(static_cast<unsigned char>(name[0])) ||
          !std::isxdigit(static_cast<unsigned char>(name[1]))) {
        continue;
      }
      const std::string sub = objects + "/" + std::string(name);
      if (DIR* loose = opendir(sub.c_str())) {
        while (const dirent* object = readdir(loose)) {
          if (object->d_name[0] != '.') unlinkat(dirfd(loose), object->d_name, 0);
        }
        closedir(loose);
      }
      rmdir(sub.c_str());
    }
    closedir(dir);
  }
  return done(true);
}

// Host and port of an ssh:// or other URL, for known_hosts.
void ParseHostPort(const std::string& url, std::string& host, int& port) {
  const auto scheme_end = url.find("://");
  std::string authority =
      url.substr(scheme_end + 3, url.find('/', scheme_end + 3) - scheme_end - 3);
  if (auto at = authority.rfind('@'); at != std::string::npos) authority.erase(0, at + 1);
  port = 22;
  if (!authority.empty() && authority.front() == '[') {
    const auto close = authority.find(']');
    host = authority.substr(1, close - 1);
    if (close + 1 < authority.size() && authority[close + 1] == ':') {
      port = std::atoi(authority.c_str() + close + 2);
    }
  } else if (auto colon = authority.rfind(':'); colon != std::string::npos) {
    host = authority.substr(0, colon);
    port = std::atoi(authority.c_str() + colon + 1);
  } else {
    host = authority;
  }
}

int CertificateCheck(git_cert* cert, int valid, const char* host, void* payload) {
  auto* state = static_cast<CallbackState*>(payload);
  if (cert->cert_type != GIT_CERT_HOSTKEY_LIBSSH2) {
    // TLS: libgit2 verified the chain and the name; accept only what it accepted.
    if (valid) return 0;
    state->failure = std::string("the TLS certificate of '") + host + "' is not trusted";
    return GIT_ECERTIFICATE;
  }
  auto* hostkey = reinterpret_cast<git_cert_hostkey*>(cert);
  if ((hostkey->type & GIT_CERT_SSH_RAW) == 0 || state->credentials->known_hosts == std::nullopt) {
    state->failure = "no known_hosts to check the SSH host key of '" + state->host + "' against";
    return GIT_ECERTIFICATE;
  }
  const std::string_view blob(hostkey->hostkey, hostkey->hostkey_len);
  switch (MatchKnownHost(*state->credentials->known_hosts, state->host, state->port, blob)) {
    case HostKeyMatch::kTrusted:
      return 0;
    case HostKeyMatch::kMismatch:
      state->failure = "the SSH host key of '" + state->host + "' port " +
                       std::to_string(state->port) +
                       " does not match known_hosts (it changed: refusing to connect)";
      return GIT_ECERTIFICATE;
    case HostKeyMatch::kRevoked:
      state->failure = "the SSH host key of '" + state->host + "' is revoked in known_hosts";
      return GIT_ECERTIFICATE;
    case HostKeyMatch::kUnknown:
      break;
  }
  state->failure = "the SSH host key of '" + state->host + "' port " + std::to_string(state->port) +
                   " is not in known_hosts";
  return GIT_ECERTIFICATE;
}

int AcquireCredential(git_credential** out, const char* /*url*/, const char* username_from_url,
                      unsigned int allowed_types, void* payload) {
  auto* state = static_cast<CallbackState*>(payload);
  const Credentials& credentials = *state->credentials;
  if (++state->credential_attempts > 1) {
    state->failure = "the server refused the credentials";
    return GIT_EAUTH;
  }
  if ((allowed_types & GIT_CREDENTIAL_SSH_MEMORY) != 0 && credentials.ssh_key) {
    const char* user = username_from_url != nullptr ? username_from_url : "git";
    return git_credential_ssh_key_memory_new(out, user, nullptr, credentials.ssh_key->c_str(),
                                             nullptr);
  }
  if ((allowed_types & GIT_CREDENTIAL_USERPASS_PLAINTEXT) != 0 && credentials.token) {
    const auto colon = credentials.token->find(':');
    if (colon != std::string::npos) {
      return git_credential_userpass_plaintext_new(out, credentials.token->substr(0, colon).c_str(),
                                                   credentials.token->substr(colon + 1).c_str());
    }
    state->failure = "the server refused the bearer token";
    return GIT_EAUTH;
  }
  state->failure = "the server asks for credentials and none are configured";
  return GIT_EAUTH;
}

class Worker {
 public:
  explicit Worker(std::string ca_file) : ca_file_(std::move(ca_file)) {}
  ~Worker() {
    for (auto& [url, remote] : detached_) git_remote_free(remote);
    for (auto& [key, remote] : anonymous_) git_remote_free(remote);
    for (auto& [path, repo] : repos_) git_repository_free(repo);
  }

  Json Handle(const Json& request) {
    const std::string op = request.value("op", "");
    const std::string url = request.value("url", "");
    const std::string ref = request.value("ref", "");
    Credentials credentials;
    if (request.contains("credentials")) {
      const Json& c = request["credentials"];
      if (c.contains("token")) credentials.token = c["token"].get<std::string>();
      if (c.contains("ssh_key")) credentials.ssh_key = c["ssh_key"].get<std::string>();
      if (c.contains("known_hosts")) credentials.known_hosts = c["known_hosts"].get<std::string>();
    }
    CallbackState state;
    state.credentials = &credentials;
    ParseHostPort(url, state.host, state.port);
    git_remote_callbacks callbacks{};
    git_remote_init_callbacks(&callbacks, GIT_REMOTE_CALLBACKS_VERSION);
    callbacks.certificate_check = CertificateCheck;
    callbacks.credentials = AcquireCredential;
    callbacks.payload = &state;
    std::string header;
    std::vector<char*> header_list;
    if (credentials.token && credentials.token->find(':') == std::string::npos &&
        url.compare(0, 4, "http") == 0) {
      header = "Authorization: Bearer " + *credentials.token;
      header_list.push_back(header.data());
    }
    git_strarray headers = {header_list.data(), header_list.size()};

    auto fail = [&](const char* what) {
      return Json{{"ok", false},
                  {"error", state.failure.empty() ? LastGitError(what)
                                                  : std::string(what) + ": " + state.failure}};
    };
    // The CAs are read when a source first needs them (redirects are never followed).
    if (strncasecmp(url.c_str(), "https:", 6) == 0 && !LoadTlsTrust(ca_file_)) {
      return fail("read the TLS certificate authorities");
    }
    if (op == "ls") {
      git_remote* remote = Detached(url);
      if (remote == nullptr) return fail("open remote");
      git_remote_connect_options connect{};
      git_remote_connect_options_init(&connect, GIT_REMOTE_CONNECT_OPTIONS_VERSION);
      connect.callbacks = callbacks;
      connect.custom_headers = headers;
      connect.follow_redirects = GIT_REMOTE_REDIRECT_NONE;  // credentials go nowhere else
      if (git_remote_connect_ext(remote, GIT_DIRECTION_FETCH, &connect) != 0) {
        return fail("connect");
      }
      const git_remote_head** heads = nullptr;
      size_t count = 0;
      std::optional<std::string> commit;
      if (git_remote_ls(&heads, &count, remote) != 0) {
        git_remote_disconnect(remote);
        return fail("list refs");
      }
      char hex[GIT_OID_HEXSZ + 1] = {};
      const std::string peeled = ref + "^{}";
      for (size_t i = 0; i < count; ++i) {
        const std::string name = heads[i]->name;
        if (name == ref && !commit) {
          commit = git_oid_tostr(hex, sizeof(hex), &heads[i]->oid);
        } else if (name == peeled) {
          commit = git_oid_tostr(hex, sizeof(hex), &heads[i]->oid);  // an annotated tag's commit
        }
      }
      git_remote_disconnect(remote);
      if (!commit)
        return Json{{"ok", false}, {"error", "ref '" + ref + "' not found on the server"}};
      return Json{{"ok", true}, {"commit", *commit}};
    }
    if (op == "fetch") {
      const std::string mirror = request.value("mirror", "");
      // Only this worker writes the mirror, one fetch at a time: any partial pack there is
      // a former fetch's.
      RemovePartialPacks(mirror);
      state.max_fetch = request.value("max_fetch", std::uint64_t{0});
      callbacks.transfer_progress = TransferProgress;
      git_repository* repo = Repository(mirror);
      if (repo == nullptr) return fail("open mirror");
      if (const auto path = LocalPath(url)) {
        // A repository on this machine: its objects are copied, not served (local_fetch.hpp).
        std::string error;
        if (!FetchLocal(repo, *path, ref, state.max_fetch, error)) {
          RemovePartialPacks(mirror);
          return Json{{"ok", false}, {"error", error}};
        }
        return Fetched(repo, mirror, fail);
      }
      git_remote* remote = Anonymous(repo, mirror, url);
      if (remote == nullptr) return fail("open remote");
      const std::string refspec = "+" + ref + ":refs/tether/fetched";
      char* specs[] = {const_cast<char*>(refspec.c_str())};
      git_strarray refspecs = {specs, 1};
      git_fetch_options options{};
      git_fetch_options_init(&options, GIT_FETCH_OPTIONS_VERSION);
      options.callbacks = callbacks;
      options.custom_headers = headers;
      options.download_tags = GIT_REMOTE_DOWNLOAD_TAGS_NONE;
      options.update_fetchhead = 0;
      options.follow_redirects = GIT_REMOTE_REDIRECT_NONE;
      options.prune = GIT_FETCH_NO_PRUNE;
      if (git_remote_fetch(remote, &refspecs, &options, nullptr) != 0) {
        auto failed = fail("fetch");
        RemovePartialPacks(mirror);
        return failed;
      }
      return Fetched(repo, mirror, fail);
    }
    return Json{{"ok", false}, {"error", "unknown request '" + op + "'"}};
  }

 private:
  // The answer to a fetch that brought refs/tether/fetched: the commit it names. Repacks
  // the mirror when it has gathered too many packs.
  template <typename Fail>
  Json Fetched(git_repository* repo, const std::string& mirror, const Fail& fail) {
    git_object* object = nullptr;
    if (git_revparse_single(&object, repo, "refs/tether/fetched^{commit}") != 0) {
      return fail("resolve the fetched ref");
    }
    char hex[GIT_OID_HEXSZ + 1] = {};
    git_oid_tostr(hex, sizeof(hex), git_object_id(object));
    git_object_free(object);
    Json answer = {{"ok", true}, {"commit", std::string(hex)}};
    if (Packs(mirror).size() > kMaxPacks) {
      std::string error;
      if (Repack(repo, mirror, error)) {
        answer["repacked"] = true;
      } else {
        answer["repack_error"] = error;  // the fetch stands; tried again at the next one
      }
      Forget(mirror);  // its packs changed under the handles kept
    }
    return answer;
  }

  git_remote* Detached(const std::string& url) {
    auto it = detached_.find(url);
    if (it != detached_.end()) return it->second;
    git_remote* remote = nullptr;
    if (git_remote_create_detached(&remote, url.c_str()) != 0) return nullptr;
    return detached_[url] = remote;
  }

  // Drops the handles kept on `mirror` (its repository and the remotes made on it).
  void Forget(const std::string& mirror) {
    for (auto it = anonymous_.begin(); it != anonymous_.end();) {
      if (it->first.starts_with(mirror + "\n")) {
        git_remote_free(it->second);
        it = anonymous_.erase(it);
      } else {
        ++it;
      }
    }
    if (auto it = repos_.find(mirror); it != repos_.end()) {
      git_repository_free(it->second);
      repos_.erase(it);
    }
  }

  git_repository* Repository(const std::string& path) {
    auto it = repos_.find(path);
    if (it != repos_.end()) return it->second;
    git_repository* repo = nullptr;
    if (git_repository_open_bare(&repo, path.c_str()) != 0 &&
        git_repository_init(&repo, path.c_str(), /*is_bare=*/1) != 0) {
      return nullptr;
    }
    return repos_[path] = repo;
  }

  // One anonymous remote per (mirror, url), reused: each creation leaks in libgit2 1.5.
  // It fetches from `url` itself, as the ref listing does: a url.*.insteadOf of a Git
  // config is not applied (it would send the fetch, and a token, to another server, and
  // over another transport than the one this worker prepared for).
  git_remote* Anonymous(git_repository* repo, const std::string& mirror, const std::string& url) {
    const std::string key = mirror + "\n" + url;
    auto it = anonymous_.find(key);
    if (it != anonymous_.end()) return it->second;
    git_remote_create_options options{};
    git_remote_create_options_init(&options, GIT_REMOTE_CREATE_OPTIONS_VERSION);
    options.repository = repo;
    options.flags = GIT_REMOTE_CREATE_SKIP_INSTEADOF;
    git_remote* remote = nullptr;
    if (git_remote_create_with_opts(&remote, url.c_str(), &options) != 0) return nullptr;
    return anonymous_[key] = remote;
  }

  std::map<std::string, git_remote*> detached_;
  std::map<std::string, git_remote*> anonymous_;
  std::map<std::string, git_repository*> repos_;
  const std::string ca_file_;
};

}  // namespace

int RunGitWorker(const GitWorkerOptions& options) {
  signal(SIGPIPE, SIG_IGN);
  if (!options.user.empty()) {
    if (auto dropped = DropPrivileges(options.user); !dropped) {
      std::fprintf(stderr, "tetherd git worker: %s\n", dropped.error().message().c_str());
      return 1;
    }
  }
  StartLibgit2WithoutTransports();
  // Bounded descriptors however many packs a mirror gathers.
  git_libgit2_opts(GIT_OPT_SET_MWINDOW_FILE_LIMIT, 64);
  // A file:// source is owned by whoever made it (root, for /srv/fleet.git), not by this
  // worker's user: libgit2's ownership check would refuse it. The check guards against
  // running a planted repository's configured commands, which libgit2 never runs; the
  // worker only reads the source, and cannot write it.
  git_libgit2_opts(GIT_OPT_SET_OWNER_VALIDATION, 0);
  int status = 0;
  {
    Worker worker(options.ca_file);
    std::string line;
    while (std::getline(std::cin, line)) {
      Json answer;
      try {
        answer = worker.Handle(Json::parse(line));
      } catch (const std::exception& error) {
        answer = Json{{"ok", false}, {"error", std::string("bad request: ") + error.what()}};
      }
      std::cout << answer.dump(-1, ' ', false, Json::error_handler_t::replace) << '\n'
                << std::flush;
      if (!std::cout) {
        status = 1;
        break;
      }
    }
  }
  git_libgit2_shutdown();
  return status;
}

}  // namespace tether
