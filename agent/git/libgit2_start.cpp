#include "agent/git/libgit2_start.hpp"

#include <dlfcn.h>
#include <git2.h>
#include <sys/stat.h>

#include <atomic>

namespace tether {

namespace {

// True while git_libgit2_init runs in StartLibgit2WithoutTransports.
std::atomic<bool> starting{false};
// What libgit2 asked for at its start: the system's CAs, a bundle or a directory.
std::string system_cas;
bool trust_loaded = false;

template <typename Function>
Function Next(const char* name) {
  return reinterpret_cast<Function>(dlsym(RTLD_NEXT, name));
}

using ParseCas = int (*)(void* chain, const char* path);

// mbedTLS's reading of CAs: during the start, only where from is noted.
int ParseOrNote(ParseCas next, void* chain, const char* path) {
  if (starting) {
    system_cas = path != nullptr ? path : "";
    return 0;
  }
  return next != nullptr ? next(chain, path) : -1;
}

}  // namespace

void StartLibgit2WithoutTransports() {
  starting = true;
  git_libgit2_init();
  starting = false;
}

const std::string& SystemCaLocation() { return system_cas; }

bool LoadTlsTrust(const std::string& ca_file) {
  if (trust_loaded) return true;
  int failed = 0;
  if (!ca_file.empty()) {
    // This replaces the system list: give the system directory too.
    failed = git_libgit2_opts(GIT_OPT_SET_SSL_CERT_LOCATIONS, ca_file.c_str(), "/etc/ssl/certs");
  } else if (!system_cas.empty()) {
    struct stat st {};
    const bool directory = stat(system_cas.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
    failed =
        git_libgit2_opts(GIT_OPT_SET_SSL_CERT_LOCATIONS, directory ? nullptr : system_cas.c_str(),
                         directory ? system_cas.c_str() : nullptr);
  }
  // Neither: a libgit2 whose TLS backend read its CAs itself, or has none.
  trust_loaded = failed == 0;
  return trust_loaded;
}

}  // namespace tether

// These take the place of the libraries' own functions in this program (the dynamic
// linker binds libgit2's calls to the program's definitions first), to leave out what
// git_libgit2_init would do at the start; at any other time they call the libraries'.
// mbedTLS returns a negative value on error, libssh2 non-zero.
extern "C" {

__attribute__((visibility("default"))) int mbedtls_x509_crt_parse_file(void* chain,
                                                                       const char* path) {
  static const auto next = tether::Next<tether::ParseCas>(__func__);
  return tether::ParseOrNote(next, chain, path);
}

__attribute__((visibility("default"))) int mbedtls_x509_crt_parse_path(void* chain,
                                                                       const char* path) {
  static const auto next = tether::Next<tether::ParseCas>(__func__);
  return tether::ParseOrNote(next, chain, path);
}

__attribute__((visibility("default"))) int libssh2_init(int flags) {
  if (tether::starting) return 0;
  static const auto next = tether::Next<int (*)(int)>(__func__);
  return next != nullptr ? next(flags) : -1;
}

}  // extern "C"
