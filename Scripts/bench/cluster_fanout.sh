#!/usr/bin/env bash
# Three nodes over Redis against three Nchans over Redis (issue 14), in the same run: fan-out of
# SIZE B messages to 3 x SUBS_PER_NODE WebSocket subscribers of one channel, the publishers on
# node 1.
#   halley  3 hubs (--threads 1 --redis), their own redis-server
#   nchan   3 nginx + Nchan (one worker each, nchan/nginx.conf.in with `nchan_redis_url` and
#           `nchan_use_redis on`: Nchan's distributed mode), another redis-server
# Two redis-servers, so that each case's Redis does that case's work only (the idle stack's
# heartbeats and pings stay out of the other's count); both stacks stay up the whole run. Every
# server process on SERVER_CPU; one `halley-load fanout` on CLIENT_CPU holds every subscriber
# (--sub-url per node: subscriber i on node i mod 3) and the publishers (--url: node 1). Each
# data string carries its send time, so every delivery is timed and checked on every node: none
# missing, duplicated or out of order. RUNS runs, halley and nchan alternating, each in two phases:
#   latency   a fixed rate (LAT_DELIVERIES / subscribers msg/s) both sustain well below
#             saturation, DURATION s; publish to receipt over every delivery
#   capacity  closed loop: WINDOW messages not yet at every subscriber. WINDOW=1 (default): one
#             message in flight, so no server merges the writes of several messages: the cost
#             per message; 1 s of warm-up, then the deliveries of DURATION s
# Per CPU-second: deliveries over the utime + stime, in the window, of every server process of
# the case summed (halley: the 3 hubs + redis-server; nchan: the 3 nginx workers and masters +
# redis-server); `redis` is redis-server's share of that over the whole run (setup included).
# Medians of the runs; goals (issue 14): capacity per CPU-second halley/nchan >= 2, latency
# p99 halley/nchan <= 1.
# Environment: SUBS_PER_NODE=6000 RUNS=3 DURATION=10 LAT_DELIVERIES=40000 WINDOW=1 PUBLISHERS=4
# SIZE=64 PHASES=latency,capacity CASES="halley nchan" ENFORCE_GOALS=1 (exit 1 when a goal is missed)
source "$(dirname "$0")/lib.sh"
SUBS_PER_NODE=${SUBS_PER_NODE:-6000} RUNS=${RUNS:-3} DURATION=${DURATION:-10} WINDOW=${WINDOW:-1}
PUBLISHERS=${PUBLISHERS:-4} SIZE=${SIZE:-64} cases=${CASES:-"halley nchan"}
nodes=3 subs=$((3 * SUBS_PER_NODE))
for s in $cases; do [[ $s == halley || $s == nchan ]] || die "CASES: halley and/or nchan, got '$s'"; done
rate=$(awk -v d="${LAT_DELIVERIES:-40000}" -v n="$subs" 'BEGIN {printf "%g", d / n}')
need redis-server redis-cli
((subs + PUBLISHERS + 64 <= $(ulimit -n))) ||
    die "$subs subscribers and $PUBLISHERS publishers in one halley-load: open files limit $(ulimit -n)"
build halley halley-load
"$LOAD_BIN" selftest 2>/dev/null || die "halley-load selftest failed"
banner

# start_redis NAME: a redis-server of its own (no persistence); REDIS_PID, REDIS_PORT.
start_redis() {
    REDIS_PORT=$(free_port)
    mkdir -p "$tmp/$1"
    bg "$tmp/$1.log" redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no --dir "$tmp/$1"
    REDIS_PID=$BG_PID
    until_up "$REDIS_PID" "redis-server ($1)" redis-cli -p "$REDIS_PORT" ping
    echo "redis-server ($1) pid $REDIS_PID, port $REDIS_PORT: $(redis-server --version | cut -d' ' -f3)"
}

# ports[CASE]: the nodes' ports, node 1 first; servers[CASE]: every server process of the case;
# redis[CASE]: its redis-server.
declare -A ports servers redis
if [[ " $cases " == *" halley "* ]]; then
    start_redis redis-halley
    redis[halley]=$REDIS_PID servers[halley]=$REDIS_PID
    for k in $(seq "$nodes"); do
        HUB_LOG=$tmp/hub$k.log start_halley --app-token benchtoken --public "$tmp/no-public" \
            --redis "redis://127.0.0.1:$REDIS_PORT" --node-id "n$k"
        until_up "$HALLEY_PID" "node $k's broker" grep -q 'number [0-9]* among the nodes' "$tmp/hub$k.log"
        ports[halley]+=" $HALLEY_PORT" servers[halley]+=" $HALLEY_PID"
    done
fi
if [[ " $cases " == *" nchan "* ]]; then
    start_redis redis-nchan
    redis[nchan]=$REDIS_PID servers[nchan]=$REDIS_PID
    for k in $(seq "$nodes"); do
        mkdir -p "$tmp/nchan$k"
        start_nchan "$tmp/nchan$k" "redis://127.0.0.1:$REDIS_PORT"
        # Up once a publish goes through Redis (before it is connected: 503).
        until_up "$NGINX_WORKER" "nchan $k with Redis" curl -sf -o /dev/null --max-time 2 -X POST --data-binary probe \
            "http://127.0.0.1:$NCHAN_PORT/pub/probe"
        ports[nchan]+=" $NCHAN_PORT" servers[nchan]+=" $NGINX_WORKER $NGINX_PID"
    done
fi

# ticks_of PID...: their utime + stime summed, in clock ticks.
ticks_of() { local t=0 p; for p; do t=$((t + $(ticks "$p"))); done; echo "$t"; }

log "$nodes nodes x $SUBS_PER_NODE subscribers ($subs), publishers on node 1: latency at $rate msg/s," \
    "capacity with a window of $WINDOW message(s), $PUBLISHERS publishers, ${SIZE} B"
for r in $(seq "$RUNS"); do
    for s in $cases; do
        read -ra p <<<"${ports[$s]}"
        args=(--url "http://127.0.0.1:${p[0]}")
        for port in "${p[@]}"; do args+=(--sub-url "http://127.0.0.1:$port"); done
        read -ra sp <<<"${servers[$s]}"
        for pid in "${sp[@]}"; do args+=(--server-pid "$pid"); done
        r0=$(ticks "${redis[$s]}") a0=$(ticks_of "${sp[@]}")
        run_load "$s.$r" fanout "${args[@]}" --server "$s" --transport ws -n "$subs" --rate "$rate" \
            --window "$WINDOW" --publishers "$PUBLISHERS" --size "$SIZE" --duration "$DURATION" \
            --phases "${PHASES:-latency,capacity}"
        share=$(awk -v r="$(($(ticks "${redis[$s]}") - r0))" -v a="$(($(ticks_of "${sp[@]}") - a0))" \
            'BEGIN {printf "%.0f", a ? 100 * r / a : 0}')
        while IFS= read -r line; do
            ph=$(field phase "$line")
            keep "$s,$ph" "$line redis_share_pct=$share"
            printf '  %-8s %-6s run %d: %9.0f deliveries/s %9s per server CPU-s  p50 %7s ms  p99 %7s ms  missing %s  cpu server %5s%% (redis %s%% of it over the run), tool %5s%%  [%s]\n' \
                "$ph" "$s" "$r" "$(field deliveries_per_sec "$line")" "$(field deliveries_per_server_cpu_s "$line")" \
                "$(ms "$(field p50_us "$line")")" "$(ms "$(field p99_us "$line")")" "$(field missing "$line")" \
                "$(field server_cpu_pct "$line")" "$share" "$(field client_cpu_pct "$line")" "$(field flags "$line")"
        done <<<"$LINES"
        for pid in "${sp[@]}"; do kill -0 "$pid" 2>/dev/null || die "$s: server process $pid died"; done
    done
done

log "server logs (beyond the start lines)"
grep -Hv -e 'listening on' -e 'development app' -e 'static files are off' -e 'among the nodes' \
    -e 'joining the nodes' -e '\[notice\]' "$tmp"/hub*.log "$tmp"/nchan*/error.log 2>/dev/null |
    sed "s|^$tmp/||" | head -n 20 || echo "  (nothing)"

missed=0
echo
echo "=== summary: medians of $RUNS run(s), $nodes nodes x $SUBS_PER_NODE WebSocket subscribers, ${DURATION} s phases," \
    "${SIZE} B data; latency = publish to receipt; CPU = every server process (hubs or nginx, and redis-server)"
printf '%-9s %-7s %12s %14s %9s %9s %9s %8s %8s %8s\n' phase case deliveries/s "per srv CPU-s" "p50 ms" "p99 ms" \
    "max ms" "srv cpu" "redis" "tool cpu"
for ph in latency capacity; do
    for s in $cases; do
        k=$s,$ph
        [[ -n ${results[$k]:-} ]] || continue
        printf '%-9s %-7s %12s %14s %9s %9s %9s %7s%% %7s%% %7s%%\n' "$ph" "$s" "$(med "$k" deliveries_per_sec)" \
            "$(med "$k" deliveries_per_server_cpu_s)" "$(ms "$(med "$k" p50_us)")" "$(ms "$(med "$k" p99_us)")" \
            "$(ms "$(med "$k" max_us)")" "$(med "$k" server_cpu_pct)" "$(med "$k" redis_share_pct)" \
            "$(med "$k" client_cpu_pct)"
    done
    [[ -n ${results[halley,$ph]:-} && -n ${results[nchan,$ph]:-} ]] || continue
    a=halley,$ph b=nchan,$ph
    cpu=$(ratio "$(med "$a" deliveries_per_server_cpu_s)" "$(med "$b" deliveries_per_server_cpu_s)")
    p99=$(ratio "$(med "$a" p99_us)" "$(med "$b" p99_us)")
    echo "  halley / nchan: per server CPU-second $cpu, deliveries/s" \
        "$(ratio "$(med "$a" deliveries_per_sec)" "$(med "$b" deliveries_per_sec)"), p50" \
        "$(ratio "$(med "$a" p50_us)" "$(med "$b" p50_us)"), p99 $p99"
    if [[ $ph == latency ]]; then
        awk -v r="$p99" 'BEGIN {exit !(r <= 1)}' && v=met || { v=missed; missed=$((missed + 1)); }
        echo "  goal: latency p99 <= 1x Nchan + Redis: $v ($p99)"
    else
        awk -v r="$cpu" 'BEGIN {exit !(r >= 2)}' && v=met || { v=missed; missed=$((missed + 1)); }
        echo "  goal: deliveries per server CPU-second >= 2x Nchan + Redis (window $WINDOW): $v ($cpu)"
    fi
done
echo "goals: $missed missed"
((missed == 0)) || [[ -z ${ENFORCE_GOALS:-} ]] || die "$missed goal(s) missed"
echo "$NAME: every run complete: every subscriber on every node received every message"
