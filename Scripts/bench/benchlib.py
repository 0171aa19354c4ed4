"""What the Python benchmarks share (idle.py, memory_rounds.py, api_publish.py; the soak uses
the /proc helpers): the servers under test (halley, nginx, Nchan, Node's ws) started and
stopped, memory and descriptors from /proc, and many connections opened at once without
blocking, each past its handshake (an HTTP request, a WebSocket upgrade, a Pusher subscribe)."""

from __future__ import annotations

import base64
import ctypes
import errno
import hashlib
import os
import re
import selectors
import signal
import socket
import struct
import subprocess
import time
import urllib.error
import urllib.request
import zlib

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
# Every connection of a benchmark comes from 127.0.0.1: the per-address limits are off.
NO_LIMITS = ["--max-connections-per-address", "0", "--session-opens-per-second", "0", "--max-lingering-per-address", "0"]
NCHAN_MODULE = os.environ.get("NCHAN_MODULE", "/usr/lib/nginx/modules/ngx_nchan_module.so")


class Failure(Exception):
    pass


def log(msg=""):
    print(msg, flush=True)


def proc_status(pid):
    """VmRSS, RssAnon, RssShmem, VmHWM, VmData in kB, and Rss from smaps_rollup (exact: VmRSS
    is a batched counter) when there is one."""
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            k, _, v = line.partition(":")
            if k in ("VmRSS", "RssAnon", "RssShmem", "VmHWM", "VmData"):
                out[k] = int(v.split()[0])
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            out["Rss"] = next(int(line.split()[1]) for line in f if line.startswith("Rss:"))
    except (OSError, StopIteration):
        pass
    return out


def fd_count(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


def die_with_parent():
    """preexec_fn: the server gets SIGTERM if the script dies, however it dies."""
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM, 0, 0, 0)  # PR_SET_PDEATHSIG


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def raise_nofile(n):
    import resource
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if hard < n + 200:
        raise Failure(f"RLIMIT_NOFILE {hard} is too low for {n} connections")
    return hard


class Server:
    """A server under test: started by `start`, its log, its port, the process whose memory
    and CPU count (`pid`: halley itself, nginx's one worker)."""

    def __init__(self, name, cmd, log_path, ready, cpu=0):
        self.name, self.log_path, self.pid = name, log_path, None
        if cpu is not None:
            cmd = ["taskset", "-c", str(cpu)] + cmd
        log(f"{name}: " + " ".join(cmd))
        env = {k: v for k, v in os.environ.items() if not k.startswith("HALLEY_")}  # halley reads them
        with open(log_path, "wb") as f:
            self.proc = subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL, stdout=f, stderr=f,
                                         preexec_fn=die_with_parent)
        deadline = time.monotonic() + 10
        while not ready(self):
            self.check_alive()
            if time.monotonic() > deadline:
                raise Failure(f"{name} did not start within 10 s:\n{self.log_text()}")
            time.sleep(0.05)
        self.pid = self.pid or self.proc.pid

    def log_text(self):
        with open(self.log_path, errors="replace") as f:
            return f.read()

    def check_alive(self):
        if self.proc.poll() is not None or (self.pid and not os.path.exists(f"/proc/{self.pid}")):
            raise Failure(f"{self.name} exited; log:\n{self.log_text()}")

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def news(self):
        """Log lines beyond the usual start and stop lines."""
        usual = ("listening on", "SIGTERM: stopping", "halley stopped", "development app", "static files are off",
                 "[notice]")
        return [line for line in self.log_text().splitlines() if line.strip() and not any(u in line for u in usual)]


def halley(binary, tmp, *args, cpu=0, name="halley"):
    def ready(s):
        m = re.search(r"halley listening on http://127\.0\.0\.1:(\d+)", s.log_text())
        s.port = int(m.group(1)) if m else None
        return m is not None
    return Server(name, [binary, "--host", "127.0.0.1", "--port", "0", "--threads", "1", "--log-level", "warning",
                         "--shutdown-grace", "1", *NO_LIMITS, *args], os.path.join(tmp, f"{name}.log"), ready, cpu)


def nginx(conf, tmp, port, name="nginx", cpu=0, probe="/"):
    """nginx with the configuration text `conf` (one worker), up when http://127.0.0.1:PORT/
    answers anything."""
    d = os.path.join(tmp, name)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "nginx.conf"), "w") as f:
        f.write(conf)

    def ready(s):
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}{probe}", timeout=2).read()
        except urllib.error.HTTPError:
            pass
        except OSError:
            return False
        kids = subprocess.run(["pgrep", "-P", str(s.proc.pid)], capture_output=True, text=True).stdout.split()
        s.pid = int(kids[0]) if len(kids) == 1 else None
        return s.pid is not None
    s = Server(name, ["nginx", "-p", d, "-e", os.path.join(d, "error.log"), "-c", os.path.join(d, "nginx.conf"),
                      "-g", "daemon off;"], os.path.join(d, "stderr.log"), ready, cpu)
    s.port, s.log_path = port, os.path.join(d, "error.log")
    return s


def nchan(tmp, cpu=0):
    if not os.path.exists(NCHAN_MODULE):
        raise Failure(f"no Nchan module at {NCHAN_MODULE} (apt-get install -y libnginx-mod-nchan)")
    d, port, nofile = os.path.join(tmp, "nchan"), free_port(), raise_nofile(0)
    with open(os.path.join(HERE, "nchan", "nginx.conf.in")) as f:
        conf = f.read()
    for k, v in {"NCHAN_MODULE": NCHAN_MODULE, "USER_LINE": "user root;" if os.getuid() == 0 else "", "TMP": d,
                 "NOFILE": nofile, "WORKER_CONNECTIONS": nofile - 100, "PORT": port, "LP_MULTIPART": "on",
                 "REDIS": ""}.items():
        conf = conf.replace(f"@{k}@", str(v))
    return nginx(conf, tmp, port, name="nchan", cpu=cpu, probe="/pub/probe")


def node(tmp, cpu=0):
    def ready(s):
        m = re.search(r"listening on ws://127\.0\.0\.1:(\d+)", s.log_text())
        s.port = int(m.group(1)) if m else None
        return m is not None
    return Server("node", ["node", os.path.join(HERE, "ws_echo_node.js"), "0"], os.path.join(tmp, "node.log"), ready,
                  cpu)


UWS_BIN = os.environ.get("UWS_BIN", "/tmp/halley-uws/uws-server")


def have_uws():
    return os.access(UWS_BIN, os.X_OK)


def uws(tmp, cpu=0):
    """The uWebSockets peer (uws/server.cpp, built by uws/build.sh): Nchan's URLs and /echo."""
    if not have_uws():
        raise Failure(f"no uWebSockets server at {UWS_BIN} (build it: Scripts/bench/uws/build.sh)")

    def ready(s):
        m = re.search(r"^listening on (\d+)$", s.log_text(), re.M)
        s.port = int(m.group(1)) if m else None
        return m is not None
    return Server("uws", [UWS_BIN, "0", "benchtoken"], os.path.join(tmp, "uws.log"), ready, cpu)


def post(url, body, **headers):
    req = urllib.request.Request(url, data=body.encode(), method="POST", headers=headers)
    with urllib.request.urlopen(req, timeout=30) as r:
        return r.status, r.read().decode(errors="replace")


# ---- the client side -----------------------------------------------------------------------

def masked(opcode, payload, rsv1=False):
    key = os.urandom(4)
    n = len(payload)
    head = bytes([0x80 | (0x40 if rsv1 else 0) | opcode])
    head += bytes([0x80 | n]) if n < 126 else struct.pack("!BH", 0xFE, n) if n < 65536 else struct.pack("!BQ", 0xFF, n)
    return head + key + bytes(b ^ key[i & 3] for i, b in enumerate(payload))


def deflated(payload):
    """One message for permessage-deflate (RFC 7692 §7.2.1: without the final 00 00 FF FF)."""
    c = zlib.compressobj(wbits=-15)
    return (c.compress(payload) + c.flush(zlib.Z_SYNC_FLUSH))[:-4]


def frames(buf):
    """([(opcode, payload)], rest): the whole unmasked server frames at the start of buf;
    compressed ones inflated."""
    out = []
    while len(buf) >= 2:
        b0, b1 = buf[0], buf[1]
        if b1 & 0x80 or b0 & 0x30 or not b0 & 0x80:
            raise ValueError(f"unexpected frame header {b0:#x} {b1:#x}")
        n, h = b1 & 0x7F, 2
        if n >= 126:
            h = 4 if n == 126 else 10
            if len(buf) < h:
                break
            n = struct.unpack("!H" if n == 126 else "!Q", buf[2:h])[0]
        if len(buf) < h + n:
            break
        payload = buf[h:h + n]
        if b0 & 0x40:
            payload = zlib.decompressobj(-15).decompress(payload + b"\x00\x00\xff\xff")
        out.append((b0 & 0x0F, payload))
        buf = buf[h + n:]
    return out, buf


BROWSER_DEFLATE = "permessage-deflate; client_max_window_bits"


class Conn:
    """One connection being opened by `open_many`.
    kind: "http" (GET /small.txt, keep-alive), "ws" (upgrade to /echo, and with `deflate` one
    compressed "hello" echoed), "pusher" (upgrade to `path`, pusher:subscribe to `channel`,
    acknowledged when resumable; compressed with `deflate`), "raw" (upgrade to `path`).
    expect_ext: text the answer's extensions must hold ("!text": must not)."""

    def __init__(self, port, kind, path="/echo", deflate=None, channel="bench", expect_ext=None):
        self.sock = socket.socket()
        self.sock.setblocking(False)
        err = self.sock.connect_ex(("127.0.0.1", port))
        if err not in (0, errno.EINPROGRESS):
            raise Failure(f"connect: {os.strerror(err)}")
        self.kind, self.state, self.buf, self.deflate, self.expect_ext = kind, "connect", b"", deflate, expect_ext
        self.subscribe = b'{"event":"pusher:subscribe","data":{"channel":"%s"}}' % channel.encode()
        key = base64.b64encode(os.urandom(16))
        self.accept = base64.b64encode(hashlib.sha1(key + GUID).digest()).decode()
        if kind == "http":
            self.request = f"GET /small.txt HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode()
        else:
            ext = f"Sec-WebSocket-Extensions: {deflate}\r\n" if deflate else ""
            self.request = (f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: "
                            f"Upgrade\r\nSec-WebSocket-Key: {key.decode()}\r\nSec-WebSocket-Version: 13\r\n{ext}\r\n").encode()

    def send(self, data):
        if self.sock.send(data) != len(data):
            raise ValueError("short send")

    def step(self):
        """Advances on the socket's readiness; True when the connection is ready (idle)."""
        if self.state == "connect":
            err = self.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if err:
                raise ValueError(f"connect: {os.strerror(err)}")
            self.send(self.request)
            self.state = "head"
            return False
        chunk = self.sock.recv(65536)
        if not chunk:
            raise ValueError(f"the server closed the connection ({self.state})")
        self.buf += chunk
        if self.state == "head":
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return False
            lines = self.buf[:end].decode("latin-1").split("\r\n")
            head = {k.strip().lower(): v.strip() for k, _, v in (x.partition(":") for x in lines[1:])}
            self.buf = self.buf[end + 4:]
            if self.kind == "http":
                if not lines[0].startswith("HTTP/1.1 200") or "close" in head.get("connection", ""):
                    raise ValueError(f"answer {lines[0]!r}, Connection {head.get('connection')}")
                self.state, self.need = "body", int(head["content-length"])
            else:
                ext = head.get("sec-websocket-extensions", "")
                if not lines[0].startswith("HTTP/1.1 101") or head.get("sec-websocket-accept") != self.accept:
                    raise ValueError(f"upgrade answered {lines[0]!r}")
                want = self.expect_ext or ""
                if bool(ext) != bool(self.deflate) or (want.lstrip("!") in ext) == want.startswith("!"):
                    raise ValueError(f"Sec-WebSocket-Extensions {ext!r} (offered {self.deflate!r})")
                self.state = "open"
                if self.kind == "ws" and self.deflate:
                    self.send(masked(1, deflated(b"hello"), rsv1=True))
                    self.state = "echo"
                if self.kind == "pusher":
                    self.state = "established"
        if self.state == "body":
            if len(self.buf) > self.need:
                raise ValueError("bytes after the answer")
            return len(self.buf) == self.need
        msgs, self.buf = frames(self.buf)
        for op, payload in msgs:
            if op == 9:
                self.send(masked(10, payload))
            elif self.state == "echo" and payload == b"hello":
                self.state = "open"
            elif self.state == "established" and b'"pusher:connection_established"' in payload:
                self.send(masked(1, deflated(self.subscribe), rsv1=True) if self.deflate else masked(1, self.subscribe))
                self.state = "subscribing"
            elif self.state == "subscribing" and b'"pusher_internal:subscription_succeeded"' in payload:
                self.state = "open"
                # A resumable session numbers it: acknowledged as halley.js does, so the idle
                # session holds no resend buffer.
                seq = re.search(rb'"halley:seq":(\d+)', payload)
                if seq:
                    self.send(masked(1, b'{"event":"halley:ack","data":{"seq":%s}}' % seq.group(1)))
            else:
                raise ValueError(f"unexpected message in state {self.state}: {payload[:200]!r}")
        if self.state == "open" and self.buf:
            raise ValueError(f"{len(self.buf)} unexpected bytes")
        return self.state == "open"


def open_many(count, timeout=120, inflight=256, **kw):
    """Opens `count` connections (Conn(**kw)), `inflight` at a time; returns their sockets.
    Raises Failure, naming the commonest errors, when any failed."""
    sel = selectors.DefaultSelector()
    done, errors, started = [], {}, 0
    deadline = time.monotonic() + timeout
    try:
        while len(done) + sum(errors.values()) < count:
            while len(sel.get_map()) < inflight and started < count:
                c = Conn(**kw)
                sel.register(c.sock, selectors.EVENT_WRITE, c)
                started += 1
            if time.monotonic() > deadline:
                raise Failure(f"timed out: {len(done)} of {count} connections ready after {timeout} s")
            for key, _ in sel.select(timeout=1):
                c = key.data
                try:
                    ready = c.step()
                    if c.state == "head":
                        sel.modify(c.sock, selectors.EVENT_READ, c)
                    if ready:
                        sel.unregister(c.sock)
                        done.append(c.sock)
                except (OSError, ValueError, zlib.error) as e:
                    errors[str(e)[:100]] = errors.get(str(e)[:100], 0) + 1
                    sel.unregister(c.sock)
                    c.sock.close()
        if errors:
            raise Failure(f"{sum(errors.values())} of {count} connections failed: " +
                          "; ".join(f"{n} x {e}" for e, n in list(errors.items())[:5]))
        return done
    except BaseException:
        for k in list(sel.get_map().values()):
            k.fileobj.close()
        for s in done:
            s.close()
        raise
    finally:
        sel.close()


def readable_count(socks):
    """How many idle sockets are readable: closed by the server or written to."""
    with selectors.DefaultSelector() as sel:
        for s in socks:
            sel.register(s, selectors.EVENT_READ)
        return len(sel.select(timeout=0))
