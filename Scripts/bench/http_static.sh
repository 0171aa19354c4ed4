#!/usr/bin/env bash
# Static-file throughput: halley vs nginx, same files, same machine, one run.
#
# wrk (64 keep-alive connections, pinned to one core) fetches a small (60 B) and a 4 KiB
# static file from halley (--threads 1) and from nginx (1 worker), both serving the same
# temporary root and pinned to another core. Each server is measured RUNS times,
# alternating (halley, nginx, halley, nginx, ...); the summary gives the median
# requests/s of each and the ratio halley/nginx.
#
# Usage: Scripts/bench/http_static.sh
# Environment:
#   DURATION=10       seconds per measured wrk run
#   RUNS=3            measured runs per server and file
#   WARMUP=2          seconds of unmeasured wrk load per server and file before the runs
#   CONNECTIONS=64    wrk connections
#   SERVER_CPU=0      core for the servers      CLIENT_CPU=1   core for wrk
#   HALLEY_BIN=...    halley binary (default: build .build/release/halley first)
#   NO_BUILD=1        do not run `swift build -c release`
#   NGINX_BIN=nginx   WRK_BIN=wrk
#   KEEP_TMP=1        keep the temporary directory (configs, logs, raw wrk output)
#
# Each run's line also shows the server process's CPU use and how busy both cores were: a
# server under 85% of its core is flagged [disturbed?] (another process or the hypervisor took CPU;
# nginx's worker normally shows 91-97%, the rest of the core being softirq work).
# halley runs with --metrics-port, and its counters are checked after the runs: every wrk
# connection stayed open (no reconnects) and every response was 2xx.
#
# Exits non-zero if a server fails to start or dies, a response is wrong, any wrk run
# reports socket errors, non-2xx/3xx responses or no Requests/sec line, or halley's
# counters show reconnects or non-2xx responses.
set -euo pipefail

DURATION=${DURATION:-10}
RUNS=${RUNS:-3}
WARMUP=${WARMUP:-2}
CONNECTIONS=${CONNECTIONS:-64}
SERVER_CPU=${SERVER_CPU:-0}
CLIENT_CPU=${CLIENT_CPU:-1}
NGINX_BIN=${NGINX_BIN:-nginx}
WRK_BIN=${WRK_BIN:-wrk}

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)

die() { echo "http_static: error: $*" >&2; exit 1; }
log() { echo "==> $*"; }

for t in "$NGINX_BIN" "$WRK_BIN" taskset python3 curl timeout; do
    command -v "$t" >/dev/null || die "$t not found (apt-get install -y nginx-light wrk curl util-linux)"
done
ncpu=$(nproc)
((SERVER_CPU < ncpu && CLIENT_CPU < ncpu)) || die "need cores $SERVER_CPU and $CLIENT_CPU; this machine has $ncpu"
[[ $SERVER_CPU != "$CLIENT_CPU" ]] || die "SERVER_CPU and CLIENT_CPU must differ"

if [[ -z ${HALLEY_BIN:-} ]]; then
    if [[ -z ${NO_BUILD:-} ]]; then
        log "building: (cd $repo && swift build -c release)"
        (cd "$repo" && swift build -c release 2>&1 | tail -n 3) || die "swift build failed"
    fi
    HALLEY_BIN=$repo/.build/release/halley
fi
[[ -x $HALLEY_BIN ]] || die "no halley binary at $HALLEY_BIN"

tmp=$(mktemp -d /tmp/halley-bench-static.XXXXXX)
chmod 755 "$tmp"
halley_pid=""
nginx_pid=""
wrk_pid=""

BENCH_NAME=http_static
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    stop_pid "$wrk_pid" wrk
    stop_pid "$halley_pid" halley
    stop_pid "$nginx_pid" nginx
    if [[ -n ${KEEP_TMP:-} ]]; then
        echo "http_static: kept $tmp" >&2
    else
        rm -rf "$tmp"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

port_open() { # port
    python3 - "$1" <<'EOF'
import socket, sys
s = socket.socket()
s.settimeout(0.5)
try:
    s.connect(("127.0.0.1", int(sys.argv[1])))
except OSError:
    sys.exit(1)
EOF
}

# ---- the document root ----------------------------------------------------------------

root=$tmp/root
mkdir -p "$root"
python3 - "$root" <<'EOF'
import sys
root = sys.argv[1]
small = b"Halley static benchmark: a small file of sixty bytes."
open(root + "/small.txt", "wb").write(small.ljust(59, b".") + b"\n")            # 60 B
open(root + "/4k.txt", "wb").write((b"0123456789abcdef" * 3 + b"0123456789abcde\n") * 64)  # 4096 B
EOF
[[ $(stat -c %s "$root/small.txt") == 60 ]] || die "small.txt is not 60 bytes"
[[ $(stat -c %s "$root/4k.txt") == 4096 ]] || die "4k.txt is not 4096 bytes"
chmod 644 "$root"/*.txt
files=(small.txt 4k.txt)

# ---- versions -----------------------------------------------------------------------------

log "environment"
echo "host:    $(uname -srm), $ncpu cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//'))"
echo "halley:  $HALLEY_BIN (git $(git -C "$repo" rev-parse --short HEAD 2>/dev/null || echo '?')$(git -C "$repo" diff --quiet -- Sources 2>/dev/null || echo ', Sources modified'))"
echo "nginx:   $("$NGINX_BIN" -v 2>&1)"
echo "wrk:     $("$WRK_BIN" --version 2>&1 | head -n 1 || true)"
echo "python:  $(python3 --version 2>&1)"
echo "load:    $(cut -d' ' -f1-3 /proc/loadavg) (1, 5, 15 min)"
idle_before=$(awk '$1 == "cpu" {t = 0; for (i = 2; i <= NF; i++) t += $i; print t, $5 + $6}' /proc/stat)
sleep 1
busy_now=$(awk -v a="$idle_before" '$1 == "cpu" {t = 0; for (i = 2; i <= NF; i++) t += $i; split(a, x, " ");
    printf "%.0f", 100 * ((t - x[1]) - ($5 + $6 - x[2])) / (t - x[1])}' /proc/stat)
echo "busy:    ${busy_now}% of all cores in the second before the benchmark"
if ((busy_now > 5)); then
    echo "warning: something else is using the CPU; the numbers will be noisy. Busiest now:"
    top -b -n 1 -w 200 2>/dev/null | sed -n '8,$p' | awk '$9 > 0' | head -n 5 | cut -c1-160 || true
fi

# ---- halley -------------------------------------------------------------------------------

halley_port=""
metrics_port=""
start_halley() {
    local cmd=(taskset -c "$SERVER_CPU" "$HALLEY_BIN" --max-connections-per-address 0 --session-opens-per-second 0 --max-lingering-per-address 0 --port 0 --threads 1 --public "$root"
               --log-level info --shutdown-grace 1 --metrics-port 0)
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
    metrics_port=$(sed -n 's/.*metrics on http:\/\/[0-9.]*:\([0-9]*\)\/metrics.*/\1/p' "$tmp/halley.log" | head -n 1)
    [[ -n $metrics_port ]] || die "halley did not log its metrics port"
    echo "halley pid $halley_pid, port $halley_port, metrics port $metrics_port"
}

# halley_metrics: "accepted 2xx non2xx bad breaches" from halley's /metrics (the fetch itself
# is one more accepted connection; its response is counted after it is sent).
halley_metrics() {
    curl -sS --max-time 5 "http://127.0.0.1:$metrics_port/metrics" | awk '
        /^halley_connections_accepted_total / {acc = $2}
        /^halley_http_requests_total\{class="2xx"\}/ {ok = $2}
        /^halley_http_requests_total\{/ && !/class="2xx"/ {other += $2}
        /^halley_http_bad_requests_total / {bad = $2}
        /^halley_limit_breaches_total\{/ {br += $2}
        END {print acc + 0, ok + 0, other + 0, bad + 0, br + 0}'
}

# ---- nginx --------------------------------------------------------------------------------

nginx_port=""
start_nginx() {
    nginx_port=$(free_port)
    local ngx=$tmp/nginx
    mkdir -p "$ngx"
    local user_line=""
    # As root, nginx would switch its worker to `nobody`; run it as root so it reads the
    # root exactly like halley does. As another user the directive is not allowed.
    if [[ $(id -u) == 0 ]]; then user_line="user root;"; fi
    cat >"$ngx/nginx.conf" <<EOF
$user_line
worker_processes 1;
daemon off;
pid $ngx/nginx.pid;
error_log $ngx/error.log warn;
events {
    worker_connections 4096;
}
http {
    types { text/plain txt; text/html html; }
    default_type application/octet-stream;
    access_log off;
    sendfile on;
    tcp_nodelay on;
    open_file_cache max=1000 inactive=60s;
    open_file_cache_valid 60s;
    keepalive_requests 1000000000;
    keepalive_timeout 75s;
    client_body_temp_path $ngx/client_body;
    proxy_temp_path $ngx/proxy;
    fastcgi_temp_path $ngx/fastcgi;
    uwsgi_temp_path $ngx/uwsgi;
    scgi_temp_path $ngx/scgi;
    server {
        listen 127.0.0.1:$nginx_port;
        root $root;
        location / { }
    }
}
EOF
    local cmd=(taskset -c "$SERVER_CPU" "$NGINX_BIN" -p "$ngx/" -e "$ngx/error.log" -c "$ngx/nginx.conf")
    "$NGINX_BIN" -t -q -p "$ngx/" -e "$ngx/error.log" -c "$ngx/nginx.conf" || { cat "$ngx/nginx.conf" >&2; die "nginx -t failed"; }
    log "nginx: ${cmd[*]}"
    "${cmd[@]}" 2>>"$ngx/stderr.log" &
    nginx_pid=$!
    local i
    for ((i = 0; i < 100; i++)); do
        port_open "$nginx_port" && break
        kill -0 "$nginx_pid" 2>/dev/null || { cat "$ngx/error.log" "$ngx/stderr.log" >&2 || true; die "nginx exited on start"; }
        sleep 0.1
    done
    port_open "$nginx_port" || die "nginx is not listening on $nginx_port after 10 s"
    echo "nginx master pid $nginx_pid, port $nginx_port"
}

start_halley
start_nginx

# ---- sanity: both serve the same bytes ----------------------------------------------------

log "checking responses"
for f in "${files[@]}"; do
    for srv in halley nginx; do
        port_var=${srv}_port
        url=http://127.0.0.1:${!port_var}/$f
        code=$(curl -sS --max-time 5 -o "$tmp/check.body" -D "$tmp/check.head" -w '%{http_code}' "$url") \
            || die "curl $url failed"
        [[ $code == 200 ]] || die "$url: HTTP $code"
        cmp -s "$tmp/check.body" "$root/$f" || die "$url: body differs from $root/$f"
        printf '%-7s %-10s 200, body %s B, head %s B\n' "$srv" "$f" \
            "$(stat -c %s "$tmp/check.body")" "$(stat -c %s "$tmp/check.head")"
    done
done
echo "response heads (small.txt):"
for srv in halley nginx; do
    port_var=${srv}_port
    curl -sS --max-time 5 -o /dev/null -D - "http://127.0.0.1:${!port_var}/small.txt" | tr -d '\r' | sed "s/^/  $srv| /" | grep -v '| $' || true
done

# ---- runs ---------------------------------------------------------------------------------

failures=0
declare -A rps # [file,server] -> space-separated requests/s of the runs

# cpu_snap N: "total idle" jiffies of core N (idle includes iowait).
cpu_snap() {
    awk -v c="cpu$1" '$1 == c {t = 0; for (i = 2; i <= NF; i++) t += $i; print t, $5 + $6}' /proc/stat
}
# cpu_busy "before" "after": busy percentage between two cpu_snap outputs.
cpu_busy() {
    awk -v a="$1" -v b="$2" 'BEGIN {split(a, x, " "); split(b, y, " "); t = y[1] - x[1];
        printf "%.0f", (t > 0 ? 100 * (t - (y[2] - x[2])) / t : 0)}'
}

# proc_ticks PID: utime + stime of a process, in clock ticks.
proc_ticks() {
    local stat
    stat=$(<"/proc/$1/stat") || return 1
    stat=${stat##*) } # fields after the command name: state is $1, utime $12, stime $13
    awk '{print $12 + $13}' <<<"$stat"
}
CLK_TCK=$(getconf CLK_TCK)
# server_busy_pid server: the process doing the server's work (nginx: its one worker).
server_busy_pid() {
    if [[ $1 == halley ]]; then echo "$halley_pid"; return; fi
    cat /proc/"$nginx_pid"/task/*/children 2>/dev/null | tr ' ' '\n' | grep -m1 . || echo "$nginx_pid"
}

# run_wrk server file seconds label: sets RESULT to the Requests/sec; raw output in
# $tmp/wrk.<label>.txt. Returns non-zero when the run is unusable.
RESULT=""
CPU_NOTE=""
SERVER_PCT=0
disturbed=0
run_wrk() {
    local srv=$1 f=$2 secs=$3 label=$4 port_var=${1}_port
    local url=http://127.0.0.1:${!port_var}/$f
    local out=$tmp/wrk.$label.txt
    local cmd=(taskset -c "$CLIENT_CPU" "$WRK_BIN" -t1 -c"$CONNECTIONS" -d"${secs}s" --latency "$url")
    echo "${cmd[*]}" >"$out"
    local s0 c0 busy_pid p0 t0 t1
    busy_pid=$(server_busy_pid "$srv")
    p0=$(proc_ticks "$busy_pid")
    t0=$(date +%s%N)
    s0=$(cpu_snap "$SERVER_CPU"); c0=$(cpu_snap "$CLIENT_CPU")
    # In the background and waited for, so that a signal to this script is handled at once.
    timeout -k 5 $((secs + 30)) "${cmd[@]}" >>"$out" 2>&1 &
    wrk_pid=$!
    local rc=0
    wait "$wrk_pid" || rc=$?
    wrk_pid=""
    if ((rc != 0)); then
        echo "wrk failed ($label):" >&2; cat "$out" >&2
        return 1
    fi
    t1=$(date +%s%N)
    SERVER_PCT=$(awk -v d="$(( $(proc_ticks "$busy_pid") - p0 ))" -v hz="$CLK_TCK" -v ns="$((t1 - t0))" \
        'BEGIN {printf "%.0f", 100 * d / hz / (ns / 1e9)}')
    CPU_NOTE="$srv process ${SERVER_PCT}% cpu; core $SERVER_CPU $(cpu_busy "$s0" "$(cpu_snap "$SERVER_CPU")")%, core $CLIENT_CPU $(cpu_busy "$c0" "$(cpu_snap "$CLIENT_CPU")")% busy"
    echo "cpu: $CPU_NOTE" >>"$out"
    local pid_var=${srv}_pid
    kill -0 "${!pid_var}" 2>/dev/null || { echo "$srv died during $label" >&2; return 1; }
    local r errs non2xx
    if [[ $srv == halley ]]; then
        halley_wrk_runs=$((halley_wrk_runs + 1))
        halley_wrk_requests=$((halley_wrk_requests + $(awk '/ requests in / {print $1}' "$out")))
    fi
    r=$(awk '/^Requests\/sec:/ {print $2}' "$out")
    [[ -n $r ]] || { echo "no Requests/sec in wrk output ($label):" >&2; cat "$out" >&2; return 1; }
    errs=$(sed -n 's/.*Socket errors: *//p' "$out")
    non2xx=$(awk '/Non-2xx or 3xx responses:/ {print $NF}' "$out")
    if [[ -n $errs || -n $non2xx ]]; then
        echo "$label: socket errors: ${errs:-none}; non-2xx/3xx: ${non2xx:-0}" >&2
        failures=$((failures + 1))
    fi
    RESULT=$r
}

summary_line() { # label file -> "req/s  p50  p99"
    local out=$tmp/wrk.$1.txt
    local p50 p99 total
    p50=$(awk '$1 == "50%" {print $2}' "$out")
    p99=$(awk '$1 == "99%" {print $2}' "$out")
    total=$(sed -n 's/^ *\([0-9]* requests in [^,]*\), \(.*\) read$/\1, \2/p' "$out")
    printf 'p50 %-8s p99 %-8s %s (%s)' "$p50" "$p99" "$CPU_NOTE" "$total"
}

read -r m0_acc m0_ok m0_other m0_bad m0_br <<<"$(halley_metrics)" || die "cannot read halley's /metrics"
halley_wrk_runs=0
halley_wrk_requests=0

echo
log "wrk: ${WARMUP}s warm-up, then $RUNS x ${DURATION}s per server and file, alternating; wrk on core $CLIENT_CPU, servers on core $SERVER_CPU"
echo "each run: taskset -c $CLIENT_CPU $WRK_BIN -t1 -c$CONNECTIONS -d${DURATION}s --latency http://127.0.0.1:PORT/FILE"
for f in "${files[@]}"; do
    for srv in halley nginx; do
        if ((WARMUP > 0)); then run_wrk "$srv" "$f" "$WARMUP" "warmup.$srv.$f" || die "warm-up failed"; fi
    done
    for ((i = 1; i <= RUNS; i++)); do
        for srv in halley nginx; do
            label=$srv.$f.$i
            run_wrk "$srv" "$f" "$DURATION" "$label" || die "run $label failed"
            r=$RESULT
            if ((SERVER_PCT < 85)); then
                disturbed=$((disturbed + 1))
                label_note=" [disturbed?]"
            else
                label_note=""
            fi
            rps[$f,$srv]="${rps[$f,$srv]:-} $r"
            printf '  %-7s %-10s run %d: %12s req/s  %s%s\n' "$srv" "$f" "$i" "$r" "$(summary_line "$label")" "$label_note"
        done
    done
done

# ---- halley's own counters ----------------------------------------------------------------

read -r m1_acc m1_ok m1_other m1_bad m1_br <<<"$(halley_metrics)" || die "cannot read halley's /metrics"
acc=$((m1_acc - m0_acc - 1))
# wrk also opens (and closes) one test connection per run when it resolves the address.
expected_acc=$((halley_wrk_runs * (CONNECTIONS + 1)))
echo
log "halley /metrics over the wrk runs"
echo "connections accepted: $acc (wrk opened $expected_acc: $halley_wrk_runs runs x ($CONNECTIONS + 1 test connection))"
echo "2xx responses: $((m1_ok - m0_ok - 1)) (wrk counted $halley_wrk_requests; wrk does not count those in flight when it stops)"
echo "other responses: $((m1_other - m0_other)); bad requests: $((m1_bad - m0_bad)); limit breaches: $((m1_br - m0_br))"
if ((acc > expected_acc)); then
    echo "warning: halley accepted $((acc - expected_acc)) more connections than wrk opened: it closed keep-alive connections and wrk reconnected"
    failures=$((failures + 1))
fi
if ((m1_other - m0_other > 0 || m1_bad - m0_bad > 0 || m1_br - m0_br > 0)); then
    echo "warning: halley answered something other than 2xx"
    failures=$((failures + 1))
fi

# ---- the server logs ----------------------------------------------------------------------

echo
log "halley log (beyond the start line)"
grep -v 'halley listening on' "$tmp/halley.log" || echo "  (nothing)"
log "nginx error.log"
if [[ -s $tmp/nginx/error.log ]]; then cat "$tmp/nginx/error.log"; else echo "  (empty)"; fi

# ---- summary ------------------------------------------------------------------------------

median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{v[NR] = $1} END {if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2}'; }

echo
echo "=== summary ($(date -u +%Y-%m-%dT%H:%MZ); halley git $(git -C "$repo" rev-parse --short HEAD 2>/dev/null || echo '?'), $("$NGINX_BIN" -v 2>&1 | sed 's/.*: //')) ==="
echo "requests/s, median of $RUNS x ${DURATION}s; wrk -t1 -c$CONNECTIONS on core $CLIENT_CPU; server on core $SERVER_CPU"
printf '%-10s %6s  %14s  %14s  %12s\n' file bytes halley nginx halley/nginx
for f in "${files[@]}"; do
    mh=$(median <<<"${rps[$f,halley]}")
    mn=$(median <<<"${rps[$f,nginx]}")
    ratio=$(awk -v a="$mh" -v b="$mn" 'BEGIN {printf "%.3f", a / b}')
    printf '%-10s %6s  %14.0f  %14.0f  %12s\n' "$f" "$(stat -c %s "$root/$f")" "$mh" "$mn" "$ratio"
done
echo "runs (req/s, in order):"
for f in "${files[@]}"; do
    for srv in halley nginx; do
        printf '  %-10s %-7s %s\n' "$f" "$srv" "$(for v in ${rps[$f,$srv]}; do printf '%.0f ' "$v"; done)"
    done
done

if ((disturbed > 0)); then
    echo "note: in $disturbed run(s) the server process used under 85% of its core: other work on the"
    echo "      machine (or the hypervisor) took CPU, so those numbers are low; rerun when it is idle."
fi

if ((failures > 0)); then
    die "$failures problem(s): wrk socket errors, non-2xx/3xx responses or halley reconnects (see above)"
fi
