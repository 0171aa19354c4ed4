"""Edge cases found in review: compressed frames a kept inflater can read, a crash-proof
signature check, HEAD on session endpoints, session messages under the gap policy, and a
WebSocket that refuses a frame under its own send-buffer bound."""

from __future__ import annotations

import base64
import json
import os
import socket
import struct
import time
import zlib

import pytest

from hub_client import WS, http_request, publish


def raw_ws(port, path, extensions=None, rcvbuf=None):
    s = socket.socket()
    if rcvbuf:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    s.settimeout(5)
    s.connect(("127.0.0.1", port))
    key = base64.b64encode(os.urandom(16)).decode()
    head = f"GET {path} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
    if extensions:
        head += f"Sec-WebSocket-Extensions: {extensions}\r\n"
    s.sendall((head + "\r\n").encode())
    buf = b""
    while b"\r\n\r\n" not in buf:
        buf += s.recv(4096)
    resp, rest = buf.split(b"\r\n\r\n", 1)
    assert resp.startswith(b"HTTP/1.1 101"), resp
    return s, resp.decode(), rest


class FrameReader:
    def __init__(self, sock, rest=b""):
        self.s, self.buf = sock, rest

    def need(self, n):
        while len(self.buf) < n:
            chunk = self.s.recv(65536)
            if not chunk:
                raise EOFError
            self.buf += chunk
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def frame(self):
        b0, b1 = self.need(2)
        n = b1 & 0x7F
        if n == 126:
            (n,) = struct.unpack(">H", self.need(2))
        elif n == 127:
            (n,) = struct.unpack(">Q", self.need(8))
        return b0 & 0x0F, bool(b0 & 0x40), self.need(n)


def test_compressed_resumable_frames_inflate_with_a_kept_context_and_a_final_block(start_halley):
    h = start_halley("--app-token", "tok")
    s, resp, rest = raw_ws(h.port, "/app/app-key?protocol=7&halley=1", "permessage-deflate")
    assert "server_no_context_takeover" in resp
    r = FrameReader(s, rest)
    kept = zlib.decompressobj(-15)  # RFC 7692 lets a client keep its context: the server resets its own

    def message():
        op, rsv1, payload = r.frame()
        if not rsv1:
            return payload
        # A receiver that keeps its inflater must be able to go on after every message.
        text = kept.decompress(payload + b"\x00\x00\xff\xff")
        # And one that adds a final empty block (Go's way) must reach the end of the stream.
        fresh = zlib.decompressobj(-15)
        again = fresh.decompress(payload + b"\x00\x00\xff\xff\x01\x00\x00\xff\xff")
        assert fresh.eof and again == text
        return text

    assert json.loads(message())["event"] == "pusher:connection_established"
    mask = os.urandom(4)
    sub = json.dumps({"event": "pusher:subscribe", "data": {"channel": "z"}}).encode()
    s.sendall(bytes([0x81, 0x80 | len(sub)]) + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(sub)))
    assert json.loads(message())["event"] == "pusher_internal:subscription_succeeded"
    for i in range(5):
        publish(h.port, {"channel": "z", "event": "e", "data": f"{i}" * 400})
    for i in range(5):
        m = json.loads(message())
        assert m["data"] == f"{i}" * 400 and m["halley:seq"] == i + 2
    s.close()


def test_absurd_timestamps_are_refused_not_fatal(halley):
    for ts in ["-9223372036854775808", "9223372036854775807", "99999999999999999999", "x"]:
        q = f"auth_key=app-key&auth_timestamp={ts}&auth_version=1.0&body_md5=99914b932bd37a50b76c8f0bd55dc5ef&auth_signature=00"
        status, _, body = http_request(halley.port, "POST", "/publish?" + q, b"{}", {"Content-Type": "application/json"})
        assert status == 401, (ts, status, body)
        assert "auth_timestamp" in json.loads(body)["error"]
    assert halley.alive()


@pytest.mark.parametrize("path", ["/halley/sse?key=app-key", "/halley/poll?key=app-key", "/app/app-key?protocol=7"])
def test_head_opens_no_session(halley, path):
    status, headers, body = http_request(halley.port, "HEAD", path)
    assert status == 405 and headers["allow"] == "GET" and body == b""


def test_gap_policy_never_skips_a_subscription_answer(start_halley):
    h = start_halley("--app-token", "tok", "--slow-consumer", "gap", "--session-buffer-bytes", "2048")
    ws = WS(h.port)
    ws.hello()
    ws.subscribe("a")
    for i in range(20):
        publish(h.port, {"channel": "a", "event": "e", "data": "x" * 200})
    ws.subscribe("b", wait=False)
    got = []
    while True:
        try:
            got.append(ws.recv(timeout=0.5))
        except TimeoutError:
            break
    assert any(m["event"] == "pusher_internal:subscription_succeeded" and m["channel"] == "b" for m in got)
    ws.ack(got[-1]["halley:seq"])
    gap = ws.recv()
    assert gap["event"] == "halley:gap" and gap["channel"] == "a"


def test_a_frame_refused_by_the_websocket_bound_is_replayed_on_resume(start_halley):
    """--ws-backpressure drop with a small --ws-max-buffered: the WebSocket would drop a frame
    of a resumable session; the hub closes the transport instead, and resuming replays it."""
    h = start_halley("--app-token", "tok", "--ws-backpressure", "drop", "--ws-max-buffered", "4096",
                     "--session-buffer-bytes", "8000000", "--max-event-bytes", "10240")
    s, _, rest = raw_ws(h.port, "/app/app-key?protocol=7&halley=1", rcvbuf=4096)
    r = FrameReader(s, rest)
    info = json.loads(json.loads(r.frame()[2])["data"])
    mask = os.urandom(4)
    sub = json.dumps({"event": "pusher:subscribe", "data": {"channel": "big"}}).encode()
    s.sendall(bytes([0x81, 0x80 | len(sub)]) + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(sub)))
    total = 400
    for i in range(total):
        publish(h.port, {"channel": "big", "event": "e", "data": f"{i + 1:05d}" + "d" * 10000})
    # Read what the first connection got, up to its close.
    seen, close_code = [], None
    try:
        while True:
            op, _, payload = r.frame()
            if op == 8:
                close_code = struct.unpack(">H", payload[:2])[0]
                break
            m = json.loads(payload)
            if m["event"] == "e":
                seen.append(m)
    except (EOFError, socket.timeout):
        pass
    s.close()
    assert close_code == 1008, close_code
    assert len(seen) < total
    last = seen[-1]["halley:seq"] if seen else 1
    ws = WS(h.port, session=info["socket_id"], token=info["halley:token"], last_seq=last, compression=None)
    assert ws.hello()["halley:resumed"] is True
    rest_msgs = []
    while len(seen) + len(rest_msgs) < total:
        m = ws.recv()
        if m["event"] == "e":
            rest_msgs.append(m)
    data = [int(m["data"][:5]) for m in seen + rest_msgs]
    assert data == list(range(1, total + 1))


def test_messages_of_two_channels_keep_publish_order(start_halley):
    """Publications of one loop turn are delivered in runs of one channel, never reordered
    across channels: three publishes pipelined on one connection arrive A1, B2, A3."""
    h = start_halley("--app-token", "tok", threads=1)
    ws = WS(h.port)
    ws.hello()
    ws.subscribe("chA")
    ws.subscribe("chB")
    reqs = b""
    for ch, n in (("chA", 1), ("chB", 2), ("chA", 3)):
        body = json.dumps({"channel": ch, "event": "e", "data": str(n)}).encode()
        reqs += (f"POST /publish HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer tok\r\n"
                 f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n").encode() + body
    s = socket.create_connection(("127.0.0.1", h.port), timeout=5)
    s.sendall(reqs)
    got = [ws.recv() for _ in range(3)]
    assert [(m["channel"], m["data"]) for m in got] == [("chA", "1"), ("chB", "2"), ("chA", "3")]
    assert [m["halley:seq"] for m in got] == [3, 4, 5]  # after the two subscription answers
    s.close()
