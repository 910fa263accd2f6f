#!/bin/bash
# Runs inside the container run.sh boots (systemd is PID 1), as root,
# once: installs the package and checks the service as an operator uses
# it. Writes its log to /out/log and PASS, or FAIL and why, to
# /out/result.
set -uo pipefail
exec >/out/log 2>&1

sock=/run/seqd/seqd.sock
fail() {
  echo "FAIL: $*"
  echo "--- systemctl status seqd"
  systemctl --no-pager status seqd.service seqd.socket
  echo "--- the journal of seqd"
  journalctl --no-pager -u seqd.service -u seqd.socket | tail -n 60
  echo "FAIL: $*" >/out/result
  exit 1
}
ok() { echo "ok: $*"; }
ask() { printf '%s\n' "$1" | socat -t 10 - "UNIX-CONNECT:$sock"; }
seq_of() { sed -n 's/^OK seq=\([0-9]*\).*/\1/p' <<<"$1"; }
main_pid() { systemctl show -p MainPID --value seqd.service; }
# Waits up to $1 seconds for the command in the other arguments.
wait_for() {
  local limit=$1 i
  shift
  for ((i = 0; i < limit * 10; i++)); do
    "$@" && return 0
    sleep 0.1
  done
  return 1
}
last=0
# The next number of one group must be above the last one seen.
rises() {
  local r n
  r=$(ask "CONV NEXT group c")
  n=$(seq_of "$r")
  [ -n "$n" ] && [ "$n" -gt "$last" ] || fail "after $1: '$r' (the last number was $last)"
  ok "after $1: $r"
  last=$n
}
replaced() { local p; p=$(main_pid); [ "$p" != 0 ] && [ "$p" != "$1" ] && systemctl is-active -q seqd.service; }

dpkg -i /out/seqd.deb || fail "dpkg -i of the package"
ok "installed: $(seqd --version)"
systemctl enable --now seqd.socket || fail "enabling seqd.socket"

# Socket activation: the first connection starts the service.
r=$(ask PING)
[ "$r" = "OK pong" ] || fail "PING through socket activation answered '$r'"
ok "socket activation: $r"
systemctl is-active -q seqd.service || fail "seqd.service is not active"
status=$(systemctl show -p StatusText --value seqd.service)
grep -q "serving" <<<"$status" || fail "no STATUS= line: '$status'"
ok "STATUS=$status"
h=$(ask HEALTH)
grep -q "mode=local" <<<"$h" && grep -q "store=ok" <<<"$h" && grep -q "journal=on" <<<"$h" ||
  fail "HEALTH: $h"
ok "HEALTH: $h"

rises "the first start"
systemctl reload seqd.service || fail "systemctl reload"
rises "systemctl reload"
systemctl restart seqd.service || fail "systemctl restart"
rises "systemctl restart"
pid=$(main_pid)
kill -9 "$pid"
wait_for 20 replaced "$pid" || fail "no new seqd 20 s after kill -9"
rises "kill -9 (Restart=on-failure)"
pid=$(main_pid)
kill -STOP "$pid"
wait_for 90 replaced "$pid" || fail "the watchdog did not replace a stopped seqd within 90 s"
rises "SIGSTOP (the watchdog replaced it)"

# The socket is the seqd group's: anyone else is refused by the kernel.
useradd --system --no-create-home outsider
useradd --system --no-create-home --groups seqd member
if runuser -u outsider -- socat -t 5 - "UNIX-CONNECT:$sock" <<<"PING" 2>/dev/null | grep -q pong; then
  fail "a user outside the seqd group was answered"
fi
ok "a user outside the seqd group is refused"
r=$(runuser -u member -- socat -t 5 - "UNIX-CONNECT:$sock" <<<"PING")
[ "$r" = "OK pong" ] || fail "a member of the seqd group got '$r'"
ok "a member of the seqd group is answered"

# Two restarts and an upgrade (the package installed again) under load
# from four clients, each a new seqctl per number: no client sees an
# error, and each client's numbers rise.
loop() {
  local i=0
  while [ ! -e /tmp/load.stop ]; do
    if ! seqctl --timeout-ms 20000 conv next group load >>"/tmp/load.$1" 2>>"/tmp/load.$1.err"; then
      echo "call $i failed" >>"/tmp/load.$1.err"
    fi
    i=$((i + 1))
  done
}
answered() { cat /tmp/load.? 2>/dev/null | wc -l; }
answered_at_least() { [ "$(answered)" -ge "$1" ]; }
for c in 1 2 3 4; do loop "$c" & done
wait_for 60 answered_at_least 200 || fail "no load"
systemctl restart seqd.service || fail "systemctl restart under load"
before=$(answered)
wait_for 60 answered_at_least $((before + 200)) || fail "no answers after the restart"
dpkg -i /out/seqd.deb >/dev/null || fail "dpkg -i again under load"
before=$(answered)
wait_for 60 answered_at_least $((before + 200)) || fail "no answers after the upgrade"
systemctl restart seqd.service || fail "systemctl restart under load"
before=$(answered)
wait_for 60 answered_at_least $((before + 200)) || fail "no answers after the second restart"
touch /tmp/load.stop
wait
errors=$(cat /tmp/load.?.err)
[ -z "$errors" ] || fail "clients saw errors through restarts: $(head -n 5 <<<"$errors")"
total=$(answered)
dupes=$(cat /tmp/load.? | sort | uniq -d | head -n 3)
[ -z "$dupes" ] || fail "numbers answered twice: $dupes"
for c in 1 2 3 4; do
  sed -n 's/^OK seq=\([0-9]*\).*/\1/p' "/tmp/load.$c" | sort -n -c 2>/dev/null ||
    fail "client $c's numbers do not rise"
done
ok "4 clients, $total numbers through two restarts and an upgrade: no error, none twice, each client's rising"

# Redis mode, against a Redis in the container.
redis-server --port 6390 --bind 127.0.0.1 --save '' --appendonly no --daemonize yes ||
  fail "starting redis-server"
sed -i 's|^#REDIS_URL=.*|REDIS_URL=redis://127.0.0.1:6390/0|' /etc/seqd/seqd.env
grep -q '^REDIS_URL=redis://127.0.0.1:6390/0' /etc/seqd/seqd.env || fail "REDIS_URL not set"
systemctl restart seqd.service || fail "systemctl restart into Redis mode"
r=$(ask "DAILY NEXT u1")
grep -q "source=redis" <<<"$r" || fail "Redis mode answered '$r'"
ok "Redis mode: $r"
h=$(ask HEALTH)
grep -q "redis=up" <<<"$h" || fail "HEALTH in Redis mode: $h"
ok "HEALTH: $h"

echo PASS >/out/result
echo PASS
