#!/usr/bin/env bash
# TLS cost (issue 7), two parts:
#   echo (ECHO=1)        wss against ws echo on one halley: ws_echo.sh with TLS=1 (CONNS=100)
#   handshakes (HANDSHAKES=1)  `halley-load handshakes`: HS_CONNS full handshakes in flight (a
#       new SSL each time, no session cache or ticket: no resumption), close_notify, the server
#       closes; for an RSA-2048 and an ECDSA P-256 certificate made here with the openssl CLI,
#       against halley and (NGINX=1) nginx (one worker, same certificate, TLS 1.2-1.3, halley's
#       TLS 1.2 ciphers, ssl_session_tickets off), alternating. A full handshake costs the client
#       about what it costs the server, so the rate may be the tool's: handshakes per server
#       CPU-second is the comparison that does not depend on it (each run's flags say).
# Environment: DURATION=10 RUNS=3 WARMUP=1 SIZES="32 4096" CONNS=100 HS_CONNS=16 CERTS="rsa2048
# ecdsa-p256" NGINX=1 ECHO=1 HANDSHAKES=1 QUIET=30 (seconds to wait for a quiet machine before
# each handshake run)
source "$(dirname "$0")/lib.sh"
need openssl
if [[ ${ECHO:-1} == 1 ]]; then
    TLS=1 CONNS=${CONNS:-100} "$here/ws_echo.sh" || exit 1
    NO_BUILD=1
fi
[[ ${HANDSHAKES:-1} == 1 ]] || exit 0
DURATION=${DURATION:-10} RUNS=${RUNS:-3} CERTS=${CERTS:-"rsa2048 ecdsa-p256"} servers=halley
build halley halley-load
banner
echo "openssl: $(openssl version)"
make_cert rsa2048 rsa
make_cert ecdsa-p256 ec
declare -A port
if [[ ${NGINX:-1} == 1 ]]; then
    servers="halley nginx"
    {
        [[ $(id -u) == 0 ]] && echo 'user root;'
        echo "worker_processes 1; pid $tmp/nginx.pid; error_log $tmp/error.log warn;"
        echo "events { worker_connections 4096; use epoll; multi_accept on; }"
        echo "http { access_log off; client_body_temp_path $tmp/cb; proxy_temp_path $tmp/px; fastcgi_temp_path $tmp/fc;"
        echo "  uwsgi_temp_path $tmp/uw; scgi_temp_path $tmp/sc;"
        echo "  ssl_protocols TLSv1.2 TLSv1.3; ssl_prefer_server_ciphers on; ssl_session_tickets off;"
        # halley's TLS 1.2 list (TLSContext.swift); the TLS 1.3 suites are OpenSSL's defaults on both.
        echo "  ssl_ciphers ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305;"
        for c in $CERTS; do
            port[$c]=$(free_port)
            echo "  server { listen 127.0.0.1:${port[$c]} ssl backlog=8192; root $tmp;"
            echo "    ssl_certificate $tmp/$c.crt; ssl_certificate_key $tmp/$c.key; }"
        done
        echo "}"
    } >"$tmp/nginx.conf"
    start_nginx "$tmp/nginx.conf" "https://127.0.0.1:${port[${CERTS%% *}]}/"
fi

log "handshakes: $RUNS x ${DURATION} s per certificate and server, alternating; ${HS_CONNS:-16} in flight"
for c in $CERTS; do
    start_halley --tls-port 0 --tls-cert "$tmp/$c.crt" --tls-key "$tmp/$c.key"
    for r in $(seq "$RUNS"); do
        for s in $servers; do
            spids=(--server-pid "$HALLEY_PID") url=https://127.0.0.1:$TLS_PORT/
            [[ $s == nginx ]] && spids=(--server-pid "$NGINX_PID" --server-pid "$NGINX_WORKER") url=https://127.0.0.1:${port[$c]}/
            quiet "${QUIET:-30}"
            run_load "$s.$c.$r" handshakes --url "$url" -c "${HS_CONNS:-16}" --duration "$DURATION" \
                --warmup "${WARMUP:-1}" "${spids[@]}"
            keep "$s,$c" "$LINES"
            printf '  %-6s %-10s run %d: %6.0f handshakes/s %6.0f per server-CPU-s  p50 %6s us  cpu server %5s%%, tool %5s%%  [%s]\n' \
                "$s" "$c" "$r" "$(field handshakes_per_sec "$LINES")" "$(field handshakes_per_server_cpu_s "$LINES")" \
                "$(field p50_us "$LINES")" "$(field server_cpu_pct "$LINES")" "$(field client_cpu_pct "$LINES")" \
                "$(field flags "$LINES")"
        done
    done
    for s in $servers; do
        echo "  $s $c: $(field tls "$LINES"); $(awk -v t="$(field tickets_received "$LINES")" \
            -v h="$(field total_handshakes "$LINES")" 'BEGIN {printf "%.1f", t / h}') tickets per handshake"
    done
    stop_pid "$HALLEY_PID"
done

echo
echo "=== summary: full TLS handshakes, ${HS_CONNS:-16} in flight, medians of $RUNS x ${DURATION} s; $(openssl version | cut -d' ' -f1-2)"
printf '  %-10s %-6s %12s %16s %8s %8s\n' cert server handshakes/s "per server CPU-s" "srv cpu" "tool cpu"
for c in $CERTS; do
    for s in $servers; do
        printf '  %-10s %-6s %12.0f %16.0f %7s%% %7s%%\n' "$c" "$s" "$(med "$s,$c" handshakes_per_sec)" \
            "$(med "$s,$c" handshakes_per_server_cpu_s)" "$(med "$s,$c" server_cpu_pct)" "$(med "$s,$c" client_cpu_pct)"
    done
    if [[ $servers == *nginx* ]]; then
        printf '  %-10s %-6s %12s %16s\n' "$c" ratio \
            "$(ratio "$(med "halley,$c" handshakes_per_sec)" "$(med "nginx,$c" handshakes_per_sec)")" \
            "$(ratio "$(med "halley,$c" handshakes_per_server_cpu_s)" "$(med "nginx,$c" handshakes_per_server_cpu_s)")"
    fi
done
