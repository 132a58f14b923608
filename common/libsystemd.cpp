#include "common/libsystemd.hpp"

#include <dlfcn.h>

#include <cstdlib>
#include <mutex>

namespace tether {

namespace {

struct Loaded {
  Libsystemd functions;
  const Libsystemd* table = nullptr;
  std::string error;
};

const Loaded& Load() {
  static Loaded loaded;
  static std::once_flag once;
  std::call_once(once, [] {
    // Never unloaded: buses and sinks may outlive any owner here.
    void* library = dlopen("libsystemd.so.0", RTLD_NOW | RTLD_LOCAL | RTLD_NODELETE);
    if (library == nullptr) {
      const char* why = dlerror();
      loaded.error =
          std::string("load libsystemd.so.0: ") + (why != nullptr ? why : "unknown error");
      return;
    }
#define TETHER_LIBSYSTEMD_RESOLVE(name)                                               \
  loaded.functions.name = reinterpret_cast<decltype(&::name)>(dlsym(library, #name)); \
  if (loaded.functions.name == nullptr) {                                             \
    loaded.error = "libsystemd.so.0 has no " #name;                                   \
    return;                                                                           \
  }
    TETHER_LIBSYSTEMD_FUNCTIONS(TETHER_LIBSYSTEMD_RESOLVE)
#undef TETHER_LIBSYSTEMD_RESOLVE
    loaded.table = &loaded.functions;
  });
  return loaded;
}

}  // namespace

const Libsystemd* LoadLibsystemd(std::string* error) {
  const Loaded& loaded = Load();
  if (loaded.table == nullptr && error != nullptr) *error = loaded.error;
  return loaded.table;
}

const Libsystemd& Systemd() {
  const Libsystemd* table = Load().table;
  if (table == nullptr) std::abort();  // a broken invariant: see REQUIRES
  return *table;
}

}  // namespace tether
