// The fleet repo as seen from a host: a bare mirror in the cache dir, kept up to date by
// cheap polls (one ref listing) and fetches only when the ref moved, through the git
// worker child process (git_worker.hpp, the program tetherd-git). Commits are read
// straight from the mirror, by this process and without libgit2 (object_store.hpp): no
// working tree.
//
// Threading: one caller at a time.
#pragma once

#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "agent/config/agent_config.hpp"
#include "agent/desired/tree.hpp"
#include "agent/git/git_worker_client.hpp"
#include "agent/git/object_store.hpp"
#include "common/error.hpp"
#include "common/privileges.hpp"

namespace tether {

struct GitSourceOptions {
  SourceConfig source;
  std::string cache_dir;                 // the mirror is cache_dir/mirror.git
  std::vector<std::string> worker_argv;  // e.g. {"/usr/sbin/tetherd", "--git-worker"}
  // The user the git worker runs as. Unset: kDefaultWorkerUser when running as root and
  // that user exists, else the caller's user. The mirror and the worker's home are
  // chowned to it; the cache dir itself stays the caller's, but traversable (0711).
  std::optional<std::string> worker_user;
  // Start the git worker at once rather than at the first request, for a caller that will
  // poll: the worker's start-up (a process, libgit2 and its CA bundle) overlaps the
  // caller's own.
  bool start_worker = false;
  // False for a caller that will not ask the source for its head (a drift repair, a
  // pinned cycle), only read commits the mirror has: the worker's user, home and
  // credentials are left alone (no user lookup, no secret read), and Poll and Update fail.
  bool use_worker = true;
};

inline constexpr const char* kDefaultWorkerUser = kUnprivilegedUser;

struct PollResult {
  std::string commit;      // what the tracked ref points to on the server
  std::size_t source = 0;  // which URL answered: 0 = url, 1.. = mirrors
};

struct UpdateResult {
  std::string commit;    // the commit to apply (the ref's, or the pin)
  bool fetched = false;  // a fetch was needed
  std::size_t source = 0;
};

class GitSource {
 public:
  // Reads the credential files (token, SSH key, known_hosts) once; they never leave this
  // process but to the worker. Fails when one cannot be read.
  [[nodiscard]] static Result<std::unique_ptr<GitSource>> Create(GitSourceOptions options);
  ~GitSource();

  // One cheap ref listing, trying url and then each mirror until one answers, each with
  // the deadline source.timeout. The error lists every URL's failure.
  [[nodiscard]] Result<PollResult> Poll();

  // Poll, and fetch from the URL that answered only when the mirror lacks the commit.
  // With source.pin, the pinned commit is the result once the mirror has it.
  [[nodiscard]] Result<UpdateResult> Update();

  // The commit object as git stores it (headers, gpgsig, message), for verification.
  [[nodiscard]] Result<std::string> ReadCommit(const std::string& commit);
  // True when `commit` is `ancestor` or descends from it.
  [[nodiscard]] Result<bool> Descends(const std::string& commit, const std::string& ancestor);
  // The commit's tree, for the renderer.
  [[nodiscard]] Result<std::unique_ptr<Tree>> OpenTree(const std::string& commit);

  [[nodiscard]] const std::string& mirror_path() const { return mirror_; }
  [[nodiscard]] std::size_t fetch_count() const { return fetch_count_; }
  [[nodiscard]] pid_t worker_pid() const { return worker_ ? worker_->worker_pid() : -1; }
  // True when the last Poll or Update failed to prepare the worker (its user, directories
  // or CA copy) rather than to reach a server: not a source that is down, so not a reason
  // to carry on offline.
  [[nodiscard]] bool worker_setup_failed() const { return worker_setup_failed_; }

  // The URLs in the order tried, without credentials (they never are in them).
  [[nodiscard]] std::vector<std::string> urls() const;

 private:
  GitSource(GitSourceOptions options, nlohmann::json credentials);
  Result<ObjectStore*> Objects();
  void RemoveStaleLocks();
  // The credentials `url` may see: the token only over https:// to source.url's host.
  nlohmann::json CredentialsFor(const std::string& url) const;
  bool HasCommit(const std::string& commit);
  // The worker's user looked up, its directories and CA copy made, the client made: at the
  // first request for the worker (or at Create with start_worker). A file:// poll that
  // finds nothing new asks nothing of the worker, and so looks nothing up.
  Result<GitWorkerClient*> Worker();

  GitSourceOptions options_;
  nlohmann::json credentials_;
  std::optional<GitWorkerClient> worker_;
  bool worker_setup_failed_ = false;
  std::string mirror_;
  std::unique_ptr<ObjectStore> objects_;  // the mirror's, opened at the first read
  std::size_t fetch_count_ = 0;
};

}  // namespace tether
