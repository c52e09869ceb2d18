# Installs what building and testing the chatroom need, skipping whatever is already
# there. Sourced by scripts/run.sh and scripts/test.sh; safe to run again.
#   setup_build   wasm32 target, cargo-leptos, wasm-bindgen-cli, npm packages (wasm-opt)
#   setup_tests   also Chromium, Redis, nginx and python-socketio (in a venv under target/)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CARGO_LEPTOS_VERSION="0.3.10"
export PATH="$HOME/.cargo/bin:$ROOT/end2end/node_modules/.bin:$PATH"

say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }

apt_updated=""
apt_install() {
  # Root on the machines this project targets; sudo elsewhere.
  local sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  if [ -z "$apt_updated" ]; then
    $sudo apt-get update -qq
    apt_updated=1
  fi
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "$@" >/dev/null
}

wasm_bindgen_version() {
  # cargo-leptos needs the wasm-bindgen CLI at exactly the version in Cargo.lock.
  awk '/^name = "wasm-bindgen"$/ { getline; gsub(/version = |"/, ""); print; exit }' "$ROOT/Cargo.lock"
}

setup_build() {
  if ! rustup target list --installed | grep -qx wasm32-unknown-unknown; then
    say "adding the wasm32-unknown-unknown target"
    rustup target add wasm32-unknown-unknown
  fi
  if ! cargo leptos --version 2>/dev/null | grep -q "$CARGO_LEPTOS_VERSION"; then
    say "installing cargo-leptos $CARGO_LEPTOS_VERSION (10 to 25 minutes, once)"
    cargo install "cargo-leptos@$CARGO_LEPTOS_VERSION" --locked
  fi
  local wbg
  wbg="$(wasm_bindgen_version)"
  if ! wasm-bindgen --version 2>/dev/null | grep -q " $wbg\$"; then
    say "installing wasm-bindgen-cli $wbg (about 8 minutes, once)"
    # Its own lockfile pins a crate the registry no longer has: build without --locked.
    cargo install wasm-bindgen-cli --version "$wbg" --force
  fi
  if ! command -v npm >/dev/null; then
    say "installing Node.js and npm"
    apt_install nodejs npm
  fi
  if [ ! -x "$ROOT/end2end/node_modules/.bin/wasm-opt" ] ||
    [ "$ROOT/end2end/package-lock.json" -nt "$ROOT/end2end/node_modules/.package-lock.json" ]; then
    say "installing npm packages (binaryen's wasm-opt, Playwright, socket.io-client)"
    (cd "$ROOT/end2end" && npm ci --no-fund --no-audit --loglevel=error)
  fi
}

setup_tests() {
  setup_build
  if [ ! -x /usr/bin/chromium ]; then
    say "installing Debian's Chromium for the browser tests"
    apt_install chromium
  fi
  if ! command -v redis-server >/dev/null || ! command -v nginx >/dev/null; then
    say "installing Redis and nginx for the cluster tests"
    apt_install redis-server nginx
  fi
  local venv="$ROOT/target/test-venv" reqs="$ROOT/server/tests/clients/requirements.txt"
  if [ ! -x "$venv/bin/python" ] || [ "$reqs" -nt "$venv/.installed" ]; then
    say "installing python-socketio for the integration tests"
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q --disable-pip-version-check -r "$reqs"
    touch "$venv/.installed"
  fi
  export CHATROOM_TEST_PYTHON="$venv/bin/python"
}

build_release() {
  say "building the release site and server (cargo leptos build --release)"
  (cd "$ROOT" && cargo leptos build --release)
}

# The release site and server, then the load tool (target/release/chatroom-bench).
build_load_tool() {
  build_release
  say "building the load tool (release)"
  (cd "$ROOT" && cargo build --release -p chatroom-bench)
}

# A TCP port on loopback that was free a moment ago.
free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# The common start of scripts/bench-rooms.sh and bench-durability.sh: reads their options
# (--rounds N, --no-build, --out DIR; results go under target/NAME/ by default), installs
# Redis, builds the load tool, and sets rounds, out and tool.
bench_prelude() {
  local name="$1" build=1
  shift
  rounds=3
  out="$ROOT/target/$name/$(date -u +%Y%m%dT%H%M%SZ)"
  while [ $# -gt 0 ]; do
    case "$1" in
      --rounds) rounds="$2"; shift 2 ;;
      --no-build) build=""; shift ;;
      --out) out="$2"; shift 2 ;;
      *) echo "unknown argument: $1 (see the header of $0)" >&2; exit 2 ;;
    esac
  done
  command -v redis-server >/dev/null || { say "installing Redis"; apt_install redis-server; }
  if [ -n "$build" ]; then
    setup_build
    build_load_tool
  fi
  tool="$ROOT/target/release/chatroom-bench"
  ulimit -n "$(ulimit -Hn)"
  mkdir -p "$out"
  say "results in $out"
}

# Starts a throwaway Redis for a benchmark (loopback, no persistence, pinned to CPU 1,
# logging into DIR) and waits for it; sets redis_port and redis_pid.
start_bench_redis() { # DIR
  redis_port="$(free_port)"
  taskset -c 1 redis-server --port "$redis_port" --bind 127.0.0.1 --save "" --appendonly no --dir "$1" \
    --logfile "$1/redis.log" &
  redis_pid=$!
  for _ in $(seq 1 100); do redis-cli -p "$redis_port" ping >/dev/null 2>&1 && return; sleep 0.1; done
  echo "Redis did not start on port $redis_port: see $1/redis.log" >&2
  exit 1
}

# Starts nginx on 127.0.0.1:PORT in front of the nodes on NODE_PORTs with the
# repository's configuration (deploy/nginx/chatroom.conf), its files in DIR, with room
# for CONNECTIONS sockets (a proxied client takes two). A process may not open more
# files than the hard limit (and raising it needs a privilege containers lack), so past
# it the sockets are shared by several workers on one port (reuseport). Sets nginx_pid;
# the caller waits.
start_nginx() { # DIR PORT CONNECTIONS NODE_PORT...
  local dir="$1" port="$2" connections="$3" upstream="" sticky="" node_port workers per_worker files reuse=""
  shift 3
  files="$(ulimit -Hn)"
  [ "$files" = unlimited ] && files=1048576
  workers=$(((connections + files - 257) / (files - 256)))
  per_worker=$(((connections + workers - 1) / workers))
  [ "$workers" -gt 1 ] && reuse=" reuseport"
  mkdir -p "$dir/tmp"
  for node_port in "$@"; do
    upstream+="    server 127.0.0.1:$node_port;"$'\n'
    sticky+="    server 127.0.0.1:$node_port max_fails=0;"$'\n'
  done
  cat >"$dir/chatroom-upstreams.conf" <<EOF
upstream chatroom_any {
    least_conn;
$upstream}
upstream chatroom_sticky {
    ip_hash;
$sticky}
EOF
  echo "listen 127.0.0.1:$port$reuse;" >"$dir/chatroom-listen.conf"
  cat >"$dir/nginx.conf" <<EOF
worker_processes $workers;
pid $dir/nginx.pid;
error_log $dir/nginx-error.log warn;
$( [ "$(id -u)" -eq 0 ] && echo "user root root;" )
worker_rlimit_nofile $((per_worker + 128));
events { worker_connections $per_worker; }
http {
    access_log $dir/nginx-access.log;
    client_body_temp_path $dir/tmp/body;
    proxy_temp_path $dir/tmp/proxy;
    fastcgi_temp_path $dir/tmp/fastcgi;
    uwsgi_temp_path $dir/tmp/uwsgi;
    scgi_temp_path $dir/tmp/scgi;
    include $ROOT/deploy/nginx/chatroom.conf;
}
EOF
  nginx -p "$dir" -c "$dir/nginx.conf" -g 'daemon off;' &
  nginx_pid=$!
}

# The Socket.IO on Node peer's packages (bench/peers/node), for the benchmarks that run it.
setup_node_peer() {
  local peer="$ROOT/bench/peers/node"
  if [ ! -d "$peer/node_modules" ] || [ "$peer/package-lock.json" -nt "$peer/node_modules/.package-lock.json" ]; then
    say "installing the Socket.IO on Node peer"
    (cd "$peer" && npm ci --no-fund --no-audit --loglevel=error)
  fi
}
