// libgcrypt, started once for the digests of common/ (SHA-256, SHA-1, HMAC-SHA256).
//
// libgcrypt rather than OpenSSL: libsystemd already loads it into every tether process,
// and its start costs next to nothing, where OpenSSL's reads its configuration and starts
// its providers (about 2 MiB and 1.5 ms in each process, for a digest).
//
// Threading: thread-safe.
#pragma once

namespace tether {

// Checks libgcrypt's version and finishes its initialisation (without secure memory),
// once; libsystemd may have done so already, which is harmless. False only if libgcrypt
// cannot run at all.
[[nodiscard]] bool StartGcrypt();

}  // namespace tether
