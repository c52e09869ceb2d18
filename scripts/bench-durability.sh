#!/usr/bin/env bash
# The durability benchmark (docs/benchmarks.md, "Durability"): what `--redis-durability
# replica` costs against `async`. Redis runs as a master, a replica and three sentinels;
# one release node finds the master through them. Redis and the node are pinned to CPU 1,
# the load tool to CPU 0 (taskset). For each mode, `--rounds` times (3):
#   fanout   100 clients, 10 senders, 200 lines a second for 20 s: delivery latency and
#            the CPU the node and Redis (master + replica) spent a delivery;
#   rampup   the same clients with a rising rate (x1.5 every 5 s from 100 a second): the
#            highest rate held with nothing lost and a p99 within 250 ms.
# Prints the load tool's JSON lines; the medians go to summary.md. About 10 minutes.
#
#   scripts/bench-durability.sh [--rounds 3] [--no-build] [--out DIR]
#
# Not part of the test command (it/failover.rs tests both modes under a failover).
source "$(dirname "$0")/setup.sh"

bench_prelude bench-durability "$@"

redis_pids=()
node_pid=""
cleanup() {
  trap - EXIT INT TERM
  [ -n "$node_pid" ] && kill -TERM "$node_pid" 2>/dev/null && wait "$node_pid" 2>/dev/null
  for pid in "${redis_pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${redis_pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  true
}
trap cleanup EXIT
trap 'exit 130' INT TERM

wait_redis() {
  for _ in $(seq 1 100); do redis-cli -p "$1" ping >/dev/null 2>&1 && return; sleep 0.1; done
  echo "redis on port $1 did not start" >&2
  exit 1
}

master="$(free_port)"
taskset -c 1 redis-server --port "$master" --bind 127.0.0.1 --save "" --appendonly no --dir "$out" \
  --dbfilename "master.rdb" --repl-diskless-sync-delay 0 --logfile "$out/master.log" &
redis_pids+=($!)
wait_redis "$master"
replica="$(free_port)"
taskset -c 1 redis-server --port "$replica" --bind 127.0.0.1 --save "" --appendonly no --dir "$out" \
  --dbfilename "replica.rdb" --replicaof 127.0.0.1 "$master" --repl-diskless-load on-empty-db \
  --logfile "$out/replica.log" &
redis_pids+=($!)
wait_redis "$replica"
sentinels=()
for i in 1 2 3; do
  port="$(free_port)"
  printf 'port %s\nbind 127.0.0.1\nsentinel monitor chatroom 127.0.0.1 %s 2\nsentinel down-after-milliseconds chatroom 2000\n' \
    "$port" "$master" >"$out/sentinel-$i.conf"
  taskset -c 1 redis-server "$out/sentinel-$i.conf" --sentinel --logfile "$out/sentinel-$i.log" &
  redis_pids+=($!)
  wait_redis "$port"
  sentinels+=("127.0.0.1:$port")
done
for _ in $(seq 1 100); do
  redis-cli -p "$replica" info replication | grep -q "master_link_status:up" && break
  sleep 0.1
done

# run MODE NAME SCENARIO ARGS...: a fresh node in MODE, one run of the tool, its JSON line.
run() {
  local mode="$1" name="$2" scenario="$3" port
  shift 3
  redis-cli -p "$master" flushall >/dev/null
  port="$(free_port)"
  taskset -c 1 "$ROOT/target/release/server" --addr "127.0.0.1:$port" --node-name node-1 \
    --redis-sentinel "$(IFS=,; echo "${sentinels[*]}")" --redis-sentinel-master chatroom \
    --redis-durability "$mode" --message-rate 1000000 --message-burst 1000000 \
    --renames-per-minute 1000000 --rename-burst 1000000 --max-connections 100000 \
    --max-connections-per-address 100000 >>"$out/$name-node.log" 2>&1 &
  node_pid=$!
  for _ in $(seq 1 300); do curl -sf -o /dev/null "http://127.0.0.1:$port/readyz" && break; sleep 0.1; done
  say "$name"
  # The fanout also reports the CPU the node and the two Redis servers spent a delivery.
  [ "$scenario" = fanout ] && set -- "$@" --server-pid "$node_pid" --redis-pid "${redis_pids[0]}" \
    --redis-pid "${redis_pids[1]}"
  taskset -c 0 "$tool" "$scenario" --url "http://127.0.0.1:$port" "$@" | tee "$out/$name.txt" | tail -n 1 \
    >"$out/$name.json" || true
  kill -TERM "$node_pid" 2>/dev/null && wait "$node_pid" 2>/dev/null
  node_pid=""
  cat "$out/$name.json"
}

for round in $(seq 1 "$rounds"); do
  for mode in async replica; do
    run "$mode" "fanout-$mode-r$round" fanout --clients 100 --senders 10 --rate 200 --duration-secs 20
    run "$mode" "rampup-$mode-r$round" rampup --clients 100 --senders 10 --start-rate 100 --factor 1.5 \
      --step-secs 5 --p99-limit-ms 250 --max-steps 12
  done
done

python3 - "$out" <<'PY' | tee "$out/summary.md"
import glob, json, os, statistics, sys
out = sys.argv[1]
def runs(name):
    return [json.load(open(p)) for p in sorted(glob.glob(os.path.join(out, f"{name}-r*.json")))]
print("| durability | sent | missing | dup | order | p50 ms | p99 ms | node µs/delivery | Redis µs/delivery | highest rate held (lines/s) |")
print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
for mode in ["async", "replica"]:
    fan, ramp = runs(f"fanout-{mode}"), runs(f"rampup-{mode}")
    if not fan or not ramp:
        continue
    med = lambda rs, key: statistics.median(r[key] for r in rs)
    total = lambda rs, key: sum(r[key] for r in rs)
    cpu = lambda rs, key: "n/a" if any(r.get(key) is None for r in rs) else f"{med(rs, key):.1f}"
    print(f"| {mode} (median of {len(fan)}) | {med(fan, 'sent'):,.0f} | {total(fan, 'missing')} | {total(fan, 'duplicates')} "
          f"| {total(fan, 'order_violations')} | {med(fan, 'latency_ms_p50'):.1f} | {med(fan, 'latency_ms_p99'):.1f} "
          f"| {cpu(fan, 'server_cpu_us_per_delivery')} | {cpu(fan, 'redis_cpu_us_per_delivery')} "
          f"| {statistics.median(r['held_rate'] or 0 for r in ramp):,.0f} |")
PY
