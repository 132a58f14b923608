#include "agent/report/send_process.hpp"
#include "common/json_fields.hpp"

#include <utility>

#include <nlohmann/json.hpp>

#include "common/process.hpp"

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

HttpSender MakeProcessSender(std::vector<std::string> argv, std::vector<std::string> env) {
  return [argv = std::move(argv),
          env = std::move(env)](const HttpRequest& request) -> Result<HttpResponse> {
    RunOptions run;
    run.argv = argv;
    run.env = env;
    run.input = RequestJson(request).dump(-1, ' ', false, Json::error_handler_t::replace);
    run.timeout = request.connect_timeout + request.timeout + std::chrono::seconds(5);
    run.max_output = request.max_response_body * 2 + (64 << 10);
    run.cancel_fd = request.cancel_fd;
    auto ran = Run(run);
    if (!ran) return Fail(ran.error().WithContext("start the HTTP child"));
    const Json outcome = Json::parse(ran->out, nullptr, false);
    if (!ran->ok() || !outcome.is_object()) {
      return Fail(std::errc::io_error, "the HTTP child " + ran->Describe(run.timeout));
    }
    const JsonFields fields(outcome);
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
    const auto headers = outcome.find("headers");
    response.headers = HeadersFromJson(headers != outcome.end() ? *headers : Json());
    return response;
  };
}

}  // namespace tether
