"""A small HTTP/1.1 client on asyncio streams, for the soak's load generator: thousands of
long-lived requests (SSE streams, held polls, pusher-js xhr streams) in one process, where the
integration tests' clients (http.client, a thread per request) would not scale.

- `Conn`: one keep-alive connection; `request()` reads a whole response (Content-Length or
  chunked), `start()` returns a `Body` to read a streaming response line by line.
- `Pool`: a few keep-alive connections shared by short requests (`/halley/send`,
  `xhr_send`), so the soak does not open a connection per acknowledgement.

Every wait has a timeout (`asyncio.timeout`): nothing in the soak can hang on the hub.
"""

from __future__ import annotations

import asyncio
import socket
import struct
import time

HOST = "127.0.0.1"


class HTTPError(Exception):
    pass


class NoAnswer(HTTPError):
    """The connection ended before a status line: the request may be sent again when the
    connection was a kept-alive one (the hub closes idle ones)."""


def reset(stream):
    """Drops a connection with a TCP reset (SO_LINGER 0): what a crashed client or a cut
    network looks like to the hub. `stream`: an asyncio StreamWriter or transport."""
    if stream is None:
        return
    transport = getattr(stream, "transport", stream)
    try:
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:  # already gone
        pass
    transport.abort()


class Body:
    """A response body read incrementally: decoded chunks (or raw bytes up to the length)
    into a buffer, taken line by line."""

    def __init__(self, reader, chunked, length):
        self.reader = reader
        self.chunked = chunked
        self.left = length  # -1: until EOF (not chunked, no length)
        self.buf = bytearray()
        self.ended = False
        self.total = 0

    async def _fill(self) -> bool:
        if self.ended:
            return False
        r = self.reader
        if self.chunked:
            line = await r.readline()
            if not line:
                raise HTTPError("connection closed inside a chunked body")
            size = int(line.split(b";")[0].strip(), 16)
            if size == 0:
                while True:  # trailers, then the empty line
                    t = await r.readline()
                    if t in (b"\r\n", b"\n", b""):
                        break
                self.ended = True
                return False
            data = await r.readexactly(size + 2)
            self.buf += data[:-2]
            self.total += size
            return True
        if self.left == 0:
            self.ended = True
            return False
        data = await r.read(65536 if self.left < 0 else min(65536, self.left))
        if not data:
            if self.left > 0:
                raise HTTPError("connection closed inside a body")
            self.ended = True
            return False
        if self.left > 0:
            self.left -= len(data)
        self.buf += data
        self.total += len(data)
        return True

    async def readline(self):
        """The next line without its newline; None at the end of the body."""
        while True:
            i = self.buf.find(b"\n")
            if i >= 0:
                line = bytes(self.buf[:i])
                del self.buf[:i + 1]
                return line
            if not await self._fill():
                if self.buf:
                    raise HTTPError(f"body ended inside a line: {bytes(self.buf[:60])!r}")
                return None

    async def read_all(self) -> bytes:
        while await self._fill():
            pass
        out = bytes(self.buf)
        self.buf.clear()
        return out


class Conn:
    """One HTTP/1.1 connection to the hub; requests on it are sequential (keep-alive)."""

    def __init__(self, port):
        self.port = port
        self.reader = None
        self.writer = None
        self.reusable = False

    async def open(self, timeout=10.0, rcvbuf=None):
        async with asyncio.timeout(timeout):
            if rcvbuf:
                sock = socket.socket()
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
                sock.setblocking(False)
                try:
                    await asyncio.get_running_loop().sock_connect(sock, (HOST, self.port))
                except BaseException:
                    sock.close()
                    raise
                self.reader, self.writer = await asyncio.open_connection(sock=sock, limit=1 << 20)
            else:
                self.reader, self.writer = await asyncio.open_connection(HOST, self.port, limit=1 << 20)
        self.reusable = True
        return self

    async def start(self, method, path, headers=None, body=b"", timeout=10.0):
        """Sends a request and reads the status line and head: (status, headers, Body)."""
        if self.writer is None:
            await self.open(timeout)
        self.reusable = False
        h = [f"{method} {path} HTTP/1.1", f"Host: {HOST}:{self.port}"]
        for k, v in (headers or {}).items():
            h.append(f"{k}: {v}")
        if body or method in ("POST", "PUT"):
            h.append(f"Content-Length: {len(body)}")
        self.writer.write(("\r\n".join(h) + "\r\n\r\n").encode() + body)
        async with asyncio.timeout(timeout):
            try:
                line = await self.reader.readline()
            except ConnectionError as e:
                raise NoAnswer(f"{type(e).__name__} before the status line") from None
            if not line:
                raise NoAnswer("connection closed before the status line")
            parts = line.split(None, 2)
            if len(parts) < 2 or not parts[0].startswith(b"HTTP/1."):
                raise HTTPError(f"bad status line {line[:80]!r}")
            status = int(parts[1])
            hdrs = {}
            while True:
                line = await self.reader.readline()
                if line in (b"\r\n", b"\n"):
                    break
                if not line:
                    raise HTTPError("connection closed inside the head")
                k, _, v = line.decode("latin-1").partition(":")
                hdrs[k.strip().lower()] = v.strip()
        chunked = "chunked" in hdrs.get("transfer-encoding", "").lower()
        length = int(hdrs["content-length"]) if "content-length" in hdrs else (-1 if not chunked else 0)
        if status in (204, 304) or method == "HEAD":
            chunked, length = False, 0
        return status, hdrs, Body(self.reader, chunked, length)

    async def request(self, method, path, headers=None, body=b"", timeout=10.0):
        """A whole request and response: (status, headers, body bytes)."""
        status, hdrs, b = await self.start(method, path, headers, body, timeout)
        async with asyncio.timeout(timeout):
            data = await b.read_all()
        self.reusable = b.left != -1 and "close" not in hdrs.get("connection", "").lower()
        if not self.reusable:
            self.close()
        return status, hdrs, data

    def close(self):
        if self.writer is not None:
            try:
                self.writer.close()
            except Exception:  # noqa: BLE001
                pass
        self.writer = None
        self.reader = None
        self.reusable = False

    def abort(self):
        reset(self.writer)
        self.writer = None
        self.reader = None
        self.reusable = False


class Pool:
    """Keep-alive connections for short requests; a failed one is dropped, not reused."""

    IDLE = 45.0  # seconds: below the hub's --keepalive-timeout (60), after which it closes them

    def __init__(self, port, size):
        self.port = port
        self.free: list[tuple[float, Conn]] = []  # (last used, connection), most recent last
        self.sem = asyncio.Semaphore(size)

    def _take(self):
        now = time.monotonic()
        while self.free:
            used, c = self.free.pop()
            if now - used < self.IDLE:
                return c, True
            c.close()
        return Conn(self.port), False

    async def request(self, method, path, headers=None, body=b"", timeout=10.0):
        async with self.sem:
            c, reused = self._take()
            for attempt in (0, 1):
                try:
                    r = await c.request(method, path, headers, body, timeout)
                except NoAnswer:
                    c.abort()
                    # A kept-alive connection the hub closed meanwhile fails before any
                    # answer: once more on a fresh one.
                    if reused and attempt == 0:
                        c, reused = Conn(self.port), False
                        continue
                    raise
                except BaseException:
                    c.abort()
                    raise
                if c.reusable:
                    self.free.append((time.monotonic(), c))
                return r

    def close(self):
        for _, c in self.free:
            c.close()
        self.free.clear()
