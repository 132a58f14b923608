// tetherctl's side of the control socket: one request, one reply (docs/control-socket.md).
#pragma once

#include <chrono>
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

}  // namespace tether
