#!/usr/bin/env python3
"""Self-test of the load tool halley-wsbench against an awkward echo server.

The server here (threads, blocking sockets, Python's zlib) echoes every message but:
fragments echoes into 1 to 4 frames, puts pings between fragments, writes its bytes in
small random pieces with pauses (so frame headers and payloads are split across the
client's reads), uses 7-, 16- and 64-bit lengths as the size requires, and with
permessage-deflate compresses echoes (with or without context takeover, per case). With
--corrupt it changes one byte (or the length) of some echoes: the tool must then fail.

Each case runs halley-wsbench for a short window and checks its exit status and its
result line (echoes counted, compressed echoes, pings answered, clean closes).

Usage: Scripts/bench/wsbench_selftest.py [--bench PATH] [--no-build]
Exit status 0 when every case behaved as expected.
"""

import argparse
import base64
import hashlib
import os
import random
import re
import socket
import struct
import subprocess
import sys
import threading
import time
import zlib

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def recv_exact(s, n):
    b = b""
    while len(b) < n:
        c = s.recv(n - len(b))
        if not c:
            raise EOFError
        b += c
    return b


def frame(op, payload, fin=True, rsv1=False):
    b0 = (0x80 if fin else 0) | (0x40 if rsv1 else 0) | op
    n = len(payload)
    if n < 126:
        h = struct.pack("!BB", b0, n)
    elif n < 65536:
        h = struct.pack("!BBH", b0, 126, n)
    else:
        h = struct.pack("!BBQ", b0, 127, n)
    return h + payload


class Conn(threading.Thread):
    def __init__(self, sock, cfg, rnd):
        super().__init__(daemon=True)
        self.s, self.cfg, self.rnd = sock, cfg, rnd
        self.deflate = False
        self.compressor = None
        self.pings = []

    def send_slowly(self, data):
        """Writes in random small pieces, sometimes pausing, so the client sees split reads."""
        i = 0
        while i < len(data):
            k = self.rnd.choice([1, 2, 3, 7, 64, 500, 4096, 70000])
            self.s.sendall(data[i:i + k])
            i += k
            if self.rnd.random() < 0.05:
                time.sleep(0.002)

    def handshake(self):
        buf = b""
        while b"\r\n\r\n" not in buf:
            c = self.s.recv(4096)
            if not c:
                raise EOFError
            buf += c
        head = buf.split(b"\r\n\r\n")[0].decode("latin-1").split("\r\n")
        hdr = {}
        for l in head[1:]:
            k, _, v = l.partition(":")
            hdr[k.strip().lower()] = v.strip()
        key = hdr["sec-websocket-key"].encode()
        accept = base64.b64encode(hashlib.sha1(key + GUID).digest()).decode()
        resp = ("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                f"Sec-WebSocket-Accept: {accept}\r\n")
        ext = hdr.get("sec-websocket-extensions", "")
        if "permessage-deflate" in ext and self.cfg["deflate"]:
            self.deflate = True
            if self.cfg["takeover"]:
                resp += "Sec-WebSocket-Extensions: permessage-deflate; client_no_context_takeover\r\n"
                self.compressor = zlib.compressobj(6, zlib.DEFLATED, -15)
            else:
                resp += ("Sec-WebSocket-Extensions: permessage-deflate; server_no_context_takeover; "
                         "client_no_context_takeover\r\n")
        self.s.sendall((resp + "\r\n").encode())

    def read_frame(self):
        b0, b1 = recv_exact(self.s, 2)
        n = b1 & 0x7F
        if n == 126:
            n = struct.unpack("!H", recv_exact(self.s, 2))[0]
        elif n == 127:
            n = struct.unpack("!Q", recv_exact(self.s, 8))[0]
        assert b1 & 0x80, "client frame not masked"
        key = recv_exact(self.s, 4)
        data = bytearray(recv_exact(self.s, n))
        for i in range(n):
            data[i] ^= key[i & 3]
        return b0 & 0x80, b0 & 0x40, b0 & 0x0F, bytes(data)

    def run(self):
        try:
            self.handshake()
            self.s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            count = 0
            while True:
                fin, rsv1, op, data = self.read_frame()
                if op == 8:
                    self.s.sendall(frame(8, data[:2]))
                    self.s.shutdown(socket.SHUT_WR)
                    return
                if op == 10:
                    assert self.pings and data == self.pings.pop(0), "pong payload differs from the ping"
                    continue
                assert fin and op in (1, 2), f"unexpected frame op={op} fin={fin}"
                if rsv1:
                    d = zlib.decompressobj(-15)
                    data = d.decompress(data + b"\x00\x00\xff\xff")
                count += 1
                self.echo(op, data, count)
        except (EOFError, ConnectionError, OSError):
            pass
        except AssertionError as e:
            print(f"selftest server: {e}", file=sys.stderr, flush=True)
        finally:
            self.s.close()

    def echo(self, op, data, count):
        if self.cfg["corrupt"] and count % 50 == 0:
            if self.cfg["corrupt"] == "byte" and data:
                data = bytearray(data)
                data[len(data) // 2] ^= 0x01
                data = bytes(data)
            else:
                data = data + b"x"
        compressed = False
        body = data
        if self.deflate and self.rnd.random() < 0.7:
            compressed = True
            if self.compressor is not None:
                body = self.compressor.compress(data) + self.compressor.flush(zlib.Z_SYNC_FLUSH)
            else:
                c = zlib.compressobj(6, zlib.DEFLATED, -15)
                body = c.compress(data) + c.flush(zlib.Z_SYNC_FLUSH)
            assert body.endswith(b"\x00\x00\xff\xff")
            body = body[:-4]
        nfrag = self.rnd.choice([1, 1, 2, 3, 4]) if len(body) >= 4 else 1
        cuts = sorted(self.rnd.sample(range(1, len(body)), nfrag - 1)) if nfrag > 1 else []
        parts = [body[a:b] for a, b in zip([0] + cuts, cuts + [len(body)])]
        out = b""
        for k, p in enumerate(parts):
            out += frame(op if k == 0 else 0, p, fin=(k == len(parts) - 1), rsv1=(compressed and k == 0))
            if k < len(parts) - 1 and self.rnd.random() < 0.5:
                ping = os.urandom(self.rnd.choice([0, 5, 125]))
                self.pings.append(ping)
                out += frame(9, ping)
        self.send_slowly(out)


def serve(cfg, seed):
    ls = socket.socket()
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind(("127.0.0.1", 0))
    ls.listen(512)
    rnd = random.Random(seed)

    def loop():
        while True:
            try:
                s, _ = ls.accept()
            except OSError:
                return
            Conn(s, cfg, random.Random(rnd.random())).start()

    threading.Thread(target=loop, daemon=True).start()
    return ls


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bench", default=os.path.join(REPO, ".build", "release", "halley-wsbench"))
    ap.add_argument("--no-build", action="store_true")
    args = ap.parse_args()
    if not args.no_build:
        print(f"building: (cd {REPO} && swift build -c release --product halley-wsbench)", flush=True)
        subprocess.run(["swift", "build", "-c", "release", "--product", "halley-wsbench"], cwd=REPO, check=True,
                       stdout=subprocess.DEVNULL)
    cases = [
        # (name, size, extra args, server cfg, expect success)
        ("text 0 B", 0, [], {}, True),
        ("text 1 B", 1, [], {}, True),
        ("text 125 B", 125, [], {}, True),
        ("binary 126 B", 126, ["--binary"], {}, True),
        ("binary 4096 B", 4096, ["--binary"], {}, True),
        ("text 65535 B", 65535, [], {}, True),
        ("binary 65536 B", 65536, ["--binary"], {}, True),
        ("binary 300000 B", 300000, ["--binary"], {}, True),
        ("deflate, no takeover, text 4096 B", 4096, ["--deflate"], {"deflate": True}, True),
        ("deflate, takeover, text 4096 B", 4096, ["--deflate"], {"deflate": True, "takeover": True}, True),
        ("deflate, takeover, binary 70000 B", 70000, ["--deflate", "--binary"], {"deflate": True, "takeover": True}, True),
        ("deflate offered, declined, text 32 B", 32, ["--deflate"], {}, True),
        ("corrupt byte (must fail)", 4096, ["--binary"], {"corrupt": "byte"}, False),
        ("corrupt length (must fail)", 300, [], {"corrupt": "length"}, False),
        ("corrupt byte, compressed (must fail)", 4096, ["--deflate"], {"deflate": True, "corrupt": "byte"}, False),
    ]
    bad = 0
    for k, (name, size, extra, cfg, expect_ok) in enumerate(cases):
        full = {"deflate": False, "takeover": False, "corrupt": None}
        full.update(cfg)
        ls = serve(full, k)
        port = ls.getsockname()[1]
        cmd = [args.bench, "--url", f"ws://127.0.0.1:{port}/echo", "--connections", "8", "--size", str(size),
               "--duration", "1", "--warmup", "0.2", "--drain-timeout", "3", *extra]
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
        ls.close()
        m = re.search(r"messages=(\d+).*compressed_echoes=(\d+).*echoes=(\d+).*errors=(\d+).*pings=(\d+) closed=(\d+) close_replies=(\d+)", r.stdout)
        ok = (r.returncode == 0) == expect_ok and m is not None and int(m.group(3)) > 0
        if ok and expect_ok:
            ok = int(m.group(4)) == 0 and int(m.group(7)) == 8
            if size >= 4:
                ok = ok and int(m.group(5)) > 0  # pings between fragments were answered
            if cfg.get("deflate"):
                ok = ok and int(m.group(2)) > 0
        if ok and not expect_ok:
            ok = int(m.group(4)) > 0 and "wrong echo" in r.stderr
        status = "ok  " if ok else "FAIL"
        summary = r.stdout.strip()
        print(f"{status} {name}: exit {r.returncode}; {summary[:200]}", flush=True)
        if not ok or not expect_ok:
            for l in r.stderr.strip().splitlines()[:4]:
                print(f"       {l}")
        bad += not ok
    print(f"{len(cases) - bad} of {len(cases)} cases as expected")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
