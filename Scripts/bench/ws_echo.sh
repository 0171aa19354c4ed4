#!/usr/bin/env bash
# WebSocket echo throughput, closed loop (`halley-load echo`: each connection sends a masked
# message and waits for its echo, checked byte for byte): halley (--threads 1) against Node's
# ws (Debian node-ws, ws_echo_node.js), or with TLS=1 halley's ws port against its wss port
# (the same process; tls.sh runs it so). For each size and connection count, RUNS runs per
# target, alternating; per run msgs/s, latency, and msgs per server CPU-second (the server's
# utime + stime over the window); medians and ratios first/second target. halley's /metrics
# must count what the tool counted (upgrades, messages in and out, no protocol errors).
# Environment: DURATION=10 RUNS=3 WARMUP=1 SIZES="32 4096" CONNS="100 1000" TYPE=text|binary TLS=1
# TLS_RECORDS=own|openssl (halley's --tls-records: TLS 1.3 records by halley or by OpenSSL)
# RATE=R: open loop instead (`halley-load echo --rate R`): R messages a second in all, in the same
# bursts every millisecond for every target, so both servers get the same work and msgs per server
# CPU-second compares what each spends on it (closed loop, a slower client also changes how many
# messages the server finds per wake-up: with TLS=1 the tool's own TLS does). Pick R below what
# the slower target sustains; a run that could not hold it is flagged rate-not-met.
source "$(dirname "$0")/lib.sh"
DURATION=${DURATION:-10} RUNS=${RUNS:-3} WARMUP=${WARMUP:-1} SIZES=${SIZES:-"32 4096"} CONNS=${CONNS:-"100 1000"}
[[ ${TYPE:-text} == binary ]] && binary=--binary || binary=
build halley halley-load
banner
if [[ -n ${TLS:-} ]]; then
    need openssl
    make_cert rsa2048 rsa
    start_halley --metrics-port 0 --tls-port 0 --tls-cert "$tmp/rsa2048.crt" --tls-key "$tmp/rsa2048.key" \
        ${TLS_RECORDS:+--tls-records "$TLS_RECORDS"}
    targets=(ws wss)
    declare -A url=([ws]=ws://127.0.0.1:$HALLEY_PORT/echo [wss]=wss://127.0.0.1:$TLS_PORT/echo)
    declare -A pid=([ws]=$HALLEY_PID [wss]=$HALLEY_PID)
else
    start_halley --metrics-port 0
    start_node
    targets=(halley node)
    declare -A url=([halley]=ws://127.0.0.1:$HALLEY_PORT/echo [node]=ws://127.0.0.1:$NODE_PORT/echo)
    declare -A pid=([halley]=$HALLEY_PID [node]=$NODE_PID)
fi
read -r up0 in0 out0 err0 bp0 <<<"$(ws_metrics)"
conns=0 sent=0 echoes=0
count() { # CONNS: what halley-load saw, for the comparison with halley's counters
    conns=$((conns + $1)) sent=$((sent + $(field sent "$LINES"))) echoes=$((echoes + $(field echoes "$LINES")))
}

log "echo checks: text and binary, 3 B to 300,000 B, every target"
for t in "${targets[@]}"; do
    for flag in "" --binary; do
        for size in 3 125 126 4096 65536 300000; do
            run_load "check.$t.$size$flag" echo --url "${url[$t]}" -c 4 --size "$size" --duration 0.3 --warmup 0 $flag
            [[ $t == node ]] || count 4
        done
    done
    echo "$t: every echo right, every connection closed with 1000"
done

log "runs: $RUNS x ${DURATION} s after ${WARMUP} s per target and case, alternating; ${TYPE:-text} messages;" \
    "$([[ -n ${RATE:-} ]] && echo "open loop at $RATE msg/s" || echo "closed loop")"
for size in $SIZES; do
    for n in $CONNS; do
        for r in $(seq "$RUNS"); do
            for t in "${targets[@]}"; do
                run_load "$t.$size.$n.$r" echo --url "${url[$t]}" -c "$n" --size "$size" --duration "$DURATION" \
                    --warmup "$WARMUP" --server-pid "${pid[$t]}" $binary ${RATE:+--rate "$RATE"}
                [[ $t == node ]] || count "$n"
                keep "$t,$size,$n" "$LINES"
                printf '  %-6s %6s B %5s conns run %d: %9.0f msg/s %9.0f msg/server-CPU-s  p50 %5s us  p99 %6s us  cpu server %5s%%, tool %5s%%  [%s]\n' \
                    "$t" "$size" "$n" "$r" "$(field msgs_per_sec "$LINES")" "$(field msgs_per_server_cpu_s "$LINES")" \
                    "$(field p50_us "$LINES")" "$(field p99_us "$LINES")" "$(field server_cpu_pct "$LINES")" \
                    "$(field client_cpu_pct "$LINES")" "$(field flags "$LINES")"
            done
        done
    done
done

read -r up1 in1 out1 err1 bp1 <<<"$(ws_metrics)"
echo "halley /metrics: upgrades $((up1 - up0)) (tool: $conns), in $((in1 - in0)) (tool sent $sent), out $((out1 - out0))" \
    "(tool got $echoes), protocol errors $((err1 - err0)), backpressure $((bp1 - bp0))"
log "halley log (beyond the start line)"
grep -v -e 'listening on' -e 'development app' -e 'static files are off' "$tmp/halley.log" || echo "  (nothing)"

a=${targets[0]} b=${targets[1]}
echo
echo "=== summary: medians of $RUNS x ${DURATION} s; halley-load on core $CLIENT_CPU, servers on core $SERVER_CPU"
printf '%6s %6s  %10s %10s %6s  %12s %12s %6s  %s\n' size conns "$a/s" "$b/s" ratio "$a/CPU-s" "$b/CPU-s" ratio \
    "p50/p99 us, server cpu %: $a | $b"
for size in $SIZES; do
    for n in $CONNS; do
        ra=$(med "$a,$size,$n" msgs_per_sec) rb=$(med "$b,$size,$n" msgs_per_sec)
        ca=$(med "$a,$size,$n" msgs_per_server_cpu_s) cb=$(med "$b,$size,$n" msgs_per_server_cpu_s)
        printf '%6s %6s  %10.0f %10.0f %6s  %12.0f %12.0f %6s  %s/%s %s%% | %s/%s %s%%\n' "$size" "$n" "$ra" "$rb" \
            "$(ratio "$ra" "$rb")" "$ca" "$cb" "$(ratio "$ca" "$cb")" "$(med "$a,$size,$n" p50_us)" \
            "$(med "$a,$size,$n" p99_us)" "$(med "$a,$size,$n" server_cpu_pct)" "$(med "$b,$size,$n" p50_us)" \
            "$(med "$b,$size,$n" p99_us)" "$(med "$b,$size,$n" server_cpu_pct)"
    done
done
echo "flags: server-bound (the server used >= 85% of its core), tool-bound (halley-load >= 90% of its own: it set"
echo "the pace), both-busy (on loopback each side's writes do kernel work for the other: msgs per server"
echo "CPU-second is then the comparison), disturbed (another process used a benchmark core); open loop (RATE=):"
echo "rate-not-met (over 0.5% of the schedule found no connection free), tool-late (over 1% of the bursts"
echo "merged with the next), server-over-60% (fixed costs per wake-up weigh less than at a lower load)"
((up1 - up0 == conns && in1 - in0 == sent && out1 - out0 == echoes && err1 == err0 && bp1 == bp0)) ||
    die "halley's counters disagree with the tool's"
