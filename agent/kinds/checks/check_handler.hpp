// The [[check]] kind: health checks after every apply.
#pragma once

#include <memory>

#include "agent/engine/engine.hpp"
#include "common/http_client.hpp"

namespace tether {

// The handler of [[check]] resources: nothing to apply; Verify runs every check (exec or
// HTTP), each retried until it passes or the health gate's deadline passes. An HTTP
// check's request is made by `fetch` (HttpFetch, or a child process's: tetherd-http).
[[nodiscard]] std::unique_ptr<KindHandler> MakeCheckHandler(HttpSender fetch);

}  // namespace tether
