# Sourced by the bench scripts: a redis-server of their own on a free
# loopback port, seqds on it, and what they measure of a process.
#
# Needs SEQD (the seqd binary) set before start_seqd is called; SEQD_ARGS
# adds flags to every seqd started.

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

# A field of seqd-bench's JSON line.
field() { sed -E "s/.*\"$1\":([0-9.]+).*/\1/" <<<"$2"; }
median() { printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }
# Redis CPU (user + sys, seconds) so far.
redis_cpu() { redis-cli -p "$port" info cpu | awk -F: '/^used_cpu_(user|sys):/ { t += $2 } END { printf "%.6f", t }'; }
# Voluntary and involuntary context switches of every thread of a process.
switches() { cat /proc/"$1"/task/*/status | awk '/^(non)?voluntary_ctxt_switches/ { s += $2 } END { print s }'; }

# System calls of a process over a run (perf stat, when perf may count
# them here; otherwise `calls` stays empty): perf_start PID, the run,
# perf_stop (sets calls).
can_perf=0
if perf stat -e raw_syscalls:sys_enter -p $$ -- sleep 0.1 >/dev/null 2>&1; then can_perf=1; fi
perf_start() {
  [ "$can_perf" = 1 ] || return 0
  perf stat -x, -e raw_syscalls:sys_enter -p "$1" -o "$work/perf.out" &
  perf_pid=$!
  sleep 0.2
}
perf_stop() {
  calls=""
  [ "$can_perf" = 1 ] || return 0
  kill -INT "$perf_pid"; wait "$perf_pid" || true
  calls=$(awk -F, '/raw_syscalls/ { print $1 }' "$work/perf.out")
}
