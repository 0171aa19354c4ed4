#!/usr/bin/env python3
"""Idle subscribed sessions over several nodes joined by Redis (issue 14): memory per session.

    Scripts/bench/cluster_idle.py [-n 50000] [--nodes 3]

Starts redis-server and NODES hubs (--redis, --threads 1, per-address limits off), then one
holder process per node (one process holds at most about 19,900 descriptors here) that opens
N/NODES plain Pusher WebSocket sessions to its node, each subscribed to channel `idle`. After
SETTLE s: every hub's RSS (VmRSS) and Redis's, against their baselines (each node warmed with
one session first), per session. Then one message is published on node 0: every session on
every node must receive it once (the holders check). Everything is closed at the end.
Holders answer the hubs' activity pings (`pusher:pong`) while they wait.
Environment: SETTLE=3, HALLEY_BIN (default .build/release/halley)
"""

import argparse
import json
import os
import selectors
import resource
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import time

HOST = "127.0.0.1"
here = os.path.dirname(os.path.abspath(__file__))
repo = os.path.dirname(os.path.dirname(here))


def rss_kb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def free_port():
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


# ---- a holder: N sessions on one node (run as `cluster_idle.py hold PORT N`)

def frame(text: bytes) -> bytes:
    """A masked client text frame (the mask is zero: masking is then the identity)."""
    n = len(text)
    head = struct.pack("!BB", 0x81, 0x80 | n) if n < 126 else struct.pack("!BBH", 0x81, 0xFE, n)
    return head + b"\0\0\0\0" + text


def read_frame(s) -> bytes:
    """The next text message; WebSocket pings are answered on the way."""
    while True:
        opcode, payload = read_raw_frame(s)
        if opcode == 0x9:
            s.sendall(struct.pack("!BB", 0x8A, 0x80 | len(payload)) + b"\0\0\0\0" + payload)
        elif opcode == 0x8:
            raise ConnectionError(f"closed by the hub: {payload[:2].hex()} {payload[2:]!r}")
        elif opcode == 0x1:
            return payload


def read_raw_frame(s):
    def exact(k):
        b = b""
        while len(b) < k:
            c = s.recv(k - len(b))
            if not c:
                raise ConnectionError("closed")
            b += c
        return b
    b0, b1 = exact(2)
    n = b1 & 0x7F
    if n == 126:
        n = struct.unpack("!H", exact(2))[0]
    elif n == 127:
        n = struct.unpack("!Q", exact(8))[0]
    return b0 & 0x0F, exact(n)


def open_session(port):
    s = socket.create_connection((HOST, port), timeout=30)
    s.sendall(f"GET /app/app-key?protocol=7 HTTP/1.1\r\nHost: {HOST}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
              "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n".encode())
    head = b""
    while b"\r\n\r\n" not in head:
        c = s.recv(1)
        if not c:
            raise ConnectionError("closed during the handshake")
        head += c
    assert head.startswith(b"HTTP/1.1 101"), head[:80]
    return s


def hold(port, n):
    socks = []
    for _ in range(n):
        s = open_session(port)
        m = json.loads(read_frame(s))
        assert m["event"] == "pusher:connection_established", m
        s.sendall(frame(b'{"event":"pusher:subscribe","data":{"channel":"idle"}}'))
        socks.append(s)
    for s in socks:
        m = json.loads(read_frame(s))
        while m["event"] == "pusher:ping":
            s.sendall(frame(b'{"event":"pusher:pong","data":{}}'))
            m = json.loads(read_frame(s))
        assert m["event"] == "pusher_internal:subscription_succeeded", m
    print(f"ready {len(socks)}", flush=True)
    sel = selectors.DefaultSelector()
    sel.register(sys.stdin, selectors.EVENT_READ)
    for s in socks:
        s.setblocking(True)
        sel.register(s, selectors.EVENT_READ)
    ticks = 0
    checking = False
    while True:
        for key, _ in sel.select(timeout=1):
            if key.fileobj is sys.stdin:
                line = sys.stdin.readline().strip()
                if line == "close" or not line:
                    for s in socks:
                        s.close()
                    return
                checking = line == "check"
                continue
            try:
                m = json.loads(read_frame(key.fileobj))
            except (ConnectionError, OSError) as e:  # counted below: the check then fails
                print(f"holder: a session's connection ended: {e}", file=sys.stderr, flush=True)
                sel.unregister(key.fileobj)
                continue
            if m["event"] == "pusher:ping":
                key.fileobj.sendall(frame(b'{"event":"pusher:pong","data":{}}'))
            else:
                assert m["event"] == "tick" and m["data"] == "hello", m
                ticks += 1
        if checking and ticks >= len(socks):
            print(f"received {ticks}", flush=True)
            checking = False


# ---- the run

def main():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # inherited by the hubs and holders
    if len(sys.argv) > 1 and sys.argv[1] == "hold":
        return hold(int(sys.argv[2]), int(sys.argv[3]))
    ap = argparse.ArgumentParser()
    ap.add_argument("-n", type=int, default=50000)
    ap.add_argument("--nodes", type=int, default=3)
    args = ap.parse_args()
    binary = os.environ.get("HALLEY_BIN", os.path.join(repo, ".build/release/halley"))
    settle = float(os.environ.get("SETTLE", "3"))
    tmp = tempfile.mkdtemp(prefix="halley-cluster-idle.")
    procs = []
    try:
        rport = free_port()
        redis = subprocess.Popen([shutil.which("redis-server"), "--port", str(rport), "--bind", HOST, "--save", "",
                                  "--appendonly", "no", "--dir", tmp], stdout=subprocess.DEVNULL)
        procs.append(redis)
        time.sleep(0.5)
        hubs = []
        for i in range(args.nodes):
            port = free_port()
            log = open(f"{tmp}/hub{i}.log", "w")
            p = subprocess.Popen([binary, "--port", str(port), "--threads", "1", "--redis", f"redis://{HOST}:{rport}",
                                  "--node-id", f"n{i}", "--app-token", "tok", "--log-level", "warning",
                                  "--max-connections-per-address", "0", "--session-opens-per-second", "0",
                                  "--max-lingering-per-address", "0"], stdout=log, stderr=subprocess.STDOUT)
            procs.append(p)
            hubs.append((p, port))
        time.sleep(1.5)
        for _, port in hubs:  # warm: one session each, then closed
            s = open_session(port)
            read_frame(s)
            s.sendall(frame(b'{"event":"pusher:subscribe","data":{"channel":"idle"}}'))
            read_frame(s)
            s.close()
        time.sleep(settle)
        base = [rss_kb(p.pid) for p, _ in hubs]
        rbase = rss_kb(redis.pid)
        per = args.n // args.nodes
        holders = []
        t0 = time.monotonic()
        for _, port in hubs:
            h = subprocess.Popen([sys.executable, __file__, "hold", str(port), str(per)], stdin=subprocess.PIPE,
                                 stdout=subprocess.PIPE, text=True)
            procs.append(h)
            holders.append(h)
        for h in holders:
            line = h.stdout.readline()
            assert line.startswith("ready"), line
        opened = time.monotonic() - t0
        time.sleep(settle)
        after = [rss_kb(p.pid) for p, _ in hubs]
        rafter = rss_kb(redis.pid)
        total = per * args.nodes
        print(f"{total} idle subscribed Pusher sessions over {args.nodes} nodes ({per} each), opened in {opened:.1f} s")
        for i, (b, a) in enumerate(zip(base, after)):
            print(f"  node {i}: RSS {b / 1024:.1f} -> {a / 1024:.1f} MiB, {(a - b) * 1024 / per:.0f} B per session")
        grow = sum(after) - sum(base)
        print(f"  all nodes: {grow * 1024 / total:.0f} B per session; redis-server: RSS {rbase / 1024:.1f} -> "
              f"{rafter / 1024:.1f} MiB")
        body = json.dumps({"channel": "idle", "event": "tick", "data": "hello"}).encode()
        c = socket.create_connection((HOST, hubs[0][1]))
        c.sendall(b"POST /publish HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer tok\r\nContent-Type: application/json\r\n"
                  + f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode() + body)
        answer = c.recv(4096).decode(errors="replace")
        c.close()
        assert " 201 " in answer.split("\r\n")[0], answer
        t1 = time.monotonic()
        for h in holders:
            h.stdin.write("check\n")
            h.stdin.flush()
        got = 0
        for h in holders:
            line = h.stdout.readline()
            assert line.startswith("received"), line
            got += int(line.split()[1])
        print(f"  one message published on node 0: received by {got} of {total} sessions on every node "
              f"(checked in {time.monotonic() - t1:.1f} s)")
        for h in holders:
            try:
                h.stdin.write("close\n")
                h.stdin.flush()
            except BrokenPipeError:
                pass  # it is gone already
            h.wait(60)
    finally:
        for p in reversed(procs):
            if p.poll() is None:
                p.terminate()
                try:
                    p.wait(10)
                except subprocess.TimeoutExpired:
                    p.kill()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
