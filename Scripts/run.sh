#!/usr/bin/env bash
# Runs the hub from a checkout: installs the system libraries if missing, builds a release
# binary, and starts it on http://127.0.0.1:8080 serving ./public. Extra arguments go to
# halley (see `halley --help`).
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
swift build -c release --product halley 2>&1 | grep -vE '^\[[0-9]+/[0-9]+\]'
[ "${PIPESTATUS[0]}" = 0 ] || { echo "build failed"; exit 1; }
exec .build/release/halley --public public "$@"
