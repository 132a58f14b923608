// Starting libgit2 for what a process will do with it.
//
// git_libgit2_init starts every transport it was built with, whatever the process does:
// Debian's libgit2 parses the whole system CA bundle for mbedTLS (about 140
// certificates, base64 decoded in constant time) and starts libssh2, which starts
// OpenSSL. That is most of a cycle process's start, and about 2 MiB of its memory, for a
// process that only reads the local mirror; and it is done again by every git worker,
// most of which never speak TLS (file://, git://, ssh://).
#pragma once

#include <string>

namespace tether {

// Calls git_libgit2_init, leaving out the CA bundle and libssh2's start: the first
// libssh2 session starts libssh2 itself; the CA bundle is read by LoadTlsTrust. Until
// then a TLS certificate verifies against nothing (it is refused, never accepted).
// REQUIRES: called once per process, before any other libgit2 call, from one thread.
void StartLibgit2WithoutTransports();

// The CAs that verify TLS servers from now on: `ca_file` and the system's directory of
// CAs when `ca_file` is given, the system bundle libgit2 was built to read otherwise.
// Done once; later calls do nothing. Returns false (libgit2's error set) if they could
// not be read.
// REQUIRES: after StartLibgit2WithoutTransports, from the thread that uses libgit2.
[[nodiscard]] bool LoadTlsTrust(const std::string& ca_file);

// Where libgit2 asked to read the system's CAs from at its start (a bundle or a
// directory); empty when it asked for none (a TLS backend that reads them itself).
[[nodiscard]] const std::string& SystemCaLocation();

}  // namespace tether
