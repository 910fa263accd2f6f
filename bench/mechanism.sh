#!/usr/bin/env bash
# What one number costs seqd itself: CPU microseconds, system calls and
# context switches per number, at 50 clients in Redis mode and in local
# mode, next to the CPU Redis spends per direct INCR at 50 clients.
#
# Starts its own redis-server on a free loopback port and seqd on it (and
# a local-mode seqd), then alternates: `redis-benchmark -t incr -c 50`,
# then `seqd-bench --op daily-next --clients 50` against each seqd while
# counting that seqd's system calls (`perf stat -e raw_syscalls:sys_enter
# -p`, when perf may) and the voluntary and involuntary context switches
# of all its threads (/proc/PID/task/*/status). Prints one line per run
# and the medians.
#
# Usage: [PAIRS=3] [SEQD=path] [SEQD_ARGS=...] bench/mechanism.sh [seconds]
#   SEQD: the seqd binary to measure (default target/release/seqd, built).
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-5}
pairs=${PAIRS:-3}
if [ -z "${SEQD:-}" ]; then
  cargo build --release -q -p seqd -p seqd-bench
  SEQD=target/release/seqd
else
  cargo build --release -q -p seqd-bench
fi
bench=target/release/seqd-bench
# shellcheck source=bench/common.sh
source bench/common.sh
start_seqd redis REDIS_URL="redis://127.0.0.1:$port/0"
start_seqd local REDIS_URL= REDIS_HOST=
redis_pid=${pids[0]}
local_pid=${pids[1]}

cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }

# One run of seqd-bench against seqd $1 (pid $2): prints
# "numbers/s cpu_us/number syscalls/number switches/number".
measure() {
  local name=$1 pid=$2 t0 t1 s0 s1 out n sc=NA
  t0=$(cpu_ticks "$pid"); s0=$(switches "$pid"); perf_start "$pid"
  out=$("$bench" --socket "$work/$name.sock" --op daily-next --clients 50 --seconds "$secs" | tail -n 1)
  t1=$(cpu_ticks "$pid"); s1=$(switches "$pid"); perf_stop
  n=$(field ops "$out")
  if [ -n "$calls" ]; then sc=$(awk -v c="$calls" -v n="$n" 'BEGIN { printf "%.2f", c / n }'); fi
  awk -v r="$(field ops_per_sec "$out")" -v t=$((t1 - t0)) -v s=$((s1 - s0)) -v n="$n" -v sc="$sc" \
    'BEGIN { printf "%.0f %.2f %s %.3f\n", r, t * 10000 / n, sc, s / n }'
}

declare -A V
add() { V[$1]+="$2 "; }
echo "run: numbers/s, CPU us/number, syscalls/number, context switches/number (seqd); Redis CPU us per INCR -c 50"
for i in $(seq 1 "$pairs"); do
  c0=$(redis_cpu)
  redis-benchmark -p "$port" -t incr -c 50 -n 200000 -P 1 -q >/dev/null 2>&1
  c1=$(redis_cpu)
  incr=$(awk -v a="$c0" -v b="$c1" 'BEGIN { printf "%.2f", (b - a) / 200000 * 1e6 }')
  add incr "$incr"
  read -r r cpu sc sw < <(measure redis "$redis_pid")
  echo "pair $i: redis mode $r/s ${cpu}us $sc $sw | Redis per INCR ${incr}us"
  add rrate "$r"; add rcpu "$cpu"; add rsc "$sc"; add rsw "$sw"
  read -r r cpu sc sw < <(measure local "$local_pid")
  echo "pair $i: local mode $r/s ${cpu}us $sc $sw"
  add lrate "$r"; add lcpu "$cpu"; add lsc "$sc"; add lsw "$sw"
done
echo
echo "medians of $pairs runs, 50 clients, ${secs}s each:"
printf '%-12s %10s %14s %14s %14s\n' mode numbers/s cpu_us/number syscalls/number switches/number
printf '%-12s %10s %14s %14s %14s\n' redis "$(median ${V[rrate]})" "$(median ${V[rcpu]})" "$(median ${V[rsc]})" "$(median ${V[rsw]})"
printf '%-12s %10s %14s %14s %14s\n' local "$(median ${V[lrate]})" "$(median ${V[lcpu]})" "$(median ${V[lsc]})" "$(median ${V[lsw]})"
echo "Redis CPU per direct INCR (-c 50): $(median ${V[incr]}) us; seqd CPU per number / that: $(awk -v a="$(median ${V[rcpu]})" -v b="$(median ${V[incr]})" 'BEGIN { printf "%.2f", a / b }')x"
