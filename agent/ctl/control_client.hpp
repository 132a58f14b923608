// tetherctl's side of the control socket (docs/control-socket.md): one request, then one
// reply, or a stream of them (events).
#pragma once

#include <chrono>
#include <functional>
#include <string>

#include <nlohmann/json.hpp>

#include "common/error.hpp"

namespace tether {

// Sends `request` as one line of JSON to tetherd at `socket_path` and returns the reply
// line, parsed. Errors say what a person can do: "tetherd is not running (no control
// socket at PATH)", "permission denied: ...", a timeout.
[[nodiscard]] Result<nlohmann::json> CallDaemon(const std::string& socket_path,
                                                const nlohmann::json& request,
                                                std::chrono::milliseconds timeout);

// Sends `request`, then calls `on_reply` with each line tetherd sends, until it returns
// false (success) or the connection ends (an error: tetherd stopped or closed it).
// `first_timeout` bounds the wait for the first line; later ones take as long as they take.
[[nodiscard]] Status StreamDaemon(const std::string& socket_path, const nlohmann::json& request,
                                  std::chrono::milliseconds first_timeout,
                                  const std::function<bool(const nlohmann::json&)>& on_reply);

}  // namespace tether
