# What the shell benchmarks share; each sources it first. Servers run on SERVER_CPU (0), the
# load (halley-load, wrk) on CLIENT_CPU (1). Every process started here is stopped on exit.
# Environment of every script: SERVER_CPU, CLIENT_CPU, NO_BUILD=1 (use the binaries as they
# are), SCRATCH (swift build --scratch-path, default .build), HALLEY_BIN, LOAD_BIN, KEEP_TMP=1
# (keep the temporary directory: logs, configurations, raw output).
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
NAME=$(basename "$0" .sh)
SERVER_CPU=${SERVER_CPU:-0}
CLIENT_CPU=${CLIENT_CPU:-1}
SCRATCH=${SCRATCH:-$repo/.build}
HALLEY_BIN=${HALLEY_BIN:-$SCRATCH/release/halley}
LOAD_BIN=${LOAD_BIN:-$SCRATCH/release/halley-load}
NCHAN_MODULE=${NCHAN_MODULE:-/usr/lib/nginx/modules/ngx_nchan_module.so}
CLK_TCK=$(getconf CLK_TCK)

die() { echo "$NAME: error: $*" >&2; exit 1; }
log() { echo "==> $*"; }
need() { for t; do command -v "$t" >/dev/null || die "$t not found (Debian: apt-get install -y $t)"; done; }
need taskset curl awk
(( SERVER_CPU < $(nproc) && CLIENT_CPU < $(nproc) && SERVER_CPU != CLIENT_CPU )) ||
    die "need two different cores SERVER_CPU and CLIENT_CPU; this machine has $(nproc)"
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

tmp=$(mktemp -d "/tmp/halley-bench-$NAME.XXXXXX")
chmod 755 "$tmp"
pids=()
# Stops a process started here: SIGTERM, SIGKILL after 5 s.
stop_pid() {
    kill -TERM "$1" 2>/dev/null || return 0
    for _ in $(seq 50); do kill -0 "$1" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$1" 2>/dev/null && echo "$NAME: pid $1 ignored SIGTERM for 5 s: SIGKILL" >&2
    wait "$1" 2>/dev/null || true
}
cleanup() {
    local rc=$? k
    trap - EXIT INT TERM
    # Last started first: a server before the Redis it uses.
    for ((k = ${#pids[@]} - 1; k >= 0; k--)); do stop_pid "${pids[k]}"; done
    if [[ -n ${KEEP_TMP:-} ]]; then echo "$NAME: kept $tmp" >&2; else rm -rf "$tmp"; fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# build PRODUCT...: swift build -c release each (not with NO_BUILD).
build() {
    [[ -n ${NO_BUILD:-} ]] && return 0
    for p; do
        log "building: swift build -c release --product $p --scratch-path $SCRATCH"
        (cd "$repo" && swift build -c release --product "$p" --scratch-path "$SCRATCH" 2>&1 | tail -n 1) || die "build failed"
    done
}

# ticks PID: utime + stime in clock ticks. core N: "total idle" jiffies of core N ('': all).
# busy A B: the busy % between two `core`s. busy_now: % of all cores busy over one second.
ticks() { awk '{sub(/.*\) /, ""); print $12 + $13}' "/proc/$1/stat"; }
# split_ticks PID: its user and system CPU time apart ("utime stime", clock ticks).
split_ticks() { awk '{sub(/.*\) /, ""); print $12, $13}' "/proc/$1/stat"; }
core() { awk -v c="cpu$1" '$1 == c {t = 0; for (i = 2; i <= NF; i++) t += $i; print t, $5 + $6}' /proc/stat; }
busy() { awk -v a="$1" -v b="$2" 'BEGIN {split(a, x); split(b, y); t = y[1] - x[1]; printf "%.0f", t ? 100 - 100 * (y[2] - x[2]) / t : 0}'; }
busy_now() { local a; a=$(core ''); sleep 1; busy "$a" "$(core '')"; }
# quiet SECONDS: waits at most that long for the machine to be under 10% busy.
quiet() { local t=0; while ((t < $1)) && (($(busy_now) > 10)); do t=$((t + 1)); done; }

# The environment, and a warning when the machine is busy.
banner() {
    local b
    b=$(busy_now)
    echo "host:    $(uname -srm), $(nproc) cores; load $(cut -d' ' -f1-3 /proc/loadavg); ${b}% busy before the run"
    echo "halley:  $HALLEY_BIN (git $(git -C "$repo" rev-parse --short HEAD)$(git -C "$repo" diff --quiet HEAD -- Sources \
        || echo ', Sources modified'))"
    ((b <= 5)) || echo "warning: something else is using the CPU: compare the ratios of alternating runs"
}

# bg LOG CMD...: CMD in the background, pinned to the server core, without HALLEY_* variables
# (halley reads them as options); BG_PID.
bg() {
    local out=$1
    shift
    : >"$out"  # now, not in the background: a waiter must not read an earlier run's log
    env $(compgen -e | sed -n 's/^HALLEY_.*/-u &/p') taskset -c "$SERVER_CPU" "$@" >"$out" 2>&1 &
    BG_PID=$!
    pids+=("$BG_PID")
}

# until_up PID WHAT CMD...: waits (10 s) until CMD succeeds; dies if PID exits.
until_up() {
    local pid=$1 what=$2
    shift 2
    for _ in $(seq 100); do
        "$@" >/dev/null 2>&1 && return 0
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    die "$what did not start (logs in $tmp)"
}

# start_halley ARGS...: halley --threads 1 with the per-address limits off (every connection
# of a benchmark comes from 127.0.0.1), its log in HUB_LOG (default $tmp/halley.log). Sets
# HALLEY_PID, HALLEY_PORT, and TLS_PORT and METRICS_PORT when asked for.
start_halley() {
    local out=${HUB_LOG:-$tmp/halley.log} line
    bg "$out" "$HALLEY_BIN" --host 127.0.0.1 --port 0 --threads 1 --log-level warning --shutdown-grace 1 \
        --max-connections-per-address 0 --session-opens-per-second 0 --max-lingering-per-address 0 "$@"
    HALLEY_PID=$BG_PID
    until_up "$HALLEY_PID" halley grep -q 'halley listening on' "$out"
    line=$(grep -m1 'halley listening on' "$out")
    HALLEY_PORT=$(sed -n 's/.*listening on http:\/\/127\.0\.0\.1:\([0-9]*\).*/\1/p' <<<"$line")
    TLS_PORT=$(sed -n 's/.*https on https:\/\/127\.0\.0\.1:\([0-9]*\).*/\1/p' <<<"$line")
    METRICS_PORT=$(sed -n 's/.*metrics on http:\/\/[0-9.]*:\([0-9]*\).*/\1/p' <<<"$line")
    echo "halley pid $HALLEY_PID: $line"
}

free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

# start_nginx CONF URL: nginx (one worker) with the configuration file CONF (its directory the
# prefix), up when URL answers. Sets NGINX_PID (the master) and NGINX_WORKER.
start_nginx() {
    need nginx
    bg "$(dirname "$1")/nginx.out" nginx -p "$(dirname "$1")" -c "$1" -g 'daemon off;'
    NGINX_PID=$BG_PID
    until_up "$NGINX_PID" nginx curl -sk -o /dev/null --max-time 2 "$2"
    until_up "$NGINX_PID" "nginx's worker" pgrep -P "$NGINX_PID"
    NGINX_WORKER=$(pgrep -P "$NGINX_PID" | head -n 1)
    echo "nginx master pid $NGINX_PID, worker $NGINX_WORKER: $("$(command -v nginx)" -v 2>&1 | sed 's/.*: //')"
}

# start_nchan [DIR [REDIS_URL]]: nginx + Nchan from nchan/nginx.conf.in, its files (nchan.conf,
# error.log, pid, temporary directories) in DIR (default $tmp); with REDIS_URL its channels are
# in that Redis (nchan_use_redis). NCHAN_PORT (and NGINX_PID, NGINX_WORKER).
start_nchan() {
    [[ -f $NCHAN_MODULE ]] || die "no Nchan module at $NCHAN_MODULE (apt-get install -y libnginx-mod-nchan)"
    local dir=${1:-$tmp} redis=${2:+"nchan_redis_url \"$2\"; nchan_use_redis on;"} nofile
    nofile=$(ulimit -n)
    NCHAN_PORT=$(free_port)
    mkdir -p "$dir/logs"
    sed -e "s|@NCHAN_MODULE@|$NCHAN_MODULE|; s|@USER_LINE@|$([[ $(id -u) == 0 ]] && echo 'user root;')|" \
        -e "s|@NOFILE@|$nofile|; s|@TMP@|$dir|g; s|@WORKER_CONNECTIONS@|$((nofile - 100))|; s|@PORT@|$NCHAN_PORT|" \
        -e "s|@LP_MULTIPART@|${NCHAN_MULTIPART:-on}|; s|@REDIS@|$redis|" "$here/nchan/nginx.conf.in" >"$dir/nchan.conf"
    start_nginx "$dir/nchan.conf" "http://127.0.0.1:$NCHAN_PORT/pub/probe"
    echo "nchan: libnginx-mod-nchan $(dpkg-query -W -f '${Version}' libnginx-mod-nchan 2>/dev/null || echo '?'), port $NCHAN_PORT"
}

# start_node: Node's ws echo server (ws_echo_node.js); NODE_PID, NODE_PORT.
start_node() {
    need node
    bg "$tmp/node.log" node "$here/ws_echo_node.js" 0
    NODE_PID=$BG_PID
    until_up "$NODE_PID" node grep -q 'listening on' "$tmp/node.log"
    NODE_PORT=$(sed -n 's/.*listening on ws:\/\/127\.0\.0\.1:\([0-9]*\).*/\1/p' "$tmp/node.log")
    echo "node pid $NODE_PID: $(head -n 1 "$tmp/node.log")"
}

# start_uws: the uWebSockets peer (uws/server.cpp, built by uws/build.sh into UWS_BIN, default
# /tmp/halley-uws/uws-server) with the bearer token benchtoken; UWS_PID, UWS_PORT. have_uws:
# whether it is built.
UWS_BIN=${UWS_BIN:-/tmp/halley-uws/uws-server}
have_uws() { [[ -x $UWS_BIN ]]; }
start_uws() {
    have_uws || die "no uWebSockets server at $UWS_BIN (build it: Scripts/bench/uws/build.sh)"
    bg "$tmp/uws.log" "$UWS_BIN" 0 benchtoken
    UWS_PID=$BG_PID
    until_up "$UWS_PID" uws grep -q 'listening on' "$tmp/uws.log"
    UWS_PORT=$(sed -n 's/^listening on \([0-9]*\)$/\1/p' "$tmp/uws.log")
    echo "uws pid $UWS_PID: port $UWS_PORT ($UWS_BIN)"
}

# run_load LABEL ARGS...: halley-load on the client core; its output in $tmp/LABEL.out, its
# result lines in LINES. Dies when it fails.
run_load() {
    local label=$1 rc=0
    shift
    echo "taskset -c $CLIENT_CPU $LOAD_BIN $*" >"$tmp/$label.out"
    timeout -k 5 "$(awk -v d="${DURATION:-10}" 'BEGIN {printf "%d", 2 * d + 200}')" \
        taskset -c "$CLIENT_CPU" "$LOAD_BIN" "$@" >>"$tmp/$label.out" 2>&1 || rc=$?
    LINES=$(grep -E '^(messages|handshakes|phase)=' "$tmp/$label.out" || true)
    ((rc == 0)) && [[ -n $LINES ]] || { sed 's/^/  /' "$tmp/$label.out" >&2; die "$label: halley-load failed (exit $rc)"; }
}

# run_wrk LABEL PID ARGS...: wrk -t1 on the client core; LINE gets rps=, requests=, cpu_s= (of
# process PID over the run), per_cpu_s=, server_pct=, core_s=, core_c= (each core's busy %),
# p50=, p99=. Dies on socket errors or answers other than 2xx and 3xx.
run_wrk() {
    local label=$1 pid=$2 out=$tmp/$1.wrk p0 t0 s0 c0 u0 rc=0
    shift 2
    p0=$(ticks "$pid") u0=$(split_ticks "$pid") t0=$(date +%s%N) s0=$(core "$SERVER_CPU") c0=$(core "$CLIENT_CPU")
    timeout -k 5 120 taskset -c "$CLIENT_CPU" wrk -t1 --latency "$@" >"$out" 2>&1 || rc=$?
    ((rc == 0)) || { cat "$out" >&2; die "$label: wrk failed (exit $rc)"; }
    kill -0 "$pid" 2>/dev/null || die "the server died during $label"
    LINE=$(awk -v p="$(($(ticks "$pid") - p0))" -v hz="$CLK_TCK" -v ns="$(($(date +%s%N) - t0))" \
        -v cs="$(busy "$s0" "$(core "$SERVER_CPU")")" -v cc="$(busy "$c0" "$(core "$CLIENT_CPU")")" \
        -v u0="$u0" -v u1="$(split_ticks "$pid")" '
        / requests in / {n = $1} /^Requests\/sec:/ {r = $2} $1 == "50%" {p50 = $2} $1 == "99%" {p99 = $2}
        END {split(u0, a); split(u1, b)
             printf "rps=%s requests=%d cpu_s=%.2f per_cpu_s=%.0f server_pct=%.0f core_s=%s core_c=%s p50=%s p99=%s",
             r, n, p / hz, p ? n * hz / p : 0, 100 * p / hz / (ns / 1e9), cs, cc, p50, p99
             # Microseconds of user and of system time per request (the server process).
             printf " user_us=%.2f sys_us=%.2f", n ? (b[1] - a[1]) * 1e6 / hz / n : 0, n ? (b[2] - a[2]) * 1e6 / hz / n : 0}' "$out")
    ! grep -qE 'Socket errors|Non-2xx' "$out" || { cat "$out" >&2; die "$label: socket errors or non-2xx answers"; }
}

# Results: keep KEY LINE, then med KEY FIELD (the median over the kept lines), ratio A B.
declare -A results
keep() { results[$1]+="$2"$'\n'; }
field() { { grep -oE "(^| )$1=[^ ]*" <<<"$2" || true; } | head -n 1 | cut -d= -f2; }
med() {
    local l
    while IFS= read -r l; do [[ -z $l ]] || field "$2" "$l"; done <<<"${results[$1]:-}" | { grep -E '^[0-9.]+$' || true; } |
        sort -g | awk '{v[NR] = $1} END {if (NR) print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2; else print "?"}'
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {if (a == "?" || b == "?" || b + 0 == 0) print "?"; else printf "%.2f", a / b}'; }
ms() { awk -v v="$1" 'BEGIN {if (v == "?") print v; else printf "%.2f", v / 1000}'; }

# ws_metrics: "upgrades in out protocol_errors backpressure" from halley's /metrics.
ws_metrics() {
    curl -sS --max-time 5 "http://127.0.0.1:$METRICS_PORT/metrics" | awk '
        /^halley_websocket_upgrades_total / {u = $2} /^halley_websocket_messages_total\{direction="in"\}/ {i = $2}
        /^halley_websocket_messages_total\{direction="out"\}/ {o = $2} /^halley_websocket_protocol_errors_total / {e = $2}
        /^halley_websocket_backpressure_total / {b = $2} END {print u + 0, i + 0, o + 0, e + 0, b + 0}'
}

# make_cert NAME rsa|ec: a self-signed certificate for 127.0.0.1 in $tmp/NAME.crt, .key.
make_cert() {
    local key=(-newkey rsa:2048)
    [[ $2 == ec ]] && key=(-newkey ec -pkeyopt ec_paramgen_curve:P-256)
    openssl req -x509 "${key[@]}" -keyout "$tmp/$1.key" -out "$tmp/$1.crt" -subj /CN=127.0.0.1 \
        -addext subjectAltName=IP:127.0.0.1 -days 2 -nodes 2>"$tmp/openssl.log" || die "openssl req failed"
}
