#!/usr/bin/env bash
# seqd next to redis-benchmark on the same Redis, in one run.
#
# Starts its own redis-server on a free loopback port, runs
# `redis-benchmark -t incr` with the same client counts as seqd-bench, then
# seqd-bench against a release seqd on that Redis (and a local-mode seqd),
# and prints a table of ratios; then cache-get next to GET, gap-batch
# against its target, and the RSS of an idle seqd and of one holding 1000
# idle connections.
#
# Usage: bench/compare.sh [seconds]   (default 5)
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-5}

cargo build --release -q -p seqd -p seqd-bench
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

start_seqd() { # name, extra env...
  local name=$1; shift
  env "$@" target/release/seqd --socket "$work/$name.sock" --data-dir "$work/$name" 2>"$work/$name.log" &
  pids+=($!)
  until [ -S "$work/$name.sock" ]; do sleep 0.05; done
}
start_seqd redis REDIS_URL="redis://127.0.0.1:$port/0"
start_seqd local REDIS_URL= REDIS_HOST=

# redis-benchmark: requests per second and p99 (ms) for INCR.
rb() { # clients
  local n=$(( $1 * 4000 ))
  redis-benchmark -p "$port" -t incr -c "$1" -n "$n" -P 1 --csv 2>/dev/null | tail -n 1
}
rb_rps() { awk -F'","' '{ gsub(/"/, "", $2); print $2 }' <<<"$1"; }
rb_p99() { awk -F'","' '{ gsub(/"/, "", $7); print $7 }' <<<"$1"; }
sb() { target/release/seqd-bench --socket "$work/$1.sock" --op daily-next --clients "$2" --seconds "$secs" | tail -n 1; }
field() { sed -E "s/.*\"$1\":([0-9.]+).*/\1/" <<<"$2"; }
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

# Memory first, on a fresh seqd in Redis mode.
start_seqd idle REDIS_URL="redis://127.0.0.1:$port/0"
idle_pid=${pids[-1]}
echo PING | socat - "UNIX-CONNECT:$work/idle.sock" >/dev/null
rss_idle=$(rss_kib "$idle_pid")
rss_conns=$(hold_conns "$work/idle.sock" "$idle_pid")

rb50=$(rb 50); rb1=$(rb 1)
s50=$(sb redis 50); s1=$(sb redis 1); l50=$(sb local 50)
rbget=$(redis-benchmark -p "$port" -t get -c 50 -n 200000 -P 1 --csv 2>/dev/null | tail -n 1)
c50=$(target/release/seqd-bench --socket "$work/redis.sock" --op cache-get --clients 50 --seconds "$secs" | tail -n 1)
g4=$(target/release/seqd-bench --socket "$work/redis.sock" --op gap-batch --batch 1000 --clients 4 --seconds "$secs" | tail -n 1)

row() { printf '%-46s %14s %14s %8s %8s\n' "$@"; }
echo
echo "seqd vs redis-benchmark, Redis $(redis-server --version | sed -E 's/.*v=([0-9.]+).*/\1/'), $(nproc) cores, ${secs}s per seqd run"
row "measure" "seqd" "reference" "ratio" "target"
row "daily-next ops/s, 50 clients, Redis mode" "$(field ops_per_sec "$s50")" "$(rb_rps "$rb50")" "$(ratio "$(field ops_per_sec "$s50")" "$(rb_rps "$rb50")")" ">= 1.0"
p99rb=$(awk -v m="$(rb_p99 "$rb1")" 'BEGIN{printf "%.0f", m*1000}')
row "daily-next p99 us, 1 client, Redis mode" "$(field p99_us "$s1")" "$p99rb" "$(ratio "$(field p99_us "$s1")" "$p99rb")" "<= 2.0"
row "daily-next ops/s, 50 clients, local mode" "$(field ops_per_sec "$l50")" "$(rb_rps "$rb50")" "$(ratio "$(field ops_per_sec "$l50")" "$(rb_rps "$rb50")")" ">= 3.0"
row "cache-get ops/s, 50 clients (vs GET)" "$(field ops_per_sec "$c50")" "$(rb_rps "$rbget")" "$(ratio "$(field ops_per_sec "$c50")" "$(rb_rps "$rbget")")" "-"
row "gap-batch events/s, 1000 x 4 clients" "$(field ops_per_sec "$g4")" "350000" "$(ratio "$(field ops_per_sec "$g4")" 350000)" ">= 1.0"
row "RSS idle, MiB" "$(awk -v k="$rss_idle" 'BEGIN{printf "%.1f", k/1024}')" "20" "$(ratio "$rss_idle" 20480)" "< 1.0"
row "RSS with 1000 idle connections, MiB" "$(awk -v k="$rss_conns" 'BEGIN{printf "%.1f", k/1024}')" "64" "$(ratio "$rss_conns" 65536)" "< 1.0"
echo "seqd redis 50:  $s50"
echo "seqd redis 1:   $s1"
echo "seqd local 50:  $l50"
echo "seqd cache 50:  $c50"
echo "seqd gap 4:     $g4"
echo "redis-benchmark INCR -c 50: $rb50"
echo "redis-benchmark INCR -c 1:  $rb1"
echo "redis-benchmark GET -c 50:  $rbget"
