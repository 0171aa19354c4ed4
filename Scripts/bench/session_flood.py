#!/usr/bin/env python3
"""Issue 18's session flood, measured: one address pipelines `GET /halley/poll?key=` on 4
keep-alive connections as fast as the hub answers, for DURATION seconds, while a legitimate
client from another loopback address (127.0.0.2) opens a WebSocket, an SSE stream and a
long-poll session every 0.25 s and checks each receives a published message. Twice: with the
per-address limits off, then with the defaults. Prints what the flood got, the hub's peak
session count and how many legitimate rounds were served.

    Scripts/bench/session_flood.py [--halley-bin .build/release/halley] [--duration 10]
"""

import argparse
import os
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(ROOT, "Tests", "integration"))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--halley-bin", default=os.path.join(ROOT, ".build/release/halley"))
    ap.add_argument("--duration", type=float, default=10)
    args = ap.parse_args()
    os.environ["HALLEY_BIN"] = args.halley_bin
    import halley_client
    halley_client.HALLEY_BIN = args.halley_bin
    from test_abuse import Flood, legitimate_clients_are_served, metric

    public = os.path.join(tempfile.mkdtemp(prefix="halley-flood-"), "public")
    os.makedirs(public)
    for label, extra in (("per-address limits off", ["--session-opens-per-second", "0", "--max-lingering-per-address", "0"]),
                         ("defaults", [])):
        h = halley_client.Halley(public, ["--app-token", "tok", "--metrics-port", "0", "--log-level", "warning", *extra])
        flood = Flood(h.port)
        t0 = time.monotonic()
        served = refused = 0
        peak = 0.0
        while time.monotonic() - t0 < args.duration:
            failures = legitimate_clients_are_served(h.port)
            served += not failures
            refused += bool(failures)
            peak = max(peak, metric(h, "halley_sessions"))
            time.sleep(0.25)
        statuses = flood.finish()
        elapsed = time.monotonic() - t0
        print(f"{label}: {elapsed:.1f} s; the flood's answers by status {statuses} ({sum(statuses.values()) / elapsed:,.0f}/s); "
              f"sessions at most {peak:,.0f}; legitimate rounds served {served}, refused {refused}")
        h.stop()


if __name__ == "__main__":
    main()
