#!/usr/bin/env python3
"""Is memory given back after load? Two identical rounds on one hub (issue 18).

Round: N plain Pusher WebSocket sessions, each subscribed to K channels (N x K subscriptions,
over N x K / 5 distinct channels), held a moment, then all closed; the hub's RSS is read
loaded and SETTLE seconds after the close. A leak grows again in round 2 (its "after" is
higher than round 1's by about what round 1 kept); retention by the allocator (glibc's
per-thread arenas keep freed pages) stays level. Then the same with N idle connections that
never subscribe.

    Scripts/bench/memory_rounds.py [--halley-bin .build/release/halley] [-n 10000] [-k 5]
                                   [--threads 2] [--settle 12]

Prints RSS in MB: baseline, loaded and after close for each round, and exits 1 when round 2
kept more than round 1 by over 10 % of what round 1 took (a leak).
"""

import argparse
import os
import re
import resource
import selectors
import socket
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from benchlib import Failure, REPO, log, proc_status  # noqa: E402
from session_idle import Halley, frames, masked, open_sessions  # noqa: E402


def rss_mb(pid):
    return proc_status(pid)["VmRSS"] / 1024


def subscribe_more(socks, k, timeout=120):
    """Subscribes socket i to k-1 more channels (it has `bench`), and waits for every answer."""
    sel = selectors.DefaultSelector()
    want = {}
    for i, s in enumerate(socks):
        payload = b"".join(masked(1, b'{"event":"pusher:subscribe","data":{"channel":"m%d"}}' % ((i * (k - 1) + j) % (len(socks) * (k - 1) // 5 + 1)))
                           for j in range(k - 1))
        s.setblocking(True)
        s.sendall(payload)
        s.setblocking(False)
        want[s] = [k - 1, b""]
        sel.register(s, selectors.EVENT_READ)
    deadline = time.monotonic() + timeout
    left = len(socks)
    while left:
        if time.monotonic() > deadline:
            raise Failure(f"{left} sessions did not get all their subscription answers")
        for key, _ in sel.select(timeout=1):
            s = key.fileobj
            st = want[s]
            st[1] += s.recv(65536)
            msgs, st[1] = frames(st[1])
            for op, p in msgs:
                if op == 1 and b"subscription_succeeded" in p:
                    st[0] -= 1
            if st[0] == 0:
                sel.unregister(s)
                left -= 1
    sel.close()


def idle_connections(port, n):
    out = []
    for _ in range(n):
        s = socket.socket()
        s.connect(("127.0.0.1", port))
        s.sendall(b"GET /halley-no-such-page HTTP/1.1\r\nHost: x\r\n\r\n")
        out.append(s)
    for s in out:
        data = b""
        while b"\r\n\r\n" not in data:
            data += s.recv(4096)
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--halley-bin", default=os.path.join(REPO, ".build/release/halley"))
    ap.add_argument("-n", type=int, default=10000)
    ap.add_argument("-k", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--settle", type=float, default=12)
    ap.add_argument("--idle", type=int, default=19000, help="idle connections of the second part (0: skip)")
    args = ap.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    tmp = tempfile.mkdtemp(prefix="halley-mem-")
    hub = Halley(args.halley_bin, tmp, resumable=False, cpu=None)
    env = {k: v for k, v in os.environ.items() if not k.startswith("HALLEY_")}
    # The per-address limits are off: every connection here comes from one address.
    hub.launch([args.halley_bin, "--host", "127.0.0.1", "--port", "0", "--threads", str(args.threads), "--app-token", "t",
                "--ws-ping-interval", "3600", "--log-level", "warning", "--shutdown-grace", "1",
                "--max-connections-per-address", "0", "--session-opens-per-second", "0"],
               r"halley listening on http://127\.0\.0\.1:(\d+) \(([^)]*)\)", env=env)
    pid = hub.proc.pid
    try:
        # Baseline: after one session came and went.
        for s in open_sessions(hub, 1, 1, 30):
            s.close()
        time.sleep(1)
        rows = []
        base = rss_mb(pid)
        log(f"baseline {base:.1f} MB")
        def subscriptions():
            socks = open_sessions(hub, args.n, 500, 300)
            subscribe_more(socks, args.k)
            return socks

        loads = [("subscriptions", f"{args.n} sessions x {args.k} channels", subscriptions)]
        if args.idle:
            loads.append(("connections", f"{args.idle} idle connections", lambda: idle_connections(hub.port, args.idle)))
        for what, label, open_load in loads:
            for r in (1, 2):
                socks = open_load()
                loaded = rss_mb(pid)
                for s in socks:
                    s.close()
                time.sleep(args.settle)
                after = rss_mb(pid)
                rows.append((what, r, loaded, after))
                log(f"round {r}: {label}: loaded {loaded:.1f} MB, {args.settle:.0f} s after closing {after:.1f} MB")
        print()
        print(f"| load | round | baseline MB | loaded MB | {args.settle:.0f} s after closing MB |")
        print("| --- | --- | --- | --- | --- |")
        for what, r, loaded, after in rows:
            label = f"{args.n} sessions x {args.k} channels" if what == "subscriptions" else f"{args.idle} idle connections"
            print(f"| {label} | {r} | {base:.1f} | {loaded:.1f} | {after:.1f} |")
        leak = False
        for what in ("subscriptions", "connections"):
            rr = [x for x in rows if x[0] == what]
            if len(rr) == 2:
                kept1 = rr[0][3] - base
                grew = rr[1][3] - rr[0][3]
                if grew > 0.1 * max(rr[0][2] - base, 1):
                    print(f"LEAK? {what}: round 2 kept {grew:.1f} MB more than round 1")
                    leak = True
                else:
                    print(f"{what}: round 2 ends where round 1 did ({rr[0][3]:.1f} -> {rr[1][3]:.1f} MB; round 1 kept {kept1:.1f} MB over the baseline)")
        return 1 if leak else 0
    finally:
        hub.stop()


if __name__ == "__main__":
    try:
        sys.exit(main())
    except Failure as e:
        print(f"FAILURE: {e}")
        sys.exit(1)
