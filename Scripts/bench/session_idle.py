#!/usr/bin/env python3
"""Memory per idle WebSocket session subscribed to one channel: halley beside Nchan.

Each server runs alone with one event loop / one worker (halley --threads 1, nginx
worker_processes 1). The client opens N WebSockets and subscribes every one to the channel
`bench`: on halley the Pusher way (/app/app-key?protocol=7, pusher:connection_established,
pusher:subscribe, pusher_internal:subscription_succeeded; mode `halley`, or `halley-resumable`
with halley=1 on the URL: a resumable session with its token and resend buffer; the client
acknowledges the subscription answer, as halley.js does); on Nchan a
WebSocket to its subscriber location /sub/bench (subscribed by the upgrade). Then it waits
SETTLE seconds and reads the server's memory from /proc: VmRSS, RssAnon, the exact Rss of
smaps_rollup, VmData (halley, and the nginx worker; for Nchan RssShmem too: its channels and
messages live in shared memory). Steps: N/2 then N sessions. Then one message is published to the
channel and every session must receive it (the proof they were subscribed); the memory is read
again ("after 1 msg": buffers a delivery leaves behind). Everything is closed and the server's
descriptors must be back to the baseline.

B/session = (Rss at the step - Rss at the baseline) / sessions, the baseline being the server
after one session came and went. Kernel socket buffers are in none of these figures. The goal
for halley: under 1 KiB per idle subscribed session.

Usage: Scripts/bench/session_idle.sh [-n 10000] [--steps 5000,10000] [--modes halley,nchan]
       [--no-build | --halley-bin PATH]     (see --help)

Exit status: 0 when every measurement worked, 1 on any failure (a server did not start or died,
a handshake or subscription failed, a session missed the message, the server closed or wrote to
an idle session, descriptors leaked), and with --enforce-goal when halley (the plain Pusher
session; halley-resumable is shown for information) is over 1 KiB/session.
"""

import argparse
import base64
import errno
import hashlib
import os
import re
import resource
import selectors
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import zlib
from benchlib import (REPO, Failure, ServerProcess, die_with_parent, failures_summary, fd_count, free_port, log, proc_status,
                      readable_count, smaps_rss, version)

HERE = os.path.dirname(os.path.abspath(__file__))
GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
CHANNEL = "bench"
TOKEN = "benchtoken"
GOAL_BYTES = 1024
MODES = ("halley", "halley-resumable", "halley-deflate", "halley-deflate-kept", "nchan")
# The deflate modes offer what a browser offers (`permessage-deflate; client_max_window_bits`:
# the client would keep its context) and send pusher:subscribe compressed, as browsers do.
# halley-deflate: the hub's default (it answers client_no_context_takeover, one inflater per
# loop); halley-deflate-kept: --ws-client-context-takeover on (an inflater per connection).
BROWSER_DEFLATE = "permessage-deflate; client_max_window_bits"


def shmem_kb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("RssShmem:"):
                return int(line.split()[1])
    return 0



# ---- servers --------------------------------------------------------------------------------

class Server(ServerProcess):
    def mem_pid(self):
        return self.proc.pid


class Halley(Server):
    normal = ("halley listening on", "SIGTERM: stopping", "halley stopped", "public root",
              "using the development app", "stopping", "stopped")

    def __init__(self, binary, tmp, resumable, cpu, deflate=None):
        self.binary, self.resumable, self.cpu, self.deflate = binary, resumable, cpu, deflate
        self.name = {None: "halley-resumable" if resumable else "halley", "asked": "halley-deflate",
                     "kept": "halley-deflate-kept"}[deflate]
        self.log_path = os.path.join(tmp, f"{self.name}.log")
        self.path = "/app/app-key?protocol=7&client=bench&version=1" + ("&halley=1" if resumable else "")

    def start(self):
        cmd = [self.binary, "--host", "127.0.0.1", "--port", "0", "--threads", "1", "--app-token", TOKEN,
               "--ws-ping-interval", "3600", "--log-level", "warning", "--shutdown-grace", "1",
               # every client is 127.0.0.1: the per-address abuse limits do not apply here
               "--max-connections-per-address", "0", "--session-opens-per-second", "0", "--max-lingering-per-address", "0"]
        if self.deflate == "kept":
            cmd += ["--ws-client-context-takeover", "on"]
        if self.cpu is not None:
            cmd = ["taskset", "-c", str(self.cpu)] + cmd
        env = {k: v for k, v in os.environ.items() if not k.startswith("HALLEY_")}
        self.launch(cmd, r"halley listening on http://127\.0\.0\.1:(\d+) \(([^)]*)\)", env=env)

    def publish(self, data):
        body = f'{{"channel":"{CHANNEL}","event":"tick","data":"{data}"}}'.encode()
        req = urllib.request.Request(f"http://127.0.0.1:{self.port}/publish", data=body, method="POST",
                                     headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, r.read().decode(errors="replace")


class Nchan(Server):
    normal = ("[notice]",)

    def __init__(self, nginx, module, tmp, cpu):
        self.nginx, self.module, self.tmp, self.cpu = nginx, module, os.path.join(tmp, "nginx"), cpu
        os.makedirs(self.tmp, exist_ok=True)
        os.chmod(self.tmp, 0o755)
        self.name = "nchan"
        self.log_path = os.path.join(self.tmp, "error.log")
        self.path = f"/sub/{CHANNEL}"
        self.worker = None

    def mem_pid(self):
        return self.worker

    def start(self):
        with open(os.path.join(HERE, "nchan", "nginx.conf.in")) as f:
            template = f.read()
        nofile = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        for attempt in range(3):
            self.port = free_port()
            conf = (template.replace("@NCHAN_MODULE@", self.module)
                    .replace("@USER_LINE@", "user root;" if os.getuid() == 0 else "")
                    .replace("@NOFILE@", str(nofile)).replace("@TMP@", self.tmp)
                    .replace("@WORKER_CONNECTIONS@", str(nofile - 100)).replace("@SHM@", "256M")
                    .replace("@BUFFER_LENGTH@", "1000").replace("@PORT@", str(self.port))
                    .replace("@LP_MULTIPART@", "on"))
            path = os.path.join(self.tmp, "nginx.conf")
            with open(path, "w") as f:
                f.write(conf)
            cmd = [self.nginx, "-p", self.tmp, "-c", path, "-g", "daemon off;"]
            if self.cpu is not None:
                cmd = ["taskset", "-c", str(self.cpu)] + cmd
            log(f"{self.name}: " + " ".join(cmd))
            out = open(os.path.join(self.tmp, "nginx.out"), "wb")
            self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=out, preexec_fn=die_with_parent)
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and self.proc.poll() is None:
                try:
                    urllib.request.urlopen(f"http://127.0.0.1:{self.port}/pub/probe", timeout=2)
                    break
                except urllib.error.HTTPError as e:
                    if e.code == 404:
                        break
                except OSError:
                    pass
                time.sleep(0.1)
            if self.proc.poll() is None:
                kids = subprocess.run(["pgrep", "-P", str(self.proc.pid)], capture_output=True, text=True).stdout.split()
                if len(kids) != 1:
                    raise Failure(f"expected one nginx worker under pid {self.proc.pid}, found {kids}")
                self.worker = int(kids[0])
                log(f"{self.name}: nginx master pid {self.proc.pid}, worker pid {self.worker}, port {self.port}")
                return
            text = open(os.path.join(self.tmp, "nginx.out"), errors="replace").read()
            if "Address already in use" not in text:
                raise Failure(f"nginx did not start:\n{text}")
        raise Failure("nginx could not bind a free port in 3 attempts")

    def check_alive(self):
        super().check_alive()
        if self.worker is not None and not os.path.exists(f"/proc/{self.worker}"):
            raise Failure(f"the nginx worker {self.worker} is gone; error.log:\n{self.log_text()}")

    def publish(self, data):
        req = urllib.request.Request(f"http://127.0.0.1:{self.port}/pub/{CHANNEL}", data=data.encode(), method="POST",
                                     headers={"Content-Type": "text/plain"})
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, r.read().decode(errors="replace")


# ---- the client -----------------------------------------------------------------------------

def masked(opcode, payload, rsv1=False):
    key = os.urandom(4)
    n = len(payload)
    head = bytes([0x80 | (0x40 if rsv1 else 0) | opcode])
    if n < 126:
        head += bytes([0x80 | n])
    elif n < 65536:
        head += bytes([0x80 | 126]) + struct.pack("!H", n)
    else:
        head += bytes([0x80 | 127]) + struct.pack("!Q", n)
    return head + key + bytes(b ^ key[i & 3] for i, b in enumerate(payload))


def frames(buf):
    """(list of (opcode, payload), rest) of the whole unmasked server frames at the start of buf."""
    out = []
    while len(buf) >= 2:
        b0, b1 = buf[0], buf[1]
        if b1 & 0x80:
            raise ValueError("masked frame from the server")
        if b0 & 0x70:
            raise ValueError(f"RSV bits set (first byte {b0:#x})")
        n, h = b1 & 0x7F, 2
        if n == 126:
            if len(buf) < 4:
                break
            n, h = struct.unpack("!H", buf[2:4])[0], 4
        elif n == 127:
            if len(buf) < 10:
                break
            n, h = struct.unpack("!Q", buf[2:10])[0], 10
        if len(buf) < h + n:
            break
        if not b0 & 0x80:
            raise ValueError("fragmented message (not expected here)")
        out.append((b0 & 0x0F, buf[h:h + n]))
        buf = buf[h + n:]
    return out, buf


class Conn:
    __slots__ = ("sock", "state", "buf", "accept", "got")

    def __init__(self, sock):
        self.sock, self.state, self.buf, self.accept, self.got = sock, "connect", b"", None, None


SUBSCRIBE = ('{"event":"pusher:subscribe","data":{"channel":"%s"}}' % CHANNEL).encode()


def deflated(payload):
    """One message compressed for permessage-deflate (RFC 7692 §7.2.1: without 00 00 FF FF)."""
    c = zlib.compressobj(wbits=-15)
    return (c.compress(payload) + c.flush(zlib.Z_SYNC_FLUSH))[:-4]


def open_sessions(server, count, inflight, timeout):
    """Opens `count` WebSockets to the server and subscribes each to CHANNEL; returns the
    sockets. Raises Failure on any error."""
    halley = isinstance(server, Halley)
    deflate = halley and server.deflate is not None
    ext_line = f"Sec-WebSocket-Extensions: {BROWSER_DEFLATE}\r\n" if deflate else ""
    sel = selectors.DefaultSelector()
    done, errors = [], []
    pending = started = 0
    deadline = time.monotonic() + timeout

    def fail(c, why):
        errors.append(why)
        sel.unregister(c.sock)
        c.sock.close()

    def ready(c):
        sel.unregister(c.sock)
        done.append(c.sock)

    try:
        while len(done) + len(errors) < count:
            while pending < inflight and started < count:
                s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                s.setblocking(False)
                err = s.connect_ex(("127.0.0.1", server.port))
                if err not in (0, errno.EINPROGRESS):
                    s.close()
                    raise Failure(f"connect #{started}: {os.strerror(err)}")
                sel.register(s, selectors.EVENT_WRITE, Conn(s))
                pending += 1
                started += 1
            if time.monotonic() > deadline:
                raise Failure(f"timed out: {len(done)} of {count} sessions subscribed after {timeout} s")
            for key, _ in sel.select(timeout=1.0):
                c = key.data
                try:
                    if c.state == "connect":
                        err = c.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                        if err:
                            fail(c, f"connect: {os.strerror(err)}"); pending -= 1; continue
                        k = base64.b64encode(os.urandom(16))
                        c.accept = base64.b64encode(hashlib.sha1(k + GUID).digest()).decode()
                        req = (f"GET {server.path} HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\nUpgrade: websocket\r\n"
                               f"Connection: Upgrade\r\nSec-WebSocket-Key: {k.decode()}\r\nSec-WebSocket-Version: 13\r\n"
                               f"{ext_line}\r\n").encode()
                        if c.sock.send(req) != len(req):
                            fail(c, "short send"); pending -= 1; continue
                        c.state = "head"
                        sel.modify(c.sock, selectors.EVENT_READ, c)
                        continue
                    chunk = c.sock.recv(65536)
                    if not chunk:
                        fail(c, f"the server closed the connection ({c.state})"); pending -= 1; continue
                    c.buf += chunk
                    if c.state == "head":
                        end = c.buf.find(b"\r\n\r\n")
                        if end < 0:
                            continue
                        head = c.buf[:end].decode("latin-1").split("\r\n")
                        c.buf = c.buf[end + 4:]
                        if not head[0].startswith("HTTP/1.1 101"):
                            fail(c, f"status line {head[0]!r}"); pending -= 1; continue
                        hdr = {}
                        for l in head[1:]:
                            k2, _, v = l.partition(":")
                            hdr.setdefault(k2.strip().lower(), []).append(v.strip())
                        if hdr.get("sec-websocket-accept") != [c.accept]:
                            fail(c, f"Sec-WebSocket-Accept {hdr.get('sec-websocket-accept')}"); pending -= 1; continue
                        if deflate:
                            ext = ";".join(hdr.get("sec-websocket-extensions", []))
                            asked = "client_no_context_takeover" in ext
                            if not ext.startswith("permessage-deflate") or asked != (server.deflate == "asked"):
                                fail(c, f"Sec-WebSocket-Extensions {ext!r}"); pending -= 1; continue
                        if not halley:
                            if c.buf:
                                fail(c, f"{len(c.buf)} unexpected bytes after the 101"); pending -= 1; continue
                            ready(c); pending -= 1; continue
                        c.state = "established"
                    msgs, c.buf = frames(c.buf)
                    for op, payload in msgs:
                        if op == 9:
                            c.sock.send(masked(10, payload))
                            continue
                        if op != 1:
                            raise ValueError(f"opcode {op} while subscribing: {payload[:100]!r}")
                        if c.state == "established" and b'"pusher:connection_established"' in payload:
                            c.sock.send(masked(1, deflated(SUBSCRIBE), rsv1=True) if deflate else masked(1, SUBSCRIBE))
                            c.state = "subscribing"
                        elif c.state == "subscribing" and b'"pusher_internal:subscription_succeeded"' in payload:
                            c.state = "subscribed"
                            # A resumable session numbers it: acknowledge it as halley.js does,
                            # so the idle session holds no resend buffer.
                            seq = re.search(rb'"halley:seq":(\d+)', payload)
                            if seq:
                                c.sock.send(masked(1, b'{"event":"halley:ack","data":{"seq":%s}}' % seq.group(1)))
                        else:
                            raise ValueError(f"unexpected message in state {c.state}: {payload[:200]!r}")
                    if c.state == "subscribed":
                        if c.buf:
                            fail(c, f"{len(c.buf)} unexpected bytes after subscribing"); pending -= 1; continue
                        ready(c); pending -= 1
                except (OSError, ValueError) as e:
                    fail(c, f"{type(e).__name__}: {e}"); pending -= 1; continue
        if errors:
            raise Failure(failures_summary(errors, count, "sessions"))
        return done
    except BaseException:
        for k in list(sel.get_map().values()):
            k.fileobj.close()
        for s in done:
            s.close()
        raise
    finally:
        sel.close()



def receive_everywhere(socks, marker, timeout):
    """Every socket must receive one text message containing `marker`; returns how many did."""
    sel = selectors.DefaultSelector()
    bufs = {}
    for s in socks:
        sel.register(s, selectors.EVENT_READ)
        bufs[s] = b""
    got = 0
    deadline = time.monotonic() + timeout
    try:
        while got < len(socks) and time.monotonic() < deadline:
            for key, _ in sel.select(timeout=0.5):
                s = key.fileobj
                chunk = s.recv(65536)
                if not chunk:
                    raise Failure("the server closed a session instead of delivering the message")
                msgs, bufs[s] = frames(bufs[s] + chunk)
                for op, payload in msgs:
                    if op == 9:
                        s.send(masked(10, payload))
                    elif op == 1 and marker in payload:
                        got += 1
                        sel.unregister(s)
                        break
                    else:
                        raise Failure(f"unexpected frame (opcode {op}): {payload[:200]!r}")
        return got
    finally:
        sel.close()


# ---- the measurement ------------------------------------------------------------------------

def snapshot(server):
    pid = server.mem_pid()
    st = proc_status(pid)
    st["Rss"] = smaps_rss(pid)
    st["Shmem"] = shmem_kb(pid)
    st["fds"] = fd_count(pid)
    return st


def measure(server, steps, args):
    server.start()
    res = {"name": server.name, "steps": []}
    socks = []
    try:
        for s in open_sessions(server, 1, 1, 10):
            s.close()
        time.sleep(args.settle)
        server.check_alive()
        base = snapshot(server)
        res["base"] = base
        log(f"{server.name}: baseline VmRSS {base['VmRSS']} kB (RssAnon {base.get('RssAnon', '?')} kB, "
            f"RssShmem {base['Shmem']} kB), {base['fds']} fds")

        def record(label, n):
            time.sleep(args.settle)
            server.check_alive()
            st = snapshot(server)
            touched = readable_count(socks)
            row = {"label": label, "n": n, "rss": st["VmRSS"],
                   "per": (st["VmRSS"] - base["VmRSS"]) * 1024 / n,
                   "anon": (st["RssAnon"] - base["RssAnon"]) * 1024 / n if "RssAnon" in st and "RssAnon" in base else None,
                   "exact": (st["Rss"] - base["Rss"]) * 1024 / n if st["Rss"] and base["Rss"] else None,
                   "shmem": (st["Shmem"] - base["Shmem"]) * 1024 / n,
                   "data": (st["VmData"] - base["VmData"]) * 1024 / n, "fds": st["fds"]}
            res["steps"].append(row)
            log(f"{server.name}: {n:6d} {label}: VmRSS {st['VmRSS']} kB, +{row['per']:.0f} B/session from the baseline "
                f"(smaps {row['exact'] if row['exact'] is None else round(row['exact'])}, shmem {row['shmem']:.0f}); "
                f"{st['fds'] - base['fds']} more fds; {touched} sessions closed or written to by the server")
            if touched:
                raise Failure(f"{server.name} closed or wrote to {touched} of {n} idle sessions")
            if st["fds"] - base["fds"] < n:
                raise Failure(f"{server.name} holds {st['fds'] - base['fds']} more fds than at the baseline, expected >= {n}")

        for n in steps:
            t0 = time.monotonic()
            socks += open_sessions(server, n - len(socks), args.inflight, args.open_timeout)
            log(f"{server.name}: {n} sessions subscribed in {time.monotonic() - t0:.1f} s")
            record("idle", n)

        # One message to the channel: every session must get it (they are subscribed).
        marker = f"idle-check-{os.getpid()}-{int(time.time())}"
        status, body = server.publish(marker)
        if status not in (200, 201):
            raise Failure(f"{server.name}: publish answered {status}: {body[:200]}")
        got = receive_everywhere(socks, marker.encode(), args.open_timeout)
        log(f"{server.name}: one message published ({status}): {got} of {len(socks)} sessions received it")
        if got != len(socks):
            raise Failure(f"{server.name}: {len(socks) - got} of {len(socks)} sessions did not receive the message")
        record("after 1 msg", len(socks))

        for s in socks:
            s.close()
        socks = []
        time.sleep(args.settle)
        server.check_alive()
        st = snapshot(server)
        res["after_close"] = {"rss": st["VmRSS"], "fds": st["fds"], "base_fds": base["fds"]}
        log(f"{server.name}: all closed: VmRSS {st['VmRSS']} kB, {st['fds']} fds (baseline {base['fds']})")
        if st["fds"] != base["fds"]:
            raise Failure(f"{server.name} holds {st['fds']} fds after the client closed everything, {base['fds']} at the baseline")
    except BaseException:
        for s in socks:
            s.close()
        server.stop()
        log(f"{server.name} log (beyond the start lines):")
        for l in server.extra_log():
            log("  " + l)
        raise
    server.stop()
    res["log"] = server.extra_log()
    return res


def build_products(scratch, products):
    for p in products:
        cmd = ["swift", "build", "-c", "release", "--product", p, "--scratch-path", scratch]
        log(f"building: (cd {REPO} && {' '.join(cmd)})")
        r = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
        if r.returncode != 0:
            raise Failure("swift build failed:\n" + r.stdout[-3000:] + r.stderr[-3000:])


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-n", "--sessions", type=int, default=int(os.environ.get("N", "10000")),
                    help="sessions in the last step (default $N or 10000)")
    ap.add_argument("--steps", default=os.environ.get("STEPS"),
                    help="comma-separated session counts to measure at (default N/2,N)")
    ap.add_argument("--modes", default=os.environ.get("MODES", ",".join(MODES)),
                    help=f"servers to measure (default {','.join(MODES)})")
    ap.add_argument("--settle", type=float, default=float(os.environ.get("SETTLE", "2")),
                    help="seconds to wait before each measurement (default 2)")
    ap.add_argument("--inflight", type=int, default=256, help="sessions being opened at once (default 256)")
    ap.add_argument("--open-timeout", type=float, default=120, help="seconds allowed to open one step (default 120)")
    ap.add_argument("--server-cpu", type=int, default=int(os.environ.get("SERVER_CPU", "0")),
                    help="core to pin the servers to (default 0; -1: no pinning)")
    ap.add_argument("--halley-bin", default=os.environ.get("HALLEY_BIN"),
                    help="halley binary (default: build, then SCRATCH/release/halley)")
    ap.add_argument("--scratch", default=os.environ.get("SCRATCH", os.path.join(REPO, ".build")),
                    help="swift build --scratch-path (default .build, or $SCRATCH)")
    ap.add_argument("--no-build", action="store_true", default=bool(os.environ.get("NO_BUILD")),
                    help="do not build halley")
    ap.add_argument("--nginx-bin", default=os.environ.get("NGINX_BIN", "nginx"))
    ap.add_argument("--nchan-module", default=os.environ.get("NCHAN_MODULE", "/usr/lib/nginx/modules/ngx_nchan_module.so"))
    ap.add_argument("--enforce-goal", action="store_true", default=bool(os.environ.get("ENFORCE_GOALS")),
                    help=f"exit 1 when halley uses {GOAL_BYTES} B or more per session")
    ap.add_argument("--keep-tmp", action="store_true", default=bool(os.environ.get("KEEP_TMP")))
    args = ap.parse_args()

    n = args.sessions
    steps = sorted({int(x) for x in args.steps.split(",")}) if args.steps else sorted({max(1, n // 2), n})
    if steps[0] < 1:
        raise Failure("steps must be >= 1")
    n = steps[-1]
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    for m in modes:
        if m not in MODES:
            raise Failure(f"unknown mode {m!r}; known: {', '.join(MODES)}")
    cpu = None if args.server_cpu < 0 else args.server_cpu
    if cpu is not None and cpu >= os.cpu_count():
        raise Failure(f"no core {cpu} on this machine")

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < n + 200:
        raise Failure(f"RLIMIT_NOFILE is {soft} (hard {hard}): too low for {n} sessions plus the server's own")
    lo, hi = map(int, open("/proc/sys/net/ipv4/ip_local_port_range").read().split())
    if hi - lo + 1 < n + 100:
        raise Failure(f"ip_local_port_range {lo}-{hi} has too few ports for {n} sessions")

    if any(m.startswith("halley") for m in modes):
        if args.halley_bin is None:
            if not args.no_build:
                build_products(args.scratch, ["halley"])
            args.halley_bin = os.path.join(args.scratch, "release", "halley")
        if not os.access(args.halley_bin, os.X_OK):
            raise Failure(f"no halley binary at {args.halley_bin}")
    if "nchan" in modes:
        if shutil.which(args.nginx_bin) is None or not os.path.exists(args.nchan_module):
            raise Failure(f"nginx or the Nchan module ({args.nchan_module}) not found "
                          "(apt-get install -y nginx libnginx-mod-nchan), or leave nchan out of --modes")

    def git(*a):
        r = subprocess.run(["git", "-C", REPO, *a], capture_output=True, text=True)
        return r.stdout.strip() if r.returncode == 0 else "?"
    dirty = subprocess.run(["git", "-C", REPO, "diff", "--quiet", "HEAD", "--", "Sources"]).returncode != 0
    log("==> environment")
    log(f"host:    {' '.join(os.uname()[i] for i in (0, 2, 4))}, {os.cpu_count()} cores")
    if args.halley_bin:
        log(f"halley:  {args.halley_bin} (git {git('rev-parse', '--short', 'HEAD')}{', Sources modified' if dirty else ''})")
    if "nchan" in modes:
        nchan_v = subprocess.run(["dpkg-query", "-W", "-f", "${Version}", "libnginx-mod-nchan"],
                                 capture_output=True, text=True).stdout.strip() or "?"
        log(f"nchan:   {version([args.nginx_bin, '-v'])}, libnginx-mod-nchan {nchan_v}")
    log(f"python:  {sys.version.split()[0]}; RLIMIT_NOFILE {soft}; ports {lo}-{hi}")
    log(f"steps:   {', '.join(map(str, steps))} sessions; settle {args.settle} s; {args.inflight} opening at once; "
        f"servers on core {cpu if cpu is not None else '(any)'}")

    tmp = tempfile.mkdtemp(prefix="halley-bench-session-idle.")
    os.chmod(tmp, 0o755)
    results = []
    try:
        for m in modes:
            if m == "nchan":
                srv = Nchan(args.nginx_bin, args.nchan_module, tmp, cpu)
            else:
                srv = Halley(args.halley_bin, tmp, m == "halley-resumable", cpu,
                             {"halley-deflate": "asked", "halley-deflate-kept": "kept"}.get(m))
            log(f"\n==> {srv.name}")
            results.append(measure(srv, steps, args))
            extra = results[-1]["log"]
            log(f"{srv.name} log (beyond the start lines): " + ("(nothing)" if not extra else ""))
            for l in extra[:30]:
                log("  " + l)
    finally:
        if args.keep_tmp:
            log(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)

    log("")
    log("=== summary: server memory per idle WebSocket session subscribed to one channel, from the baseline")
    log("B/session: VmRSS growth / sessions (halley: the process; nchan: its one worker); anon: RssAnon; smaps: Rss of")
    log("smaps_rollup (exact); shmem: RssShmem (Nchan's shared zone); VmData: heap and anonymous mappings reserved.")
    log("Kernel socket memory is in none of them.")
    log(f"{'server':<17} {'sessions':>8} {'state':<12} {'VmRSS kB':>9} {'B/session':>10} {'anon':>7} {'smaps':>7} {'shmem':>7} {'VmData':>8}")

    def num(v):
        return "?" if v is None else f"{v:.0f}"
    for r in results:
        log(f"{r['name']:<17} {0:>8} {'baseline':<12} {r['base']['VmRSS']:>9}")
        for s in r["steps"]:
            log(f"{r['name']:<17} {s['n']:>8} {s['label']:<12} {s['rss']:>9} {s['per']:>10.0f} {num(s['anon']):>7} "
                f"{num(s['exact']):>7} {s['shmem']:>7.0f} {s['data']:>8.0f}")
        a = r["after_close"]
        log(f"{r['name']:<17} {'closed':>8} {'':<12} {a['rss']:>9}   fds {a['fds']} (baseline {a['base_fds']})")
    log("")
    missed = 0
    for r in results:
        idle = [s for s in r["steps"] if s["label"] == "idle"][-1]
        line = f"{r['name']}: {idle['per']:.0f} B per idle session at {idle['n']} sessions"
        if r["name"] == "halley":
            ok = idle["per"] < GOAL_BYTES
            missed += 0 if ok else 1
            line += f" (goal < {GOAL_BYTES} B: {'met' if ok else 'MISSED'})"
        elif r["name"] == "halley-resumable":
            line += " (resumable: token, resend buffer; no goal)"
        elif r["name"].startswith("halley-deflate"):
            line += " (a browser's deflate offer, subscribe compressed; no goal)"
        log(line)
    by = {r["name"]: [s for s in r["steps"] if s["label"] == "idle"][-1]["per"] for r in results}
    if "halley" in by and "nchan" in by and by["nchan"] > 0:
        log(f"halley/nchan: {by['halley'] / by['nchan']:.2f}")
    if missed and args.enforce_goal:
        raise Failure(f"{missed} halley mode(s) over {GOAL_BYTES} B per session")
    return 0


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # unwinds: servers stopped, tmp removed
    try:
        sys.exit(main())
    except Failure as e:
        print(f"session_idle: error: {e}", file=sys.stderr, flush=True)
        sys.exit(1)
    except KeyboardInterrupt:
        sys.exit(130)
