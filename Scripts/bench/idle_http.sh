#!/usr/bin/env bash
# Memory per idle keep-alive connection, halley vs nginx: a wrapper for idle_http.py.
#   Scripts/bench/idle_http.sh [-n 10000] [--steps 5000,10000] [--no-nginx] [--enforce] ...
# Environment: N, STEPS, SETTLE, HALLEY_BIN, NO_BUILD, NGINX_BIN, KEEP_TMP (see --help).
set -euo pipefail
command -v python3 >/dev/null || { echo "idle_http: error: python3 not found" >&2; exit 1; }
exec python3 "$(dirname "${BASH_SOURCE[0]}")/idle_http.py" "$@"
