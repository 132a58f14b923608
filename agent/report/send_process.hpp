// Sending a report's HTTP request from a child process (`tetherd-cycle --http-fetch`): the
// daemon delivers reports without linking OpenSSL or Beast (it stays small), and the TLS
// and HTTP parsing of what an endpoint answers happen outside the daemon.
//
// The request goes to the child's stdin as JSON (the bearer token with it, through the
// pipe only); the response or the error comes back on its stdout.
//
// Threading: the sender is thread-safe (each call has its own child).
#pragma once

#include <cstdio>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "agent/report/reporter.hpp"

namespace tether {

// A sender that runs `argv` (tetherd-cycle --http-fetch) with `env` for each request, and
// kills it when it outlives the request's own deadline by a few seconds.
[[nodiscard]] HttpSender MakeProcessSender(std::vector<std::string> argv,
                                           std::vector<std::string> env);

// Headers as JSON ([[name, value], ...]) and back; malformed items are skipped.
[[nodiscard]] nlohmann::json HeadersToJson(
    const std::vector<std::pair<std::string, std::string>>& headers);
[[nodiscard]] std::vector<std::pair<std::string, std::string>> HeadersFromJson(
    const nlohmann::json& json);

// The child's side: reads a request from `in`, fetches it with HttpFetch, writes the
// outcome on `out`. Returns the exit status: 0 when an outcome was written. With a
// `user`, it reads the request's CA and client certificate files first, then becomes that
// user (DropPrivileges) before it talks to the server; a failure of either is the outcome.
[[nodiscard]] int ServeHttpFetch(std::FILE* in, std::FILE* out, const std::string& user = "");

}  // namespace tether
