// source.poll_url: a cheap "has anything changed?" before a poll talks Git.
//
// The URL is fetched with the validators of the last answer a successful cycle followed
// (If-None-Match with its ETag, If-Modified-Since with its Last-Modified). A 304, or a
// 200 whose body is the one seen then, means no change: the poll ends there, with no Git
// talk and no cycle. Anything else (a new body, another status, an error) falls back to
// the normal poll. A new answer is kept only once a cycle that started after it has
// asked the Git source and succeeded: a failed or earlier cycle never makes tetherd
// believe it has seen a change it has not fetched. Validators of a file modified within
// two seconds of the answer are not used (they count seconds, and a second change in the
// same second would not change them): the next check compares bodies instead.
//
// Works with a static file a web server serves with ETag or Last-Modified (the repo's
// dumb-HTTP info/refs, kept current by `git update-server-info`) and with a forge API
// that answers with an ETag (GitHub's GET /repos/OWNER/REPO/commits/REF: the request
// asks for application/vnd.github.sha first).
//
// Threading: the daemon's loop only (Request and Read are pure bookkeeping).
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "agent/config/agent_config.hpp"
#include "common/error.hpp"
#include "common/http_client.hpp"

namespace tether {

enum class SignalAnswer {
  kUnchanged,  // no Git talk needed
  kChanged,    // poll the Git source
  kError,      // poll the Git source (and say why)
};

// "unchanged", "changed", "error": the metric label.
[[nodiscard]] const char* SignalAnswerName(SignalAnswer answer);

class ChangeSignal {
 public:
  // The request for the next check of `source.poll_url` (which must be set). The token of
  // source.token_file (`token`, "" for none) goes only over https:// and only to the host
  // and port of an https:// source.url, as for Git: "user:password" as Basic, anything
  // else as Bearer.
  [[nodiscard]] HttpRequest Request(const SourceConfig& source, const std::string& token) const;

  // What the check's outcome says. `cycle` is the number of the last cycle started: a
  // changed answer is kept (Confirm) only by a later one.
  [[nodiscard]] SignalAnswer Read(const Result<HttpResponse>& response, std::uint64_t cycle);

  // Cycle number `cycle`, which asked the Git source, has ended; `ok`: it succeeded.
  void CycleEnded(std::uint64_t cycle, bool ok);

  // Forgets every answer (source.poll_url changed on reload).
  void Reset();

 private:
  struct Seen {
    std::string etag;
    std::string last_modified;
    std::string body_digest;
  };
  std::optional<Seen> confirmed_;  // what the last successful cycle followed
  std::optional<Seen> pending_;    // a changed answer, until a later cycle succeeds
  std::uint64_t pending_after_ = 0;
};

}  // namespace tether
