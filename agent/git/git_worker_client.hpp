// The parent's side of the git worker (see git_worker.hpp): requests with a deadline.
// Threading: one caller at a time.
#pragma once

#include <string>
#include <vector>

#include "common/worker_client.hpp"

namespace tether {

class GitWorkerClient : public WorkerClient {
 public:
  // `worker_argv` starts a worker, e.g. {"/usr/sbin/tetherd", "--git-worker"}, with
  // environment `env` (the whole of it).
  GitWorkerClient(std::vector<std::string> worker_argv, std::vector<std::string> env)
      : WorkerClient("git worker", std::move(worker_argv), std::move(env)) {}
};

}  // namespace tether
