// A report receiver not written here: tests/agent/report_receiver.py, Python's http.server
// on 127.0.0.1, HTTP/1.0 (or 1.1) over TLS (closing without close_notify), storing the
// reports it receives. The script's path comes from TETHER_REPORT_RECEIVER (set by meson).
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
  std::string mode{};    // --mode: early, retry-after, hang-up, interim, chunked, ...
  bool http11 = false;   // --http11: HTTP/1.1, connections kept between requests
  int idle_timeout = 0;  // --idle-timeout: seconds a kept connection may idle; 0: forever
  PortPicker port = PickFreePort;
};

// Plain HTTP when `certificate` is empty ({}).
class PythonReceiver : public ServerProcess {
 public:
  explicit PythonReceiver(const CertificateFiles& certificate, const ReceiverOptions& options = {})
      : ServerProcess("report-receiver"), tls_(!certificate.cert.empty()) {
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
                                           store()};
          if (!certificate.cert.empty()) {
            argv.insert(argv.end(), {"--cert", certificate.cert, "--key", certificate.key});
          }
          if (!options.refuse.empty()) argv.insert(argv.end(), {"--refuse", options.refuse});
          if (!options.mode.empty()) argv.insert(argv.end(), {"--mode", options.mode});
          if (options.http11) argv.emplace_back("--http11");
          if (options.idle_timeout > 0) {
            argv.insert(argv.end(), {"--idle-timeout", std::to_string(options.idle_timeout)});
          }
          return argv;
        },
        kCleanEnvironment, options.port);
  }
  [[nodiscard]] static std::string UrlFor(int port) {
    return "https://localhost:" + std::to_string(port) + "/reports";
  }
  [[nodiscard]] std::string url() const {
    return tls_ ? UrlFor(port()) : "http://127.0.0.1:" + std::to_string(port()) + "/reports";
  }
  [[nodiscard]] std::string store() const { return dir().Path("received.jsonl"); }
  // What it stored, one object per report received: id, idempotency_key, created_at,
  // cloudevent, cloudevent_errors, connection, expect, length (see the script).
  [[nodiscard]] std::vector<nlohmann::json> Received() const {
    std::ifstream file(store());
    std::vector<nlohmann::json> received;
    for (std::string line; std::getline(file, line);) {
      received.push_back(nlohmann::json::parse(line));
    }
    return received;
  }

 private:
  bool tls_;
};

// The reports a receiver stored, one JSON object a line in `path`.
inline std::vector<nlohmann::json> StoredReports(const std::string& path) {
  std::ifstream file(path);
  std::vector<nlohmann::json> stored;
  for (std::string line; std::getline(file, line);) stored.push_back(nlohmann::json::parse(line));
  return stored;
}

// nginx (nginx-light) terminating TLS with `certificate` and proxying every request to
// `upstream` (an http:// URL), as a receiver behind a reverse proxy is often deployed.
class NginxProxy : public ServerProcess {
 public:
  NginxProxy(const CertificateFiles& certificate, const std::string& upstream)
      : ServerProcess("report-proxy") {
    const std::string temp = dir().Path("temp");
    std::filesystem::create_directories(temp);
    std::string config = "daemon off;\nmaster_process off;\nworker_processes 1;\npid " +
                         dir().Path("nginx.pid") + ";\nerror_log " + dir().Path("error.log") +
                         ";\nevents { worker_connections 64; }\nhttp {\n  access_log off;\n";
    for (const char* kind : {"client_body", "proxy", "fastcgi", "uwsgi", "scgi"}) {
      config += "  " + std::string(kind) + "_temp_path " + temp + "/" + kind + ";\n";
    }
    config += "  server {\n    ssl_certificate " + certificate.cert +
              ";\n    ssl_certificate_key " + certificate.key + ";\n    location / { proxy_pass " +
              upstream + "; }\n";
    Start(
        [&](int port) -> std::vector<std::string> {
          dir().WriteFile("nginx.conf", config + "    listen 127.0.0.1:" + std::to_string(port) +
                                            " ssl;\n  }\n}\n");
          return {"/usr/sbin/nginx", "-c", dir().Path("nginx.conf"), "-e", dir().Path("error.log")};
        },
        kCleanEnvironment, PickFreePort);
  }
  [[nodiscard]] std::string url() const {
    return "https://localhost:" + std::to_string(port()) + "/reports";
  }
};

// lighttpd over TLS with `certificate`, its receiver a CGI program (a Python script run by
// mod_cgi) that stores each report's id, Idempotency-Key and created_at in store().
class LighttpdCgiReceiver : public ServerProcess {
 public:
  explicit LighttpdCgiReceiver(const CertificateFiles& certificate) : ServerProcess("report-cgi") {
    dir().WriteFile(
        "www/receive.cgi",
        "import json, os, sys\n"
        "report = json.loads(sys.stdin.buffer.read(int(os.environ['CONTENT_LENGTH'])))\n"
        "with open(" +
            Quote(store()) +
            ", 'a') as store:\n"
            "    store.write(json.dumps({'id': report.get('id'),\n"
            "        'idempotency_key': os.environ.get('HTTP_IDEMPOTENCY_KEY'),\n"
            "        'created_at': report.get('created_at')}) + '\\n')\n"
            "sys.stdout.write('Status: 200 OK\\r\\nContent-Type: "
            "text/plain\\r\\n\\r\\nstored\\n')\n");
    const std::string config =
        "server.modules = (\"mod_cgi\", \"mod_openssl\")\n"
        "server.document-root = " +
        Quote(dir().Path("www")) +
        "\n"
        "server.bind = \"127.0.0.1\"\n"
        "cgi.assign = (\".cgi\" => " +
        Quote(std::filesystem::canonical("/usr/bin/python3").string()) +
        ")\n"
        "ssl.engine = \"enable\"\n"
        "ssl.pemfile = " +
        Quote(certificate.cert) +
        "\n"
        "ssl.privkey = " +
        Quote(certificate.key) + "\n";
    Start(
        [&](int port) -> std::vector<std::string> {
          dir().WriteFile("lighttpd.conf", config + "server.port = " + std::to_string(port) + "\n");
          return {"/usr/sbin/lighttpd", "-D", "-f", dir().Path("lighttpd.conf")};
        },
        kCleanEnvironment, PickFreePort);
  }
  [[nodiscard]] std::string url() const {
    return "https://localhost:" + std::to_string(port()) + "/receive.cgi";
  }
  [[nodiscard]] std::string store() const { return dir().Path("received.jsonl"); }

 private:
  // A quoted string, for lighttpd's configuration and for Python.
  static std::string Quote(const std::string& text) { return "\"" + text + "\""; }
};

}  // namespace tether::testing
