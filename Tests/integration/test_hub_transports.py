"""Every transport delivers every published message once, in order, with the same payload
bytes: WebSocket (Pusher session and resumable Halley session, with and without
permessage-deflate), Server-Sent Events and long-polling. Publishing is POST /publish."""

from __future__ import annotations

import base64
import json
import os
import threading
import time

import pytest

from hub_client import SSE, WS, Dedup, Poll, payload_of, publish, send_http, wait_until

N = 60


@pytest.fixture(scope="module")
def hub(public_root):
    from halley_client import Halley
    h = Halley(public_root, ["--app-token", "tok"])
    yield h
    assert h.stop() == 0, h.log_text()[-3000:]


def payloads(n):
    """Text payloads with JSON-hostile characters and binary ones with every byte value."""
    out = []
    for i in range(n):
        if i % 3 == 2:
            out.append(("bin", bytes((i * 7 + k) % 256 for k in range(1 + i * 11 % 700))))
        else:
            out.append(("text", f'msg {i} "quoted" \\ back\nslash é ✓ 😀 '.encode() + b"x" * (i * 37 % 900)))
    return out


def publish_all(port, channel, items, first_offset=1):
    for i, (kind, data) in enumerate(items):
        body = {"channel": channel, "event": f"e{i}"}
        if kind == "bin":
            body["data_base64"] = base64.b64encode(data).decode()
        else:
            body["data"] = data.decode()
        status, r = publish(port, body)
        assert status in (201, 202), (status, r)
        assert r["channels"][channel]["offset"] == i + first_offset


def check(events, items):
    assert [e["event"] for e in events] == [f"e{i}" for i in range(len(items))]
    for e, (kind, data) in zip(events, items):
        assert payload_of(e) == data, e
    offsets = [e["halley:offset"] for e in events]
    assert offsets == list(range(1, len(items) + 1))


@pytest.mark.parametrize("compression", [None, "deflate"])
@pytest.mark.parametrize("resumable", [False, True])
def test_websocket_delivers_every_message_once_in_order(hub, resumable, compression):
    channel = f"ws-{int(resumable)}-{compression}"
    items = payloads(N)
    ws = WS(hub.port, halley=resumable, compression=compression)
    est = ws.hello()
    assert ("halley:token" in est) == resumable
    sub = ws.subscribe(channel)
    assert sub["halley:offset"] == 0 and sub["halley:epoch"]
    publish_all(hub.port, channel, items)
    d = Dedup()
    d.add(sub)
    while len(d.events()) < N:
        m = ws.recv()
        d.add(m)
        if resumable:
            assert "halley:seq" in m
            if isinstance(m.get("halley:binary_payload"), bytes):
                assert "data" not in m  # binary frames on a resumable WebSocket
        else:
            assert "halley:seq" not in m
    check(d.events(), items)
    assert d.duplicates == 0
    ws.close()


def test_sse_delivers_every_message_once_in_order(hub):
    items = payloads(N)
    s = SSE(hub.port)
    assert s.status == 200
    assert s.headers["content-type"].startswith("text/event-stream")
    assert s.headers["cache-control"] == "no-cache, no-transform"
    assert s.headers["x-accel-buffering"] == "no"
    assert s.headers.get("transfer-encoding") == "chunked"
    est = s.recv()
    assert est["event"] == "pusher:connection_established"
    info = json.loads(est["data"])
    assert len(s.comments[0]) >= 2048, "padding prelude"
    assert s.retry == 1000
    status, _ = send_http(hub.port, info["socket_id"], info["halley:token"],
                          {"event": "pusher:subscribe", "data": {"channel": "sse"}})
    assert status == 200
    sub = s.recv()
    assert sub["event"] == "pusher_internal:subscription_succeeded"
    assert s.last_id.startswith(f"{sub['halley:seq']}:{info['socket_id']}:")
    publish_all(hub.port, "sse", items)
    d = Dedup()
    d.add(sub)
    while len(d.events()) < N:
        eid, m = s.event()
        assert int(eid.split(":")[0]) == m["halley:seq"]
        d.add(m)
    check(d.events(), items)
    s.close()


def test_long_polling_delivers_every_message_once_in_order(hub):
    items = payloads(N)
    p = Poll(hub.port)
    assert p.first["messages"][0]["event"] == "pusher:connection_established"
    p.subscribe("poll")
    got = p.poll()
    assert got[0]["event"] == "pusher_internal:subscription_succeeded"
    t = threading.Thread(target=publish_all, args=(hub.port, "poll", items))
    t.start()
    d = Dedup()
    for m in got:
        d.add(m)
    while len(d.events()) < N:
        for m in p.poll(timeout=10):
            d.add(m)
    t.join()
    check(d.events(), items)
    assert d.duplicates == 0
    # What arrives while no poll is waiting is answered in one batch by the next poll. The
    # publisher runs to completion first (and the hub gets a second to hand the messages to
    # the session's loop), so the count does not depend on how fast this machine is.
    publish_all(hub.port, "poll", [("text", b"later")] * 10, first_offset=N + 1)
    time.sleep(1.0)
    batch = p.poll(timeout=10)
    assert [m["event"] for m in batch] == [f"e{i}" for i in range(10)], batch


def test_every_transport_sees_the_same_offsets(hub):
    """Four subscribers on four transports, one publisher: same messages, same order."""
    items = [("text", f"m{i}".encode()) for i in range(30)]
    ws = WS(hub.port, halley=False)
    ws.hello()
    ws.subscribe("same")
    ws2 = WS(hub.port, halley=True)
    ws2.hello()
    ws2.subscribe("same")
    s = SSE(hub.port)
    info = json.loads(s.recv()["data"])
    send_http(hub.port, info["socket_id"], info["halley:token"], {"event": "pusher:subscribe", "data": {"channel": "same"}})
    assert s.recv()["event"] == "pusher_internal:subscription_succeeded"
    p = Poll(hub.port)
    p.subscribe("same")
    p.poll()
    publish_all(hub.port, "same", items)
    results = []
    for c in (ws, ws2):
        got = [c.recv() for _ in items]
        results.append([(m["halley:offset"], m["data"]) for m in got])
    got = [s.recv() for _ in items]
    results.append([(m["halley:offset"], m["data"]) for m in got])
    got = []
    while len(got) < len(items):
        got += p.poll()
    results.append([(m["halley:offset"], m["data"]) for m in got])
    assert all(r == results[0] for r in results)
    for c in (ws, ws2, s):
        c.close()


def test_requests_for_a_session_move_to_its_loop(start_halley):
    """With two loops, a poll, a send or a resume lands on either; the hub moves the
    connection to the loop that owns the session (counted in /metrics) and nothing is lost."""
    h = start_halley("--app-token", "tok", "--metrics-port", "0", threads=2)
    polls = [Poll(h.port) for _ in range(12)]
    for i, p in enumerate(polls):
        p.subscribe(f"loops-{i % 3}")
        assert p.poll()[0]["event"] == "pusher_internal:subscription_succeeded"
    for k in range(5):
        for c in range(3):
            publish(h.port, {"channel": f"loops-{c}", "event": "e", "data": f"{c}:{k}"})
    for i, p in enumerate(polls):
        got = []
        while len(got) < 5:
            got += p.poll(timeout=10)
        assert [m["data"] for m in got] == [f"{i % 3}:{k}" for k in range(5)]
    status, _, body = __import__("hub_client").http_request(h.metrics_port, "GET", "/metrics")
    handoffs = int([l for l in body.decode().splitlines() if l.startswith("halley_connection_handoffs_total")][0].split()[1])
    assert handoffs > 0, "12 sessions x 8 fresh connections each: some must land on the other loop"
