#!/usr/bin/env python3
"""Is memory given back after load? Two identical rounds on one hub (issue 18).

A round: N Pusher WebSocket sessions, each subscribed to K channels (N x K subscriptions over
N x K / 5 channels), then all closed; the hub's RSS loaded and SETTLE s after the close. A leak
grows again in round 2; retention by the allocator stays level. Then the same with IDLE
connections that never subscribe.

    Scripts/bench/memory_rounds.py [--halley-bin .build/release/halley] [-n 10000] [-k 5]
                                   [--threads 2] [--settle 12] [--idle 19000]

Prints RSS in MB per round, and exits 1 when round 2 kept more than round 1 by over 10 % of
what round 1 took (a leak).
"""

import argparse
import os
import selectors
import socket
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchlib as b  # noqa: E402


def subscribe_more(socks, k, timeout=120):
    """Subscribes each session to k - 1 more channels and waits for every answer."""
    channels = len(socks) * (k - 1) // 5 + 1
    want = {}
    with selectors.DefaultSelector() as sel:
        for i, s in enumerate(socks):
            s.setblocking(True)
            s.sendall(b"".join(b.masked(1, b'{"event":"pusher:subscribe","data":{"channel":"m%d"}}'
                                        % ((i * (k - 1) + j) % channels)) for j in range(k - 1)))
            s.setblocking(False)
            want[s] = [k - 1, b""]
            sel.register(s, selectors.EVENT_READ)
        deadline = time.monotonic() + timeout
        while sel.get_map():
            if time.monotonic() > deadline:
                raise b.Failure(f"{len(sel.get_map())} sessions did not get all their subscription answers")
            for key, _ in sel.select(timeout=1):
                w = want[key.fileobj]
                msgs, w[1] = b.frames(w[1] + key.fileobj.recv(65536))
                w[0] -= sum(op == 1 and b"subscription_succeeded" in p for op, p in msgs)
                if w[0] == 0:
                    sel.unregister(key.fileobj)


def idle_connections(port, n):
    out = []
    for _ in range(n):
        s = socket.create_connection(("127.0.0.1", port))
        s.sendall(b"GET /halley-no-such-page HTTP/1.1\r\nHost: x\r\n\r\n")
        out.append(s)
    for s in out:
        data = b""
        while b"\r\n\r\n" not in data:
            data += s.recv(4096)
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--halley-bin", default=os.path.join(b.REPO, ".build/release/halley"))
    ap.add_argument("-n", type=int, default=10000)
    ap.add_argument("-k", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--settle", type=float, default=12)
    ap.add_argument("--idle", type=int, default=19000, help="idle connections of the second part (0: skip)")
    a = ap.parse_args()
    b.raise_nofile(max(a.n, a.idle))
    # The lingering limit stays at its default (500 per address), as in the runs the README reports.
    hub = b.halley(a.halley_bin, tempfile.mkdtemp(prefix="halley-mem-"), "--threads", str(a.threads), "--app-token", "t",
                   "--ws-ping-interval", "3600", "--max-lingering-per-address", "500", cpu=None)
    mb = lambda: b.proc_status(hub.pid)["VmRSS"] / 1024  # noqa: E731
    try:
        for s in b.open_many(1, port=hub.port, kind="pusher", path="/app/app-key?protocol=7"):
            s.close()
        time.sleep(1)
        base = mb()
        b.log(f"baseline {base:.1f} MB")

        def sessions():
            socks = b.open_many(a.n, 300, 500, port=hub.port, kind="pusher", path="/app/app-key?protocol=7")
            subscribe_more(socks, a.k)
            return socks

        loads = [(f"{a.n} sessions x {a.k} channels", sessions)]
        if a.idle:
            loads.append((f"{a.idle} idle connections", lambda: idle_connections(hub.port, a.idle)))
        rows = []
        for label, open_load in loads:
            for r in (1, 2):
                socks = open_load()
                loaded = mb()
                for s in socks:
                    s.close()
                time.sleep(a.settle)
                rows.append((label, r, loaded, mb()))
                b.log(f"round {r}: {label}: loaded {loaded:.1f} MB, {a.settle:.0f} s after closing {rows[-1][3]:.1f} MB")
        print(f"\n| load | round | baseline MB | loaded MB | {a.settle:.0f} s after closing MB |\n| --- | --- | --- | --- | --- |")
        for label, r, loaded, after in rows:
            print(f"| {label} | {r} | {base:.1f} | {loaded:.1f} | {after:.1f} |")
        leak = False
        for (label, _, loaded1, after1), (_, _, _, after2) in zip(rows[::2], rows[1::2]):
            if after2 - after1 > 0.1 * max(loaded1 - base, 1):
                print(f"LEAK? {label}: round 2 kept {after2 - after1:.1f} MB more than round 1")
                leak = True
            else:
                print(f"{label}: round 2 ends where round 1 did ({after1:.1f} -> {after2:.1f} MB)")
        return 1 if leak else 0
    finally:
        hub.stop()


if __name__ == "__main__":
    try:
        sys.exit(main())
    except b.Failure as e:
        print(f"FAILURE: {e}")
        sys.exit(1)
