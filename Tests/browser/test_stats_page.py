"""The live view: public/stats.html reads GET /stats with the admin token and shows the node's
numbers and charts; a wrong token is told, not shown as zeros."""

from __future__ import annotations

import time

import pusher_xhr
from conftest import TOKEN, screenshot, wait_for
from hub_client import SSE, WS, Poll, publish


def card(d, label):
    return d.execute_script(
        "var l = arguments[0], c = Array.from(document.querySelectorAll('.card')).find(function (c) {"
        " return c.querySelector('span').textContent === l; });"
        " return c ? c.querySelector('b').textContent : null;", label)


def test_stats_page_shows_the_node_live(start_hub, browser):
    h = start_hub("--admin-token", "adm-secret")
    clients = []
    try:
        for _ in range(3):
            ws = WS(h.port, halley=False)
            ws.hello()
            ws.subscribe("s")
            clients.append(ws)
        sse = SSE(h.port)
        sse.recv()
        clients.append(sse)
        poll = Poll(h.port)
        poll.subscribe("s")
        xhr = pusher_xhr.Client(h.port)
        st = xhr.stream()
        pusher_xhr.next_message(st, "pusher:connection_established")
        d = browser()
        d.get(f"http://127.0.0.1:{h.port}/stats.html#token=adm-secret")
        wait_for(d, "return document.getElementById('status').textContent.indexOf('live') === 0", what="the page live")
        # Publishes for a few seconds, so the charts have a line.
        for i in range(40):
            publish(h.port, {"channel": "s", "event": "e", "data": str(i)}, token=TOKEN)
            time.sleep(0.1)
        wait_for(d, "return document.querySelectorAll('#c-out polyline').length === 1", what="the messages-out chart")
        wait_for(d, "return document.querySelector('.card b') && "
                    "Array.from(document.querySelectorAll('.card')).some(function (c) {"
                    " return c.querySelector('span').textContent === 'WebSocket' && c.querySelector('b').textContent === '3'; })",
                 what="three WebSocket sessions")
        assert card(d, "SSE") == "1"
        assert card(d, "xhr streaming") == "1"
        assert card(d, "subscriptions") == "4"  # three WebSocket sessions and the poll session
        assert int(card(d, "fallbacks")) >= 3  # SSE, long-poll, xhr
        rows = d.execute_script("return Array.from(document.querySelectorAll('#apps tbody tr')).map(function (r) {"
                                " return Array.from(r.cells).map(function (c) { return c.textContent; }); })")
        assert len(rows) == 1 and rows[0][0] == "1", rows
        # Messages out: 40 to each of four subscribers (the page reads once a second).
        wait_for(d, "var r = document.querySelector('#apps tbody tr');"
                    " return r && Number(r.cells[9].textContent.replace(/,/g, '')) === 160", what="160 messages out")
        # The token does not stay in the address bar.
        assert "token" not in d.current_url
        screenshot(d, "stats")
        # A wrong token says so.
        d2 = browser()
        d2.get(f"http://127.0.0.1:{h.port}/stats.html#token=wrong")
        wait_for(d2, "return document.getElementById('status').textContent === 'wrong admin token'", what="the refusal")
        st.abort()
    finally:
        for c in clients:
            c.close()
