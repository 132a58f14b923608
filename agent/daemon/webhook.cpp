#include "agent/daemon/webhook.hpp"

#include <algorithm>
#include <cctype>

#include <nlohmann/json.hpp>

#include "common/hmac.hpp"

namespace tether {

namespace {

std::string Lower(std::string_view text) {
  std::string lower(text);
  std::transform(lower.begin(), lower.end(), lower.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return lower;
}

// True when `hex` (any case, an optional "sha256=" in front when `prefixed`) is the
// HMAC of the body.
bool SignatureMatches(std::string_view given, bool prefixed, std::string_view secret,
                      std::string_view body) {
  std::string value = Lower(given);
  if (prefixed) {
    if (value.rfind("sha256=", 0) != 0) return false;
    value.erase(0, 7);
  }
  const std::string expected = HmacSha256Hex(secret, body);
  return !expected.empty() && ConstantTimeEqual(value, expected);
}

}  // namespace

WebhookCheck CheckWebhook(const HttpServerRequest& request, std::string_view secret,
                          std::string_view ref) {
  if (request.method != "POST") {
    return {WebhookVerdict::kBadMethod, "", "only POST is accepted"};
  }
  // Who sent it, by the first authentication header present; a wrong one is refused
  // even when another header would have matched.
  struct Form {
    const char* header;
    const char* forge;
    const char* event_header;
    enum { kHmacPrefixed, kHmacHex, kToken } kind;
  };
  static constexpr Form kForms[] = {
      {"X-Hub-Signature-256", "github", "X-GitHub-Event", Form::kHmacPrefixed},
      {"X-Gitea-Signature", "gitea", "X-Gitea-Event", Form::kHmacHex},
      {"X-Forgejo-Signature", "gitea", "X-Forgejo-Event", Form::kHmacHex},
      {"X-Gitlab-Token", "gitlab", "X-Gitlab-Event", Form::kToken},
      {"X-Tether-Signature", "tether", "", Form::kHmacPrefixed},
  };
  const Form* form = nullptr;
  for (const auto& candidate : kForms) {
    if (!request.Header(candidate.header).empty()) {
      form = &candidate;
      break;
    }
  }
  if (form == nullptr) {
    return {WebhookVerdict::kUnauthorized, "",
            "no signature (X-Hub-Signature-256, X-Gitlab-Token, X-Gitea-Signature or "
            "X-Tether-Signature)"};
  }
  const std::string_view given = request.Header(form->header);
  // A token is compared through its HMAC, so that the time taken does not even depend on
  // the secret's length.
  const bool authentic =
      form->kind == Form::kToken
          ? ConstantTimeEqual(HmacSha256Hex(secret, given), HmacSha256Hex(secret, secret))
          : SignatureMatches(given, form->kind == Form::kHmacPrefixed, secret, request.body);
  if (!authentic) {
    return {WebhookVerdict::kUnauthorized, "", std::string("wrong ") + form->header};
  }

  // Which event: forges say it in a header; a ping (sent when a hook is created) or any
  // event that is not a push wakes nothing.
  if (*form->event_header != '\0') {
    const std::string event = Lower(request.Header(form->event_header));
    const bool push =
        event == "push" || event == "push hook" || event == "tag push hook" || event.empty();
    if (!push) return {WebhookVerdict::kIgnored, form->forge, "event '" + event + "' ignored"};
  }
  // Which ref: a JSON body's "ref". A form-encoded body (GitHub's other content type) or
  // one without a ref cannot say: it wakes the poll, which costs one poll.
  const auto body = nlohmann::json::parse(request.body, nullptr, false);
  if (body.is_object()) {
    const auto found = body.find("ref");
    if (found != body.end() && found->is_string()) {
      const auto& pushed = found->get_ref<const std::string&>();
      if (pushed != ref) {
        return {WebhookVerdict::kIgnored, form->forge,
                "a push to " + pushed + ", not " + std::string(ref)};
      }
    }
  }
  return {WebhookVerdict::kTrigger, form->forge, "poll started"};
}

int WebhookStatus(WebhookVerdict verdict) {
  switch (verdict) {
    case WebhookVerdict::kTrigger:
      return 202;
    case WebhookVerdict::kIgnored:
      return 200;
    case WebhookVerdict::kUnauthorized:
      return 401;
    case WebhookVerdict::kBadMethod:
      return 405;
  }
  return 500;
}

const char* WebhookVerdictName(WebhookVerdict verdict) {
  switch (verdict) {
    case WebhookVerdict::kTrigger:
      return "trigger";
    case WebhookVerdict::kIgnored:
      return "ignored";
    case WebhookVerdict::kUnauthorized:
      return "unauthorized";
    case WebhookVerdict::kBadMethod:
      return "bad_method";
  }
  return "unknown";
}

}  // namespace tether
