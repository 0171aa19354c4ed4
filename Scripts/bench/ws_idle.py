#!/usr/bin/env python3
"""Memory per idle WebSocket connection: halley in three modes, and Node ws for context.

Starts the server, warms it with one connection that does what every measured one will do
(then closes it), measures its RSS (VmRSS of /proc/PID/status), then opens idle WebSocket
connections to /echo in steps (by default half of N, then N). Every connection completes
the upgrade (checks the 101 and Sec-WebSocket-Accept) and then stays idle. After each step
the script waits --settle seconds, checks that the server closed none of them and sent
nothing on them, and measures RSS again. It reports the growth per connection from the
baseline and the slope between steps, then closes every connection and checks that the
server's file descriptors return to the baseline.

halley runs with `--threads 1 --ws-ping-interval 3600` (no pings during the measurement),
a fresh process per mode:
  plain          no extension offered.
  deflate        `permessage-deflate; client_max_window_bits` offered (a browser's offer)
                 to a hub run with `--ws-client-context-takeover on`: the client keeps its
                 compression context, so halley keeps an inflater per connection. (By
                 default the hub answers such an offer with client_no_context_takeover:
                 that is the deflate-nct figure.)
  deflate-nct    `permessage-deflate; client_no_context_takeover` offered: halley inflates
                 with one stream shared by the loop.
In both deflate modes each connection sends one compressed, masked "hello" (RSV1; raw
deflate, sync flush, 00 00 FF FF removed) and reads its echo, so zlib state really exists.
RSS counts only the pages that one small message touched: an inflater's 32 KiB window fills
as traffic flows, and the VmData column (heap reserved, touched or not) shows that bound.
Node ws (Scripts/bench/ws_echo_node.js, permessage-deflate off, `plain` mode) is measured
the same way for context; its RSS includes garbage V8 has not collected yet.

RSS covers user-space memory only: the kernel's per-socket memory is not in it. smaps_rollup's
Rss is shown beside VmRSS as a cross-check (VmRSS comes from batched per-CPU counters).

Usage: Scripts/bench/ws_idle.sh [-n 10000] [--steps 5000,10000] [--modes plain,deflate,deflate-nct]
       [--no-node] [--no-build | --halley-bin PATH]     (see --help)

The client opens connections non-blocking, --inflight at a time, with a selector;
RLIMIT_NOFILE is raised to the hard limit (the servers inherit it).

Exit status: 0 when every measurement worked, 1 on any failure (server did not start or
died, a handshake or echo was wrong, a connection was closed by the server, fds leaked).
"""

import argparse
import errno
import hashlib
import base64
import os
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
import zlib
from benchlib import (REPO, Failure, ServerProcess, build, failures_summary, fd_count, log, proc_status,
                      readable_count, smaps_rss, version)

HERE = os.path.dirname(os.path.abspath(__file__))
GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

MODES = {
    # name: (Sec-WebSocket-Extensions offered or None, send one compressed message)
    "plain": (None, False),
    "deflate": ("permessage-deflate; client_max_window_bits", True),
    "deflate-nct": ("permessage-deflate; client_no_context_takeover", True),
}



# ---- /proc ----------------------------------------------------------------------------------


# ---- servers --------------------------------------------------------------------------------

class Halley(ServerProcess):
    normal = ("halley listening on", "SIGTERM: stopping", "halley stopped")

    def __init__(self, binary, tmp, mode):
        self.binary, self.mode = binary, mode
        self.name = f"halley {mode}"
        self.log_path = os.path.join(tmp, f"halley-{mode}.log")

    def start(self):
        cmd = [self.binary, "--port", "0", "--threads", "1", "--ws-ping-interval", "3600",
               "--log-level", "warning", "--shutdown-grace", "1",
               # every client is 127.0.0.1: the per-address abuse limits do not apply here
               "--max-connections-per-address", "0", "--session-opens-per-second", "0", "--max-lingering-per-address", "0"]
        if self.mode == "deflate":
            cmd += ["--ws-client-context-takeover", "on"]
        # halley reads HALLEY_* variables as options: run it with none of them.
        env = {k: v for k, v in os.environ.items() if not k.startswith("HALLEY_")}
        self.launch(cmd, r"halley listening on http://127\.0\.0\.1:(\d+) \(([^)]*)\)", env)


class Node(ServerProcess):
    normal = ("ws_echo_node listening on",)

    def __init__(self, node_bin, tmp):
        self.node_bin = node_bin
        self.name = "node plain"
        self.mode = "plain"
        self.log_path = os.path.join(tmp, "node.log")

    def start(self):
        cmd = [self.node_bin, os.path.join(HERE, "ws_echo_node.js"), "0"]
        self.launch(cmd, r"ws_echo_node listening on ws://127\.0\.0\.1:(\d+) \(([^)]*)\)")


# ---- the client -----------------------------------------------------------------------------

def masked(first_byte, payload):
    key = os.urandom(4)
    assert len(payload) < 126
    return bytes([first_byte, 0x80 | len(payload)]) + key + bytes(b ^ key[i & 3] for i, b in enumerate(payload))


def compressed_hello():
    c = zlib.compressobj(6, zlib.DEFLATED, -15)
    body = c.compress(b"hello") + c.flush(zlib.Z_SYNC_FLUSH)
    assert body.endswith(b"\x00\x00\xff\xff")
    return body[:-4]


HELLO_Z = compressed_hello()


class Conn:
    __slots__ = ("sock", "state", "buf", "accept")

    def __init__(self, sock):
        self.sock, self.state, self.buf, self.accept = sock, "connect", b"", None


def check_head(c, head, offer):
    lines = head.decode("latin-1").split("\r\n")
    if not lines[0].startswith("HTTP/1.1 101"):
        return f"status line {lines[0]!r}"
    hdr = {}
    for l in lines[1:]:
        k, _, v = l.partition(":")
        hdr.setdefault(k.strip().lower(), []).append(v.strip())
    if hdr.get("sec-websocket-accept") != [c.accept]:
        return f"Sec-WebSocket-Accept {hdr.get('sec-websocket-accept')} != {c.accept}"
    ext = hdr.get("sec-websocket-extensions")
    if offer is None and ext:
        return f"extension {ext} not offered"
    if offer is not None:
        if not ext or not ext[0].startswith("permessage-deflate"):
            return f"permessage-deflate not accepted (response: {ext})"
        if "client_no_context_takeover" in offer and "client_no_context_takeover" not in ext[0]:
            return f"client_no_context_takeover not in {ext}"
        if "client_no_context_takeover" not in offer and "client_no_context_takeover" in ext[0]:
            return f"context takeover refused ({ext}): is the hub run with --ws-client-context-takeover on?"
    return None


def parse_echo(buf):
    """(payload, rest) of one whole unmasked server frame in buf, or (None, buf)."""
    if len(buf) < 2:
        return None, buf
    b0, b1 = buf[0], buf[1]
    n, h = b1 & 0x7F, 2
    if n == 126:
        if len(buf) < 4:
            return None, buf
        n, h = struct.unpack("!H", buf[2:4])[0], 4
    elif n == 127:
        if len(buf) < 10:
            return None, buf
        n, h = struct.unpack("!Q", buf[2:10])[0], 10
    if len(buf) < h + n:
        return None, buf
    payload = buf[h:h + n]
    if b1 & 0x80:
        raise ValueError("masked frame from the server")
    if b0 & 0x0F != 1 or not b0 & 0x80:
        raise ValueError(f"expected one text frame, got first byte {b0:#x}")
    if b0 & 0x40:
        d = zlib.decompressobj(-15)
        payload = d.decompress(payload + b"\x00\x00\xff\xff")
    return payload, buf[h + n:]


def open_ws(port, count, inflight, timeout, mode):
    """Opens `count` WebSocket connections to /echo, upgraded (and, in the deflate modes, past
    one compressed echo); returns the sockets. Raises Failure on any error."""
    offer, send_hello = MODES[mode]
    sel = selectors.DefaultSelector()
    done, pending, started = [], 0, 0
    deadline = time.monotonic() + timeout
    errors = []
    hello = b""
    if send_hello:
        hello = HELLO_Z

    def fail(c, why):
        errors.append(why)
        sel.unregister(c.sock)
        c.sock.close()

    try:
        while len(done) + len(errors) < count:
            while pending < inflight and started < count:
                s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                s.setblocking(False)
                err = s.connect_ex(("127.0.0.1", port))
                if err not in (0, errno.EINPROGRESS):
                    s.close()
                    raise Failure(f"connect #{started}: {os.strerror(err)}")
                sel.register(s, selectors.EVENT_WRITE, Conn(s))
                pending += 1
                started += 1
            if time.monotonic() > deadline:
                raise Failure(f"timed out: {len(done)} of {count} connections ready after {timeout} s")
            for key, _ in sel.select(timeout=1.0):
                c = key.data
                try:
                    if c.state == "connect":
                        err = c.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                        if err:
                            fail(c, f"connect: {os.strerror(err)}"); pending -= 1; continue
                        k = base64.b64encode(os.urandom(16))
                        c.accept = base64.b64encode(hashlib.sha1(k + GUID).digest()).decode()
                        req = (f"GET /echo HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
                               f"Connection: Upgrade\r\nSec-WebSocket-Key: {k.decode()}\r\nSec-WebSocket-Version: 13\r\n")
                        if offer:
                            req += f"Sec-WebSocket-Extensions: {offer}\r\n"
                        req = (req + "\r\n").encode()
                        if c.sock.send(req) != len(req):
                            fail(c, "short send"); pending -= 1; continue
                        c.state = "head"
                        sel.modify(c.sock, selectors.EVENT_READ, c)
                        continue
                    chunk = c.sock.recv(65536)
                    if not chunk:
                        fail(c, f"server closed the connection in state {c.state}"); pending -= 1; continue
                    c.buf += chunk
                    if c.state == "head":
                        end = c.buf.find(b"\r\n\r\n")
                        if end < 0:
                            continue
                        why = check_head(c, c.buf[:end], offer)
                        if why:
                            fail(c, why); pending -= 1; continue
                        c.buf = c.buf[end + 4:]
                        if not send_hello:
                            if c.buf:
                                fail(c, f"{len(c.buf)} bytes after the 101"); pending -= 1; continue
                            sel.unregister(c.sock); done.append(c.sock); pending -= 1
                            continue
                        frame = masked(0xC1, hello)  # FIN, RSV1, text
                        if c.sock.send(frame) != len(frame):
                            fail(c, "short send"); pending -= 1; continue
                        c.state = "echo"
                    if c.state == "echo":
                        payload, rest = parse_echo(c.buf)
                        if payload is None:
                            continue
                        if payload != b"hello" or rest:
                            fail(c, f"echo {payload!r} (+{len(rest)} B), expected b'hello'"); pending -= 1; continue
                        c.buf = b""
                        sel.unregister(c.sock); done.append(c.sock); pending -= 1
                except (OSError, ValueError, zlib.error) as e:
                    fail(c, f"{type(e).__name__}: {e}"); pending -= 1; continue
        if errors:
            raise Failure(failures_summary(errors, count, "connections"))
        return done
    except BaseException:
        for k in list(sel.get_map().values()):
            k.fileobj.close()
        for s in done:
            s.close()
        raise
    finally:
        sel.close()



# ---- the measurement ------------------------------------------------------------------------

def measure(server, steps, args):
    server.start()
    res = {"name": server.name, "steps": []}
    socks = []
    pid = server.proc.pid
    try:
        for s in open_ws(server.port, 1, 1, 10, server.mode):
            s.close()
        time.sleep(args.settle)
        server.check_alive()
        base = proc_status(pid)
        base["Rss"] = smaps_rss(pid)
        base_fds = fd_count(pid)
        res["base"] = base
        log(f"{server.name}: baseline VmRSS {base['VmRSS']} kB (RssAnon {base.get('RssAnon', '?')} kB), {base_fds} fds")
        prev_n, prev_rss = 0, base["VmRSS"]
        for n in steps:
            t0 = time.monotonic()
            socks += open_ws(server.port, n - len(socks), args.inflight, args.open_timeout, server.mode)
            took = time.monotonic() - t0
            time.sleep(args.settle)
            server.check_alive()
            st = proc_status(pid)
            st["Rss"] = smaps_rss(pid)
            fds = fd_count(pid)
            touched = readable_count(socks)
            per_conn = (st["VmRSS"] - base["VmRSS"]) * 1024 / n
            slope = (st["VmRSS"] - prev_rss) * 1024 / (n - prev_n)
            anon = ((st["RssAnon"] - base["RssAnon"]) * 1024 / n) if "RssAnon" in st and "RssAnon" in base else None
            exact = ((st["Rss"] - base["Rss"]) * 1024 / n) if st["Rss"] and base["Rss"] else None
            data = (st["VmData"] - base["VmData"]) * 1024 / n
            res["steps"].append({"n": n, "rss": st["VmRSS"], "per_conn": per_conn, "slope": slope,
                                 "anon_per_conn": anon, "exact_per_conn": exact, "fds": fds, "data_per_conn": data})
            log(f"{server.name}: {n:6d} idle WebSockets (opened in {took:.1f} s): VmRSS {st['VmRSS']} kB, "
                f"+{per_conn:.0f} B/conn from baseline, +{slope:.0f} B/conn since previous step; "
                f"{fds - base_fds} more fds; {touched} closed or written to by the server")
            if touched:
                raise Failure(f"{server.name} closed or wrote to {touched} of {n} idle connections")
            if fds - base_fds < n:
                raise Failure(f"{server.name} holds {fds - base_fds} more fds than at baseline, expected >= {n}")
            prev_n, prev_rss = n, st["VmRSS"]
        for s in socks:
            s.close()
        socks = []
        time.sleep(args.settle)
        server.check_alive()
        st = proc_status(pid)
        res["after_close"] = {"rss": st["VmRSS"], "fds": fd_count(pid), "base_fds": base_fds}
        log(f"{server.name}: all closed: VmRSS {st['VmRSS']} kB, {res['after_close']['fds']} fds (baseline {base_fds})")
        if res["after_close"]["fds"] != base_fds:
            raise Failure(f"{server.name} holds {res['after_close']['fds']} fds after the client closed "
                          f"everything, {base_fds} at baseline")
    except BaseException:
        for s in socks:
            s.close()
        server.stop()
        log(f"{server.name} log (beyond the start line):")
        for l in server.extra_log():
            log("  " + l)
        raise
    server.stop()
    res["log"] = server.extra_log()
    return res



def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-n", "--connections", type=int, default=int(os.environ.get("N", "10000")),
                    help="idle connections in the last step (default $N or 10000)")
    ap.add_argument("--steps", default=os.environ.get("STEPS"),
                    help="comma-separated connection counts to measure at (default N/2,N)")
    ap.add_argument("--modes", default=os.environ.get("MODES", ",".join(MODES)),
                    help=f"halley modes to measure (default {','.join(MODES)})")
    ap.add_argument("--settle", type=float, default=float(os.environ.get("SETTLE", "2")),
                    help="seconds to wait before each measurement (default 2)")
    ap.add_argument("--inflight", type=int, default=256, help="connections being opened at once (default 256)")
    ap.add_argument("--open-timeout", type=float, default=120, help="seconds allowed to open one step (default 120)")
    ap.add_argument("--halley-bin", default=os.environ.get("HALLEY_BIN"),
                    help="halley binary (default: build, then .build/release/halley)")
    ap.add_argument("--no-build", action="store_true", default=bool(os.environ.get("NO_BUILD")),
                    help="do not run `swift build -c release`")
    ap.add_argument("--node-bin", default=os.environ.get("NODE_BIN", "node"))
    ap.add_argument("--no-node", action="store_true", help="measure halley only")
    ap.add_argument("--keep-tmp", action="store_true", default=bool(os.environ.get("KEEP_TMP")))
    args = ap.parse_args()

    n = args.connections
    steps = sorted({int(x) for x in args.steps.split(",")}) if args.steps else sorted({max(1, n // 2), n})
    if steps[0] < 1:
        raise Failure("steps must be >= 1")
    n = steps[-1]
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    for m in modes:
        if m not in MODES:
            raise Failure(f"unknown mode {m!r}; known: {', '.join(MODES)}")

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < n + 200:
        raise Failure(f"RLIMIT_NOFILE is {soft} (hard {hard}): too low for {n} connections plus the server's own")
    lo, hi = map(int, open("/proc/sys/net/ipv4/ip_local_port_range").read().split())
    if hi - lo + 1 < n + 100:
        raise Failure(f"ip_local_port_range {lo}-{hi} has too few ports for {n} connections")

    if args.halley_bin is None:
        build(args.no_build)
        args.halley_bin = os.path.join(REPO, ".build", "release", "halley")
    if not os.access(args.halley_bin, os.X_OK):
        raise Failure(f"no halley binary at {args.halley_bin}")
    if not args.no_node:
        if shutil.which(args.node_bin) is None:
            raise Failure(f"{args.node_bin} not found (apt-get install -y nodejs node-ws), or pass --no-node")
        if not os.path.exists("/usr/share/nodejs/ws/package.json"):
            raise Failure("Node's ws not found at /usr/share/nodejs/ws (apt-get install -y node-ws), or pass --no-node")

    def git(*a):
        r = subprocess.run(["git", "-C", REPO, *a], capture_output=True, text=True)
        return r.stdout.strip() if r.returncode == 0 else "?"
    dirty = subprocess.run(["git", "-C", REPO, "diff", "--quiet", "--", "Sources"]).returncode != 0
    log("==> environment")
    log(f"host:    {' '.join(os.uname()[i] for i in (0, 2, 4))}, {os.cpu_count()} cores")
    log(f"halley:  {args.halley_bin} (git {git('rev-parse', '--short', 'HEAD')}{', Sources modified' if dirty else ''})")
    if not args.no_node:
        import json
        with open("/usr/share/nodejs/ws/package.json") as f:
            wsv = json.load(f).get("version", "?")
        log(f"node:    {version([args.node_bin, '--version'])}, ws {wsv}")
    log(f"python:  {sys.version.split()[0]}; zlib {zlib.ZLIB_RUNTIME_VERSION}; RLIMIT_NOFILE {soft}; ports {lo}-{hi}")
    log(f"steps:   {', '.join(map(str, steps))} connections; settle {args.settle} s; {args.inflight} opening at once")
    log(f"modes:   " + "; ".join(f"{m}: {MODES[m][0] or 'no extension'}{', one compressed hello echoed' if MODES[m][1] else ''}"
                                  for m in modes))

    tmp = tempfile.mkdtemp(prefix="halley-bench-wsidle.")
    results = []
    try:
        servers = [Halley(args.halley_bin, tmp, m) for m in modes]
        if not args.no_node:
            servers.append(Node(args.node_bin, tmp))
        for srv in servers:
            log(f"\n==> {srv.name}")
            results.append(measure(srv, steps, args))
            extra = results[-1]["log"]
            log(f"{srv.name} log (beyond the start line): " + ("(nothing)" if not extra else ""))
            for l in extra:
                log("  " + l)
    finally:
        if args.keep_tmp:
            log(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)

    log("")
    log("=== summary: RSS growth per idle WebSocket connection, from the baseline after one connection ===")
    log("B/conn and slope from VmRSS (slope: since the previous step); anon: RssAnon; smaps: Rss of")
    log("/proc/PID/smaps_rollup (exact). Kernel socket memory is not in any of them. VmData B/conn:")
    log("growth of the data segment (heap and anonymous mappings, touched or not): what the connections")
    log("hold if every page of it gets touched, e.g. a zlib window filling up with traffic.")
    log(f"{'server':<19} {'conns':>7} {'VmRSS kB':>10} {'B/conn':>8} {'anon B/conn':>12} {'slope B/conn':>13} {'smaps B/conn':>13} {'VmData B/conn':>14}")
    for r in results:
        log(f"{r['name']:<19} {0:>7} {r['base']['VmRSS']:>10}   (baseline)")
        for s in r["steps"]:
            anon = f"{s['anon_per_conn']:.0f}" if s["anon_per_conn"] is not None else "?"
            exact = f"{s['exact_per_conn']:.0f}" if s["exact_per_conn"] is not None else "?"
            log(f"{r['name']:<19} {s['n']:>7} {s['rss']:>10} {s['per_conn']:>8.0f} {anon:>12} {s['slope']:>13.0f} {exact:>13} {s['data_per_conn']:>14.0f}")
        a = r["after_close"]
        log(f"{r['name']:<19} {'closed':>7} {a['rss']:>10}   fds {a['fds']} (baseline {a['base_fds']})")
    log("")
    log(f"B/conn at {steps[-1]} connections: " +
        "; ".join(f"{r['name']} {r['steps'][-1]['per_conn']:.0f}" for r in results))
    return 0


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # unwinds: servers stopped, tmp removed
    try:
        sys.exit(main())
    except Failure as e:
        print(f"ws_idle: error: {e}", file=sys.stderr, flush=True)
        sys.exit(1)
    except KeyboardInterrupt:
        sys.exit(130)
