#include "tests/support/git_repo.hpp"

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <optional>

#include "common/process.hpp"
#include "tests/support/temp_dir.hpp"

namespace tether::testing {

namespace {

[[noreturn]] void Die(const std::string& message) {
  std::fprintf(stderr, "git_repo: %s\n", message.c_str());
  std::abort();
}

std::string Join(const std::vector<std::string>& argv) {
  std::string joined;
  for (const auto& arg : argv) joined += (joined.empty() ? "" : " ") + arg;
  return joined;
}

std::string TrimNewline(std::string text) {
  while (!text.empty() && (text.back() == '\n' || text.back() == '\r')) text.pop_back();
  return text;
}

// Runs `argv` in `env`; returns stdout, or aborts with stderr when it fails.
std::string RunOrDie(const std::vector<std::string>& argv, const std::vector<std::string>& env,
                     std::optional<std::string> input = std::nullopt) {
  RunOptions options;
  options.argv = argv;
  options.env = env;
  options.input = std::move(input);
  options.timeout = std::chrono::seconds(60);
  auto result = Run(options);
  if (!result) Die(Join(argv) + ": " + result.error().message());
  if (!result->ok()) {
    Die(Join(argv) + ": " + result->Describe(options.timeout) + ": " + result->err);
  }
  return std::move(result->out);
}

// "git --git-dir=BARE args..."
std::vector<std::string> GitIn(const std::string& bare_repo, std::vector<std::string> args) {
  args.insert(args.begin(), {"git", "--git-dir=" + bare_repo});
  return args;
}

std::vector<std::string> Lines(const std::string& text) {
  std::vector<std::string> lines;
  std::size_t start = 0;
  while (start < text.size()) {
    std::size_t end = text.find('\n', start);
    if (end == std::string::npos) end = text.size();
    lines.push_back(text.substr(start, end - start));
    start = end + 1;
  }
  return lines;
}

}  // namespace

std::vector<std::string> GitEnvironment(const std::string& home) {
  std::vector<std::string> env = kCleanEnvironment;
  env.insert(env.end(), {
                            "HOME=" + home,
                            "GIT_CONFIG_NOSYSTEM=1",
                            "GIT_TERMINAL_PROMPT=0",
                            std::string("GIT_AUTHOR_NAME=") + kGitTestName,
                            std::string("GIT_AUTHOR_EMAIL=") + kGitTestEmail,
                            std::string("GIT_COMMITTER_NAME=") + kGitTestName,
                            std::string("GIT_COMMITTER_EMAIL=") + kGitTestEmail,
                        });
  return env;
}

void CreateBareRepo(const std::string& path) {
  const TempDir home("git-home");
  RunOrDie({"git", "init", "--quiet", "--bare", "--initial-branch=main", path},
           GitEnvironment(home.path()));
}

std::string CommitFiles(const std::string& bare_repo,
                        const std::map<std::string, std::string>& files,
                        const CommitOptions& options) {
  // Plumbing on a private index file: no working tree, one git per step whatever the file count.
  const TempDir scratch("git-commit");
  std::vector<std::string> env = GitEnvironment(scratch.path());
  env.push_back("GIT_INDEX_FILE=" + scratch.Path("index"));
  const std::string ref = "refs/heads/" + options.branch;
  const std::string parent = ReadRef(bare_repo, ref);

  if (!parent.empty() && !options.replace_tree) {
    RunOrDie(GitIn(bare_repo, {"read-tree", parent}), env);
  }
  if (!files.empty()) {
    std::string blob_paths;
    int n = 0;
    for (const auto& [path, content] : files) {
      const std::string blob = "blobs/" + std::to_string(n++);
      scratch.WriteFile(blob, content);
      blob_paths += scratch.Path(blob) + "\n";
    }
    const auto shas =
        Lines(RunOrDie(GitIn(bare_repo, {"hash-object", "-w", "--stdin-paths"}), env, blob_paths));
    if (shas.size() != files.size()) Die("git hash-object: unexpected output");
    std::string index_info;
    auto sha = shas.begin();
    for (const auto& [path, content] : files) index_info += "100644 " + *sha++ + "\t" + path + "\n";
    RunOrDie(GitIn(bare_repo, {"update-index", "--add", "--index-info"}), env, index_info);
  }
  const std::string tree = TrimNewline(RunOrDie(GitIn(bare_repo, {"write-tree"}), env));

  std::vector<std::string> commit_tree = {"commit-tree", tree, "-m", options.message};
  if (!parent.empty()) commit_tree.insert(commit_tree.end(), {"-p", parent});
  if (!options.signing_key.empty()) {
    commit_tree.insert(commit_tree.begin(),
                       {"-c", "gpg.format=ssh", "-c", "user.signingkey=" + options.signing_key});
    commit_tree.push_back("-S");
  }
  const std::string commit = TrimNewline(RunOrDie(GitIn(bare_repo, commit_tree), env));
  // The old value guards against a concurrent change; "" means "must not exist yet".
  RunOrDie(GitIn(bare_repo, {"update-ref", ref, commit, parent}), env);
  return commit;
}

void ForcePush(const std::string& bare_repo, const std::string& ref, const std::string& sha) {
  const TempDir home("git-home");
  const std::string full_ref = ref.rfind("refs/", 0) == 0 ? ref : "refs/heads/" + ref;
  RunOrDie(GitIn(bare_repo, {"push", "--quiet", "--force", bare_repo, sha + ":" + full_ref}),
           GitEnvironment(home.path()));
}

std::string ReadRef(const std::string& bare_repo, const std::string& ref) {
  const TempDir home("git-home");
  RunOptions options;
  options.argv = GitIn(bare_repo, {"rev-parse", "--verify", "--quiet", ref});
  options.env = GitEnvironment(home.path());
  auto result = Run(options);
  if (!result) Die("git rev-parse: " + result.error().message());
  if (result->exit_code == 1 && !result->timed_out) return "";  // no such ref
  if (!result->ok()) Die("git rev-parse " + ref + ": " + result->err);
  return TrimNewline(result->out);
}

SshKeyPair GenerateSshKey(const std::string& path, SshKeyType type) {
  std::vector<std::string> argv = {"ssh-keygen", "-q", "-N", "", "-C", "tether-test", "-f", path};
  switch (type) {
    case SshKeyType::kEd25519:
      argv.insert(argv.end(), {"-t", "ed25519"});
      break;
    case SshKeyType::kEcdsaP256:
      argv.insert(argv.end(), {"-t", "ecdsa", "-b", "256"});
      break;
    case SshKeyType::kRsa:
      argv.insert(argv.end(), {"-t", "rsa", "-b", "3072"});
      break;
  }
  RunOrDie(argv, kCleanEnvironment);
  SshKeyPair pair = {path, path + ".pub", ""};
  std::ifstream public_key(pair.public_key);
  if (!std::getline(public_key, pair.public_line)) Die("read " + pair.public_key);
  return pair;
}

}  // namespace tether::testing
