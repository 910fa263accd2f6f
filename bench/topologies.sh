#!/usr/bin/env bash
# seqd on Redis Cluster and behind Sentinel, next to redis-benchmark on the
# same Redis in the same run, and what `--redis-wait-replicas 1`
# costs.
#
# Starts its own 3-master cluster (redis-cli --cluster create) and its own
# master + replica + 3 sentinels on free loopback ports, a release seqd on
# each (and one with --redis-wait-replicas 1 behind the same sentinels),
# then runs alternating pairs — redis-benchmark INCR, then seqd-bench
# daily-next — and reports the median ratio of the pairs.
#
# Usage: bench/topologies.sh [seconds per seqd run] [pairs]   (default 5, 3)
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-5}
pairs=${2:-3}

cargo build --release -q -p seqd -p seqd-bench
work=$(mktemp -d)
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
# A cluster node also binds its bus on port + 10000.
cluster_port() {
  local p
  while p=$(free_port); [ "$p" -ge 55000 ]; do :; done
  echo "$p"
}
redis_ports=()
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${redis_ports[@]}"; do redis-cli -p "$p" shutdown nosave >/dev/null 2>&1 || true; done
  rm -rf "$work"
}
trap cleanup EXIT

start_redis() { # port, extra args...
  local port=$1; shift
  mkdir -p "$work/r$port"
  redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no --dir "$work/r$port" \
    --daemonize yes "$@" >/dev/null
  redis_ports+=("$port")
  for _ in $(seq 200); do
    redis-cli -p "$port" ping >/dev/null 2>&1 && return 0
    sleep 0.05
  done
  echo "redis-server on port $port did not start" >&2
  exit 1
}

# The cluster.
cl=()
for _ in 1 2 3; do
  p=$(cluster_port); start_redis "$p" --cluster-enabled yes --cluster-config-file "$work/r$p/nodes.conf"
  cl+=("$p")
done
redis-cli --cluster create "127.0.0.1:${cl[0]}" "127.0.0.1:${cl[1]}" "127.0.0.1:${cl[2]}" \
  --cluster-replicas 0 --cluster-yes >/dev/null
for p in "${cl[@]}"; do
  until redis-cli -p "$p" cluster info | grep -q 'cluster_state:ok'; do sleep 0.1; done
done

# Sentinel: a master, a replica, three sentinels.
master=$(free_port); start_redis "$master"
replica=$(free_port); start_redis "$replica" --replicaof 127.0.0.1 "$master"
until redis-cli -p "$replica" info replication | grep -q 'master_link_status:up'; do sleep 0.1; done
sentinels=()
for i in 1 2 3; do
  p=$(free_port)
  cat >"$work/sentinel$i.conf" <<CONF
port $p
bind 127.0.0.1
daemonize yes
dir $work
pidfile $work/sentinel$i.pid
sentinel monitor mymaster 127.0.0.1 $master 2
CONF
  redis-server "$work/sentinel$i.conf" --sentinel >/dev/null
  redis_ports+=("$p")
  sentinels+=("127.0.0.1:$p")
done
sentinel_list=$(IFS=,; echo "${sentinels[*]}")

start_seqd() { # name, args...
  local name=$1; shift
  target/release/seqd --socket "$work/$name.sock" --data-dir "$work/$name" "$@" 2>"$work/$name.log" &
  pids+=($!)
  until [ -S "$work/$name.sock" ]; do sleep 0.05; done
  until echo HEALTH | socat - "UNIX-CONNECT:$work/$name.sock" | grep -q 'breaker=closed'; do sleep 0.1; done
}
start_seqd cluster --redis-cluster "127.0.0.1:${cl[0]}"
start_seqd sentinel --redis-sentinels "$sentinel_list"
start_seqd fenced --redis-sentinels "$sentinel_list" --redis-wait-replicas 1

rb() { # csv line of redis-benchmark INCR: port, clients, [--cluster]
  local port=$1 c=$2; shift 2
  redis-benchmark -h 127.0.0.1 -p "$port" "$@" -t incr -c "$c" -n $(( c * 4000 )) -P 1 --csv 2>/dev/null | tail -n 1
}
rb_rps() { awk -F'","' '{ gsub(/"/, "", $2); print $2 }' <<<"$1"; }
rb_p50_us() { awk -F'","' '{ gsub(/"/, "", $5); printf "%.0f", $5 * 1000 }' <<<"$1"; }
sb() { target/release/seqd-bench --socket "$work/$1.sock" --op daily-next --clients "$2" --seconds "$secs" --tag "$3" | tail -n 1; }
field() { sed -E "s/.*\"$1\":([0-9.]+).*/\1/" <<<"$2"; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }
median() { printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }

declare -A ratios figures
add() { ratios[$1]+="$2 "; figures[$1]+="$3 "; }
for i in $(seq 1 "$pairs"); do
  r=$(rb "${cl[0]}" 50 --cluster); s=$(sb cluster 50 "c$i")
  add cluster50 "$(ratio "$(field ops_per_sec "$s")" "$(rb_rps "$r")")" "$(field ops_per_sec "$s")/$(rb_rps "$r")"
  r=$(rb "$master" 50); s=$(sb sentinel 50 "s$i")
  add sentinel50 "$(ratio "$(field ops_per_sec "$s")" "$(rb_rps "$r")")" "$(field ops_per_sec "$s")/$(rb_rps "$r")"
  w=$(sb fenced 50 "w$i")
  add wait50 "$(ratio "$(field ops_per_sec "$w")" "$(field ops_per_sec "$s")")" "$(field ops_per_sec "$w")/$(field ops_per_sec "$s")"
  r=$(rb "$master" 1); s=$(sb sentinel 1 "t$i"); w=$(sb fenced 1 "u$i")
  add sentinel1 "$(ratio "$(field p50_us "$s")" "$(rb_p50_us "$r")")" "$(field p50_us "$s")/$(rb_p50_us "$r")"
  add wait1 "$(ratio "$(field p50_us "$w")" "$(field p50_us "$s")")" "$(field p50_us "$w")/$(field p50_us "$s")"
done

row() { printf '%-58s %8s   %s\n' "$@"; }
echo
echo "seqd on Redis Cluster and Sentinel, Redis $(redis-server --version | sed -E 's/.*v=([0-9.]+).*/\1/'), $(nproc) cores, ${secs}s per seqd run, median of $pairs alternating pairs"
row "measure (seqd / reference)" "median" "pairs"
row "daily-next ops/s, 50 clients, cluster / redis-benchmark --cluster INCR" "$(median ${ratios[cluster50]})" "${figures[cluster50]}"
row "daily-next ops/s, 50 clients, Sentinel / INCR on the master" "$(median ${ratios[sentinel50]})" "${figures[sentinel50]}"
row "daily-next p50 us, 1 client, Sentinel / INCR -c 1" "$(median ${ratios[sentinel1]})" "${figures[sentinel1]}"
row "WAIT 1: daily-next ops/s, 50 clients, fenced / not" "$(median ${ratios[wait50]})" "${figures[wait50]}"
row "WAIT 1: daily-next p50 us, 1 client, fenced / not" "$(median ${ratios[wait1]})" "${figures[wait1]}"
