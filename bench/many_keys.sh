#!/usr/bin/env bash
# One day of N users in local mode (ten million daily keys by default):
# writes N daily marks into a fresh store (as a day of NEXTs would leave
# them: value 1..3, today's expiry, an implied ceiling), then starts a
# release seqd on it and prints the store's size, the time from start to
# the first answer, and seqd's RSS once ready and after a NEXT. Then it
# restarts seqd with --marks-in-memory 100000 and draws cold keys (every
# request a user never seen, each a miss looked up in the big store) for
# SECS seconds: the rate, and RSS after more new keys than the cap. Then
# a kill -9 under hot traffic and the time to start (the mark journal is
# replayed). Last, a power loss: kill -9 and a pretended reboot, then the
# time to start.
#
# Usage: bench/many_keys.sh [N] [SECS]   (defaults 10000000, 30)
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-10000000}
secs=${2:-30}
cargo build --release -q -p seqd -p seqd-bench
# shellcheck source=bench/fill.sh
source bench/fill.sh
work=$(mktemp -d)
trap 'kill "${pid:-0}" 2>/dev/null || true; rm -rf "$work"' EXIT

# The schema: let seqd create it, and stop it cleanly.
target/release/seqd --socket "$work/s.sock" --data-dir "$work/d" 2>"$work/first.log" &
pid=$!
until [ -S "$work/s.sock" ]; do sleep 0.05; done
kill -TERM "$pid"; wait "$pid" || true

fill_daily_keys "$work/d/seqd.db" "$n"
size=$(du -sm "$work/d" | cut -f1)

start=$(date +%s.%N)
target/release/seqd --socket "$work/s.sock" --data-dir "$work/d" 2>"$work/seqd.log" &
pid=$!
until echo PING 2>/dev/null | socat - "UNIX-CONNECT:$work/s.sock" 2>/dev/null | grep -q OK; do sleep 0.01; done
ready=$(date +%s.%N)
rss_ready=$(awk '/^VmRSS/ { print $2 }' "/proc/$pid/status")
answer=$(echo "DAILY NEXT u7 tz=UTC" | socat -t 5 - "UNIX-CONNECT:$work/s.sock")
rss_after=$(awk '/^VmRSS/ { print $2 }' "/proc/$pid/status")

echo
echo "$n daily keys in local mode, $(nproc) cores"
printf '%-34s %s\n' "store size" "${size} MiB"
printf '%-34s %s\n' "start to first answer" "$(awk -v a="$start" -v b="$ready" 'BEGIN { printf "%.2f s", b - a }')  (target < 1 s)"
printf '%-34s %s\n' "RSS when ready" "$(awk -v k="$rss_ready" 'BEGIN { printf "%.0f MiB", k / 1024 }')  (target < 512 MiB)"
printf '%-34s %s\n' "RSS after a NEXT" "$(awk -v k="$rss_after" 'BEGIN { printf "%.0f MiB", k / 1024 }')"
printf '%-34s %s\n' "DAILY NEXT u7 (had 2, so 3)" "$answer"

# A day going on: more new keys than memory may hold.
kill -TERM "$pid"; wait "$pid" || true
cap=100000
target/release/seqd --socket "$work/s.sock" --data-dir "$work/d" --marks-in-memory "$cap" 2>"$work/seqd2.log" &
pid=$!
until echo PING 2>/dev/null | socat - "UNIX-CONNECT:$work/s.sock" 2>/dev/null | grep -q OK; do sleep 0.01; done
cold=$(target/release/seqd-bench --socket "$work/s.sock" --op daily-next --cold --clients 50 --seconds "$secs" --tag many | tail -n 1)
rss_cold=$(awk '/^VmRSS/ { print $2 }' "/proc/$pid/status")
marks=$(echo HEALTH | socat -t 5 - "UNIX-CONNECT:$work/s.sock" | grep -o 'local_marks=[0-9]*')
printf '%-34s %s\n' "cold keys, 50 clients, ${secs} s" "$cold"
printf '%-34s %s\n' "RSS after them (cap $cap)" "$(awk -v k="$rss_cold" 'BEGIN { printf "%.0f MiB", k / 1024 }')  ($marks)"

# kill -9 in the middle of hot traffic, on the same boot: the numbers
# that were only in the mark journal are put in SQLite before the first
# answer.
target/release/seqd-bench --socket "$work/s.sock" --op daily-next --clients 50 --seconds 3 --tag hot >/dev/null 2>&1 &
bench=$!
sleep 2
kill -KILL "$pid"; wait "$pid" || true
wait "$bench" || true
journal=$(du -k --apparent-size "$work/d/journal-0" | cut -f1)
start=$(date +%s.%N)
target/release/seqd --socket "$work/s.sock" --data-dir "$work/d" 2>"$work/seqd-replay.log" &
pid=$!
until echo PING 2>/dev/null | socat - "UNIX-CONNECT:$work/s.sock" 2>/dev/null | grep -q OK; do sleep 0.01; done
ready=$(date +%s.%N)
replayed=$(grep -o 'keys=[0-9]*' "$work/seqd-replay.log" | head -n 1)
printf '%-34s %s
' "start after kill -9 (journal)" "$(awk -v a="$start" -v b="$ready" 'BEGIN { printf "%.2f s", b - a }')  (replayed ${replayed:-keys=0}; journal files ${journal} KiB each)"

# A power loss: kill -9, and the store made to look as if the machine
# rebooted since (another boot id on record): every row is then read
# above its ceiling, and nothing is rewritten at start.
kill -KILL "$pid"; wait "$pid" || true
python3 - "$work/d/seqd.db" <<'PY'
import sqlite3, sys
conn = sqlite3.connect(sys.argv[1])
conn.execute("UPDATE meta SET value = 'an-earlier-boot' WHERE name = 'boot_id'")
conn.commit()
PY
start=$(date +%s.%N)
target/release/seqd --socket "$work/s.sock" --data-dir "$work/d" 2>"$work/seqd3.log" &
pid=$!
until echo PING 2>/dev/null | socat - "UNIX-CONNECT:$work/s.sock" 2>/dev/null | grep -q OK; do sleep 0.01; done
ready=$(date +%s.%N)
answer=$(echo "DAILY NEXT u7 tz=UTC" | socat -t 5 - "UNIX-CONNECT:$work/s.sock")
printf '%-34s %s\n' "start after a power loss" "$(awk -v a="$start" -v b="$ready" 'BEGIN { printf "%.2f s", b - a }')"
printf '%-34s %s\n' "DAILY NEXT u7 (ceiling 1000)" "$answer"
