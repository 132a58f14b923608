#include "common/worker_client.hpp"

#include <chrono>
#include <string>
#include <thread>

#include <doctest/doctest.h>

using namespace std::chrono_literals;

namespace {

// A worker that is /bin/sh running `script` (reading requests a line at a time).
tether::WorkerClient ShWorker(const std::string& script) {
  return tether::WorkerClient("test worker", {"/bin/sh", "-c", script}, {"PATH=/usr/bin:/bin"});
}

}  // namespace

TEST_CASE("A worker answers each request in turn, one worker for many") {
  auto client = ShWorker(R"(n=0; while read -r line; do n=$((n+1)); echo "{\"n\":$n}"; done)");
  for (int i = 1; i <= 3; ++i) {
    auto answer = client.Call({{"ask", i}}, 5s);
    REQUIRE_MESSAGE(answer, (answer ? "" : answer.error().message()));
    CHECK((*answer)["n"] == i);
  }
  CHECK(client.workers_started() == 1);
}

TEST_CASE("An answer nobody asked for is never taken for the next one's") {
  // Two lines for each request, in one write: the second is left over after the first call.
  auto client = ShWorker(
      R"(n=0; while read -r line; do n=$((n+1)); printf '{"n":%d}\n{"extra":%d}\n' $n $n; done)");
  auto first = client.Call({{"ask", 1}}, 5s);
  REQUIRE(first);
  CHECK((*first)["n"] == 1);
  auto second = client.Call({{"ask", 2}}, 5s);
  REQUIRE(second);
  CHECK((*second)["n"] == 1);  // a new worker's first answer, not {"extra":1}
  CHECK(client.workers_started() == 2);
}

TEST_CASE("A worker that does not answer in time is killed, and the next call gets a new one") {
  auto client =
      ShWorker(R"(read -r line; sleep 30; while read -r line; do echo '{"late":true}'; done)");
  auto answer = client.Call({{"ask", 1}}, 300ms);
  REQUIRE_FALSE(answer);
  CHECK(answer.error().Is(std::errc::timed_out));
  CHECK(client.worker_pid() == -1);
}

TEST_CASE("A worker past its age is replaced at the next call") {
  auto client = ShWorker(R"(while read -r line; do echo '{"ok":true}'; done)");
  client.set_max_age(500ms);
  REQUIRE(client.Call({{"ask", 1}}, 5s));
  REQUIRE(client.Call({{"ask", 2}}, 5s));
  CHECK(client.workers_started() == 1);  // young enough
  std::this_thread::sleep_for(600ms);
  REQUIRE(client.Call({{"ask", 3}}, 5s));
  CHECK(client.workers_started() == 2);
}
