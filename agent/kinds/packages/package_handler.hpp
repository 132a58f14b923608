// The KindHandler of [[package]] resources ("package:NAME"), on a PackageManager.
//
// Plan: a package that is wanted present and installed at a version satisfying the request
// (any version when none is asked for; a glob pattern such as "1.22.*"; an exact version) is
// in sync; otherwise the newest available version satisfying the request is installed
// ("install V"), upgraded to or downgraded to ("upgrade OLD -> NEW"). A request no
// available version satisfies is a plan error naming the package and what is available.
// A package wanted absent and installed is removed (a delete).
// Prune: a package tether installed (its inventory entry `created`) is removed when the
// profile drops it; one tether found installed is left as it is.
// Apply: all the package changes of a batch are one transaction of the PackageManager.
// Undo: the version from before is installed again (while an archive still offers it: an
// error says so when none does), or the package removed when it was not installed before;
// nothing happens when the change was never made.
#pragma once

#include <chrono>
#include <memory>

#include "agent/engine/engine.hpp"
#include "agent/kinds/packages/package_manager.hpp"

namespace tether {

// `packages` must outlive the handler. `transaction_timeout` is the deadline of one
// package transaction (an apply, or the undo of one step).
[[nodiscard]] std::unique_ptr<KindHandler> MakePackageHandler(
    PackageManager& packages,
    std::chrono::milliseconds transaction_timeout = std::chrono::minutes(30));

}  // namespace tether
