#!/usr/bin/env python3
"""Reproduction (found by the soak): a pusher-js `xhr_streaming` client on a slow link loses
messages when it rotates its stream.

The hub holds a stream once it has *written* 256 KiB to it (PusherHTTP.clientRotationBytes),
waiting for pusher-js to rotate, but only 5 s (rotationWaitSeconds); then it writes on. A
client that takes longer than that to *read* the first 256 KiB (a link slower than about
50 KB/s while a stream is busy) finally reads past 256 KiB, aborts the stream at a line
boundary as pusher-js does (http_request.ts, isBufferTooLong) and opens the next one: what
the hub wrote to the old stream after the hold expired and the client had not read yet is
gone. pusher-js has no recovery for a plain session: those messages are lost.

    HALLEY_BIN=/tmp/halley-static/halley .venv/bin/python Scripts/soak/xhr_rotation_repro.py

Prints the offsets the client saw missing; exit status 1 when any was lost.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "Tests", "integration"))

import pusher_xhr  # noqa: E402
from halley_client import Halley  # noqa: E402
from hub_client import publish  # noqa: E402

N, SIZE = 400, 2000  # 400 messages of 2 KB: about 800 KB, three rotations
READ_PAUSE = 0.08  # seconds per line read: about 25 KB/s, a slow mobile link


class ChunkReader:
    """Reads an xhr_streaming response one HTTP chunk at a time and never more (a chunk is one
    SockJS frame here): after each chunk every received byte is consumed, as in a browser
    whose network delivered exactly up to the end of a frame (the hub writes frame by frame,
    so a slow link's segments end there)."""

    def __init__(self, st):
        self.sock, self.total, self.buf = st.sock, 0, st.raw + st.data  # what open_stream left

    def _exact(self, n):
        while len(self.buf) < n:
            b = self.sock.recv(n - len(self.buf))
            if not b:
                raise EOFError
            self.buf += b
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def chunk(self):
        line = b""
        while not line.endswith(b"\r\n"):
            line += self._exact(1)
        size = int(line[:-2], 16)
        data = self._exact(size + 2)[:-2]
        self.total += size
        return data


def main():
    public = tempfile.mkdtemp()
    hub = Halley(public, ["--app-token", "tok"], threads=1)
    try:
        c = pusher_xhr.Client(hub.port)
        st, _ = pusher_xhr.open_stream(c, rcvbuf=4096)
        c.subscribe("rot")
        assert pusher_xhr.next_message(st, "pusher_internal:subscription_succeeded")["channel"] == "rot"
        r = ChunkReader(st)
        r.total = st.total

        def publisher():
            for i in range(N):
                publish(hub.port, {"channel": "rot", "event": "e", "data": json.dumps({"i": i, "pad": "x" * SIZE})})
                time.sleep(0.005)

        threading.Thread(target=publisher, daemon=True).start()
        seen, rotations = [], 0
        deadline = time.monotonic() + 120
        r.sock.settimeout(10)
        while len(seen) < N and time.monotonic() < deadline:
            try:
                data = r.chunk()
            except (TimeoutError, OSError, EOFError) as e:
                print(f"stream read ended: {e!r}")
                break
            for line in data.split(b"\n"):
                if not line or line == b"h" * 2048:
                    continue  # the prelude of a new stream
                f = pusher_xhr.parse_frame(line)
                if f[0] == "c":
                    print(f"closed: {f}")
                if f[0] == "a":
                    seen += [m["halley:offset"] for m in f[1] if m.get("event") == "e"]
            time.sleep(READ_PAUSE)
            if r.total > pusher_xhr.MAX_BUFFER_LENGTH:  # pusher-js: past 256 KiB at a line boundary
                st.abort()
                st = c.stream(rcvbuf=4096)
                r = ChunkReader(st)
                r.sock.settimeout(10)
                rotations += 1
        missing = sorted(set(range(1, N + 1)) - set(seen))
        print(f"{len(seen)} of {N} messages, {rotations} rotations; missing offsets: {len(missing)}"
              + (f" (first {missing[:12]})" if missing else ""))
        print("\n".join(l for l in hub.log_lines() if "new stream" in l))
        return 1 if missing else 0
    finally:
        hub.stop()


if __name__ == "__main__":
    sys.exit(main())
