#!/usr/bin/env bash
# Memory per idle WebSocket session subscribed to one channel: halley (Pusher session, and a
# resumable one with halley=1) beside Nchan (nginx + libnginx-mod-nchan, one worker): a wrapper
# for session_idle.py (read its docstring, or --help). The goal for halley: under 1 KiB per
# idle subscribed session, at 10,000 sessions.
#   Scripts/bench/session_idle.sh [-n 10000] [--steps 5000,10000] [--modes halley,halley-resumable,nchan] ...
# Environment: N, STEPS, MODES, SETTLE, SERVER_CPU, HALLEY_BIN, SCRATCH, NO_BUILD, NGINX_BIN,
# NCHAN_MODULE, ENFORCE_GOALS, KEEP_TMP (see --help).
set -euo pipefail
command -v python3 >/dev/null || { echo "session_idle: error: python3 not found" >&2; exit 1; }
exec python3 "$(dirname "${BASH_SOURCE[0]}")/session_idle.py" "$@"
