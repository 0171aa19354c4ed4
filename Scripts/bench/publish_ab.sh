#!/usr/bin/env bash
# Two builds of halley against each other on the publish path: requests per server CPU-second
# of each, run after run alternately (A, B, A, B, ...), and the median of the per-run ratios
# B/A. CPU time on this machine moves 10-20% between runs of the same binary, so a change is
# judged by the ratio of neighbouring runs, not by absolute figures from different times.
# Per run: a fresh halley (--threads 1, SERVER_CPU), wrk -t1 -c32 on CLIENT_CPU, WARMUP s, then
# DURATION s measured (utime + stime of halley over the run). KIND: halley (the signed Pusher
# API, POST /apps/1/events) or halley-bearer (POST /publish with a bearer token); 64 B data,
# no subscriber (api_publish.py's requests).
# Usage: Scripts/bench/publish_ab.sh BIN_A BIN_B
# Environment: KIND=halley-bearer RUNS=7 DURATION=5 WARMUP=1
source "$(dirname "$0")/lib.sh"
need wrk python3 taskset
(($# == 2)) || die "usage: publish_ab.sh BIN_A BIN_B"
KIND=${KIND:-halley-bearer} RUNS=${RUNS:-7} DURATION=${DURATION:-5} WARMUP=${WARMUP:-1}
python3 "$here/api_publish.py" requests --server "$KIND" --out "$tmp/requests" >/dev/null
auth=()
[[ $KIND == halley-bearer ]] && auth=("Bearer benchtoken")
# one BIN LABEL: requests per server CPU-second of one run, in PER.
one() {
    HALLEY_BIN=$1 start_halley --public "$tmp" --app-id 1 --app-key app-key --app-secret app-secret \
        --app-token benchtoken >/dev/null
    local url="http://127.0.0.1:$HALLEY_PORT/"
    run_wrk "$2-warmup" "$HALLEY_PID" -c32 -d"${WARMUP}s" -s "$here/api_publish.lua" "$url" -- "$tmp/requests" \
        application/json "${auth[@]}"
    run_wrk "$2" "$HALLEY_PID" -c32 -d"${DURATION}s" -s "$here/api_publish.lua" "$url" -- "$tmp/requests" \
        application/json "${auth[@]}"
    PER=$(field per_cpu_s "$LINE")
    stop_pid "$HALLEY_PID"
}
echo "A: $1"
echo "B: $2"
echo "$KIND, $RUNS runs of ${DURATION} s each, alternating; requests per server CPU-second"
for r in $(seq "$RUNS"); do
    one "$1" "a$r"
    a=$PER
    one "$2" "b$r"
    b=$PER
    keep ab "a=$a b=$b r=$(ratio "$b" "$a")"
    echo "run $r: A $a  B $b  B/A $(ratio "$b" "$a")"
done
echo "medians: A $(med ab a)  B $(med ab b)  B/A of each run's pair $(med ab r)"
