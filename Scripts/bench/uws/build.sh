#!/usr/bin/env bash
# Builds server.cpp against uWebSockets and uSockets for matrix.sh, in a temporary folder: the
# sources are cloned there (never into this repository), the binary is DIR/uws-server and
# DIR/uws-server.version names the commits (matrix.sh prints it).
# usage: build.sh [DIR]   (default /tmp/halley-uws)
# Environment: UWS_GIT, USOCKETS_GIT (where to clone from; default GitHub), UWS_REF,
# USOCKETS_REF (a commit, tag or branch to check out; default what was cloned).
# Needs g++ (C++20), make and git. No TLS (LIBUS_NO_SSL), no zlib (UWS_NO_ZLIB: compression
# is off in server.cpp), epoll.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
dir=${1:-/tmp/halley-uws}
mkdir -p "$dir"
clone() { # URL NAME REF
    if ! git -C "$dir/$2" rev-parse -q --verify HEAD >/dev/null 2>&1; then
        rm -rf "$dir/$2"
        git clone -q "$1" "$dir/$2"
    fi
    [[ -z $3 ]] || git -C "$dir/$2" checkout -q "$3"
}
clone "${UWS_GIT:-https://github.com/uNetworking/uWebSockets}" uWebSockets "${UWS_REF:-}"
clone "${USOCKETS_GIT:-https://github.com/uNetworking/uSockets}" uSockets "${USOCKETS_REF:-}"
version="uWebSockets $(git -C "$dir/uWebSockets" rev-parse --short HEAD), uSockets $(git -C "$dir/uSockets" rev-parse --short HEAD)"
echo "$version"
cd "$dir/uSockets"
# uSockets' own Makefile, as uWebSockets' build does: plain epoll, no SSL, -O3 -flto. (Its
# "lib.exe: not found" is the Windows attempt before ar.)
make -s clean >/dev/null 2>&1 || true
make -s WITH_OPENSSL=0 WITH_LIBUV=0 WITH_IO_URING=0 WITH_LTO=1 >"$dir/make.log" 2>&1 ||
    { cat "$dir/make.log" >&2; echo "build.sh: uSockets failed to build" >&2; exit 1; }
g++ -std=c++20 -O3 -flto=auto -DLIBUS_NO_SSL -DUWS_NO_ZLIB -I"$dir/uWebSockets/src" -I"$dir/uSockets/src" \
    "$here/server.cpp" "$dir/uSockets/"*.o -o "$dir/uws-server"
echo "$version, g++ -O3 -flto, server.cpp of git $(git -C "$here" rev-parse --short HEAD)" >"$dir/uws-server.version"
echo "built $dir/uws-server"
