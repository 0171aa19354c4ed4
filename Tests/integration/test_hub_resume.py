"""Lossless resume: one session moves between WebSocket, long-polling and SSE (and back)
while a publisher sends continuously, with clean and abrupt disconnects; every message
arrives once and in order. Then what happens after the linger time: history recovery, an
explicit "not recovered", and the slow-consumer policies."""

from __future__ import annotations

import json
import threading
import time

import pytest

from hub_client import SSE, WS, Dedup, Poll, publish, send_http, wait_until


class Client:
    """A resuming client, as halley.js behaves: remembers session, token and the last seq it
    processed, and drops messages it has already seen."""

    def __init__(self, port):
        self.port = port
        self.session = self.token = None
        self.d = Dedup()

    @property
    def last(self):
        return self.d.last_seq

    def take(self, m):
        if m["event"] == "pusher:connection_established":
            info = json.loads(m["data"])
            if self.session is not None:
                assert info["socket_id"] == self.session and info["halley:resumed"] is True, info
            self.session, self.token = info["socket_id"], info["halley:token"]
            return
        if m["event"] == "halley:heartbeat":
            return
        self.d.add(m)

    def received(self):
        return len(self.d.events())

    def run_ws(self, until, abrupt):
        ws = WS(self.port, session=self.session, token=self.token, last_seq=self.last) if self.session else WS(self.port)
        self.take(ws.recv())
        if self.session and not any(m["event"].startswith("pusher_internal") for m in self.d.messages):
            ws.subscribe("resume", wait=False)
        n = 0
        while not until():
            try:
                m = ws.recv(timeout=0.2)
            except TimeoutError:
                continue
            self.take(m)
            n += 1
            if n % 10 == 0:
                ws.ack(self.last)
        ws.abort() if abrupt else ws.close()

    def run_poll(self, until, abrupt):
        p = Poll.__new__(Poll)
        p.port, p.origin = self.port, None
        p.session, p.token, p.cursor = self.session, self.token, self.last
        while not until():
            for m in p.poll(timeout=10):
                self.take(m)
            p.cursor = self.last

    def run_sse(self, until, abrupt):
        s = SSE(self.port, last_event_id=f"{self.last}:{self.session}:{self.token}")
        assert s.status == 200
        while not until():
            e = s.event()
            if e is None:
                break  # rotated: the next phase reopens
            self.take(e[1])
        s.abort() if abrupt else s.close()


def publisher(port, channel, n, interval, stop):
    for i in range(n):
        if stop.is_set():
            return
        status, r = publish(port, {"channel": channel, "event": "tick", "data": str(i + 1)})
        assert status in (201, 202), (status, r)
        time.sleep(interval)


@pytest.mark.parametrize("abrupt", [False, True])
def test_switching_transports_loses_nothing(start_halley, abrupt):
    h = start_halley("--app-token", "tok")
    c = Client(h.port)
    # Start on WebSocket and subscribe.
    ws = WS(h.port)
    c.take(ws.recv())
    ws.subscribe("resume", wait=False)
    c.take(ws.recv())
    ws.close()
    total = 600
    stop = threading.Event()
    pub = threading.Thread(target=publisher, args=(h.port, "resume", total, 0.002, stop))
    pub.start()
    try:
        plan = ["poll", "sse", "ws", "poll", "ws", "sse", "ws", "poll", "sse", "poll", "ws"]
        for k, kind in enumerate(plan):
            target = (k + 1) * total // (len(plan) + 1)
            deadline = time.monotonic() + 10
            until = (lambda t, d: lambda: c.received() >= t or time.monotonic() > d)(target, deadline)
            getattr(c, f"run_{kind}")(until, abrupt)
            assert c.received() >= target, f"{kind}: stuck at {c.received()} (last seq {c.last})"
        pub.join(30)
        # The last transport drains everything.
        deadline = time.monotonic() + 10
        c.run_ws(lambda: c.received() >= total or time.monotonic() > deadline, abrupt=False)
    finally:
        stop.set()
        pub.join(5)
    data = [int(m["data"]) for m in c.d.events("tick")]
    assert data == list(range(1, total + 1)), "every message once and in order"
    offsets = [m["halley:offset"] for m in c.d.events("tick")]
    assert offsets == list(range(1, total + 1))


def test_sse_reconnects_after_rotation_with_last_event_id(start_halley):
    h = start_halley("--app-token", "tok", "--stream-max-bytes", "2048")
    c = Client(h.port)
    s = SSE(h.port)
    c.take(s.recv())
    send_http(h.port, c.session, c.token, {"event": "pusher:subscribe", "data": {"channel": "rot"}})
    for i in range(100):
        publish(h.port, {"channel": "rot", "event": "tick", "data": str(i + 1) + "x" * 100})
    rotations = 0
    deadline = time.monotonic() + 10
    while c.received() < 100 and time.monotonic() < deadline:
        e = s.event()
        if e is None:
            rotations += 1
            s = SSE(h.port, last_event_id=f"{c.last}:{c.session}:{c.token}")
            continue
        if e[1]["event"] == "halley:reconnect":
            continue
        c.take(e[1])
    assert rotations >= 3
    assert [int(m["data"].rstrip("x")) for m in c.d.events()] == list(range(1, 101))


def test_sse_heartbeat(start_halley):
    h = start_halley("--heartbeat", "1")
    s = SSE(h.port)
    s.recv()
    t0 = time.monotonic()
    m = s.recv()
    assert m == {"event": "halley:heartbeat"}
    assert time.monotonic() - t0 < 3


def test_resume_after_linger_is_refused_and_history_recovers(start_halley):
    h = start_halley("--app-token", "tok", "--session-linger", "1")
    ws = WS(h.port)
    info = ws.hello()
    sub = ws.subscribe("hist")
    publish(h.port, {"channel": "hist", "event": "tick", "data": "1"})
    m = ws.recv()
    ws.ack(m["halley:seq"])
    ws.abort()
    for i in range(2, 6):
        publish(h.port, {"channel": "hist", "event": "tick", "data": str(i)})
    time.sleep(2.5)  # linger 1 s, swept once a second
    ws2 = WS(h.port, session=info["socket_id"], token=info["halley:token"], last_seq=m["halley:seq"])
    again = ws2.hello()
    assert again["halley:resumed"] is False and again["halley:reason"] == "expired"
    assert again["socket_id"] != info["socket_id"]
    r = ws2.subscribe("hist", since={"epoch": sub["halley:epoch"], "offset": m["halley:offset"]})
    assert r["halley:recovered"] is True
    got = [ws2.recv() for _ in range(4)]
    assert [g["data"] for g in got] == ["2", "3", "4", "5"]
    assert [g["halley:offset"] for g in got] == [2, 3, 4, 5]
    # Live messages follow the recovered ones.
    publish(h.port, {"channel": "hist", "event": "tick", "data": "6"})
    assert ws2.recv()["data"] == "6"


def test_not_recovered_when_history_is_gone_or_epoch_differs(start_halley):
    h = start_halley("--app-token", "tok", "--history-size", "3")
    ws = WS(h.port)
    ws.hello()
    sub = ws.subscribe("short")
    for i in range(10):
        publish(h.port, {"channel": "short", "event": "tick", "data": str(i + 1)})
    late = WS(h.port)
    late.hello()
    r = late.subscribe("short", since={"epoch": sub["halley:epoch"], "offset": 2})
    assert r["halley:recovered"] is False and r["halley:reason"] == "history_expired"
    assert r["halley:offset"] == 10
    r2 = late.subscribe("short2", since={"epoch": "nope", "offset": 0})
    assert r2["halley:recovered"] is False and r2["halley:reason"] == "epoch_changed"
    # Within the kept history: recovered.
    other = WS(h.port)
    other.hello()
    r3 = other.subscribe("short", since={"epoch": sub["halley:epoch"], "offset": 7})
    assert r3["halley:recovered"] is True
    assert [other.recv()["data"] for _ in range(3)] == ["8", "9", "10"]
    # Nothing more was sent to `late` (no silent history after "not recovered").
    publish(h.port, {"channel": "short", "event": "tick", "data": "11"})
    assert late.recv()["data"] == "11"


def test_slow_consumer_gap_notice(start_halley):
    h = start_halley("--app-token", "tok", "--slow-consumer", "gap", "--session-buffer-bytes", "4096")
    ws = WS(h.port)
    ws.hello()
    sub = ws.subscribe("slow")
    for i in range(40):
        publish(h.port, {"channel": "slow", "event": "tick", "data": f"{i + 1}:" + "y" * 200})
    # Never acked: about 4096 / 300 messages fit; the rest are skipped.
    got = []
    while True:
        try:
            got.append(ws.recv(timeout=0.5))
        except TimeoutError:
            break
    ticks = [m for m in got if m["event"] == "tick"]
    assert 5 <= len(ticks) < 40
    assert not any(m["event"] == "halley:gap" for m in got)
    ws.ack(got[-1]["halley:seq"])
    gap = ws.recv()
    assert gap["event"] == "halley:gap" and gap["channel"] == "slow"
    g = json.loads(gap["data"])
    assert g == {"from": ticks[-1]["halley:offset"] + 1, "to": 40}
    publish(h.port, {"channel": "slow", "event": "tick", "data": "41:"})
    assert ws.recv()["halley:offset"] == 41
    assert "buffer full" in h.log_text()


def test_slow_consumer_close_policy(start_halley):
    h = start_halley("--app-token", "tok", "--session-buffer-bytes", "4096")
    ws = WS(h.port)
    info = ws.hello()
    ws.subscribe("slow")
    for i in range(40):
        publish(h.port, {"channel": "slow", "event": "tick", "data": "z" * 200})
    codes = []
    try:
        while True:
            m = ws.recv(timeout=2)
            if m["event"] == "pusher:error":
                codes.append(m["data"]["code"])
    except Exception:
        pass
    assert codes == [4100]
    assert ws.ws.close_code == 4100
    # The session is gone: resuming it starts over with the reason.
    ws2 = WS(h.port, session=info["socket_id"], token=info["halley:token"], last_seq=0)
    again = ws2.hello()
    assert again["halley:resumed"] is False and again["halley:reason"] == "buffer_overflow"


def test_plain_pusher_session_ends_with_its_socket(start_halley):
    h = start_halley("--app-token", "tok")
    ws = WS(h.port, halley=False)
    ws.hello()
    ws.subscribe("plain")
    status, r = publish(h.port, {"channel": "plain", "event": "e", "data": "x"})
    assert status == 201 and r["sessions"] == 1
    ws.close()
    assert wait_until(lambda: publish(h.port, {"channel": "plain", "event": "e", "data": "x"})[0] == 202)
