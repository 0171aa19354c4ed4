#!/usr/bin/env bash
# The soak (issue 15): one hub under mixed load for MINUTES (default 30): 10,000 clients with
# churn on every transport (Pusher WebSocket, resumable WebSocket, SSE, long-polling,
# pusher-js xhr_streaming and xhr polling), resumes and transport switches, presence joins and
# leaves, client events, 50 publishes/s, a few slow consumers. The hub's RSS, open descriptors
# and CPU are sampled every 10 s into a CSV and a PNG chart; it fails unless RSS grows less
# than 5 % after the warm-up, descriptors return to their baseline after the load, and
# resumable sessions lose and duplicate nothing. Details: Scripts/soak/soak.py.
#
#   Scripts/soak.sh [MINUTES] [--bin PATH] [--out DIR] [--connections N] [--rate R]
#
# Environment (the options win): HALLEY_BIN (default .build/release/halley), SOAK_OUT (default
# .test-out/soak), SOAK_CONNECTIONS (10000), SOAK_RATE (50 publishes/s), SOAK_SAMPLE_SECONDS
# (10), SOAK_HUB_CPU / SOAK_LOAD_CPU (cores 0 and 1), SOAK_HUB_THREADS (2).
# The hub runs on one core and the load generator (Python, asyncio) on the other; the run is
# killed MINUTES + 5 minutes after it starts, whatever happens.
set -euo pipefail
cd "$(dirname "$0")/.."

minutes=30
if [ $# -gt 0 ] && [[ $1 =~ ^[0-9]+([.][0-9]+)?$ ]]; then
    minutes=$1
    shift
fi

# 10,000 connections on each side, and the hub's --max-connections follows this limit.
ulimit -n 20000 2>/dev/null || ulimit -n "$(ulimit -Hn)"
if [ "$(ulimit -n)" -lt 12000 ]; then
    echo "soak: the open-file limit is $(ulimit -n): 12,000 at least are needed (SOAK_CONNECTIONS lowers the load)" >&2
fi
command -v taskset >/dev/null || { echo "soak: taskset (util-linux) is missing" >&2; exit 1; }

if [ ! -x .venv/bin/python ]; then
    "${PYTHON:-python3}" -m venv .venv
fi
.venv/bin/pip install -q --disable-pip-version-check -r Tests/integration/requirements.txt -r Scripts/soak-requirements.txt

hard=$(awk -v m="$minutes" 'BEGIN { printf "%d", m * 60 + 300 }')
exec timeout --kill-after=20 "$hard" .venv/bin/python Scripts/soak/soak.py "$minutes" "$@"
