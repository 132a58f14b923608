#include "common/systemd_bus.hpp"

#include <systemd/sd-bus.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <map>
#include <set>

#include "common/libsystemd.hpp"

namespace tether {

namespace {

using Clock = std::chrono::steady_clock;

constexpr char kService[] = "org.freedesktop.systemd1";
constexpr char kManagerPath[] = "/org/freedesktop/systemd1";
constexpr char kManager[] = "org.freedesktop.systemd1.Manager";
constexpr char kUnit[] = "org.freedesktop.systemd1.Unit";
constexpr char kProperties[] = "org.freedesktop.DBus.Properties";

struct BusUnref {
  void operator()(sd_bus* bus) const { Systemd().sd_bus_flush_close_unref(bus); }
};
struct MessageUnref {
  void operator()(sd_bus_message* message) const { Systemd().sd_bus_message_unref(message); }
};
struct SlotUnref {
  void operator()(sd_bus_slot* slot) const { Systemd().sd_bus_slot_unref(slot); }
};
using BusPtr = std::unique_ptr<sd_bus, BusUnref>;
using MessagePtr = std::unique_ptr<sd_bus_message, MessageUnref>;
using SlotPtr = std::unique_ptr<sd_bus_slot, SlotUnref>;

// An sd_bus_error freed on scope exit.
struct BusError {
  sd_bus_error error{};  // SD_BUS_ERROR_NULL, without its C compound literal
  BusError() = default;
  BusError(const BusError&) = delete;
  BusError& operator=(const BusError&) = delete;
  ~BusError() {
    if (error.name != nullptr || error.message != nullptr) Systemd().sd_bus_error_free(&error);
  }
};

// What `r` (a negative errno from sd-bus) and `error` (its D-Bus error, if set) say.
Error BusFailure(int r, const sd_bus_error& error, const std::string& what) {
  int code = -r;
  if (Systemd().sd_bus_error_is_set(&error) && error.message != nullptr &&
      error.message[0] != '\0' && code != ETIMEDOUT) {
    // systemd's own words say it all ("Unit app.service not found.").
    if (const int mapped = Systemd().sd_bus_error_get_errno(&error); mapped > 0) code = mapped;
    return Error(std::error_code(code, std::generic_category()), error.message);
  }
  const std::string why = code == ETIMEDOUT ? std::string("timed out") : std::strerror(code);
  return Error(std::error_code(code, std::generic_category()), what + ": " + why);
}

std::uint64_t Microseconds(Clock::duration left) {
  const auto us = std::chrono::duration_cast<std::chrono::microseconds>(left).count();
  return us <= 0 ? 1 : static_cast<std::uint64_t>(us);  // 0 would mean "the default"
}

const char* JobMethod(UnitJob job) {
  switch (job) {
    case UnitJob::kStart:
      return "StartUnit";
    case UnitJob::kStop:
      return "StopUnit";
    case UnitJob::kRestart:
      return "RestartUnit";
    case UnitJob::kReload:
      return "ReloadUnit";
  }
  return "StartUnit";
}

// The interface holding a unit's own Result property, by the unit's type; null when its
// type has none.
const char* ResultInterface(const std::string& unit) {
  static constexpr std::pair<const char*, const char*> kTypes[] = {
      {".service", "org.freedesktop.systemd1.Service"},
      {".socket", "org.freedesktop.systemd1.Socket"},
      {".mount", "org.freedesktop.systemd1.Mount"},
      {".automount", "org.freedesktop.systemd1.Automount"},
      {".swap", "org.freedesktop.systemd1.Swap"},
      {".timer", "org.freedesktop.systemd1.Timer"},
      {".path", "org.freedesktop.systemd1.Path"},
      {".scope", "org.freedesktop.systemd1.Scope"},
  };
  const auto dot = unit.rfind('.');
  if (dot == std::string::npos) return nullptr;
  const std::string type = unit.substr(dot);
  for (const auto& [suffix, interface] : kTypes) {
    if (type == suffix) return interface;
  }
  return nullptr;
}

// The JobRemoved signals seen while waiting: job object path -> result.
int OnJobRemoved(sd_bus_message* message, void* userdata, sd_bus_error* /*error*/) {
  auto* results = static_cast<std::map<std::string, std::string>*>(userdata);
  std::uint32_t id = 0;
  const char* path = nullptr;
  const char* unit = nullptr;
  const char* result = nullptr;
  if (Systemd().sd_bus_message_read(message, "uoss", &id, &path, &unit, &result) >= 0) {
    (*results)[path] = result;
  }
  return 0;
}

Result<BusPtr> Connect(const std::string& address) {
  sd_bus* raw = nullptr;
  int r = 0;
  const std::string what =
      address.empty() ? std::string("connect to the system bus") : "connect to '" + address + "'";
  std::string unloadable;
  if (LoadLibsystemd(&unloadable) == nullptr) {
    return Fail(std::errc::function_not_supported, what + ": " + unloadable);
  }
  if (address.empty()) {
    r = Systemd().sd_bus_open_system(&raw);
    if (r < 0) return FailErrno(-r, what);
    return BusPtr(raw);
  }
  r = Systemd().sd_bus_new(&raw);
  if (r < 0) return FailErrno(-r, what);
  BusPtr bus(raw);
  if ((r = Systemd().sd_bus_set_address(bus.get(), address.c_str())) < 0 ||
      (r = Systemd().sd_bus_set_bus_client(bus.get(), 1)) < 0 ||
      (r = Systemd().sd_bus_start(bus.get())) < 0) {
    return FailErrno(-r, what);
  }
  return bus;
}

class SdBus final : public SystemdBus {
 public:
  SdBus(std::string address, BusPtr bus) : address_(std::move(address)), bus_(std::move(bus)) {}

  Status DaemonReload(std::chrono::milliseconds timeout) override {
    const auto deadline = Clock::now() + timeout;
    // systemd answers once it has finished reloading.
    auto reply = Call(kManagerPath, kManager, "Reload", deadline, nullptr);
    if (!reply) return Fail(reply.error().WithContext("reload systemd"));
    return {};
  }

  Status RunJob(UnitJob job, const std::string& unit, std::chrono::milliseconds timeout) override {
    const auto deadline = Clock::now() + timeout;
    const std::string what = std::string(UnitJobName(job)) + " '" + unit + "'";
    if (auto open = EnsureOpen(); !open) return Fail(open.error().WithContext(what));
    // Subscribed before the job is asked for, so that its end cannot be missed; the match
    // goes with the slot.
    std::map<std::string, std::string> removed;
    sd_bus_slot* raw_slot = nullptr;
    Systemd().sd_bus_set_method_call_timeout(bus_.get(), Microseconds(deadline - Clock::now()));
    int r = Systemd().sd_bus_match_signal(bus_.get(), &raw_slot, kService, kManagerPath, kManager,
                                          "JobRemoved", OnJobRemoved, &removed);
    if (r < 0) return FailErrno(-r, what + ": subscribe to JobRemoved");
    SlotPtr slot(raw_slot);

    auto reply = Call(kManagerPath, kManager, JobMethod(job), deadline, [&](sd_bus_message* m) {
      return Systemd().sd_bus_message_append(m, "ss", unit.c_str(), "replace");
    });
    if (!reply) return Fail(reply.error().WithContext(what));
    const char* path = nullptr;
    if ((r = Systemd().sd_bus_message_read(reply->get(), "o", &path)) < 0) {
      return FailErrno(-r, what + ": read the job");
    }
    const std::string job_path = path;

    std::string result;
    while (true) {
      if (auto it = removed.find(job_path); it != removed.end()) {
        result = it->second;
        break;
      }
      r = Systemd().sd_bus_process(bus_.get(), nullptr);
      if (r < 0) return FailErrno(-r, what + ": wait for the job");
      if (r > 0) continue;
      const auto now = Clock::now();
      if (now >= deadline) {
        return Fail(std::errc::timed_out,
                    what + ": timed out after " + std::to_string(timeout.count()) +
                        " ms waiting for the job to finish (it is left to systemd)");
      }
      r = Systemd().sd_bus_wait(bus_.get(), Microseconds(deadline - now));
      if (r < 0 && r != -EINTR) return FailErrno(-r, what + ": wait for the job");
    }
    if (result == "done") return {};
    std::string message = what + ": the job ended '" + result + "'";
    // The unit's own Result says why (best effort: the job's result is the error).
    auto state = State(
        unit, std::max<std::chrono::milliseconds>(
                  std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()),
                  std::chrono::milliseconds(2000)));
    if (state) {
      message += ", unit " + state->active_state + " (" + state->sub_state + ")";
      if (!state->result.empty() && state->result != "success") {
        message += ", result '" + state->result + "'";
      }
    }
    if (result == "failed" || result == "timeout") {
      message += "; see 'journalctl -u " + unit + "'";
    }
    const std::errc code = result == "timeout"    ? std::errc::timed_out
                           : result == "canceled" ? std::errc::operation_canceled
                                                  : std::errc::io_error;
    return Fail(code, message);
  }

  Status Enable(const std::vector<std::string>& units, std::chrono::milliseconds timeout) override {
    return FileOperation("enable", "EnableUnitFiles", units, "bb", false, timeout);
  }

  Status Disable(const std::vector<std::string>& units,
                 std::chrono::milliseconds timeout) override {
    return FileOperation("disable", "DisableUnitFiles", units, "b", false, timeout);
  }

  Status Mask(const std::vector<std::string>& units, bool runtime,
              std::chrono::milliseconds timeout) override {
    return FileOperation("mask", "MaskUnitFiles", units, "bb", runtime, timeout);
  }

  Status Unmask(const std::vector<std::string>& units, std::chrono::milliseconds timeout) override {
    const auto deadline = Clock::now() + timeout;
    for (bool runtime : {false, true}) {
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
      if (auto done = FileOperation("unmask", "UnmaskUnitFiles", units, "b", runtime, left);
          !done) {
        return done;
      }
    }
    return {};
  }

  Result<UnitState> State(const std::string& unit, std::chrono::milliseconds timeout) override {
    const auto deadline = Clock::now() + timeout;
    const std::string what = "read the state of '" + unit + "'";
    auto loaded = Call(kManagerPath, kManager, "LoadUnit", deadline, [&](sd_bus_message* m) {
      return Systemd().sd_bus_message_append(m, "s", unit.c_str());
    });
    if (!loaded) return Fail(loaded.error().WithContext(what));
    const char* raw_path = nullptr;
    if (int r = Systemd().sd_bus_message_read(loaded->get(), "o", &raw_path); r < 0) {
      return FailErrno(-r, what);
    }
    const std::string path = raw_path;
    UnitState state;
    for (auto [name, field] :
         {std::pair{"LoadState", &state.load_state}, std::pair{"ActiveState", &state.active_state},
          std::pair{"SubState", &state.sub_state}}) {
      auto value = GetString(path, kUnit, name, deadline);
      if (!value) return Fail(value.error().WithContext(what));
      *field = std::move(*value);
    }
    auto invocation = GetProperty(path, kUnit, "InvocationID", deadline);
    if (!invocation) return Fail(invocation.error().WithContext(what));
    const void* bytes = nullptr;
    std::size_t size = 0;
    if (Systemd().sd_bus_message_enter_container(invocation->get(), 'v', "ay") >= 0 &&
        Systemd().sd_bus_message_read_array(invocation->get(), 'y', &bytes, &size) >= 0) {
      static constexpr char kHex[] = "0123456789abcdef";
      for (std::size_t i = 0; i < size; ++i) {
        const auto byte = static_cast<const unsigned char*>(bytes)[i];
        state.invocation_id += kHex[byte >> 4];
        state.invocation_id += kHex[byte & 0xf];
      }
    }
    // Read from disk, never a cached value: it changes with enable and disable before any
    // reload.
    auto file_state = Call(
        kManagerPath, kManager, "GetUnitFileState", deadline,
        [&](sd_bus_message* m) { return Systemd().sd_bus_message_append(m, "s", unit.c_str()); });
    if (file_state) {
      const char* text = nullptr;
      if (Systemd().sd_bus_message_read(file_state->get(), "s", &text) >= 0)
        state.unit_file_state = text;
    } else if (!file_state.error().Is(std::errc::no_such_file_or_directory)) {
      return Fail(file_state.error().WithContext(what));
    }
    if (const char* interface = ResultInterface(unit); interface != nullptr) {
      auto result = GetString(path, interface, "Result", deadline);
      // A unit that is not loaded (not-found) has no type-specific interface.
      if (result) state.result = std::move(*result);
      if (std::strcmp(interface, "org.freedesktop.systemd1.Service") == 0) {
        if (auto pid = GetProperty(path, interface, "MainPID", deadline)) {
          (void)Systemd().sd_bus_message_read(pid->get(), "v", "u", &state.main_pid);
        }
      }
    }
    return state;
  }

 private:
  // (Re)connects when the connection was closed.
  Status EnsureOpen() {
    if (bus_ && Systemd().sd_bus_is_open(bus_.get()) > 0) return {};
    auto bus = Connect(address_);
    if (!bus) return Fail(bus.error());
    bus_ = std::move(*bus);
    return {};
  }

  // Calls `member` on systemd and returns the reply; `append` adds the arguments.
  Result<MessagePtr> Call(const std::string& path, const char* interface, const char* member,
                          Clock::time_point deadline,
                          const std::function<int(sd_bus_message*)>& append) {
    if (auto open = EnsureOpen(); !open) return Fail(open.error());
    const std::string what = std::string("call ") + member;
    sd_bus_message* raw = nullptr;
    int r = Systemd().sd_bus_message_new_method_call(bus_.get(), &raw, kService, path.c_str(),
                                                     interface, member);
    if (r < 0) return FailErrno(-r, what);
    MessagePtr message(raw);
    if (append && (r = append(message.get())) < 0) return FailErrno(-r, what);
    BusError error;
    sd_bus_message* reply = nullptr;
    r = Systemd().sd_bus_call(bus_.get(), message.get(), Microseconds(deadline - Clock::now()),
                              &error.error, &reply);
    if (r < 0) return Fail(BusFailure(r, error.error, what));
    return MessagePtr(reply);
  }

  // A property's value: the reply to Properties.Get, positioned before its variant.
  Result<MessagePtr> GetProperty(const std::string& path, const char* interface, const char* name,
                                 Clock::time_point deadline) {
    return Call(path, kProperties, "Get", deadline, [&](sd_bus_message* m) {
      return Systemd().sd_bus_message_append(m, "ss", interface, name);
    });
  }

  Result<std::string> GetString(const std::string& path, const char* interface, const char* name,
                                Clock::time_point deadline) {
    auto reply = GetProperty(path, interface, name, deadline);
    if (!reply) return Fail(reply.error());
    const char* value = nullptr;
    if (int r = Systemd().sd_bus_message_read(reply->get(), "v", "s", &value); r < 0) {
      return FailErrno(-r, std::string("read property ") + name);
    }
    return std::string(value);
  }

  // EnableUnitFiles and friends: the unit names, then `flags` booleans (runtime, and
  // force = false when there are two).
  Status FileOperation(const char* verb, const char* member, const std::vector<std::string>& units,
                       const char* flags, bool runtime, std::chrono::milliseconds timeout) {
    std::string what = verb;
    for (std::size_t i = 0; i < units.size(); ++i) what += (i == 0 ? " '" : ", '") + units[i] + "'";
    std::vector<char*> names;
    for (const auto& unit : units) names.push_back(const_cast<char*>(unit.c_str()));
    names.push_back(nullptr);
    auto reply =
        Call(kManagerPath, kManager, member, Clock::now() + timeout, [&](sd_bus_message* m) {
          int r = Systemd().sd_bus_message_append_strv(m, names.data());
          if (r < 0) return r;
          return std::strcmp(flags, "bb") == 0
                     ? Systemd().sd_bus_message_append(m, "bb", runtime ? 1 : 0, 0)
                     : Systemd().sd_bus_message_append(m, "b", runtime ? 1 : 0);
        });
    if (!reply) return Fail(reply.error().WithContext(what));
    return {};
  }

  std::string address_;
  BusPtr bus_;
};

}  // namespace

const char* UnitJobName(UnitJob job) {
  switch (job) {
    case UnitJob::kStart:
      return "start";
    case UnitJob::kStop:
      return "stop";
    case UnitJob::kRestart:
      return "restart";
    case UnitJob::kReload:
      return "reload";
  }
  return "start";
}

namespace {

class SdUnitWatcher final : public UnitWatcher {
 public:
  explicit SdUnitWatcher(BusPtr bus) : bus_(std::move(bus)) {}

  Status Start() {
    BusError error;
    sd_bus_message* raw = nullptr;
    int r = Systemd().sd_bus_call_method(bus_.get(), kService, kManagerPath, kManager, "Subscribe",
                                         &error.error, &raw, "");
    MessagePtr reply(raw);
    if (r < 0) return Fail(BusFailure(r, error.error, "subscribe to systemd's signals"));
    sd_bus_slot* slot = nullptr;
    r = Systemd().sd_bus_match_signal(bus_.get(), &slot, kService, kManagerPath, kManager,
                                      "UnitFilesChanged", &SdUnitWatcher::OnUnitFilesChanged, this);
    if (r < 0) return FailErrno(-r, "watch systemd's unit files");
    files_slot_.reset(slot);
    return {};
  }

  int fd() const override { return Systemd().sd_bus_get_fd(bus_.get()); }

  Status Watch(const std::vector<std::string>& units) override {
    std::map<std::string, std::unique_ptr<Watched>> watched;
    for (const auto& unit : units) {
      if (auto kept = watched_.find(unit); kept != watched_.end()) {
        watched[unit] = std::move(kept->second);
        continue;
      }
      auto entry = std::make_unique<Watched>();
      entry->owner = this;
      entry->unit = unit;
      char* path = nullptr;
      int r = Systemd().sd_bus_path_encode("/org/freedesktop/systemd1/unit", unit.c_str(), &path);
      if (r < 0) return FailErrno(-r, "unit '" + unit + "'");
      sd_bus_slot* slot = nullptr;
      r = Systemd().sd_bus_match_signal(bus_.get(), &slot, kService, path, kProperties,
                                        "PropertiesChanged", &SdUnitWatcher::OnPropertiesChanged,
                                        entry.get());
      std::free(path);
      if (r < 0) return FailErrno(-r, "watch unit '" + unit + "'");
      entry->slot.reset(slot);
      watched[unit] = std::move(entry);
    }
    watched_ = std::move(watched);  // the slots of units no longer watched go
    return {};
  }

  Result<std::vector<std::string>> Process() override {
    int r = 0;
    while ((r = Systemd().sd_bus_process(bus_.get(), nullptr)) > 0) {
    }
    if (r < 0) return FailErrno(-r, "read systemd's signals");
    std::vector<std::string> units;
    if (all_changed_) {
      for (const auto& [unit, entry] : watched_) units.push_back(unit);
    } else {
      for (const auto& unit : changed_) {
        if (watched_.count(unit) != 0) units.push_back(unit);
      }
    }
    all_changed_ = false;
    changed_.clear();
    return units;
  }

 private:
  struct Watched {
    SdUnitWatcher* owner = nullptr;
    std::string unit;
    SlotPtr slot;
  };

  static int OnUnitFilesChanged(sd_bus_message* /*message*/, void* userdata,
                                sd_bus_error* /*error*/) {
    static_cast<SdUnitWatcher*>(userdata)->all_changed_ = true;
    return 0;
  }

  // PropertiesChanged(s interface, a{sv} changed, as invalidated): a change of the Unit
  // interface's ActiveState.
  static int OnPropertiesChanged(sd_bus_message* message, void* userdata, sd_bus_error* /*error*/) {
    auto* watched = static_cast<Watched*>(userdata);
    const char* interface = nullptr;
    if (Systemd().sd_bus_message_read(message, "s", &interface) < 0 || interface == nullptr ||
        std::strcmp(interface, kUnit) != 0) {
      return 0;
    }
    if (Systemd().sd_bus_message_enter_container(message, 'a', "{sv}") < 0) return 0;
    while (Systemd().sd_bus_message_enter_container(message, 'e', "sv") > 0) {
      const char* name = nullptr;
      if (Systemd().sd_bus_message_read(message, "s", &name) < 0) return 0;
      if (name != nullptr && std::strcmp(name, "ActiveState") == 0) {
        watched->owner->changed_.insert(watched->unit);
      }
      if (Systemd().sd_bus_message_skip(message, "v") < 0 ||
          Systemd().sd_bus_message_exit_container(message) < 0) {
        return 0;
      }
    }
    return 0;
  }

  BusPtr bus_;
  SlotPtr files_slot_;
  std::map<std::string, std::unique_ptr<Watched>> watched_;
  std::set<std::string> changed_;
  bool all_changed_ = false;
};

}  // namespace

Result<std::unique_ptr<UnitWatcher>> OpenUnitWatcher(const std::string& address) {
  auto bus = Connect(address);
  if (!bus) return Fail(bus.error());
  auto watcher = std::make_unique<SdUnitWatcher>(std::move(*bus));
  if (auto started = watcher->Start(); !started) return Fail(started.error());
  return std::unique_ptr<UnitWatcher>(std::move(watcher));
}

Result<std::unique_ptr<SystemdBus>> OpenSystemdBus(const std::string& address) {
  auto bus = Connect(address);
  if (!bus) return Fail(bus.error());
  return std::unique_ptr<SystemdBus>(std::make_unique<SdBus>(address, std::move(*bus)));
}

}  // namespace tether
