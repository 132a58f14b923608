#!/usr/bin/env bash
# The second half of scripts/demo, run by it inside a throwaway systemd container
# (tests/support/container_run): a local git server with a signed copy of the example fleet
# repo, tetherd as the systemd service of systemd/tetherd.service, and tetherctl.
# Never run directly: it changes the machine it runs on (/etc, systemd units).
#
# Environment (set by scripts/demo): TETHER_DEMO_DIR, a read-only copy of config/fleet
# (fleet/) and of systemd/tetherd.service; TETHER_BIN, the dir of tetherd and tetherctl,
# also first in PATH.
set -euo pipefail

demo=${TETHER_DEMO_DIR:?}
bin=${TETHER_BIN:?}
if [ -t 1 ]; then bold=$'\033[1m' plain=$'\033[0m'; else bold='' plain=''; fi
step() { printf '\n%s==> %s%s\n' "$bold" "$*" "$plain"; }
say() { printf '%s\n' "$*"; }
indent() { sed 's/^/    /'; }

# wait_until SECONDS COMMAND...: runs COMMAND until it succeeds; fails after SECONDS.
wait_until() {
  local tries=$(($1 * 10))
  shift
  until "$@" >/dev/null 2>&1; do
    tries=$((tries - 1))
    if [ "$tries" -le 0 ]; then
      say "timed out waiting for: $*" >&2
      return 1
    fi
    sleep 0.1
  done
}
# status_field NAME: a top-level field of `tetherctl status --json` ("" for null).
status_field() {
  tetherctl status --json | python3 -c \
    'import json, sys; v = json.load(sys.stdin).get(sys.argv[1]); print("" if v is None else v)' "$1"
}
synced_at() { [ "$(status_field commit)" = "$1" ] && [ "$(status_field state)" = synced ]; }
motd_is() { [ "$(cat /etc/motd)" = "$1" ]; }
# A step that fails ends the demo: show what tetherd said last.
trap 'say "--- journalctl -u tetherd:"; journalctl -u tetherd --no-pager -o cat -n 30' ERR

export HOME=/root GIT_CONFIG_NOSYSTEM=1
git_() { git -C /srv/fleet-work -c user.name=ops -c user.email=ops@example.com "$@"; }
# commit [--unsigned] MESSAGE: commits the work tree (signed by ops) and pushes it.
commit() {
  local how=(-c gpg.format=ssh -c user.signingkey=/root/ops-key commit -q -S)
  if [ "$1" = --unsigned ]; then
    how=(commit -q)
    shift
  fi
  git_ add -A && git_ "${how[@]}" -m "$1" && git_ push -q origin main
  git_ rev-parse HEAD
}

step "A throwaway host: a systemd container, $(systemctl --version | head -n 1)"
hostname demo
say "PID 1: $(ps -o comm= 1), host name: $(hostname), state: $(systemctl is-system-running)"
say "tetherd picks hosts/{hostname}.toml of the fleet repo: hosts/demo.toml"

step "A local git server (git daemon) with a signed copy of the example fleet repo"
ssh-keygen -q -t ed25519 -N '' -C ops@example.com -f /root/ops-key
mkdir -p /etc/tether /srv/git
echo "ops@example.com $(cat /root/ops-key.pub)" >/etc/tether/allowed_signers
git init -q --bare -b main /srv/git/fleet.git
git clone -q /srv/git/fleet.git /srv/fleet-work 2>/dev/null
cp -r "$demo/fleet/." /srv/fleet-work/
first=$(commit "The example fleet")
# The container shares the host's network: a port the kernel says is free.
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
systemd-run --quiet --unit=fleet-git --description="git daemon with the fleet repo" \
  "$(git --exec-path)/git-daemon" --reuseaddr --listen=127.0.0.1 --port="$port" \
  --base-path=/srv/git --export-all /srv/git
url=git://127.0.0.1:$port/fleet.git
wait_until 10 git ls-remote "$url"
say "$url (systemd unit fleet-git.service), signed by ops@example.com:"
git -C /srv/fleet-work -c gpg.ssh.allowedSignersFile=/etc/tether/allowed_signers \
  log --format='%h %G? %s' |
  sed 's/ G / (good signature) /' | indent

step "tetherd as the systemd service: systemd/tetherd.service, plus a drop-in for the demo"
cat >/etc/tether/agent.toml <<EOF
[source]
url      = "$url"
profile  = "hosts/{hostname}.toml"
interval = "3s"

[trust]
require_signed  = true
allowed_signers = "/etc/tether/allowed_signers"

[labels]
env = "demo"
EOF
say "/etc/tether/agent.toml:"
indent </etc/tether/agent.toml
cp "$demo/tetherd.service" /etc/systemd/system/tetherd.service
mkdir -p /etc/systemd/system/tetherd.service.d
cat >/etc/systemd/system/tetherd.service.d/demo.conf <<EOF
# The demo: tetherd from the build dir, and a short watchdog that a stalled main loop
# would trip within the demo (the unit's own is 60s).
[Service]
ExecStart=
ExecStart=$bin/tetherd
WatchdogSec=5s
EOF
say "/etc/systemd/system/tetherd.service.d/demo.conf:"
indent </etc/systemd/system/tetherd.service.d/demo.conf
systemctl daemon-reload
say "systemctl start tetherd (Type=notify: returns once tetherd says READY=1)"
systemctl start tetherd
say "systemctl is-active tetherd: $(systemctl is-active tetherd)"

step "tetherctl status"
wait_until 60 synced_at "$first"
tetherctl status
say "--- what it applied:"
say "/etc/motd:"
indent </etc/motd
stat -c '%A %U:%G %n' /etc/tether-example /etc/tether-example/api-token | indent
say "example-app.service (a unit file from the fleet repo): $(systemctl is-enabled example-app), $(systemctl is-active example-app)"
say "package curl: $(dpkg-query -W -f='${Version}' curl), installed on this machine, so in sync"

step "A signed commit is pushed: the next poll applies it, nobody asks"
sed -i 's/Questions:/Questions? Ask/' /srv/fleet-work/files/motd
second=$(commit "Friendlier motd")
say "pushed ${second:0:12} Friendlier motd"
wait_until 60 synced_at "$second"
id=$(tetherctl history | tail -n 1 | cut -d' ' -f1)
tetherctl show "$id"

step "Someone edits a managed file by hand: tetherd reverts it at once (inotify)"
good=$(cat /etc/motd)
say "echo 'edited by hand' >> /etc/motd"
echo 'edited by hand' >>/etc/motd
if wait_until 10 motd_is "$good"; then say "reverted:"; else say "NOT reverted:"; fi
indent </etc/motd

step "tetherctl history"
wait_until 10 synced_at "$second"
tetherctl history

step "tetherctl rollback ${first:0:12}: the first commit again, pinned until resume"
tetherctl rollback "${first:0:12}"
wait_until 60 synced_at "$first"
say "pinned: $(status_field pinned)"
indent </etc/motd
say "systemctl restart tetherd: the pin is kept"
systemctl restart tetherd
wait_until 60 synced_at "$first"
say "pinned: $(status_field pinned), commit: $(status_field commit)"

step "tetherctl resume: follow the fleet repo's head again"
tetherctl resume
wait_until 60 synced_at "$second"
tetherctl status
indent </etc/motd

step "An unsigned commit is pushed: refused, the host keeps the last good commit"
echo "# sneaky" >>/srv/fleet-work/roles/base.toml
commit --unsigned "Unsigned change" >/dev/null
tetherctl sync --wait || say "(exit status $?)"

step "systemctl status tetherd"
systemctl status tetherd --no-pager --lines=0 | grep -v '^\s*CGroup\|^\s*└─\|^\s*Tasks\|^\s*CPU\|^\s*Memory' || true
say "watchdog $(systemctl show -P WatchdogUSec tetherd), restarts by systemd: $(systemctl show -P NRestarts tetherd)"

step "systemctl stop tetherd: SIGTERM, a clean stop"
systemctl stop tetherd
say "systemctl is-active tetherd: $(systemctl is-active tetherd || true), result: $(systemctl show -P Result tetherd)"
journalctl -u tetherd --no-pager -o cat -n 4 | indent
if [ -e /var/lib/tether/journal ]; then say "a transaction journal was left!"; else say "no transaction left open in /var/lib/tether"; fi
