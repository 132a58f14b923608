#!/usr/bin/env bash
# State written by an earlier release is read by this one: tests/agent/state-0.1.0/ is the
# state dir tether 0.1.0's daemon left (an apply in its history, a suspension, the
# inventory of what it manages, its render cache). This build's tetherd starts on it, with
# the same fleet repo (made again here, byte for byte, so the commit id is the same) and
# the host as 0.1.0 left it but for one hand edit: it must report the applied commit,
# the suspension and the history, and after `tetherctl resume` revert the edit and apply
# nothing else. A change of a state file's format must keep reading this directory.
#
# Usage: state_compat_test.sh TETHERD TETHERCTL SOURCE_ROOT
set -uo pipefail
# Checks read a captured output (<<<), never a pipe into grep -q: grep exits at its match,
# and the writer's next write then fails (SIGPIPE), which pipefail takes for a failure.

tetherd=$(realpath "$1") tetherctl=$(realpath "$2") root=$(realpath "$3")
commit=3a16bdef9b89a64f285e257d6819f76ed6bb49a7
work=$(mktemp -d)
daemon=
cleanup() {
    [ -n "$daemon" ] && kill "$daemon" 2>/dev/null && wait "$daemon" 2>/dev/null
    rm -rf "$work"
}
trap cleanup EXIT
fail() {
    echo "FAIL: $*"
    echo "tetherd's log:"
    cat "$work/tetherd.log"
    exit 1
}
ctl() { "$tetherctl" --socket "$work/tether.sock" "$@"; }

# The fleet repo of 0.1.0's run, made again.
git init -q -b main "$work/repo"
mkdir -p "$work/repo/hosts"
printf '[[file]]\npath = "/srv/app/motd"\ncontent = "managed by tether\\n"\n[[directory]]\npath = "/srv/app/data"\nmode = "0750"\n[[symlink]]\npath = "/srv/app/current"\ntarget = "data"\n' \
    >"$work/repo/hosts/state-host.toml"
git -C "$work/repo" add -A
GIT_AUTHOR_DATE="2026-12-01T00:00:00Z" GIT_COMMITTER_DATE="2026-12-01T00:00:00Z" \
    git -C "$work/repo" -c user.name=ops -c user.email=ops@example.com commit -q -m fleet
[ "$(git -C "$work/repo" rev-parse HEAD)" = "$commit" ] || fail "the fleet repo came out as another commit"

# The host as 0.1.0 left it, and a hand edit since.
mkdir -p "$work/root/srv/app/data"
chmod 0750 "$work/root/srv/app/data"
ln -s data "$work/root/srv/app/current"
echo "edited by hand" >"$work/root/srv/app/motd"
mkdir -m 0700 "$work/state"
cp "$root/tests/agent/state-0.1.0/"* "$work/state/"
chmod 0600 "$work/state/"*

cat >"$work/agent.toml" <<TOML
[source]
url = "file://$work/repo"
profile = "hosts/state-host.toml"
interval = "1h"
[trust]
require_signed = false
[apply]
allowed_paths = ["/srv"]
TOML
"$tetherd" --config "$work/agent.toml" --state-dir "$work/state" --cache-dir "$work/cache" \
    --socket "$work/tether.sock" --root "$work/root" >"$work/tetherd.log" 2>&1 &
daemon=$!

for _ in $(seq 100); do
    grep -q '"commit"' <<<"$(ctl status --json 2>/dev/null)" && break
    sleep 0.1
done
status=$(ctl status --json) || fail "tetherctl status: $status"
grep -q "\"commit\": *\"$commit\"" <<<"$status" || fail "status has not the applied commit: $status"
grep -q '"reason": *"made by tether 0.1.0"' <<<"$status" || fail "the suspension was lost: $status"
history=$(ctl history --json) || fail "tetherctl history: $history"
grep -q "\"commit\": *\"$commit\"" <<<"$history" || fail "the history was lost: $history"
[ "$(cat "$work/root/srv/app/motd")" = "edited by hand" ] || fail "changed the host while suspended"

ctl resume >/dev/null || fail "tetherctl resume"
for _ in $(seq 100); do
    [ "$(cat "$work/root/srv/app/motd")" = "managed by tether" ] && break
    sleep 0.1
done
[ "$(cat "$work/root/srv/app/motd")" = "managed by tether" ] || fail "the hand edit was not reverted"
for _ in $(seq 100); do
    grep -q '"state": *"synced"' <<<"$(ctl status --json)" && break
    sleep 0.1
done
status=$(ctl status --json)
grep -q '"state": *"synced"' <<<"$status" || fail "not synced after resume: $status"
[ "$(stat -c %a "$work/root/srv/app/data")" = 750 ] || fail "the directory changed"
[ "$(readlink "$work/root/srv/app/current")" = data ] || fail "the symlink changed"
echo "state of tether 0.1.0 read: commit, suspension, history, inventory"
