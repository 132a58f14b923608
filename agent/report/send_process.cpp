#include "agent/report/send_process.hpp"
#include "common/json_fields.hpp"

#include <memory>
#include <mutex>
#include <utility>

#include <nlohmann/json.hpp>

#include "common/worker_client.hpp"

namespace tether {

namespace {

using Json = nlohmann::json;

Json RequestJson(const HttpRequest& request) {
  return {{"method", request.method},
          {"url", request.url},
          {"headers", HeadersToJson(request.headers)},
          {"body", request.body},
          {"ca_file", request.ca_file},
          {"client_cert", request.client_cert},
          {"client_key", request.client_key},
          {"connect_timeout_ms", request.connect_timeout.count()},
          {"timeout_ms", request.timeout.count()},
          {"max_response_body", request.max_response_body}};
}

}  // namespace

Json HeadersToJson(const std::vector<std::pair<std::string, std::string>>& headers) {
  Json json = Json::array();
  for (const auto& [name, value] : headers) json.push_back({name, value});
  return json;
}

std::vector<std::pair<std::string, std::string>> HeadersFromJson(const Json& json) {
  std::vector<std::pair<std::string, std::string>> headers;
  if (!json.is_array()) return headers;
  for (const auto& header : json) {
    if (header.is_array() && header.size() == 2 && header[0].is_string() && header[1].is_string()) {
      headers.emplace_back(header[0].get<std::string>(), header[1].get<std::string>());
    }
  }
  return headers;
}

ProcessSender StartProcessSender(std::vector<std::string> argv, std::vector<std::string> env) {
  struct Shared {
    Shared(std::vector<std::string> argv, std::vector<std::string> env)
        : child("HTTP child", std::move(argv), std::move(env)) {}
    std::mutex mutex;
    WorkerClient child;
  };
  auto shared = std::make_shared<Shared>(std::move(argv), std::move(env));
  // The child reads the CA and client certificate files once, as root, before it gives
  // root up: a rotated certificate is read by its next child, within this long.
  shared->child.set_max_age(kMaxChildAge);
  ProcessSender sender;
  sender.send = [shared](const HttpRequest& request) -> Result<HttpResponse> {
    const auto timeout = request.connect_timeout + request.timeout + std::chrono::seconds(5);
    std::lock_guard lock(shared->mutex);
    auto answer = shared->child.Call(RequestJson(request), timeout, request.cancel_fd);
    if (!answer) return Fail(answer.error());
    if (!answer->is_object()) {
      return Fail(std::errc::protocol_error, "the HTTP child sent a malformed answer");
    }
    const JsonFields fields(*answer);
    if (!fields.BoolOr("ok", false)) {
      const auto code = static_cast<int>(fields.IntOr("code", EIO));
      return Fail(Error(std::error_code(code, std::generic_category()),
                        fields.StringOr("message", "the HTTP child failed")));
    }
    HttpResponse response;
    response.status = static_cast<int>(fields.IntOr("status", 0));
    response.body = fields.StringOr("body");
    response.complete = fields.BoolOr("complete", true);
    response.incomplete = fields.StringOr("incomplete");
    const auto headers = answer->find("headers");
    response.headers = HeadersFromJson(headers != answer->end() ? *headers : Json());
    return response;
  };
  sender.release = [shared] {
    std::lock_guard lock(shared->mutex);
    shared->child.Close();
  };
  sender.children_started = [shared] {
    std::lock_guard lock(shared->mutex);
    return shared->child.workers_started();
  };
  return sender;
}

HttpSender MakeProcessSender(std::vector<std::string> argv, std::vector<std::string> env) {
  return StartProcessSender(std::move(argv), std::move(env)).send;
}

}  // namespace tether
