#!/usr/bin/env bash
# Recovery in proportion to the outage: after Redis answers again, how
# long seqd takes to be back on Redis (breaker closed, no key pending
# reconciliation) when an outage left N keys issued from its store, and
# the p99 of the load in the seconds after Redis returned against the same
# load before the fault.
#
# Starts its own redis-server and a release seqd on it; runs seqd-bench
# (8 clients, daily numbers of 20,000 users) for the "before" figure;
# hangs Redis (SIGSTOP) while cold daily numbers are drawn until N keys
# are pending; resumes Redis and, under the same load as before, polls
# HEALTH every 10 ms until the breaker is closed with nothing pending.
#
# Usage: bench/recovery.sh [pending keys] [seconds of load]   (default 20000, 30)
set -euo pipefail
cd "$(dirname "$0")/.."
keys=${1:-20000}
secs=${2:-30}

cargo build --release -q -p seqd -p seqd-bench -p seqd-client --features seqd-client/cli
SEQD=target/release/seqd
BENCH=target/release/seqd-bench
CTL=target/release/seqctl
# shellcheck source=bench/common.sh
source bench/common.sh
SEQD_ARGS="--redis-timeout-ms 250" start_seqd s REDIS_URL="redis://127.0.0.1:$port/0"
sock=$work/s.sock
hf() { $CTL --socket "$sock" health | sed -E "s/.* $1=([^ ]+).*/\1/"; }
load() { # tag
  "$BENCH" --socket "$sock" --op daily-next --clients 8 --keys 20000 --seconds "$secs" --tag "$1" | tail -n 1
}
now() { date +%s.%N; }

before=$(load before)

redis_pid=$(redis-cli -p "$port" info server | awk -F: '/^process_id/ { print $2 }' | tr -d '\r')
kill -STOP "$redis_pid"
"$BENCH" --socket "$sock" --op daily-next --cold --clients 8 --seconds 600 --tag outage >/dev/null &
outage=$!
until [ "$(hf pending_reconciliation)" -ge "$keys" ]; do sleep 0.05; done
kill "$outage"; wait "$outage" 2>/dev/null || true
pending=$(hf pending_reconciliation)

kill -CONT "$redis_pid"
t0=$(now)
load after >"$work/after" &
after_pid=$!
closed_at=""
while :; do
  h=$($CTL --socket "$sock" health)
  state=$(sed -E 's/.* breaker=([^ ]+).*/\1/' <<<"$h")
  left=$(sed -E 's/.* pending_reconciliation=([^ ]+).*/\1/' <<<"$h")
  [ -n "$closed_at" ] || { [ "$state" = closed ] && closed_at=$(now); }
  [ "$state" = closed ] && [ "$left" = 0 ] && break
  [ -n "${TIMELINE:-}" ] && echo "$(now) $state $left" >&2
  sleep 0.01
done
t1=$(now)
wait "$after_pid"
after=$(cat "$work/after")

p99_before=$(field p99_us "$before")
p99_after=$(field p99_us "$after")
printf 'pending keys when Redis returned: %s\n' "$pending"
calc() { awk "BEGIN { printf \"%.2f\", $1 }"; }
printf 'breaker closed after: %s s; none pending after: %s s\n' "$(calc "$closed_at - $t0")" "$(calc "$t1 - $t0")"
printf 'p99 before the fault: %s us; in the %s s after Redis returned: %s us (%sx)\n' \
  "$p99_before" "$secs" "$p99_after" "$(calc "$p99_after / $p99_before")"
printf 'numbers/s before: %s; after: %s\n' "$(field ops_per_sec "$before")" "$(field ops_per_sec "$after")"
