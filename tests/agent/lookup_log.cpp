// Loaded into a tether program by LD_PRELOAD in a test: writes each host name the program
// asks the resolver for (getaddrinfo) to the file $TETHER_TEST_LOOKUP_LOG, one a line,
// then asks the resolver as it would have.
#include <dlfcn.h>
#include <fcntl.h>
#include <netdb.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>

extern "C" __attribute__((visibility("default"))) int getaddrinfo(const char* node,
                                                                  const char* service,
                                                                  const addrinfo* hints,
                                                                  addrinfo** res) {
  if (const char* log = std::getenv("TETHER_TEST_LOOKUP_LOG"); log != nullptr) {
    const int fd = open(log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
    if (fd >= 0) {
      const char* name = node != nullptr ? node : "(null)";
      (void)!write(fd, name, std::strlen(name));
      (void)!write(fd, "\n", 1);
      close(fd);
    }
  }
  using Next = int (*)(const char*, const char*, const addrinfo*, addrinfo**);
  static const auto next = reinterpret_cast<Next>(dlsym(RTLD_NEXT, "getaddrinfo"));
  return next != nullptr ? next(node, service, hints, res) : EAI_FAIL;
}
