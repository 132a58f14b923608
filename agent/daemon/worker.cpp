#include "agent/daemon/worker.hpp"

#include <malloc.h>

#include <memory>

#include <boost/asio/post.hpp>

#include "agent/cycle/cycle_process.hpp"

namespace tether {

Worker::Worker(boost::asio::io_context& io) : io_(io), thread_([this] { Loop(); }) {}

Worker::~Worker() {
  {
    std::lock_guard lock(mutex_);
    stop_ = true;
  }
  wake_.notify_one();
  thread_.join();
}

void Worker::Start(CycleRunner runner, std::vector<ConfigFile> config_files, CycleOptions options,
                   Trigger trigger, std::function<void(const CycleResult&)> done,
                   std::optional<StartedCycle> started) {
  {
    std::lock_guard lock(mutex_);
    job_ = Job{std::move(runner), std::move(config_files), std::move(options),
               trigger,           std::move(done),         std::move(started)};
  }
  busy_ = true;
  wake_.notify_one();
}

void Worker::Loop() {
  while (true) {
    std::optional<Job> job;
    {
      std::unique_lock lock(mutex_);
      wake_.wait(lock, [&] { return stop_ || job_.has_value(); });
      if (!job_) return;  // stopping, nothing left to do
      job = std::move(job_);
      job_.reset();
    }
    auto result = std::make_shared<CycleResult>();
    result->trigger = job->trigger;
    result->started = std::chrono::system_clock::now();
    const auto start = std::chrono::steady_clock::now();
    CycleOutput output =
        job->started
            ? RunCycleProcess(std::move(*job->started), job->config_files, job->options)
            : RunCycleProcess(job->runner.argv, job->runner.env, job->config_files, job->options);
    job->started.reset();
    result->duration = std::chrono::duration_cast<std::chrono::milliseconds>(
        std::chrono::steady_clock::now() - start);
    result->exit_code = output.exit_code;
    result->summary = Summarize(output.report);
    result->report = std::move(output.report);
    job->options = CycleOptions();
    job->config_files.clear();
    // What the cycle allocated goes back to the system, not only to malloc: an idle
    // daemon stays small.
    malloc_trim(0);
    boost::asio::post(io_, [this, result, done = std::move(job->done)] {
      busy_ = false;
      done(*result);
    });
  }
}

}  // namespace tether
