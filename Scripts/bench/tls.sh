#!/usr/bin/env bash
# TLS cost: wss echo as a ratio of ws echo, and full TLS handshakes per second (issue 7).
#
# One halley (--threads 1, plain --port and a --tls-port, pinned to SERVER_CPU) and the load
# tool halley-wsbench (pinned to CLIENT_CPU):
#   1. echo: for each size in SIZES, RUNS runs alternating ws (plain port) and wss (TLS port),
#      CONNS connections, closed loop (each connection sends one message, waits for its
#      echo). Medians of msgs/s and msgs per server CPU-second (utime + stime of halley from
#      /proc/PID/stat over the window), and the ratios wss/ws.
#   2. handshakes: `halley-wsbench --handshakes`: HS_CONNS handshakes in flight, each a full
#      one (new SSL, no session cache, no resumption, no TLS 1.2 ticket asked for), then
#      close_notify, and the server closes. Handshakes/s and per server CPU-second, for an
#      RSA-2048 and an ECDSA P-256 certificate (CERTS), against halley and (NGINX=1) against
#      nginx (Debian nginx, one worker on the same core, same certificate, TLS 1.2-1.3, the
#      same TLS 1.2 cipher list as halley, ssl_session_tickets off), alternating, with the
#      ratio halley/nginx.
# Certificates are made for the run with the openssl CLI. The client is OpenSSL 3 too: a full
# handshake costs the client about as much CPU as the server (more with ECDSA, whose verify
# costs more than its sign), so with one client core the handshake rate is often bound by the
# tool or by both cores: each run says which (server / tool CPU %), and handshakes per server
# CPU-second is the figure that does not depend on the tool.
#
# Usage: Scripts/bench/tls.sh
# Environment:
#   DURATION=10  RUNS=3  WARMUP=1   seconds per window, runs per case, warm-up seconds
#   SIZES="32 4096"  CONNS=100      echo message sizes and connections
#   HS_CONNS=16                     handshakes in flight
#   CERTS="rsa2048 ecdsa-p256"      certificates for the handshake runs
#   NGINX=1                         also measure nginx's handshake rate (0: halley only)
#   ECHO=1 HANDSHAKES=1             run either part (0: skip)
#   SERVER_CPU=0 CLIENT_CPU=1       cores
#   HALLEY_BIN, BENCH_BIN           binaries (default: built here into .build-tlsbench)
#   NO_BUILD=1                      do not build
#   WAIT_QUIET=300                  wait up to this many seconds for the other core users
#                                   (other benchmarks) to finish before measuring
#   QUIET_EACH=30                   and up to this many before each run
#   KEEP_TMP=1                      keep the temporary directory
#
# Exits non-zero if a server fails to start or dies, a tool run fails (a connection did not
# open, a wrong or missing echo, a failed or resumed handshake), or halley's counters
# disagree with the tool's.
set -euo pipefail

DURATION=${DURATION:-10}
RUNS=${RUNS:-3}
WARMUP=${WARMUP:-1}
SIZES=${SIZES:-"32 4096"}
CONNS=${CONNS:-100}
HS_CONNS=${HS_CONNS:-16}
CERTS=${CERTS:-"rsa2048 ecdsa-p256"}
NGINX=${NGINX:-1}
ECHO=${ECHO:-1}
HANDSHAKES=${HANDSHAKES:-1}
SERVER_CPU=${SERVER_CPU:-0}
CLIENT_CPU=${CLIENT_CPU:-1}
WAIT_QUIET=${WAIT_QUIET:-300}
NGINX_BIN=${NGINX_BIN:-nginx}

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)

die() { echo "tls: error: $*" >&2; exit 1; }
log() { echo "==> $*"; }

for t in openssl taskset curl timeout awk python3; do
    command -v "$t" >/dev/null || die "$t not found (apt-get install -y openssl util-linux curl python3)"
done
if [[ $NGINX == 1 ]] && ! command -v "$NGINX_BIN" >/dev/null; then
    echo "warning: $NGINX_BIN not found (apt-get install -y nginx): no nginx comparison"
    NGINX=0
fi
ncpu=$(nproc)
((SERVER_CPU < ncpu && CLIENT_CPU < ncpu)) || die "need cores $SERVER_CPU and $CLIENT_CPU; this machine has $ncpu"
[[ $SERVER_CPU != "$CLIENT_CPU" ]] || die "SERVER_CPU and CLIENT_CPU must differ"

# ---- build --------------------------------------------------------------------------------

build() { # product
    local attempt
    for attempt in 1 2 3; do
        if (cd "$repo" && swift build -c release --scratch-path .build-tlsbench --product "$1" >"$tmp/build.$1.log" 2>&1); then
            return 0
        fi
        # Someone may be in the middle of an edit: wait and retry.
        echo "build of $1 failed (attempt $attempt):" >&2
        grep -m 5 'error:' "$tmp/build.$1.log" >&2 || tail -n 5 "$tmp/build.$1.log" >&2
        ((attempt < 3)) && sleep 60
    done
    die "swift build --product $1 failed 3 times"
}

tmp=$(mktemp -d /tmp/halley-bench-tls.XXXXXX)
halley_pid=""
nginx_pid=""
tool_pid=""
BENCH_NAME=tls
# shellcheck source=lib.sh
source "$here/lib.sh"
cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    stop_pid "$tool_pid" halley-wsbench
    stop_pid "$halley_pid" halley
    stop_pid "$nginx_pid" nginx
    if [[ -n ${KEEP_TMP:-} ]]; then echo "tls: kept $tmp" >&2; else rm -rf "$tmp"; fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

if [[ -z ${NO_BUILD:-} && ( -z ${HALLEY_BIN:-} || -z ${BENCH_BIN:-} ) ]]; then
    log "building: swift build -c release --scratch-path .build-tlsbench --product halley (then halley-wsbench)"
    build halley
    build halley-wsbench
fi
HALLEY_BIN=${HALLEY_BIN:-$repo/.build-tlsbench/release/halley}
BENCH_BIN=${BENCH_BIN:-$repo/.build-tlsbench/release/halley-wsbench}
[[ -x $HALLEY_BIN ]] || die "no halley binary at $HALLEY_BIN"
[[ -x $BENCH_BIN ]] || die "no load tool at $BENCH_BIN"

# ---- certificates -------------------------------------------------------------------------

log "certificates (openssl $(openssl version | cut -d' ' -f2))"
subj=(-subj /CN=127.0.0.1 -addext subjectAltName=IP:127.0.0.1 -days 2 -nodes)
openssl req -x509 -newkey rsa:2048 -keyout "$tmp/rsa2048.key" -out "$tmp/rsa2048.crt" "${subj[@]}" 2>"$tmp/openssl.log" \
    || { cat "$tmp/openssl.log" >&2; die "openssl req (RSA) failed"; }
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -keyout "$tmp/ecdsa-p256.key" -out "$tmp/ecdsa-p256.crt" \
    "${subj[@]}" 2>"$tmp/openssl.log" || { cat "$tmp/openssl.log" >&2; die "openssl req (ECDSA) failed"; }
for c in $CERTS; do [[ -f $tmp/$c.crt ]] || die "CERTS: unknown certificate '$c' (rsa2048, ecdsa-p256)"; done
echo "rsa2048: RSA-2048 (signs with RSA-PSS); ecdsa-p256: ECDSA P-256; self-signed, CN and IP 127.0.0.1"

# ---- environment and a quiet machine ------------------------------------------------------

git_rev=$(git -C "$repo" rev-parse --short HEAD 2>/dev/null || echo '?')
log "environment"
echo "host:    $(uname -srm), $ncpu cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//'))"
echo "halley:  $HALLEY_BIN (git $git_rev$(git -C "$repo" diff --quiet -- Sources ':!Sources/HalleyWSBench' 2>/dev/null || echo ', Sources modified'))"
echo "tool:    $BENCH_BIN"
echo "openssl: $(openssl version)"
[[ $NGINX == 1 ]] && echo "nginx:   $("$NGINX_BIN" -v 2>&1 | sed 's/^nginx version: //')"

# busy_pct: % of all cores busy over one second.
busy_pct() {
    local a
    a=$(awk '$1 == "cpu" {t = 0; for (i = 2; i <= NF; i++) t += $i; print t, $5 + $6}' /proc/stat)
    sleep 1
    awk -v a="$a" '$1 == "cpu" {t = 0; for (i = 2; i <= NF; i++) t += $i; split(a, x, " ");
        printf "%.0f", 100 * ((t - x[1]) - ($5 + $6 - x[2])) / (t - x[1])}' /proc/stat
}
waited=0
busy=$(busy_pct)
while ((busy > 10 && waited < WAIT_QUIET)); do
    ((waited == 0)) && { echo "the cores are ${busy}% busy (another benchmark?); waiting up to ${WAIT_QUIET}s for quiet. Busiest:";
        top -b -n 1 -w 200 2>/dev/null | sed -n '8,$p' | awk '$9 > 0' | head -n 4 | cut -c1-150 || true; }
    sleep 4
    waited=$((waited + 5))
    busy=$(busy_pct)
done
echo "busy:    ${busy}% of all cores in the second before the benchmark (waited ${waited}s)"
((busy > 10)) && echo "warning: the machine is not quiet: the numbers will be disturbed (ratios of alternating runs hold up better)"

# ---- servers ------------------------------------------------------------------------------

halley_port=""
halley_tls_port=""
metrics_port=""
start_halley() { # cert
    local cert=$1
    local cmd=(taskset -c "$SERVER_CPU" "$HALLEY_BIN" --max-connections-per-address 0 --session-opens-per-second 0 --max-lingering-per-address 0 --threads 1 --port 0 --tls-port 0 --tls-cert "$tmp/$cert.crt"
               --tls-key "$tmp/$cert.key" --log-level warning --shutdown-grace 1 --metrics-port 0)
    log "halley: ${cmd[*]}"
    local unset_env=() v
    for v in $(compgen -e); do [[ $v == HALLEY_* ]] && unset_env+=(-u "$v"); done
    env "${unset_env[@]}" "${cmd[@]}" 2>"$tmp/halley.$cert.log" &
    halley_pid=$!
    local i line=""
    for ((i = 0; i < 100; i++)); do
        line=$(grep -m1 'halley listening on' "$tmp/halley.$cert.log" || true)
        [[ -n $line ]] && break
        kill -0 "$halley_pid" 2>/dev/null || { cat "$tmp/halley.$cert.log" >&2; die "halley exited on start"; }
        sleep 0.1
    done
    [[ -n $line ]] || { cat "$tmp/halley.$cert.log" >&2; die "halley did not log its ports within 10 s"; }
    halley_port=$(sed -n 's/.*halley listening on http:\/\/127\.0\.0\.1:\([0-9]*\).*/\1/p' <<<"$line")
    halley_tls_port=$(sed -n 's/.*https on https:\/\/127\.0\.0\.1:\([0-9]*\).*/\1/p' <<<"$line")
    metrics_port=$(sed -n 's/.*metrics on http:\/\/[0-9.]*:\([0-9]*\)\/metrics.*/\1/p' <<<"$line")
    [[ -n $halley_port && -n $halley_tls_port && -n $metrics_port ]] || die "cannot read the ports from: $line"
    echo "halley pid $halley_pid: ws port $halley_port, TLS port $halley_tls_port ($cert), metrics port $metrics_port"
}

declare -A nginx_port
nginx_worker=""
start_nginx() {
    local conf=$tmp/nginx.conf user_line="" attempt i c ok
    [[ $(id -u) == 0 ]] && user_line="user root;"  # else the workers would run as nobody
    mkdir -p "$tmp/www"
    echo ok >"$tmp/www/index.html"
    for attempt in 1 2 3; do
        {
            echo "$user_line"
            echo "worker_processes 1; pid $tmp/nginx.pid; error_log $tmp/nginx-error.log warn;"
            echo "events { worker_connections 4096; use epoll; multi_accept on; }"
            echo "http {"
            echo "  access_log off; client_body_temp_path $tmp/cb; proxy_temp_path $tmp/px;"
            echo "  fastcgi_temp_path $tmp/fc; uwsgi_temp_path $tmp/uw; scgi_temp_path $tmp/sc;"
            echo "  ssl_protocols TLSv1.2 TLSv1.3; ssl_prefer_server_ciphers on; ssl_session_tickets off;"
            # halley's TLS 1.2 list (TLSContext.swift); TLS 1.3 suites are OpenSSL's defaults on both.
            echo "  ssl_ciphers ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305;"
            for c in $CERTS; do
                nginx_port[$c]=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
                echo "  server { listen 127.0.0.1:${nginx_port[$c]} ssl backlog=8192; root $tmp/www;"
                echo "           ssl_certificate $tmp/$c.crt; ssl_certificate_key $tmp/$c.key; }"
            done
            echo "}"
        } >"$conf"
        local cmd=(taskset -c "$SERVER_CPU" "$NGINX_BIN" -p "$tmp" -c "$conf" -g "daemon off;")
        log "nginx: ${cmd[*]}"
        "${cmd[@]}" >"$tmp/nginx.out" 2>&1 &
        nginx_pid=$!
        for ((i = 0; i < 100; i++)); do
            ok=1
            for c in $CERTS; do
                [[ $(curl -sk -o /dev/null -w '%{http_code}' --max-time 2 "https://127.0.0.1:${nginx_port[$c]}/" || true) == 200 ]] || ok=0
            done
            ((ok)) && break
            kill -0 "$nginx_pid" 2>/dev/null || break
            sleep 0.1
        done
        if ((ok)) && kill -0 "$nginx_pid" 2>/dev/null; then
            nginx_worker=$(pgrep -P "$nginx_pid" | head -n 1)
            [[ -n $nginx_worker ]] || die "no nginx worker process under pid $nginx_pid"
            echo "nginx master pid $nginx_pid, worker pid $nginx_worker, ports: $(for c in $CERTS; do printf '%s %s ' "$c" "${nginx_port[$c]}"; done)"
            return 0
        fi
        stop_pid "$nginx_pid" nginx
        nginx_pid=""
        grep -q "Address already in use" "$tmp/nginx.out" "$tmp/nginx-error.log" 2>/dev/null \
            || { cat "$tmp/nginx.out" "$tmp/nginx-error.log" >&2 2>/dev/null || true; die "nginx did not start"; }
    done
    die "nginx could not bind free ports in 3 attempts"
}

halley_metrics() { # "upgrades in out protocol_errors backpressure"
    curl -sS --max-time 5 "http://127.0.0.1:$metrics_port/metrics" | awk '
        /^halley_websocket_upgrades_total / {up = $2}
        /^halley_websocket_messages_total\{direction="in"\}/ {in_ = $2}
        /^halley_websocket_messages_total\{direction="out"\}/ {out = $2}
        /^halley_websocket_protocol_errors_total / {pe = $2}
        /^halley_websocket_backpressure_total / {bp = $2}
        END {print up + 0, in_ + 0, out + 0, pe + 0, bp + 0}'
}

# ---- runs ---------------------------------------------------------------------------------

field() { sed -n "s/.* $1=\([^ ]*\).*/\1/p; s/^$1=\([^ ]*\).*/\1/p" <<<"$2" | head -n 1; }
median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{v[NR] = $1} END {if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2}'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {if (b > 0) printf "%.2f", a / b; else print "-"}'; }
# bound SERVER_PCT TOOL_PCT [CORE_BUSY]: what set the pace of a run. CORE_BUSY is the tool's
# core_busy_pct ("0:93,1:88"): when a core was busier than its process by more than 30 points
# (loopback's softirq work alone is 10-20), something else ran there: "disturbed".
bound() {
    local b0 b1
    b0=$(sed -n "s/.*\(^\|,\)$SERVER_CPU:\([0-9]*\).*/\2/p" <<<"${3:-}")
    b1=$(sed -n "s/.*\(^\|,\)$CLIENT_CPU:\([0-9]*\).*/\2/p" <<<"${3:-}")
    awk -v s="$1" -v c="$2" -v b0="${b0:-0}" -v b1="${b1:-0}" 'BEGIN {
        if (s >= 85 && c >= 85) print "both"; else if (s >= 85) print "server";
        else if (c >= 85) print "tool"; else if (b0 - s > 30 || b1 - c > 30) print "disturbed";
        else print "neither?" }'
}

# quiet: before a run, wait up to QUIET_EACH seconds for the cores to be under 10% busy.
QUIET_EACH=${QUIET_EACH:-30}
quiet() {
    local t=0 b
    b=$(busy_pct)
    while ((b > 10 && t < QUIET_EACH)); do sleep 1; t=$((t + 2)); b=$(busy_pct); done
    ((t > 0)) && echo "  (waited ${t}s for other work to stop; cores ${b}% busy)"
    return 0
}

LINE=""
run_tool() { # label pid-args... -- tool-args...
    local label=$1; shift
    local out=$tmp/tool.$label.txt
    local cmd=(taskset -c "$CLIENT_CPU" "$BENCH_BIN" "$@" --duration "$DURATION" --warmup "$WARMUP")
    echo "${cmd[*]}" >"$out"
    quiet
    timeout -k 5 "$(awk -v d="$DURATION" -v w="$WARMUP" 'BEGIN {printf "%d", d + w + 60}')" "${cmd[@]}" >"$out.stdout" 2>>"$out" &
    tool_pid=$!
    local rc=0
    wait "$tool_pid" || rc=$?
    tool_pid=""
    cat "$out.stdout" >>"$out"
    LINE=$(grep -m1 -E '^(messages|handshakes)=' "$out.stdout" || true)
    if ((rc != 0)) || [[ -z $LINE ]]; then
        cat "$out" >&2
        die "halley-wsbench failed ($label, exit $rc)"
    fi
}

declare -A rate cpu_rate scpu ccpu
tool_conns=0 tool_sent=0 tool_echoes=0
count_echo() {
    tool_conns=$((tool_conns + $1))
    tool_sent=$((tool_sent + $(field sent "$LINE")))
    tool_echoes=$((tool_echoes + $(field echoes "$LINE")))
}

cert0=$(awk '{print $1}' <<<"$CERTS")
if [[ $ECHO == 1 ]]; then
    start_halley "$cert0"
    read -r m0_up m0_in m0_out m0_pe m0_bp <<<"$(halley_metrics)" || die "cannot read halley's /metrics"
    log "checking wss echoes: text and binary, 3 B to 300,000 B"
    for flag in "" --binary; do
        for size in 3 125 126 4096 65536 300000; do
            out=$tmp/check.$size${flag:+.binary}.txt
            if ! "$BENCH_BIN" --url "wss://127.0.0.1:$halley_tls_port/echo" --connections 4 --size "$size" \
                    --duration 0.3 --warmup 0 $flag >"$out" 2>&1; then
                cat "$out" >&2
                die "wss echo check failed ($size B${flag:+ binary})"
            fi
            LINE=$(grep -m1 '^messages=' "$out")
            count_echo 4
        done
    done
    echo "wss: every echo right (length and content), every connection closed with 1000 ($(grep -m1 'TLS:' "$out" | sed 's/.*TLS: //'))"

    echo
    log "echo: $RUNS x ${DURATION}s (after ${WARMUP}s) per case, ws and wss alternating; $CONNS connections; tool on core $CLIENT_CPU, halley on core $SERVER_CPU"
    echo "each run: taskset -c $CLIENT_CPU $BENCH_BIN --url ws[s]://127.0.0.1:PORT/echo --connections $CONNS --size S --duration $DURATION --warmup $WARMUP --server-pid $halley_pid"
    for size in $SIZES; do
        for ((i = 1; i <= RUNS; i++)); do
            for scheme in ws wss; do
                port=$halley_port
                [[ $scheme == wss ]] && port=$halley_tls_port
                run_tool "$scheme.$size.$i" --url "$scheme://127.0.0.1:$port/echo" --connections "$CONNS" --size "$size" \
                    --server-pid "$halley_pid"
                count_echo "$CONNS"
                kill -0 "$halley_pid" 2>/dev/null || die "halley died"
                k=$scheme,$size
                r=$(field msgs_per_sec "$LINE"); mc=$(field msgs_per_server_cpu_s "$LINE")
                sp=$(field server_cpu_pct "$LINE"); cp=$(field client_cpu_pct "$LINE")
                rate[$k]="${rate[$k]:-} $r"; cpu_rate[$k]="${cpu_rate[$k]:-} $mc"
                scpu[$k]="${scpu[$k]:-} $sp"; ccpu[$k]="${ccpu[$k]:-} $cp"
                printf '  %-4s %5s B run %d: %9.0f msg/s %9.0f msg/server-CPU-s  p50 %5s us  halley %5s%% cpu, tool %5s%% cpu, cores %s [%s]\n' \
                    "$scheme" "$size" "$i" "$r" "$mc" "$(field p50_us "$LINE")" "$sp" "$cp" "$(field core_busy_pct "$LINE")" "$(bound "$sp" "$cp" "$(field core_busy_pct "$LINE")")"
            done
        done
    done
    read -r m1_up m1_in m1_out m1_pe m1_bp <<<"$(halley_metrics)" || die "cannot read halley's /metrics"
    echo "halley /metrics: upgrades $((m1_up - m0_up)) (tool: $tool_conns), in $((m1_in - m0_in)) (tool sent $tool_sent), out $((m1_out - m0_out)) (tool got $tool_echoes), protocol errors $((m1_pe - m0_pe)), backpressure $((m1_bp - m0_bp))"
    if ((m1_up - m0_up != tool_conns || m1_in - m0_in != tool_sent || m1_out - m0_out != tool_echoes || m1_pe - m0_pe > 0)); then
        die "halley's counters disagree with the tool's"
    fi
    stop_pid "$halley_pid" halley
    halley_pid=""
fi

declare -A hs hs_cpu hs_scpu hs_ccpu hs_tickets hs_tls
if [[ $HANDSHAKES == 1 ]]; then
    [[ $NGINX == 1 ]] && start_nginx
    servers=halley
    [[ $NGINX == 1 ]] && servers="halley nginx"
    echo
    log "handshakes: $RUNS x ${DURATION}s (after ${WARMUP}s) per certificate and server, alternating; $HS_CONNS in flight; full handshakes, close_notify, the server closes"
    echo "each run: taskset -c $CLIENT_CPU $BENCH_BIN --handshakes --url https://127.0.0.1:PORT/ --connections $HS_CONNS --duration $DURATION --warmup $WARMUP --server-pid PID"
    for cert in $CERTS; do
        start_halley "$cert"
        for ((i = 1; i <= RUNS; i++)); do
            for srv in $servers; do
                if [[ $srv == halley ]]; then
                    pids=(--server-pid "$halley_pid"); port=$halley_tls_port
                else
                    pids=(--server-pid "$nginx_pid" --server-pid "$nginx_worker"); port=${nginx_port[$cert]}
                fi
                run_tool "hs.$srv.$cert.$i" --handshakes --url "https://127.0.0.1:$port/" --connections "$HS_CONNS" "${pids[@]}"
                kill -0 "$halley_pid" 2>/dev/null || die "halley died"
                [[ $srv == nginx ]] && { kill -0 "$nginx_pid" 2>/dev/null || die "nginx died"; }
                k=$srv,$cert
                r=$(field handshakes_per_sec "$LINE"); hc=$(field handshakes_per_server_cpu_s "$LINE")
                sp=$(field server_cpu_pct "$LINE"); cp=$(field client_cpu_pct "$LINE")
                tk=$(awk -v t="$(field tickets_received "$LINE")" -v h="$(field total_handshakes "$LINE")" 'BEGIN {printf "%.1f", (h > 0 ? t / h : 0)}')
                hs[$k]="${hs[$k]:-} $r"; hs_cpu[$k]="${hs_cpu[$k]:-} $hc"
                hs_scpu[$k]="${hs_scpu[$k]:-} $sp"; hs_ccpu[$k]="${hs_ccpu[$k]:-} $cp"
                hs_tickets[$k]=$tk; hs_tls[$k]=$(field tls "$LINE")
                printf '  %-6s %-10s run %d: %7.0f handshakes/s %7.0f per server-CPU-s  p50 %6s us  server %5s%% cpu, tool %5s%% cpu, cores %s [%s]\n' \
                    "$srv" "$cert" "$i" "$r" "$hc" "$(field p50_us "$LINE")" "$sp" "$cp" "$(field core_busy_pct "$LINE")" "$(bound "$sp" "$cp" "$(field core_busy_pct "$LINE")")"
            done
        done
        for srv in $servers; do echo "  $srv $cert: ${hs_tls[$srv,$cert]}, ${hs_tickets[$srv,$cert]} tickets/sessions sent per handshake"; done
        stop_pid "$halley_pid" halley
        halley_pid=""
    done
fi

log "halley logs (beyond the start lines)"
cat "$tmp"/halley.*.log | grep -v -e 'halley listening on' -e 'development app' -e 'not a directory: static files are off' \
    -e 'SIGTERM: stopping' -e 'halley stopped' || echo "  (nothing)"

# ---- summary ------------------------------------------------------------------------------

echo
echo "=== summary ($(date -u +%Y-%m-%dT%H:%MZ); git $git_rev, halley built $(date -u -r "$HALLEY_BIN" +%H:%MZ); $(openssl version | cut -d' ' -f1-2)) ==="
echo "medians of $RUNS x ${DURATION}s; halley --threads 1 on core $SERVER_CPU, halley-wsbench on core $CLIENT_CPU; [bound]: which side was >= 85% of its core (median CPU %)"
echo "runs marked [disturbed] above had other work on a core: trust their per-server-CPU-second figures more than their rates"
if [[ $ECHO == 1 ]]; then
    echo "echo, $CONNS connections:"
    printf '  %6s  %9s %9s %6s  %12s %12s %6s  %s\n' size "ws msg/s" "wss msg/s" wss/ws "ws /CPU-s" "wss /CPU-s" wss/ws "cpu% halley, tool (ws | wss)"
    for size in $SIZES; do
        wr=$(median <<<"${rate[ws,$size]}"); sr=$(median <<<"${rate[wss,$size]}")
        wc=$(median <<<"${cpu_rate[ws,$size]}"); sc=$(median <<<"${cpu_rate[wss,$size]}")
        ws_s=$(median <<<"${scpu[ws,$size]}"); ws_c=$(median <<<"${ccpu[ws,$size]}")
        wss_s=$(median <<<"${scpu[wss,$size]}"); wss_c=$(median <<<"${ccpu[wss,$size]}")
        printf '  %6s  %9.0f %9.0f %6s  %12.0f %12.0f %6s  %s, %s [%s] | %s, %s [%s]\n' "$size" "$wr" "$sr" "$(ratio "$sr" "$wr")" \
            "$wc" "$sc" "$(ratio "$sc" "$wc")" "$ws_s" "$ws_c" "$(bound "$ws_s" "$ws_c")" "$wss_s" "$wss_c" "$(bound "$wss_s" "$wss_c")"
    done
fi
if [[ $HANDSHAKES == 1 ]]; then
    echo "full TLS handshakes, $HS_CONNS in flight:"
    printf '  %-10s %-6s  %12s %16s  %s\n' cert server "handshakes/s" "per server CPU-s" "cpu% server, tool"
    for cert in $CERTS; do
        for srv in $servers; do
            k=$srv,$cert
            s=$(median <<<"${hs_scpu[$k]}"); c=$(median <<<"${hs_ccpu[$k]}")
            printf '  %-10s %-6s  %12.0f %16.0f  %s, %s [%s]\n' "$cert" "$srv" "$(median <<<"${hs[$k]}")" "$(median <<<"${hs_cpu[$k]}")" "$s" "$c" "$(bound "$s" "$c")"
        done
        if [[ $NGINX == 1 ]]; then
            printf '  %-10s %-6s  %12s %16s\n' "$cert" "ratio" \
                "$(ratio "$(median <<<"${hs[halley,$cert]}")" "$(median <<<"${hs[nginx,$cert]}")")" \
                "$(ratio "$(median <<<"${hs_cpu[halley,$cert]}")" "$(median <<<"${hs_cpu[nginx,$cert]}")")"
        fi
    done
fi
