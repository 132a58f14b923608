# shellcheck shell=bash
# Package lists and an idempotent installer for tether's scripts.
# Sourced by scripts/demo and scripts/test; never run directly.

# Build: compiler, meson, and every library the top meson.build looks up.
TETHER_BUILD_PACKAGES=(
  g++ meson ninja-build pkg-config
  libgit2-dev libboost-dev libtomlplusplus-dev libsystemd-dev libspdlog-dev libssl-dev
  doctest-dev libexpected-dev nlohmann-json3-dev libcli11-dev libgcrypt20-dev zlib1g-dev
)

# Tests: real servers and a real systemd, plus the format check and the fuzzer toolchain.
TETHER_TEST_PACKAGES=(
  git lighttpd lighttpd-mod-openssl nginx-light openssh-server openssh-client openssl ca-certificates
  systemd systemd-container dbus util-linux iproute2 dpkg-dev
  clang clang-format libclang-rt-14-dev python3 python3-jsonschema python3-prometheus-client curl
  scdoc bash-completion
)

# The Debian package (scripts/package): debhelper, lintian, the man pages' scdoc, and the
# tools the install test runs in its container (man-db renders `man tetherctl`).
TETHER_PACKAGE_PACKAGES=(
  debhelper dpkg-dev lintian scdoc bash-completion man-db libfmt-dev
)

# The demo: a systemd container (tests/support/container_run), a git server and signed
# commits inside it, and the example's package (curl), found installed on this machine.
TETHER_DEMO_PACKAGES=(
  git openssh-client systemd systemd-container dbus util-linux python3 curl
)

# ensure_packages PKG...: installs whichever of PKG are missing, with one apt-get call.
# Makes no apt call at all when everything is installed.
ensure_packages() {
  local missing=() pkg status
  for pkg in "$@"; do
    status=$(dpkg-query -W -f='${db:Status-Status}' "$pkg" 2>/dev/null || true)
    [ "$status" = "installed" ] || missing+=("$pkg")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  if [ "$(id -u)" -ne 0 ]; then
    echo "error: missing packages ${missing[*]}; run as root or install them first" >&2
    return 1
  fi
  echo "==> installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  # The servers among them (lighttpd, nginx, sshd) are started by the tests themselves, on
  # ports of their own: none is started by its package (two would fight over port 80).
  local policy=/usr/sbin/policy-rc.d own_policy=0
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod 755 "$policy" && own_policy=1
  fi
  local status=0
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null || status=$?
  [ "$own_policy" -eq 1 ] && rm -f "$policy"
  return "$status"
}
