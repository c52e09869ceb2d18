#!/usr/bin/env bash
# The benchmark: chatroom against the replaced Flask-SocketIO service and Socket.IO on
# Node (bench/peers/), each as two nodes on one Redis, on loopback, driven by
# chatroom-bench. Builds release, installs the peers, runs every scenario for every
# system in turn (alternating the order each round), and writes docs/benchmarks.md, its
# charts and bench/baseline.json from the results (scripts/bench_report.py). Takes about
# 60 minutes.
#
#   scripts/bench.sh [--rounds 3] [--clients "100 1000 5000"] [--systems "chatroom node flask"]
#                    [--no-build] [--no-capacity] [--out DIR]
#   scripts/bench.sh --quick [--no-build]
#
# --quick (about 2 minutes after the build) measures chatroom alone: its servers' CPU per
# delivery at 1,000 clients and its memory per idle connection, and prints them against
# bench/baseline.json (written by the last full run). Run it before and after a change
# on the hot path.
#
# Not part of the test command (a smoke run of the load tool is).
source "$(dirname "$0")/setup.sh"

rounds=3
sizes="100 1000 5000"
systems="chatroom node flask"
build=1
capacity=1
quick=""
out="$ROOT/target/bench/$(date -u +%Y%m%dT%H%M%SZ)"
while [ $# -gt 0 ]; do
  case "$1" in
    --rounds) rounds="$2"; shift 2 ;;
    --clients) sizes="$2"; shift 2 ;;
    --systems) systems="$2"; shift 2 ;;
    --no-build) build=""; shift ;;
    --no-capacity) capacity=""; shift ;;
    --quick) quick=1; shift ;;
    --out) out="$2"; shift 2 ;;
    *) echo "unknown argument: $1 (see the header of $0)" >&2; exit 2 ;;
  esac
done

# --- set-up ------------------------------------------------------------------------
command -v redis-server >/dev/null || { say "installing Redis"; apt_install redis-server; }
if [ -z "$quick" ]; then
  for tool in nginx valgrind ss; do
    command -v "$tool" >/dev/null || { say "installing nginx, valgrind and ss"; apt_install nginx valgrind iproute2; }
  done
fi
if [ -n "$build" ]; then
  setup_build
  build_load_tool
fi
bench_tool="$ROOT/target/release/chatroom-bench"
if [ -n "$quick" ]; then
  systems="chatroom"
  out="$ROOT/target/bench/quick-$(date -u +%Y%m%dT%H%M%SZ)"
fi
venv="$ROOT/target/bench-venv"
reqs="$ROOT/bench/peers/flask/requirements.txt"
if [ -z "$quick" ] && { [ ! -x "$venv/bin/python" ] || [ "$reqs" -nt "$venv/.installed" ] || [ "$0" -nt "$venv/.installed" ]; }; then
  say "installing the Flask-SocketIO peer and matplotlib (for the charts)"
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check -r "$reqs" matplotlib==3.10.7
  touch "$venv/.installed"
fi
node_peer="$ROOT/bench/peers/node"
[[ " $systems " == *" node "* ]] && setup_node_peer

# Every connection is a file descriptor, for the servers and the load tool alike.
ulimit -n "$(ulimit -Hn)"
mkdir -p "$out"
say "results in $out"


pids=()
stop_pids() {
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do
    for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  pids=()
}
redis_pid=""
cleanup() {
  trap - EXIT INT TERM
  stop_pids
  [ -n "$redis_pid" ] && kill -TERM "$redis_pid" 2>/dev/null && wait "$redis_pid" 2>/dev/null
  true
}
trap cleanup EXIT
trap 'exit 130' INT TERM

wait_http() { # URL what
  for _ in $(seq 1 300); do
    curl -sf -o /dev/null "$1" && return 0
    sleep 0.1
  done
  echo "$2 did not come up at $1: see $out" >&2
  exit 1
}

redis_port="$(free_port)"
redis-server --port "$redis_port" --bind 127.0.0.1 --save "" --appendonly no --dir "$out" \
  --logfile "$out/redis.log" &
redis_pid=$!
for _ in $(seq 1 100); do redis-cli -p "$redis_port" ping >/dev/null 2>&1 && break; sleep 0.1; done

# start SYSTEM NODES [CPUS]: starts the system's nodes on fresh ports, on the CPUs listed
# (taskset) if given; sets urls and pids. chatroom's nodes also get chatroom_settings.
urls=()
storm=""
chatroom_settings=()
start() {
  local system="$1" nodes="$2" cpus="${3:-}" i port pin=() limits
  [ -n "$cpus" ] && pin=(taskset -c "$cpus")
  redis-cli -p "$redis_port" flushall >/dev/null
  urls=()
  for i in $(seq 1 "$nodes"); do
    port="$(free_port)"
    case "$system" in
      chatroom)
        # Rate limits are for people; the benchmark's senders send far faster. The storm
        # has people's rates, from many addresses behind nginx: it keeps the defaults.
        limits=(--message-rate 1000000 --message-burst 1000000 --max-connections 100000
          --max-connections-per-address 100000)
        [ -n "$storm" ] && limits=(--trusted-proxies 127.0.0.1)
        "${pin[@]}" "$ROOT/target/release/server" --addr "127.0.0.1:$port" --node-name "node-$i" \
          --redis-url "redis://127.0.0.1:$redis_port/" "${limits[@]}" "${chatroom_settings[@]}" \
          >>"$out/$system-$i.log" 2>&1 &
        ;;
      node)
        (cd "$node_peer" && PORT="$port" REDIS_URL="redis://127.0.0.1:$redis_port" exec "${pin[@]}" node server.js) \
          >>"$out/$system-$i.log" 2>&1 &
        ;;
      flask)
        PORT="$port" REDIS_URL="redis://127.0.0.1:$redis_port/0" "${pin[@]}" "$venv/bin/python" "$ROOT/bench/peers/flask/app.py" \
          >>"$out/$system-$i.log" 2>&1 &
        ;;
    esac
    pids+=($!)
    urls+=("--url" "http://127.0.0.1:$port")
  done
  for ((i = 1; i < ${#urls[@]}; i += 2)); do wait_http "${urls[$i]}/" "$system"; done
}

# run NAME [taskset -c CPUS] ARGS...: runs the load tool, keeps its table and JSON line.
run() {
  local name="$1"
  shift
  say "$name"
  # A run that lost something exits 1; its report says what, and the next run goes on.
  if [ "$1" = taskset ]; then
    "$1" "$2" "$3" "$bench_tool" "${@:4}" >"$out/$name.txt" 2>"$out/$name.log" || true
  else
    "$bench_tool" "$@" >"$out/$name.txt" 2>"$out/$name.log" || true
  fi
  tail -n 1 "$out/$name.txt" >"$out/$name.json"
  sed '$d' "$out/$name.txt" | tail -n 4 >&2
}

# The order of the systems turns each round, so no system always runs first or last.
rotate() { # ROUND words...
  local round="$1"
  shift
  local list=("$@") n=$#
  for ((i = 0; i < n; i++)); do echo "${list[$(((i + round) % n))]}"; done
}

# Each rampup starts near a tenth of what the fastest system held when this was written,
# so every system gets several steps before it breaks; 1.5x a step.
start_rate() {
  case "$1" in
    100) echo 40 ;;
    1000) echo 8 ;;
    *) echo 1 ;;
  esac
}

# CPU per delivery: the same clients at a fixed rate that every system holds (10 senders,
# 20 s), servers and Redis on CPU 1 and the load tool on CPU 0, so that its own cost
# stays out of the servers'. The rate for each size: 5,000 / 10,000 / 10,000 deliveries
# a second.
cpu_rate() {
  case "$1" in
    100) echo 50 ;;
    1000) echo 10 ;;
    *) echo 2 ;;
  esac
}
measure_cpu() { # SYSTEM ROUND SIZES
  local system="$1" round="$2" n server_pids=()
  taskset -a -p -c 1 "$redis_pid" >/dev/null
  start "$system" 2 1
  for pid in "${pids[@]}"; do server_pids+=("--server-pid" "$pid"); done
  for n in $3; do
    run "cpu-$system-$n-r$round" taskset -c 0 fanout "${urls[@]}" --clients "$n" --senders 10 \
      --rate "$(cpu_rate "$n")" --duration-secs 20 "${server_pids[@]}" --redis-pid "$redis_pid"
  done
  stop_pids
  taskset -a -p -c "0-$(($(nproc) - 1))" "$redis_pid" >/dev/null
}

# Memory per idle connection: 5,000 connections over both nodes.
measure_memory() { # SYSTEM ROUND [NAME]
  local system="$1" round="$2" name="${3:-memory-$1}" server_pids=()
  start "$system" 2
  for pid in "${pids[@]}"; do
    # The peers' shells exec their server: the pid is the server's.
    server_pids+=("--server-pid" "$pid")
  done
  run "$name-5000-r$round" conns "${urls[@]}" --connections 5000 --hold-secs 5 "${server_pids[@]}"
  stop_pids
}

# Memory per idle connection under each setting of the socket library (chatroom's flags
# for them), one changed at a time from the defaults; as measure_memory.
memory_settings=(
  "ws-read-256:--ws-read-buffer-bytes 256"
  "ws-read-4096:--ws-read-buffer-bytes 4096"
  "queue-16:--client-queue 16"
  "queue-65536:--client-queue 65536"
  "ping-5:--ping-interval-secs 5 --ping-timeout-secs 5"
  "ping-50:--ping-interval-secs 50 --ping-timeout-secs 60"
)
measure_memory_settings() { # ROUND
  local entry
  for entry in "${memory_settings[@]}"; do
    read -r -a chatroom_settings <<<"${entry#*:}"
    echo "${entry#*:}" >"$out/memsetting-${entry%%:*}.flags"
    measure_memory chatroom "$1" "memsetting-${entry%%:*}"
  done
  chatroom_settings=()
}

# Where an idle connection's memory goes: one chatroom node (with Redis) under valgrind's
# massif; detailed heap snapshots (through vgdb) before and while 1,000 idle connections
# are held. scripts/bench_massif.py splits the growth by who allocated it.
measure_memory_breakdown() {
  local port node conns
  redis-cli -p "$redis_port" flushall >/dev/null
  port="$(free_port)"
  say "memory breakdown (massif, 1,000 idle connections)"
  valgrind --tool=massif --threshold=0.1 --depth=40 --massif-out-file="$out/massif.out" \
    "$ROOT/target/release/server" --addr "127.0.0.1:$port" --node-name massif \
    --redis-url "redis://127.0.0.1:$redis_port/" >"$out/massif-node.log" 2>&1 &
  node=$!
  pids+=("$node")
  for _ in $(seq 1 600); do curl -sf -o /dev/null "http://127.0.0.1:$port/readyz" && break; sleep 0.1; done
  sleep 5
  vgdb --pid="$node" detailed_snapshot "$out/massif-before.txt" >>"$out/massif-node.log" 2>&1
  "$bench_tool" conns --url "http://127.0.0.1:$port" --connections 1000 --hold-secs 60 \
    >"$out/massif-conns.txt" 2>&1 &
  conns=$!
  for _ in $(seq 1 1200); do
    [ "$(ss -Htn state established "( sport = :$port )" | wc -l)" -ge 1000 ] && break
    sleep 0.1
  done
  sleep 5
  vgdb --pid="$node" detailed_snapshot "$out/massif-after.txt" >>"$out/massif-node.log" 2>&1
  wait "$conns" || true
  stop_pids
}

# Reconnect storm: two nodes behind nginx, 10,000 clients (5,000 a node, 10 a source
# address, 10 senders with a line every 5 s each); the load tool kills node 1 (SIGKILL)
# once all have joined, and its clients come back through nginx with the page's backoff.
# chatroom's clients resume (structured protocol, rooms of 100) and chatroom keeps its
# default limits, counted per client address behind nginx (--trusted-proxies); Node's
# clients reconnect (one room: its contract has no other).
measure_storm() { # SYSTEM ROUND
  local system="$1" round="$2" port legacy=() ports=() i
  storm=1
  start "$system" 2
  storm=""
  for ((i = 1; i < ${#urls[@]}; i += 2)); do ports+=("${urls[$i]##*:}"); done
  port="$(free_port)"
  start_nginx "$out/nginx-storm-$system-r$round" "$port" 25000 "${ports[@]}"
  pids+=("$nginx_pid")
  wait_http "http://127.0.0.1:$port/" "nginx"
  [ "$system" = chatroom ] || legacy=(--legacy)
  run "storm-$system-10000-r$round" storm --url "http://127.0.0.1:$port" --clients 10000 --room-size 100 \
    --senders 10 --every-secs 5 --per-address 10 --kill-pid "${pids[0]}" --server-pid "${pids[1]}" --redis-pid "$redis_pid" \
    --before-secs 10 --within-secs 90 "${legacy[@]}"
  stop_pids
}

if [ -n "$quick" ]; then
  for round in 1 2; do measure_cpu chatroom "$round" 1000; done
  measure_memory chatroom 1
  python3 "$ROOT/scripts/bench_baseline.py" compare "$out" "$ROOT/bench/baseline.json"
  exit 0
fi

for round in $(seq 1 "$rounds"); do
  for system in $(rotate "$round" $systems); do
    measure_cpu "$system" "$round" "$sizes"
    start "$system" 2
    for n in $sizes; do
      run "rampup-$system-$n-r$round" rampup "${urls[@]}" --clients "$n" --senders 10 \
        --start-rate "$(start_rate "$n")" --factor 1.5 --step-secs 4 --max-steps 18
    done
    stop_pids
    # Fresh nodes for each measure: a ramp past what a system holds can leave it unwell
    # (the replaced service refused most connections after its 5,000-client ramp).
    start "$system" 2
    run "latency-$system-1000-r$round" fanout "${urls[@]}" --clients 1000 --senders 10 --rate 10 --duration-secs 10
    stop_pids
    measure_memory "$system" "$round"
    [ "$system" = flask ] || measure_storm "$system" "$round"
    if [ "$system" = chatroom ] && [ "$round" = 1 ]; then
      measure_memory_settings "$round"
      measure_memory_breakdown
    fi
  done
done

if [ -n "$capacity" ]; then
  # chatroom alone: one node up to its file-descriptor limit, then 100,000 over six nodes.
  limit="$(ulimit -Hn)"
  start chatroom 1
  run "capacity-chatroom-1node" conns "${urls[@]}" --connections $((limit - 1000)) --hold-secs 10 --server-pid "${pids[0]}"
  stop_pids
  start chatroom 6
  server_pids=()
  for pid in "${pids[@]}"; do server_pids+=("--server-pid" "$pid"); done
  run "capacity-chatroom-6nodes" conns "${urls[@]}" --connections 100000 --hold-secs 10 "${server_pids[@]}"
  stop_pids
fi

# What ran, for the report.
{
  echo "date=$(date -u +%Y-%m-%dT%H:%MZ)"
  echo "commit=$(git -C "$ROOT" rev-parse --short HEAD)$(git -C "$ROOT" diff --quiet || echo '+changes')"
  echo "cpu=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"
  echo "cores=$(nproc)"
  echo "memory=$(free -g | awk '/^Mem:/ { print $2 }') GiB"
  echo "kernel=$(uname -r)"
  echo "rustc=$(rustc --version)"
  echo "redis=$(redis-server --version | sed 's/.*v=\([^ ]*\).*/\1/')"
  echo "node=$(node --version)"
  echo "socket.io=$(cd "$node_peer" && node -p 'require("socket.io/package.json").version')"
  echo "redis-adapter=$(cd "$node_peer" && node -p 'require("@socket.io/redis-adapter/package.json").version')"
  echo "python=$("$venv/bin/python" --version | cut -d' ' -f2)"
  echo "flask-socketio=$("$venv/bin/python" -c 'import importlib.metadata as m; print(m.version("flask-socketio"))')"
  echo "rounds=$rounds"
  echo "clients=$sizes"
} >"$out/meta.txt"

say "writing docs/benchmarks.md and bench/baseline.json"
"$venv/bin/python" "$ROOT/scripts/bench_report.py" "$out" "$ROOT/docs"
python3 "$ROOT/scripts/bench_baseline.py" write "$out" "$ROOT/bench/baseline.json"
