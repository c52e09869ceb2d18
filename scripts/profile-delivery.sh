#!/usr/bin/env bash
# Where a delivery's CPU goes (docs/benchmarks.md, "Where the CPU per delivery goes"):
# one server and Redis pinned to CPU 1, the load tool to CPU 0 (taskset), 1,000 legacy
# clients, 10 senders, 10 lines a second (10,000 deliveries a second) for 40 s. Over
# separate windows of the run it takes the server's user and system CPU (/proc/PID/stat),
# a profile by function (perf record, cpu-clock) and its syscalls (strace -c), and
# writes them with per-delivery figures to summary.txt. About 2 minutes.
#
#   scripts/profile-delivery.sh [--system chatroom|node] [--no-build] [--out DIR]
#
# --system node profiles the Socket.IO on Node peer (bench/peers/node) the same way.
# Not part of the test command.
source "$(dirname "$0")/setup.sh"

system=chatroom
build=1
out="$ROOT/target/profile-delivery/$(date -u +%Y%m%dT%H%M%SZ)"
while [ $# -gt 0 ]; do
  case "$1" in
    --system) system="$2"; shift 2 ;;
    --no-build) build=""; shift ;;
    --out) out="$2"; shift 2 ;;
    *) echo "unknown argument: $1 (see the header of $0)" >&2; exit 2 ;;
  esac
done
case "$system" in chatroom | node) ;; *) echo "--system is chatroom or node" >&2; exit 2 ;; esac
for tool in perf strace redis-server; do
  command -v "$tool" >/dev/null || { echo "$tool is needed (apt-get install linux-perf strace redis-server)" >&2; exit 1; }
done
if [ -n "$build" ]; then
  setup_build
  build_load_tool
fi
node_peer="$ROOT/bench/peers/node"
[ "$system" = node ] && setup_node_peer
ulimit -n "$(ulimit -Hn)"
mkdir -p "$out"
say "results in $out"

pids=()
cleanup() {
  trap - EXIT INT TERM
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  true
}
trap cleanup EXIT
trap 'exit 130' INT TERM

start_bench_redis "$out"
pids+=("$redis_pid")

port="$(free_port)"
if [ "$system" = chatroom ]; then
  taskset -c 1 "$ROOT/target/release/server" --addr "127.0.0.1:$port" --redis-url "redis://127.0.0.1:$redis_port/" \
    --message-rate 1000000 --message-burst 1000000 --max-connections 100000 \
    --max-connections-per-address 100000 >"$out/server.log" 2>&1 &
else
  (cd "$node_peer" && PORT="$port" REDIS_URL="redis://127.0.0.1:$redis_port" exec taskset -c 1 node server.js) \
    >"$out/server.log" 2>&1 &
fi
server=$!
pids+=("$server")
for _ in $(seq 1 300); do curl -sf -o /dev/null "http://127.0.0.1:$port/" && break; sleep 0.1; done

# utime and stime of the server in clock ticks (fields 14 and 15, counted past the name).
ticks() { sed 's/.*) //' "/proc/$server/stat" | awk '{ print $12, $13 }'; }

rate=10
clients=1000
say "$system: $clients clients, $rate lines a second for 40 s"
taskset -c 0 "$ROOT/target/release/chatroom-bench" fanout --url "http://127.0.0.1:$port" --clients "$clients" \
  --senders 10 --rate "$rate" --duration-secs 40 --server-pid "$server" >"$out/fanout.txt" 2>"$out/fanout.log" &
load=$!
# Connecting 1,000 clients takes a few seconds; the windows start well after.
sleep 8
read -r user0 sys0 < <(ticks)
sleep 10
read -r user1 sys1 < <(ticks)
say "perf record (10 s)"
perf record -e cpu-clock -F 999 -p "$server" -o "$out/perf.data" -- sleep 10 >"$out/perf.log" 2>&1
say "strace -c (8 s)"
timeout -s INT 8 strace -c -f -p "$server" -o "$out/strace.txt" >/dev/null 2>&1 || true
wait "$load" || true

perf report -i "$out/perf.data" --stdio --no-children --sort dso >"$out/perf-dso.txt" 2>/dev/null
perf report -i "$out/perf.data" --stdio --no-children --sort dso,symbol >"$out/perf-symbols.txt" 2>/dev/null
deliveries=$((rate * clients * 10))
{
  echo "$system, $clients clients, $rate lines a second: $((rate * clients)) deliveries a second"
  echo
  tail -n 1 "$out/fanout.txt" | python3 -c "$(cat <<'PY'
import json, sys
r = json.loads(sys.stdin.read())
print(f"whole run: {r['received']:,} of {r['expected']:,} received, p99 {r['latency_ms_p99']} ms, "
      f"server {r['server_cpu_us_per_delivery']:.1f} µs a delivery")
PY
)"
  awk -v u="$((user1 - user0))" -v s="$((sys1 - sys0))" -v d="$deliveries" 'BEGIN {
    printf "10 s window: user %.1f µs + system %.1f µs = %.1f µs a delivery\n", u * 1e4 / d, s * 1e4 / d, (u + s) * 1e4 / d }'
  echo
  echo "syscalls over 8 s (about $((rate * clients * 8)) deliveries; strace slows the server):"
  grep -E "^ *[0-9]" "$out/strace.txt" | sort -k4 -n -r | sed -n "1,8p"
  echo
  echo "CPU by binary (perf, 10 s):"
  grep -E "^ +[0-9]" "$out/perf-dso.txt" | sed -n "1,8p"
  echo
  echo "CPU by function (perf, 10 s, top 30):"
  grep -E "^ +[0-9]" "$out/perf-symbols.txt" | sed -n "1,30p" | cut -c1-110
} | tee "$out/summary.txt"
