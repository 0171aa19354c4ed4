#!/usr/bin/env python3
"""Helpers of Scripts/bench/api_publish.sh (the Pusher HTTP API publish benchmark).

  requests --server halley|nchan --out FILE [--count N --size B ...]
      Writes N distinct publish requests for wrk (Scripts/bench/api_publish.lua reads them):
      per request a line with the path and query, then a line with the body. For halley each
      is a signed `POST /apps/ID/events` (auth_timestamp = now, valid for 600 s, so generate
      right before the run); for Nchan an unsigned `POST /pub/CHANNEL` of the same data.
  check --server halley|nchan --port P --file FILE
      Sends the file's first request on a fresh connection and checks the answer (halley:
      200 and the body `{}`; Nchan: 2xx). Prints the status line and body.
  hold --server halley|nchan --port P --subscribers N
      Opens N WebSocket subscribers on the channel (halley: Pusher protocol 7, pusher:subscribe
      and its subscription_succeeded; Nchan: its WebSocket subscriber location), prints
      `ready ...`, then reads everything that arrives, as fast as it can, and answers commands
      on stdin, one per line:
        probe     waits (10 s at most) until every subscriber has received something, and
                  takes the bytes each received as the size of one delivered frame (every
                  message of a run has the same size); prints `probe frame=B ...`
        mark      prints `mark bytes=... deliveries=... open=... closed=... codes=...
                  cpu=...` (cumulative since the probe)
        drain S   waits until nothing arrived for 1 s (S s at most), then prints like mark
        quit      exits
      Subscribers only count bytes (bytes / frame size = deliveries); a subscriber the server
      closes is counted with the close code of the server's Close frame, if it sent one.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import hmac
import json
import os
import select
import socket
import struct
import sys
import time


def die(msg):
    print(f"api_publish.py: error: {msg}", file=sys.stderr, flush=True)
    sys.exit(1)


# ---- requests -----------------------------------------------------------------------------

def sign(secret, method, path, params):
    s = "&".join(f"{k.lower()}={v}" for k, v in sorted(params.items(), key=lambda kv: kv[0].lower()))
    return hmac.new(secret.encode(), f"{method}\n{path}\n{s}".encode(), hashlib.sha256).hexdigest()


def data_of(i, size):
    head = f"m{i:09d}-"
    return (head + "x" * size)[:size] if size >= len(head) else head[:size]


def cmd_requests(a):
    now = int(time.time())
    with open(a.out, "w") as f:
        for i in range(a.count):
            data = data_of(i, a.size)
            if a.server == "halley":
                body = json.dumps({"name": a.event, "channel": a.channel, "data": data}, separators=(",", ":"))
                path = f"/apps/{a.app_id}/events"
                params = {"auth_key": a.app_key, "auth_timestamp": str(now), "auth_version": "1.0",
                          "body_md5": hashlib.md5(body.encode()).hexdigest()}
                params["auth_signature"] = sign(a.app_secret, "POST", path, params)
                target = path + "?" + "&".join(f"{k}={v}" for k, v in params.items())
            else:
                body = data
                target = f"/pub/{a.channel}"
            assert "\n" not in body and "\n" not in target
            f.write(target + "\n" + body + "\n")
    print(f"{a.count} requests, timestamp {now}, first: POST {open(a.out).readline().strip()}")


def cmd_check(a):
    with open(a.file) as f:
        target = f.readline().rstrip("\n")
        body = f.readline().rstrip("\n").encode()
    ctype = "application/json" if a.server == "halley" else "text/plain"
    req = (f"POST {target} HTTP/1.1\r\nHost: 127.0.0.1:{a.port}\r\nContent-Type: {ctype}\r\n"
           f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode() + body
    s = socket.create_connection(("127.0.0.1", a.port), timeout=5)
    s.sendall(req)
    resp = b""
    while True:
        d = s.recv(65536)
        if not d:
            break
        resp += d
    s.close()
    head, _, rbody = resp.partition(b"\r\n\r\n")
    status_line = head.split(b"\r\n", 1)[0].decode(errors="replace")
    parts = status_line.split()
    code = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0
    text = rbody.decode(errors="replace").strip().replace("\r\n", " | ").replace("\n", " | ")
    print(f"{status_line}; body: {text[:200]}")
    if a.server == "halley":
        ok = code == 200 and rbody.strip() == b"{}"
    else:
        ok = 200 <= code < 300
    if not ok:
        die(f"{a.server}: the sample request was refused or answered unexpectedly: {status_line}")


# ---- subscribers --------------------------------------------------------------------------

def ws_frame(payload: bytes, opcode=1):
    mask = os.urandom(4)
    n = len(payload)
    if n < 126:
        head = struct.pack("!BB", 0x80 | opcode, 0x80 | n)
    elif n < 65536:
        head = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, n)
    else:
        head = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, n)
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def parse_frames(buf: bytes):
    """Complete server frames at the start of buf: ([(opcode, payload)], rest)."""
    out = []
    while len(buf) >= 2:
        op = buf[0] & 0x0F
        n = buf[1] & 0x7F
        i = 2
        if n == 126:
            if len(buf) < 4:
                break
            n = struct.unpack("!H", buf[2:4])[0]
            i = 4
        elif n == 127:
            if len(buf) < 10:
                break
            n = struct.unpack("!Q", buf[2:10])[0]
            i = 10
        if len(buf) < i + n:
            break
        out.append((op, buf[i:i + n]))
        buf = buf[i + n:]
    return out, buf


def recv_until(s, buf, pred, deadline):
    while not pred(buf):
        if time.monotonic() > deadline:
            raise TimeoutError("timed out")
        s.settimeout(max(0.01, deadline - time.monotonic()))
        d = s.recv(65536)
        if not d:
            raise ConnectionError("closed by the server")
        buf += d
    return buf


def open_subscriber(a):
    deadline = time.monotonic() + 10
    s = socket.create_connection(("127.0.0.1", a.port), timeout=10)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    key = base64.b64encode(os.urandom(16)).decode()
    path = f"/app/{a.app_key}?protocol=7&client=bench&version=1.0" if a.server == "halley" else f"/sub/{a.channel}"
    s.sendall((f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{a.port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
               f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
    buf = recv_until(s, b"", lambda b: b"\r\n\r\n" in b, deadline)
    head, _, buf = buf.partition(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 101"):
        raise ConnectionError("no upgrade: " + head.split(b"\r\n")[0].decode(errors="replace"))
    if a.server == "halley":
        def events(b):
            fr, _ = parse_frames(b)
            return [json.loads(p).get("event") for op, p in fr if op == 1]
        buf = recv_until(s, buf, lambda b: "pusher:connection_established" in events(b), deadline)
        s.sendall(ws_frame(json.dumps({"event": "pusher:subscribe", "data": {"channel": a.channel}}).encode()))
        buf = recv_until(s, buf, lambda b: "pusher_internal:subscription_succeeded" in events(b), deadline)
        fr, buf = parse_frames(buf)
        if buf:
            raise ConnectionError("unexpected bytes after subscription_succeeded")
    elif buf:
        raise ConnectionError("unexpected bytes after the upgrade")
    s.setblocking(False)
    return s


def close_code(tail: bytes):
    """The code of a server Close frame at the end of tail, or None."""
    for i in range(len(tail) - 2, -1, -1):
        if tail[i] == 0x88 and (tail[i + 1] & 0x7F) == len(tail) - i - 2:
            return struct.unpack("!H", tail[i + 2:i + 4])[0] if len(tail) - i - 2 >= 2 else 1005
    return None


def cmd_hold(a):
    t0 = time.monotonic()
    socks = []
    errors = {}
    for _ in range(a.subscribers):
        try:
            socks.append(open_subscriber(a))
        except (OSError, ValueError) as e:
            errors[str(e)[:80]] = errors.get(str(e)[:80], 0) + 1
    if errors:
        die(f"{sum(errors.values())} of {a.subscribers} subscribers failed: " + "; ".join(f"{n} x {e}" for e, n in errors.items()))
    ep = select.epoll()
    fds = {}
    received = {}
    tails = {}
    for s in socks:
        fd = s.fileno()
        fds[fd] = s
        received[fd] = 0
        tails[fd] = b""
        ep.register(fd, select.EPOLLIN)
    ep.register(0, select.EPOLLIN)
    print(f"ready subscribers={len(socks)} connect_s={time.monotonic() - t0:.2f}", flush=True)

    buf = bytearray(1 << 18)
    mv = memoryview(buf)
    total = 0
    closed = {}
    frame = 0
    base_total = 0
    stdin_buf = b""
    pending = []  # commands waiting: ("probe", deadline) / ("drain", deadline, last_total, last_change)
    last_rx = time.monotonic()

    def stats():
        t = total - base_total
        cpu = os.times()
        return (f"bytes={t} deliveries={t // frame if frame else 0} open={len(fds)} "
                f"closed={sum(closed.values())} codes={','.join(f'{k}:{v}' for k, v in sorted(closed.items(), key=str)) or '-'} "
                f"cpu={cpu.user + cpu.system:.2f}")

    while True:
        timeout = 0.05 if pending else 1.0
        for fd, _ in ep.poll(timeout):
            if fd == 0:
                d = os.read(0, 4096)
                if not d:
                    return
                stdin_buf += d
                while b"\n" in stdin_buf:
                    line, stdin_buf = stdin_buf.split(b"\n", 1)
                    w = line.decode().split()
                    if not w:
                        continue
                    if w[0] == "quit":
                        return
                    if w[0] == "mark":
                        print("mark " + stats(), flush=True)
                    elif w[0] == "probe":
                        pending.append(("probe", time.monotonic() + 10))
                    elif w[0] == "drain":
                        pending.append(("drain", time.monotonic() + float(w[1] if len(w) > 1 else 30)))
                continue
            s = fds.get(fd)
            if s is None:
                continue
            try:
                n = s.recv_into(buf)
            except BlockingIOError:
                continue
            except OSError:
                n = 0
            if n:
                total += n
                received[fd] += n
                tails[fd] = bytes(mv[n - 128:n]) if n >= 128 else (tails[fd] + bytes(mv[:n]))[-128:]
                last_rx = time.monotonic()
            else:
                code = close_code(tails[fd])
                closed[code or "none"] = closed.get(code or "none", 0) + 1
                ep.unregister(fd)
                s.close()
                del fds[fd]
        now = time.monotonic()
        keep = []
        for p in pending:
            if p[0] == "probe":
                sizes = [received[fd] for fd in fds]
                if sizes and min(sizes) > 0:
                    if min(sizes) != max(sizes):
                        # some got more than one message: should not happen (one probe publish)
                        print(f"probe error sizes {min(sizes)}..{max(sizes)}", flush=True)
                    else:
                        frame = sizes[0]
                        base_total = total
                        print(f"probe frame={frame} subscribers={len(sizes)} received_all=1", flush=True)
                elif now > p[1]:
                    got = sum(1 for x in sizes if x > 0)
                    print(f"probe error: {got} of {len(sizes)} subscribers received the probe message", flush=True)
                else:
                    keep.append(p)
            else:
                if now - last_rx >= 1.0 or now > p[1]:
                    print(f"drained quiet={int(now - last_rx >= 1.0)} " + stats(), flush=True)
                else:
                    keep.append(p)
        pending = keep


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    for name in ("requests", "check", "hold"):
        q = sub.add_parser(name)
        q.add_argument("--server", choices=("halley", "nchan"), required=True)
        q.add_argument("--channel", default="bench")
        q.add_argument("--app-id", default="1")
        q.add_argument("--app-key", default="app-key")
        q.add_argument("--app-secret", default="app-secret")
        if name == "requests":
            q.add_argument("--out", required=True)
            q.add_argument("--count", type=int, default=1000)
            q.add_argument("--size", type=int, default=64)
            q.add_argument("--event", default="e")
        else:
            q.add_argument("--port", type=int, required=True)
        if name == "check":
            q.add_argument("--file", required=True)
        if name == "hold":
            q.add_argument("--subscribers", type=int, default=1000)
    a = p.parse_args()
    {"requests": cmd_requests, "check": cmd_check, "hold": cmd_hold}[a.cmd](a)


if __name__ == "__main__":
    main()
