#!/usr/bin/env bash
# seqd next to redis-benchmark on the same Redis, in one run.
#
# Starts its own redis-server on a free loopback port, runs
# `redis-benchmark -t incr` with the same client counts as seqd-bench, then
# seqd-bench against a release seqd on that Redis (and a local-mode seqd),
# and prints a table of ratios.
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

rb50=$(rb 50); rb1=$(rb 1)
s50=$(sb redis 50); s1=$(sb redis 1); l50=$(sb local 50)

echo
echo "seqd vs redis-benchmark, Redis $(redis-server --version | sed -E 's/.*v=([0-9.]+).*/\1/'), $(nproc) cores, ${secs}s per seqd run"
printf '%-44s %14s %14s %8s\n' "measure" "seqd" "redis-bench" "ratio"
printf '%-44s %14.0f %14.0f %8s\n' "daily-next ops/s, 50 clients (Redis mode)" "$(field ops_per_sec "$s50")" "$(rb_rps "$rb50")" "$(ratio "$(field ops_per_sec "$s50")" "$(rb_rps "$rb50")")"
printf '%-44s %14s %14s %8s\n' "daily-next p99, 1 client (us vs ms*1000)" "$(field p99_us "$s1")" "$(awk -v m="$(rb_p99 "$rb1")" 'BEGIN{printf "%.0f", m*1000}')" "$(ratio "$(field p99_us "$s1")" "$(awk -v m="$(rb_p99 "$rb1")" 'BEGIN{print m*1000}')")"
printf '%-44s %14.0f %14.0f %8s\n' "daily-next ops/s, 50 clients (local mode)" "$(field ops_per_sec "$l50")" "$(rb_rps "$rb50")" "$(ratio "$(field ops_per_sec "$l50")" "$(rb_rps "$rb50")")"
echo "seqd redis 50: $s50"
echo "seqd redis 1:  $s1"
echo "seqd local 50: $l50"
echo "redis-benchmark -c 50: $rb50"
echo "redis-benchmark -c 1:  $rb1"
