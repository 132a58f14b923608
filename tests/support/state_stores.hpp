// A StateStore on the host's filesystem for a test's state dir, kept until the test program
// exits: an Engine holds a reference to its store, and tests make engines by value.
#pragma once

#include <map>
#include <memory>
#include <mutex>
#include <string>

#include "agent/state/state_store.hpp"
#include "common/filesystem.hpp"

namespace tether::testing {

inline StateStore& HostStateStore(const std::string& dir) {
  static auto* const host = RootedFilesystem::Open("/").value().release();
  static auto* const stores = new std::map<std::string, std::unique_ptr<StateStore>>();
  static std::mutex mutex;
  std::lock_guard lock(mutex);
  auto& store = (*stores)[dir];
  if (!store) store = std::make_unique<StateStore>(*host, dir);
  return *store;
}

}  // namespace tether::testing
