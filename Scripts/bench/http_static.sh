#!/usr/bin/env bash
# Static files: halley (--threads 1) against nginx (1 worker, access log off, sendfile,
# open_file_cache) serving the same root, a 60 B and a 4 KiB file; wrk -t1 with CONNECTIONS
# keep-alive connections on CLIENT_CPU, the servers on SERVER_CPU. WARMUP s per server and file,
# then RUNS runs of DURATION s alternating; median requests/s and the ratio halley/nginx, with
# each run's server CPU share (under 85%: [disturbed?]). halley's /metrics must show no
# reconnects and nothing but 2xx.
# Environment: DURATION=10 RUNS=3 WARMUP=2 CONNECTIONS=64
source "$(dirname "$0")/lib.sh"
DURATION=${DURATION:-10} RUNS=${RUNS:-3} WARMUP=${WARMUP:-2} CONNECTIONS=${CONNECTIONS:-64}
need wrk nginx python3
build halley
banner
root=$tmp/root
mkdir -p "$root"
small="Halley static benchmark: a small file of sixty bytes."
printf '%s%s\n' "$small" "$(printf '%*s' $((59 - ${#small})) '' | tr ' ' .)" >"$root/small.txt"
for _ in $(seq 64); do printf '0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcde\n'; done >"$root/4k.txt"
[[ $(stat -c %s "$root/small.txt") == 60 && $(stat -c %s "$root/4k.txt") == 4096 ]] || die "wrong file sizes"
chmod 644 "$root"/*

start_halley --public "$root" --metrics-port 0
nginx_port=$(free_port)
cat >"$tmp/nginx.conf" <<EOF
$([[ $(id -u) == 0 ]] && echo 'user root;')
worker_processes 1;
pid $tmp/nginx.pid;
error_log $tmp/error.log warn;
events { worker_connections 4096; }
http {
    types { text/plain txt; }
    access_log off;
    sendfile on;
    tcp_nodelay on;
    open_file_cache max=1000 inactive=60s;
    open_file_cache_valid 60s;
    keepalive_requests 1000000000;
    client_body_temp_path $tmp/cb; proxy_temp_path $tmp/px; fastcgi_temp_path $tmp/fc; uwsgi_temp_path $tmp/uw; scgi_temp_path $tmp/sc;
    server { listen 127.0.0.1:$nginx_port; root $root; }
}
EOF
start_nginx "$tmp/nginx.conf" "http://127.0.0.1:$nginx_port/small.txt"
declare -A port=([halley]=$HALLEY_PORT [nginx]=$nginx_port) pid=([halley]=$HALLEY_PID [nginx]=$NGINX_WORKER)
for f in small.txt 4k.txt; do
    for s in halley nginx; do
        curl -sS --max-time 5 -o "$tmp/body" "http://127.0.0.1:${port[$s]}/$f" && cmp -s "$tmp/body" "$root/$f" ||
            die "$s: /$f is not the file"
    done
done
echo "both servers answer both files with the same bytes"

metrics() {
    curl -sS --max-time 5 "http://127.0.0.1:$METRICS_PORT/metrics" | awk '/^halley_connections_accepted_total / {a = $2}
        /^halley_http_requests_total\{/ && !/"2xx"/ {o += $2} END {print a + 0, o + 0}'
}
read -r acc0 other0 <<<"$(metrics)"
halley_runs=0
log "wrk -t1 -c$CONNECTIONS: ${WARMUP} s warm-up, then $RUNS x ${DURATION} s per server and file, alternating"
for f in small.txt 4k.txt; do
    for s in halley nginx; do
        run_wrk "warmup.$s.$f" "${pid[$s]}" -c"$CONNECTIONS" -d"${WARMUP}s" "http://127.0.0.1:${port[$s]}/$f"
    done
    for r in $(seq "$RUNS"); do
        for s in halley nginx; do
            run_wrk "$s.$f.$r" "${pid[$s]}" -c"$CONNECTIONS" -d"${DURATION}s" "http://127.0.0.1:${port[$s]}/$f"
            keep "$f,$s" "$LINE"
            printf '  %-6s %-9s run %d: %10s req/s  p50 %-8s p99 %-8s server %3s%% cpu, cores %s%%/%s%%%s\n' "$s" "$f" "$r" \
                "$(field rps "$LINE")" "$(field p50 "$LINE")" "$(field p99 "$LINE")" "$(field server_pct "$LINE")" \
                "$(field core_s "$LINE")" "$(field core_c "$LINE")" "$( (($(field server_pct "$LINE") < 85)) && echo ' [disturbed?]')"
        done
    done
done
halley_runs=$((2 * (RUNS + 1)))

read -r acc1 other1 <<<"$(metrics)"
# wrk opens one more connection per run to check the address; the metrics fetch is one too.
echo "halley accepted $((acc1 - acc0 - 1)) connections (wrk opened $((halley_runs * (CONNECTIONS + 1)))), answered" \
    "$((other1 - other0)) requests with other than 2xx"
log "server logs (beyond the start lines)"
grep -hv -e 'listening on' -e 'development app' "$tmp/halley.log" "$tmp/error.log" 2>/dev/null || echo "  (nothing)"
echo
echo "=== summary: requests/s, median of $RUNS x ${DURATION} s; wrk on core $CLIENT_CPU, servers on core $SERVER_CPU"
printf '%-10s %12s %12s %8s\n' file halley nginx ratio
for f in small.txt 4k.txt; do
    h=$(med "$f,halley" rps) x=$(med "$f,nginx" rps)
    printf '%-10s %12.0f %12.0f %8s\n' "$f" "$h" "$x" "$(ratio "$h" "$x")"
done
((acc1 - acc0 - 1 <= halley_runs * (CONNECTIONS + 1) && other1 == other0)) ||
    die "halley closed keep-alive connections (wrk reconnected) or answered other than 2xx"
