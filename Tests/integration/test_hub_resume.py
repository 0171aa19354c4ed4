"""Lossless resume: one session moves between WebSocket, long-polling and SSE (and back)
while a publisher sends continuously, with clean and abrupt disconnects; every message
arrives once and in order. Then what happens after the linger time: history recovery, an
explicit "not recovered", and the slow-consumer policies."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import select
import socket
import struct
import threading
import time

import pytest

from hub_client import (HOST, SSE, WS, Dedup, Poll, http_request, payload_of, publish, pusher_client, send_http,
                        token_header, wait_until)


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
        p.port, p.origin, p.source = self.port, None, None
        p.session, p.token, p.cursor = self.session, self.token, self.last
        while not until():
            for m in p.poll(timeout=10):
                self.take(m)
            p.cursor = self.last
        if abrupt:
            # One more poll, dropped (RST) while the hub holds it or is answering it: what it
            # carried was never read, and must come again on the next transport.
            drop_poll(self.port, f"/halley/poll?session={self.session}&cursor={self.last}", token=self.token)

    def run_sse(self, until, abrupt):
        s = SSE(self.port, last_event_id=f"{self.last}:{self.session}:{self.token}")
        assert s.status == 200
        while not until():
            e = s.event()
            if e is None:
                break  # rotated: the next phase reopens
            self.take(e[1])
        s.abort() if abrupt else s.close()


def drop_poll(port, path, hold=0.1, token=None):
    """Sends a long-poll on a raw socket, lets the hub hold it `hold` seconds, then resets
    the connection without reading. True if nothing had been answered by then."""
    sock = socket.create_connection((HOST, port), timeout=5)
    extra = f"X-Halley-Token: {token}\r\n" if token else ""
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n{extra}\r\n".encode())
    time.sleep(hold)
    waiting = not select.select([sock], [], [], 0)[0]
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()
    return waiting


BINARY_EVERY = 7


def publisher(port, channel, n, interval, stop):
    """Publishes "1".."n"; every BINARY_EVERY-th as a binary payload (data_base64)."""
    for i in range(n):
        if stop.is_set():
            return
        body = {"channel": channel, "event": "tick"}
        if (i + 1) % BINARY_EVERY == 0:
            body["data_base64"] = base64.b64encode(str(i + 1).encode()).decode()
        else:
            body["data"] = str(i + 1)
        status, r = publish(port, body)
        assert status in (201, 202), (status, r)
        time.sleep(interval)


def is_binary(m):
    return bool(m.get("halley:binary")) or "halley:binary_payload" in m


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
    ticks = c.d.events("tick")
    data = [int(payload_of(m)) for m in ticks]
    assert data == list(range(1, total + 1)), "every message once and in order"
    offsets = [m["halley:offset"] for m in ticks]
    assert offsets == list(range(1, total + 1))
    # Binary payloads stay binary whichever transport carried (or replayed) them.
    assert [is_binary(m) for m in ticks] == [(n % BINARY_EVERY == 0) for n in data]


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


# ---- long-poll dropped mid-wait, binary replay


def test_long_poll_dropped_while_waiting_loses_nothing(start_halley):
    """A long-poll reset by the client while the hub holds it: the hub lets it go (the next
    poll is not refused as overlapping), and what arrives afterwards, or arrived for the
    dropped poll, comes with the next poll once and in order."""
    h = start_halley("--app-token", "tok")
    p = Poll(h.port)
    p.subscribe("drop")
    assert p.poll()[0]["event"] == "pusher_internal:subscription_succeeded"
    path = f"/halley/poll?session={p.session}&cursor={p.cursor}"
    assert drop_poll(h.port, path, hold=0.5, token=p.token), "the poll was answered without a message"
    time.sleep(0.2)
    publish(h.port, {"channel": "drop", "event": "e", "data": "a"})
    publish(h.port, {"channel": "drop", "event": "e", "data_base64": base64.b64encode(b"\x00\xffb").decode()})
    got = p.poll(timeout=5)  # the same cursor: the dropped poll acknowledged nothing more
    assert [payload_of(m) for m in got] == [b"a", b"\x00\xffb"], got
    assert [m["halley:seq"] for m in got] == [p.cursor - 1, p.cursor]
    # A message that a dropped poll was answered with (never read) comes again.
    t = threading.Timer(0.3, publish, args=(h.port, {"channel": "drop", "event": "e", "data": "c"}))
    t.start()
    assert not drop_poll(h.port, f"/halley/poll?session={p.session}&cursor={p.cursor}", hold=0.8, token=p.token)
    t.join()
    got = p.poll(timeout=5)
    assert [m["data"] for m in got] == ["c"], got
    publish(h.port, {"channel": "drop", "event": "e", "data": "d"})
    assert [m["data"] for m in p.poll(timeout=5)] == ["d"]


def test_binary_payload_is_replayed_on_every_transport(start_halley):
    """One unacknowledged binary message, resumed from WebSocket to long-poll to SSE and back
    to WebSocket: each time the same bytes and seq (a binary frame on WebSocket, base64 with
    `halley:binary` on the text transports)."""
    h = start_halley("--app-token", "tok")
    ws = WS(h.port)
    info = ws.hello()
    sid, token = info["socket_id"], info["halley:token"]
    sub = ws.subscribe("bin")
    blob = bytes(range(256)) * 3
    status, _ = publish(h.port, {"channel": "bin", "event": "blob", "data_base64": base64.b64encode(blob).decode()})
    assert status == 201
    m = ws.recv()
    assert m["halley:binary_payload"] == blob and "data" not in m, m
    seq = m["halley:seq"]
    ws.abort()
    last = sub["halley:seq"]  # the subscription answer was processed, the blob was not
    status, _, body = http_request(h.port, "GET", f"/halley/poll?session={sid}&cursor={last}", headers=token_header(token))
    j = json.loads(body)
    assert status == 200 and len(j["messages"]) == 1, j
    m = j["messages"][0]
    assert m["halley:binary"] is True and base64.b64decode(m["data"]) == blob and m["halley:seq"] == seq, m
    s = SSE(h.port, query=f"session={sid}&last_seq={last}", token=token)
    est = json.loads(s.recv()["data"])
    assert est["halley:resumed"] is True and est["socket_id"] == sid
    m = s.recv()
    assert m["halley:binary"] is True and base64.b64decode(m["data"]) == blob and m["halley:seq"] == seq, m
    s.abort()
    ws = WS(h.port, session=sid, token=token, last_seq=last)
    assert ws.hello()["halley:resumed"] is True
    m = ws.recv()
    assert m["halley:binary_payload"] == blob and m["halley:seq"] == seq and m["event"] == "blob", m
    ws.close()


# ---- SSE resume by query


def test_sse_resumes_with_last_event_id_query_parameter(start_halley):
    """With --allow-tokens-in-urls, `?last_event_id=` (no Last-Event-ID header, no key)
    resumes the session: the messages after its seq, once and in order, then live ones; and
    it acknowledges up to that seq. (Without the flag it is refused: test_tokens_in_urls.py.)"""
    h = start_halley("--app-token", "tok", "--allow-tokens-in-urls")
    s = SSE(h.port)
    first_id, est = s.event()
    info = json.loads(est["data"])
    sid, token = info["socket_id"], info["halley:token"]
    assert first_id == f"0:{sid}:{token}"
    send_http(h.port, sid, token, {"event": "pusher:subscribe", "data": {"channel": "lei"}})
    assert s.recv()["event"] == "pusher_internal:subscription_succeeded"
    for i in range(5):
        publish(h.port, {"channel": "lei", "event": "tick", "data": str(i + 1)})
    ids = {}
    for _ in range(5):
        eid, m = s.event()
        ids[m["data"]] = eid
        assert eid == f"{m['halley:seq']}:{sid}:{token}"
    s.abort()
    for i in range(5, 8):
        publish(h.port, {"channel": "lei", "event": "tick", "data": str(i + 1)})
    n = ids["3"]  # processed up to "3"
    r = SSE(h.port, query=f"last_event_id={n}")
    assert r.status == 200
    eid, est = r.event()
    info = json.loads(est["data"])
    assert info["socket_id"] == sid and info["halley:resumed"] is True, info
    assert eid == n
    got = [r.recv() for _ in range(5)]
    assert [m["data"] for m in got] == ["4", "5", "6", "7", "8"], got
    seq3 = int(n.split(":")[0])
    assert [m["halley:seq"] for m in got] == list(range(seq3 + 1, seq3 + 6))
    # Nothing else was queued before the live stream: the next event is the next publish.
    publish(h.port, {"channel": "lei", "event": "tick", "data": "9"})
    m = r.recv()
    assert m["data"] == "9" and m["halley:seq"] == seq3 + 6, m
    r.abort()
    # The resume acknowledged up to "3": an older id gets nothing before "4".
    old = SSE(h.port, query=f"last_event_id={ids['1']}")
    assert json.loads(old.recv()["data"])["halley:resumed"] is True
    assert old.recv()["data"] == "4"
    old.abort()


# ---- linger expiry ends the session and its subscriptions


def open_and_drop(h, kind, channel):
    """A resumable session subscribed to `channel` over `kind`, whose transport then goes
    away; returns (session id, token)."""
    if kind == "ws":
        ws = WS(h.port)
        info = ws.hello()
        ws.subscribe(channel)
        ws.abort()
        return info["socket_id"], info["halley:token"]
    if kind == "sse":
        s = SSE(h.port)
        info = json.loads(s.recv()["data"])
        send_http(h.port, info["socket_id"], info["halley:token"], {"event": "pusher:subscribe", "data": {"channel": channel}})
        assert s.recv()["event"] == "pusher_internal:subscription_succeeded"
        s.abort()
        return info["socket_id"], info["halley:token"]
    p = Poll(h.port)
    p.subscribe(channel)
    assert p.poll()[0]["event"] == "pusher_internal:subscription_succeeded"
    return p.session, p.token  # and it polls no more


@pytest.mark.parametrize("kind", ["ws", "sse", "poll"])
def test_expired_session_ends_its_subscriptions(start_halley, kind):
    # 3 s: expiry is checked on the once-a-second tick against whole seconds, so a 1 s linger
    # could end before the first publish below.
    h = start_halley("--app-token", "tok", "--session-linger", "3")
    sid, token = open_and_drop(h, kind, "linger")
    # Lingering: still subscribed (its messages are kept for a resume).
    status, r = publish(h.port, {"channel": "linger", "event": "e", "data": "kept"})
    assert status == 201 and r["sessions"] == 1, r
    # Expired: nobody is subscribed any more.
    assert wait_until(lambda: publish(h.port, {"channel": "linger", "event": "e", "data": "x"})[0] == 202, timeout=10)
    status, r = publish(h.port, {"channel": "linger", "event": "e", "data": "gone"})
    assert status == 202 and r["sessions"] == 0, r
    # Every transport says why it cannot resume.
    ws = WS(h.port, session=sid, token=token, last_seq=0)
    again = ws.hello()
    assert again["halley:resumed"] is False and again["halley:reason"] == "expired" and again["socket_id"] != sid
    ws.close()
    status, body = send_http(h.port, sid, token, {"event": "pusher:ping", "data": {}})
    assert status == 404 and body == {"error": "session not found", "halley:reason": "expired"}, body
    status, _, body = http_request(h.port, "GET", f"/halley/poll?session={sid}&cursor=0", headers=token_header(token))
    assert status == 404 and json.loads(body)["halley:reason"] == "expired", body
    s = SSE(h.port, query="", last_event_id=f"0:{sid}:{token}")
    assert s.status == 400  # no key: nothing to start instead
    assert json.loads(s.resp.read()) == {"error": "missing key", "code": 4001, "halley:reason": "expired"}
    s.close()
    s = SSE(h.port, query="key=app-key", last_event_id=f"0:{sid}:{token}")
    info = json.loads(s.recv()["data"])
    assert info["halley:resumed"] is False and info["halley:reason"] == "expired" and info["socket_id"] != sid
    s.close()


def test_wrong_token_reads_as_unknown_id_and_terminated_is_told_to_its_client(start_halley):
    """A live session shown with the wrong token is answered exactly as an id that was never
    issued (`expired`; the session is not touched): the answer does not tell whether an id is
    live. `terminated` (ended by the app) is told to the client that shows the right token,
    and `expired` to anyone else."""
    h = start_halley("--app-token", "tok")
    ws = WS(h.port)
    info = ws.hello()
    sid, token = info["socket_id"], info["halley:token"]
    wrong = ("0" if token[0] != "0" else "1") + token[1:]
    other = WS(h.port, session=sid, token=wrong, last_seq=0)
    again = other.hello()
    assert again["halley:resumed"] is False and again["halley:reason"] == "expired" and again["socket_id"] != sid
    other.close()
    status, body = send_http(h.port, sid, wrong, {"event": "pusher:ping", "data": {}})
    never = send_http(h.port, "1234.5678", wrong, {"event": "pusher:ping", "data": {}})
    assert (status, body) == never == (404, {"error": "session not found", "halley:reason": "expired"}), (body, never)
    ws.send({"event": "pusher:ping", "data": {}})
    assert ws.recv()["event"] == "pusher:pong"  # untouched
    # Terminated by the app.
    user_data = json.dumps({"id": "u-7"})
    sig = hmac.new(b"app-secret", f"{sid}::user::{user_data}".encode(), hashlib.sha256).hexdigest()
    ws.send({"event": "pusher:signin", "data": {"auth": f"app-key:{sig}", "user_data": user_data}})
    assert ws.recv()["event"] == "pusher:signin_success"
    assert pusher_client(h.port).terminate_user_connections("u-7") == {}
    m = ws.recv()
    assert m["event"] == "pusher:error" and m["data"]["code"] == 4009, m
    ws.close()
    w2 = WS(h.port, session=sid, token=token, last_seq=0)
    again = w2.hello()
    assert again["halley:resumed"] is False and again["halley:reason"] == "terminated", again
    w2.close()
    status, _, body = http_request(h.port, "GET", f"/halley/poll?session={sid}&cursor=0", headers=token_header(token))
    assert status == 404 and json.loads(body)["halley:reason"] == "terminated", body
    # The terminated session with a wrong token: as if it never existed.
    status, _, body = http_request(h.port, "GET", f"/halley/poll?session={sid}&cursor=0", headers=token_header(wrong))
    assert status == 404 and json.loads(body)["halley:reason"] == "expired", body
    # Never issued.
    status, _, body = http_request(h.port, "GET", f"/halley/poll?session=1234.5678&cursor=0", headers=token_header(token))
    assert status == 404 and json.loads(body)["halley:reason"] == "expired", body
