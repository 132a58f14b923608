// Which webhook requests wake the poll (agent/daemon/webhook.hpp), with signatures as the
// forges document them.
#include <doctest/doctest.h>

#include "agent/daemon/webhook.hpp"
#include "common/hmac.hpp"

namespace {

using tether::CheckWebhook;
using tether::HttpServerRequest;
using tether::WebhookVerdict;

constexpr char kRef[] = "refs/heads/main";
constexpr char kSecret[] = "It's a Secret to Everybody";

HttpServerRequest Push(std::vector<std::pair<std::string, std::string>> headers,
                       std::string body = R"({"ref":"refs/heads/main"})") {
  HttpServerRequest request;
  request.method = "POST";
  request.target = "/hook";
  request.headers = std::move(headers);
  request.body = std::move(body);
  return request;
}

}  // namespace

TEST_CASE("HMAC-SHA256 gives RFC 4231's and GitHub's documented values") {
  // RFC 4231, test cases 1 and 2.
  CHECK(tether::HmacSha256Hex(std::string(20, '\x0b'), "Hi There") ==
        "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7");
  CHECK(tether::HmacSha256Hex("Jefe", "what do ya want for nothing?") ==
        "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
  // RFC 4231 test case 6: a key longer than the block size.
  CHECK(tether::HmacSha256Hex(std::string(131, '\xaa'),
                              "Test Using Larger Than Block-Size Key - Hash Key First") ==
        "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54");
  // GitHub's documentation of X-Hub-Signature-256.
  CHECK(tether::HmacSha256Hex(kSecret, "Hello, World!") ==
        "757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17");
  CHECK(tether::ConstantTimeEqual("abc", "abc"));
  CHECK_FALSE(tether::ConstantTimeEqual("abc", "abd"));
  CHECK_FALSE(tether::ConstantTimeEqual("abc", "abcd"));
  CHECK(tether::ConstantTimeEqual("", ""));
}

TEST_CASE("Each forge's signed push to the followed ref wakes the poll") {
  const std::string body = R"({"ref":"refs/heads/main","after":"1234"})";
  const std::string hmac = tether::HmacSha256Hex(kSecret, body);
  struct Case {
    const char* forge;
    std::vector<std::pair<std::string, std::string>> headers;
  };
  const Case cases[] = {
      {"github", {{"X-GitHub-Event", "push"}, {"X-Hub-Signature-256", "sha256=" + hmac}}},
      {"gitlab", {{"X-Gitlab-Event", "Push Hook"}, {"X-Gitlab-Token", kSecret}}},
      {"gitlab", {{"X-Gitlab-Event", "Tag Push Hook"}, {"X-Gitlab-Token", kSecret}}},
      {"gitea", {{"X-Gitea-Event", "push"}, {"X-Gitea-Signature", hmac}}},
      {"gitea", {{"X-Forgejo-Event", "push"}, {"X-Forgejo-Signature", hmac}}},
      {"tether", {{"X-Tether-Signature", "sha256=" + hmac}}},
      // Header names in any case, hex in upper case.
      {"github", {{"x-github-event", "push"}, {"x-hub-signature-256", "SHA256=" + hmac}}},
  };
  for (const auto& c : cases) {
    CAPTURE(c.headers.back().first);
    const auto check = CheckWebhook(Push(c.headers, body), kSecret, kRef);
    CHECK(check.verdict == WebhookVerdict::kTrigger);
    CHECK(check.forge == c.forge);
    CHECK(tether::WebhookStatus(check.verdict) == 202);
  }
}

TEST_CASE("A webhook without the secret, another ref, another event or method wakes nothing") {
  const std::string body = R"({"ref":"refs/heads/main"})";
  const std::string hmac = tether::HmacSha256Hex(kSecret, body);
  const std::string wrong = tether::HmacSha256Hex("guess", body);
  auto verdict = [&](std::vector<std::pair<std::string, std::string>> headers,
                     std::string payload = R"({"ref":"refs/heads/main"})") {
    return CheckWebhook(Push(std::move(headers), std::move(payload)), kSecret, kRef).verdict;
  };
  // Unauthenticated: no header, a wrong signature, a signature of another body, the
  // token of another hook, a signature without its "sha256=".
  CHECK(verdict({}) == WebhookVerdict::kUnauthorized);
  CHECK(verdict({{"X-Hub-Signature-256", "sha256=" + wrong}}) == WebhookVerdict::kUnauthorized);
  CHECK(verdict({{"X-Hub-Signature-256", "sha256=" + hmac}}, R"({"ref":"refs/heads/mainx"})") ==
        WebhookVerdict::kUnauthorized);
  CHECK(verdict({{"X-Gitlab-Token", "It's a Secret"}}) == WebhookVerdict::kUnauthorized);
  CHECK(verdict({{"X-Hub-Signature-256", hmac}}) == WebhookVerdict::kUnauthorized);
  CHECK(verdict({{"X-Tether-Signature", "sha256="}}) == WebhookVerdict::kUnauthorized);
  // The first header present decides: a wrong GitHub signature is not saved by a right
  // GitLab token.
  CHECK(verdict({{"X-Hub-Signature-256", "sha256=" + wrong}, {"X-Gitlab-Token", kSecret}}) ==
        WebhookVerdict::kUnauthorized);
  CHECK(tether::WebhookStatus(WebhookVerdict::kUnauthorized) == 401);

  // Authentic, but not for us: a push to another branch, a ping, a merge request.
  const std::string feature = R"({"ref":"refs/heads/feature"})";
  CHECK(verdict({{"X-Tether-Signature", "sha256=" + tether::HmacSha256Hex(kSecret, feature)}},
                feature) == WebhookVerdict::kIgnored);
  CHECK(verdict({{"X-GitHub-Event", "ping"}, {"X-Hub-Signature-256", "sha256=" + hmac}}) ==
        WebhookVerdict::kIgnored);
  CHECK(verdict({{"X-Gitlab-Event", "Merge Request Hook"}, {"X-Gitlab-Token", kSecret}}) ==
        WebhookVerdict::kIgnored);
  // A body that names no ref (or is not JSON) cannot say: it wakes the poll.
  const std::string form = "payload=%7B%7D";
  CHECK(verdict({{"X-Hub-Signature-256", "sha256=" + tether::HmacSha256Hex(kSecret, form)}},
                form) == WebhookVerdict::kTrigger);
  CHECK(verdict({{"X-Gitlab-Token", kSecret}}, "{}") == WebhookVerdict::kTrigger);

  auto get = Push({{"X-Gitlab-Token", kSecret}});
  get.method = "GET";
  CHECK(CheckWebhook(get, kSecret, kRef).verdict == WebhookVerdict::kBadMethod);
  // The reason never holds the secret.
  CHECK(CheckWebhook(Push({{"X-Gitlab-Token", "nope"}}), kSecret, kRef).reason.find(kSecret) ==
        std::string::npos);
}
