#!/usr/bin/env bash
# bash completion of tetherctl and tetherd (completions/), sourced into bash with
# bash-completion as an interactive shell has it, against a real tetherd: a daemon on a
# temp root, a file:// fleet repo made with git, so that `tetherctl show <TAB>` and
# `tetherctl rollback <TAB>` offer what its history holds.
#
# Usage: completion_test.sh TETHERD TETHERCTL SOURCE_ROOT
set -uo pipefail

tetherd=$(realpath "$1") tetherctl=$(realpath "$2") root=$(realpath "$3")
completion=/usr/share/bash-completion/bash_completion
[ -r "$completion" ] || { echo "SKIP: bash-completion is not installed"; exit 77; }

work=$(mktemp -d)
daemon=
cleanup() {
    [ -n "$daemon" ] && kill "$daemon" 2>/dev/null && wait "$daemon" 2>/dev/null
    rm -rf "$work"
}
trap cleanup EXIT

failures=0 checks=0
# expect "COMMAND LINE ENDING IN THE WORD TO COMPLETE" WORD...: COMPREPLY holds each WORD.
# A line ending in a space completes an empty word.
expect() {
    local line=$1
    shift
    read -r -a COMP_WORDS <<<"$line"
    [[ $line == *" " ]] && COMP_WORDS+=("")
    COMP_CWORD=$((${#COMP_WORDS[@]} - 1))
    COMP_LINE=$line COMP_POINT=${#line}
    COMPREPLY=()
    "_${COMP_WORDS[0]}" "${COMP_WORDS[0]}" "${COMP_WORDS[COMP_CWORD]}" "${COMP_WORDS[COMP_CWORD - 1]}"
    local word got=" ${COMPREPLY[*]} "
    for word in "$@"; do
        checks=$((checks + 1))
        if [[ $got != *" $word "* ]]; then
            echo "FAIL: '$line<TAB>' offered [${COMPREPLY[*]}], not '$word'"
            failures=$((failures + 1))
        fi
    done
}
# refuse "LINE" WORD...: COMPREPLY holds none of the WORDs.
refuse() {
    local line=$1
    shift
    expect "$line"
    local word got=" ${COMPREPLY[*]} "
    for word in "$@"; do
        checks=$((checks + 1))
        if [[ $got == *" $word "* ]]; then
            echo "FAIL: '$line<TAB>' offered '$word'"
            failures=$((failures + 1))
        fi
    done
}

# The programs as a user has them on PATH.
mkdir -p "$work/bin"
ln -s "$tetherd" "$work/bin/tetherd"
ln -s "$tetherctl" "$work/bin/tetherctl"
ln -s "$(dirname "$tetherd")/tetherd-cycle" "$work/bin/tetherd-cycle" 2>/dev/null
PATH=$work/bin:$PATH
# shellcheck disable=SC1090
source "$completion"
source "$root/completions/tetherctl"
source "$root/completions/tetherd"

# A fleet repo checkout with two hosts, for --host.
mkdir -p "$work/fleet/hosts"
for host in web-01 db-01; do
    printf '[[file]]\npath = "/etc/motd"\ncontent = "hello from %s\\n"\n' "$host" >"$work/fleet/hosts/$host.toml"
done

expect "tetherctl " status plan sync history show rollback suspend resume events metrics validate render
expect "tetherctl st" status
refuse "tetherctl st" sync
expect "tetherctl --" --socket --version --help
expect "tetherctl sync --" --wait --json
refuse "tetherctl sync --" --reason
expect "tetherctl suspend --" --reason
expect "tetherctl render $work/fleet --host " web-01 db-01
expect "tetherctl validate $work/fleet --host d" db-01
refuse "tetherctl validate $work/fleet --host d" web-01
expect "tetherctl render $work/fleet --" --host --fact --label --config --json
expect "tetherctl render --fact " hostname= machine_id= arch=
expect "tetherd --" --once --dry-run --config --state-dir --log-level
expect "tetherd --log-level w" warning
refuse "tetherctl --socket $work/none show " 1
expect "tetherctl validate $work/fl" "$work/fleet"

# A daemon with a history: the fleet repo committed and applied under a temp root.
git init -q -b main "$work/repo"
cp -r "$work/fleet/hosts" "$work/repo/"
cp "$work/repo/hosts/web-01.toml" "$work/repo/hosts/$(hostname).toml"
git -C "$work/repo" add -A
git -C "$work/repo" -c user.name=ops -c user.email=ops@example.com commit -q -m fleet
commit=$(git -C "$work/repo" rev-parse HEAD)
mkdir -p "$work/root/etc" "$work/state" "$work/cache"
cat >"$work/agent.toml" <<TOML
[source]
url = "file://$work/repo"
interval = "1h"
[trust]
require_signed = false
TOML
"$tetherd" --config "$work/agent.toml" --state-dir "$work/state" --cache-dir "$work/cache" \
    --socket "$work/tether.sock" --root "$work/root" >"$work/tetherd.log" 2>&1 &
daemon=$!
for _ in $(seq 100); do
    grep -q '"commit"' <<<"$("$tetherctl" --socket "$work/tether.sock" history --json 2>/dev/null)" && break
    sleep 0.1
done
if ! grep -q "$commit" <<<"$("$tetherctl" --socket "$work/tether.sock" history --json 2>/dev/null)"; then
    echo "FAIL: tetherd applied nothing in 10 s:"
    cat "$work/tetherd.log"
    exit 1
fi
expect "tetherctl --socket $work/tether.sock show " 1
expect "tetherctl --socket $work/tether.sock rollback " "$commit"
expect "tetherctl --socket $work/tether.sock rollback ${commit:0:6}" "$commit"
refuse "tetherctl --socket $work/tether.sock rollback $commit " "$commit"

echo "$checks checks, $failures failed"
[ "$failures" -eq 0 ]
