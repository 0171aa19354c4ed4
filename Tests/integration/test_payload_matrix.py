"""Every payload size on every transport, byte for byte (issue 12).

A plain Pusher WebSocket session once got frames of about 1 KB and more with their tail
replaced by freed heap bytes: no test sent a payload that large. This file sends the sizes
around every frame-length boundary (0, 1, 125, 126, 1,000, 1,024, 4,096, 10,240, 65,535 and
65,536 bytes), as text and as binary, through every way in (`POST /publish`, the Pusher HTTP API through the
official SDK, client events) to every kind of subscriber at once (plain Pusher WebSocket and
resumable WebSocket, each with and without permessage-deflate; SSE; long-polling; pusher-js
`xhr_streaming` and `xhr`, rotating its stream past 256 KiB as pusher-js does), on one loop and
on two, and compares every byte. `/echo` gets the same sizes plus 1 MiB.

The API has no binary form (Pusher's `data` is a string), so binary goes through `POST
/publish` (`data_base64`) and binary client events (`halley:binary`); the official SDK refuses
data over Pusher's 10 KiB itself, so the API carries the sizes up to 10,240. The app allows
events of 96 KiB (65,536 binary bytes are 87,384 of base64 in a client event) and 1,000 client
events a second (the matrix sends 20 in a few seconds); sessions keep 4 MiB unacknowledged
(the SSE reader here never acknowledges) and SSE streams run to 3 MiB.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time

import pytest
from websockets.sync.client import connect as ws_connect

import pusher_xhr
from hub_client import SSE, WS, Poll, exact_text, payload_of, publish, pusher_client

SIZES = [0, 1, 125, 126, 1000, 1024, 4096, 10240, 65535, 65536]
ECHO_SIZES = SIZES + [1 << 20]
API_MAX = 10240  # the official SDK's own limit (Pusher's)
KEY, SECRET, TOKEN = "mkey", "msecret", "tok"
CHANNEL = "private-matrix"
DEADLINE = 10.0

# JSON-hostile and multi-byte characters, cycled to fill a text payload to an exact UTF-8 size.
_TEXT = ['"', "\\", "\n", "/", "é", "✓", "😀", "<", "\u2028", "\t", "a", "Z", "0", " "]


def text_of(n: int, seed: int) -> str:
    return exact_text(n, seed, _TEXT)


def binary_of(n: int, seed: int) -> bytes:
    return bytes((seed * 31 + k * 7 + (k >> 8)) % 256 for k in range(n))


def auth(socket_id: str, channel: str = CHANNEL) -> str:
    sig = hmac.new(SECRET.encode(), f"{socket_id}:{channel}".encode(), hashlib.sha256).hexdigest()
    return f"{KEY}:{sig}"


@pytest.fixture(params=[1, 2], ids=["one-loop", "two-loops"])
def hub(request, start_halley, tmp_path):
    cfg = tmp_path / "apps.json"
    cfg.write_text(json.dumps({"apps": [{"id": "5", "key": KEY, "secret": SECRET, "token": TOKEN,
                                         "max_event_bytes": 98304, "client_events_per_second": 1000}]}))
    return start_halley("--config", str(cfg), "--max-event-bytes", "98304", "--poll-timeout", "2",
                        "--session-buffer-bytes", str(4 << 20), "--stream-max-bytes", str(3 << 20),
                        threads=request.param)


# ---- subscribers: each returns the channel events it has received, as {event: payload bytes}

class WSSub:
    def __init__(self, port, halley, compression):
        self.name = f"ws{'-resumable' if halley else ''}{'-deflate' if compression else ''}"
        self.ws = WS(port, key=KEY, halley=halley, compression=compression)
        sid = self.ws.hello()["socket_id"]
        self.ws.send({"event": "pusher:subscribe", "data": {"channel": CHANNEL, "auth": auth(sid)}})
        m = self.ws.recv()
        assert m["event"] == "pusher_internal:subscription_succeeded", m
        self.socket_id = sid

    def take(self, want, deadline):
        got = {}
        while not want <= got.keys() and time.monotonic() < deadline:
            m = self.ws.recv(timeout=max(0.05, deadline - time.monotonic()))
            if m.get("channel") == CHANNEL and not m["event"].startswith("pusher"):
                got[m["event"]] = payload_of(m)
        return got

    def close(self):
        self.ws.close()


class SSESub:
    name = "sse"

    def __init__(self, port):
        self.sse = SSE(port, query=f"key={KEY}")
        assert self.sse.status == 200
        est = self.sse.recv()
        d = json.loads(est["data"])
        status, body = send(port, d["socket_id"], d["halley:token"],
                            {"event": "pusher:subscribe", "data": {"channel": CHANNEL, "auth": auth(d["socket_id"])}})
        assert status == 200, body
        m = self.sse.recv()
        assert m["event"] == "pusher_internal:subscription_succeeded", m

    def take(self, want, deadline):
        got = {}
        while not want <= got.keys() and time.monotonic() < deadline:
            m = self.sse.recv()
            if m.get("channel") == CHANNEL and not m["event"].startswith(("pusher", "halley:")):
                got[m["event"]] = payload_of(m)
        return got

    def close(self):
        self.sse.close()


class PollSub:
    name = "poll"

    def __init__(self, port):
        self.p = Poll(port, key=KEY)
        self.p.subscribe(CHANNEL, auth=auth(self.p.session))

    def take(self, want, deadline):
        got = {}
        while not want <= got.keys() and time.monotonic() < deadline:
            for m in self.p.poll(timeout=10):
                if m.get("channel") == CHANNEL and not m["event"].startswith(("pusher", "halley:")):
                    got[m["event"]] = payload_of(m)
        return got

    def close(self):
        pass


class XHRStreamSub:
    name = "xhr_streaming"

    def __init__(self, port):
        self.c = pusher_xhr.Client(port, key=KEY)
        self.st, est = pusher_xhr.open_stream(self.c)
        self.c.subscribe(CHANNEL, auth=auth(est["socket_id"]))
        m = pusher_xhr.next_message(self.st, "pusher_internal:subscription_succeeded")
        assert m["channel"] == CHANNEL, m

    def take(self, want, deadline):
        got = {}
        while not want <= got.keys() and time.monotonic() < deadline:
            if not self.st.pending and self.st.should_rotate():  # pusher-js's rotation past 256 KiB
                self.st.abort()
                self.st = self.c.stream()
                assert self.st.status == 200 and self.st.line() == b"h" * 2048
            try:
                # Short waits: past 256 KiB the hub stops writing until the stream is rotated.
                m = pusher_xhr.next_message(self.st, timeout=max(0.05, min(0.5, deadline - time.monotonic())))
            except TimeoutError:
                continue
            assert not isinstance(m, tuple), m
            if m.get("channel") == CHANNEL and not m["event"].startswith("pusher"):
                got[m["event"]] = payload_of(m)
        return got

    def close(self):
        self.st.abort()


class XHRPollSub:
    name = "xhr"

    def __init__(self, port):
        self.c = pusher_xhr.Client(port, key=KEY)
        status, _, frames = self.c.poll()
        assert status == 200 and frames == [("o", None)], (status, frames)
        est = self._messages()[0]
        assert est["event"] == "pusher:connection_established", est
        self.c.subscribe(CHANNEL, auth=auth(json.loads(est["data"])["socket_id"]))
        assert any(m["event"] == "pusher_internal:subscription_succeeded" for m in self._messages())

    def _messages(self):
        status, _, frames = self.c.poll(timeout=10)
        assert status == 200, (status, frames)
        out = []
        for f in frames:
            assert f[0] in ("a", "h"), f
            if f[0] == "a":
                out += f[1]
        return out

    def take(self, want, deadline):
        got = {}
        while not want <= got.keys() and time.monotonic() < deadline:
            for m in self._messages():
                if m.get("channel") == CHANNEL and not m["event"].startswith("pusher"):
                    got[m["event"]] = payload_of(m)
        return got

    def close(self):
        pass


def send(port, session, token, msg):
    from hub_client import send_http
    return send_http(port, session, token, msg)


def subscribers(port):
    return [WSSub(port, False, None), WSSub(port, False, "deflate"), WSSub(port, True, None), WSSub(port, True, "deflate"),
            SSESub(port), PollSub(port), XHRStreamSub(port), XHRPollSub(port)]


# ---- the matrix

def test_every_size_reaches_every_transport_byte_for_byte(hub):
    port = hub.port
    subs = subscribers(port)
    # The client-event sender: a plain Pusher WebSocket on the channel (not echoed to itself).
    sender = WSSub(port, False, "deflate")
    api = pusher_client(port, app_id="5", key=KEY, secret=SECRET)
    failures, broken = [], set()
    for seed, n in enumerate(SIZES):
        sent = {}
        text, blob = text_of(n, seed), binary_of(n, seed)
        # POST /publish, text and binary.
        for kind, body in (("text", {"data": text}), ("binary", {"data_base64": base64.b64encode(blob).decode()})):
            event = f"publish-{kind}-{n}"
            status, r = publish(port, {"channel": CHANNEL, "event": event, **body}, token=TOKEN)
            assert status in (201, 202), (event, status, r)
            sent[event] = text.encode() if kind == "text" else blob
        # The Pusher HTTP API through the official SDK (text only: the API has no binary form).
        if n <= API_MAX:
            api.trigger(CHANNEL, f"api-text-{n}", text)
            sent[f"api-text-{n}"] = text.encode()
        # Client events, text and binary (halley:binary).
        sender.ws.send({"event": f"client-text-{n}", "channel": CHANNEL, "data": text})
        sender.ws.send({"event": f"client-binary-{n}", "channel": CHANNEL, "data": base64.b64encode(blob).decode(),
                        "halley:binary": True})
        sent[f"client-text-{n}"] = text.encode()
        sent[f"client-binary-{n}"] = blob
        deadline = time.monotonic() + DEADLINE
        for s in subs:
            if s.name in broken:
                continue
            try:
                got = s.take(set(sent), deadline)
            except Exception as e:  # a transport the hub closed (1007, c frame): report, go on
                failures.append(f"{s.name}: {n} bytes: {type(e).__name__}: {str(e)[:200]}")
                broken.add(s.name)
                continue
            for event, want in sent.items():
                if event not in got:
                    failures.append(f"{s.name}: {event} not received")
                elif got[event] != want:
                    g = got[event]
                    at = next((i for i in range(min(len(g), len(want))) if g[i] != want[i]), min(len(g), len(want)))
                    failures.append(f"{s.name}: {event}: {len(g)} bytes, want {len(want)}; first difference at {at}: "
                                    f"{g[at:at + 16]!r} vs {want[at:at + 16]!r}")
    for s in subs + [sender]:
        s.close()
    assert not failures, "\n".join(failures)


@pytest.mark.parametrize("compression", [None, "deflate"])
def test_echo_returns_every_size_byte_for_byte(hub, compression):
    failures = []
    with ws_connect(f"ws://127.0.0.1:{hub.port}/echo", compression=compression, max_size=None, open_timeout=5) as ws:
        for seed, n in enumerate(ECHO_SIZES):
            for kind, payload in (("text", text_of(n, seed)), ("binary", binary_of(n, seed))):
                ws.send(payload)
                back = ws.recv(timeout=DEADLINE)
                if back != payload:
                    failures.append(f"/echo {kind} {n}: {len(back)} back, want {len(payload)}")
    assert not failures, "\n".join(failures)
