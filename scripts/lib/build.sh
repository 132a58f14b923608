# shellcheck shell=bash
# build_tether [TARGET...]: configure (once) and build tether in $TETHER_BUILD_DIR
# (default: build); every target when none is named.
TETHER_BUILD_DIR=${TETHER_BUILD_DIR:-build}

build_tether() {
  if [ ! -f "$TETHER_BUILD_DIR/build.ninja" ]; then
    echo "==> meson setup $TETHER_BUILD_DIR"
    meson setup "$TETHER_BUILD_DIR" >/dev/null
  fi
  echo "==> ninja -C $TETHER_BUILD_DIR $*"
  ninja -C "$TETHER_BUILD_DIR" "$@" >/dev/null || {
    # Show the compiler's messages only when the build fails.
    ninja -C "$TETHER_BUILD_DIR" "$@"
    return 1
  }
}
