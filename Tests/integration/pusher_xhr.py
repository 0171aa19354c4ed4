"""pusher-js's HTTP fallback transports, played exactly as pusher-js 8.4 plays them
(src/core/http/http_socket.ts, http_request.ts, http_streaming_socket.ts,
http_polling_socket.ts; src/core/transports/url_schemes.ts):

- the session is `<0..999>/<8 chars of [0-9a-v]>`, under `{httpPath}/app/{key}` (httpPath
  `/pusher`);
- every request is a POST with `Content-Type: application/json`; receive URLs carry
  `?protocol=7&client=js&version=8.4.0&t=<ms>&n=<counter>`, xhr_send only `?t=..&n=..`;
- xhr_send bodies are `JSON.stringify([payload])` where payload is the JSON text of one Pusher
  message; `[]` is the ping (sent for every `h` on a stream);
- a stream is read line by line; after more than 256 KiB of responseText, at a line boundary,
  the client aborts it and POSTs a new xhr_streaming for the same session (`rotate`).

Every read has a timeout: no test can hang.
"""

from __future__ import annotations

import http.client
import itertools
import json
import random
import socket
import struct
import time

HOST = "127.0.0.1"
TIMEOUT = 5.0
VERSION = "8.4.0"
MAX_BUFFER_LENGTH = 256 * 1024  # pusher-js http_request.ts

_counter = itertools.count()  # pusher-js's module-global autoIncrement


def compact(obj) -> str:
    """JSON.stringify."""
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)


def session_path() -> str:
    """pusher-js: randomNumber(1000) + '/' + randomString(8) (base-32 digits)."""
    return f"{random.randrange(1000)}/" + "".join(random.choice("0123456789abcdefghijklmnopqrstuv") for _ in range(8))


def parse_frame(line: bytes):
    """One line without its newline, as pusher-js's HTTPSocket.onChunk reads it."""
    t, rest = line[:1], line[1:]
    if t == b"o":
        return ("o", json.loads(rest) if rest else None)
    if t == b"h":
        return ("h",)
    if t == b"a":
        return ("a", [json.loads(s) for s in json.loads(rest)])
    if t == b"m":
        return ("a", [json.loads(json.loads(rest))])
    if t == b"c":
        code, reason = json.loads(rest)
        return ("c", code, reason)
    raise AssertionError(f"not a frame: {line[:80]!r}")


def frames_of(body: bytes):
    assert body.endswith(b"\n"), body[-80:]
    return [parse_frame(line) for line in body[:-1].split(b"\n")]


class Stream:
    """One xhr_streaming response over a raw socket: chunked decoding by hand, so the test sees
    exactly when bytes arrive (and that none arrive)."""

    def __init__(self, port, path, origin=None, rcvbuf=None, timeout=TIMEOUT):
        self.sock = socket.socket()
        if rcvbuf:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.settimeout(timeout)
        self.sock.connect((HOST, port))
        head = f"POST {path} HTTP/1.1\r\nHost: {HOST}:{port}\r\nContent-Type: application/json\r\nContent-Length: 0\r\n"
        if origin:
            head += f"Origin: {origin}\r\n"
        self.sock.sendall((head + "\r\n").encode())
        self.raw = b""
        while b"\r\n\r\n" not in self.raw:
            self._recv()
        head, self.raw = self.raw.split(b"\r\n\r\n", 1)
        lines = head.decode().split("\r\n")
        self.status = int(lines[0].split()[1])
        self.headers = {}
        for l in lines[1:]:
            k, _, v = l.partition(":")
            self.headers[k.strip().lower()] = v.strip()
        self.chunked = self.headers.get("transfer-encoding") == "chunked"
        self.length = int(self.headers.get("content-length", "-1"))
        self.data = b""  # decoded body not yet split into lines
        self.total = 0  # decoded body bytes: responseText.length for an ASCII stream
        self.ended = False
        self.body = bytearray()  # everything decoded, for byte-level checks
        self.pending = []  # messages of a frame not yet taken by next_message

    def _recv(self):
        b = self.sock.recv(65536)
        if not b:
            raise EOFError("connection closed")
        self.raw += b

    def _decode(self):
        """Moves whole chunks from `raw` to `data`."""
        while not self.ended:
            if not self.chunked:
                take, self.raw = self.raw, b""
                self._got(take)
                if self.length >= 0 and self.total >= self.length:
                    self.ended = True
                return
            i = self.raw.find(b"\r\n")
            if i < 0:
                return
            size = int(self.raw[:i].split(b";")[0], 16)
            if size == 0:
                if self.raw[i + 2:i + 4] != b"\r\n":
                    return
                self.ended = True
                self.raw = self.raw[i + 4:]
                return
            if len(self.raw) < i + 2 + size + 2:
                return
            self._got(self.raw[i + 2:i + 2 + size])
            assert self.raw[i + 2 + size:i + 4 + size] == b"\r\n"
            self.raw = self.raw[i + 4 + size:]

    def _got(self, b):
        self.data += b
        self.total += len(b)
        self.body += b

    def line(self, timeout=TIMEOUT):
        """The next line (without its newline); None when the response ended."""
        deadline = time.monotonic() + timeout
        while b"\n" not in self.data:
            self._decode()
            if b"\n" in self.data:
                break
            if self.ended:
                assert self.data == b"", f"unterminated frame at the end: {self.data[:80]!r}"
                return None
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("no complete line")
            self.sock.settimeout(left)
            try:
                self._recv()
            except socket.timeout:
                raise TimeoutError("no complete line") from None
        line, _, self.data = self.data.partition(b"\n")
        return line

    def chunk(self, timeout=TIMEOUT):
        """Decodes exactly one more HTTP chunk, reading from the socket no more than that needs:
        a browser on a slow link whose progress event ends where a frame ends (the hub writes
        frame by frame). Its bytes go to `data`."""
        self.sock.settimeout(timeout)
        while b"\r\n" not in self.raw:
            self._recv_upto(1)
        i = self.raw.find(b"\r\n")
        size = int(self.raw[:i].split(b";")[0], 16)
        while len(self.raw) < i + 4 + size:
            self._recv_upto(i + 4 + size - len(self.raw))
        data, self.raw = self.raw[i + 2:i + 2 + size], self.raw[i + 4 + size:]
        self.ended = size == 0
        self._got(data)

    def _recv_upto(self, n):
        b = self.sock.recv(n)
        if not b:
            raise EOFError("connection closed")
        self.raw += b

    def frame(self, timeout=TIMEOUT):
        line = self.line(timeout)
        return None if line is None else parse_frame(line)

    @property
    def at_line_boundary(self):
        self._decode()
        return self.data == b"" and self.raw == b""

    def quiet_for(self, seconds) -> bool:
        """True when nothing at all arrives for `seconds`."""
        self.sock.settimeout(seconds)
        try:
            b = self.sock.recv(65536)
        except socket.timeout:
            return True
        self.raw += b
        return False

    def should_rotate(self):
        """pusher-js's isBufferTooLong: every line consumed and more than 256 KiB read."""
        return self.at_line_boundary and self.total > MAX_BUFFER_LENGTH

    def abort(self):
        """xhr.abort(): the connection goes, nothing is sent."""
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.sock.close()


class Client:
    """One pusher-js HTTP session (`xhr_streaming` or `xhr_polling` transport)."""

    def __init__(self, port, key="app-key", path=None, origin=None, http_path="/pusher"):
        self.port = port
        self.origin = origin
        self.path = path or session_path()
        self.base = f"{http_path}/app/{key}/{self.path}"

    @staticmethod
    def unique(url):
        sep = "&" if "?" in url else "?"
        return f"{url}{sep}t={int(time.time() * 1000)}&n={next(_counter)}"

    def receive_url(self, kind):
        return self.unique(f"{self.base}/{kind}?protocol=7&client=js&version={VERSION}")

    def headers(self):
        h = {"Content-Type": "application/json"}
        if self.origin:
            h["Origin"] = self.origin
        return h

    def post(self, url, body=b"", timeout=30):
        c = http.client.HTTPConnection(HOST, self.port, timeout=timeout)
        try:
            c.request("POST", url, body=body, headers=self.headers())
            r = c.getresponse()
            return r.status, dict((k.lower(), v) for k, v in r.getheaders()), r.read()
        finally:
            c.close()

    # ---- sending

    def send_raw(self, body: bytes):
        return self.post(self.unique(f"{self.base}/xhr_send"), body)

    def send(self, event, data, channel=None):
        """Connection.send_event: JSON.stringify([JSON.stringify(message)])."""
        m = {"event": event, "data": data}
        if channel is not None:
            m["channel"] = channel
        status, _, body = self.send_raw(compact([compact(m)]).encode())
        return status, body

    def subscribe(self, channel, auth="", channel_data=None):
        """pusher-js's subscribe: data.auth (and data.channel_data on presence channels)."""
        data = {"auth": auth, "channel": channel}
        if channel_data is not None:
            data["channel_data"] = channel_data
        status, body = self.send("pusher:subscribe", data)
        assert status == 204, (status, body)

    def ping(self):
        """HTTPSocket.ping / onHeartbeat: sendRaw('[]')."""
        return self.send_raw(b"[]")

    # ---- receiving

    def stream(self, **kw) -> Stream:
        return Stream(self.port, self.receive_url("xhr_streaming"), origin=self.origin, **kw)

    def poll(self, timeout=30):
        """One xhr poll: (status, headers, frames)."""
        status, headers, body = self.post(self.receive_url("xhr"), timeout=timeout)
        return status, headers, frames_of(body) if status == 200 else body


def next_message(st, event=None, timeout=TIMEOUT):
    """The next message on stream `st` (skipping `h`, and other events when `event` is given);
    a `c` frame is returned as ("c", code, reason)."""
    deadline = time.monotonic() + timeout
    while True:
        while st.pending:  # the rest of an `a` frame already read
            m = st.pending.pop(0)
            if event is None or m["event"] == event:
                return m
        f = st.frame(timeout=max(0.05, deadline - time.monotonic()))
        assert f is not None, "the stream ended"
        if f[0] == "c":
            return f
        if f[0] == "a":
            st.pending.extend(f[1])


def open_stream(client, **kw):
    """The first xhr_streaming of a session: prelude, `o`, connection_established."""
    st = client.stream(**kw)
    assert st.status == 200, st.status
    prelude = st.line()
    assert prelude == b"h" * 2048, prelude[:40]
    assert st.frame() == ("o", None)
    (kind, msgs) = st.frame()
    assert kind == "a" and msgs[0]["event"] == "pusher:connection_established", msgs
    return st, json.loads(msgs[0]["data"])
