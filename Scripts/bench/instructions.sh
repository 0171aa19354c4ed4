#!/usr/bin/env bash
# User-space instructions per publish request, counted by Valgrind's callgrind: halley's own
# work, repeatable where CPU time on this machine moves 10-20% from run to run (a VM: no
# hardware counters). For comparing two builds of halley, not halley with a peer: the kernel's
# share (half of a request's CPU) is not counted, and OpenSSL's SHA-256 runs its plain code
# under Valgrind, so a signature counts more than it costs natively.
# Per binary and kind: two runs of wrk -t1 -c8 (3 s and 9 s) against halley under callgrind,
# the difference of their instruction totals over the difference of their requests (start-up
# and shutdown cancel out). Kinds (KINDS): halley (the signed Pusher API, POST /apps/1/events),
# halley-bearer (POST /publish with a bearer token); 64 B data, no subscriber (api_publish.py);
# longpoll: instructions per long-poll delivery (`halley-load fanout --transport longpoll`,
# 100 subscribers, one message in flight, 64 B: each delivery is an answer and a new request;
# two runs of 3 s and 9 s after 1 s of warm-up, the difference over the difference of the
# deliveries counted: the sync, the warm-up and the publishes cancel out only on average, so
# this figure moves about 5% from run to run where the publish figures move about 1%).
# wss-own, wss-openssl: instructions per 32-byte wss echo (`halley-load echo`, 20 connections,
# one message in flight each, a self-signed P-256 certificate; 3 s and 9 s, the difference
# over the difference of the echoes: the handshakes cancel out), with `--tls-records own` or
# `openssl` (TLS 1.3 records by halley's own record layer or by OpenSSL).
# Usage: Scripts/bench/instructions.sh [HALLEY_BIN...]   (default: the release build)
# Environment: KINDS="halley-bearer halley" (add longpoll for the long-poll figure, wss-own
# and wss-openssl for the wss echo figures)
source "$(dirname "$0")/lib.sh"
need valgrind callgrind_annotate wrk python3
KINDS=${KINDS:-"halley-bearer halley"}
bins=("$@")
if ((${#bins[@]} == 0)); then
    build halley
    bins=("$HALLEY_BIN")
fi
[[ " $KINDS " == *" longpoll "* || " $KINDS " == *" wss-"* ]] && build halley-load
tlsargs=()
if [[ " $KINDS " == *" wss-"* ]]; then
    need openssl
    make_cert p256 ec
    tlsargs=(--tls-port 0 --tls-cert "$tmp/p256.crt" --tls-key "$tmp/p256.key")
fi
# one BIN KIND SECONDS: "requests instructions"
one() {
    local out="$tmp/cg.$RANDOM" log="$tmp/halley.$RANDOM.log" port="" tport="" n ir extra=()
    auth=()
    [[ $2 == halley-bearer ]] && auth=("Bearer benchtoken")
    [[ $2 == wss-* ]] && extra=("${tlsargs[@]}" --tls-records "${2#wss-}")
    : >"$log"  # there before the loop below reads it
    # Without the HALLEY_* settings of this shell (as lib.sh's bg): the flags below are the run's.
    env $(env | sed -n 's/^\(HALLEY_[A-Z_]*\)=.*/-u \1/p') valgrind --tool=callgrind --callgrind-out-file="$out" \
        --dump-instr=no "$1" --host 127.0.0.1 --port 0 --threads 1 --log-level warning --public "$tmp" \
        --app-id 1 --app-key app-key --app-secret app-secret --app-token benchtoken \
        --max-connections-per-address 0 --session-opens-per-second 0 "${extra[@]}" >"$log" 2>&1 &
    hp=$!  # global: the trap runs after this function has returned
    # This runs in a subshell (< <(one ...)): stop halley here whatever ends it.
    trap 'kill "${hp:-}" 2>/dev/null || true' EXIT
    for _ in $(seq 120); do
        port=$(sed -n 's/.*listening on http:\/\/127\.0\.0\.1:\([0-9]*\).*/\1/p' "$log")
        [[ -n $port ]] && break
        sleep 0.5
    done
    [[ -n $port ]] || die "halley under valgrind did not start: $(tail -5 "$log")"
    if [[ $2 == wss-* ]]; then
        tport=$(sed -n 's/.*https on https:\/\/127\.0\.0\.1:\([0-9]*\).*/\1/p' "$log")
        [[ -n $tport ]] || die "$2: no TLS port in halley's log"
        "$LOAD_BIN" echo --url "wss://127.0.0.1:$tport/echo" -c 20 --size 32 --duration "$3" --warmup 0 \
            >"$tmp/load.txt" 2>&1 || die "$2: halley-load failed: $(tail -5 "$tmp/load.txt")"
        n=$(grep -o ' echoes=[0-9]*' "$tmp/load.txt" | head -1 | cut -d= -f2)
    elif [[ $2 == longpoll ]]; then
        "$LOAD_BIN" fanout --url "http://127.0.0.1:$port" --server halley --transport longpoll -n 100 \
            --window 1 --publishers 1 --phases capacity --duration "$3" --warmup 1 >"$tmp/load.txt" 2>&1 \
            || die "longpoll: halley-load failed: $(tail -5 "$tmp/load.txt")"
        n=$(sed -n 's/^phase=capacity.* deliveries=\([0-9]*\) .*/\1/p' "$tmp/load.txt")
    else
        wrk -t1 -c8 -d"$3"s -s "$here/api_publish.lua" "http://127.0.0.1:$port/" -- "$tmp/requests.$2" \
            application/json "${auth[@]}" >"$tmp/wrk.txt"
        grep -q "Non-2xx" "$tmp/wrk.txt" && die "$2: answers other than 2xx: $(cat "$tmp/wrk.txt")"
        n=$(awk '/ requests in /{print $1}' "$tmp/wrk.txt")
    fi
    kill "$hp"
    wait "$hp" 2>/dev/null || true
    [[ -n $n ]] || die "$2: no count of requests or deliveries in the load's output"
    ir=$(callgrind_annotate "$out" 2>/dev/null | awk '/PROGRAM TOTALS/{gsub(",", "", $1); print $1}')
    [[ -n $ir ]] || die "$2: no instruction total from callgrind"
    echo "$n $ir"
}
for kind in $KINDS; do
    [[ $kind == longpoll || $kind == wss-* ]] ||
        python3 "$here/api_publish.py" requests --server "$kind" --out "$tmp/requests.$kind" >/dev/null
    for bin in "${bins[@]}"; do
        read -r n1 i1 < <(one "$bin" "$kind" 3)
        read -r n2 i2 < <(one "$bin" "$kind" 9)
        ((n2 > n1)) || die "$kind: the longer run made no more requests ($n1, $n2)"
        what=request
        [[ $kind == longpoll ]] && what=delivery
        [[ $kind == wss-* ]] && what=echo
        plural=${what/y/ie}s
        [[ $what == echo ]] && plural=echoes
        echo "$kind $bin: $(((i2 - i1) / (n2 - n1))) instructions per $what ($n1 and $n2 $plural)"
    done
done
