#!/usr/bin/env bash
# The performance matrix (issue 16): halley (--threads 1) beside every peer present, row by row,
# runs interleaved, per server CPU-second (utime + stime over the measured window; nginx: its
# worker), servers on SERVER_CPU and the load on CLIENT_CPU. Peers: uws (the uWebSockets
# server of uws/, when uws/build.sh has built UWS_BIN), Nchan (nginx, one worker), Node ws
# (echo only). Rows (ROWS):
#   echo     `halley-load echo`: each connection sends one masked text message and waits for
#            its echo (one in flight per connection, checked byte for byte); ECHO_SIZES x
#            ECHO_CONNS; messages per server CPU-second
#   fanout   `halley-load fanout` on one channel, 64 B data, PUBLISHERS publisher connections:
#            latency: a fixed rate (LAT_DELIVERIES / subscribers msg/s), p50/p99 publish to
#            receipt; capacity: closed loop with WINDOWS messages in flight (1: no server can
#            merge writes, the per-message figure; 8: it can), deliveries per server CPU-second
#   publish  api_publish.sh: POST publish requests of 64 B with no subscriber (PUBLISH_SUBS), wrk
#            -t1 -c32: halley's signed Pusher API and bearer-token POST /publish, uws's
#            /publish/bench (bearer), Nchan's /pub/bench
#   idle     idle.py: RSS per idle WebSocket (/echo) and per subscribed session at IDLE_N
# Each row prints its runs as they go and a summary; the end repeats every ratio.
# Environment: ROWS="echo fanout publish idle" RUNS=3 DURATION=5 WARMUP=1 ECHO_SIZES="32 4096"
# ECHO_CONNS="100 1000" SUBS="1000 10000" WINDOWS="1 8" LAT_DELIVERIES=40000 PUBLISHERS=16
# PUBLISH_SUBS=0 IDLE_N=10000 PEERS (default: every one present of uws nchan node) UWS_BIN
source "$(dirname "$0")/lib.sh"
ROWS=${ROWS:-"echo fanout publish idle"} RUNS=${RUNS:-3} DURATION=${DURATION:-5} WARMUP=${WARMUP:-1}
ECHO_SIZES=${ECHO_SIZES:-"32 4096"} ECHO_CONNS=${ECHO_CONNS:-"100 1000"} SUBS=${SUBS:-"1000 10000"}
WINDOWS=${WINDOWS:-"1 8"} LAT_DELIVERIES=${LAT_DELIVERIES:-40000} PUBLISHERS=${PUBLISHERS:-16}
if [[ -z ${PEERS:-} ]]; then
    PEERS=""
    have_uws && PEERS+=" uws"
    [[ -f $NCHAN_MODULE ]] && command -v nginx >/dev/null && PEERS+=" nchan"
    [[ -d /usr/share/nodejs/ws ]] && command -v node >/dev/null && PEERS+=" node"  # Debian node-ws
fi
has() { [[ " $PEERS " == *" $1 "* ]]; }
export NO_BUILD SCRATCH HALLEY_BIN LOAD_BIN SERVER_CPU CLIENT_CPU UWS_BIN
build halley halley-load
export NO_BUILD=1  # the rows run by other scripts use what was just built
"$LOAD_BIN" selftest 2>/dev/null || die "halley-load selftest failed"
banner
echo "peers:  ${PEERS:- (none)}; rows: $ROWS; $RUNS runs of ${DURATION} s after ${WARMUP} s, interleaved"
has uws && echo "uws:    $UWS_BIN ($(cat "$UWS_BIN.version" 2>/dev/null || echo 'no version file: rebuild with uws/build.sh'))"
summary=()
note() { summary+=("$*"); echo "  $*"; }
line() { printf '  %-7s %5s %-6s run %d: %10.0f %s/s %10.0f per server CPU-s  p50 %6s us  p99 %7s us  server %3s%% tool %3s%%  [%s]\n' \
    "$1" "$2" "$3" "$4" "$(field "$5" "$LINES")" "$6" "$(field "$7" "$LINES")" "$(field p50_us "$LINES")" \
    "$(field p99_us "$LINES")" "$(field server_cpu_pct "$LINES")" "$(field client_cpu_pct "$LINES")" "$(field flags "$LINES")"; }

# Servers for the echo and fanout rows: one each, up for both rows.
if [[ " $ROWS " == *" echo "* || " $ROWS " == *" fanout "* ]]; then
    start_halley --app-token benchtoken --public "$tmp/no-public"
    has uws && start_uws
    has nchan && [[ " $ROWS " == *" fanout "* ]] && start_nchan
    has node && [[ " $ROWS " == *" echo "* ]] && start_node
fi
declare -A url=([halley]=ws://127.0.0.1:${HALLEY_PORT:-}/echo [uws]=ws://127.0.0.1:${UWS_PORT:-}/echo
    [node]=ws://127.0.0.1:${NODE_PORT:-}/echo)
declare -A base=([halley]=http://127.0.0.1:${HALLEY_PORT:-} [uws]=http://127.0.0.1:${UWS_PORT:-}
    [nchan]=http://127.0.0.1:${NCHAN_PORT:-})
declare -A pid=([halley]=${HALLEY_PID:-} [uws]=${UWS_PID:-} [nchan]=${NGINX_WORKER:-} [node]=${NODE_PID:-})
# halley-load speaks halley's Pusher protocol, or Nchan's URLs (/sub/bench, POST /pub/bench),
# which the uws server answers too.
declare -A kind=([halley]=halley [uws]=nchan [nchan]=nchan)

# ratios KEY FIELD LABEL: halley's median over each peer's, into the summary.
ratios() {
    local p out=""
    for p in uws nchan node; do
        [[ -n ${results[${1/halley/$p}]:-} ]] || continue
        out+=" $p $(ratio "$(med "$1" "$2")" "$(med "${1/halley/$p}" "$2")")"
    done
    [[ -z $out ]] || note "$3: halley /$out"
}

if [[ " $ROWS " == *" echo "* ]]; then
    targets=(halley)
    has uws && targets+=(uws)
    has node && targets+=(node)
    log "echo: ${targets[*]}; one message in flight per connection"
    for t in "${targets[@]}"; do  # every server echoes every size right before it is timed
        for size in 3 125 126 1024 65536; do
            run_load "check.$t.$size" echo --url "${url[$t]}" -c 4 --size "$size" --duration 0.3 --warmup 0
        done
    done
    for size in $ECHO_SIZES; do
        for n in $ECHO_CONNS; do
            for r in $(seq "$RUNS"); do
                for t in "${targets[@]}"; do
                    run_load "echo.$t.$size.$n.$r" echo --url "${url[$t]}" -c "$n" --size "$size" --duration "$DURATION" \
                        --warmup "$WARMUP" --server-pid "${pid[$t]}"
                    keep "echo,$t,$size,$n" "$LINES"
                    line "$t" "$n" "${size}B" "$r" msgs_per_sec msg msgs_per_server_cpu_s
                done
            done
            ratios "echo,halley,$size,$n" msgs_per_server_cpu_s "echo $size B, $n connections, messages per server CPU-s"
        done
    done
fi

if [[ " $ROWS " == *" fanout "* ]]; then
    targets=(halley)
    has uws && targets+=(uws)
    has nchan && targets+=(nchan)
    log "fanout: ${targets[*]}; 64 B data, $PUBLISHERS publishers; windows $WINDOWS"
    for n in $SUBS; do
        rate=$(awk -v d="$LAT_DELIVERIES" -v n="$n" 'BEGIN {printf "%g", d / n}')
        first=1
        for w in $WINDOWS; do
            phases=capacity
            ((first)) && phases=latency,capacity
            for r in $(seq "$RUNS"); do
                for t in "${targets[@]}"; do
                    run_load "fanout.$t.$n.$w.$r" fanout --url "${base[$t]}" --server "${kind[$t]}" -n "$n" --rate "$rate" \
                        --window "$w" --publishers "$PUBLISHERS" --size 64 --duration "$DURATION" --warmup "$WARMUP" \
                        --phases "$phases" --server-pid "${pid[$t]}"
                    while IFS= read -r l; do
                        ph=$(field phase "$l")
                        [[ $ph == latency ]] && keep "lat,$t,$n" "$l" || keep "fan,$t,$n,$w" "$l"
                        LINES=$l line "$t" "$n" "${ph:0:3}.w$w" "$r" deliveries_per_sec deliveries \
                            deliveries_per_server_cpu_s
                    done <<<"$LINES"
                    kill -0 "${pid[$t]}" || die "$t died"
                done
            done
            ((first)) && for q in p50_us p99_us; do ratios "lat,halley,$n" "$q" "fanout $n subscribers at $rate msg/s: $q"; done
            first=0
            ratios "fan,halley,$n,$w" deliveries_per_server_cpu_s \
                "fanout $n subscribers, window $w: deliveries per server CPU-s"
        done
    done
fi
for p in "${pids[@]}"; do stop_pid "$p"; done
pids=()

if [[ " $ROWS " == *" publish "* ]]; then
    servers="halley halley-bearer"
    has uws && servers+=" uws"
    has nchan && servers+=" nchan"
    log "publish: api_publish.sh, SERVERS=\"$servers\" SUBS=\"${PUBLISH_SUBS:-0}\""
    SERVERS=$servers SUBS=${PUBLISH_SUBS:-0} RUNS=$RUNS DURATION=$DURATION WARMUP=$((WARMUP + 1)) \
        bash "$here/api_publish.sh" >"$tmp/publish.out" 2>&1 || { cat "$tmp/publish.out"; die "api_publish.sh failed"; }
    sed -n '/^=== summary/,$p' "$tmp/publish.out"
    while IFS= read -r l; do note "publish (${PUBLISH_SUBS:-0} subscribers) ${l# }"; done < <(grep -E '^  halley[a-z-]*\/' "$tmp/publish.out")
fi

if [[ " $ROWS " == *" idle "* ]]; then
    for k in ws sessions; do
        targets=halley
        has uws && targets+=,uws
        [[ $k == sessions ]] && has nchan && targets+=,nchan
        log "idle $k: idle.py, targets $targets, ${IDLE_N:-10000} connections"
        python3 "$here/idle.py" "$k" -n "${IDLE_N:-10000}" --targets "$targets" --halley-bin "$HALLEY_BIN" \
            >"$tmp/idle.$k.out" 2>&1 || { cat "$tmp/idle.$k.out"; die "idle.py $k failed"; }
        sed -n '/=== summary/,$p' "$tmp/idle.$k.out"
        per=$(awk -v n="${IDLE_N:-10000}" '$3 == "idle" && $2 == n {printf " %s %s B", $1, $5}' "$tmp/idle.$k.out")
        note "idle $k at ${IDLE_N:-10000}, VmRSS per connection:$per"
    done
fi

echo
echo "=== matrix: halley / peer (per server CPU-second: above 1 is halley ahead; p50/p99 latency: below 1 is halley ahead)"
printf '%s\n' "${summary[@]}"
