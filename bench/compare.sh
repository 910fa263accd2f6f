#!/usr/bin/env bash
# seqd next to redis-benchmark on the same Redis, in one run, in pairs.
#
# Starts its own redis-server on a free loopback port and a release seqd
# on it (and a local-mode seqd), then runs alternating pairs — the
# reference (`redis-benchmark -t incr`, with `-r 1000000` for the cold
# case), then seqd-bench the same shape — PAIRS times (default 3) and
# prints the median ratio of each figure with every pair: throughput at 50
# clients (16 hot users, and cold keys: every request a user never seen),
# one-client p50/p99, local mode, Redis's own CPU per number (INFO cpu
# around each run) against per INCR, the CPU per number of every process
# on each path (what bounds the 50-client ratio when the cores are busy),
# seqd's system calls (perf stat) and context switches (/proc) per number,
# one connection with 50 requests in flight for one user against 16,
# gap-check in local mode, gap-batch, gap checks on a stream with 64 holes
# against one without and a fresh seqd's first second against the seconds
# after, cache-get, the wakeup round trip of two threads (no seqd: the
# machine's floor under every hop), the RSS of an idle seqd and of one
# holding 1000 idle connections, and a start on a store of ten million
# daily keys (KEYS; 0 skips it).
#
# Usage: [PAIRS=3] [KEYS=10000000] bench/compare.sh [seconds]   (default 5)
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-5}

cargo build --release -q -p seqd -p seqd-bench
SEQD=target/release/seqd
# shellcheck source=bench/common.sh
source bench/common.sh
# shellcheck source=bench/fill.sh
source bench/fill.sh

# SEQD_ENV: more environment for both seqds (an experiment, e.g.
# SEQD_ENV=TOKIO_WORKER_THREADS=1).
start_seqd redis REDIS_URL="redis://127.0.0.1:$port/0" ${SEQD_ENV:-}
start_seqd local REDIS_URL= REDIS_HOST= ${SEQD_ENV:-}

# redis-benchmark: requests per second and p99 (ms) for INCR.
rb() { # clients
  local n=$(( $1 * 4000 ))
  redis-benchmark -p "$port" -t incr -c "$1" -n "$n" -P 1 --csv 2>/dev/null | tail -n 1
}
# As rb, and then redis-benchmark's own CPU (user + sys, seconds) on a
# second line (bash's `times`: the children of this subshell).
# (`times` must run in the subshell that waited for redis-benchmark, not
# in a pipeline of its own.)
rb_with_cpu() { # clients
  ( rb "$1"; times ) | awk 'NR == 1 { print; next }
    NR == 3 { t = 0; for (i = 1; i <= 2; i++) { split($i, p, /[ms]/); t += p[1] * 60 + p[2] } printf "%.6f\n", t }'
}
# CPU (user + sys, seconds) a process has used so far.
proc_cpu() { awk '{ printf "%.2f", ($14 + $15) / 100 }' "/proc/$1/stat"; }
rb_rps() { awk -F'","' '{ gsub(/"/, "", $2); print $2 }' <<<"$1"; }
rb_p99() { awk -F'","' '{ gsub(/"/, "", $7); print $7 }' <<<"$1"; }
sb() { target/release/seqd-bench --socket "$work/$1.sock" --op daily-next --clients "$2" --seconds "$secs" | tail -n 1; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }

rss_kib() { awk '/^VmRSS/ { print $2 }' "/proc/$1/status"; }
# Holds 1000 text connections (each has said PING) while RSS is read.
hold_conns() { # socket, pid
  python3 - "$1" "$2" <<'PY'
import resource, socket, sys
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 4096), hard))
conns = []
for _ in range(1000):
    s = socket.socket(socket.AF_UNIX)
    s.connect(sys.argv[1])
    s.sendall(b"PING\n")
    conns.append(s)
for s in conns:
    assert s.recv(64).startswith(b"OK"), "no answer to PING"
print(next(l.split()[1] for l in open(f"/proc/{sys.argv[2]}/status") if l.startswith("VmRSS")))
PY
}

# Memory first, on a fresh seqd in Redis mode. One process holds all
# 1000 connections: raise its share (256 by default).
start_seqd idle REDIS_URL="redis://127.0.0.1:$port/0" SEQD_MAX_CONNECTIONS_PER_PID=1000
idle_pid=${pids[-1]}
echo PING | socat - "UNIX-CONNECT:$work/idle.sock" >/dev/null
rss_idle=$(rss_kib "$idle_pid")
rss_conns=$(hold_conns "$work/idle.sock" "$idle_pid")

cpu_delta() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.6f", b - a }'; }
rbr() { # cold reference: INCR over a million keys
  local n=$(( $1 * 4000 ))
  redis-benchmark -p "$port" -t incr -r 1000000 -c "$1" -n "$n" -P 1 --csv 2>/dev/null | tail -n 1
}
rb_p50() { awk -F'","' '{ gsub(/"/, "", $5); print $5 }' <<<"$1"; }
us() { awk -v m="$1" 'BEGIN { printf "%.0f", m * 1000 }'; }

# Alternating pairs: the reference, then seqd, on the same Redis, $pairs
# times; each figure is the median of its pairs' ratios.
pairs=${PAIRS:-3}
declare -A R F
add() { R[$1]+="$2 "; F[$1]+="$3 "; }
seqd_redis_pid=${pids[0]}
# Microseconds per number: CPU seconds $1 over $2 numbers.
per() { awk -v c="$1" -v n="$2" 'BEGIN { printf "%.1f", c / n * 1e6 }'; }
for i in $(seq 1 "$pairs"); do
  c0=$(redis_cpu); rbc50=$(rb_with_cpu 50); c1=$(redis_cpu)
  rb50=$(head -n 1 <<<"$rbc50"); rbcpu=$(tail -n 1 <<<"$rbc50")
  q0=$(proc_cpu "$seqd_redis_pid"); w0=$(switches "$seqd_redis_pid"); perf_start "$seqd_redis_pid"
  s50=$(sb redis 50)
  c2=$(redis_cpu); q1=$(proc_cpu "$seqd_redis_pid"); w1=$(switches "$seqd_redis_pid"); perf_stop
  add sys "$(awk -v c="$calls" -v n="$(field ops "$s50")" 'BEGIN { if (c == "") print "NA"; else printf "%.2f", c / n }')" "$calls"
  add ctx "$(awk -v c=$((w1 - w0)) -v n="$(field ops "$s50")" 'BEGIN { printf "%.3f", c / n }')" "$((w1 - w0))"
  add redis50 "$(ratio "$(field ops_per_sec "$s50")" "$(rb_rps "$rb50")")" "$(field ops_per_sec "$s50")/$(rb_rps "$rb50")"
  cpu_rb=$(awk -v c="$(cpu_delta "$c0" "$c1")" -v n="$(( 50 * 4000 ))" 'BEGIN { printf "%.3f", c / n * 1e6 }')
  cpu_sq=$(awk -v c="$(cpu_delta "$c1" "$c2")" -v n="$(field ops "$s50")" 'BEGIN { printf "%.3f", c / n * 1e6 }')
  add cpu "$(ratio "$cpu_sq" "$cpu_rb")" "${cpu_sq}/${cpu_rb}us"
  # CPU per number of each process on the path, in microseconds: the
  # reference is redis-benchmark + Redis, seqd's path is seqd-bench + seqd
  # + Redis. When the cores are busy, throughput can be at most the ratio
  # of the two sums.
  n50=$(field ops "$s50")
  ref_path=$(awk -v a="$(per "$rbcpu" $(( 50 * 4000 )))" -v b="$cpu_rb" 'BEGIN { printf "%.1f", a + b }')
  sq_seqd=$(per "$(cpu_delta "$q0" "$q1")" "$n50")
  sq_gen=$(awk -v c="$(field cpu_us "$s50")" -v n="$n50" 'BEGIN { printf "%.1f", c / n }')
  sq_path=$(awk -v a="$sq_gen" -v b="$sq_seqd" -v c="$cpu_sq" 'BEGIN { printf "%.1f", a + b + c }')
  add seqdcpu "$(ratio "$sq_seqd" "$cpu_rb")" "${sq_seqd}/${cpu_rb}us"
  add pathcpu "$(ratio "$ref_path" "$sq_path")" "${ref_path}/${sq_path}us(gen ${sq_gen}+seqd ${sq_seqd}+redis ${cpu_sq})"
  l50=$(sb local 50)
  add local50 "$(ratio "$(field ops_per_sec "$l50")" "$(rb_rps "$rb50")")" "$(field ops_per_sec "$l50")/$(rb_rps "$rb50")"
  rb1=$(rb 1); s1=$(sb redis 1)
  add p50 "$(ratio "$(field p50_us "$s1")" "$(us "$(rb_p50 "$rb1")")")" "$(field p50_us "$s1")/$(us "$(rb_p50 "$rb1")")us"
  add p99 "$(ratio "$(field p99_us "$s1")" "$(us "$(rb_p99 "$rb1")")")" "$(field p99_us "$s1")/$(us "$(rb_p99 "$rb1")")us"
  g1=$(target/release/seqd-bench --socket "$work/local.sock" --op gap-check --clients 1 --seconds "$secs" --tag "g$i" | tail -n 1)
  add gap1 "$(ratio "$(field ops_per_sec "$g1")" "$(rb_rps "$rb1")")" "$(field ops_per_sec "$g1")/$(rb_rps "$rb1")"
  # One connection, 50 requests in flight (the shape of a process whose
  # threads share one multiplexed client): one user against 16.
  p1=$(target/release/seqd-bench --socket "$work/redis.sock" --op daily-next --clients 1 --pipeline 50 --keys 1 --seconds "$secs" --tag "p$i" | tail -n 1)
  p16=$(target/release/seqd-bench --socket "$work/redis.sock" --op daily-next --clients 1 --pipeline 50 --keys 16 --seconds "$secs" --tag "q$i" | tail -n 1)
  add piped "$(ratio "$(field ops_per_sec "$p1")" "$(field ops_per_sec "$p16")")" "$(field ops_per_sec "$p1")/$(field ops_per_sec "$p16")"
  rbc=$(rbr 50)
  sc=$(target/release/seqd-bench --socket "$work/redis.sock" --op daily-next --cold --clients 50 --seconds "$secs" --tag "r$i" | tail -n 1)
  lc=$(target/release/seqd-bench --socket "$work/local.sock" --op daily-next --cold --clients 50 --seconds "$secs" --tag "l$i" | tail -n 1)
  add cold "$(ratio "$(field ops_per_sec "$sc")" "$(rb_rps "$rbc")")" "$(field ops_per_sec "$sc")/$(rb_rps "$rbc")"
  add coldlocal "$(ratio "$(field ops_per_sec "$lc")" "$(rb_rps "$rbc")")" "$(field ops_per_sec "$lc")/$(rb_rps "$rbc")"
done
# The gap tracker, one connection: in-order checks on a stream with 64
# open holes against one without (Redis mode); and a fresh local seqd's
# checks in its first second against the seconds after.
gap() { target/release/seqd-bench --socket "$work/$1.sock" --op gap-check --clients 1 "${@:2}" | tail -n 1; }
for i in $(seq 1 "$pairs"); do
  h0=$(gap redis --seconds "$secs" --tag "none$i")
  h64=$(gap redis --holes 64 --seconds "$secs" --tag "holes$i")
  add holes "$(ratio "$(field ops_per_sec "$h64")" "$(field ops_per_sec "$h0")")" "$(field ops_per_sec "$h64")/$(field ops_per_sec "$h0")"
  start_seqd "fresh$i" REDIS_URL= REDIS_HOST=
  first=$(gap "fresh$i" --seconds 1 --tag "first$i")
  steady=$(gap "fresh$i" --seconds "$secs" --tag "then$i")
  kill "${pids[-1]}"
  add steady "$(ratio "$(field ops_per_sec "$steady")" "$(field ops_per_sec "$first")")" "$(field ops_per_sec "$steady")/$(field ops_per_sec "$first")"
done
rbget=$(redis-benchmark -p "$port" -t get -c 50 -n 200000 -P 1 --csv 2>/dev/null | tail -n 1)
c50=$(target/release/seqd-bench --socket "$work/redis.sock" --op cache-get --clients 50 --seconds "$secs" | tail -n 1)
# The machine's floor: a round trip between two threads that sleep in
# between. A request through seqd is three such round trips (client and
# seqd, seqd and Redis, seqd and its store thread), an INCR one.
wk=$(target/release/seqd-bench --op wakeup --seconds "$secs" | tail -n 1)
g4=$(target/release/seqd-bench --socket "$work/local.sock" --op gap-batch --batch 1000 --clients 4 --seconds "$secs" | tail -n 1)
commits=$(echo METRICS | socat - "UNIX-CONNECT:$work/local.sock" | awk '/^seqd_store_commits_total /{print $2}')
fsyncs=$(echo METRICS | socat - "UNIX-CONNECT:$work/local.sock" | awk '/^seqd_store_fsyncs_total /{print $2}')

# A day of KEYS users in local mode (ten million by default; 0 skips
# it): the store they leave, then a start on it — the time from start to
# the first answer, and the RSS then.
keys=${KEYS:-10000000}
if [ "$keys" -gt 0 ]; then
  start_seqd big REDIS_URL= REDIS_HOST=
  kill -TERM "${pids[-1]}"; wait "${pids[-1]}" || true
  rm -f "$work/big.sock"
  fill_daily_keys "$work/big/seqd.db" "$keys"
  t0=$(date +%s.%N)
  "$SEQD" --socket "$work/big.sock" --data-dir "$work/big" 2>"$work/big.log" &
  pids+=($!)
  until echo PING 2>/dev/null | socat - "UNIX-CONNECT:$work/big.sock" 2>/dev/null | grep -q OK; do sleep 0.01; done
  t1=$(date +%s.%N)
  big_start=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.2f", b - a }')
  big_rss=$(rss_kib "${pids[-1]}")
fi

row() { printf '%-52s %8s %8s   %s\n' "$@"; }
echo
echo "seqd vs redis-benchmark, Redis $(redis-server --version | sed -E 's/.*v=([0-9.]+).*/\1/'), $(nproc) cores, ${secs}s per seqd run, median of $pairs alternating pairs"
row "measure (seqd / reference)" "median" "target" "pairs"
row "daily-next ops/s, 50 clients, Redis mode / INCR -c 50" "$(median ${R[redis50]})" ">= 0.85" "${F[redis50]}"
row "daily-next p50, 1 client, Redis mode / INCR -c 1" "$(median ${R[p50]})" "<= 2.0" "${F[p50]}"
row "daily-next p99, 1 client, Redis mode / INCR -c 1" "$(median ${R[p99]})" "<= 3.0" "${F[p99]}"
row "daily-next ops/s, 50 clients, local mode / INCR -c 50" "$(median ${R[local50]})" ">= 1.2" "${F[local50]}"
row "cold keys ops/s, 50 clients, Redis mode / INCR -r 1M" "$(median ${R[cold]})" ">= 0.7" "${F[cold]}"
row "cold keys ops/s, 50 clients, local mode / INCR -r 1M" "$(median ${R[coldlocal]})" ">= 1.2" "${F[coldlocal]}"
row "1 connection x 50 pipelined, Redis mode: 1 user / 16" "$(median ${R[piped]})" ">= 0.9" "${F[piped]}"
row "Redis CPU per number / per INCR (INFO cpu)" "$(median ${R[cpu]})" "<= 0.4" "${F[cpu]}"
row "seqd CPU per number, Redis mode, 50c / Redis per INCR" "$(median ${R[seqdcpu]})" "<= 1.2" "${F[seqdcpu]}"
row "syscalls per number in seqd, Redis mode, 50 clients" "$(median ${R[sys]})" "<= 2.5" "calls: ${F[sys]}"
row "context switches per number in seqd, Redis mode, 50c" "$(median ${R[ctx]})" "<= 0.05" "switches: ${F[ctx]}"
row "CPU per number, reference path / seqd path (bound)" "$(median ${R[pathcpu]})" "-" "${F[pathcpu]}"
row "gap-check ops/s, 1 client, local mode / INCR -c 1" "$(median ${R[gap1]})" ">= 1.0" "${F[gap1]}"
row "wakeup round trip p50 (no seqd; the machine's floor)" "$(field p50_us "$wk")us" "-" "p99 $(field p99_us "$wk")us"
row "gap-batch events/s, 1000 x 4 clients, local" "$(ratio "$(field ops_per_sec "$g4")" 350000)" ">= 1.0" "$(field ops_per_sec "$g4")/350000"
row "in-order gap checks, 1 conn, Redis: 64 holes / none" "$(median ${R[holes]})" ">= 0.9" "${F[holes]}"
row "local gap checks, 1 conn: steady / first second" "$(median ${R[steady]})" ">= 0.9" "${F[steady]}"
row "cache-get ops/s, 50 clients / GET -c 50" "$(ratio "$(field ops_per_sec "$c50")" "$(rb_rps "$rbget")")" "-" "$(field ops_per_sec "$c50")/$(rb_rps "$rbget")"
row "RSS idle, MiB / 20" "$(ratio "$rss_idle" 20480)" "< 1.0" "$(awk -v k="$rss_idle" 'BEGIN{printf "%.1f", k/1024}')"
row "RSS with 1000 idle connections, MiB / 64" "$(ratio "$rss_conns" 65536)" "< 1.0" "$(awk -v k="$rss_conns" 'BEGIN{printf "%.1f", k/1024}')"
if [ "$keys" -gt 0 ]; then
  row "$keys daily keys: start to first answer, s / 1" "$(ratio "$big_start" 1)" "< 1.0" "${big_start}s"
  row "$keys daily keys: RSS when ready, MiB / 512" "$(ratio "$big_rss" 524288)" "< 1.0" "$(awk -v k="$big_rss" 'BEGIN{printf "%.1f", k/1024}')"
fi
echo "local store over the run: $commits commits, $fsyncs fsyncs"
