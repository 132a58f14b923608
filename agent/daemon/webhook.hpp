// Push webhooks: which requests wake the poll. A webhook is only a hint that the fleet
// repo may have changed; its payload is never trusted (the commit it names is not used:
// the poll fetches and verifies the head as any poll does). What is checked here is that
// the sender knows the shared secret, and that the push was to the ref tetherd follows.
//
// Accepted forms, each authenticated with the secret:
//   GitHub          X-Hub-Signature-256: sha256=HMAC-SHA256(secret, body), X-GitHub-Event
//   GitLab          X-Gitlab-Token: the secret itself, X-Gitlab-Event
//   Gitea, Forgejo  X-Gitea-Signature / X-Forgejo-Signature: HMAC hex, X-Gitea-Event
//   any other       X-Tether-Signature: sha256=HMAC-SHA256(secret, body)
// A JSON body's top-level "ref" (all of the above send one for a push) must name the
// followed ref; a body without one wakes the poll.
//
// Threading: pure functions.
#pragma once

#include <string>
#include <string_view>

#include "common/http_server.hpp"

namespace tether {

enum class WebhookVerdict {
  kTrigger,       // 202: authenticated, a push to the followed ref (or one that says no ref)
  kIgnored,       // 200: authenticated, but another ref or an event that is not a push
  kUnauthorized,  // 401: no signature or token, or a wrong one
  kBadMethod,     // 405: not a POST
};

struct WebhookCheck {
  WebhookVerdict verdict = WebhookVerdict::kUnauthorized;
  std::string forge;   // "github", "gitlab", "gitea", "tether"; "" when unauthenticated
  std::string reason;  // for the reply body and the debug log; never holds the secret
};

// Checks `request` against `secret` (non-empty) and the followed `ref` (a full ref name,
// e.g. "refs/heads/main"). Constant-time in the secret.
[[nodiscard]] WebhookCheck CheckWebhook(const HttpServerRequest& request, std::string_view secret,
                                        std::string_view ref);

// The HTTP status for a verdict.
[[nodiscard]] int WebhookStatus(WebhookVerdict verdict);

// "trigger", "ignored", "unauthorized", "bad_method": the metric label.
[[nodiscard]] const char* WebhookVerdictName(WebhookVerdict verdict);

}  // namespace tether
