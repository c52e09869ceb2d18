#!/usr/bin/env bash
# The page's weight and time to interactive (docs/benchmarks.md, "The page"): builds the
# release, starts one node on a free loopback port, and runs bench/page/load.mjs against
# it (20 fresh visits in headless Chromium). Prints one JSON line. About a minute after
# the build.
#
#   scripts/bench-page.sh [--no-build] [--runs 20]
#
# Not part of the test command: timings are measured here, never asserted in tests.
source "$(dirname "$0")/setup.sh"

build=1
runs=20
while [ $# -gt 0 ]; do
  case "$1" in
    --no-build) build=""; shift ;;
    --runs) runs="$2"; shift 2 ;;
    *) echo "unknown argument: $1 (see the header of $0)" >&2; exit 2 ;;
  esac
done

cd "$ROOT"
[ -n "$build" ] && cargo leptos build --release
port=$(free_port)
target/release/server --addr "127.0.0.1:$port" >/dev/null 2>&1 &
node_pid=$!
trap 'kill "$node_pid" 2>/dev/null; wait "$node_pid" 2>/dev/null' EXIT
for _ in $(seq 100); do curl -fsS "http://127.0.0.1:$port/healthz" >/dev/null 2>&1 && break; sleep 0.1; done
node "$ROOT/bench/page/load.mjs" "http://127.0.0.1:$port/" --runs "$runs"
