#!/usr/bin/env bash
# Runs the hub from a checkout: installs the system libraries if missing, builds a release
# binary, and starts it on http://127.0.0.1:8080 serving ./public. Extra arguments go to
# halley (see `halley --help`).
#
# With no arguments (the development app) it also starts the demo pages' app backend,
# Scripts/demo_backend.py on http://127.0.0.1:8081 (signs the chat's presence subscriptions,
# feeds the ticker), and stops it with the hub. DEMO_BACKEND=0 leaves it out. The live view
# is then at http://127.0.0.1:8080/stats.html#token=dev-admin (admin token dev-admin).
set -euo pipefail
cd "$(dirname "$0")/.."
need=()
for pkg in zlib1g-dev libssl-dev pkg-config; do
    dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
done
if [ ${#need[@]} -gt 0 ]; then
    if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}"
fi
swift build -c release --static-swift-stdlib --product halley 2>&1 | grep -vE '^\[[0-9]+/[0-9]+\]'
[ "${PIPESTATUS[0]}" = 0 ] || { echo "build failed"; exit 1; }
if [ $# -eq 0 ] && [ "${DEMO_BACKEND:-1}" != 0 ] && command -v python3 >/dev/null; then
    python3 Scripts/demo_backend.py &
    backend=$!
    trap 'kill $backend 2>/dev/null || true' EXIT
    echo "live stats: http://127.0.0.1:8080/stats.html#token=dev-admin"
    .build/release/halley --public public --admin-token dev-admin
else
    exec .build/release/halley --public public "$@"
fi
