#!/usr/bin/env bash
# The rooms benchmark (docs/benchmarks.md, "Rooms"): two release nodes of chatroom on one
# Redis, on loopback, the nodes and Redis pinned to CPU 1 and the load tool to CPU 0
# (taskset), so that the tool's own work does not slow the servers. Three configurations,
# each run `--rounds` times (3), in turn:
#   spread           1,000 rooms of 10 members, one line a second in every room (30 s);
#   busy-alone       one room of 1,000 members at 10 lines a second (60 s);
#   busy-with-quiet  the same busy room beside 999 rooms of 10 members at one line a
#                    minute each (60 s).
# Each run starts fresh nodes on an empty Redis and prints the load tool's JSON line with
# the nodes' CPU seconds (user + system, /proc/PID/stat), their peak RSS (VmHWM) and
# Redis's CPU seconds added; the medians go to summary.md. About 15 minutes.
#
#   scripts/bench-rooms.sh [--rounds 3] [--no-build] [--out DIR]
#
# Not part of the test command (the load tool's smoke test is).
source "$(dirname "$0")/setup.sh"

bench_prelude bench-rooms "$@"

# CPU seconds (user + system) a process used so far.
cpu_secs() {
  awk -v hz="$(getconf CLK_TCK)" '{ printf "%.2f", ($14 + $15) / hz }' "/proc/$1/stat"
}
peak_rss_kib() {
  awk '/^VmHWM:/ { print $2 }' "/proc/$1/status"
}

pids=()
redis_pid=""
stop_nodes() {
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  pids=()
}
cleanup() {
  trap - EXIT INT TERM
  stop_nodes
  [ -n "$redis_pid" ] && kill -TERM "$redis_pid" 2>/dev/null && wait "$redis_pid" 2>/dev/null
  true
}
trap cleanup EXIT
trap 'exit 130' INT TERM

start_bench_redis "$out"

# run NAME ARGS...: fresh nodes, one run of the tool, its JSON with the servers' costs.
run() {
  local name="$1" i port urls=()
  shift
  redis-cli -p "$redis_port" flushall >/dev/null
  for i in 1 2; do
    port="$(free_port)"
    # Rate limits are for people; every member connects from 127.0.0.1.
    taskset -c 1 "$ROOT/target/release/server" --addr "127.0.0.1:$port" --node-name "node-$i" \
      --redis-url "redis://127.0.0.1:$redis_port/" --message-rate 1000000 --message-burst 1000000 \
      --renames-per-minute 1000000 --rename-burst 1000000 --max-connections 100000 \
      --max-connections-per-address 100000 >>"$out/$name-node-$i.log" 2>&1 &
    pids+=($!)
    urls+=(--url "http://127.0.0.1:$port")
  done
  for url in "${urls[@]}"; do
    [ "$url" = --url ] && continue
    for _ in $(seq 1 300); do curl -sf -o /dev/null "$url/healthz" && break; sleep 0.1; done
  done
  local before=() redis_before
  for pid in "${pids[@]}"; do before+=("$(cpu_secs "$pid")"); done
  redis_before="$(cpu_secs "$redis_pid")"
  say "$name"
  taskset -c 0 "$tool" rooms "${urls[@]}" "$@" | tee "$out/$name.txt" | tail -n 1 >"$out/$name.json" || true
  local cpu=0 rss=0 n=0
  for pid in "${pids[@]}"; do
    cpu="$(awk -v a="$cpu" -v b="$(cpu_secs "$pid")" -v c="${before[$n]}" 'BEGIN { printf "%.2f", a + b - c }')"
    rss="$(( rss > $(peak_rss_kib "$pid") ? rss : $(peak_rss_kib "$pid") ))"
    n=$((n + 1))
  done
  local redis_cpu
  redis_cpu="$(awk -v a="$(cpu_secs "$redis_pid")" -v b="$redis_before" 'BEGIN { printf "%.2f", a - b }')"
  stop_nodes
  python3 - "$out/$name.json" "$cpu" "$rss" "$redis_cpu" <<'PY'
import json, sys
path, cpu, rss, redis_cpu = sys.argv[1], float(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
with open(path) as f:
    report = json.load(f)
report.update(nodes_cpu_secs=round(cpu, 2), node_peak_rss_kib=rss, redis_cpu_secs=round(redis_cpu, 2))
with open(path, "w") as f:
    json.dump(report, f)
print(json.dumps(report))
PY
}

for round in $(seq 1 "$rounds"); do
  run "spread-r$round" --rooms 1000 --members 10 --rate-per-room 1 --duration-secs 30
  run "busy-alone-r$round" --rooms 0 --busy-members 1000 --busy-rate 10 --duration-secs 60
  run "busy-with-quiet-r$round" --rooms 999 --members 10 --rate-per-room 0.0166667 \
    --busy-members 1000 --busy-rate 10 --duration-secs 60
done

python3 - "$out" <<'PY' | tee "$out/summary.md"
import glob, json, os, statistics, sys
out = sys.argv[1]
print("| configuration | clients | sent | missing | dup | order | wrong room | p50 ms | p99 ms | busy p99 ms | nodes CPU s | node peak RSS MiB | Redis CPU s |")
print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
for name in ["spread", "busy-alone", "busy-with-quiet"]:
    runs = [json.load(open(p)) for p in sorted(glob.glob(os.path.join(out, f"{name}-r*.json")))]
    if not runs:
        continue
    med = lambda key: statistics.median(r[key] for r in runs)
    total = lambda key: sum(r[key] for r in runs)
    print(f"| {name} (median of {len(runs)}) | {runs[0]['clients']:,} | {med('sent'):,.0f} | {total('missing')} | {total('duplicates')} "
          f"| {total('order_violations')} | {total('wrong_room')} | {med('latency_ms_p50'):.1f} | {med('latency_ms_p99'):.1f} "
          f"| {med('busy_latency_ms_p99'):.1f} | {med('nodes_cpu_secs'):.1f} | {med('node_peak_rss_kib') / 1024:.0f} | {med('redis_cpu_secs'):.1f} |")
PY
