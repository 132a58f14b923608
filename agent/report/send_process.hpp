// Sending an HTTP request from a child process (`tetherd-http --http-fetch`): the daemon
// delivers reports, and a cycle runs its HTTP checks, without linking OpenSSL or Beast
// (they stay small and start fast), and the TLS and HTTP parsing of what a server answers
// happen outside them.
//
// The child is kept between requests, and with it its connection to the endpoint (one TLS
// handshake for a burst of reports), until it is released. Requests go to its stdin as
// JSON, one a line (the bearer token with them, through the pipe only); each response or
// error comes back as one line on its stdout.
//
// Threading: a sender is thread-safe (calls take turns).
#pragma once

#include <functional>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "agent/report/reporter.hpp"

namespace tether {

struct ProcessSender {
  HttpSender send;  // sends one request through the child, started when none runs
  // Ends the child and the connection it keeps (EOF, then a second to go): for when no
  // request is expected soon. The next request starts a new child.
  std::function<void()> release;
  // How many children were started so far.
  std::function<int()> children_started;
};

// A child is replaced after this long, even while reports keep it busy.
inline constexpr std::chrono::minutes kMaxChildAge{10};

// A sender that runs `argv` (tetherd-http --http-fetch) with `env`, and kills the child
// when it outlives a request's own deadline by a few seconds, or when the request's
// cancel_fd becomes readable. Destroying the last copy of `send` and `release` ends the
// child as `release` does.
[[nodiscard]] ProcessSender StartProcessSender(std::vector<std::string> argv,
                                               std::vector<std::string> env);
// StartProcessSender's `send` alone: its child ends with it.
[[nodiscard]] HttpSender MakeProcessSender(std::vector<std::string> argv,
                                           std::vector<std::string> env);

// Headers as JSON ([[name, value], ...]) and back; malformed items are skipped.
[[nodiscard]] nlohmann::json HeadersToJson(
    const std::vector<std::pair<std::string, std::string>>& headers);
[[nodiscard]] std::vector<std::pair<std::string, std::string>> HeadersFromJson(
    const nlohmann::json& json);

// The child's side: reads requests from `in`, one JSON object a line, fetches each with
// one HttpClient (its connection kept between them), writes each outcome as a line on
// `out`, until `in` ends. Returns the exit status: 0 when every request was answered, 2
// for no request or a malformed one. With a `user`, it reads the first request's CA and
// client certificate files, then becomes that user (DropPrivileges) before it talks to a
// server; a failure of either is that request's outcome.
[[nodiscard]] int ServeHttpFetch(int in, int out, const std::string& user = "");

}  // namespace tether
