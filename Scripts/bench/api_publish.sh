#!/usr/bin/env bash
# Publish cost: POST requests per server CPU-second. wrk -t1 (CONNECTIONS keep-alive
# connections, CLIENT_CPU) cycles through COUNT distinct requests made by api_publish.py right
# before each run (a fresh signature timestamp; a sample must answer 200 `{}` from the signed
# API, 2xx from the others; any other answer fails the run). SERVERS, each on SERVER_CPU:
#   halley         signed `POST /apps/1/events` (the Pusher HTTP API; halley --threads 1)
#   halley-bearer  `POST /publish` with `Authorization: Bearer benchtoken` (the same halley)
#   nchan          unsigned `POST /pub/bench` with the same data (nginx, one worker)
#   uws            `POST /publish/bench` with the bearer token (the uWebSockets peer, uws/)
# Cases (SUBS): no subscribers, and N WebSocket subscribers held by `api_publish.py hold` (an
# epoll reader beside wrk) that must all receive the sample, whose deliveries/s and closes are
# reported. Per server and case a WARMUP s run, then RUNS runs of DURATION s alternating;
# medians of requests/s and requests per server CPU-second (utime + stime; nginx: its worker),
# and of the server's user and system microseconds per request apart (user-us, sys-us),
# and the ratios of each halley case to each peer. Goal (issue 5): the signed API's per
# CPU-second at least Nchan's (ENFORCE_GOALS=1: exit 1 when missed).
# Environment: DURATION=10 RUNS=3 WARMUP=3 CONNECTIONS=32 SUBS="0 1000" COUNT=1000 SIZE=64
# SERVERS="halley nchan"
source "$(dirname "$0")/lib.sh"
DURATION=${DURATION:-10} RUNS=${RUNS:-3} WARMUP=${WARMUP:-3} CONNECTIONS=${CONNECTIONS:-32}
SUBS=${SUBS:-"0 1000"} SERVERS=${SERVERS:-"halley nchan"}
need wrk python3
build halley
banner
helper=$here/api_publish.py
for s in $SERVERS; do [[ $s =~ ^(halley|halley-bearer|nchan|uws)$ ]] || die "SERVERS: halley, halley-bearer, nchan, uws"; done
[[ " $SERVERS" == *" halley"* ]] &&
    start_halley --public "$tmp/no-public" --app-id 1 --app-key app-key --app-secret app-secret --app-token benchtoken
[[ " $SERVERS " == *" nchan "* ]] && start_nchan
[[ " $SERVERS " == *" uws "* ]] && start_uws
declare -A port=([halley]=${HALLEY_PORT:-} [halley-bearer]=${HALLEY_PORT:-} [nchan]=${NCHAN_PORT:-} [uws]=${UWS_PORT:-})
declare -A pid=([halley]=${HALLEY_PID:-} [halley-bearer]=${HALLEY_PID:-} [nchan]=${NGINX_WORKER:-} [uws]=${UWS_PID:-})

# hold_cmd COMMAND REGEX: a command to the subscriber holder; HOLD = its answer (30 s at most).
hold_cmd() {
    local before
    before=$(grep -cE "$2" "$tmp/hold.out" || true)
    [[ -z $1 ]] || echo "$1" >&3
    for _ in $(seq 600); do
        (($(grep -cE "$2" "$tmp/hold.out" || true) > before)) && { HOLD=$(grep -E "$2" "$tmp/hold.out" | tail -n 1); return; }
        kill -0 "$hold_pid" 2>/dev/null || break
        sleep 0.05
    done
    cat "$tmp/hold.out" >&2
    die "the subscriber holder did not answer '$1'"
}

one_run() { # SERVER SUBSCRIBERS SECONDS LABEL: LINE
    local s=$1 n=$2 reqs=$tmp/$4.requests m0 m1
    python3 "$helper" requests --server "$s" --out "$reqs" --count "${COUNT:-1000}" --size "${SIZE:-64}" >/dev/null
    if ((n > 0)); then
        rm -f "$tmp/hold.in" && mkfifo "$tmp/hold.in" && : >"$tmp/hold.out"
        taskset -c "$CLIENT_CPU" python3 "$helper" hold --server "$s" --port "${port[$s]}" --subscribers "$n" \
            <"$tmp/hold.in" >"$tmp/hold.out" 2>&1 &
        hold_pid=$!
        pids+=("$hold_pid")
        exec 3>"$tmp/hold.in"
        hold_cmd "" '^ready '
    fi
    python3 "$helper" check --server "$s" --port "${port[$s]}" --file "$reqs" >"$tmp/$4.check" || die "$4: $(cat "$tmp/$4.check")"
    if ((n > 0)); then
        hold_cmd probe '^probe '
        [[ $HOLD == *received_all=1* ]] || die "$4: $HOLD"
        hold_cmd mark '^mark '
        m0=$HOLD
    fi
    [[ $s == halley* ]] && ctype=application/json || ctype=text/plain
    auth=()
    [[ $s == halley-bearer || $s == uws ]] && auth=("Bearer benchtoken")
    run_wrk "$4" "${pid[$s]}" -c"$CONNECTIONS" -d"$3s" -s "$here/api_publish.lua" "http://127.0.0.1:${port[$s]}/" -- "$reqs" \
        "$ctype" "${auth[@]}"
    if ((n > 0)); then
        hold_cmd mark '^mark '
        m1=$HOLD
        hold_cmd "drain 30" '^drained '
        LINE+=" deliveries_per_s=$((($(field deliveries "$m1") - $(field deliveries "$m0")) / $3)) deliveries=$(field deliveries "$HOLD")"
        LINE+=" expected=$(($(field requests "$LINE") * n)) open=$(field open "$HOLD") codes=$(field codes "$HOLD")"
        echo quit >&3
        exec 3>&-
        wait "$hold_pid" || true
    fi
}

log "wrk -t1 -c$CONNECTIONS, ${COUNT:-1000} distinct requests, ${SIZE:-64} B data; ${WARMUP} s warm-up, then $RUNS x ${DURATION} s"
failures=0
for n in $SUBS; do
    if ((WARMUP > 0)); then for s in $SERVERS; do one_run "$s" "$n" "$WARMUP" "warmup.$s.$n"; done; fi
    for r in $(seq "$RUNS"); do
        for s in $SERVERS; do
            one_run "$s" "$n" "$DURATION" "$s.$n.$r"
            keep "$n,$s" "$LINE"
            printf '  %-13s %5s subs run %d: %9s req/s %8s req/server-CPU-s  server %3s%%  cores %s%%/%s%%  p99 %s' "$s" "$n" "$r" \
                "$(field rps "$LINE")" "$(field per_cpu_s "$LINE")" "$(field server_pct "$LINE")" "$(field core_s "$LINE")" \
                "$(field core_c "$LINE")" "$(field p99 "$LINE")"
            if ((n > 0)); then
                printf '  deliveries/s %s  open %s/%s  closed %s' "$(field deliveries_per_s "$LINE")" "$(field open "$LINE")" \
                    "$n" "$(field codes "$LINE")"
                # Every subscriber still there must have had every accepted publish.
                if [[ $(field open "$LINE") == "$n" ]] && (($(field deliveries "$LINE") < $(field expected "$LINE"))); then
                    printf ' FAILED: fewer deliveries than publishes x subscribers'
                    failures=$((failures + 1))
                fi
            fi
            echo
        done
    done
done

log "server logs (beyond the start lines)"
grep -hv -e 'listening on' -e 'development app' -e 'static files are off' -e '\[notice\]' \
    "$tmp/halley.log" "$tmp/error.log" "$tmp/uws.log" 2>/dev/null | head -n 20 || echo "  (nothing)"
echo
echo "=== summary: POST publish requests, ${SIZE:-64} B data, wrk -t1 -c$CONNECTIONS; medians of $RUNS x ${DURATION} s"
printf '%-6s %-13s %10s %8s %12s %7s %13s %9s %9s\n' subs server "req/s" "cpu-s" "req/cpu-s" server "deliveries/s" \
    "user-us" "sys-us"
missed=0
for n in $SUBS; do
    for s in $SERVERS; do
        printf '%-6s %-13s %10s %8s %12s %6s%% %13s %9s %9s\n' "$n" "$s" "$(med "$n,$s" rps)" "$(med "$n,$s" cpu_s)" \
            "$(med "$n,$s" per_cpu_s)" "$(med "$n,$s" server_pct)" "$( ((n > 0)) && med "$n,$s" deliveries_per_s || echo -)" \
            "$(med "$n,$s" user_us)" "$(med "$n,$s" sys_us)"
    done
    for h in halley halley-bearer; do
        for p in nchan uws; do
            [[ " $SERVERS " == *" $h "* && " $SERVERS " == *" $p "* ]] || continue
            rc=$(ratio "$(med "$n,$h" per_cpu_s)" "$(med "$n,$p" per_cpu_s)")
            echo "  $h/$p: req/s $(ratio "$(med "$n,$h" rps)" "$(med "$n,$p" rps)"), per server CPU-second $rc"
            [[ $h/$p == halley/nchan ]] && ! awk -v r="$rc" 'BEGIN {exit !(r >= 1)}' && missed=$((missed + 1))
        done
    done
done
((failures == 0)) || die "$failures run(s) failed"
((missed == 0)) || [[ -z ${ENFORCE_GOALS:-} ]] || die "$missed goal(s) missed"
