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
work=$(mktemp -d)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  redis-cli -p "$port" shutdown nosave >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT
redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no --dir "$work" --daemonize yes >/dev/null
until redis-cli -p "$port" ping >/dev/null 2>&1; do sleep 0.05; done

start_seqd() { # name, env...
  local name=$1; shift
  # shellcheck disable=SC2086
  env "$@" "$SEQD" --socket "$work/$name.sock" --data-dir "$work/$name" ${SEQD_ARGS:-} 2>"$work/$name.log" &
  pids+=($!)
  until [ -S "$work/$name.sock" ]; do sleep 0.05; done
}
start_seqd redis REDIS_URL="redis://127.0.0.1:$port/0"
start_seqd local REDIS_URL= REDIS_HOST=
redis_pid=${pids[0]}
local_pid=${pids[1]}

cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
switches() { cat /proc/"$1"/task/*/status | awk '/^(non)?voluntary_ctxt_switches/ { s += $2 } END { print s }'; }
redis_cpu() { redis-cli -p "$port" info cpu | awk -F: '/^used_cpu_(user|sys):/ { t += $2 } END { printf "%.6f", t }'; }
field() { sed -E "s/.*\"$1\":([0-9.]+).*/\1/" <<<"$2"; }
median() { printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }
can_perf=0
if perf stat -e raw_syscalls:sys_enter -p "$redis_pid" -- sleep 0.1 >/dev/null 2>&1; then can_perf=1; fi

# One run of seqd-bench against seqd $1 (pid $2): prints
# "numbers/s cpu_us/number syscalls/number switches/number".
measure() {
  local name=$1 pid=$2 t0 t1 s0 s1 out n sc=NA
  t0=$(cpu_ticks "$pid"); s0=$(switches "$pid")
  if [ "$can_perf" = 1 ]; then
    perf stat -x, -e raw_syscalls:sys_enter -p "$pid" -o "$work/perf.$name" &
    local perf_pid=$!
    sleep 0.2
  fi
  out=$("$bench" --socket "$work/$name.sock" --op daily-next --clients 50 --seconds "$secs" | tail -n 1)
  t1=$(cpu_ticks "$pid"); s1=$(switches "$pid")
  n=$(field ops "$out")
  if [ "$can_perf" = 1 ]; then
    kill -INT "$perf_pid"; wait "$perf_pid" || true
    sc=$(awk -F, -v n="$n" '/raw_syscalls/ { printf "%.2f", $1 / n }' "$work/perf.$name")
  fi
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
