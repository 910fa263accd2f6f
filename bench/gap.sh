#!/usr/bin/env bash
# Gap tracker figures, side by side with a Python tracker on Redis.
#
# Starts its own redis-server on a free loopback port and a release seqd on
# it, runs seqd-bench for single checks (1 client) and batches of 1000
# (4 clients), and prints a table against that tracker's figures as
# measured on this kind of machine (about 2,500
# events/s single, 30,000-37,000 events/s in batches of 100-1000).
#
# Usage: bench/gap.sh [seconds]   (default 5)
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-5}
seed_single=2500
seed_batch=37000

cargo build --release -q -p seqd -p seqd-bench
work=$(mktemp -d)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cleanup() {
  [ -n "${seqd_pid:-}" ] && kill "$seqd_pid" 2>/dev/null || true
  redis-cli -p "$port" shutdown nosave >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT
redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no --dir "$work" --daemonize yes >/dev/null
until redis-cli -p "$port" ping >/dev/null 2>&1; do sleep 0.05; done
REDIS_URL="redis://127.0.0.1:$port/0" target/release/seqd --socket "$work/seqd.sock" --data-dir "$work/data" 2>"$work/seqd.log" &
seqd_pid=$!
until [ -S "$work/seqd.sock" ]; do sleep 0.05; done

json() { target/release/seqd-bench --socket "$work/seqd.sock" "$@" | tail -n 1; }
field() { sed -E "s/.*\"$1\":([0-9.]+).*/\1/" <<<"$2"; }

single=$(json --op gap-check --clients 1 --seconds "$secs" --tag single)
batch=$(json --op gap-batch --clients 4 --batch 1000 --seconds "$secs" --tag batch)
s_rate=$(field ops_per_sec "$single")
b_rate=$(field ops_per_sec "$batch")

echo
echo "gap tracker, Redis $(redis-server --version | sed -E 's/.*v=([0-9.]+).*/\1/'), $(nproc) cores, ${secs}s per run"
printf '%-34s %14s %14s %8s\n' "workload" "seqd events/s" "seed events/s" "ratio"
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", a / b }'; }
printf '%-34s %14.0f %14d %7sx\n' "single checks, 1 client" "$s_rate" "$seed_single" "$(ratio "$s_rate" "$seed_single")"
printf '%-34s %14.0f %14d %7sx\n' "batches of 1000, 4 clients" "$b_rate" "$seed_batch" "$(ratio "$b_rate" "$seed_batch")"
echo "single: $single"
echo "batch:  $batch"
