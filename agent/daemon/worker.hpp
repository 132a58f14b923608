// The daemon's worker thread: one cycle at a time, each in a process of its own
// (cycle_process.hpp), its result handed back on the daemon's loop.
//
// Threading: Start and busy are called on the loop's thread only; `done` runs there too.
#pragma once

#include <chrono>
#include <condition_variable>
#include <functional>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include <boost/asio/io_context.hpp>

#include "agent/config/agent_config.hpp"
#include "agent/cycle/cycle_process.hpp"
#include "agent/cycle/cycle_report.hpp"
#include "agent/daemon/daemon_state.hpp"

namespace tether {

// What one cycle did.
struct CycleResult {
  Trigger trigger = Trigger::kStart;
  int exit_code = -1;
  std::chrono::system_clock::time_point started;
  std::chrono::milliseconds duration{0};
  CycleReport report;
  CycleSummary summary;  // of the report
};

// How the worker starts a cycle's process.
struct CycleRunner {
  std::vector<std::string> argv;
  std::vector<std::string> env;
};

class Worker {
 public:
  explicit Worker(boost::asio::io_context& io);
  ~Worker();  // waits for the cycle in progress
  Worker(const Worker&) = delete;
  Worker& operator=(const Worker&) = delete;

  // Starts a cycle, in `started` when given (a process started ahead), else in a process
  // started now; `done` runs on the loop afterwards. REQUIRES: !busy().
  void Start(CycleRunner runner, std::vector<ConfigFile> config_files, CycleOptions options,
             Trigger trigger, std::function<void(const CycleResult&)> done,
             std::optional<StartedCycle> started = std::nullopt);
  [[nodiscard]] bool busy() const { return busy_; }

 private:
  struct Job {
    CycleRunner runner;
    std::vector<ConfigFile> config_files;
    CycleOptions options;
    Trigger trigger;
    std::function<void(const CycleResult&)> done;
    std::optional<StartedCycle> started;
  };

  void Loop();

  boost::asio::io_context& io_;
  std::mutex mutex_;
  std::condition_variable wake_;
  std::optional<Job> job_;
  bool stop_ = false;
  bool busy_ = false;  // touched on the loop only
  std::thread thread_;
};

}  // namespace tether
