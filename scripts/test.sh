#!/usr/bin/env bash
# Runs every test: unit, integration (real node, official JS and Python Socket.IO
# clients) and browser (Playwright in Chromium against the release build).
source "$(dirname "$0")/setup.sh"
start=$(date +%s)
setup_tests
build_release
cd "$ROOT"
say "unit and integration tests (cargo test)"
cargo test -p app -p server
say "browser tests (Playwright, Chromium, release build)"
(cd end2end && npx playwright test)
say "all tests passed in $(( $(date +%s) - start )) s"
