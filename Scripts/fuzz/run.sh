#!/usr/bin/env bash
# Builds the libFuzzer targets with AddressSanitizer and runs each for a bounded time from its
# committed seed corpus (copied, so the committed corpus stays as it is). A crash fails the run.
#   FUZZ_SECONDS  seconds per target (default 60)
set -euo pipefail
cd "$(dirname "$0")/../.."
seconds="${FUZZ_SECONDS:-60}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

run_target() {
    local product="$1" corpus="$2" dict="${3:-}"
    echo "== fuzz $product for ${seconds}s (corpus $corpus)"
    if ! swift build -c release --product "$product" --sanitize=fuzzer --sanitize=address \
        -Xswiftc -parse-as-library --scratch-path .build-fuzz > "$work/$product.build.log" 2>&1; then
        grep -E 'error' "$work/$product.build.log" | head -n 20
        echo "FUZZ FAILURE: $product did not build"
        exit 1
    fi
    local bin=".build-fuzz/release/$product"
    mkdir -p "$work/$product"
    cp -r "$corpus"/. "$work/$product/"
    local args=(-max_total_time="$seconds" -timeout=5 -rss_limit_mb=2048 -print_final_stats=1 -artifact_prefix="$work/")
    [ -n "$dict" ] && args+=(-dict="$dict")
    if ! SWIFT_BACKTRACE=enable=no "$bin" "${args[@]}" "$work/$product" > "$work/$product.log" 2>&1; then
        tail -n 60 "$work/$product.log"
        echo "FUZZ FAILURE: $product crashed; reproducer:"
        ls -1 "$work"/crash-* "$work"/leak-* "$work"/timeout-* 2>/dev/null || true
        for f in "$work"/crash-* "$work"/timeout-*; do [ -f "$f" ] && xxd "$f" | head -n 20; done
        exit 1
    fi
    grep -E 'stat::number_of_executed_units|Done [0-9]+ runs' "$work/$product.log" | tail -n 2
}

run_target HalleyFuzzHTTP Tests/fuzz/http-corpus Tests/fuzz/http.dict
run_target HalleyFuzzWSFrames Tests/fuzz/ws-corpus
run_target HalleyFuzzInflate Tests/fuzz/inflate-corpus
run_target HalleyFuzzJSON Tests/fuzz/json-corpus Tests/fuzz/json.dict
echo "fuzz: no crash"
