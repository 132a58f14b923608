// SSH signature verification, cross-checked against the real thing: keys made by ssh-keygen,
// signatures made by `ssh-keygen -Y sign` and `git commit -S`, and every verdict compared with
// `ssh-keygen -Y verify` (after `-Y find-principals`, as git does) or `git verify-commit`.
#include "agent/trust/ssh_signature.hpp"

#include <openssl/bio.h>
#include <openssl/evp.h>
#include <openssl/pem.h>

#include <cstdint>
#include <ctime>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include <doctest/doctest.h>

#include "agent/trust/ssh_key.hpp"
#include "common/encoding.hpp"
#include "common/process.hpp"
#include "tests/support/temp_dir.hpp"

using tether::AllowedSigner;
using tether::SignatureErrc;
using tether::SignatureVerdict;

namespace {

constexpr std::int64_t kNow = 1780272000;   // 2026-06-01T00:00:00Z
constexpr std::int64_t k2020 = 1577836800;  // 2020-01-01T00:00:00Z
constexpr std::int64_t k2099 = 4070908800;  // 2099-01-01T00:00:00Z
constexpr char kPrincipal[] = "alice@example.com";

std::string VerifyTime(std::int64_t unix_seconds) {
  const auto t = static_cast<std::time_t>(unix_seconds);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char text[32];
  std::strftime(text, sizeof(text), "%Y%m%d%H%M%SZ", &tm);
  return text;
}

// A temp dir to run ssh-keygen and git in, with no user or system configuration.
class Workspace {
 public:
  Workspace() : dir_("trust") {
    env_ = tether::kCleanEnvironment;
    for (const std::string& entry : {
             "HOME=" + dir_.path(),
             std::string("GIT_CONFIG_NOSYSTEM=1"),
             std::string("GIT_TERMINAL_PROMPT=0"),
             std::string("GIT_AUTHOR_NAME=Tether Test"),
             std::string("GIT_AUTHOR_EMAIL=tether-test@example.invalid"),
             std::string("GIT_COMMITTER_NAME=Tether Test"),
             std::string("GIT_COMMITTER_EMAIL=tether-test@example.invalid"),
         }) {
      env_.push_back(entry);
    }
    // Times without "Z" in allowed_signers are local: ssh-keygen must use our time zone.
    if (const char* tz = std::getenv("TZ")) env_.push_back(std::string("TZ=") + tz);
  }

  // A fresh path in the workspace.
  std::string NewPath(std::string_view stem) {
    return dir_.Path(std::string(stem) + "-" + std::to_string(++counter_));
  }
  std::string WriteNew(std::string_view stem, std::string_view content) {
    std::string path = NewPath(stem);
    dir_.WriteFile(path.substr(dir_.path().size() + 1), content, 0600);
    return path;
  }

  // Runs a program; it must start, and exit 0 when `must_succeed`.
  tether::RunResult Run(std::vector<std::string> argv, std::optional<std::string> input = {},
                        const std::string& cwd = {}, bool must_succeed = true) const {
    auto result = tether::Run({.argv = argv, .env = env_, .cwd = cwd, .input = std::move(input)});
    REQUIRE_MESSAGE(result, (result ? "" : result.error().message()));
    if (must_succeed) {
      REQUIRE_MESSAGE(result->ok(), argv[0] << " " << argv[1] << ": " << result->err);
    }
    return std::move(*result);
  }

 private:
  tether::testing::TempDir dir_;
  std::vector<std::string> env_;
  int counter_ = 0;
};

struct Key {
  std::string name;
  std::string private_key;  // path
  std::string public_key;   // "type base64", the allowed_signers form
  std::string fingerprint;  // as `ssh-keygen -l` prints it
};

Key GenerateKey(Workspace& ws, const std::string& name, std::vector<std::string> type_args) {
  Key key;
  key.name = name;
  key.private_key = ws.NewPath(name);
  std::vector<std::string> argv = {"ssh-keygen",      "-q", "-N",           "", "-C",
                                   name + "-comment", "-f", key.private_key};
  argv.insert(argv.end(), type_args.begin(), type_args.end());
  ws.Run(argv);
  const std::string line = ws.Run({"cat", key.private_key + ".pub"}).out;
  key.public_key = line.substr(0, line.find(' ', line.find(' ') + 1));
  const std::string listed = ws.Run({"ssh-keygen", "-l", "-f", key.private_key + ".pub"}).out;
  const std::size_t start = listed.find("SHA256:");
  key.fingerprint = listed.substr(start, listed.find(' ', start) - start);
  return key;
}

// Keys generated once for the whole test program.
struct Keys {
  Workspace ws;
  Key ed25519 = GenerateKey(ws, "ed25519", {"-t", "ed25519"});
  Key ecdsa256 = GenerateKey(ws, "ecdsa256", {"-t", "ecdsa", "-b", "256"});
  Key ecdsa384 = GenerateKey(ws, "ecdsa384", {"-t", "ecdsa", "-b", "384"});
  Key ecdsa521 = GenerateKey(ws, "ecdsa521", {"-t", "ecdsa", "-b", "521"});
  Key rsa = GenerateKey(ws, "rsa", {"-t", "rsa", "-b", "2048"});
  Key stranger = GenerateKey(ws, "stranger", {"-t", "ed25519"});
};

Keys& TestKeys() {
  static Keys keys;
  return keys;
}

// `ssh-keygen -Y sign` of `data`; the armored signature.
std::string SshKeygenSign(const Key& key, const std::string& data, const std::string& ns = "git",
                          const std::string& hashalg = "") {
  std::vector<std::string> argv = {"ssh-keygen",    "-q", "-Y", "sign", "-f",
                                   key.private_key, "-n", ns};
  if (!hashalg.empty()) argv.push_back("-Ohashalg=" + hashalg);
  return TestKeys().ws.Run(argv, data).out;
}

// ssh-keygen's verdict as `git verify-commit` gets it: with `principal` empty, the first
// principal `ssh-keygen -Y find-principals` prints, then `ssh-keygen -Y verify -I` with it.
bool SshKeygenAccepts(const std::string& data, const std::string& signature,
                      const std::string& allowed_signers, const std::string& ns, std::int64_t now,
                      std::string principal = "") {
  Workspace& ws = TestKeys().ws;
  const std::string allowed_path = ws.WriteNew("allowed_signers", allowed_signers);
  const std::string signature_path = ws.WriteNew("signature", signature);
  const std::string verify_time = "-Overify-time=" + VerifyTime(now);
  if (principal.empty()) {
    auto found = ws.Run({"ssh-keygen", "-Y", "find-principals", "-f", allowed_path, "-s",
                         signature_path, verify_time},
                        std::nullopt, {}, false);
    if (!found.ok()) return false;
    principal = found.out.substr(0, found.out.find('\n'));
  }
  return ws
      .Run({"ssh-keygen", "-Y", "verify", "-f", allowed_path, "-I", principal, "-n", ns, "-s",
            signature_path, verify_time},
           data, {}, false)
      .ok();
}

std::vector<AllowedSigner> Parse(const std::string& text) {
  auto signers = tether::ParseAllowedSigners(text, "allowed_signers");
  REQUIRE_MESSAGE(signers, (signers ? "" : signers.error().message()));
  return *signers;
}

// The SSHSIG blob of an armored signature.
std::string Dearmor(const std::string& armored) {
  const std::size_t begin = armored.find('\n') + 1;
  const std::size_t end = armored.find("-----END");
  auto blob = tether::ssh::Base64Decode(armored.substr(begin, end - begin));
  REQUIRE(blob);
  return *blob;
}

std::string Armor(std::string_view blob) {
  const std::string base64 = tether::Base64Encode(blob);
  std::string armored = "-----BEGIN SSH SIGNATURE-----\n";
  for (std::size_t i = 0; i < base64.size(); i += 70) armored += base64.substr(i, 70) + "\n";
  return armored + "-----END SSH SIGNATURE-----\n";
}

std::string KeyBlob(const Key& key) {
  auto blob = tether::ssh::Base64Decode(key.public_key.substr(key.public_key.find(' ') + 1));
  REQUIRE(blob);
  return *blob;
}

// Signs like `ssh-keygen -Y sign` with an RSA key in PEM form, but with a chosen signature
// algorithm: rsa-sha2-256 (which ssh-keygen never picks) or ssh-rsa (SHA-1).
std::string SignRsaWithOpenSsl(const std::string& pem_path, const Key& key, const std::string& data,
                               const std::string& algorithm) {
  BIO* bio = BIO_new_file(pem_path.c_str(), "r");
  REQUIRE(bio != nullptr);
  EVP_PKEY* pkey = PEM_read_bio_PrivateKey(bio, nullptr, nullptr, nullptr);
  BIO_free(bio);
  REQUIRE(pkey != nullptr);
  using tether::ssh::PutString;
  std::string signed_data = "SSHSIG";
  PutString(signed_data, "git");
  PutString(signed_data, "");
  PutString(signed_data, "sha512");
  PutString(signed_data, *tether::ssh::HashByName("sha512", data));
  const EVP_MD* md = algorithm == "rsa-sha2-256"   ? EVP_sha256()
                     : algorithm == "rsa-sha2-512" ? EVP_sha512()
                                                   : EVP_sha1();
  EVP_MD_CTX* ctx = EVP_MD_CTX_new();
  std::size_t length = 0;
  REQUIRE(EVP_DigestSignInit(ctx, nullptr, md, nullptr, pkey) == 1);
  REQUIRE(EVP_DigestSign(ctx, nullptr, &length, nullptr, 0) == 1);
  std::string raw(length, '\0');
  REQUIRE(EVP_DigestSign(ctx, reinterpret_cast<unsigned char*>(raw.data()), &length,
                         reinterpret_cast<const unsigned char*>(signed_data.data()),
                         signed_data.size()) == 1);
  raw.resize(length);
  EVP_MD_CTX_free(ctx);
  EVP_PKEY_free(pkey);
  std::string signature;
  PutString(signature, algorithm);
  PutString(signature, raw);
  std::string blob = "SSHSIG";
  tether::ssh::PutU32(blob, 1);
  PutString(blob, KeyBlob(key));
  PutString(blob, "git");
  PutString(blob, "");
  PutString(blob, "sha512");
  PutString(blob, signature);
  return Armor(blob);
}

std::string Describe(const tether::Result<SignatureVerdict>& verdict) {
  if (!verdict) return "error: " + verdict.error().message();
  return "valid: " + verdict->principal + " " + verdict->key_type + " " + verdict->fingerprint;
}

}  // namespace

TEST_CASE("Signatures by every key type verify, and ssh-keygen agrees") {
  Keys& keys = TestKeys();
  struct Case {
    const Key* key;
    const char* hashalg;  // "": ssh-keygen's default (sha512)
    const char* signature_algorithm;
  };
  const Case cases[] = {
      {&keys.ed25519, "", "ssh-ed25519"},
      {&keys.ed25519, "sha256", "ssh-ed25519"},
      {&keys.ecdsa256, "", "ecdsa-sha2-nistp256"},
      {&keys.ecdsa256, "sha256", "ecdsa-sha2-nistp256"},
      {&keys.ecdsa384, "", "ecdsa-sha2-nistp384"},
      {&keys.ecdsa521, "", "ecdsa-sha2-nistp521"},
      {&keys.rsa, "", "rsa-sha2-512"},
      {&keys.rsa, "sha256", "rsa-sha2-512"},
  };
  const std::string data = "arbitrary data\nwith two lines\n";
  for (const Case& c : cases) {
    CAPTURE(c.key->name);
    CAPTURE(std::string(c.hashalg));
    const std::string signature = SshKeygenSign(*c.key, data, "git", c.hashalg);
    const std::string allowed = std::string(kPrincipal) + " " + c.key->public_key + "\n";
    auto verdict = tether::VerifySshSignature(data, signature, Parse(allowed), "git", kNow);
    REQUIRE_MESSAGE(verdict, Describe(verdict));
    CHECK(verdict->principal == kPrincipal);
    CHECK(verdict->key_type == c.key->public_key.substr(0, c.key->public_key.find(' ')));
    CHECK(verdict->signature_algorithm == c.signature_algorithm);
    CHECK(verdict->fingerprint == c.key->fingerprint);
    CHECK(verdict->line == 1);
    CHECK(SshKeygenAccepts(data, signature, allowed, "git", kNow));
  }
}

TEST_CASE("RSA signatures with rsa-sha2-256 verify; ssh-rsa (SHA-1) ones are refused") {
  Keys& keys = TestKeys();
  // The same RSA key, converted to PEM so that OpenSSL can sign with it.
  const std::string pem = keys.ws.NewPath("rsa-pem");
  keys.ws.Run({"cp", keys.rsa.private_key, pem});
  keys.ws.Run({"ssh-keygen", "-q", "-p", "-m", "PEM", "-P", "", "-N", "", "-f", pem});
  const std::string data = "fleet commit\n";
  const std::string allowed = std::string(kPrincipal) + " " + keys.rsa.public_key + "\n";
  const auto signers = Parse(allowed);

  const std::string sha256 = SignRsaWithOpenSsl(pem, keys.rsa, data, "rsa-sha2-256");
  auto verdict = tether::VerifySshSignature(data, sha256, signers, "git", kNow);
  REQUIRE_MESSAGE(verdict, Describe(verdict));
  CHECK(verdict->signature_algorithm == "rsa-sha2-256");
  CHECK(SshKeygenAccepts(data, sha256, allowed, "git", kNow));

  // The hand-made rsa-sha2-512 one checks the test's own signing against ssh-keygen.
  const std::string sha512 = SignRsaWithOpenSsl(pem, keys.rsa, data, "rsa-sha2-512");
  CHECK(tether::VerifySshSignature(data, sha512, signers, "git", kNow));
  CHECK(SshKeygenAccepts(data, sha512, allowed, "git", kNow));

  const std::string sha1 = SignRsaWithOpenSsl(pem, keys.rsa, data, "ssh-rsa");
  verdict = tether::VerifySshSignature(data, sha1, signers, "git", kNow);
  REQUIRE_FALSE(verdict);
  CHECK(verdict.error().code() == SignatureErrc::kUnsupportedAlgorithm);
  CHECK(verdict.error().message().find("ssh-rsa signatures (RSA with SHA-1) are refused") !=
        std::string::npos);
  CHECK_FALSE(SshKeygenAccepts(data, sha1, allowed, "git", kNow));
}

TEST_CASE("Each refusal has its own error, and ssh-keygen refuses the same signatures") {
  Keys& keys = TestKeys();
  const std::string data = "tree 1234\n\nsigned payload\n";
  const std::string signature = SshKeygenSign(keys.ed25519, data);
  const std::string file_signature = SshKeygenSign(keys.ed25519, data, "file");
  std::string tampered_blob = Dearmor(signature);
  tampered_blob.back() = static_cast<char>(tampered_blob.back() ^ 0x01);
  const std::string tampered_signature = Armor(tampered_blob);
  std::string tampered_data = data;
  tampered_data[20] = 'X';
  const std::string key = keys.ed25519.public_key;
  const std::string fp = keys.ed25519.fingerprint;

  struct Case {
    std::string name;
    std::string allowed;
    std::optional<SignatureErrc> expected;  // nullopt: valid
    std::string message = "";               // expected in the error message
    std::int64_t now = kNow;
    std::string principal = "";  // empty: like git, any principal
    std::string signature = "";  // empty: `signature`
    std::string data = "";       // empty: `data`
    std::string ns = "git";
  };
  const std::string alice = std::string(kPrincipal) + " ";
  const std::vector<Case> cases = {
      {"valid", alice + key, std::nullopt},
      {"a byte of the payload changed", alice + key, SignatureErrc::kBadSignature,
       "signature by " + fp + " (ssh-ed25519) does not verify", kNow, "", "", tampered_data},
      {"a byte of the signature changed", alice + key, SignatureErrc::kBadSignature,
       "does not verify", kNow, "", tampered_signature},
      {"signer not in allowed_signers",
       alice + keys.stranger.public_key + "\nbob " + keys.ecdsa256.public_key,
       SignatureErrc::kUnknownKey, "key " + fp + " (ssh-ed25519) is not in allowed_signers"},
      {"empty allowed_signers", "# nobody\n", SignatureErrc::kUnknownKey, "not in allowed_signers"},
      {"valid-before in the past", alice + "valid-before=\"20200101Z\" " + key,
       SignatureErrc::kKeyExpired,
       "key " + fp +
           " of 'alice@example.com' expired on 2020-01-01T00:00:00Z (valid-before in "
           "allowed_signers:1)"},
      {"valid-after in the future", alice + "valid-after=\"20990101Z\" " + key,
       SignatureErrc::kKeyNotYetValid,
       "key " + fp +
           " of 'alice@example.com' is not valid before 2099-01-01T00:00:00Z "
           "(valid-after in allowed_signers:1)"},
      {"valid-before, to the second", alice + "valid-before=\"20200101Z\" " + key, std::nullopt, "",
       k2020},
      {"valid-before, a second later", alice + "valid-before=\"20200101Z\" " + key,
       SignatureErrc::kKeyExpired, "expired", k2020 + 1},
      {"valid-after, to the second", alice + "valid-after=\"20990101000000Z\" " + key, std::nullopt,
       "", k2099},
      {"valid-after, a second early", alice + "valid-after=\"209901010000Z\" " + key,
       SignatureErrc::kKeyNotYetValid, "not valid before", k2099 - 1},
      {"inside a validity window",
       alice + "valid-after=\"20200101Z\",valid-before=\"20990101Z\" " + key, std::nullopt},
      {"an expired line, then a valid one",
       "old@example.com valid-before=\"20200101Z\" " + key + "\nnew@example.com " + key,
       std::nullopt},
      {"signed for namespace file", alice + key, SignatureErrc::kWrongNamespace,
       "signature by " + fp + " (ssh-ed25519) is for namespace 'file', not 'git'", kNow, "",
       file_signature},
      {"key restricted to namespace file", alice + "namespaces=\"file\" " + key,
       SignatureErrc::kWrongNamespace,
       "key " + fp +
           " of 'alice@example.com' is not allowed for namespace 'git' "
           "(namespaces=\"file\" in allowed_signers:1)"},
      {"key allowed for file and git", alice + "namespaces=\"file,git\" " + key, std::nullopt},
      {"namespace pattern", alice + "namespaces=\"g?t\" " + key, std::nullopt},
      {"negated namespace", alice + "namespaces=\"*,!git\" " + key, SignatureErrc::kWrongNamespace,
       "not allowed for namespace 'git'"},
      {"wildcard principal", "*@example.com " + key, std::nullopt, "", kNow, kPrincipal},
      {"principal in a list", "bob@example.com,alice@example.com " + key, std::nullopt, "", kNow,
       kPrincipal},
      {"principal with ?", "?lice@example.com " + key, std::nullopt, "", kNow, kPrincipal},
      {"negated principal", "!alice@example.com,*@example.com " + key, SignatureErrc::kUnknownKey,
       "is not in allowed_signers for principal 'alice@example.com'", kNow, kPrincipal},
      {"another principal of a negated list", "!bob@example.com,*@example.com " + key, std::nullopt,
       "", kNow, kPrincipal},
      {"principal not listed", "mallory@example.org " + key, SignatureErrc::kUnknownKey,
       "for principal 'alice@example.com'", kNow, kPrincipal},
      {"quoted principals", "\"alice@example.com\" " + key, std::nullopt, "", kNow, kPrincipal},
  };
  for (const Case& c : cases) {
    CAPTURE(c.name);
    const std::string& case_data = c.data.empty() ? data : c.data;
    const std::string& case_signature = c.signature.empty() ? signature : c.signature;
    const std::string allowed = c.allowed + "\n";
    auto verdict = tether::VerifySshSignature(case_data, case_signature, Parse(allowed), c.ns,
                                              c.now, c.principal);
    if (c.expected) {
      REQUIRE_MESSAGE(!verdict, Describe(verdict));
      CHECK(verdict.error().code() == *c.expected);
      CHECK_MESSAGE(verdict.error().message().find(c.message) != std::string::npos,
                    verdict.error().message());
    } else {
      CHECK_MESSAGE(verdict, Describe(verdict));
    }
    CHECK(SshKeygenAccepts(case_data, case_signature, allowed, c.ns, c.now, c.principal) ==
          !c.expected.has_value());
  }
}

TEST_CASE("The verdict names the first principal of the line that accepted the signature") {
  Keys& keys = TestKeys();
  const std::string data = "payload\n";
  const std::string signature = SshKeygenSign(keys.ecdsa256, data);
  const auto signers = Parse(
      "# fleet signers\n"
      "ops@example.com " +
      keys.ed25519.public_key +
      "\n"
      "old@example.com valid-before=\"20200101Z\" " +
      keys.ecdsa256.public_key +
      "\n"
      "!x@example.com,ci@example.com,*@ci.example.com " +
      keys.ecdsa256.public_key + " ci key\n");
  auto verdict = tether::VerifySshSignature(data, signature, signers, "git", kNow);
  REQUIRE_MESSAGE(verdict, Describe(verdict));
  CHECK(verdict->principal == "ci@example.com");
  CHECK(verdict->file == "allowed_signers");
  CHECK(verdict->line == 4);
  CHECK(verdict->fingerprint == keys.ecdsa256.fingerprint);

  verdict = tether::VerifySshSignature(data, signature, signers, "git", kNow, "r2@ci.example.com");
  REQUIRE_MESSAGE(verdict, Describe(verdict));
  CHECK(verdict->principal == "r2@ci.example.com");
}

namespace {

struct GitRepo {
  std::string path;
};

GitRepo InitRepo(const std::string& object_format = "sha1") {
  Workspace& ws = TestKeys().ws;
  GitRepo repo{ws.NewPath("repo")};
  ws.Run({"git", "init", "-q", "-b", "main", "--object-format=" + object_format, repo.path});
  return repo;
}

// Commits (empty) to `repo`, signed with `key` unless null; returns `git cat-file commit HEAD`.
std::string Commit(const GitRepo& repo, const Key* key, const std::string& message) {
  Workspace& ws = TestKeys().ws;
  std::vector<std::string> argv = {"git", "-c", "gpg.format=ssh"};
  if (key != nullptr) {
    argv.insert(argv.end(), {"-c", "user.signingkey=" + key->private_key});
  }
  argv.insert(argv.end(), {"commit", "-q", "--allow-empty", "-m", message});
  if (key != nullptr) argv.push_back("-S");
  ws.Run(argv, std::nullopt, repo.path);
  return ws.Run({"git", "cat-file", "commit", "HEAD"}, std::nullopt, repo.path).out;
}

bool GitVerifyCommit(const GitRepo& repo, const std::string& allowed_signers) {
  Workspace& ws = TestKeys().ws;
  const std::string allowed_path = ws.WriteNew("allowed_signers", allowed_signers);
  return ws
      .Run({"git", "-c", "gpg.ssh.allowedSignersFile=" + allowed_path, "verify-commit", "HEAD"},
           std::nullopt, repo.path, false)
      .ok();
}

}  // namespace

TEST_CASE("Commits signed by git verify, and git verify-commit agrees") {
  Keys& keys = TestKeys();
  const std::string allowed = "ops@example.com " + keys.ed25519.public_key +
                              "\n"
                              "ops@example.com " +
                              keys.ecdsa256.public_key +
                              "\n"
                              "ci@example.com " +
                              keys.rsa.public_key + "\n";
  const auto signers = Parse(allowed);
  const std::string message = "Deploy motd\n\nA body line.\n\n  indented\ngpgsig not a header\n";

  struct Case {
    std::string name;
    const Key* key;  // null: unsigned
    std::string object_format = "sha1";
    std::optional<SignatureErrc> expected = std::nullopt;
    std::string principal = "ops@example.com";
  };
  const std::vector<Case> cases = {
      {"ed25519", &keys.ed25519},
      {"ecdsa-sha2-nistp256", &keys.ecdsa256},
      {"rsa", &keys.rsa, "sha1", std::nullopt, "ci@example.com"},
      {"ed25519 in a SHA-256 repository", &keys.ed25519, "sha256"},
      {"unsigned", nullptr, "sha1", SignatureErrc::kUnsigned},
      {"signed by a stranger", &keys.stranger, "sha1", SignatureErrc::kUnknownKey},
  };
  for (const Case& c : cases) {
    CAPTURE(c.name);
    const GitRepo repo = InitRepo(c.object_format);
    Commit(repo, c.key, "parent");  // so that the commit has a parent header too
    const std::string raw = Commit(repo, c.key, message);
    auto verdict = tether::VerifySignedCommit(raw, signers, kNow);
    if (c.expected) {
      REQUIRE_MESSAGE(!verdict, Describe(verdict));
      CHECK(verdict.error().code() == *c.expected);
    } else {
      REQUIRE_MESSAGE(verdict, Describe(verdict));
      CHECK(verdict->principal == c.principal);
      CHECK(verdict->fingerprint == c.key->fingerprint);
    }
    CHECK(GitVerifyCommit(repo, allowed) == !c.expected.has_value());
    if (c.key == nullptr) {
      CHECK(verdict.error().message() == "commit is not signed");
      continue;
    }
    // The payload is exactly what git signed: ssh-keygen verifies the split too.
    auto split = tether::SplitSignedCommit(raw);
    REQUIRE(split);
    CHECK(split->payload.find("gpgsig") == split->payload.find("gpgsig not a header"));
    CHECK(split->payload.ends_with(message));
    CHECK(SshKeygenAccepts(split->payload, split->signature, allowed, "git", kNow) ==
          !c.expected.has_value());

    // Changing the message after signing breaks the signature.
    std::string tampered = raw;
    tampered.replace(tampered.find("Deploy motd"), 11, "Deploy MOTD");
    auto tampered_verdict = tether::VerifySignedCommit(tampered, signers, kNow);
    REQUIRE_FALSE(tampered_verdict);
    CHECK(tampered_verdict.error().code() ==
          (c.expected ? *c.expected : SignatureErrc::kBadSignature));
  }
}

TEST_CASE("SplitSignedCommit removes exactly the signature headers, like git") {
  struct Case {
    std::string name;
    std::string raw;
    std::string payload;  // "": unsigned
    std::string signature;
  };
  const std::string tree1 = "tree " + std::string(40, 'a') + "\n";
  const std::string tree256 = "tree " + std::string(64, 'b') + "\n";
  const std::string author = "author A <a@x> 1 +0000\ncommitter A <a@x> 1 +0000\n";
  const std::vector<Case> cases = {
      {"signature at the end of the headers",
       tree1 + author +
           "gpgsig -----BEGIN SSH SIGNATURE-----\n U1NI\n -----END SSH SIGNATURE-----\n"
           "\nmessage\n",
       tree1 + author + "\nmessage\n",
       "-----BEGIN SSH SIGNATURE-----\nU1NI\n-----END SSH SIGNATURE-----\n"},
      {"signature between headers; a blank continuation line",
       tree1 + "gpgsig A\n \n B\n" + author + "\nm", tree1 + author + "\nm", "A\n\nB\n"},
      {"the other hash's signature is dropped too",
       tree1 + "gpgsig S1\n more\ngpgsig-sha256 S2\n more2\n" + author + "\nm\n",
       tree1 + author + "\nm\n", "S1\nmore\n"},
      {"a SHA-256 commit uses gpgsig-sha256",
       tree256 + "gpgsig S1\ngpgsig-sha256 S2\n two\n" + author + "\nm\n",
       tree256 + author + "\nm\n", "S2\ntwo\n"},
      {"mergetag and other headers are kept",
       tree1 + "mergetag object 1\n type commit\ngpgsig S\n" + author + "\nm\n",
       tree1 + "mergetag object 1\n type commit\n" + author + "\nm\n", "S\n"},
      {"a gpgsig line in the message is not a header", tree1 + author + "\ngpgsig not a header\n",
       "", ""},
      {"no signature", tree1 + author + "\nmessage\n", "", ""},
      {"only the other hash's signature", tree1 + "gpgsig-sha256 S\n" + author + "\nm\n", "", ""},
      {"empty", "", "", ""},
  };
  for (const Case& c : cases) {
    CAPTURE(c.name);
    auto split = tether::SplitSignedCommit(c.raw);
    if (c.payload.empty()) {
      REQUIRE_FALSE(split);
      CHECK(split.error().code() == SignatureErrc::kUnsigned);
      CHECK(split.error().message() == "commit is not signed");
    } else {
      REQUIRE(split);
      CHECK(split->payload == c.payload);
      CHECK(split->signature == c.signature);
    }
  }
}

TEST_CASE("allowed_signers parses like ssh-keygen reads it") {
  Keys& keys = TestKeys();
  const std::string text =
      "# comment\n"
      "\n"
      "   \t# indented comment\n"
      "alice@example.com " +
      keys.ed25519.public_key +
      " a comment\n"
      "  *@example.com,!bob@example.com NAMESPACES=\"git,file@example.com\","
      "Valid-After=\"20200101Z\",valid-before=\"20990101000000UTC\" " +
      keys.ecdsa256.public_key +
      "\r\n"
      "\"two words\" valid-after=\"202001011230\" " +
      keys.rsa.public_key;
  const auto signers = Parse(text);
  REQUIRE(signers.size() == 3);
  CHECK(signers[0].line == 4);
  CHECK(signers[0].principals == "alice@example.com");
  CHECK_FALSE(signers[0].namespaces);
  CHECK_FALSE(signers[0].valid_after);
  CHECK(signers[0].key_type == "ssh-ed25519");
  CHECK(signers[0].fingerprint == keys.ed25519.fingerprint);
  CHECK(signers[0].key_blob == KeyBlob(keys.ed25519));
  CHECK(signers[1].line == 5);
  CHECK(signers[1].principals == "*@example.com,!bob@example.com");
  CHECK(signers[1].namespaces == "git,file@example.com");
  CHECK(signers[1].valid_after == k2020);
  CHECK(signers[1].valid_before == k2099);
  CHECK(signers[1].key_type == "ecdsa-sha2-nistp256");
  CHECK(signers[2].principals == "two words");
  CHECK(signers[2].key_type == "ssh-rsa");
  // Without "Z" the time is local, as for ssh-keygen (the test runs with TZ set).
  std::tm local{};
  local.tm_year = 120;
  local.tm_mday = 1;
  local.tm_hour = 12;
  local.tm_min = 30;
  local.tm_isdst = -1;
  CHECK(signers[2].valid_after == static_cast<std::int64_t>(std::mktime(&local)));
  if (std::getenv("TZ") != nullptr) {  // meson runs the test in a zone that is not UTC
    CHECK(signers[2].valid_after != k2020 + 12 * 3600 + 30 * 60);
  }

  // ssh-keygen agrees on the local time: a signature is valid from 12:30 local time.
  const std::string data = "x";
  const std::string signature = SshKeygenSign(keys.rsa, data);
  const std::string rsa_line = "alice valid-after=\"202001011230\" " + keys.rsa.public_key + "\n";
  for (const std::int64_t offset : {-1, 0}) {
    const std::int64_t now = *signers[2].valid_after + offset;
    CAPTURE(offset);
    CHECK(static_cast<bool>(tether::VerifySshSignature(data, signature, Parse(rsa_line), "git",
                                                       now)) == (offset == 0));
    CHECK(SshKeygenAccepts(data, signature, rsa_line, "git", now) == (offset == 0));
  }
}

TEST_CASE("Malformed allowed_signers lines are errors naming the file and line") {
  Keys& keys = TestKeys();
  const std::string key = keys.ed25519.public_key;
  const std::string ed25519_base64 = key.substr(key.find(' ') + 1);
  const std::string rsa_base64 = keys.rsa.public_key.substr(keys.rsa.public_key.find(' ') + 1);
  struct Case {
    std::string line;
    std::string message;             // how the message starts after "FILE:LINE: "
    bool ssh_keygen_refuses = true;  // false: ssh-keygen is more lenient
  };
  const std::vector<Case> cases = {
      {"alice", "missing key after the principals"},
      {"\"alice " + key, "missing closing quote"},
      {"alice namespaces=\"git " + key, "unterminated quote in options"},
      {"alice namespaces=git " + key, "namespaces: missing opening quote"},
      {"alice namespaces=\"git\",namespaces=\"file\" " + key, "namespaces given twice"},
      {"alice namespaces=\"git\", " + key, "option list ends with ','"},
      {"alice namespaces=\"git\";x " + key, "unexpected ';' after an option"},
      {"alice valid-after=\"2024\" " + key,
       "valid-after: invalid time \"2024\" (use YYYYMMDD[HHMM[SS]], with Z for UTC)"},
      {"alice valid-before=\"2024013x\" " + key, "valid-before: invalid time"},
      {"alice valid-after=\"20240230\" " + key, "valid-after: invalid time", false},
      {"alice valid-after=\"20210101Z\",valid-before=\"20200101Z\" " + key,
       "valid-before is not after valid-after"},
      {"alice foo=\"bar\" " + key, "unknown option 'foo'"},
      {"alice no-touch-required " + key, "unknown option 'no-touch-required'"},
      {"alice cert-authority " + key,
       "cert-authority is not supported (only plain keys, not certificates)"},
      {"alice ssh-dss " + ed25519_base64,
       "unsupported key type 'ssh-dss' (supported: ssh-ed25519, ecdsa-sha2-nistp256, "
       "ecdsa-sha2-nistp384, ecdsa-sha2-nistp521, ssh-rsa)"},
      {"alice sk-ssh-ed25519@openssh.com " + ed25519_base64, "unsupported key type"},
      {"alice ssh-ed25519", "missing key data"},
      {"alice ssh-ed25519 !!!!", "key data is not valid base64"},
      {"alice ssh-ed25519 " + ed25519_base64.substr(0, 40) + "==", "key data is not valid base64"},
      {"alice ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIA==", "invalid key: truncated ssh-ed25519 key"},
      {"alice ssh-ed25519 " + rsa_base64,
       "key type 'ssh-ed25519' does not match the key's 'ssh-rsa'"},
  };
  const std::string data = "payload";
  const std::string signature = SshKeygenSign(keys.ed25519, data);
  for (const Case& c : cases) {
    CAPTURE(c.line);
    const std::string text = "bob " + key + "\n# comment\n\n" + c.line + "\n";
    auto signers = tether::ParseAllowedSigners(text, "/etc/tether/allowed_signers");
    REQUIRE_FALSE(signers);
    CHECK(signers.error().code() == SignatureErrc::kBadAllowedSigners);
    CHECK(signers.error().message().starts_with("/etc/tether/allowed_signers:4: " + c.message));
    // ssh-keygen does not accept the line either (it checks only lines for the principal).
    CHECK(SshKeygenAccepts(data, signature, c.line + "\n", "git", kNow, "alice") ==
          !c.ssh_keygen_refuses);
  }
}

TEST_CASE("Garbage armor, truncated and corrupted blobs are refused without crashing") {
  Keys& keys = TestKeys();
  const std::string data = "payload\n";
  std::string allowed;
  for (const Key* key : {&keys.ed25519, &keys.ecdsa256, &keys.rsa}) {
    allowed += "alice " + key->public_key + "\n";
  }
  const auto signers = Parse(allowed);

  struct Armored {
    std::string text;
    std::string message;
  };
  const std::vector<Armored> armors = {
      {"", "malformed signature: missing '-----BEGIN SSH SIGNATURE-----'"},
      {"-----BEGIN PGP SIGNATURE-----\n\n-----END PGP SIGNATURE-----\n", "missing '-----BEGIN"},
      {"-----BEGIN SSH SIGNATURE-----\nU1NIU0lH\n", "missing '-----END SSH SIGNATURE-----'"},
      {"-----BEGIN SSH SIGNATURE-----\n-----END SSH SIGNATURE-----\n", "'-----END SSH"},
      {"-----BEGIN SSH SIGNATURE-----\n\n-----END SSH SIGNATURE-----\n", "empty"},
      {"-----BEGIN SSH SIGNATURE-----\nU1NI*0lH\n-----END SSH SIGNATURE-----\n", "invalid base64"},
      {"-----BEGIN SSH SIGNATURE-----\nU1NIU0l\n-----END SSH SIGNATURE-----\n", "invalid base64"},
      {Armor("SSHSIG"), "malformed signature: truncated"},
      {Armor("SSHSIX\0\0\0\1"), "no \"SSHSIG\" magic"},
      {Armor(std::string("SSHSIG\0\0\0\2", 10)), "unsupported SSHSIG version 2"},
      {Armor(std::string("SSHSIG\0\0\0\1\xff\xff\xff\xff", 14)), "truncated"},
  };
  for (const Armored& armored : armors) {
    CAPTURE(armored.text);
    auto verdict = tether::VerifySshSignature(data, armored.text, signers, "git", kNow);
    REQUIRE_FALSE(verdict);
    CHECK(verdict.error().code() == SignatureErrc::kMalformedSignature);
    CHECK_MESSAGE(verdict.error().message().find(armored.message) != std::string::npos,
                  verdict.error().message());
  }

  const SignatureErrc refusals[] = {
      SignatureErrc::kMalformedSignature, SignatureErrc::kUnsupportedAlgorithm,
      SignatureErrc::kWrongNamespace,     SignatureErrc::kUnknownKey,
      SignatureErrc::kBadSignature,
  };
  auto is_refusal = [&](const tether::Result<SignatureVerdict>& verdict) {
    if (verdict) return false;
    for (const SignatureErrc errc : refusals) {
      if (verdict.error().code() == errc) return true;
    }
    return false;
  };
  for (const Key* key : {&keys.ed25519, &keys.ecdsa256, &keys.rsa}) {
    CAPTURE(key->name);
    const std::string armored = SshKeygenSign(*key, data);
    REQUIRE(tether::VerifySshSignature(data, armored, signers, "git", kNow));
    const std::string blob = Dearmor(armored);
    int failures = 0;
    // Every truncation of the armor and of the blob.
    for (std::size_t length = 0; length < armored.size() - 1; ++length) {
      const bool refused = is_refusal(
          tether::VerifySshSignature(data, armored.substr(0, length), signers, "git", kNow));
      failures += refused ? 0 : 1;
    }
    for (std::size_t length = 0; length < blob.size(); ++length) {
      const bool refused = is_refusal(
          tether::VerifySshSignature(data, Armor(blob.substr(0, length)), signers, "git", kNow));
      failures += refused ? 0 : 1;
    }
    // Every byte changed (one bit, all bits), and a huge length at every offset.
    for (std::size_t i = 0; i < blob.size(); ++i) {
      for (const unsigned char mask : {0x01, 0x80, 0xff}) {
        std::string corrupted = blob;
        corrupted[i] = static_cast<char>(corrupted[i] ^ mask);
        failures +=
            is_refusal(tether::VerifySshSignature(data, Armor(corrupted), signers, "git", kNow))
                ? 0
                : 1;
      }
      if (i + 4 <= blob.size()) {
        std::string corrupted = blob;
        corrupted.replace(i, 4, "\xff\xff\xff\xf0");
        failures +=
            is_refusal(tether::VerifySshSignature(data, Armor(corrupted), signers, "git", kNow))
                ? 0
                : 1;
      }
    }
    // Trailing data.
    failures +=
        is_refusal(tether::VerifySshSignature(data, Armor(blob + "x"), signers, "git", kNow)) ? 0
                                                                                              : 1;
    CHECK(failures == 0);
  }

  // Random bytes behind a valid preamble, from a fixed seed.
  std::uint64_t state = 0x9e3779b97f4a7c15ULL;
  auto next = [&state]() {
    state ^= state << 13;
    state ^= state >> 7;
    state ^= state << 17;
    return state;
  };
  int failures = 0;
  for (int round = 0; round < 2000; ++round) {
    std::string blob("SSHSIG\0\0\0\1", 10);
    const std::size_t length = next() % 300;
    for (std::size_t i = 0; i < length; ++i) {
      // Mostly small length fields, so the parser gets deep into the structure.
      const auto value = next();
      blob += static_cast<char>(value % 4 == 0 ? 0 : value >> 8);
    }
    failures +=
        is_refusal(tether::VerifySshSignature(data, Armor(blob), signers, "git", kNow)) ? 0 : 1;
  }
  CHECK(failures == 0);
}

TEST_CASE("Garbage allowed_signers text is parsed or refused without crashing") {
  std::uint64_t state = 42;
  auto next = [&state]() {
    state = state * 6364136223846793005ULL + 1442695040888963407ULL;
    return state >> 33;
  };
  const std::string pieces[] = {"alice",
                                " ",
                                "\t",
                                ",",
                                "\"",
                                "=",
                                "namespaces=",
                                "valid-after=",
                                "\"20200101Z\"",
                                "cert-authority",
                                "ssh-ed25519",
                                "ssh-rsa",
                                "AAAA",
                                "AAAAC3NzaC1lZDI1NTE5AAAAIA==",
                                "#",
                                "\n",
                                "\\\"",
                                "!"};
  for (int round = 0; round < 3000; ++round) {
    std::string text;
    const std::size_t count = next() % 20;
    for (std::size_t i = 0; i < count; ++i) text += pieces[next() % std::size(pieces)];
    auto signers = tether::ParseAllowedSigners(text, "f");
    if (!signers) {
      CHECK(signers.error().code() == SignatureErrc::kBadAllowedSigners);
      CHECK(signers.error().message().starts_with("f:"));
    }
  }
}

TEST_CASE("Signature errors are a std::error_category callers can compare with") {
  const tether::Error error(SignatureErrc::kUnknownKey, "key is not in allowed_signers");
  CHECK(error.code() == SignatureErrc::kUnknownKey);
  CHECK(error.code() != SignatureErrc::kBadSignature);
  CHECK(error.code().category() == tether::SignatureCategory());
  CHECK(std::string(tether::SignatureCategory().name()) == "tether.signature");
  CHECK(std::error_code(SignatureErrc::kKeyExpired).message() == "signing key has expired");
  CHECK_FALSE(error.Is(std::errc::invalid_argument));
}

namespace {

std::string FromHex(std::string_view hex) {
  std::string bytes;
  for (std::size_t i = 0; i + 1 < hex.size(); i += 2) {
    bytes += static_cast<char>(std::stoi(std::string(hex.substr(i, 2)), nullptr, 16));
  }
  return bytes;
}

// The three strings of an ECDSA public key line ("type base64"): type, curve and point.
std::vector<std::string> EcdsaFields(const std::string& line) {
  const auto blob = tether::Base64Decode(line.substr(line.find(' ') + 1));
  REQUIRE(blob);
  tether::ssh::WireReader reader(*blob);
  std::vector<std::string> fields;
  for (std::string_view field; reader.ReadString(field);) fields.emplace_back(field);
  REQUIRE(fields.size() == 3);
  return fields;
}

// The line with its point replaced by `point`.
std::string WithPoint(const std::string& line, const std::string& point) {
  const auto fields = EcdsaFields(line);
  std::string changed;
  tether::ssh::PutString(changed, fields[0]);
  tether::ssh::PutString(changed, fields[1]);
  tether::ssh::PutString(changed, point);
  return fields[0] + " " + tether::Base64Encode(changed);
}

// The point of an ECDSA key line.
std::string PointOf(const std::string& line) { return EcdsaFields(line)[2]; }

}  // namespace

TEST_CASE("Points off the curve or past the field are refused, as ssh-keygen refuses them") {
  Keys& keys = TestKeys();
  auto refused = [&](const std::string& line) {
    const auto blob = tether::Base64Decode(line.substr(line.find(' ') + 1));
    REQUIRE(blob);
    auto key = tether::ssh::ParsePublicKey(*blob);
    REQUIRE_FALSE(key);
    CHECK(key.error().message().starts_with("invalid ecdsa-sha2-nistp"));
    const std::string file = keys.ws.WriteNew("bad-key", line + "\n");
    CHECK_FALSE(keys.ws.Run({"ssh-keygen", "-l", "-f", file}, {}, {}, false).ok());
  };
  for (const Key* key : {&keys.ecdsa256, &keys.ecdsa384, &keys.ecdsa521}) {
    CAPTURE(key->name);
    // The key as ssh-keygen made it parses.
    const auto blob = tether::Base64Decode(key->public_key.substr(key->public_key.find(' ') + 1));
    REQUIRE(blob);
    REQUIRE(tether::ssh::ParsePublicKey(*blob));
    // y + 1: not on the curve.
    std::string point = PointOf(key->public_key);
    for (std::size_t i = point.size(); i-- > 1;) {
      if (++point[i] != '\0') break;
    }
    refused(WithPoint(key->public_key, point));
  }
  // P-521's prime is 2^521 - 1: x + p fits in the 66 bytes of a coordinate, and is the same
  // point modulo p. A reader that reduces coordinates would take it for the key.
  std::string point = PointOf(keys.ecdsa521.public_key);
  for (std::size_t i = 66; i >= 1; --i) {  // x - 1
    if (point[i]-- != '\0') break;
  }
  point[1] = static_cast<char>(point[1] + 2);  // + 2^521
  refused(WithPoint(keys.ecdsa521.public_key, point));
}

TEST_CASE("Ed25519: RFC 8032's test vector verifies; the same signature with S + L does not") {
  // RFC 8032 section 7.1, TEST 1 (the empty message).
  std::string blob;
  tether::ssh::PutString(blob, "ssh-ed25519");
  tether::ssh::PutString(
      blob, FromHex("d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a"));
  auto key = tether::ssh::ParsePublicKey(blob);
  REQUIRE(key);
  tether::ssh::RawSignature signature{
      "ssh-ed25519", FromHex("e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e06522490155"
                             "5fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b")};
  CHECK(tether::ssh::VerifyRaw(*key, signature, ""));
  CHECK_FALSE(tether::ssh::VerifyRaw(*key, signature, "x"));
  // S + L, little-endian: the same point equation holds, so only the check that S is below
  // the order refuses it (RFC 8032 5.1.7).
  const std::string order =
      FromHex("edd3f55c1a631258d69cf7a2def9de1400000000000000000000000000000010");
  unsigned carry = 0;
  for (std::size_t i = 0; i < 32; ++i) {
    const unsigned sum = static_cast<unsigned char>(signature.bytes[32 + i]) +
                         static_cast<unsigned char>(order[i]) + carry;
    signature.bytes[32 + i] = static_cast<char>(sum & 0xff);
    carry = sum >> 8;
  }
  REQUIRE(carry == 0);
  CHECK_FALSE(tether::ssh::VerifyRaw(*key, signature, ""));
}
