// A report receiver not written here: tests/agent/report_receiver.py, Python's http.server
// on 127.0.0.1, HTTP/1.0 over TLS (closing without close_notify), storing the reports it
// receives. The script's path comes from TETHER_REPORT_RECEIVER (set by meson).
#pragma once

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include <doctest/doctest.h>
#include <nlohmann/json.hpp>

#include "common/process.hpp"
#include "tests/support/git_server.hpp"
#include "tests/support/test_ca.hpp"

namespace tether::testing {

struct ReceiverOptions {
  std::string refuse{};  // --refuse FILE: 503 to the reports whose event FILE names
  std::string mode{};    // --mode: early, retry-after or hang-up
  PortPicker port = PickFreePort;
};

class PythonReceiver : public ServerProcess {
 public:
  explicit PythonReceiver(const CertificateFiles& certificate, const ReceiverOptions& options = {})
      : ServerProcess("report-receiver") {
    const char* script = std::getenv("TETHER_REPORT_RECEIVER");
    REQUIRE_MESSAGE(script != nullptr, "TETHER_REPORT_RECEIVER is set by meson");
    Start(
        [&](int port) {
          // The interpreter by its real path: the harness knows a server by its executable.
          std::vector<std::string> argv = {std::filesystem::canonical("/usr/bin/python3").string(),
                                           script,
                                           "--port",
                                           std::to_string(port),
                                           "--store",
                                           store(),
                                           "--cert",
                                           certificate.cert,
                                           "--key",
                                           certificate.key};
          if (!options.refuse.empty()) argv.insert(argv.end(), {"--refuse", options.refuse});
          if (!options.mode.empty()) argv.insert(argv.end(), {"--mode", options.mode});
          return argv;
        },
        kCleanEnvironment, options.port);
  }
  [[nodiscard]] static std::string UrlFor(int port) {
    return "https://localhost:" + std::to_string(port) + "/reports";
  }
  [[nodiscard]] std::string url() const { return UrlFor(port()); }
  [[nodiscard]] std::string store() const { return dir().Path("received.jsonl"); }
  // What it stored, one object per report received: id, idempotency_key, created_at,
  // cloudevent, cloudevent_errors.
  [[nodiscard]] std::vector<nlohmann::json> Received() const {
    std::ifstream file(store());
    std::vector<nlohmann::json> received;
    for (std::string line; std::getline(file, line);) {
      received.push_back(nlohmann::json::parse(line));
    }
    return received;
  }
};

}  // namespace tether::testing
