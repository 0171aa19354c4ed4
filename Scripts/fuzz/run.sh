#!/usr/bin/env bash
# Builds the libFuzzer targets with AddressSanitizer and coverage instrumentation and runs each:
#  1. checks the binary is instrumented (without `-sanitize-coverage` Swift 6.3.1 emits no
#     __sancov sections and libFuzzer explores nothing: it keeps a 1-byte corpus forever);
#  2. replays every committed input (Tests/fuzz/corpus/TARGET and the seeds): none may crash;
#  3. explores from the seeds alone for FUZZ_SECONDS and fails when coverage did not grow
#     past what the seeds reach (a fuzzer that learns nothing is a broken fuzzer);
#  4. with FUZZ_MERGE=1, merges what it found that adds coverage into Tests/fuzz/corpus/TARGET
#     (Scripts/fuzz/long.sh: 10 minutes per target, then commit the corpus).
# A crash fails the run and prints the reproducer.
#   FUZZ_SECONDS  seconds of exploration per target (default 30)
#   FUZZ_TARGETS  names to run (default: all), e.g. "sockjs api"
#   FUZZ_JOBS     targets explored at once (default 1)
set -euo pipefail
cd "$(dirname "$0")/../.."
seconds="${FUZZ_SECONDS:-30}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

# name product seeds dict
all_targets=(
    "http HalleyFuzzHTTP Tests/fuzz/http-corpus Tests/fuzz/http.dict"
    "ws HalleyFuzzWSFrames Tests/fuzz/ws-corpus -"
    "inflate HalleyFuzzInflate Tests/fuzz/inflate-corpus -"
    "json HalleyFuzzJSON Tests/fuzz/json-corpus Tests/fuzz/json.dict"
    "sockjs HalleyFuzzSockJS Tests/fuzz/sockjs-seeds Tests/fuzz/json.dict"
    "api HalleyFuzzAPI Tests/fuzz/api-seeds Tests/fuzz/api.dict"
    "apps HalleyFuzzAppsFile Tests/fuzz/apps-seeds Tests/fuzz/apps.dict"
    "resp HalleyFuzzRESP Tests/fuzz/resp-seeds Tests/fuzz/resp.dict"
)
wanted="${FUZZ_TARGETS:-}"

build() {
    local product="$1"
    if ! swift build -c release --product "$product" --sanitize=fuzzer --sanitize=address \
        -Xswiftc -parse-as-library -Xswiftc -sanitize-coverage=edge,inline-8bit-counters,pc-table,trace-cmp \
        --scratch-path .build-fuzz > "$work/$product.build.log" 2>&1; then
        grep -E 'error' "$work/$product.build.log" | head -n 20
        echo "FUZZ FAILURE: $product did not build"
        return 1
    fi
    if ! readelf -S ".build-fuzz/release/$product" | grep -c "__sancov_cntrs" > /dev/null; then
        echo "FUZZ FAILURE: $product carries no coverage instrumentation (no __sancov_cntrs section)"
        return 1
    fi
}

crashed() {
    local product="$1" log="$2"
    tail -n 60 "$log"
    echo "FUZZ FAILURE: $product crashed; reproducer:"
    for f in "$work/$product"-crash-* "$work/$product"-timeout-* "$work/$product"-oom-*; do
        [ -f "$f" ] && { echo "$f"; od -A x -t x1z "$f" | head -n 20; }
    done
    return 1
}

run_target() {
    local name="$1" product="$2" seeds="$3" dict="$4"
    local bin=".build-fuzz/release/$product" corpus="Tests/fuzz/corpus/$name"
    local args=(-timeout=5 -rss_limit_mb=2048 -artifact_prefix="$work/$product-")
    [ "$dict" != "-" ] && args+=(-dict="$dict")
    # 2. Every committed input once.
    local replay=("$seeds")
    [ -d "$corpus" ] && replay+=("$corpus")
    if ! SWIFT_BACKTRACE=enable=no "$bin" "${args[@]}" -runs=0 "${replay[@]}" > "$work/$name.replay.log" 2>&1; then
        crashed "$product" "$work/$name.replay.log"
    fi
    # 3. Exploration from the seeds alone.
    mkdir -p "$work/$name"
    cp -r "$seeds"/. "$work/$name/"
    if ! SWIFT_BACKTRACE=enable=no "$bin" "${args[@]}" -max_total_time="$seconds" -print_final_stats=1 \
        "$work/$name" > "$work/$name.log" 2>&1; then
        crashed "$product" "$work/$name.log"
    fi
    local inited final execs
    inited=$(grep -m1 -oE 'INITED cov: [0-9]+' "$work/$name.log" | grep -oE '[0-9]+$' || echo 0)
    final=$(grep -oE '(NEW|REDUCE|pulse|DONE) +cov: [0-9]+' "$work/$name.log" | tail -n 1 | grep -oE '[0-9]+$' || echo 0)
    execs=$(grep -oE 'stat::number_of_executed_units: [0-9]+' "$work/$name.log" | grep -oE '[0-9]+$' || echo 0)
    echo "fuzz $name: ${seconds}s, $execs runs, coverage $inited -> $final edges (seeds), corpus $(ls "$work/$name" | wc -l) inputs"
    if [ "${final:-0}" -le "${inited:-0}" ]; then
        tail -n 20 "$work/$name.log"
        echo "FUZZ FAILURE: $name: coverage did not grow past the seeds ($inited -> $final)"
        return 1
    fi
    # 4. Keep what adds coverage.
    if [ "${FUZZ_MERGE:-0}" = 1 ]; then
        mkdir -p "$corpus"
        SWIFT_BACKTRACE=enable=no "$bin" "${args[@]}" -merge=1 "$corpus" "$work/$name" > "$work/$name.merge.log" 2>&1
        echo "fuzz $name: corpus $corpus now $(ls "$corpus" | wc -l) inputs ($(grep -oE 'MERGE-OUTER: [0-9]+ new files' "$work/$name.merge.log" || true))"
    fi
}

selected=()
for t in "${all_targets[@]}"; do
    read -r name product seeds dict <<< "$t"
    if [ -z "$wanted" ] || [[ " $wanted " == *" $name "* ]]; then selected+=("$t"); fi
done
# Builds one at a time (two compilers on 2 cores are slower than one), then explores.
for t in "${selected[@]}"; do
    read -r name product seeds dict <<< "$t"
    echo "== fuzz build $product"
    build "$product"
done
jobs_max="${FUZZ_JOBS:-1}"
pids=()
status=0
for t in "${selected[@]}"; do
    read -r name product seeds dict <<< "$t"
    ( run_target "$name" "$product" "$seeds" "$dict" ) &
    pids+=($!)
    if [ "${#pids[@]}" -ge "$jobs_max" ]; then
        wait "${pids[0]}" || status=1
        pids=("${pids[@]:1}")
    fi
done
for p in "${pids[@]}"; do wait "$p" || status=1; done
[ "$status" = 0 ] || { echo "FUZZ FAILURE"; exit 1; }
echo "fuzz: no crash, coverage grew on every target"
