#!/usr/bin/env bash
# The fault soak: chatroom clients chat for 10 minutes over two nodes behind nginx while
# this script kills -9 a node, kills and restarts Redis (AOF on, appendfsync always),
# pauses Redis for 15 s and drains a node. The clients (chatroom-bench soak) resume after
# every disconnect and check every line; the script checks the memory of the node that
# lives through it all. Not part of the test command; docs/reliability.md has its last
# figures.
#
#   scripts/soak.sh [--minutes N] [--no-build]
#
# Everything runs on loopback and stops by itself; logs are in target/soak/.
source "$(dirname "$0")/setup.sh"

minutes=10
build=1
while [ $# -gt 0 ]; do
  case "$1" in
    --minutes) minutes="$2"; shift 2 ;;
    --no-build) build=""; shift ;;
    *) echo "unknown argument: $1 (see the header of $0)" >&2; exit 2 ;;
  esac
done
case "$minutes" in ''|*[!0-9]*|0) echo "--minutes must be a positive number" >&2; exit 2 ;; esac
[ "$minutes" -le 15 ] || { echo "--minutes is at most 15" >&2; exit 2; }

setup_tests
if [ -n "$build" ]; then
  build_load_tool
fi

work="$ROOT/target/soak"
rm -rf "$work"
mkdir -p "$work/redis"
redis_port="$(free_port)"
port="$(free_port)"
pids=()
stop_all() {
  trap - INT TERM EXIT
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  redis-cli -p "$redis_port" shutdown nosave >/dev/null 2>&1 || true
}
trap stop_all EXIT
trap 'exit 130' INT TERM

start_redis() {
  redis-server --port "$redis_port" --bind 127.0.0.1 --dir "$work/redis" --save "" \
    --appendonly yes --appendfsync always --logfile "$work/redis.log" &
  redis_pid=$!
  for _ in $(seq 1 100); do redis-cli -p "$redis_port" ping >/dev/null 2>&1 && return; sleep 0.1; done
  echo "Redis did not start: see $work/redis.log" >&2
  exit 1
}

node_pid() { cat "$ROOT/target/cluster-$port/node-$1.pid"; }

# A node started again by this script, as scripts/cluster.sh starts it.
restart_node() {
  local i=$1
  "$ROOT/target/release/server" --addr "127.0.0.1:$((port + i))" --redis-url "redis://127.0.0.1:$redis_port/" \
    --node-name "node-$i" --trusted-proxies 127.0.0.1 >>"$work/node-$i.log" 2>&1 &
  echo $! >"$ROOT/target/cluster-$port/node-$i.pid"
  pids+=($!)
  for _ in $(seq 1 100); do curl -sf -o /dev/null "http://127.0.0.1:$((port + i))/readyz" && return; sleep 0.1; done
  echo "node-$i did not come back" >&2
}

rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }

# Seconds into the run at which each fault happens, spread over the run like over 10 minutes.
at() { echo $(( $1 * minutes * 60 / 600 )); }
wait_until() { local until=$(( start + $1 )); while [ "$(date +%s)" -lt "$until" ]; do sleep 1; done; }

say "Redis with AOF (appendfsync always) on 127.0.0.1:$redis_port"
start_redis
say "two nodes and nginx on http://127.0.0.1:$port"
REDIS_URL="redis://127.0.0.1:$redis_port/" CHATROOM_DRAIN_DELAY_SECS=2 \
  "$ROOT/scripts/cluster.sh" --no-build --nodes 2 --port "$port" >"$work/cluster.log" 2>&1 &
pids+=($!)
for _ in $(seq 1 200); do curl -sf -o /dev/null "http://127.0.0.1:$port/" && break; sleep 0.1; done

say "soaking for $minutes minutes (report in $work/report.txt)"
start=$(date +%s)
"$ROOT/target/release/chatroom-bench" soak --url "http://127.0.0.1:$port" --clients 40 --senders 8 \
  --every-secs 1 --duration-secs $(( minutes * 60 )) >"$work/report.txt" 2>"$work/bench.log" &
bench=$!

wait_until "$(at 60)"
rss_first=$(rss_kib "$(node_pid 2)")
say "node-2 (lives through it all): $rss_first KiB after the first minute"

wait_until "$(at 120)"
say "fault: kill -9 node-1, back 3 s later"
kill -KILL "$(node_pid 1)"
sleep 3
restart_node 1

wait_until "$(at 240)"
say "fault: kill -9 Redis, back at once from its AOF"
kill -KILL "$redis_pid"
wait "$redis_pid" 2>/dev/null || true
start_redis

wait_until "$(at 360)"
say "fault: Redis paused for 15 s (CLIENT PAUSE ALL)"
redis-cli -p "$redis_port" client pause 15000 all >/dev/null

wait_until "$(at 480)"
say "fault: node-1 drained (SIGTERM), back when it is gone"
drained=$(node_pid 1)
kill -TERM "$drained"
while kill -0 "$drained" 2>/dev/null; do sleep 0.2; done
restart_node 1

wait_until "$(( minutes * 60 - 15 ))"
rss_end=$(rss_kib "$(node_pid 2)")
say "node-2: $rss_end KiB at the end"
status=0
wait "$bench" || status=$?
cat "$work/report.txt"
growth=$(( (rss_end - rss_first) * 100 / rss_first ))
echo "node-2 RSS: $rss_first KiB after the first minute, $rss_end KiB at the end (${growth} %)" | tee -a "$work/report.txt"
if [ "$status" -ne 0 ] || [ "$growth" -gt 10 ]; then
  say "the soak found a problem (lines lost, duplicated or out of order, false leaves, resets, or memory growth over 10 %)"
  exit 1
fi
say "soak clean"
