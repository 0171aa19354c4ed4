"""A real `redis-server` (Debian's, Redis 7) on a free port, for the multi-node tests.

Started without persistence, as a test's own process; `restart()` stops it (its data gone,
as after a restart without persistence) and starts it again on the same port; `command()`
speaks RESP over a socket (no client library).
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time

HOST = "127.0.0.1"


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


class RedisServer:
    def __init__(self, tmpdir: str):
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not installed (apt-get install redis-server)")
        self.binary = binary
        self.dir = tmpdir
        self.port = free_port()
        self.proc: subprocess.Popen | None = None
        self.start()

    def start(self, timeout=10.0):
        self.proc = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", HOST, "--save", "", "--appendonly", "no",
             "--dir", self.dir, "--logfile", f"{self.dir}/redis.log"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if self.command("PING") == "PONG":
                    return
            except OSError:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"redis-server did not answer on {self.port}")

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self.proc = None

    def restart(self, down_seconds=0.0):
        self.stop()
        time.sleep(down_seconds)
        self.start()

    @property
    def url(self) -> str:
        return f"redis://{HOST}:{self.port}"

    def command(self, *args: str, timeout=5.0):
        """One command, its reply decoded (RESP2: strings, ints, lists; errors raised)."""
        with socket.create_connection((HOST, self.port), timeout=timeout) as s:
            out = f"*{len(args)}\r\n".encode()
            for a in args:
                b = a.encode() if isinstance(a, str) else a
                out += f"${len(b)}\r\n".encode() + b + b"\r\n"
            s.sendall(out)
            f = s.makefile("rb")
            return _read(f)


def _read(f):
    line = f.readline()
    if not line:
        raise OSError("closed")
    kind, rest = line[:1], line[1:-2]
    if kind == b"+":
        return rest.decode()
    if kind == b"-":
        raise RuntimeError(rest.decode())
    if kind == b":":
        return int(rest)
    if kind == b"$":
        n = int(rest)
        if n < 0:
            return None
        data = f.read(n + 2)[:-2]
        return data.decode(errors="replace")
    if kind == b"*":
        n = int(rest)
        return None if n < 0 else [_read(f) for _ in range(n)]
    raise RuntimeError(f"unexpected reply {line!r}")


class Balancer:
    """Debian's HAProxy in front of the nodes: round-robin, no stickiness; a node that stops
    answering is taken out by its health check (every 200 ms) and a failed connection is
    sent to another node (`option redispatch`), as a production balancer is set up."""

    def __init__(self, tmpdir: str, ports: list[int]):
        exe = shutil.which("haproxy")
        if exe is None:
            raise RuntimeError("haproxy is not installed (apt-get install haproxy)")
        self.port = free_port()
        servers = "\n".join(f"    server n{i} {HOST}:{p} check inter 200 fall 1 rise 1" for i, p in enumerate(ports))
        cfg = f"""global
    maxconn 4000
defaults
    mode http
    timeout connect 1s
    timeout client 60s
    timeout server 60s
    timeout tunnel 1h
    retries 3
    option redispatch
frontend hubs
    bind {HOST}:{self.port}
    default_backend nodes
backend nodes
    balance roundrobin
{servers}
"""
        path = f"{tmpdir}/haproxy.cfg"
        with open(path, "w") as f:
            f.write(cfg)
        self.log = open(f"{tmpdir}/haproxy.out", "wb")
        self.proc = subprocess.Popen([exe, "-db", "-f", path], stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection((HOST, self.port), timeout=0.5).close()
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("haproxy did not start")

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)
        self.log.close()
