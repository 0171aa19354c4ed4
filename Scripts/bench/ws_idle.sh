#!/usr/bin/env bash
# Memory per idle WebSocket connection, halley (plain, deflate, deflate-nct) and Node ws: a
# wrapper for ws_idle.py.
#   Scripts/bench/ws_idle.sh [-n 10000] [--steps 5000,10000] [--modes plain,deflate,deflate-nct] [--no-node] ...
# Environment: N, STEPS, MODES, SETTLE, HALLEY_BIN, NO_BUILD, NODE_BIN, KEEP_TMP (see --help).
set -euo pipefail
command -v python3 >/dev/null || { echo "ws_idle: error: python3 not found" >&2; exit 1; }
exec python3 "$(dirname "${BASH_SOURCE[0]}")/ws_idle.py" "$@"
