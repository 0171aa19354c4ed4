#!/usr/bin/env bash
# Makes the tarball to ship: halley-<version>-linux-<arch>.tar.gz with the binary, public/, and
# from deploy/: an example apps file, a systemd unit, nginx and HAProxy examples, a README.
#   Scripts/package.sh [BINARY] [OUTDIR]
#     BINARY  default .build/release/halley, built with
#             swift build -c release --static-swift-stdlib --product halley
#     OUTDIR  default .build/package
#   VERSION   the name's version (default: git describe --tags --always --dirty, else "dev")
# Prints the tarball's path. Refuses a binary that links the Swift runtime dynamically
# (libswift*.so): a server without the toolchain could not run it.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
bin="${1:-$root/.build/release/halley}"
out="${2:-$root/.build/package}"

die() { echo "package.sh: $*" >&2; exit 1; }
[ -f "$bin" ] && [ -x "$bin" ] || die "no executable at $bin"

if ! libs="$(ldd "$bin" 2>&1)"; then  # a fully static binary is fine too
    grep -qE 'not a dynamic executable|statically linked' <<<"$libs" || die "ldd $bin failed: $libs"
fi
if grep -qE 'libswift|libFoundation|libdispatch|libBlocksRuntime|not found' <<<"$libs"; then
    echo "$libs" >&2
    die "$bin links the Swift runtime dynamically (or misses a library): build with --static-swift-stdlib"
fi

version="${VERSION:-$(git -C "$root" describe --tags --always --dirty 2>/dev/null || echo dev)}"
name="halley-$version-linux-$(uname -m)"
stage="$(mktemp -d)"
trap 'rm -rf "$stage"' EXIT

mkdir "$stage/$name"
install -m 0755 "$bin" "$stage/$name/halley"
cp -R "$root/public" "$stage/$name/public"
for f in README.md halley.apps.json halley.service nginx.conf haproxy.cfg; do
    install -m 0644 "$root/deploy/$f" "$stage/$name/$f"
done

mkdir -p "$out"
out="$(cd "$out" && pwd)"
tar -C "$stage" --owner=0 --group=0 --numeric-owner --sort=name -czf "$out/$name.tar.gz" "$name"
echo "$out/$name.tar.gz"
