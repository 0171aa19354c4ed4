#!/usr/bin/env bash
# Fan-out: N subscribers on one channel and a publisher, halley beside Nchan (Debian nginx +
# libnginx-mod-nchan), same load tool, same machine, one run.
#
# halley-fanout (this package's load tool: one thread, epoll; subscribers and publisher in one
# process, so each published data string carries its CLOCK_MONOTONIC send time and subscribers
# compute the delivery latency) runs pinned to CLIENT_CPU against halley (--threads 1) and
# against nginx + Nchan (worker_processes 1, Scripts/bench/nchan/nginx.conf.in), both pinned to
# SERVER_CPU, for every subscriber count in SUBS. Subscribers are WebSockets (TRANSPORT=ws, this
# script) or long-polls (TRANSPORT=longpoll, see longpoll.sh). Per server and case, two phases:
#
#  1. latency: publish at a fixed rate, open loop, for DURATION s: rate = LAT_DELIVERIES /
#     subscribers messages/s (default 40,000 deliveries/s: 1,000 subscribers x 40 msg/s,
#     10,000 x 4 msg/s; long-poll 10,000: 1,000 x 10 msg/s). Measured here (2 cores, Debian 12),
#     each server's capacity on its one core is at least 120,000 WebSocket and 500,000
#     long-poll deliveries/s, while 50,000 WebSocket deliveries/s took 35-55% of the core and
#     20,000 long-poll deliveries/s (each one an answer and a new request) up to 70%: these rates
#     keep both servers well below saturation, so the latency is the servers' and not a queue's
#     (a run where a server used over 60% of its core is flagged). Latency is publish (just
#     before the POST is written) to receipt, over every delivery of every message published in
#     the phase; the tool then waits up to 5 s for the last deliveries and counts the missing
#     ones (must be 0). With 10,000 subscribers one message's fan-out takes tens of ms, so p99
#     is mostly the time to write to every subscriber.
#  2. capacity: closed loop. The tool publishes on PUBLISHERS connections (one request in
#     flight each: concurrent publishers, as many backends would be) while fewer than a window
#     of messages (WINDOW_DELIVERIES / subscribers: 64 with 1,000 subscribers, 8 with 10,000)
#     have not yet reached every subscriber; after 1 s of warm-up it counts the deliveries
#     subscribers receive in DURATION s. Every message must arrive here too. The concurrency
#     matters: with several messages waiting for a subscriber a server can write them in one go
#     (Nchan does: with 1,000 subscribers it went from ~130,000 deliveries/s with 4 publishers
#     and a window of 16 to 300,000-600,000 with 16 and 64), so the defaults give both servers
#     that chance; with 10,000 subscribers a window of 8 gives both servers the same
#     deliveries/s as 64, with latencies under a second instead of several.
# The summary gives, per case, deliveries/s, latency p50/p99/max, missing deliveries, CPU of the
# server and of the tool, and the ratios halley/Nchan against the goals: capacity deliveries/s
# at least 2x Nchan's, and (WebSocket) latency p99 no worse than Nchan's (ratio <= 1).
#
# Load-tool bound? The tool receives every delivery on one core, and over loopback that core
# also does kernel work of the servers' connections: the ACKs its sockets send are processed
# on the tool's core (tcp_ack of the server's socket, and the server's queued data that an ACK
# lets out). Profiled here, 95% of the tool's time is in the kernel. Each capacity run shows
# the tool's CPU share (getrusage) and each core's busy share (/proc/stat) and is flagged
# [client-bound] when the server used under 85% of its core and the tool 90% or more of its
# own (the tool set the pace: the figure is a lower bound), [tool busy too] when both were
# near 100% (the server's figure may be a little low), [not saturated] when neither was
# (another process, or the window), [disturbed] when a benchmark core was busier than the
# server or the tool on it (another process: rerun when the machine is quiet). The summary
# also gives deliveries per server CPU-second, which does not depend on who set the pace.
# READ_INTERVAL_US (look for events at most once per N us: several messages per read, fewer
# ACKs) and BUSY_POLL (no sleeping in epoll_wait) make a cheaper client.
#
# Usage: Scripts/bench/fanout.sh
# Environment:
#   SUBS="1000 10000"      subscriber counts          DURATION=10   seconds per phase
#   LAT_DELIVERIES=40000   latency phase deliveries/s (publish rate = this / subscribers; long-poll 10000)
#   RATE=                  latency phase publish rate in msg/s for every case (overrides)
#   WINDOW_DELIVERIES=64000  capacity phase: the window in messages is this / subscribers, at
#                          least 8 (1,000 subscribers: 64; 10,000: 8)
#   WINDOW=                a window in messages for every case (overrides)
#   PUBLISHERS=16          publisher connections      SIZE=64       data string bytes
#   READ_INTERVAL_US=0     see above                  RUNS=1        runs per server and case
#   BUSY_POLL=1            capacity phase: the tool never sleeps in epoll_wait (no wake-ups)
#   PHASES=latency,capacity
#   SERVERS="halley nchan" SERVER_CPU=0 CLIENT_CPU=1
#   NCHAN_MULTIPART=on     long-poll: Nchan answers with every waiting message (multipart/mixed)
#   SCRATCH=.build         swift build --scratch-path (binaries in SCRATCH/release)
#   HALLEY_BIN, BENCH_BIN  binaries (default: build both first)   NO_BUILD=1: do not build
#   NGINX_BIN=nginx        NCHAN_MODULE=/usr/lib/nginx/modules/ngx_nchan_module.so
#   ENFORCE_GOALS=1        exit 1 when a goal is missed    KEEP_TMP=1: keep logs, raw tool output
#
# Exits non-zero when a server fails to start or dies, a tool run fails (a subscriber did not
# subscribe, a delivery is missing or duplicated, a server closed a connection, an error
# status), or with ENFORCE_GOALS=1 when a goal is missed.
set -euo pipefail

TRANSPORT=${TRANSPORT:-ws}
NAME=${BENCH_NAME:-fanout}
DURATION=${DURATION:-10}
SUBS=${SUBS:-"1000 10000"}
if [[ $TRANSPORT == longpoll ]]; then
    LAT_DELIVERIES=${LAT_DELIVERIES:-10000}
else
    LAT_DELIVERIES=${LAT_DELIVERIES:-40000}
fi
RATE=${RATE:-}
WINDOW=${WINDOW:-}
WINDOW_DELIVERIES=${WINDOW_DELIVERIES:-64000}
PUBLISHERS=${PUBLISHERS:-16}
SIZE=${SIZE:-64}
READ_INTERVAL_US=${READ_INTERVAL_US:-0}
BUSY_POLL=${BUSY_POLL:-}
PHASES=${PHASES:-latency,capacity}
RUNS=${RUNS:-1}
SERVERS=${SERVERS:-"halley nchan"}
SERVER_CPU=${SERVER_CPU:-0}
CLIENT_CPU=${CLIENT_CPU:-1}
NCHAN_MULTIPART=${NCHAN_MULTIPART:-on}
NGINX_BIN=${NGINX_BIN:-nginx}
NCHAN_MODULE=${NCHAN_MODULE:-/usr/lib/nginx/modules/ngx_nchan_module.so}

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
SCRATCH=${SCRATCH:-$repo/.build}

die() { echo "$NAME: error: $*" >&2; exit 1; }
log() { echo "==> $*"; }

[[ $TRANSPORT == ws || $TRANSPORT == longpoll ]] || die "TRANSPORT must be ws or longpoll"
for t in taskset curl timeout awk python3; do
    command -v "$t" >/dev/null || die "$t not found (apt-get install -y util-linux curl gawk python3)"
done
ncpu=$(nproc)
((SERVER_CPU < ncpu && CLIENT_CPU < ncpu)) || die "need cores $SERVER_CPU and $CLIENT_CPU; this machine has $ncpu"
[[ $SERVER_CPU != "$CLIENT_CPU" ]] || die "SERVER_CPU and CLIENT_CPU must differ"
if [[ " $SERVERS " == *" nchan "* ]]; then
    command -v "$NGINX_BIN" >/dev/null || die "$NGINX_BIN not found (apt-get install -y nginx libnginx-mod-nchan)"
    [[ -f $NCHAN_MODULE ]] || die "no Nchan module at $NCHAN_MODULE (apt-get install -y libnginx-mod-nchan)"
fi
max_subs=0
for n in $SUBS; do ((n > max_subs)) && max_subs=$n; done
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
nofile=$(ulimit -n)
((nofile >= max_subs + PUBLISHERS + 200)) || die "open-file limit $nofile is too low for $max_subs subscribers"

if [[ -z ${NO_BUILD:-} && ( -z ${HALLEY_BIN:-} || -z ${BENCH_BIN:-} ) ]]; then
    for product in halley halley-fanout; do
        log "building: (cd $repo && swift build -c release --product $product --scratch-path $SCRATCH)"
        (cd "$repo" && swift build -c release --product "$product" --scratch-path "$SCRATCH" 2>&1 | tail -n 2) \
            || die "swift build failed"
    done
fi
HALLEY_BIN=${HALLEY_BIN:-$SCRATCH/release/halley}
BENCH_BIN=${BENCH_BIN:-$SCRATCH/release/halley-fanout}
[[ -x $HALLEY_BIN ]] || die "no halley binary at $HALLEY_BIN"
[[ -x $BENCH_BIN ]] || die "no load tool at $BENCH_BIN (swift build -c release --product halley-fanout)"
"$BENCH_BIN" --self-test 2>/dev/null || die "$BENCH_BIN --self-test failed"

tmp=$(mktemp -d "/tmp/halley-bench-$NAME.XXXXXX")
chmod 755 "$tmp"
halley_pid=""
nchan_pid=""
tool_pid=""

BENCH_NAME=$NAME
# shellcheck source=lib.sh
source "$here/lib.sh"

cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    stop_pid "$tool_pid" halley-fanout
    stop_pid "$halley_pid" halley
    stop_pid "$nchan_pid" nginx
    if [[ -n ${KEEP_TMP:-} ]]; then
        echo "$NAME: kept $tmp" >&2
    else
        rm -rf "$tmp"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---- environment --------------------------------------------------------------------------

git_rev=$(git -C "$repo" rev-parse --short HEAD 2>/dev/null || echo '?')
log "environment"
echo "host:    $(uname -srm), $ncpu cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//'))"
echo "halley:  $HALLEY_BIN (git $git_rev$(git -C "$repo" diff --quiet HEAD -- Sources ':!Sources/HalleyFanoutBench' 2>/dev/null || echo ', Sources modified'))"
echo "tool:    $BENCH_BIN"
if [[ " $SERVERS " == *" nchan "* ]]; then
    echo "nchan:   $("$NGINX_BIN" -v 2>&1 | head -n 1), libnginx-mod-nchan $(dpkg-query -W -f '${Version}' libnginx-mod-nchan 2>/dev/null || echo '?')"
fi
echo "load:    $(cut -d' ' -f1-3 /proc/loadavg) (1, 5, 15 min)"
idle_before=$(awk '$1 == "cpu" {t = 0; for (i = 2; i <= NF; i++) t += $i; print t, $5 + $6}' /proc/stat)
sleep 1
busy_now=$(awk -v a="$idle_before" '$1 == "cpu" {t = 0; for (i = 2; i <= NF; i++) t += $i; split(a, x, " ");
    printf "%.0f", 100 * ((t - x[1]) - ($5 + $6 - x[2])) / (t - x[1])}' /proc/stat)
echo "busy:    ${busy_now}% of all cores in the second before the benchmark"
if ((busy_now > 5)); then
    echo "warning: something else is using the CPU; the numbers will be disturbed. Busiest now:"
    top -b -n 1 -w 200 2>/dev/null | sed -n '8,$p' | awk '$9 > 0' | head -n 5 | cut -c1-160 || true
fi

# ---- servers ------------------------------------------------------------------------------

halley_port=""
start_halley() {
    local cmd=(taskset -c "$SERVER_CPU" "$HALLEY_BIN" --max-connections-per-address 0 --session-opens-per-second 0 --max-lingering-per-address 0 --host 127.0.0.1 --port 0 --threads 1 --app-token benchtoken
               --log-level warning --shutdown-grace 1 --public "$tmp/no-public")
    log "halley: ${cmd[*]}"
    # halley reads HALLEY_* variables as options: run it with none of them.
    local unset_env=() v
    for v in $(compgen -e); do [[ $v == HALLEY_* ]] && unset_env+=(-u "$v"); done
    env "${unset_env[@]}" "${cmd[@]}" 2>"$tmp/halley.log" &
    halley_pid=$!
    local i
    for ((i = 0; i < 100; i++)); do
        halley_port=$(sed -n 's/.*halley listening on http:\/\/127\.0\.0\.1:\([0-9]*\).*/\1/p' "$tmp/halley.log" | head -n 1)
        [[ -n $halley_port ]] && break
        kill -0 "$halley_pid" 2>/dev/null || { cat "$tmp/halley.log" >&2; die "halley exited on start"; }
        sleep 0.1
    done
    [[ -n $halley_port ]] || { cat "$tmp/halley.log" >&2; die "halley did not log its port within 10 s"; }
    echo "halley pid $halley_pid, port $halley_port"
}

nchan_port=""
nchan_worker=""
start_nchan() {
    local attempt conf=$tmp/nginx.conf user_line="" code i
    [[ $(id -u) == 0 ]] && user_line="user root;"  # else the workers would run as nobody
    mkdir -p "$tmp/logs"
    for attempt in 1 2 3; do
        nchan_port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
        sed -e "s|@NCHAN_MODULE@|$NCHAN_MODULE|; s|@USER_LINE@|$user_line|; s|@NOFILE@|$nofile|g" \
            -e "s|@TMP@|$tmp|g; s|@WORKER_CONNECTIONS@|$((nofile - 100))|; s|@SHM@|256M|" \
            -e "s|@BUFFER_LENGTH@|1000|; s|@PORT@|$nchan_port|; s|@LP_MULTIPART@|$NCHAN_MULTIPART|" \
            "$here/nchan/nginx.conf.in" >"$conf"
        local cmd=(taskset -c "$SERVER_CPU" "$NGINX_BIN" -p "$tmp" -c "$conf" -g "daemon off;")
        log "nchan: ${cmd[*]}"
        "${cmd[@]}" >"$tmp/nginx.out" 2>&1 &
        nchan_pid=$!
        for ((i = 0; i < 100; i++)); do
            code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "http://127.0.0.1:$nchan_port/pub/probe" || true)
            [[ $code == 404 || $code == 200 ]] && break
            kill -0 "$nchan_pid" 2>/dev/null || break
            sleep 0.1
        done
        if kill -0 "$nchan_pid" 2>/dev/null && [[ $code == 404 || $code == 200 ]]; then
            nchan_worker=$(pgrep -P "$nchan_pid" | head -n 1)
            [[ -n $nchan_worker ]] || die "no nginx worker process under pid $nchan_pid"
            echo "nginx master pid $nchan_pid, worker pid $nchan_worker, port $nchan_port (long-poll multipart: $NCHAN_MULTIPART)"
            return 0
        fi
        stop_pid "$nchan_pid" nginx
        nchan_pid=""
        if ! grep -q "Address already in use" "$tmp/nginx.out" "$tmp/error.log" 2>/dev/null; then
            cat "$tmp/nginx.out" "$tmp/error.log" >&2 2>/dev/null || true
            die "nginx did not start"
        fi
    done
    die "nginx could not bind a free port in 3 attempts"
}

for srv in $SERVERS; do
    case $srv in
        halley) start_halley ;;
        nchan) start_nchan ;;
        *) die "unknown server '$srv' in SERVERS" ;;
    esac
done

# ---- runs ---------------------------------------------------------------------------------

# field NAME LINE: the value of NAME=... in a tool result line.
field() { sed -n "s/.* $1=\([^ ]*\).*/\1/p; s/^$1=\([^ ]*\).*/\1/p" <<<"$2" | head -n 1; }
gt() { awk -v a="$1" -v b="$2" 'BEGIN {exit !(a + 0 > b + 0)}'; }

declare -A results  # [n,srv,phase] -> result lines of the runs, newline-separated
declare -A notes    # [n,srv,phase] -> flags
client_bound=0
disturbed=0
failures=0

run_tool() { # srv n run
    local srv=$1 n=$2 run=$3
    local port_var=${srv}_port pid=$halley_pid rate
    [[ $srv == nchan ]] && pid=$nchan_worker
    if [[ -n $RATE ]]; then rate=$RATE; else rate=$(awk -v d="$LAT_DELIVERIES" -v n="$n" 'BEGIN {printf "%g", d / n}'); fi
    local window=$WINDOW
    [[ -n $window ]] || window=$(awk -v d="$WINDOW_DELIVERIES" -v n="$n" 'BEGIN {w = int(d / n); print (w < 8) ? 8 : w}')
    local label=$srv.$TRANSPORT.$n.$run out=$tmp/tool.$srv.$TRANSPORT.$n.$run.txt
    local cmd=(taskset -c "$CLIENT_CPU" "$BENCH_BIN" --server "$srv" --transport "$TRANSPORT" --port "${!port_var}"
               --subscribers "$n" --rate "$rate" --duration "$DURATION" --window "$window" --publishers "$PUBLISHERS"
               --size "$SIZE" --read-interval-us "$READ_INTERVAL_US" --phases "$PHASES" --server-pid "$pid"
               ${BUSY_POLL:+--busy-poll})
    echo "${cmd[*]}" >"$out"
    log "$label: ${cmd[*]}"
    local limit
    limit=$(awk -v d="$DURATION" 'BEGIN {printf "%d", 2 * d + 150}')
    timeout -k 5 "$limit" "${cmd[@]}" >"$out.stdout" 2>>"$out" &
    tool_pid=$!
    local rc=0
    wait "$tool_pid" || rc=$?
    tool_pid=""
    cat "$out.stdout" >>"$out"
    grep '^halley-fanout:' "$out" | sed 's/^/  /' || true
    local alive=1
    if [[ $srv == halley ]]; then kill -0 "$halley_pid" 2>/dev/null || alive=0; else kill -0 "$nchan_worker" 2>/dev/null || alive=0; fi
    local phase line note
    for phase in latency capacity; do
        line=$(grep -m1 "^phase=$phase " "$out.stdout" || true)
        [[ -n $line ]] || continue
        results[$n,$srv,$phase]+="$line"$'\n'
        note=""
        local sp cp
        sp=$(field server_cpu_pct "$line")
        cp=$(field client_cpu_pct "$line")
        if [[ $phase == capacity ]]; then
            if gt 85 "$sp"; then
                if gt "$cp" 89.99; then note=" [client-bound]"; client_bound=$((client_bound + 1)); else note=" [not saturated]"; fi
            elif gt "$cp" 89.99; then
                note=" [tool busy too]"
            fi
        else
            gt "$sp" 60 && note=" [server over 60%: rate too high for a latency figure]"
            # More than 1% of the publishes a whole interval late: the server (or the tool)
            # did not keep up with the schedule.
            gt "$(field pub_late "$line")" "$(awk -v p="$(field published "$line")" 'BEGIN {print p / 100}')" \
                && note+=" [publisher behind schedule]"
        fi
        # Another process on a benchmark core: its busy share well above what the server (or
        # the tool) and the core's softirq thread (loopback packets under load) used there.
        local busy_s busy_c soft_s soft_c
        busy_s=$(field core_busy_pct "$line" | tr ',' '\n' | sed -n "s/^$SERVER_CPU://p")
        busy_c=$(field core_busy_pct "$line" | tr ',' '\n' | sed -n "s/^$CLIENT_CPU://p")
        soft_s=$(field ksoftirqd_pct "$line" | tr ',' '\n' | sed -n "s/^$SERVER_CPU://p")
        soft_c=$(field ksoftirqd_pct "$line" | tr ',' '\n' | sed -n "s/^$CLIENT_CPU://p")
        [[ $soft_s =~ ^[0-9.]+$ ]] || soft_s=0
        [[ $soft_c =~ ^[0-9.]+$ ]] || soft_c=0
        if [[ -n $busy_s && -n $busy_c ]] && { gt "$busy_s" "$(awk -v v="$sp" -v k="$soft_s" 'BEGIN {print v + k + 10}')" ||
                                               gt "$busy_c" "$(awk -v v="$cp" -v k="$soft_c" 'BEGIN {print v + k + 10}')"; }; then
            note+=" [disturbed: cores busy $busy_s%/$busy_c%]"
            disturbed=$((disturbed + 1))
        fi
        notes[$n,$srv,$phase]+="$note"
        printf '  %-8s %-6s %6s subs: %9.0f deliveries/s  p50 %7.2f ms  p99 %7.2f ms  max %7.2f ms  missing %s  server %5s%% cpu, tool %5s%% cpu, cores %s%s\n' \
            "$phase" "$srv" "$n" "$(field deliveries_per_sec "$line")" \
            "$(awk -v v="$(field p50_us "$line")" 'BEGIN {print v / 1000}')" \
            "$(awk -v v="$(field p99_us "$line")" 'BEGIN {print v / 1000}')" \
            "$(awk -v v="$(field max_us "$line")" 'BEGIN {print v / 1000}')" \
            "$(field missing "$line")" "$sp" "$cp" "$(field core_busy_pct "$line")" "$note"
    done
    if ((alive == 0)); then
        echo "$NAME: $srv died during $label" >&2
        failures=$((failures + 1))
        return 1
    fi
    if ((rc != 0)); then
        echo "$NAME: halley-fanout failed ($label, exit $rc); its output:" >&2
        sed 's/^/  /' "$out" >&2
        failures=$((failures + 1))
    fi
    return 0
}

echo
log "runs: $TRANSPORT subscribers $SUBS; servers $SERVERS; $RUNS run(s) each; ${DURATION}s phases; tool on core $CLIENT_CPU, servers on core $SERVER_CPU"
for n in $SUBS; do
    for ((r = 1; r <= RUNS; r++)); do
        for srv in $SERVERS; do
            run_tool "$srv" "$n" "$r" || die "$srv died: see above (logs in $tmp with KEEP_TMP=1)"
        done
    done
done

# ---- server logs --------------------------------------------------------------------------

echo
if [[ -n $halley_pid ]]; then
    extra=$(grep -v -e 'halley listening on' -e "public root" -e 'using the development app' "$tmp/halley.log" || true)
    log "halley log (beyond the start lines): ${extra:+see below}"
    [[ -n $extra ]] && head -n 30 <<<"$extra" | sed 's/^/  /'
    [[ -z $extra ]] && echo "  (nothing)"
fi
if [[ -n $nchan_pid ]]; then
    extra=$(grep -v -e '\[notice\]' "$tmp/error.log" 2>/dev/null || true)
    log "nginx error.log (beyond notices): ${extra:+see below}"
    [[ -n $extra ]] && head -n 30 <<<"$extra" | sed 's/^/  /'
    [[ -z $extra ]] && echo "  (nothing)"
fi

# ---- summary ------------------------------------------------------------------------------

# med N,SRV,PHASE FIELD: the median of FIELD over the runs.
med() {
    local f v vals=()
    while IFS= read -r f; do
        [[ -n $f ]] || continue
        v=$(field "$2" "$f")
        [[ -n $v && $v != "?" ]] && vals+=("$v")
    done <<<"${results[$1]:-}"
    ((${#vals[@]})) || { echo "?"; return; }
    printf '%s\n' "${vals[@]}" | sort -g | awk '{a[NR] = $1} END {print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2}'
}
ms() { [[ $1 == "?" ]] && echo "?" || awk -v v="$1" 'BEGIN {printf "%.2f", v / 1000}'; }
ratio() { [[ $1 == "?" || $2 == "?" ]] && echo "?" || awk -v a="$1" -v b="$2" 'BEGIN {if (b + 0 == 0) print "?"; else printf "%.2f", a / b}'; }

transport_name="WebSocket"
[[ $TRANSPORT == longpoll ]] && transport_name="long-poll"
echo
echo "=== summary: fan-out to $transport_name subscribers on one channel (halley-fanout on core $CLIENT_CPU, servers on core $SERVER_CPU, one core each)"
echo "latency phase: fixed publish rate ($( [[ -n $RATE ]] && echo "$RATE msg/s" || echo "$LAT_DELIVERIES deliveries/s / subscribers")), ${DURATION} s; capacity phase: closed loop, window $( [[ -n $WINDOW ]] && echo "$WINDOW messages" || echo "$WINDOW_DELIVERIES deliveries / subscribers (at least 8 messages)"), $PUBLISHERS publisher connections, ${DURATION} s"
echo "data $SIZE B per message; medians of $RUNS run(s); latency = publish to receipt"
printf '%-6s %-9s %-7s %10s %12s %9s %9s %9s %9s %8s %8s  %s\n' subs phase server "msg/s" "deliv/s" "p50 ms" "p99 ms" "max ms" missing "srv cpu" "tool cpu" flags
goals_missed=0
ratio_lines=()
for n in $SUBS; do
    for phase in latency capacity; do
        for srv in $SERVERS; do
            k=$n,$srv,$phase
            [[ -n ${results[$k]:-} ]] || continue
            printf '%-6s %-9s %-7s %10s %12s %9s %9s %9s %9s %7s%% %7s%%  %s\n' "$n" "$phase" "$srv" \
                "$(med "$k" publishes_per_sec)" "$(med "$k" deliveries_per_sec)" "$(ms "$(med "$k" p50_us)")" \
                "$(ms "$(med "$k" p99_us)")" "$(ms "$(med "$k" max_us)")" "$(med "$k" missing)" \
                "$(med "$k" server_cpu_pct)" "$(med "$k" client_cpu_pct)" \
                "$(grep -o '\[[^]]*\]' <<<"${notes[$k]:-}" | awk '!seen[$0]++' | tr '\n' ' ' || true)"
        done
    done
    if [[ -n ${results[$n,halley,latency]:-} && -n ${results[$n,nchan,latency]:-} ]]; then
        r=$(ratio "$(med "$n,halley,latency" p99_us)" "$(med "$n,nchan,latency" p99_us)")
        if [[ $TRANSPORT == ws ]]; then
            verdict="goal <= 1: met"
            if [[ $r == "?" ]] || gt "$r" 1; then verdict="goal <= 1: MISSED"; goals_missed=$((goals_missed + 1)); fi
        else
            verdict="no goal for long-poll latency"
        fi
        ratio_lines+=("$(printf '%-6s latency p99 halley/nchan: %s (%s); p50 %s; max %s' "$n" "$r" "$verdict" \
            "$(ratio "$(med "$n,halley,latency" p50_us)" "$(med "$n,nchan,latency" p50_us)")" \
            "$(ratio "$(med "$n,halley,latency" max_us)" "$(med "$n,nchan,latency" max_us)")")")
    fi
    if [[ -n ${results[$n,halley,capacity]:-} && -n ${results[$n,nchan,capacity]:-} ]]; then
        r=$(ratio "$(med "$n,halley,capacity" deliveries_per_sec)" "$(med "$n,nchan,capacity" deliveries_per_sec)")
        verdict="met"
        if [[ $r == "?" ]] || gt 2 "$r"; then verdict="MISSED"; goals_missed=$((goals_missed + 1)); fi
        [[ ${notes[$n,halley,capacity]:-} == *client-bound* ]] && verdict+=", halley run client-bound: a lower bound"
        ratio_lines+=("$(printf '%-6s capacity deliveries/s halley/nchan: %s (goal >= 2: %s); per server CPU-second: %s' "$n" "$r" "$verdict" \
            "$(ratio "$(med "$n,halley,capacity" deliveries_per_server_cpu_s)" "$(med "$n,nchan,capacity" deliveries_per_server_cpu_s)")")")
    fi
done
if ((${#ratio_lines[@]})); then
    echo
    echo "ratios:"
    printf '%s\n' "${ratio_lines[@]}"
fi
echo
if ((client_bound > 0)); then
    echo "note: $client_bound capacity run(s) client-bound: the tool's core was the limit, the server had CPU to spare"
    echo "      (try READ_INTERVAL_US=2000 and a larger WINDOW, or compare deliveries per server CPU-second)"
fi
if ((disturbed > 0)); then
    echo "note: $disturbed phase(s) disturbed: another process used a benchmark core (rerun when the machine is quiet)"
fi
if ((failures > 0)); then
    echo "$NAME: $failures tool run(s) failed (see above)" >&2
    exit 1
fi
if ((goals_missed > 0)) && [[ -n ${ENFORCE_GOALS:-} ]]; then
    echo "$NAME: $goals_missed goal(s) missed (ENFORCE_GOALS is set)" >&2
    exit 1
fi
echo "$NAME: every run complete: every subscriber received every message"
