#!/usr/bin/env bash
# Publish throughput of the Pusher HTTP API: signed `POST /apps/{id}/events` requests per
# second on halley, beside Nchan's `POST /pub/CHANNEL` (Debian nginx + libnginx-mod-nchan,
# unsigned) with the same data, same machine, one run.
#
# wrk (one thread, CONNECTIONS keep-alive connections, pinned to CLIENT_CPU) sends COUNT
# distinct pre-built requests in turn (Scripts/bench/api_publish.lua): for halley each is
# signed as the official SDKs sign (auth_key, auth_timestamp, auth_version 1.0, body_md5,
# auth_signature = HMAC-SHA256 over method, path and sorted query) by Scripts/bench/api_publish.py,
# with a timestamp taken right before each run (halley accepts 600 s), so halley checks a
# signature and an MD5 per request; the body is {"name":"e","channel":"bench","data":"..."}.
# Nchan gets the data itself as the body of `POST /pub/bench`. Servers are pinned to
# SERVER_CPU: halley --threads 1, nginx with one worker (Scripts/bench/nchan/nginx.conf.in).
#
# Cases (SUBS): 0 subscribers, and N WebSocket subscribers on the channel (halley: Pusher
# protocol 7, pusher:subscribe; Nchan: its WebSocket subscriber location), held by
# `api_publish.py hold`, a Python epoll reader pinned to CLIENT_CPU beside wrk that reads
# everything as it arrives and counts deliveries (bytes / the size of one delivered frame,
# measured on the sample publish). With subscribers every publish is N deliveries, so both
# servers are fan-out bound; the summary gives deliveries/s, the subscribers still connected
# after the run and the close codes of those the server closed (halley closes a subscriber
# whose 1 MiB buffer fills with 4100; Nchan buffers).
#
# Per server and case: a WARMUP s run, then RUNS runs of DURATION s, alternating servers.
# Before each run: fresh requests, a sample request that must answer 200 `{}` (halley) or 2xx
# (Nchan), and with subscribers a fresh set of them that must all receive that sample.
# Measured: requests/s (wrk), the server's CPU-seconds over the run (utime + stime from
# /proc/PID/stat; nginx: its worker), requests per server CPU-second, and how busy both
# cores were. The summary gives medians and the ratios halley/Nchan. The goal (issue 5):
# halley's publishes per server CPU-second at least Nchan's (ratio >= 1) in both cases.
#
# Usage: Scripts/bench/api_publish.sh
# Environment:
#   DURATION=10   RUNS=3   WARMUP=3   CONNECTIONS=32   SUBS="0 1000"
#   COUNT=1000    distinct requests    SIZE=64   data bytes per message
#   SERVERS="halley nchan"   SERVER_CPU=0   CLIENT_CPU=1
#   SCRATCH=.build   swift build --scratch-path (binary in SCRATCH/release)
#   HALLEY_BIN       halley binary (default: build it first)   NO_BUILD=1: do not build
#   NGINX_BIN=nginx  WRK_BIN=wrk  NCHAN_MODULE=/usr/lib/nginx/modules/ngx_nchan_module.so
#   ENFORCE_GOALS=1  exit 1 when a goal is missed      KEEP_TMP=1: keep logs, requests, wrk output
#
# Exits non-zero when a server fails to start or dies, the sample request is refused (a 401
# would make the numbers meaningless), a subscriber cannot subscribe or misses the sample, wrk
# reports socket errors or any non-2xx response, subscribers that all stayed connected received
# fewer messages than wrk saw accepted, or with ENFORCE_GOALS=1 when a goal is missed.
set -euo pipefail

NAME=api_publish
DURATION=${DURATION:-10}
RUNS=${RUNS:-3}
WARMUP=${WARMUP:-3}
CONNECTIONS=${CONNECTIONS:-32}
SUBS=${SUBS:-"0 1000"}
COUNT=${COUNT:-1000}
SIZE=${SIZE:-64}
SERVERS=${SERVERS:-"halley nchan"}
SERVER_CPU=${SERVER_CPU:-0}
CLIENT_CPU=${CLIENT_CPU:-1}
NGINX_BIN=${NGINX_BIN:-nginx}
WRK_BIN=${WRK_BIN:-wrk}
NCHAN_MODULE=${NCHAN_MODULE:-/usr/lib/nginx/modules/ngx_nchan_module.so}
APP_ID=1
APP_KEY=app-key
APP_SECRET=app-secret

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
SCRATCH=${SCRATCH:-$repo/.build}
helper=$here/api_publish.py

die() { echo "$NAME: error: $*" >&2; exit 1; }
log() { echo "==> $*"; }

for t in "$WRK_BIN" taskset curl timeout awk python3; do
    command -v "$t" >/dev/null || die "$t not found (apt-get install -y wrk curl util-linux gawk python3)"
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
((nofile >= max_subs + CONNECTIONS + 200)) || die "open-file limit $nofile is too low for $max_subs subscribers"

if [[ -z ${HALLEY_BIN:-} && -z ${NO_BUILD:-} ]]; then
    log "building: (cd $repo && swift build -c release --product halley --scratch-path $SCRATCH)"
    (cd "$repo" && swift build -c release --product halley --scratch-path "$SCRATCH" 2>&1 | tail -n 2) \
        || die "swift build failed"
fi
HALLEY_BIN=${HALLEY_BIN:-$SCRATCH/release/halley}
[[ -x $HALLEY_BIN ]] || die "no halley binary at $HALLEY_BIN"

tmp=$(mktemp -d "/tmp/halley-bench-$NAME.XXXXXX")
chmod 755 "$tmp"
halley_pid=""
nchan_pid=""
wrk_pid=""
hold_pid=""

BENCH_NAME=$NAME
# shellcheck source=lib.sh
source "$here/lib.sh"

cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    exec 3>&- 2>/dev/null || true
    stop_pid "$wrk_pid" wrk
    stop_pid "$hold_pid" "subscriber holder"
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
echo "halley:  $HALLEY_BIN (git $git_rev$(git -C "$repo" diff --quiet HEAD -- Sources 2>/dev/null || echo ', Sources modified'))"
if [[ " $SERVERS " == *" nchan "* ]]; then
    echo "nchan:   $("$NGINX_BIN" -v 2>&1 | head -n 1), libnginx-mod-nchan $(dpkg-query -W -f '${Version}' libnginx-mod-nchan 2>/dev/null || echo '?')"
fi
echo "wrk:     $("$WRK_BIN" -v 2>&1 | head -n 1 || true)"
echo "python:  $(python3 --version 2>&1)"
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
    local cmd=(taskset -c "$SERVER_CPU" "$HALLEY_BIN" --max-connections-per-address 0 --session-opens-per-second 0 --max-lingering-per-address 0 --host 127.0.0.1 --port 0 --threads 1 --log-level warning
               --shutdown-grace 1 --public "$tmp/no-public"
               --app-id "$APP_ID" --app-key "$APP_KEY" --app-secret "$APP_SECRET")
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
            -e "s|@BUFFER_LENGTH@|1000|; s|@PORT@|$nchan_port|; s|@LP_MULTIPART@|on|" \
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
            echo "nginx master pid $nchan_pid, worker pid $nchan_worker, port $nchan_port"
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

# ---- the subscriber holder ----------------------------------------------------------------

# hold_start srv n: starts `api_publish.py hold` (commands on fd 3, answers in $tmp/hold.out)
# and waits until its n subscribers are subscribed.
hold_start() {
    local srv=$1 n=$2 port_var=${1}_port
    rm -f "$tmp/hold.in" "$tmp/hold.out"
    mkfifo "$tmp/hold.in"
    : >"$tmp/hold.out"
    taskset -c "$CLIENT_CPU" python3 "$helper" hold --server "$srv" --port "${!port_var}" --subscribers "$n" \
        --app-key "$APP_KEY" <"$tmp/hold.in" >"$tmp/hold.out" 2>&1 &
    hold_pid=$!
    exec 3>"$tmp/hold.in"
    hold_wait '^ready ' 60 || { cat "$tmp/hold.out" >&2; die "$srv: $n subscribers did not subscribe"; }
}

# hold_wait REGEX SECONDS: waits for a line of the holder; sets HOLD_LINE (the last match).
HOLD_LINE=""
hold_wait() {
    local i
    for ((i = 0; i < $2 * 20; i++)); do
        HOLD_LINE=$(grep -E "$1" "$tmp/hold.out" | tail -n 1 || true)
        [[ -n $HOLD_LINE ]] && return 0
        kill -0 "$hold_pid" 2>/dev/null || return 1
        sleep 0.05
    done
    return 1
}

# hold_cmd CMD REGEX SECONDS: sends a command and waits for its (new) answer line.
hold_cmd() {
    local before
    before=$(grep -cE "$2" "$tmp/hold.out" || true)
    echo "$1" >&3
    local i
    for ((i = 0; i < $3 * 20; i++)); do
        if (($(grep -cE "$2" "$tmp/hold.out" || true) > before)); then
            HOLD_LINE=$(grep -E "$2" "$tmp/hold.out" | tail -n 1)
            return 0
        fi
        kill -0 "$hold_pid" 2>/dev/null || return 1
        sleep 0.05
    done
    return 1
}

hold_stop() {
    [[ -n $hold_pid ]] || return 0
    echo quit >&3 2>/dev/null || true
    exec 3>&-
    local i
    for ((i = 0; i < 50; i++)); do kill -0 "$hold_pid" 2>/dev/null || break; sleep 0.1; done
    stop_pid "$hold_pid" "subscriber holder"
    hold_pid=""
}

# ---- runs ---------------------------------------------------------------------------------

field() { sed -n "s/.* $1=\([^ ]*\).*/\1/p; s/^$1=\([^ ]*\).*/\1/p" <<<"$2" | head -n 1; }
gt() { awk -v a="$1" -v b="$2" 'BEGIN {exit !(a + 0 > b + 0)}'; }
cpu_snap() { awk -v c="cpu$1" '$1 == c {t = 0; for (i = 2; i <= NF; i++) t += $i; print t, $5 + $6}' /proc/stat; }
cpu_busy() {
    awk -v a="$1" -v b="$2" 'BEGIN {split(a, x, " "); split(b, y, " "); t = y[1] - x[1];
        printf "%.0f", (t > 0 ? 100 * (t - (y[2] - x[2])) / t : 0)}'
}
proc_ticks() {
    local stat
    stat=$(<"/proc/$1/stat") || return 1
    stat=${stat##*) }
    awk '{print $12 + $13}' <<<"$stat"
}
CLK_TCK=$(getconf CLK_TCK)

declare -A results  # [n,srv] -> result lines of the measured runs
failures=0
disturbed=0

# one_run srv n secs label: prints a result line "rps=... cpu_s=... ..." to $tmp/result.
one_run() {
    local srv=$1 n=$2 secs=$3 label=$4 port_var=${1}_port
    local port=${!port_var} reqs=$tmp/requests.$label.txt out=$tmp/wrk.$label.txt
    local pid=$halley_pid ctype=application/json
    [[ $srv == nchan ]] && { pid=$nchan_worker; ctype=text/plain; }
    python3 "$helper" requests --server "$srv" --out "$reqs" --count "$COUNT" --size "$SIZE" \
        --app-id "$APP_ID" --app-key "$APP_KEY" --app-secret "$APP_SECRET" >"$tmp/requests.$label.log" \
        || die "$label: generating requests failed"
    ((n > 0)) && hold_start "$srv" "$n"
    local check
    check=$(python3 "$helper" check --server "$srv" --port "$port" --file "$reqs" 2>&1) \
        || die "$label: sample request: $check"
    local frame=0
    if ((n > 0)); then
        hold_cmd probe '^probe ' 15 || { cat "$tmp/hold.out" >&2; die "$label: the holder did not answer probe"; }
        [[ $HOLD_LINE == *received_all=1* ]] || die "$label: $HOLD_LINE"
        frame=$(field frame "$HOLD_LINE")
        hold_cmd mark '^mark ' 10 || die "$label: holder mark"
    fi
    local m0=$HOLD_LINE
    local cmd=(taskset -c "$CLIENT_CPU" "$WRK_BIN" -t1 -c"$CONNECTIONS" -d"${secs}s" --latency
               -s "$here/api_publish.lua" "http://127.0.0.1:$port/" -- "$reqs" "$ctype")
    echo "${cmd[*]}" >"$out"
    local p0 t0 t1 s0 c0 s1 c1 p1
    p0=$(proc_ticks "$pid"); t0=$(date +%s%N)
    s0=$(cpu_snap "$SERVER_CPU"); c0=$(cpu_snap "$CLIENT_CPU")
    timeout -k 5 $((secs + 30)) "${cmd[@]}" >>"$out" 2>&1 &
    wrk_pid=$!
    local rc=0
    wait "$wrk_pid" || rc=$?
    wrk_pid=""
    p1=$(proc_ticks "$pid" || echo "$p0"); t1=$(date +%s%N)
    s1=$(cpu_snap "$SERVER_CPU"); c1=$(cpu_snap "$CLIENT_CPU")
    ((rc == 0)) || { cat "$out" >&2; die "$label: wrk failed (exit $rc)"; }
    kill -0 "$pid" 2>/dev/null || die "$srv died during $label"
    local m1="" m2="" hold_cpu=""
    if ((n > 0)); then
        hold_cmd mark '^mark ' 10 || die "$label: holder mark"
        m1=$HOLD_LINE
        hold_cmd "drain 30" '^drained ' 40 || die "$label: holder drain"
        m2=$HOLD_LINE
        hold_cpu=$(awk -v a="$(field cpu "$m0")" -v b="$(field cpu "$m1")" 'BEGIN {printf "%.2f", b - a}')
        hold_stop
    fi
    local rps reqs_done errs non2xx cpu_s
    rps=$(awk '/^Requests\/sec:/ {print $2}' "$out")
    reqs_done=$(awk '/ requests in / {print $1}' "$out")
    [[ -n $rps && -n $reqs_done ]] || { cat "$out" >&2; die "$label: no Requests/sec in wrk's output"; }
    errs=$(sed -n 's/.*Socket errors: *//p' "$out")
    non2xx=$(awk '/Non-2xx or 3xx responses:/ {print $NF}' "$out")
    if [[ -n $errs || -n $non2xx ]]; then
        echo "$label: FAILED: socket errors: ${errs:-none}; non-2xx/3xx responses: ${non2xx:-0}" >&2
        failures=$((failures + 1))
    fi
    cpu_s=$(awk -v d="$((p1 - p0))" -v hz="$CLK_TCK" 'BEGIN {printf "%.2f", d / hz}')
    local wall per_cpu srv_pct
    wall=$(awk -v ns="$((t1 - t0))" 'BEGIN {printf "%.3f", ns / 1e9}')
    per_cpu=$(awk -v r="$reqs_done" -v c="$cpu_s" 'BEGIN {printf "%.0f", (c > 0 ? r / c : 0)}')
    srv_pct=$(awk -v c="$cpu_s" -v w="$wall" 'BEGIN {printf "%.0f", 100 * c / w}')
    local line="rps=$rps requests=$reqs_done cpu_s=$cpu_s per_cpu_s=$per_cpu server_pct=$srv_pct"
    line+=" core_s=$(cpu_busy "$s0" "$s1") core_c=$(cpu_busy "$c0" "$c1") non2xx=${non2xx:-0}"
    line+=" p50=$(awk '$1 == "50%" {print $2}' "$out") p99=$(awk '$1 == "99%" {print $2}' "$out")"
    if ((n > 0)); then
        local dw dt
        dw=$(( $(field deliveries "$m1") - $(field deliveries "$m0") ))
        dt=$(field deliveries "$m2")
        line+=" frame=$frame deliveries_per_s=$(awk -v d="$dw" -v w="$wall" 'BEGIN {printf "%.0f", d / w}')"
        line+=" deliveries=$dt expected=$((reqs_done * n)) open=$(field open "$m2") codes=$(field codes "$m2") holder_cpu_s=$hold_cpu"
    fi
    echo "$line" >"$tmp/result"
    echo "check: $check" >>"$out"
    echo "result: $line" >>"$out"
}

echo
log "runs: subscribers $SUBS; servers $SERVERS; ${WARMUP}s warm-up, then $RUNS x ${DURATION}s per server and case, alternating; wrk (+ holder) on core $CLIENT_CPU, servers on core $SERVER_CPU"
echo "each run: taskset -c $CLIENT_CPU $WRK_BIN -t1 -c$CONNECTIONS -d${DURATION}s --latency -s Scripts/bench/api_publish.lua URL -- REQUESTS CONTENT_TYPE ($COUNT distinct requests, $SIZE B data)"
for n in $SUBS; do
    for srv in $SERVERS; do
        if ((WARMUP > 0)); then
            one_run "$srv" "$n" "$WARMUP" "warmup.$srv.$n"
            printf '  %-6s %5s subs  warm-up: %s\n' "$srv" "$n" "$(cut -d' ' -f1-5 "$tmp/result")"
        fi
    done
    for ((r = 1; r <= RUNS; r++)); do
        for srv in $SERVERS; do
            one_run "$srv" "$n" "$DURATION" "$srv.$n.$r"
            line=$(<"$tmp/result")
            results[$n,$srv]+="$line"$'\n'
            # Flags: another process on the server's core (its busy share well above the
            # server's own), or a server under 85% of its core because wrk's core was full.
            note=""
            sp=$(field server_pct "$line")
            if gt "$(field core_s "$line")" "$((sp + 20))"; then
                note=" [disturbed: core $SERVER_CPU busy $(field core_s "$line")%, the server used $sp%]"
                disturbed=$((disturbed + 1))
            elif gt 85 "$sp"; then
                if gt "$(field core_c "$line")" 94; then note=" [client-bound]"; else note=" [not saturated]"; fi
            fi
            printf '  %-6s %5s subs  run %d: %10s req/s  %5s cpu-s  %8s req/cpu-s  server %3s%%  cores %s%%/%s%%  p50 %s p99 %s' \
                "$srv" "$n" "$r" "$(field rps "$line")" "$(field cpu_s "$line")" "$(field per_cpu_s "$line")" \
                "$(field server_pct "$line")" "$(field core_s "$line")" "$(field core_c "$line")" "$(field p50 "$line")" "$(field p99 "$line")"
            if ((n > 0)); then
                printf '  deliveries/s %s (in all %s; wrk counted %s publishes x subscribers)  open %s/%s  closed %s  holder %s cpu-s' \
                    "$(field deliveries_per_s "$line")" "$(field deliveries "$line")" "$(field expected "$line")" \
                    "$(field open "$line")" "$n" "$(field codes "$line")" "$(field holder_cpu_s "$line")"
            fi
            printf '%s\n' "$note"
            if ((n > 0)) && [[ $(field open "$line") == "$n" ]] && gt "$(field expected "$line")" "$(field deliveries "$line")"; then
                echo "$srv.$n.$r: FAILED: every subscriber stayed connected but received fewer messages than wrk saw answered" >&2
                failures=$((failures + 1))
            fi
        done
    done
done

# ---- server logs --------------------------------------------------------------------------

echo
if [[ -n $halley_pid ]]; then
    extra=$(grep -v -e ' info ' -e "public root" "$tmp/halley.log" || true)
    log "halley log (warnings and errors):"
    if [[ -n $extra ]]; then head -n 20 <<<"$extra" | sed 's/^/  /'; else echo "  (nothing)"; fi
fi
if [[ -n $nchan_pid ]]; then
    extra=$(grep -v -e '\[notice\]' "$tmp/error.log" 2>/dev/null || true)
    log "nginx error.log (beyond notices):"
    if [[ -n $extra ]]; then head -n 20 <<<"$extra" | sed 's/^/  /'; else echo "  (nothing)"; fi
fi

# ---- summary ------------------------------------------------------------------------------

med() { # key field
    local f v vals=()
    while IFS= read -r f; do
        [[ -n $f ]] || continue
        v=$(field "$2" "$f")
        [[ -n $v && $v != "?" ]] && vals+=("$v")
    done <<<"${results[$1]:-}"
    ((${#vals[@]})) || { echo "?"; return; }
    printf '%s\n' "${vals[@]}" | sort -g | awk '{a[NR] = $1} END {print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2}'
}
ratio() { [[ $1 == "?" || $2 == "?" ]] && echo "?" || awk -v a="$1" -v b="$2" 'BEGIN {if (b + 0 == 0) print "?"; else printf "%.2f", a / b}'; }
all() { # key field: every run's value
    local f out=""
    while IFS= read -r f; do [[ -n $f ]] && out+="$(field "$2" "$f") "; done <<<"${results[$1]:-}"
    echo "${out% }"
}

echo
echo "=== summary: Pusher HTTP API publish (signed POST /apps/$APP_ID/events) vs Nchan POST /pub (unsigned)"
echo "wrk -t1 -c$CONNECTIONS, ${DURATION}s, $COUNT distinct requests, $SIZE B data; medians of $RUNS run(s); servers on core $SERVER_CPU, wrk and subscribers on core $CLIENT_CPU"
printf '%-6s %-7s %11s %8s %12s %7s %13s %11s  %s\n' subs server "req/s" "cpu-s" "req/cpu-s" "server" "deliveries/s" "open at end" "closes (code:count)"
goals_missed=0
ratio_lines=()
for n in $SUBS; do
    for srv in $SERVERS; do
        k=$n,$srv
        [[ -n ${results[$k]:-} ]] || continue
        if ((n > 0)); then
            d=$(med "$k" deliveries_per_s); o="$(all "$k" open | tr ' ' '/')"; c="$(all "$k" codes | tr ' ' '/')"
        else
            d="-"; o="-"; c="-"
        fi
        printf '%-6s %-7s %11s %8s %12s %6s%% %13s %11s  %s\n' "$n" "$srv" "$(med "$k" rps)" "$(med "$k" cpu_s)" \
            "$(med "$k" per_cpu_s)" "$(med "$k" server_pct)" "$d" "$o" "$c"
    done
    if [[ -n ${results[$n,halley]:-} && -n ${results[$n,nchan]:-} ]]; then
        rr=$(ratio "$(med "$n,halley" rps)" "$(med "$n,nchan" rps)")
        rc=$(ratio "$(med "$n,halley" per_cpu_s)" "$(med "$n,nchan" per_cpu_s)")
        verdict=met
        if [[ $rc == "?" ]] || gt 1 "$rc"; then verdict=MISSED; goals_missed=$((goals_missed + 1)); fi
        ratio_lines+=("$(printf '%-6s subs halley/nchan: req/s %s; req per server CPU-second %s (goal >= 1: %s)' "$n" "$rr" "$rc" "$verdict")")
    fi
done
if ((${#ratio_lines[@]})); then
    echo
    echo "ratios:"
    printf '%s\n' "${ratio_lines[@]}"
fi
echo
echo "requests per server CPU-second depend little on who set the pace; requests/s do (see the flags above)"
if ((disturbed > 0)); then
    echo "note: $disturbed run(s) disturbed: another process used the server's core (rerun when the machine is quiet)"
fi
if ((failures > 0)); then
    echo "$NAME: $failures run(s) FAILED: socket errors or non-2xx responses (see above)" >&2
    exit 1
fi
if ((goals_missed > 0)) && [[ -n ${ENFORCE_GOALS:-} ]]; then
    echo "$NAME: $goals_missed goal(s) missed (ENFORCE_GOALS is set)" >&2
    exit 1
fi
echo "$NAME: every request answered 2xx; every sample publish reached every subscriber"
