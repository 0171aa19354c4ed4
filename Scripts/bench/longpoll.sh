#!/usr/bin/env bash
# Long-polling fan-out: 1,000 long-poll subscribers on one channel and a publisher, halley beside
# Nchan, same load tool, same machine, one run. The goal: halley's capacity (deliveries/s that
# subscribers receive) at least 2x Nchan's.
#
# fanout.sh with TRANSPORT=longpoll (read its header for the phases, flags, environment):
#   halley: GET /halley/poll?key=app-key opens a session, POST /halley/send subscribes it,
#           then GET /halley/poll?session=S&token=T&cursor=C in a loop on one keep-alive
#           connection per subscriber; an answer carries every message waiting (a batch).
#   Nchan:  GET /sub/bench in a loop, each with If-Modified-Since / If-None-Match from the
#           previous answer's Last-Modified / Etag; with NCHAN_MULTIPART=on (the default, Nchan's
#           nchan_longpoll_multipart_response) an answer carries every message waiting too, as
#           multipart/mixed; NCHAN_MULTIPART=off: one message per answer (Nchan's default).
#           Nchan keeps the last 1000 messages of the channel (nchan_message_buffer_length), far
#           more than a subscriber can fall behind (the capacity window, at most 64).
# Defaults here: SUBS=1000, LAT_DELIVERIES=10000 (latency phase: 1,000 subscribers x 10 msg/s:
# every message is one answer and one new request per subscriber, so at a low rate a long-poll
# delivery costs a server several times a WebSocket one; 20 msg/s took 70% of halley's core
# here, 10 keeps both well below saturation). In the capacity phase messages pile up between
# polls and an answer carries many of them: far more deliveries/s than over WebSocket.
#
# Usage: Scripts/bench/longpoll.sh            (SUBS="1000 10000" Scripts/bench/longpoll.sh, ...)
set -euo pipefail
export TRANSPORT=longpoll
export BENCH_NAME=longpoll
export SUBS=${SUBS:-1000}
export LAT_DELIVERIES=${LAT_DELIVERIES:-10000}
exec "$(dirname "${BASH_SOURCE[0]}")/fanout.sh" "$@"
