#!/usr/bin/env bash
# Two builds of halley against each other on the echo path, over wss (TLS=1, the default) or
# ws (TLS=0): messages per server CPU-second of each, run after run alternately (A, B, A, B,
# ...), and the median of the per-pair ratios B/A. CPU time on this machine moves 10-20%
# between runs of the same binary, so a change is judged by neighbouring runs, not by
# absolute figures from different times. Per run: a fresh halley (--threads 1, SERVER_CPU,
# a self-signed RSA 2048 certificate on --tls-port), `halley-load echo` on CLIENT_CPU
# (CONNS connections, SIZE B text messages, each echo checked byte for byte) for WARMUP s,
# then DURATION s measured (utime + stime of halley over the window).
# Usage: Scripts/bench/echo_ab.sh BIN_A BIN_B
# Environment: TLS=1 SIZE=32 CONNS=100 RUNS=5 DURATION=5 WARMUP=1
source "$(dirname "$0")/lib.sh"
need taskset openssl
(($# == 2)) || die "usage: echo_ab.sh BIN_A BIN_B"
TLS=${TLS:-1} SIZE=${SIZE:-32} CONNS=${CONNS:-100} RUNS=${RUNS:-5} DURATION=${DURATION:-5} WARMUP=${WARMUP:-1}
build halley-load
make_cert rsa2048 rsa
# one BIN LABEL: messages per server CPU-second of one run, in PER.
one() {
    HALLEY_BIN=$1 start_halley --tls-port 0 --tls-cert "$tmp/rsa2048.crt" --tls-key "$tmp/rsa2048.key" >/dev/null
    local url="ws://127.0.0.1:$HALLEY_PORT/echo"
    ((TLS)) && url="wss://127.0.0.1:$TLS_PORT/echo"
    run_load "$2" echo --url "$url" -c "$CONNS" --size "$SIZE" --duration "$DURATION" --warmup "$WARMUP" \
        --server-pid "$HALLEY_PID"
    PER=$(field msgs_per_server_cpu_s "$LINES")
    [[ $PER =~ ^[0-9]+$ ]] || die "$2: no messages per server CPU-second in: $LINES"
    stop_pid "$HALLEY_PID"
}
banner
log "A: $1"
log "B: $2"
log "$( ((TLS)) && echo wss || echo ws) echo, $SIZE B, $CONNS connections, $RUNS pairs of $DURATION s"
ratios=()
for r in $(seq "$RUNS"); do
    one "$1" "a$r"
    a=$PER
    one "$2" "b$r"
    b=$PER
    ratios+=("$(ratio "$b" "$a")")
    printf '  pair %d: A %s  B %s  B/A %s\n' "$r" "$a" "$b" "${ratios[-1]}"
done
printf '%s\n' "${ratios[@]}" | sort -g | awk '{v[NR] = $1} END {printf "median B/A %s over %d pairs\n", (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2, NR}'
