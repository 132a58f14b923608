// source.poll_url's bookkeeping (agent/daemon/change_signal.hpp): what is asked, and when an
// answer may say "no change".
#include <doctest/doctest.h>

#include "agent/daemon/change_signal.hpp"

namespace {

using tether::ChangeSignal;
using tether::HttpResponse;
using tether::SignalAnswer;

tether::Result<HttpResponse> Answer(int status, std::string body = "",
                                    std::string etag = "\"e1\"") {
  HttpResponse response;
  response.status = status;
  response.body = std::move(body);
  if (!etag.empty()) response.headers.emplace_back("ETag", std::move(etag));
  response.headers.emplace_back("Last-Modified", "Fri, 04 Dec 2026 05:00:00 GMT");
  response.headers.emplace_back("Date", "Fri, 04 Dec 2026 05:10:00 GMT");
  return response;
}

std::string HeaderOf(const tether::HttpRequest& request, const std::string& name) {
  for (const auto& [key, value] : request.headers) {
    if (key == name) return value;
  }
  return "";
}

tether::SourceConfig Source(std::string poll_url) {
  tether::SourceConfig source;
  source.url = "https://git.example.com/fleet/config.git";
  source.poll_url = std::move(poll_url);
  return source;
}

}  // namespace

TEST_CASE("A change is believed seen only once a cycle started after it has succeeded") {
  ChangeSignal signal;
  const auto source = Source("https://git.example.com/fleet/config.git/info/refs");
  // Nothing confirmed yet: no validators, and a 304 cannot mean "as before".
  auto request = signal.Request(source, "");
  CHECK(HeaderOf(request, "If-None-Match").empty());
  CHECK(signal.Read(Answer(304), 0) == SignalAnswer::kError);

  // A 200: changed. A cycle that started before the answer (number 1) does not confirm it.
  CHECK(signal.Read(Answer(200, "abc refs/heads/main\n"), 1) == SignalAnswer::kChanged);
  signal.CycleEnded(1, true);
  CHECK(HeaderOf(signal.Request(source, ""), "If-None-Match").empty());
  // A later one that failed drops it: the next answer is a change again.
  signal.CycleEnded(2, false);
  CHECK(signal.Read(Answer(200, "abc refs/heads/main\n"), 2) == SignalAnswer::kChanged);
  // A later one that succeeded confirms it: its validators are sent from now on.
  signal.CycleEnded(3, true);
  request = signal.Request(source, "");
  CHECK(HeaderOf(request, "If-None-Match") == "\"e1\"");
  CHECK(HeaderOf(request, "If-Modified-Since") == "Fri, 04 Dec 2026 05:00:00 GMT");
  CHECK(signal.Read(Answer(304), 3) == SignalAnswer::kUnchanged);
  // A server without validators: the same body again is no change, another body is.
  CHECK(signal.Read(Answer(200, "abc refs/heads/main\n", ""), 3) == SignalAnswer::kUnchanged);
  CHECK(signal.Read(Answer(200, "def refs/heads/main\n"), 3) == SignalAnswer::kChanged);
  // Errors and other statuses fall back to the Git poll.
  CHECK(signal.Read(tether::Fail(std::errc::connection_refused, "refused"), 3) ==
        SignalAnswer::kError);
  CHECK(signal.Read(Answer(500), 3) == SignalAnswer::kError);
  CHECK(signal.Read(Answer(302), 3) == SignalAnswer::kError);
  // A server that sends no validators: a 304 to a request that asked nothing is not
  // "as before".
  ChangeSignal bare;
  auto plain = Answer(200, "x", "");
  plain->headers.clear();
  CHECK(bare.Read(plain, 0) == SignalAnswer::kChanged);
  bare.CycleEnded(1, true);
  CHECK(HeaderOf(bare.Request(Source("http://h/x"), ""), "If-None-Match").empty());
  CHECK(bare.Read(Answer(304), 1) == SignalAnswer::kError);
  CHECK(bare.Read(plain, 1) == SignalAnswer::kUnchanged);  // the same body
  // Reset (poll_url changed): nothing is believed any more.
  signal.Reset();
  CHECK(signal.Read(Answer(304), 4) == SignalAnswer::kError);
}

TEST_CASE("The token goes to poll_url only over https and only to the host of source.url") {
  ChangeSignal signal;
  auto request =
      signal.Request(Source("https://git.example.com/fleet/config.git/info/refs"), "secret-token");
  CHECK(HeaderOf(request, "Authorization") == "Bearer secret-token");
  request = signal.Request(Source("https://git.example.com:443/x"), "ops:pa55");
  CHECK(HeaderOf(request, "Authorization") == "Basic b3BzOnBhNTU=");
  CHECK(HeaderOf(signal.Request(Source("https://git.example.com:8443/x"), "secret-token"),
                 "Authorization")
            .empty());
  CHECK(
      HeaderOf(signal.Request(Source("http://git.example.com/x"), "secret-token"), "Authorization")
          .empty());
  CHECK(HeaderOf(signal.Request(Source("https://signal.example.net/x"), "secret-token"),
                 "Authorization")
            .empty());
  CHECK(HeaderOf(signal.Request(Source("https://git.example.com.evil.net/x"), "secret-token"),
                 "Authorization")
            .empty());
  // GitHub's commits API answers with the bare commit id when asked for this type first.
  CHECK(HeaderOf(request, "Accept").rfind("application/vnd.github.sha", 0) == 0);
  CHECK(HeaderOf(request, "User-Agent").rfind("tetherd/", 0) == 0);
}

TEST_CASE("Validators of a file changed in the second of the answer are not relied on") {
  // nginx's ETag is the mtime (in seconds) and the size: a second push in the same second
  // would leave it as it was. Such an answer is compared by its body next time.
  ChangeSignal signal;
  const auto source = Source("http://git.example.com/fleet.git/info/refs");
  auto fresh = Answer(200, "abc refs/heads/main\n");
  for (auto& [name, value] : fresh->headers) {
    if (name == "Date") value = "Fri, 04 Dec 2026 05:00:01 GMT";  // 1 s after Last-Modified
  }
  CHECK(signal.Read(fresh, 0) == SignalAnswer::kChanged);
  signal.CycleEnded(1, true);
  auto request = signal.Request(source, "");
  CHECK(HeaderOf(request, "If-None-Match").empty());
  CHECK(HeaderOf(request, "If-Modified-Since").empty());
  // The file changed again in that second: same validators, another body.
  CHECK(signal.Read(Answer(200, "def refs/heads/main\n"), 1) == SignalAnswer::kChanged);
  signal.CycleEnded(2, true);
  // Settled now (10 minutes old): its validators are used.
  CHECK(HeaderOf(signal.Request(source, ""), "If-None-Match") == "\"e1\"");
  // A date that cannot be read: bodies are compared.
  ChangeSignal unsure;
  auto odd = Answer(200, "x");
  for (auto& [name, value] : odd->headers) {
    if (name == "Date") value = "yesterday";
  }
  CHECK(unsure.Read(odd, 0) == SignalAnswer::kChanged);
  unsure.CycleEnded(1, true);
  CHECK(HeaderOf(unsure.Request(source, ""), "If-None-Match").empty());
}
