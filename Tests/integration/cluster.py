"""A real `redis-server` (Debian's, Redis 7) on a free port, for the multi-node tests.

Started without persistence, as a test's own process; `restart()` stops it (its data gone,
as after a restart without persistence) and starts it again on the same port; `command()`
speaks RESP over a socket (no client library).
"""

from __future__ import annotations

import os
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
    """`extra`: more redis-server arguments; `auth`: (user, password) the helper's own
    commands authenticate with."""

    def __init__(self, tmpdir: str, extra=(), auth: tuple[str, str] | None = None):
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not installed (apt-get install redis-server)")
        self.binary = binary
        self.dir = tmpdir
        self.port = free_port()
        self.proc: subprocess.Popen | None = None
        self.extra: list[str] = list(extra)
        self.auth = auth
        self.start()

    def start(self, timeout=10.0):
        self.proc = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", HOST, "--save", "", "--appendonly", "no",
             "--dir", self.dir, "--logfile", f"{self.dir}/redis.log", *self.extra],
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
            f = s.makefile("rb")
            if self.auth:
                s.sendall(_command("AUTH", *self.auth))
                _read(f)
            s.sendall(_command(*args))
            return _read(f)


def _command(*args) -> bytes:
    out = f"*{len(args)}\r\n".encode()
    for a in args:
        b = a.encode() if isinstance(a, str) else a
        out += f"${len(b)}\r\n".encode() + b + b"\r\n"
    return out


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


def key_slot(key: str) -> int:
    """Redis Cluster's slot of a key: CRC16 (XMODEM) of its hash tag, mod 16384."""
    b = key.encode()
    i = b.find(b"{")
    if i >= 0:
        j = b.find(b"}", i + 1)
        if j > i + 1:
            b = b[i + 1:j]
    crc = 0
    for c in b:
        crc ^= c << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else crc << 1
            crc &= 0xFFFF
    return crc % 16384


def cluster_port() -> int:
    """A free port whose cluster bus port (+10000) is free too."""
    while True:
        p = free_port()
        if p + 10000 > 65535:
            continue
        with socket.socket() as s:
            try:
                s.bind((HOST, p + 10000))
                return p
            except OSError:
                continue


class RedisCluster:
    """A local Redis Cluster of `masters` masters, each with `replicas` replicas, every one a
    Debian `redis-server` with `cluster-enabled yes` on a free port, joined by `redis-cli
    --cluster create` (`servers`: the masters first, then the replicas)."""

    def __init__(self, tmpdir: str, masters: int = 3, replicas: int = 0, node_timeout_ms=5000, timeout=30.0):
        binary, cli = shutil.which("redis-server"), shutil.which("redis-cli")
        if binary is None or cli is None:
            raise RuntimeError("redis-server is not installed (apt-get install redis-server)")
        self.servers: list[RedisServer] = []
        for i in range(masters * (1 + replicas)):
            d = f"{tmpdir}/redis-{i}"
            os.makedirs(d, exist_ok=True)
            s = RedisServer.__new__(RedisServer)
            s.binary, s.dir, s.port, s.proc, s.auth = binary, d, cluster_port(), None, None
            s.extra = ["--cluster-enabled", "yes", "--cluster-config-file", f"{d}/nodes.conf",
                       "--cluster-node-timeout", str(node_timeout_ms)]
            s.start()
            self.servers.append(s)
        out = subprocess.run([cli, "--cluster", "create", *(f"{HOST}:{s.port}" for s in self.servers),
                              "--cluster-replicas", str(replicas), "--cluster-yes"],
                             capture_output=True, text=True, timeout=timeout)
        if out.returncode != 0:
            raise RuntimeError(f"redis-cli --cluster create failed: {out.stdout}{out.stderr}")
        self.wait_ok(timeout)
        deadline = time.monotonic() + timeout
        while replicas and not all("master_link_status:up" in s.command("INFO", "replication")
                                   for s in self.servers if self.role(s) == "slave"):
            if time.monotonic() > deadline:
                raise RuntimeError("the replicas did not catch up with their masters")
            time.sleep(0.1)

    @staticmethod
    def role(s: RedisServer) -> str:
        return s.command("ROLE")[0]

    def live(self) -> list[RedisServer]:
        return [s for s in self.servers if s.proc and s.proc.poll() is None]

    def wait_ok(self, timeout=30.0):
        """Until every running server says `cluster_state:ok`."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if all("cluster_state:ok" in s.command("CLUSTER", "INFO") for s in self.live()):
                return
            time.sleep(0.1)
        raise RuntimeError("the Redis Cluster did not reach cluster_state:ok")

    def url(self, i=0) -> str:
        return self.servers[i].url

    def node_id(self, i) -> str:
        return self.servers[i].command("CLUSTER", "MYID")

    def owner(self, slot: int) -> int:
        """The index of the master that serves `slot`."""
        for lo, hi, master, *_ in self.live()[0].command("CLUSTER", "SLOTS"):
            if lo <= slot <= hi:
                return next(i for i, s in enumerate(self.servers) if s.port == master[1])
        raise LookupError(slot)

    def move_slot(self, slot: int, dst: int, between=None):
        """Moves `slot` and its keys to master `dst` as `redis-cli --cluster reshard` does
        (IMPORTING / MIGRATING, MIGRATE, SETSLOT NODE on every master); `between()` runs when
        the keys have moved and the slot has not (the old master answers ASK for them)."""
        src = self.owner(slot)
        a, b = self.servers[src], self.servers[dst]
        a_id, b_id = self.node_id(src), self.node_id(dst)
        b.command("CLUSTER", "SETSLOT", str(slot), "IMPORTING", a_id)
        a.command("CLUSTER", "SETSLOT", str(slot), "MIGRATING", b_id)
        while keys := a.command("CLUSTER", "GETKEYSINSLOT", str(slot), "100"):
            a.command("MIGRATE", HOST, str(b.port), "", "0", "5000", "KEYS", *keys)
        if between:
            between()
        for s in self.servers:
            s.command("CLUSTER", "SETSLOT", str(slot), "NODE", b_id)

    def stop(self):
        for s in self.servers:
            s.stop()
