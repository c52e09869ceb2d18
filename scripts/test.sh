#!/usr/bin/env bash
# Runs every check and test: formatting and lints (native, and the browser code for
# wasm32), unit and integration tests (real nodes, Redis and nginx, the official JS and
# Python Socket.IO clients, the load tool's smoke runs) and browser tests (Playwright in
# Chromium against the release build).
source "$(dirname "$0")/setup.sh"
start=$(date +%s)
# A fresh checkout (CI) gains nothing from incremental compilation, only its cost.
if [ -n "${CI:-}" ]; then export CARGO_INCREMENTAL=0; fi
setup_tests
cd "$ROOT"
say "formatting (cargo fmt --check)"
cargo fmt --all --check
say "lints (clippy on every crate and test, then the browser code for wasm32)"
cargo clippy --workspace --all-targets -- -D warnings
cargo clippy -p app -p frontend --target wasm32-unknown-unknown --features app/hydrate -- -D warnings
build_release
say "unit and integration tests (cargo test)"
# Most integration tests wait on real processes and timers: more threads than cores.
cargo test --workspace -- --test-threads 4
say "browser tests (Playwright, Chromium, release build)"
(cd end2end && npx playwright test)
say "all tests passed in $(( $(date +%s) - start )) s"
