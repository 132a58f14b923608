// The [[check]] kind: health checks after every apply.
#pragma once

#include <memory>

#include "agent/engine/engine.hpp"

namespace tether {

// The handler of [[check]] resources: nothing to apply; Verify runs every check (exec or
// HTTP), each retried until it passes or the health gate's deadline passes.
[[nodiscard]] std::unique_ptr<KindHandler> MakeCheckHandler();

}  // namespace tether
