// The KindHandler of [[check]] resources: they change nothing on the host; they are the
// health gate after every apply (Verify). An exec check passes when its command exits
// with the expected status within its timeout, an HTTP check when the URL answers with
// the expected status. Each is retried until it passes or the gate's deadline passes, so
// a service that takes a few seconds to come up is not a failure.
#include <thread>
#include <utility>

#include "agent/kinds/checks/check_handler.hpp"
#include "common/http_client.hpp"
#include "common/process.hpp"

namespace tether {

namespace {

using Clock = std::chrono::steady_clock;

constexpr auto kRetryPause = std::chrono::milliseconds(500);

// The last non-empty line of `text`, for an error message.
std::string LastLine(std::string_view text) {
  while (!text.empty() && (text.back() == '\n' || text.back() == '\r')) text.remove_suffix(1);
  const auto newline = text.rfind('\n');
  std::string line(newline == std::string_view::npos ? text : text.substr(newline + 1));
  if (line.size() > 200) line = line.substr(0, 200) + "...";
  return line;
}

// Runs `check` once, giving it at most `budget`. Ok when it passed.
Status RunOnce(const CheckSpec& check, std::chrono::milliseconds budget, const HttpSender& fetch) {
  const auto timeout = std::min(check.timeout, budget);
  if (check.http) {
    HttpRequest request;
    request.url = *check.http;
    request.timeout = timeout;
    request.connect_timeout = timeout;
    request.max_response_body = 64 << 10;
    // A new connection for each attempt: a retry after a restart of the service must not
    // go to the old process, still draining a connection kept from the last attempt.
    request.headers.emplace_back("Connection", "close");
    auto response = fetch(request);
    if (!response) return Fail(response.error());
    if (response->status != check.expect_status) {
      return Fail(std::errc::protocol_error, *check.http + " answered " +
                                                 std::to_string(response->status) + ", expected " +
                                                 std::to_string(check.expect_status));
    }
    return {};
  }
  RunOptions options;
  options.argv = check.exec;
  options.timeout = timeout;
  options.max_output = 64 << 10;
  auto ran = Run(options);
  if (!ran) return Fail(ran.error());
  if (ran->timed_out || ran->exit_code != check.expect_exit) {
    std::string what = ran->Describe(timeout);
    if (!ran->timed_out) what += ", expected " + std::to_string(check.expect_exit);
    const std::string output = LastLine(ran->err.empty() ? ran->out : ran->err);
    if (!output.empty()) what += ": " + output;
    return Fail(std::errc::protocol_error, what);
  }
  return {};
}

class CheckHandler final : public KindHandler {
 public:
  explicit CheckHandler(HttpSender fetch) : fetch_(std::move(fetch)) {}

  bool Handles(ResourceKind kind) const override { return kind == ResourceKind::kCheck; }

  Result<Action> Plan(const Resource& resource, const InventoryEntry* /*previous*/,
                      bool /*full_audit*/, const PlanContext& /*context*/) override {
    Action action;  // nothing to apply: a check runs after every apply
    action.id = resource.id;
    return action;
  }

  Result<Action> PlanPrune(const std::string& id, const InventoryEntry& /*entry*/) override {
    Action action;
    action.id = id;
    return action;
  }

  Result<nlohmann::json> Begin(const PlannedAction& planned, const std::string& /*tag*/) override {
    return Fail(std::errc::not_supported, "'" + planned.action.id + "' has nothing to apply");
  }

  Status Apply(std::vector<Change>& changes, Transaction& /*transaction*/) override {
    if (!changes.empty()) changes.front().failed = true;
    return Fail(std::errc::not_supported, "checks have nothing to apply");
  }

  Status Undo(const JournalStep& /*step*/) override { return {}; }
  bool KeepsAside(const nlohmann::json& /*undo*/) const override { return false; }
  Status Discard(const JournalStep& /*step*/) override { return {}; }

  Status Verify(const DesiredState& desired, const RefusedIds& /*refused*/,
                Clock::time_point deadline) override {
    for (const auto& resource : desired.resources) {
      const auto* check = std::get_if<CheckSpec>(&resource.spec);
      if (check == nullptr) continue;
      Status last;
      do {
        const auto left =
            std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
        last = RunOnce(*check, std::max(left, std::chrono::milliseconds(1)), fetch_);
        if (last) break;
        if (Clock::now() + kRetryPause >= deadline) break;
        std::this_thread::sleep_for(kRetryPause);
      } while (Clock::now() < deadline);
      if (!last) {
        return Fail(Error(last.error().code(),
                          "check '" + check->name + "' failed: " + last.error().message()));
      }
    }
    return {};
  }

 private:
  HttpSender fetch_;
};

}  // namespace

std::unique_ptr<KindHandler> MakeCheckHandler(HttpSender fetch) {
  return std::make_unique<CheckHandler>(std::move(fetch));
}

}  // namespace tether
