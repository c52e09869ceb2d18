#!/usr/bin/env bash
# Starts a local chatroom cluster on loopback: Redis (reused when REDIS_URL is set or one
# answers on --redis-port, started otherwise), N nodes, and nginx in front with the
# repository's configuration (deploy/nginx/chatroom.conf). Prints the URL, then runs
# until Ctrl-C or SIGTERM, which stops everything it started.
#
#   scripts/cluster.sh [--nodes N] [--port PORT] [--redis-port PORT] [--no-build]
#
# Nodes listen on PORT+1 .. PORT+N and are named node-1 .. node-N.
source "$(dirname "$0")/setup.sh"

nodes=2
port=8080
redis_port=6379
build=1
while [ $# -gt 0 ]; do
  case "$1" in
    --nodes) nodes="$2"; shift 2 ;;
    --port) port="$2"; shift 2 ;;
    --redis-port) redis_port="$2"; shift 2 ;;
    --no-build) build=""; shift ;;
    *) echo "unknown argument: $1 (see the header of $0)" >&2; exit 2 ;;
  esac
done
case "$nodes" in ''|*[!0-9]*|0) echo "--nodes must be a positive number" >&2; exit 2 ;; esac

for tool in redis-server redis-cli nginx; do
  command -v "$tool" >/dev/null || { say "installing $tool"; apt_install redis-server nginx; }
done
if [ -n "$build" ]; then
  setup_build
  build_release
fi

work="$ROOT/target/cluster-$port"
rm -rf "$work"
mkdir -p "$work/tmp"
pids=()
redis_pid=""

stop_all() {
  trap - INT TERM EXIT
  say "stopping the cluster"
  # Nodes and nginx first: a draining node still needs Redis to close its sessions.
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  if [ -n "$redis_pid" ]; then
    redis-cli -p "$redis_port" shutdown nosave >/dev/null 2>&1 || kill -TERM "$redis_pid" 2>/dev/null || true
    wait "$redis_pid" 2>/dev/null || true
  fi
}
trap stop_all EXIT
trap 'exit 0' INT TERM

wait_for() { # URL-or-port description
  for _ in $(seq 1 100); do
    if [ "$1" -eq "$1" ] 2>/dev/null; then
      redis-cli -p "$1" ping >/dev/null 2>&1 && return 0
    else
      curl -sf -o /dev/null "$1" && return 0
    fi
    sleep 0.1
  done
  echo "$2 did not come up: see the logs in $work" >&2
  exit 1
}

if [ -n "${REDIS_URL:-}" ]; then
  redis_url="$REDIS_URL"
  say "using Redis at the given REDIS_URL"
elif redis-cli -p "$redis_port" ping >/dev/null 2>&1; then
  redis_url="redis://127.0.0.1:$redis_port/"
  say "reusing the Redis that answers on port $redis_port"
else
  say "starting Redis on 127.0.0.1:$redis_port"
  redis-server --port "$redis_port" --bind 127.0.0.1 --save "" --appendonly no \
    --dir "$work" --logfile "$work/redis.log" &
  redis_pid=$!
  wait_for "$redis_port" "Redis"
  redis_url="redis://127.0.0.1:$redis_port/"
fi

node_ports=()
for i in $(seq 1 "$nodes"); do
  node_port=$((port + i))
  # nginx on this machine forwards the clients' addresses: the per-address limits count those.
  "$ROOT/target/release/server" --addr "127.0.0.1:$node_port" --redis-url "$redis_url" --node-name "node-$i" \
    --trusted-proxies 127.0.0.1 >"$work/node-$i.log" 2>&1 &
  pids+=($!)
  echo $! >"$work/node-$i.pid"
  node_ports+=("$node_port")
done
for i in $(seq 1 "$nodes"); do wait_for "http://127.0.0.1:$((port + i))/" "node-$i"; done

start_nginx "$work" "$port" 4096 "${node_ports[@]}"
pids+=("$nginx_pid")
wait_for "http://127.0.0.1:$port/" "nginx"

# The URL may hold a password: print where Redis is, not the URL.
redis_where="127.0.0.1:$redis_port"
[ -n "${REDIS_URL:-}" ] && redis_where="REDIS_URL"
echo "chatroom cluster: http://127.0.0.1:$port ($nodes nodes, Redis at $redis_where, logs in $work)"
wait
