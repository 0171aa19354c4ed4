"""WebSocket over real sockets: the Python `websockets` client (a third-party
implementation) against /echo, with and without permessage-deflate, plus raw frames for the
protocol violations no well-behaved client sends."""

from __future__ import annotations

import asyncio
import base64
import os
import socket
import struct
import time

import pytest
import websockets
from websockets.exceptions import ConnectionClosed

from halley_client import Client, connect, rss_kb


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, timeout=30))


def url(h):
    return f"ws://127.0.0.1:{h.port}/echo"


@pytest.mark.parametrize("compression", [None, "deflate"])
def test_echo_text_binary_large_and_ping(halley, compression):
    async def go():
        async with websockets.connect(url(halley), compression=compression, max_size=None) as ws:
            ext = ws.response.headers.get("Sec-WebSocket-Extensions")
            if compression:
                assert ext is not None and ext.startswith("permessage-deflate")
            else:
                assert ext is None
            await ws.send("hello, halley")
            assert await ws.recv() == "hello, halley"
            await ws.send("héllo wörld €𝄞")
            assert await ws.recv() == "héllo wörld €𝄞"
            payload = os.urandom(70000)
            await ws.send(payload)
            assert await ws.recv() == payload
            text = "abc" * 300000  # 900 kB, under the 1 MiB default
            await ws.send(text)
            assert await ws.recv() == text
            # Fragmented message from the client.
            await ws.send(["frag", "mented", " message"])
            assert await ws.recv() == "fragmented message"
            pong = await ws.ping(b"are you there")
            await asyncio.wait_for(pong, 5)
            await ws.send(b"")
            assert await ws.recv() == b""
            await ws.close()
            assert ws.close_code == 1000

    run(go())


def test_many_messages_in_order(halley):
    async def go():
        async with websockets.connect(url(halley)) as ws:
            for i in range(500):
                await ws.send(f"m{i}")
            for i in range(500):
                assert await ws.recv() == f"m{i}"

    run(go())


def test_compressed_echo_is_compressed_on_the_wire(halley):
    # A large repetitive message comes back compressed (RSV1); small ones do not.
    s, leftover = raw_handshake(halley.port, extensions="permessage-deflate; client_no_context_takeover")
    import zlib
    comp = zlib.compressobj(wbits=-15)
    body = comp.compress(b"x" * 5000) + comp.flush(zlib.Z_SYNC_FLUSH)
    assert body.endswith(b"\x00\x00\xff\xff")
    s.sendall(frame(0x2, body[:-4], rsv1=True))
    b0, payload = read_frame(s, leftover)
    assert b0 & 0x40, "large echo should be compressed"
    assert zlib.decompressobj(wbits=-15).decompress(payload + b"\x00\x00\xff\xff") == b"x" * 5000
    s.sendall(frame(0x1, b"tiny"))
    b0, payload = read_frame(s)
    assert not b0 & 0x40 and payload == b"tiny"
    s.close()


def _extensions(head):
    """The Sec-WebSocket-Extensions value of a response head (bytes), or None."""
    ext = [line.split(b":", 1)[1].strip().decode() for line in head.split(b"\r\n")
           if line.lower().startswith(b"sec-websocket-extensions:")]
    return ext[0] if ext else None


@pytest.mark.parametrize("takeover", ["default", "on"])
def test_a_browsers_deflate_offer_and_the_clients_context(start_halley, takeover):
    """A browser offers `permessage-deflate; client_max_window_bits` (context takeover). By
    default the hub answers `client_no_context_takeover` too and inflates every client with
    one stream per loop, reset after each message: messages compressed on their own come back
    whole, and a message that refers back into the one before (the context the hub asked the
    client not to keep) is bad deflate data (1007). With --ws-client-context-takeover on the
    client keeps its context: such messages inflate, which only an inflater of the
    connection's own can do."""
    import zlib
    h = start_halley(*(["--ws-client-context-takeover", "on"] if takeover == "on" else []))
    s, leftover, head = raw_handshake_head(h.port, extensions="permessage-deflate; client_max_window_bits")
    ext = _extensions(head)
    params = [p.strip() for p in ext.split(";")]
    assert params[0] == "permessage-deflate" and "server_no_context_takeover" in params
    assert ("client_no_context_takeover" in params) == (takeover == "default"), ext
    text = b"the same sentence, again and again, " * 40

    def echo(body, first=False):
        s.sendall(frame(0x2, body[:-4], rsv1=True))
        b0, payload = read_frame(s, leftover if first else b"")
        if b0 & 0x40:
            payload = zlib.decompressobj(wbits=-15).decompress(payload + b"\x00\x00\xff\xff")
        return b0 & 0x0F, payload

    for i in range(2):  # each on its own: fine either way
        comp = zlib.compressobj(wbits=-15)
        assert echo(comp.compress(text + b"%d" % i) + comp.flush(zlib.Z_SYNC_FLUSH), first=i == 0) == (0x2, text + b"%d" % i)
    shared = zlib.compressobj(wbits=-15)
    assert echo(shared.compress(text + b"a") + shared.flush(zlib.Z_SYNC_FLUSH)) == (0x2, text + b"a")
    repeat = shared.compress(text + b"b") + shared.flush(zlib.Z_SYNC_FLUSH)  # refers back into "a"
    op, payload = echo(repeat)
    if takeover == "on":
        assert (op, payload) == (0x2, text + b"b")
    else:
        assert op == 0x8 and struct.unpack("!H", payload[:2])[0] == 1007, (op, payload[:40])
    s.close()


def test_python_websockets_accepts_the_hubs_client_no_context_takeover(halley):
    """Python `websockets` offers context takeover; it takes the hub's
    `client_no_context_takeover` and compresses each message on its own."""
    async def go():
        async with websockets.connect(url(halley), compression="deflate", max_size=None) as ws:
            ext = ws.response.headers.get("Sec-WebSocket-Extensions", "")
            assert "client_no_context_takeover" in ext, ext
            for i in range(20):
                m = ("payload %d " % i) * (i * 50 + 1)
                await ws.send(m)
                assert await ws.recv() == m

    run(go())


def test_message_over_limit_closes_1009(start_halley):
    h = start_halley("--ws-max-message", "1000")

    async def go():
        async with websockets.connect(url(h), max_size=None) as ws:
            await ws.send("x" * 1000)
            assert await ws.recv() == "x" * 1000
            await ws.send("x" * 1001)
            with pytest.raises(ConnectionClosed):
                await ws.recv()
            assert ws.close_code == 1009

    run(go())
    assert h.wait_for_log(r"websocket close 1009", timeout=2)


def test_compressed_bomb_closes_1009(start_halley):
    h = start_halley("--ws-max-message", "100000")
    import zlib
    comp = zlib.compressobj(wbits=-15)
    body = comp.compress(b"\0" * 5_000_000) + comp.flush(zlib.Z_SYNC_FLUSH)
    assert len(body) < 10_000
    s, leftover = raw_handshake(h.port, extensions="permessage-deflate")
    s.sendall(frame(0x2, body[:-4], rsv1=True))
    b0, payload = read_frame(s, leftover)
    assert b0 & 0x0F == 0x8 and struct.unpack("!H", payload[:2])[0] == 1009
    s.close()


# ---- raw frames for what well-behaved clients never send

def raw_handshake(port, path="/echo", extensions=None, extra=b""):
    s, rest, _ = raw_handshake_head(port, path, extensions, extra)
    return s, rest


def raw_handshake_head(port, path="/echo", extensions=None, extra=b""):
    """The socket, the bytes after the 101's head, and the head."""
    s = connect(port)
    key = base64.b64encode(os.urandom(16))
    req = (b"GET " + path.encode() + b" HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
           b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: " + key + b"\r\n")
    if extensions:
        req += b"Sec-WebSocket-Extensions: " + extensions.encode() + b"\r\n"
    s.sendall(req + extra + b"\r\n")
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = s.recv(4096)
        assert chunk, "closed during handshake"
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 101 "), head
    return s, rest, head


def frame(opcode, payload, fin=True, rsv1=False, mask=True):
    b0 = (0x80 if fin else 0) | (0x40 if rsv1 else 0) | opcode
    n = len(payload)
    if n < 126:
        hdr = bytes([b0, (0x80 if mask else 0) | n])
    elif n < 65536:
        hdr = bytes([b0, (0x80 if mask else 0) | 126]) + struct.pack("!H", n)
    else:
        hdr = bytes([b0, (0x80 if mask else 0) | 127]) + struct.pack("!Q", n)
    if not mask:
        return hdr + payload
    key = os.urandom(4)
    return hdr + key + bytes(b ^ key[i & 3] for i, b in enumerate(payload))


_pending = {}


def read_frame(s, leftover=b""):
    buf = _pending.pop(id(s), b"") + leftover
    deadline = time.monotonic() + 5

    def need(n):
        nonlocal buf
        while len(buf) < n:
            assert time.monotonic() < deadline, "timed out reading a frame"
            chunk = s.recv(65536)
            assert chunk, "connection closed"
            buf += chunk

    need(2)
    b0, b1 = buf[0], buf[1]
    assert not b1 & 0x80, "server frames are never masked"
    n, off = b1 & 0x7F, 2
    if n == 126:
        need(4)
        n, off = struct.unpack("!H", buf[2:4])[0], 4
    elif n == 127:
        need(10)
        n, off = struct.unpack("!Q", buf[2:10])[0], 10
    need(off + n)
    payload = buf[off:off + n]
    _pending[id(s)] = buf[off + n:]
    return b0, payload


def expect_close(s, code, leftover=b"", answer=False):
    b0, payload = read_frame(s, leftover)
    assert b0 == 0x88, f"expected a close frame, got {b0:#x}"
    assert struct.unpack("!H", payload[:2])[0] == code, payload
    if answer:  # the closing handshake: the server waits for our close, then closes TCP
        s.sendall(frame(0x8, payload[:2]))
    # Then the server closes the TCP connection.
    s.settimeout(5)
    rest = _pending.pop(id(s), b"")
    while True:
        chunk = s.recv(4096)
        if not chunk:
            break
        rest += chunk
    assert rest == b""


@pytest.mark.parametrize("name,data,code", [
    ("unmasked", frame(0x1, b"hi", mask=False), 1002),
    ("rsv2", bytes([0xA1]) + frame(0x1, b"hi")[1:], 1002),
    ("rsv1 without deflate", frame(0x1, b"hi", rsv1=True), 1002),
    ("opcode 3", frame(0x3, b""), 1002),
    ("opcode 11", frame(0xB, b""), 1002),
    ("long ping", frame(0x9, b"x" * 126), 1002),
    ("fragmented ping", frame(0x9, b"x", fin=False), 1002),
    ("continuation first", frame(0x0, b"x"), 1002),
    ("text inside fragmented", frame(0x1, b"a", fin=False) + frame(0x1, b"b"), 1002),
    ("invalid utf-8", frame(0x1, b"\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xed\xa0\x80edited"), 1007),
    ("invalid utf-8 in first fragment", frame(0x1, b"\xc0\xaf", fin=False), 1007),
    ("close with 1 byte", frame(0x8, b"\x03"), 1002),
    ("close code 1005", frame(0x8, struct.pack("!H", 1005)), 1002),
    ("close code 999", frame(0x8, struct.pack("!H", 999)), 1002),
    ("close reason not utf-8", frame(0x8, struct.pack("!H", 1000) + b"\xff"), 1007),
])
def test_protocol_violations_get_their_close_code(halley, name, data, code):
    s, leftover = raw_handshake(halley.port)
    s.sendall(data)
    expect_close(s, code, leftover)
    s.close()


@pytest.mark.parametrize("code", [1000, 1001, 3000, 4999])
def test_close_echoes_the_code(halley, code):
    s, leftover = raw_handshake(halley.port)
    s.sendall(frame(0x8, struct.pack("!H", code) + b"bye"))
    expect_close(s, code, leftover)
    s.close()


def test_empty_close_is_answered(halley):
    s, leftover = raw_handshake(halley.port)
    s.sendall(frame(0x8, b""))
    b0, payload = read_frame(s, leftover)
    assert b0 == 0x88 and payload == b""
    s.close()


def test_frames_sent_with_the_handshake_are_read(halley):
    # A client may send its first frame right behind the upgrade request.
    s = connect(halley.port)
    key = base64.b64encode(os.urandom(16))
    s.sendall(b"GET /echo HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
              b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: " + key + b"\r\n\r\n" + frame(0x1, b"early"))
    data = b""
    while b"\r\n\r\n" not in data:
        data += s.recv(4096)
    head, _, rest = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 101")
    b0, payload = read_frame(s, rest)
    assert b0 == 0x81 and payload == b"early"
    s.close()


def test_server_pings_and_closes_a_silent_client(start_halley):
    h = start_halley("--ws-ping-interval", "1", "--ws-pong-timeout", "1", threads=1)
    s, leftover = raw_handshake(h.port)
    start = time.monotonic()
    b0, payload = read_frame(s, leftover)
    assert b0 == 0x89, "expected a ping"
    assert 0.9 < time.monotonic() - start < 3.5
    # Never answer: the server gives up with 1001.
    expect_close(s, 1001)
    assert time.monotonic() - start < 7
    assert h.wait_for_log(r"ping timeout", timeout=2)


def test_a_client_that_answers_pings_stays(start_halley):
    h = start_halley("--ws-ping-interval", "1", "--ws-pong-timeout", "1", threads=1)

    async def go():
        async with websockets.connect(url(h), ping_interval=None) as ws:
            await asyncio.sleep(4.5)  # websockets answers the server's pings itself
            await ws.send("still here")
            assert await ws.recv() == "still here"

    run(go())


def test_idle_timeout(start_halley):
    h = start_halley("--ws-idle-timeout", "1", threads=1)
    s, leftover = raw_handshake(h.port)
    start = time.monotonic()
    expect_close(s, 1001, leftover, answer=True)
    assert 1 <= time.monotonic() - start < 4


def test_handshake_refusals(halley):
    def status(req):
        with connect(halley.port) as s:
            c = Client(s)
            c.send_raw(req)
            return c.read_response("GET")

    r = status(b"GET /echo HTTP/1.1\r\nHost: h\r\n\r\n")
    assert r.status == 426 and r.header("upgrade") == "websocket"
    r = status(b"GET /echo HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
               b"Sec-WebSocket-Version: 8\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n")
    assert r.status == 426 and r.header("sec-websocket-version") == "13"
    r = status(b"GET /echo HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
               b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: short\r\n\r\n")
    assert r.status == 400


def test_rfc_accept_key(halley):
    with connect(halley.port) as s:
        s.sendall(b"GET /echo HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                  b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n")
        data = b""
        while b"\r\n\r\n" not in data:
            data += s.recv(4096)
        assert b"\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n" in data


def test_client_that_never_reads_is_held_back(start_halley):
    # A client that sends to /echo but never reads: once its echoes stop draining the hub
    # stops reading it (TCP pushes back), so neither the hub's memory nor the bytes it
    # accepts grow without bound. (The send-buffer policies themselves are tested with a
    # fan-out endpoint in Tests/HalleyServerTests/FanOutTests.swift.)
    h = start_halley(threads=1, memory=True)
    s, _ = raw_handshake(h.port)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    before = rss_kb(h.proc.pid)
    msg = frame(0x2, b"x" * 60000)
    s.setblocking(False)
    sent = 0
    deadline = time.monotonic() + 3
    try:
        while time.monotonic() < deadline:
            try:
                # Whole frames only: a partial send resumes where it stopped (restarting the
                # frame would corrupt the stream, and the hub would close and discard input).
                sent += s.send(msg[sent % len(msg):])
            except BlockingIOError:
                time.sleep(0.05)
    except (ConnectionResetError, BrokenPipeError):
        pass  # closed by the backpressure policy (1008): also bounded
    grown = rss_kb(h.proc.pid) - before
    assert sent < 50_000_000, f"the hub kept reading: {sent} bytes"
    assert grown < 20 * 1024, f"the hub grew {grown} kB"
    s.close()
