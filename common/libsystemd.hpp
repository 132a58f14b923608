// libsystemd, loaded when first needed rather than at every start.
//
// A cycle process talks to systemd only when a profile declares units, and logs to the
// journal only when the daemon runs it; linked, libsystemd and the four libraries it
// brings (libcap, liblzma, libzstd, liblz4) were loaded and relocated at each start: 0.45
// ms of the 6 ms a no-op `tetherd --once` takes at 1,000 files. What uses the bus or the
// journal calls them through this table; the daemon, which needs libsystemd from its
// start (sd_notify), links it as well, and then the table points into the same copy.
//
// Threading: thread-safe.
#pragma once

#include <systemd/sd-bus.h>
// sd_journal_send as the function it is, not the macro that adds this file's name and line.
#define SD_JOURNAL_SUPPRESS_LOCATION
#include <systemd/sd-journal.h>

#include <string>

namespace tether {

#define TETHER_LIBSYSTEMD_FUNCTIONS(X) \
  X(sd_bus_call)                       \
  X(sd_bus_call_method)                \
  X(sd_bus_error_free)                 \
  X(sd_bus_error_get_errno)            \
  X(sd_bus_error_is_set)               \
  X(sd_bus_flush_close_unref)          \
  X(sd_bus_get_fd)                     \
  X(sd_bus_is_open)                    \
  X(sd_bus_match_signal)               \
  X(sd_bus_message_append)             \
  X(sd_bus_message_append_strv)        \
  X(sd_bus_message_enter_container)    \
  X(sd_bus_message_exit_container)     \
  X(sd_bus_message_new_method_call)    \
  X(sd_bus_message_read)               \
  X(sd_bus_message_read_array)         \
  X(sd_bus_message_skip)               \
  X(sd_bus_message_unref)              \
  X(sd_bus_new)                        \
  X(sd_bus_open_system)                \
  X(sd_bus_path_encode)                \
  X(sd_bus_process)                    \
  X(sd_bus_set_address)                \
  X(sd_bus_set_bus_client)             \
  X(sd_bus_set_method_call_timeout)    \
  X(sd_bus_slot_unref)                 \
  X(sd_bus_start)                      \
  X(sd_bus_wait)                       \
  X(sd_journal_send)

// The functions of libsystemd that tether calls, by their own names and types.
struct Libsystemd {
#define TETHER_LIBSYSTEMD_MEMBER(name) decltype(&::name) name = nullptr;
  TETHER_LIBSYSTEMD_FUNCTIONS(TETHER_LIBSYSTEMD_MEMBER)
#undef TETHER_LIBSYSTEMD_MEMBER
};

// libsystemd.so.0, loaded by the first call (later calls return the same table); null,
// with `error` set when given, if it cannot be loaded or lacks a function.
[[nodiscard]] const Libsystemd* LoadLibsystemd(std::string* error = nullptr);

// The table once LoadLibsystemd has succeeded.
// REQUIRES: a successful LoadLibsystemd before (what holds a bus or a journal sink made one).
[[nodiscard]] const Libsystemd& Systemd();

}  // namespace tether
