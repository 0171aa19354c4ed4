#!/usr/bin/env bash
# WebSocket echo throughput: halley vs Node ws, same load tool, same machine, one run.
#
# halley-wsbench (this package's closed-loop load tool: N connections, each sends one masked
# message and waits for its echo before sending the next) runs pinned to one core against
# halley (--threads 1) and against Node's ws (Debian node-ws, Scripts/bench/ws_echo_node.js),
# both pinned to another core, for every message size in SIZES and connection count in
# CONNS. Each server is measured RUNS times per case, alternating (halley, node, halley,
# node, ...). Per run the tool reports echoes per second over the window, round-trip
# latency, its own CPU use, and the server's CPU time over the window (utime + stime of the
# server process from /proc/PID/stat, read by the tool at the window's start and end), hence
# messages per server CPU-second. The summary gives the median of each and the ratios
# halley/node.
#
# Usage: Scripts/bench/ws_echo.sh
# Environment:
#   DURATION=10        seconds per measured window
#   RUNS=3             measured runs per server and case
#   WARMUP=1           seconds of load before each window (the tool's --warmup)
#   SIZES="32 4096"    message sizes, bytes
#   CONNS="100 1000"   connection counts
#   TYPE=text          text or binary messages (text: ASCII, so both servers validate UTF-8)
#   SERVER_CPU=0       core for the servers      CLIENT_CPU=1   core for the load tool
#   HALLEY_BIN=...     halley binary (default: build .build/release/halley first)
#   BENCH_BIN=...      load tool (default .build/release/halley-wsbench)
#   NO_BUILD=1         do not run `swift build -c release`
#   NODE_BIN=node      KEEP_TMP=1 (keep the temporary directory: logs, raw tool output)
#
# A run where the server used under 85% of its core is flagged: [client-bound?] when the
# load tool used 90% or more of its own core (the tool, not the server, set the pace), else
# [disturbed?] (something else took CPU). halley runs with --metrics-port; after the runs its
# counters must match the tool's: every connection upgraded, every message in and out, no
# protocol errors or backpressure.
#
# On a shared VM whole periods of tens of seconds can run 20-25% slower for every process
# (seen here: halley and node slowed together, CPU use still 100%, no steal time reported), so
# compare the ratios of alternating runs rather than absolute figures, and rerun (or raise
# RUNS) when a case's runs spread widely; the per-run lines show the spread.
#
# Exits non-zero if a server fails to start or dies, a tool run fails (a connection did not
# open, an echo was wrong or missing, the server closed a connection), or halley's counters
# disagree with the tool's.
set -euo pipefail

DURATION=${DURATION:-10}
RUNS=${RUNS:-3}
WARMUP=${WARMUP:-1}
SIZES=${SIZES:-"32 4096"}
CONNS=${CONNS:-"100 1000"}
TYPE=${TYPE:-text}
SERVER_CPU=${SERVER_CPU:-0}
CLIENT_CPU=${CLIENT_CPU:-1}
NODE_BIN=${NODE_BIN:-node}

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)

die() { echo "ws_echo: error: $*" >&2; exit 1; }
log() { echo "==> $*"; }

for t in "$NODE_BIN" taskset curl timeout awk; do
    command -v "$t" >/dev/null || die "$t not found (apt-get install -y nodejs node-ws curl util-linux)"
done
[[ $TYPE == text || $TYPE == binary ]] || die "TYPE must be text or binary"
ncpu=$(nproc)
((SERVER_CPU < ncpu && CLIENT_CPU < ncpu)) || die "need cores $SERVER_CPU and $CLIENT_CPU; this machine has $ncpu"
[[ $SERVER_CPU != "$CLIENT_CPU" ]] || die "SERVER_CPU and CLIENT_CPU must differ"
ws_version=$("$NODE_BIN" -e "console.log(require('/usr/share/nodejs/ws/package.json').version)" 2>/dev/null) \
    || die "Node's ws not found at /usr/share/nodejs/ws (apt-get install -y node-ws)"

if [[ -z ${NO_BUILD:-} && ( -z ${HALLEY_BIN:-} || -z ${BENCH_BIN:-} ) ]]; then
    log "building: (cd $repo && swift build -c release)"
    (cd "$repo" && swift build -c release 2>&1 | tail -n 3) || die "swift build failed"
fi
HALLEY_BIN=${HALLEY_BIN:-$repo/.build/release/halley}
BENCH_BIN=${BENCH_BIN:-$repo/.build/release/halley-wsbench}
[[ -x $HALLEY_BIN ]] || die "no halley binary at $HALLEY_BIN"
[[ -x $BENCH_BIN ]] || die "no load tool at $BENCH_BIN (swift build -c release --product halley-wsbench)"

tmp=$(mktemp -d /tmp/halley-bench-ws.XXXXXX)
halley_pid=""
node_pid=""
tool_pid=""

BENCH_NAME=ws_echo
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    stop_pid "$tool_pid" halley-wsbench
    stop_pid "$halley_pid" halley
    stop_pid "$node_pid" node
    if [[ -n ${KEEP_TMP:-} ]]; then
        echo "ws_echo: kept $tmp" >&2
    else
        rm -rf "$tmp"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---- versions -----------------------------------------------------------------------------

git_rev=$(git -C "$repo" rev-parse --short HEAD 2>/dev/null || echo '?')
log "environment"
echo "host:    $(uname -srm), $ncpu cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//'))"
echo "halley:  $HALLEY_BIN (git $git_rev$(git -C "$repo" diff --quiet -- Sources ':!Sources/HalleyWSBench' 2>/dev/null || echo ', Sources modified'))"
echo "tool:    $BENCH_BIN$(git -C "$repo" diff --quiet -- Sources/HalleyWSBench 2>/dev/null || echo ' (Sources/HalleyWSBench modified)')"
echo "node:    $("$NODE_BIN" --version) ($(command -v "$NODE_BIN")), ws $ws_version (/usr/share/nodejs/ws)"
echo "swift:   $(swift --version 2>/dev/null | head -n 1 || echo '?')"
echo "load:    $(cut -d' ' -f1-3 /proc/loadavg) (1, 5, 15 min)"
if pgrep -f wstest >/dev/null; then
    echo "warning: an Autobahn run (wstest) is in progress: the numbers will be disturbed, and it will be too"
fi
idle_before=$(awk '$1 == "cpu" {t = 0; for (i = 2; i <= NF; i++) t += $i; print t, $5 + $6}' /proc/stat)
sleep 1
busy_now=$(awk -v a="$idle_before" '$1 == "cpu" {t = 0; for (i = 2; i <= NF; i++) t += $i; split(a, x, " ");
    printf "%.0f", 100 * ((t - x[1]) - ($5 + $6 - x[2])) / (t - x[1])}' /proc/stat)
echo "busy:    ${busy_now}% of all cores in the second before the benchmark"
if ((busy_now > 5)); then
    echo "warning: something else is using the CPU; the numbers will be noisy. Busiest now:"
    top -b -n 1 -w 200 2>/dev/null | sed -n '8,$p' | awk '$9 > 0' | head -n 5 | cut -c1-160 || true
fi

# ---- servers ------------------------------------------------------------------------------

halley_port=""
metrics_port=""
start_halley() {
    local cmd=(taskset -c "$SERVER_CPU" "$HALLEY_BIN" --max-connections-per-address 0 --session-opens-per-second 0 --max-lingering-per-address 0 --port 0 --threads 1 --log-level warning
               --shutdown-grace 1 --metrics-port 0)
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

node_port=""
start_node() {
    local cmd=(taskset -c "$SERVER_CPU" "$NODE_BIN" "$here/ws_echo_node.js" 0)
    log "node: ${cmd[*]}"
    "${cmd[@]}" >"$tmp/node.out" 2>"$tmp/node.err" &
    node_pid=$!
    local i
    for ((i = 0; i < 100; i++)); do
        node_port=$(sed -n 's/^ws_echo_node listening on ws:\/\/127\.0\.0\.1:\([0-9]*\).*/\1/p' "$tmp/node.out" | head -n 1)
        [[ -n $node_port ]] && break
        kill -0 "$node_pid" 2>/dev/null || { cat "$tmp/node.out" "$tmp/node.err" >&2; die "node exited on start"; }
        sleep 0.1
    done
    [[ -n $node_port ]] || { cat "$tmp/node.out" "$tmp/node.err" >&2; die "node did not print its port within 10 s"; }
    echo "node pid $node_pid, port $node_port: $(head -n 1 "$tmp/node.out")"
}

# halley_metrics: "upgrades in out protocol_errors backpressure" from halley's /metrics.
halley_metrics() {
    curl -sS --max-time 5 "http://127.0.0.1:$metrics_port/metrics" | awk '
        /^halley_websocket_upgrades_total / {up = $2}
        /^halley_websocket_messages_total\{direction="in"\}/ {in_ = $2}
        /^halley_websocket_messages_total\{direction="out"\}/ {out = $2}
        /^halley_websocket_protocol_errors_total / {pe = $2}
        /^halley_websocket_backpressure_total / {bp = $2}
        END {print up + 0, in_ + 0, out + 0, pe + 0, bp + 0}'
}

start_halley
start_node
read -r m0_up m0_in m0_out m0_pe m0_bp <<<"$(halley_metrics)" || die "cannot read halley's /metrics"

# ---- runs ---------------------------------------------------------------------------------

type_flag=()
[[ $TYPE == binary ]] && type_flag=(--binary)

# field NAME LINE: the value of NAME=... in a tool result line.
field() { sed -n "s/.* $1=\([^ ]*\).*/\1/p; s/^$1=\([^ ]*\).*/\1/p" <<<"$2" | head -n 1; }

# run_tool server size conns seconds warmup label: sets LINE to the tool's result line; raw
# output in $tmp/tool.<label>.txt. Returns non-zero when the run is unusable.
LINE=""
tool_sent=0
tool_echoes=0
tool_conns=0
run_tool() {
    local srv=$1 size=$2 conns=$3 secs=$4 warm=$5 label=$6
    local port_var=${srv}_port pid_var=${srv}_pid
    local out=$tmp/tool.$label.txt
    local cmd=(taskset -c "$CLIENT_CPU" "$BENCH_BIN" --url "ws://127.0.0.1:${!port_var}/echo" --connections "$conns"
               --size "$size" --duration "$secs" --warmup "$warm" --server-pid "${!pid_var}" "${type_flag[@]}")
    echo "${cmd[*]}" >"$out"
    timeout -k 5 "$(awk -v d="$secs" -v w="$warm" 'BEGIN {printf "%d", d + w + 90}')" "${cmd[@]}" >"$out.stdout" 2>>"$out" &
    tool_pid=$!
    local rc=0
    wait "$tool_pid" || rc=$?
    tool_pid=""
    cat "$out.stdout" >>"$out"
    LINE=$(grep -m1 '^messages=' "$out.stdout" || true)
    kill -0 "${!pid_var}" 2>/dev/null || { cat "$out" >&2; echo "$srv died during $label" >&2; return 1; }
    if ((rc != 0)) || [[ -z $LINE ]]; then
        echo "halley-wsbench failed ($label, exit $rc):" >&2
        cat "$out" >&2
        return 1
    fi
    if [[ $srv == halley ]]; then
        tool_sent=$((tool_sent + $(field sent "$LINE")))
        tool_echoes=$((tool_echoes + $(field echoes "$LINE")))
        tool_conns=$((tool_conns + conns))
    fi
}

log "checking echoes: text and binary, 3 B to 300,000 B, on both servers"
for srv in halley node; do
    for flag in "" --binary; do
        for size in 3 125 126 4096 65536 300000; do
            out=$tmp/check.$srv.$size${flag:+.binary}.txt
            port_var=${srv}_port
            if ! "$BENCH_BIN" --url "ws://127.0.0.1:${!port_var}/echo" --connections 4 --size "$size" \
                    --duration 0.3 --warmup 0 $flag >"$out" 2>&1; then
                cat "$out" >&2
                die "$srv: echo check failed ($size B${flag:+ binary})"
            fi
            if [[ $srv == halley ]]; then
                l=$(grep -m1 '^messages=' "$out")
                tool_sent=$((tool_sent + $(field sent "$l")))
                tool_echoes=$((tool_echoes + $(field echoes "$l")))
                tool_conns=$((tool_conns + 4))
            fi
        done
    done
    echo "$srv: every echo right (length and content), every connection closed with 1000"
done

echo
log "runs: $RUNS x ${DURATION}s (after ${WARMUP}s warm-up) per server and case, alternating; tool on core $CLIENT_CPU, servers on core $SERVER_CPU; $TYPE messages"
echo "each run: taskset -c $CLIENT_CPU $BENCH_BIN --url ws://127.0.0.1:PORT/echo --connections N --size S --duration $DURATION --warmup $WARMUP --server-pid PID ${type_flag[*]}"
declare -A rate cpu_rate # [size,conns,server] -> space-separated values of the runs
declare -A p50s p99s ccpu scpu
flagged=0
client_bound=0
both_busy=0
for size in $SIZES; do
    for conns in $CONNS; do
        for ((i = 1; i <= RUNS; i++)); do
            for srv in halley node; do
                label=$srv.$size.$conns.$i
                run_tool "$srv" "$size" "$conns" "$DURATION" "$WARMUP" "$label" || die "run $label failed"
                r=$(field msgs_per_sec "$LINE")
                mc=$(field msgs_per_server_cpu_s "$LINE")
                sp=$(field server_cpu_pct "$LINE")
                cp=$(field client_cpu_pct "$LINE")
                note=""
                if awk -v s="$sp" 'BEGIN {exit !(s < 85)}'; then
                    flagged=$((flagged + 1))
                    if awk -v c="$cp" 'BEGIN {exit !(c >= 90)}'; then
                        note=" [client-bound?]"
                        client_bound=$((client_bound + 1))
                    else
                        note=" [disturbed?]"
                    fi
                elif awk -v c="$cp" 'BEGIN {exit !(c >= 90)}'; then
                    note=" [tool busy too]"
                    both_busy=$((both_busy + 1))
                fi
                k=$size,$conns,$srv
                rate[$k]="${rate[$k]:-} $r"
                cpu_rate[$k]="${cpu_rate[$k]:-} $mc"
                p50s[$k]="${p50s[$k]:-} $(field p50_us "$LINE")"
                p99s[$k]="${p99s[$k]:-} $(field p99_us "$LINE")"
                ccpu[$k]="${ccpu[$k]:-} $cp"
                scpu[$k]="${scpu[$k]:-} $sp"
                printf '  %-6s %5s B %5s conns run %d: %10.0f msg/s  %9.0f msg/server-CPU-s  p50 %5s us  p99 %6s us  server %5s%% cpu, tool %5s%% cpu, cores %s%s\n' \
                    "$srv" "$size" "$conns" "$i" "$r" "$mc" "$(field p50_us "$LINE")" "$(field p99_us "$LINE")" \
                    "$sp" "$cp" "$(field core_busy_pct "$LINE")" "$note"
            done
        done
    done
done

# ---- halley's own counters ----------------------------------------------------------------

failures=0
read -r m1_up m1_in m1_out m1_pe m1_bp <<<"$(halley_metrics)" || die "cannot read halley's /metrics"
echo
log "halley /metrics over the checks and runs"
echo "upgrades: $((m1_up - m0_up)) (the tool opened $tool_conns connections)"
echo "messages in: $((m1_in - m0_in)) (the tool sent $tool_sent); out: $((m1_out - m0_out)) (the tool received $tool_echoes echoes)"
echo "protocol errors: $((m1_pe - m0_pe)); backpressure: $((m1_bp - m0_bp))"
# The tool's close frames are not data messages: in and out must equal what the tool counted.
if ((m1_up - m0_up != tool_conns || m1_in - m0_in != tool_sent || m1_out - m0_out != tool_echoes)); then
    echo "warning: halley's counters disagree with the tool's"
    failures=$((failures + 1))
fi
if ((m1_pe - m0_pe > 0 || m1_bp - m0_bp > 0)); then
    echo "warning: halley counted protocol errors or backpressure"
    failures=$((failures + 1))
fi

# ---- the server logs ----------------------------------------------------------------------

echo
log "halley log (beyond the start line)"
grep -v 'halley listening on' "$tmp/halley.log" || echo "  (nothing)"
log "node stderr"
if [[ -s $tmp/node.err ]]; then head -n 20 "$tmp/node.err"; else echo "  (empty)"; fi

# ---- summary ------------------------------------------------------------------------------

median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{v[NR] = $1} END {if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2}'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {if (b > 0) printf "%.2f", a / b; else print "-"}'; }

echo
echo "=== summary ($(date -u +%Y-%m-%dT%H:%MZ); halley git $git_rev, node $("$NODE_BIN" --version) ws $ws_version) ==="
echo "echoes/s and echoes per server CPU-second, median of $RUNS x ${DURATION}s; $TYPE messages; halley-wsbench on core $CLIENT_CPU; server on core $SERVER_CPU"
printf '%6s %6s  %11s %11s %6s  %12s %12s %6s\n' size conns "halley/s" "node/s" ratio "halley/CPU-s" "node/CPU-s" ratio
for size in $SIZES; do
    for conns in $CONNS; do
        hr=$(median <<<"${rate[$size,$conns,halley]}"); nr=$(median <<<"${rate[$size,$conns,node]}")
        hc=$(median <<<"${cpu_rate[$size,$conns,halley]}"); nc=$(median <<<"${cpu_rate[$size,$conns,node]}")
        printf '%6s %6s  %11.0f %11.0f %6s  %12.0f %12.0f %6s\n' "$size" "$conns" "$hr" "$nr" "$(ratio "$hr" "$nr")" \
            "$hc" "$nc" "$(ratio "$hc" "$nc")"
    done
done
echo "latency (median of the runs' p50 / p99, µs) and CPU use (median % of one core):"
printf '%6s %6s  %15s %15s  %12s %12s  %12s %12s\n' size conns "halley p50/p99" "node p50/p99" "halley cpu" "node cpu" "tool(halley)" "tool(node)"
for size in $SIZES; do
    for conns in $CONNS; do
        printf '%6s %6s  %15s %15s  %11s%% %11s%%  %11s%% %11s%%\n' "$size" "$conns" \
            "$(median <<<"${p50s[$size,$conns,halley]}")/$(median <<<"${p99s[$size,$conns,halley]}")" \
            "$(median <<<"${p50s[$size,$conns,node]}")/$(median <<<"${p99s[$size,$conns,node]}")" \
            "$(median <<<"${scpu[$size,$conns,halley]}")" "$(median <<<"${scpu[$size,$conns,node]}")" \
            "$(median <<<"${ccpu[$size,$conns,halley]}")" "$(median <<<"${ccpu[$size,$conns,node]}")"
    done
done
echo "runs (msg/s, in order):"
for size in $SIZES; do
    for conns in $CONNS; do
        for srv in halley node; do
            printf '  %5s B %5s conns %-6s %s\n' "$size" "$conns" "$srv" "$(for v in ${rate[$size,$conns,$srv]}; do printf '%.0f ' "$v"; done)"
        done
    done
done

if ((client_bound > 0)); then
    echo "note: in $client_bound run(s) the load tool used >= 90% of its core while the server used < 85%"
    echo "      of its own: there the tool, not the server, set the pace; msgs per server CPU-second still"
    echo "      compares the servers, msgs/s understates the faster one."
fi
if ((flagged - client_bound > 0)); then
    echo "note: in $((flagged - client_bound)) run(s) the server used under 85% of its core while the tool was"
    echo "      not busy: other work on the machine (or the hypervisor) took CPU, or the server waited."
fi
if ((flagged == 0)); then
    echo "load tool: in every run the server used 85% or more of its core: the server worked flat out."
fi
if ((both_busy > 0)); then
    echo "note: in $both_busy run(s) the server was busy (>= 85%) and the load tool used >= 90% of its core"
    echo "      as well. On loopback each side's write runs much of the kernel's TCP receive work for the"
    echo "      other side, so a client doing one read and one write per message costs the kernel about"
    echo "      what the server does; both cores saturate together. msgs/s there is a co-limited figure;"
    echo "      messages per server CPU-second is the comparison that does not depend on the tool."
fi

if ((failures > 0)); then
    die "$failures problem(s): halley's counters (see above)"
fi
