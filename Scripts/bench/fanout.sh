#!/usr/bin/env bash
# Fan-out: N subscribers on one channel and publishers in `halley-load fanout` (one thread on
# CLIENT_CPU; each data string carries its send time, so every delivery is timed and checked:
# none missing, duplicated or out of order per publisher), against halley (--threads 1) and
# nginx + Nchan (one worker, nchan/nginx.conf.in) on SERVER_CPU. Per subscriber count, RUNS runs
# of each case in CASES (server:transport), alternating, each with two phases:
#   latency   a fixed publish rate both servers sustain well below saturation (LAT_DELIVERIES /
#             subscribers messages/s), DURATION s; publish to receipt over every delivery
#   capacity  closed loop: PUBLISHERS connections publish while fewer than a window of messages
#             (WINDOW_DELIVERIES / subscribers, at least 8) have not reached every subscriber,
#             so a server can write several waiting messages in one go; 1 s of warm-up, then the
#             deliveries subscribers receive in DURATION s
# Medians and ratios first/second case (xhr: second/first); for halley against Nchan the goals: capacity >= 2x and
# (WebSocket) latency p99 <= 1x. Which side used its core is in each run's flags.
#   TRANSPORT=ws (default)  CASES="halley:ws nchan:ws", SUBS="1000 10000", LAT_DELIVERIES=40000
#   TRANSPORT=longpoll      halley's /halley/poll against Nchan's long-poll (multipart answers:
#                           both batch what is waiting; NCHAN_MULTIPART=off: one message per
#                           answer), SUBS=1000, LAT_DELIVERIES=10000 (every delivery at a low rate
#                           is an answer and a new request)
#   TRANSPORT=xhr           pusher-js xhr_streaming against WebSocket on one halley, SUBS=1000,
#                           RUNS=3 (streams reopened past 256 KiB, as pusher-js does: rotations=)
# Environment: SUBS RUNS=1 DURATION=10 LAT_DELIVERIES WINDOW_DELIVERIES=64000 PUBLISHERS=16 SIZE=64
# PHASES=latency,capacity CASES NCHAN_MULTIPART ENFORCE_GOALS=1 (exit 1 when a goal is missed)
# WINDOW=N: a window of N messages for every subscriber count (WINDOW=1: one message in flight,
# so no server can merge writes: the per-message figure)
source "$(dirname "$0")/lib.sh"
case ${TRANSPORT:=ws} in
    ws) cases=${CASES:-"halley:ws nchan:ws"} subs=${SUBS:-"1000 10000"} lat=${LAT_DELIVERIES:-40000} runs=${RUNS:-1} ;;
    longpoll) cases=${CASES:-"halley:longpoll nchan:longpoll"} subs=${SUBS:-1000} lat=${LAT_DELIVERIES:-10000} runs=${RUNS:-1} ;;
    xhr) cases=${CASES:-"halley:ws halley:xhr_streaming"} subs=${SUBS:-1000} lat=${LAT_DELIVERIES:-40000} runs=${RUNS:-3} ;;
    *) die "TRANSPORT: ws, longpoll or xhr" ;;
esac
DURATION=${DURATION:-10} PUBLISHERS=${PUBLISHERS:-16}
build halley halley-load
"$LOAD_BIN" selftest 2>/dev/null || die "halley-load selftest failed"
banner
[[ " $cases" == *" halley:"* ]] && start_halley --app-token benchtoken --public "$tmp/no-public"
[[ " $cases" == *" nchan:"* ]] && start_nchan
declare -A port=([halley]=${HALLEY_PORT:-} [nchan]=${NCHAN_PORT:-}) pid=([halley]=${HALLEY_PID:-} [nchan]=${NGINX_WORKER:-})

for n in $subs; do
    rate=$(awk -v d="$lat" -v n="$n" 'BEGIN {printf "%g", d / n}')
    window=${WINDOW:-$(awk -v d="${WINDOW_DELIVERIES:-64000}" -v n="$n" 'BEGIN {w = int(d / n); print w < 8 ? 8 : w}')}
    log "$n subscribers: latency at $rate msg/s, capacity with a window of $window messages, $PUBLISHERS publishers"
    for r in $(seq "$runs"); do
        for c in $cases; do
            s=${c%%:*} t=${c#*:}
            run_load "$s.$t.$n.$r" fanout --url "http://127.0.0.1:${port[$s]}" --server "$s" --transport "$t" -n "$n" \
                --rate "$rate" --window "$window" --publishers "$PUBLISHERS" --size "${SIZE:-64}" --duration "$DURATION" \
                --phases "${PHASES:-latency,capacity}" --server-pid "${pid[$s]}"
            while IFS= read -r line; do
                ph=$(field phase "$line")
                keep "$n,$c,$ph" "$line"
                printf '  %-8s %-21s run %d: %9.0f deliveries/s  p50 %7s ms  p99 %7s ms  missing %s  rotations %s  cpu server %5s%%, tool %5s%%  [%s]\n' \
                    "$ph" "$c" "$r" "$(field deliveries_per_sec "$line")" "$(ms "$(field p50_us "$line")")" \
                    "$(ms "$(field p99_us "$line")")" "$(field missing "$line")" "$(field rotations "$line")" \
                    "$(field server_cpu_pct "$line")" "$(field client_cpu_pct "$line")" "$(field flags "$line")"
            done <<<"$LINES"
            kill -0 "${pid[$s]}" || die "$s died"
            [[ $t == xhr_streaming ]] && sleep 7  # its sessions linger 5 s: let them end first
        done
    done
done

log "server logs (beyond the start lines)"
grep -hv -e 'listening on' -e 'development app' -e 'static files are off' -e '\[notice\]' \
    "$tmp/halley.log" "$tmp/error.log" 2>/dev/null | head -n 20 || echo "  (nothing)"

read -r a b <<<"$cases"
[[ $TRANSPORT == xhr ]] && read -r b a <<<"$cases"  # xhr_streaming / WebSocket
missed=0
echo
echo "=== summary: medians of $runs run(s), ${DURATION} s phases, ${SIZE:-64} B data; latency = publish to receipt"
printf '%-6s %-9s %-21s %12s %9s %9s %9s %8s %8s %12s\n' subs phase case deliveries/s "p50 ms" "p99 ms" "max ms" \
    "srv cpu" "tool cpu" "per srv CPU-s"
for n in $subs; do
    for ph in latency capacity; do
        for c in $cases; do
            k=$n,$c,$ph
            [[ -n ${results[$k]:-} ]] || continue
            printf '%-6s %-9s %-21s %12s %9s %9s %9s %7s%% %7s%% %12s\n' "$n" "$ph" "$c" "$(med "$k" deliveries_per_sec)" \
                "$(ms "$(med "$k" p50_us)")" "$(ms "$(med "$k" p99_us)")" "$(ms "$(med "$k" max_us)")" \
                "$(med "$k" server_cpu_pct)" "$(med "$k" client_cpu_pct)" "$(med "$k" deliveries_per_server_cpu_s)"
        done
        ka=$n,$a,$ph kb=$n,$b,$ph
        [[ -n ${results[$ka]:-} && -n ${results[$kb]:-} ]] || continue
        if [[ $ph == latency ]]; then
            rr=$(ratio "$(med "$ka" p99_us)" "$(med "$kb" p99_us)")
            echo "  $a / $b: p99 $rr, p50 $(ratio "$(med "$ka" p50_us)" "$(med "$kb" p50_us)")"
            [[ $a == halley:ws && $b == nchan:ws ]] && ! awk -v r="$rr" 'BEGIN {exit !(r <= 1)}' && missed=$((missed + 1))
        else
            rr=$(ratio "$(med "$ka" deliveries_per_sec)" "$(med "$kb" deliveries_per_sec)")
            echo "  $a / $b: deliveries/s $rr, per server CPU-second" \
                "$(ratio "$(med "$ka" deliveries_per_server_cpu_s)" "$(med "$kb" deliveries_per_server_cpu_s)"), p99" \
                "$(ratio "$(med "$ka" p99_us)" "$(med "$kb" p99_us)")"
            [[ $a == halley:* && $b == nchan:* ]] && ! awk -v r="$rr" 'BEGIN {exit !(r >= 2)}' && missed=$((missed + 1))
        fi
    done
done
[[ $a == halley:* && $b == nchan:* ]] && echo "goals (capacity >= 2, WebSocket latency p99 <= 1): $missed missed"
((missed == 0)) || [[ -z ${ENFORCE_GOALS:-} ]] || die "$missed goal(s) missed"
echo "$NAME: every run complete: every subscriber received every message"
