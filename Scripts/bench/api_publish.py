#!/usr/bin/env python3
"""Helpers of api_publish.sh (the Pusher HTTP API publish benchmark).

  requests --server halley|halley-bearer|uws|nchan --out FILE [--count N] [--size B]
      N distinct publish requests for wrk (api_publish.lua reads them): per request a line with
      the path and query, then one with the body. halley: `POST /apps/1/events`, signed as the
      SDKs sign (auth_key, auth_timestamp = now: valid 600 s, so generate right before a run,
      auth_version 1.0, body_md5, auth_signature = HMAC-SHA256 over method, path and sorted
      query); halley-bearer: `POST /publish` {"channel","event","data"} (the header
      `Authorization: Bearer benchtoken` comes from api_publish.lua's third argument); Nchan:
      the same data, unsigned, to /pub/bench; uws (matrix.sh's uWebSockets server): the data
      to /publish/bench, with the bearer token.
  check --server S --port P --file FILE
      Sends the first request: halley (the signed API) must answer 200 `{}`, the others 2xx.
  hold --server S --port P --subscribers N
      Opens N WebSocket subscribers on `bench` (halley: Pusher protocol 7; Nchan: /sub/bench),
      prints `ready`, reads everything as it comes (epoll), and answers commands on stdin:
        probe    waits (10 s) until every subscriber got something: that many bytes are one
                 delivery (every message of a run has the same size): `probe frame=B received_all=1`
        mark     `mark bytes= deliveries= open= codes= cpu=` (since the probe)
        drain S  waits until nothing came for 1 s (S s at most), then answers like mark
      A subscriber the server closes is counted with the code of its Close frame.
"""

import argparse
import hashlib
import hmac
import json
import os
import select
import socket
import struct
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchlib as b  # noqa: E402


def cmd_requests(a):
    now = str(int(time.time()))
    with open(a.out, "w") as f:
        for i in range(a.count):
            data = (f"m{i:09d}-" + "x" * a.size)[:a.size]
            if a.server == "nchan":
                f.write(f"/pub/bench\n{data}\n")
                continue
            if a.server == "uws":
                f.write(f"/publish/bench\n{data}\n")
                continue
            if a.server == "halley-bearer":
                body = json.dumps({"channel": "bench", "event": "e", "data": data}, separators=(",", ":"))
                f.write(f"/publish\n{body}\n")
                continue
            body = json.dumps({"name": "e", "channel": "bench", "data": data}, separators=(",", ":"))
            q = {"auth_key": "app-key", "auth_timestamp": now, "auth_version": "1.0",
                 "body_md5": hashlib.md5(body.encode()).hexdigest()}
            signed = "POST\n/apps/1/events\n" + "&".join(f"{k}={v}" for k, v in sorted(q.items()))
            q["auth_signature"] = hmac.new(b"app-secret", signed.encode(), hashlib.sha256).hexdigest()
            f.write("/apps/1/events?" + "&".join(f"{k}={v}" for k, v in q.items()) + f"\n{body}\n")
    print(f"{a.count} requests, timestamp {now}")


def cmd_check(a):
    with open(a.file) as f:
        target, body = f.readline().strip(), f.readline().strip()
    ctype = "application/json" if a.server.startswith("halley") else "text/plain"
    headers = {"Content-Type": ctype}
    if a.server in ("halley-bearer", "uws"):
        headers["Authorization"] = "Bearer benchtoken"
    try:
        status, text = b.post(f"http://127.0.0.1:{a.port}{target}", body, **headers)
    except OSError as e:
        status, text = getattr(e, "code", 0), str(e)
    print(f"{status}; body: {text.strip()[:200]}")
    if not (status == 200 and text.strip() == "{}" if a.server == "halley" else 200 <= status < 300):
        sys.exit(f"api_publish.py: {a.server} refused the sample request")


def cmd_hold(a):
    t0 = time.monotonic()
    pusher = a.server.startswith("halley")
    path = "/app/app-key?protocol=7&client=bench&version=1.0" if pusher else "/sub/bench"
    socks = b.open_many(a.subscribers, 60, port=a.port, kind="pusher" if pusher else "raw", path=path)
    ep = select.epoll()
    received, tails = {}, {}
    for s in socks:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        received[s.fileno()], tails[s.fileno()] = 0, b""
        ep.register(s.fileno(), select.EPOLLIN)
    fds = {s.fileno(): s for s in socks}
    ep.register(0, select.EPOLLIN)
    print(f"ready subscribers={len(socks)} connect_s={time.monotonic() - t0:.2f}", flush=True)
    buf = bytearray(1 << 18)
    total = base = frame = 0
    closed, pending, stdin = {}, [], b""
    last_rx = time.monotonic()

    def stats():
        t, cpu = total - base, os.times()
        codes = ",".join(f"{k}:{v}" for k, v in sorted(closed.items(), key=str)) or "-"
        return (f"bytes={t} deliveries={t // frame if frame else 0} open={len(fds)} closed={sum(closed.values())} "
                f"codes={codes} cpu={cpu.user + cpu.system:.2f}")

    while True:
        for fd, _ in ep.poll(0.05 if pending else 1.0):
            if fd == 0:
                data = os.read(0, 4096)
                if not data:
                    return
                stdin += data
                while b"\n" in stdin:
                    line, stdin = stdin.split(b"\n", 1)
                    w = line.decode().split() or ["?"]
                    if w[0] == "quit":
                        return
                    if w[0] == "mark":
                        print("mark " + stats(), flush=True)
                    elif w[0] in ("probe", "drain"):
                        pending.append((w[0], time.monotonic() + (float(w[1]) if len(w) > 1 else 10)))
                continue
            if fd not in fds:
                continue
            try:
                n = fds[fd].recv_into(buf)
            except BlockingIOError:
                continue
            except OSError:
                n = 0
            if n:
                total += n
                received[fd] += n
                tails[fd] = bytes(buf[n - 128:n]) if n >= 128 else (tails[fd] + bytes(buf[:n]))[-128:]
                last_rx = time.monotonic()
                continue
            tail, code = tails[fd], "none"  # closed: the code of a Close frame at the end, if any
            for i in range(len(tail) - 2, -1, -1):
                if tail[i] == 0x88 and (tail[i + 1] & 0x7F) == len(tail) - i - 2:
                    code = struct.unpack("!H", tail[i + 2:i + 4])[0] if len(tail) - i >= 4 else 1005
                    break
            closed[code] = closed.get(code, 0) + 1
            ep.unregister(fd)
            fds.pop(fd).close()
        now, keep = time.monotonic(), []
        for what, deadline in pending:
            sizes = [received[fd] for fd in fds]
            if what == "probe" and sizes and min(sizes) > 0:
                frame, base = sizes[0], total
                ok = min(sizes) == max(sizes)  # one publish: every subscriber the same bytes
                print(f"probe frame={frame} subscribers={len(sizes)} received_all={int(ok)}", flush=True)
            elif what == "drain" and (now - last_rx >= 1.0 or now > deadline):
                print(f"drained quiet={int(now - last_rx >= 1.0)} " + stats(), flush=True)
            elif what == "probe" and now > deadline:
                print(f"probe error: {sum(x > 0 for x in sizes)} of {len(sizes)} received the probe", flush=True)
            else:
                keep.append((what, deadline))
        pending = keep


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("cmd", choices=("requests", "check", "hold"))
    p.add_argument("--server", choices=("halley", "halley-bearer", "uws", "nchan"), required=True)
    p.add_argument("--port", type=int)
    p.add_argument("--out")
    p.add_argument("--file")
    p.add_argument("--count", type=int, default=1000)
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--subscribers", type=int, default=1000)
    a = p.parse_args()
    {"requests": cmd_requests, "check": cmd_check, "hold": cmd_hold}[a.cmd](a)


if __name__ == "__main__":
    main()
