#!/usr/bin/env bash
# Builds the chatroom (release) and runs one node with in-memory state on
# http://127.0.0.1:3000. Extra arguments go to the server (see `--help`).
source "$(dirname "$0")/setup.sh"
setup_build
build_release
cd "$ROOT"
say "chatroom on http://${CHATROOM_ADDR:-127.0.0.1:3000} (Ctrl-C stops it)"
exec target/release/server "$@"
