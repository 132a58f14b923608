// Git repositories for tests, made with the git CLI in a clean, deterministic environment:
// bare repositories, commits of a whole tree (signed with an SSH key or not), force-pushes,
// ref reads, and SSH key pairs.
//
// Every function aborts the test program, with git's stderr, when git fails (like TempDir).
// Threading: the functions are thread-safe (each git runs with its own HOME and index).
#pragma once

#include <map>
#include <string>
#include <vector>

namespace tether::testing {

inline constexpr char kGitTestName[] = "Tether Test";
inline constexpr char kGitTestEmail[] = "tether-test@example.invalid";

// kCleanEnvironment plus HOME=`home`, GIT_CONFIG_NOSYSTEM=1, GIT_TERMINAL_PROMPT=0 and
// kGitTestName/kGitTestEmail as author and committer: no user or system configuration.
[[nodiscard]] std::vector<std::string> GitEnvironment(const std::string& home);

// Creates an empty bare repository at `path` (and missing parents) whose HEAD is
// refs/heads/main.
void CreateBareRepo(const std::string& path);

struct CommitOptions {
  std::string branch = "main";
  // true: the commit's tree is exactly the given files. false: the files are added to the
  // branch's current tree, replacing files at the same paths.
  bool replace_tree = true;
  std::string message = "tether test commit";
  // A private SSH key file to sign the commit with (gpg.format=ssh); empty: unsigned.
  std::string signing_key;
};

// Commits `files` (path in the tree -> content; regular 0644 files, paths without newlines) to
// `options.branch` of the bare repository `bare_repo`, on top of its current commit (or as its
// first one), moves the branch to the new commit and returns the commit's sha.
std::string CommitFiles(const std::string& bare_repo,
                        const std::map<std::string, std::string>& files,
                        const CommitOptions& options = {});

// Force-pushes commit `sha`, which must be in `bare_repo`, to `ref` of `bare_repo` (git push
// --force, through receive-pack), e.g. to move a branch back to an older commit. `ref` is a full
// ref name or a branch name.
void ForcePush(const std::string& bare_repo, const std::string& ref, const std::string& sha);

// The sha `ref` ("refs/heads/main", "main", "HEAD", ...) of `bare_repo` points to, unpeeled;
// empty when it does not exist.
[[nodiscard]] std::string ReadRef(const std::string& bare_repo, const std::string& ref);

enum class SshKeyType { kEd25519, kEcdsaP256, kRsa };  // RSA: 3072 bits

struct SshKeyPair {
  std::string private_key;  // path, unencrypted, mode 0600
  std::string public_key;   // path of the .pub file
  std::string public_line;  // its content without the newline: "ssh-ed25519 AAAA... comment"
};

// Generates a key pair with ssh-keygen at `path` (which must not exist) and `path`.pub.
SshKeyPair GenerateSshKey(const std::string& path, SshKeyType type = SshKeyType::kEd25519);

}  // namespace tether::testing
