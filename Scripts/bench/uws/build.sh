#!/usr/bin/env bash
# Builds server.cpp against uWebSockets and uSockets for matrix.sh, in a temporary folder: the
# sources are cloned there (never into this repository), the binary is DIR/uws-server.
# usage: build.sh [DIR]   (default /tmp/halley-uws; UWS_GIT, USOCKETS_GIT: where to clone from)
# Needs g++ (C++20), make, git and zlib (libz-dev). No TLS (LIBUS_NO_SSL), epoll.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
dir=${1:-/tmp/halley-uws}
mkdir -p "$dir"
[[ -d $dir/uWebSockets ]] || git clone -q --depth 1 "${UWS_GIT:-https://github.com/uNetworking/uWebSockets}" "$dir/uWebSockets"
[[ -d $dir/uSockets ]] || git clone -q --depth 1 "${USOCKETS_GIT:-https://github.com/uNetworking/uSockets}" "$dir/uSockets"
echo "uWebSockets $(git -C "$dir/uWebSockets" rev-parse --short HEAD), uSockets $(git -C "$dir/uSockets" rev-parse --short HEAD)"
cd "$dir/uSockets"
# uSockets' own Makefile, as uWebSockets' build does: plain epoll, no SSL, -O3 -flto.
make -s clean >/dev/null 2>&1 || true
make -s WITH_OPENSSL=0 WITH_LIBUV=0 WITH_IO_URING=0 WITH_LTO=1 >/dev/null 2>&1  # (its "lib.exe: not found" is the Windows try before ar)
g++ -std=c++20 -O3 -flto=auto -DLIBUS_NO_SSL -DUWS_NO_ZLIB -I"$dir/uWebSockets/src" -I"$dir/uSockets/src" \
    "$here/server.cpp" "$dir/uSockets/"*.o -o "$dir/uws-server"
echo "built $dir/uws-server"
