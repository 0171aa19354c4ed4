"""Helpers for Halley's integration tests: start the real binary, talk to it over raw
sockets, and parse its responses with h11 (a strict third-party HTTP/1.1 parser), so that
framing errors in the server show up as parse errors here.

Every socket operation has a timeout: no test can hang.
"""

from __future__ import annotations

import hashlib
import os
import re
import signal
import socket
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
import time
from dataclasses import dataclass, field

import h11

HALLEY_BIN = os.environ.get("HALLEY_BIN", "/work/main/.build/debug/halley")
# Tests that measure the hub's memory (RSS) run a build without sanitizers: AddressSanitizer's
# quarantine and redzones hold freed memory on purpose. Scripts/test.sh points this at a plain
# release build; unset, it is HALLEY_BIN.
HALLEY_MEMORY_BIN = os.environ.get("HALLEY_MEMORY_BIN") or HALLEY_BIN
HOST = "127.0.0.1"
SOCK_TIMEOUT = 5.0

_LISTEN_RE = re.compile(r"halley listening on https?://127\.0\.0\.1:(\d+) ")
_METRICS_RE = re.compile(r"metrics on http://127\.0\.0\.1:(\d+)/metrics")


class Halley:
    """One halley process. Its stdout and stderr are collected line by line."""

    def __init__(self, public, args=(), env=None, threads=2, start_timeout=10.0, memory=False):
        cmd = [HALLEY_MEMORY_BIN if memory else HALLEY_BIN, "--port", "0", "--threads", str(threads), "--public", str(public), *map(str, args)]
        full_env = {k: v for k, v in os.environ.items() if not k.startswith("HALLEY_")}
        if env:
            full_env.update({k: str(v) for k, v in env.items()})
        self.cmd = cmd
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=full_env)
        self._lines: list[str] = []
        self._cond = threading.Condition()
        self._reader = threading.Thread(target=self._read_output, daemon=True)
        self._reader.start()
        self.port: int | None = None
        self.metrics_port: int | None = None
        self.returncode: int | None = None
        line = self.wait_for_log(_LISTEN_RE, timeout=start_timeout)
        if line is None:
            self.kill()
            raise RuntimeError(f"halley did not start: {self.cmd}\n{self.log_text()}")
        self.port = int(_LISTEN_RE.search(line).group(1))
        m = _METRICS_RE.search(line)
        if m:
            self.metrics_port = int(m.group(1))
        m = re.search(r", https on https://127\.0\.0\.1:(\d+)", line)
        self.tls_port = int(m.group(1)) if m else (self.port if "listening on https://" in line else None)

    def _read_output(self):
        for raw in iter(self.proc.stdout.readline, b""):
            with self._cond:
                self._lines.append(raw.decode("utf-8", "replace").rstrip("\n"))
                self._cond.notify_all()
        with self._cond:
            self._cond.notify_all()

    # ---- log

    def log_lines(self) -> list[str]:
        with self._cond:
            return list(self._lines)

    def log_text(self) -> str:
        return "\n".join(self.log_lines())

    def wait_for_log(self, pattern, timeout=5.0, start=0):
        """The first log line at index >= start matching `pattern` (a regex or a string), or None."""
        rx = re.compile(pattern) if isinstance(pattern, str) else pattern
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for line in self._lines[start:]:
                    if rx.search(line):
                        return line
                left = deadline - time.monotonic()
                if left <= 0 or (self.proc.poll() is not None and not self._reader.is_alive()):
                    return None
                self._cond.wait(min(left, 0.1))

    def log_mark(self) -> int:
        """An index to pass as `start` to wait_for_log / lines_since."""
        with self._cond:
            return len(self._lines)

    def lines_since(self, mark: int) -> list[str]:
        with self._cond:
            return list(self._lines[mark:])

    # ---- process

    def alive(self) -> bool:
        return self.proc.poll() is None

    def signal(self, sig=signal.SIGTERM):
        self.proc.send_signal(sig)

    def stop(self, timeout=15.0) -> int | None:
        """SIGTERM and wait; the exit code, or None if it had to be killed."""
        if self.returncode is not None:
            return self.returncode
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            self.returncode = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            self.returncode = None
        self._reader.join(timeout=2)
        return self.returncode

    def wait_exit(self, timeout) -> int | None:
        try:
            self.returncode = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None
        self._reader.join(timeout=2)
        return self.returncode

    def crash(self):
        """kill -9 on purpose: the test's fixture then takes the exit as expected (0)."""
        self.kill()
        self._reader.join(timeout=2)
        self.returncode = 0

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass

    # ---- clients

    def connect(self, timeout=SOCK_TIMEOUT, port=None) -> socket.socket:
        return connect(port or self.port, timeout)

    def get(self, target, headers=(), method="GET", port=None, timeout=SOCK_TIMEOUT) -> "Response":
        """One request on a fresh connection (closed afterwards)."""
        with self.connect(timeout, port) as s:
            c = Client(s)
            c.send_request(method, target, headers)
            return c.read_response()


def connect(port, timeout=SOCK_TIMEOUT, rcvbuf=None) -> socket.socket:
    """A connected client socket; `rcvbuf` shrinks its receive buffer (a slow reader)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        if rcvbuf:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        s.settimeout(timeout)
        s.connect((HOST, port))
    except BaseException:
        s.close()
        raise
    return s


@dataclass
class Response:
    status: int
    reason: bytes
    http_version: bytes
    headers: list[tuple[str, str]]
    body: bytes = b""
    informational: list = field(default_factory=list)

    def header(self, name) -> str | None:
        vals = self.header_all(name)
        return vals[0] if vals else None

    def header_all(self, name) -> list[str]:
        n = name.lower()
        return [v for k, v in self.headers if k == n]

    def has(self, name) -> bool:
        return bool(self.header_all(name))

    @property
    def connection_tokens(self) -> set[str]:
        out = set()
        for v in self.header_all("connection"):
            out |= {t.strip().lower() for t in v.split(",") if t.strip()}
        return out


class ClosedEarly(AssertionError):
    """The server closed the connection before a complete response. `partial` is True when
    some bytes of that response had arrived (a truncated response), False when none had."""

    def __init__(self, msg, partial):
        super().__init__(msg)
        self.partial = partial


class Client:
    """A socket plus an h11 client state machine that parses every response.

    Requests are either sent through h11 (`send_request`), or sent as raw bytes and
    announced to h11 with `expect(method)` so that it knows how to frame the response
    (HEAD responses have no body). Several raw requests may be sent at once (pipelining):
    announce each one before reading its response.
    """

    def __init__(self, sock: socket.socket, recv_size=65536, recv_delay=0.0):
        """`recv_size` and `recv_delay` make a slow reader: at most `recv_size` bytes per
        read, with a pause of `recv_delay` seconds before each."""
        self.sock = sock
        self.recv_size = recv_size
        self.recv_delay = recv_delay
        self.conn = h11.Connection(h11.CLIENT)
        self.eof = False
        self.received = 0  # bytes read from the socket

    # -- sending

    def send_request(self, method, target, headers=(), body=None, host="halley.test"):
        hdrs = [("Host", host)] + list(headers)
        if body is not None and not any(k.lower() in ("content-length", "transfer-encoding") for k, _ in hdrs):
            hdrs.append(("Content-Length", str(len(body))))
        self._next_cycle()
        data = self.conn.send(h11.Request(method=method, target=target, headers=hdrs))
        if body:
            data += self.conn.send(h11.Data(data=body))
        data += self.conn.send(h11.EndOfMessage())
        self.sock.sendall(data)

    def send_raw(self, data: bytes):
        self.sock.sendall(data)

    def expect(self, method="GET"):
        """Tells h11 a request with `method` was sent (raw) without sending anything."""
        self._next_cycle()
        self.conn.send(h11.Request(method=method, target="/", headers=[("Host", "x")]))
        self.conn.send(h11.EndOfMessage())

    def _next_cycle(self):
        if self.conn.our_state is h11.DONE and self.conn.their_state is h11.DONE:
            self.conn.start_next_cycle()

    # -- receiving

    def _fill(self):
        if self.recv_delay:
            time.sleep(self.recv_delay)
        try:
            data = self.sock.recv(self.recv_size)
        except ConnectionResetError:
            data = b""
        if not data:
            self.eof = True
        self.received += len(data)
        self.conn.receive_data(data)

    def read_response(self, method=None, max_body=None) -> Response:
        """The next complete response. With `method`, first announces a raw request.

        Raises ClosedEarly when the connection ends first, and h11.RemoteProtocolError when
        the response is malformed."""
        if method is not None:
            self.expect(method)
        start = self.received - len(self.pending_bytes())
        informational = []
        resp = None
        body = bytearray()
        while True:
            try:
                ev = self.conn.next_event()
            except h11.RemoteProtocolError as e:
                if self.eof:
                    raise ClosedEarly(f"connection closed before the response was complete ({e})",
                                      partial=self.received > start) from None
                raise
            if ev is h11.NEED_DATA:
                if self.eof:
                    raise ClosedEarly("connection closed before the response was complete",
                                      partial=self.received > start)
                self._fill()
                continue
            if isinstance(ev, h11.InformationalResponse):
                informational.append(ev)
            elif isinstance(ev, h11.Response):
                resp = Response(
                    status=ev.status_code,
                    reason=ev.reason,
                    http_version=ev.http_version,
                    headers=[(k.decode("latin-1").lower(), v.decode("latin-1")) for k, v in ev.headers],
                    informational=informational,
                )
            elif isinstance(ev, h11.Data):
                body += ev.data
                if max_body is not None and len(body) > max_body:
                    raise AssertionError(f"body longer than {max_body}")
            elif isinstance(ev, h11.EndOfMessage):
                resp.body = bytes(body)
                return resp
            elif isinstance(ev, h11.ConnectionClosed):
                raise ClosedEarly("connection closed before a response", partial=self.received > start)
            else:
                raise AssertionError(f"unexpected h11 event {ev!r}")

    def read_informational(self) -> h11.InformationalResponse:
        """Waits for a 1xx response (and nothing else)."""
        while True:
            ev = self.conn.next_event()
            if ev is h11.NEED_DATA:
                if self.eof:
                    raise AssertionError("connection closed while waiting for a 1xx response")
                self._fill()
                continue
            assert isinstance(ev, h11.InformationalResponse), f"expected a 1xx response, got {ev!r}"
            return ev

    def pending_bytes(self) -> bytes:
        return self.conn.trailing_data[0]

    def assert_closed(self, timeout=3.0):
        """Asserts that the server closes the connection within `timeout` with nothing more sent."""
        extra = self.pending_bytes()
        assert extra == b"", f"unexpected bytes after the response: {extra[:200]!r}"
        if self.eof:
            return
        rest = read_until_close(self.sock, timeout)
        assert rest == b"", f"unexpected bytes after the response: {rest[:200]!r}"

    def assert_open(self, wait=0.2):
        """Asserts that the connection is still open (no EOF, no bytes) after `wait` s."""
        assert not self.eof, "connection was closed"
        assert_no_data(self.sock, wait)


def read_until_close(sock: socket.socket, timeout=3.0) -> bytes:
    """Everything the peer sends until it closes; AssertionError if it does not within `timeout`."""
    deadline = time.monotonic() + timeout
    out = bytearray()
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(f"connection still open after {timeout} s (got {bytes(out[:200])!r})")
        sock.settimeout(left)
        try:
            data = sock.recv(65536)
        except socket.timeout:
            raise AssertionError(f"connection still open after {timeout} s (got {bytes(out[:200])!r})")
        except ConnectionResetError:
            return bytes(out)
        if not data:
            return bytes(out)
        out += data


def assert_no_data(sock: socket.socket, wait: float):
    """Nothing arrives, and no EOF, for `wait` seconds."""
    old = sock.gettimeout()
    sock.settimeout(wait)
    try:
        data = sock.recv(65536)
    except socket.timeout:
        return
    finally:
        sock.settimeout(old)
    if data == b"":
        raise AssertionError("connection was closed")
    raise AssertionError(f"unexpected data: {data[:200]!r}")


def raw_exchange(port, data: bytes, timeout=SOCK_TIMEOUT) -> tuple[Response, Client]:
    """Sends raw request bytes on a fresh connection and parses one response (as to a GET)."""
    s = connect(port, timeout)
    c = Client(s)
    c.send_raw(data)
    return c.read_response(method="GET"), c


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def simple_get(port, target, timeout=SOCK_TIMEOUT) -> Response:
    with connect(port, timeout) as s:
        c = Client(s)
        c.send_request("GET", target)
        return c.read_response()


def parse_metrics(text: str) -> dict[str, float]:
    """Prometheus text into {"name{labels}": value}."""
    out = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        name, _, value = line.rpartition(" ")
        out[name] = float(value)
    return out


def rss_kb(pid) -> int:
    """Resident memory of a process, in kB (VmRSS)."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


# ---- sanitizer reports

# Scripts/test.sh runs the hub built with AddressSanitizer and points ASAN_OPTIONS' log_path
# here (one file per process, written as reports happen); every test fails that leaves a new
# report behind.
SANITIZER_LOGS = os.environ.get("HALLEY_SANITIZER_LOGS")


def no_sanitizer_reports():
    """The body of both suites' autouse fixture: fails the test when a hub it ran wrote a
    sanitizer report meanwhile."""
    before = sanitizer_snapshot()
    yield
    reports = sanitizer_reports_since(before)
    assert not reports, f"sanitizer report(s) while this test ran:\n{reports}"


def sanitizer_snapshot() -> dict[str, int]:
    """The size of every report file now."""
    if not SANITIZER_LOGS or not os.path.isdir(SANITIZER_LOGS):
        return {}
    return {n: os.path.getsize(os.path.join(SANITIZER_LOGS, n)) for n in os.listdir(SANITIZER_LOGS)}


def sanitizer_reports_since(snapshot: dict[str, int]) -> str:
    """What the sanitizers wrote since `snapshot`, grouped by site; "" when nothing."""
    if not SANITIZER_LOGS:
        return ""
    text = []
    for name, size in sorted(sanitizer_snapshot().items()):
        old = snapshot.get(name, 0)
        if size > old:
            with open(os.path.join(SANITIZER_LOGS, name), errors="replace") as f:
                f.seek(old)
                text.append(f.read())
    if not text:
        return ""
    raw = "\n".join(text)
    summary = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                           "Scripts", "sanitizers", "summary.py")
    try:
        grouped = subprocess.run(["python3", summary, "-"], input=raw, capture_output=True, text=True, timeout=120).stdout
    except Exception:
        grouped = ""
    return (grouped or "") + "\n" + raw[:6000]


class WebhookReceiver:
    """An HTTP server on 127.0.0.1 that answers the hub's webhook POSTs with 200, counts the
    events by name and hands each request's events to `on_events` (the stress run, the soak)."""

    def __init__(self, on_events=None):
        import collections
        import json
        self.counts = collections.Counter()
        counts = self.counts

        class H(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                events = json.loads(body).get("events", [])
                counts.update(e.get("name") for e in events)
                if on_events:
                    on_events(events)
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *a):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), H)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/webhooks"
