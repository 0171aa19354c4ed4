#!/usr/bin/env bash
# The cost of Redis on one node (issue 14): the same hub binary with and without --redis,
# alternating, RUNS runs of each row. Rows: a bearer `POST /publish` of 64 B with no
# subscriber (wrk -t1, CONNECTIONS keep-alive connections), and fan-out of 64 B to SUBS
# WebSocket subscribers, one message in flight (halley-load fanout --window 1). Per server
# CPU-second: the hub alone and the hub plus redis-server (both pinned to SERVER_CPU, so they
# share it as they would share a machine); the ratio with Redis over without.
# Environment: DURATION=5 RUNS=3 CONNECTIONS=32 SUBS=1000
source "$(dirname "$0")/lib.sh"
DURATION=${DURATION:-5} RUNS=${RUNS:-3} CONNECTIONS=${CONNECTIONS:-32} SUBS=${SUBS:-1000}
need wrk redis-server redis-cli
build halley halley-load
banner
redis_port=$(free_port)
bg "$tmp/redis.log" redis-server --port "$redis_port" --bind 127.0.0.1 --save "" --appendonly no
REDIS_PID=$BG_PID
until_up "$REDIS_PID" redis-server redis-cli -p "$redis_port" ping
cat >"$tmp/publish.lua" <<'LUA'
wrk.method = "POST"
wrk.body = '{"channel":"bench","event":"e","data":"0123456789012345678901234567890123456789012345678901234567890123"}'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer benchtoken"
LUA

one() { # MODE(plain|redis) RUN
    local mode=$1 extra=() r0 t0 hub redis
    [[ $mode == redis ]] && extra=(--redis "redis://127.0.0.1:$redis_port")
    start_halley --app-token benchtoken "${extra[@]}" >/dev/null
    if [[ $mode == redis ]]; then
        until_up "$HALLEY_PID" "halley's broker" grep -q 'number [0-9]* among the nodes' "$tmp/halley.log"
    fi
    run_wrk warm "$HALLEY_PID" -c "$CONNECTIONS" -d 1s -s "$tmp/publish.lua" "http://127.0.0.1:$HALLEY_PORT/publish"
    r0=$(ticks "$REDIS_PID")
    run_wrk "publish-$mode-$2" "$HALLEY_PID" -c "$CONNECTIONS" -d "${DURATION}s" -s "$tmp/publish.lua" \
        "http://127.0.0.1:$HALLEY_PORT/publish"
    redis=$(awk -v t="$(($(ticks "$REDIS_PID") - r0))" -v hz="$CLK_TCK" 'BEGIN {printf "%.2f", t / hz}')
    [[ $mode == redis ]] || redis=0
    hub=$(field cpu_s "$LINE")
    keep "publish-$mode" "$LINE redis_cpu_s=$redis both=$(awk -v n="$(field requests "$LINE")" -v a="$hub" -v b="$redis" \
        'BEGIN {printf "%.0f", n / (a + b)}')"
    local pids=(--server-pid "$HALLEY_PID")
    [[ $mode == redis ]] && pids+=(--server-pid "$REDIS_PID")
    run_load "fanout-$mode-$2" fanout --url "http://127.0.0.1:$HALLEY_PORT" --server halley -n "$SUBS" --window 1 \
        --duration "$DURATION" "${pids[@]}"
    keep "fanout-$mode" "$(grep '^phase=capacity' <<<"$LINES")"
    stop_pid "$HALLEY_PID"
}

for run in $(seq "$RUNS"); do
    for mode in plain redis; do
        log "run $run: $mode"
        one "$mode" "$run"
    done
done
echo
echo "publish (bearer, 64 B, no subscriber, $CONNECTIONS connections), requests per CPU-second, medians of $RUNS:"
printf '  without --redis: %s (hub)\n' "$(med publish-plain per_cpu_s)"
printf '  with --redis:    %s (hub), %s (hub + redis-server)\n' "$(med publish-redis per_cpu_s)" "$(med publish-redis both)"
printf '  ratio: %s (hub), %s (hub + redis-server)\n' "$(ratio "$(med publish-redis per_cpu_s)" "$(med publish-plain per_cpu_s)")" \
    "$(ratio "$(med publish-redis both)" "$(med publish-plain per_cpu_s)")"
echo "fan-out (64 B, $SUBS WebSocket subscribers, one message in flight), deliveries per server CPU-second (with --redis: hub + redis-server):"
printf '  without --redis: %s  with: %s  ratio: %s\n' "$(med fanout-plain deliveries_per_server_cpu_s)" \
    "$(med fanout-redis deliveries_per_server_cpu_s)" \
    "$(ratio "$(med fanout-redis deliveries_per_server_cpu_s)" "$(med fanout-plain deliveries_per_server_cpu_s)")"
printf '  p99 latency (ms): without %s  with %s\n' "$(ms "$(med fanout-plain p99_us)")" "$(ms "$(med fanout-redis p99_us)")"
