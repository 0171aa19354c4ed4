"""The tarball to ship (Scripts/package.sh), used as an operator would use it.

The tarball of the plain release build (HALLEY_MEMORY_BIN) is unpacked in a fresh directory;
its binary runs with `PATH=/usr/bin:/bin` and nothing else in its environment (no toolchain,
no LD_LIBRARY_PATH), with the command line of the shipped systemd unit and the shipped apps
file; Debian's nginx and HAProxy run the shipped examples with only ports and paths changed.
Through each proxy, messages published one at a time with `POST /publish` (bearer token) and
through the official Pusher SDK reach a subscriber on every transport (Pusher WebSocket, SSE,
long-polling, pusher-js `xhr_streaming` and `xhr` polling), each before the next is sent and
byte for byte; they still do after 30 s of silence (past the hub's 25 s heartbeats, poll
answers and pings). The hub tells clients behind the proxy apart by the proxy's
X-Forwarded-For (`--trusted-proxies` in the unit).

nginx and haproxy missing: the tests skip, except under CI (CI=true), where they fail.
"""

from __future__ import annotations

import json
import os
import platform
import re
import shlex
import shutil
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest

import pusher_xhr
from hub_client import SSE, WS, Poll, exact_text, http_request, payload_of, publish, pusher_client, send_http, wait_until

ROOT = Path(__file__).resolve().parents[2]
BIN = os.environ.get("HALLEY_MEMORY_BIN")
CI = os.environ.get("CI", "").lower() == "true"
# What a server without Swift has: env -i with a plain PATH.
CLEAN_ENV = {"PATH": "/usr/bin:/bin"}
ORIGIN = "https://example.com"  # the shipped apps file allows this origin only
# glibc, OpenSSL, zlib, and what the Swift runtime needs even when linked statically.
SYSTEM_LIBS = {"linux-vdso.so.1", "libc.so.6", "libm.so.6", "libssl.so.3", "libcrypto.so.3", "libz.so.1",
               "libstdc++.so.6", "libgcc_s.so.1", "ld-linux-x86-64.so.2"}
SIZES = [12, 3000, 2000, 5, 700, 1500, 4000, 1, 9000, 30]  # bytes of the messages published
IDLE = 30.0  # seconds of silence: above the hub's --heartbeat, --poll-timeout and --ws-ping-interval (25)
# JSON-, SSE- and HTTP-hostile characters, multi-byte ones: payloads compared byte for byte.
CHARS = ['"', "\\", "\n", "\r", "/", "é", "✓", "😀", "<", "\u2028", "\t", "a", "data: ", "%", " "]


def need(tool: str, package: str) -> str:
    path = shutil.which(tool, path="/usr/sbin:/usr/bin:/sbin:/bin")
    if path is None:
        msg = f"{tool} is not installed (apt-get install {package})"
        if CI:
            pytest.fail(msg)
        pytest.skip(msg)
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def substitute(text: str, pairs) -> str:
    """Replaces each `old` that occurs exactly once: a changed example fails here loudly
    instead of being tested half."""
    for old, new in pairs:
        assert text.count(old) == 1, f"the shipped example no longer has {old!r} exactly once"
        text = text.replace(old, new)
    return text


class Process:
    """A foreground process with its output in a log file; stop() is SIGTERM, then SIGKILL."""

    def __init__(self, cmd, log: Path, env=None, cwd=None):
        self.cmd, self.log = cmd, log
        with open(log, "wb") as f:
            self.proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, env=env, cwd=cwd)

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_for(self, ready, timeout=10.0, what="start"):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"{self.cmd[0]} exited with {self.proc.returncode}\n{self.text()[-3000:]}")
            result = ready()
            if result:
                return result
            time.sleep(0.05)
        raise AssertionError(f"{self.cmd[0]} did not {what} within {timeout} s\n{self.text()[-3000:]}")

    def wait_listening(self, port):
        def up():
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                return True
            except OSError:
                return False
        self.wait_for(up, what=f"listen on {port}")

    def stop(self, timeout=15.0):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
                return None
        return self.proc.returncode


# ---- the tarball, unpacked

@pytest.fixture(scope="module")
def unpacked(tmp_path_factory) -> Path:
    if not BIN:
        pytest.skip("HALLEY_MEMORY_BIN is unset (Scripts/test.sh points it at the plain release build)")
    out = tmp_path_factory.mktemp("package-out")
    r = subprocess.run([str(ROOT / "Scripts" / "package.sh"), BIN, str(out)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    tarball = Path(r.stdout.strip().splitlines()[-1])
    assert tarball.parent == out and re.fullmatch(rf"halley-[0-9A-Za-z._-]+-linux-{platform.machine()}\.tar\.gz", tarball.name), tarball
    fresh = tmp_path_factory.mktemp("unpacked")
    subprocess.run(["tar", "-xzf", str(tarball), "-C", str(fresh)], check=True, env=CLEAN_ENV, timeout=60)
    (top,) = list(fresh.iterdir())
    assert top.name == tarball.name.removesuffix(".tar.gz")
    names = {p.name for p in top.iterdir()}
    assert names == {"halley", "public", "halley.apps.json", "halley.service", "nginx.conf", "haproxy.cfg", "README.md"}, names
    assert (top / "public" / "halley.js").is_file() and os.access(top / "halley", os.X_OK)
    return top


def exec_start(unpacked: Path) -> list[str]:
    """The unit's ExecStart with the install paths pointing into the unpacked tree."""
    unit = (unpacked / "halley.service").read_text()
    (line,) = [l for l in unit.splitlines() if l.startswith("ExecStart=")]
    args = [a.replace("/opt/halley", str(unpacked)).replace("/etc/halley", str(unpacked))
            for a in shlex.split(line.removeprefix("ExecStart="))]
    assert args[0] == str(unpacked / "halley")
    for flag in ("--config", "--public", "--trusted-proxies", "--port"):
        assert flag in args, f"the unit's ExecStart has no {flag}"
    args[args.index("--port") + 1] = "0"  # a free port, named in the start-up line
    return args


@pytest.fixture(scope="module")
def hub(unpacked, tmp_path_factory):
    log = tmp_path_factory.mktemp("hub") / "halley.log"
    p = Process(exec_start(unpacked), log, env=CLEAN_ENV, cwd=unpacked)
    try:
        line = p.wait_for(lambda: re.search(r"halley listening on http://127\.0\.0\.1:(\d+) ", p.text()))
        p.port = int(line.group(1))
        yield p
    finally:
        rc = p.stop()
    assert rc == 0, f"halley exited with {rc}\n{p.text()[-3000:]}"


@pytest.fixture(scope="module")
def app(unpacked) -> dict:
    (a,) = json.loads((unpacked / "halley.apps.json").read_text())["apps"]
    return a


# ---- the proxies, from the shipped examples

def start_proxy(make, attempts=3) -> Process:
    """`make(port)` starts a proxy on `port`; a port taken meanwhile gets another try."""
    for i in range(attempts):
        port = free_port()
        p = make(port)
        try:
            p.wait_listening(port)
            p.port = port
            return p
        except AssertionError:
            p.stop()
            if i == attempts - 1:
                raise


@pytest.fixture(scope="module")
def nginx(unpacked, hub, tmp_path_factory):
    exe = need("nginx", "nginx")
    d = tmp_path_factory.mktemp("nginx")

    def make(port):
        site = substitute((unpacked / "nginx.conf").read_text(), [
            ("listen 80;", f"listen 127.0.0.1:{port};"),
            ("server 127.0.0.1:8080;", f"server 127.0.0.1:{hub.port};"),
        ])
        (d / "halley.conf").write_text(site)
        # What /etc/nginx/nginx.conf gives the include, with every path in this directory.
        (d / "nginx.conf").write_text(f"""daemon off;
worker_processes 1;
pid {d}/nginx.pid;
events {{ worker_connections 1024; }}
http {{
    access_log {d}/access.log;
    client_body_temp_path {d}/body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    include {d}/halley.conf;
}}
""")
        return Process([exe, "-p", str(d), "-c", str(d / "nginx.conf"), "-e", str(d / "error.log")], d / "nginx.out")

    p = start_proxy(make)
    yield p
    p.stop()


@pytest.fixture(scope="module")
def haproxy(unpacked, hub, tmp_path_factory):
    exe = need("haproxy", "haproxy")
    d = tmp_path_factory.mktemp("haproxy")

    def make(port):
        cfg = substitute((unpacked / "haproxy.cfg").read_text(), [
            ("bind :80", f"bind 127.0.0.1:{port}"),
            ("server hub1 127.0.0.1:8080", f"server hub1 127.0.0.1:{hub.port}"),
        ])
        (d / "halley.cfg").write_text(cfg)
        # In place of Debian's global section (chroot, user, daemon need root and a service).
        (d / "global.cfg").write_text("global\n    maxconn 1000\n    log stdout format raw local0 info\n")
        check = subprocess.run([exe, "-c", "-f", str(d / "global.cfg"), "-f", str(d / "halley.cfg")],
                               capture_output=True, text=True, timeout=30)
        assert check.returncode == 0, check.stdout + check.stderr
        return Process([exe, "-db", "-f", str(d / "global.cfg"), "-f", str(d / "halley.cfg")], d / "haproxy.out")

    p = start_proxy(make)
    yield p
    p.stop()


@pytest.fixture(params=["nginx", "haproxy"])
def proxy(request) -> Process:
    return request.getfixturevalue(request.param)


# ---- a subscriber on every transport

class Seen:
    """What one subscriber received: (event, payload bytes) of the test's channel."""

    def __init__(self):
        self.messages: list[tuple[str, bytes]] = []
        self.heartbeats = 0
        self.empty_polls: list[float] = []  # how long polls answered with nothing took
        self.error = None


def _left(until):
    return max(0.05, until - time.monotonic())


def _wanted(m, channel):
    return m.get("channel") == channel and not m["event"].startswith(("pusher", "halley:"))


def ws_subscriber(port, app, channel):
    ws = WS(port, key=app["key"], halley=False, origin=ORIGIN)
    ws.hello()
    ws.subscribe(channel)

    def collect(seen, n, until):
        while len(seen.messages) < n:
            m = ws.recv(timeout=_left(until))
            if _wanted(m, channel):
                seen.messages.append((m["event"], payload_of(m)))
    return collect, ws.close


def sse_subscriber(port, app, channel):
    s = SSE(port, query=f"key={app['key']}", origin=ORIGIN, timeout=IDLE + 15)
    assert s.status == 200, s.status
    info = json.loads(s.recv()["data"])
    status, _ = send_http(port, info["socket_id"], info["halley:token"], {"event": "pusher:subscribe", "data": {"channel": channel}})
    assert status == 200
    assert s.recv()["event"] == "pusher_internal:subscription_succeeded"

    def collect(seen, n, until):
        while len(seen.messages) < n:
            m = s.recv()
            if m["event"] == "halley:heartbeat":
                seen.heartbeats += 1
            elif _wanted(m, channel):
                seen.messages.append((m["event"], payload_of(m)))
    return collect, s.close


def poll_subscriber(port, app, channel):
    p = Poll(port, key=app["key"], origin=ORIGIN)
    p.subscribe(channel)

    def collect(seen, n, until):
        while len(seen.messages) < n and time.monotonic() < until:
            t0 = time.monotonic()
            msgs = p.poll(timeout=40)
            if not msgs:
                seen.empty_polls.append(time.monotonic() - t0)
            seen.messages += [(m["event"], payload_of(m)) for m in msgs if _wanted(m, channel)]
    return collect, lambda: None


def xhr_streaming_subscriber(port, app, channel):
    c = pusher_xhr.Client(port, key=app["key"], origin=ORIGIN)
    st, _ = pusher_xhr.open_stream(c)
    c.subscribe(channel)

    def collect(seen, n, until):
        while len(seen.messages) < n:
            f = st.frame(timeout=_left(until))
            assert f is not None and f[0] in ("a", "h"), f
            if f[0] == "h":
                seen.heartbeats += 1
                assert c.ping()[0] == 204  # pusher-js answers every heartbeat
                continue
            seen.messages += [(m["event"], payload_of(m)) for m in f[1] if _wanted(m, channel)]
    return collect, st.abort


def xhr_polling_subscriber(port, app, channel):
    c = pusher_xhr.Client(port, key=app["key"], origin=ORIGIN)
    assert c.poll()[2] == [("o", None)]
    (kind, msgs), = c.poll()[2]
    assert kind == "a" and msgs[0]["event"] == "pusher:connection_established"
    c.subscribe(channel)

    def collect(seen, n, until):
        while len(seen.messages) < n and time.monotonic() < until:
            t0 = time.monotonic()
            status, _, frames = c.poll(timeout=40)
            assert status == 200, (status, frames)
            if frames == [("h",)]:
                seen.empty_polls.append(time.monotonic() - t0)
            for f in frames:
                if f[0] == "a":
                    seen.messages += [(m["event"], payload_of(m)) for m in f[1] if _wanted(m, channel)]
    return collect, lambda: None


TRANSPORTS = {
    "websocket": ws_subscriber,
    "sse": sse_subscriber,
    "long-polling": poll_subscriber,
    "xhr_streaming": xhr_streaming_subscriber,
    "xhr_polling": xhr_polling_subscriber,
}


class Subscribers:
    """One subscriber per transport through `port`, each collecting on a thread of its own."""

    def __init__(self, label, port, app, channel, n, seconds):
        self.seen, self.threads, self.closers = {}, [], []
        until = time.monotonic() + seconds
        try:
            for name, make in TRANSPORTS.items():
                collect, close = make(port, app, channel)
                self.closers.append(close)
                seen = self.seen[f"{label} {name}"] = Seen()
                t = threading.Thread(target=self._run, args=(collect, seen, n, until), daemon=True)
                self.threads.append(t)
        except BaseException:
            self.close()
            raise

    @staticmethod
    def _run(collect, seen, n, until):
        try:
            collect(seen, n, until)
        except Exception as e:  # noqa: BLE001 - reported by join()
            seen.error = f"{type(e).__name__}: {e}"

    def start(self):
        for t in self.threads:
            t.start()

    def join(self, timeout):
        deadline = time.monotonic() + timeout
        for t in self.threads:
            t.join(max(0.0, deadline - time.monotonic()))
        return self.seen

    def close(self):
        for close in self.closers:
            try:
                close()
            except Exception:  # noqa: BLE001
                pass


def publish_one(port, app, channel, event, data, signed=False):
    """POST /publish with the app's token, or the Pusher HTTP API through the official SDK."""
    if signed:
        pusher_client(port, app_id=app["id"], key=app["key"], secret=app["secret"]).trigger(channel, event, data)
    else:
        status, r = publish(port, {"channel": channel, "event": event, "data": data}, token=app["token"])
        assert status in (201, 202), (status, r)
    return (event, data.encode())


def deliver(port, app, channel, subs: list[Subscribers]):
    """Messages one at a time, each published when the one before has reached every subscriber
    (within 5 s): a proxy that buffers a stream holds a message back until more data comes.
    Sizes from 1 byte to 9 KB, by POST /publish and (every third) through the Pusher SDK."""
    seen = {k: v for s in subs for k, v in s.seen.items()}
    expected = []
    for i, size in enumerate(SIZES):
        expected.append(publish_one(port, app, channel, f"m{i}", exact_text(size, i, CHARS), signed=i % 3 == 2))
        wait_until(lambda: all(len(v.messages) >= len(expected) or v.error for v in seen.values()), timeout=5)
        late = [f"{k}: {v.error or len(v.messages)}" for k, v in seen.items() if len(v.messages) < len(expected)]
        assert not late, f"message {i} ({size} bytes) did not get through within 5 s: {late}"
    return expected


def check_delivered(seen, expected):
    failures = []
    for name, s in seen.items():
        if s.error or s.messages != expected:
            failures.append(f"{name}: {s.error or ''} got {[(e, len(d)) for e, d in s.messages]}"
                            + ("" if s.error or [e for e, _ in s.messages] != [e for e, _ in expected] else " (payload bytes differ)"))
    assert not failures, "\n".join(failures)


# ---- the tests

def test_package_refuses_a_binary_linking_the_swift_runtime(tmp_path):
    """A stand-in ldd reports libswiftCore.so: the script stops and says why."""
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "ldd").write_text("#!/bin/sh\necho '\tlibswiftCore.so => /opt/swift/usr/lib/swift/linux/libswiftCore.so (0x0)'\n")
    (fake / "ldd").chmod(0o755)
    binary = tmp_path / "halley"
    binary.write_bytes(b"\x7fELF")
    binary.chmod(0o755)
    env = {**os.environ, "PATH": f"{fake}:{os.environ['PATH']}"}
    r = subprocess.run([str(ROOT / "Scripts" / "package.sh"), str(binary), str(tmp_path / "out")],
                       capture_output=True, text=True, env=env, timeout=60)
    assert r.returncode != 0 and "--static-swift-stdlib" in r.stderr, r.stdout + r.stderr
    assert not (tmp_path / "out").exists()


def test_binary_needs_only_system_libraries(unpacked, hub):
    out = subprocess.run(["ldd", str(unpacked / "halley")], capture_output=True, text=True, env=CLEAN_ENV, timeout=30)
    assert out.returncode == 0, out.stderr
    toolchain = shutil.which("swift")
    toolchain_root = str(Path(os.path.realpath(toolchain)).parents[1]) if toolchain else None
    libs = {}
    for line in out.stdout.splitlines():
        m = re.match(r"\s*(\S+)(?: => (\S+))?", line)
        libs[os.path.basename(m.group(1))] = m.group(2) or m.group(1)
    assert "libswift" not in out.stdout and "not found" not in out.stdout, out.stdout
    assert set(libs) <= SYSTEM_LIBS, f"unexpected libraries: {set(libs) - SYSTEM_LIBS}\n{out.stdout}"
    for name, path in libs.items():
        assert name == "linux-vdso.so.1" or path.startswith(("/lib/", "/lib64/", "/usr/lib/")), (name, path)
        assert not (toolchain_root and path.startswith(toolchain_root)), (name, path)
    # The running hub: the environment it was given, and nothing of Swift mapped.
    pid = hub.proc.pid
    environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    assert [e for e in environ if e] == [b"PATH=/usr/bin:/bin"]
    maps = Path(f"/proc/{pid}/maps").read_text()
    assert "libswift" not in maps and not (toolchain_root and toolchain_root in maps)


def test_systemd_unit_verifies(unpacked, tmp_path):
    """systemd-analyze verify (offline: no running systemd needed) on the shipped unit, with
    its paths pointing into the unpacked tree so that ExecStart exists."""
    exe = need("systemd-analyze", "systemd")
    d = tmp_path / "units"
    d.mkdir()
    unit = (unpacked / "halley.service").read_text().replace("/opt/halley", str(unpacked))
    (d / "halley.service").write_text(unit)
    r = subprocess.run([exe, "verify", str(d / "halley.service")], capture_output=True, text=True, timeout=60)
    # It exits 0 on lines it ignores (an unknown key, a bad value): those fail here too.
    ours = [l for l in (r.stdout + r.stderr).splitlines() if "halley" in l]
    assert r.returncode == 0 and not ours, r.stdout + r.stderr
    # What the operator relies on.
    for line in ("User=halley", "Restart=on-failure", "ExecReload=/bin/kill -HUP $MAINPID", "KillSignal=SIGTERM",
                 "LimitNOFILE=65536", "NoNewPrivileges=yes", "ProtectSystem=strict", "PrivateTmp=yes"):
        assert line in unit.splitlines(), line
    grace = int(re.search(r"--shutdown-grace (\d+)", unit).group(1))
    assert int(re.search(r"^TimeoutStopSec=(\d+)$", unit, re.M).group(1)) > grace


def test_every_transport_through_the_proxy(proxy, app):
    channel = f"through-{proxy.cmd[0].rsplit('/', 1)[-1]}"
    subs = Subscribers(channel, proxy.port, app, channel, n=len(SIZES), seconds=15)
    try:
        subs.start()
        expected = deliver(proxy.port, app, channel, [subs])
        check_delivered(subs.join(20), expected)
    finally:
        subs.close()


def test_idle_transports_outlast_heartbeats_and_poll_timeouts(nginx, haproxy, app):
    """30 s without a message, every transport through both proxies at once: streams carry the
    hub's heartbeats, polls are answered empty by the hub (not cut by the proxy), the
    WebSocket stays open (the hub pings it); then every message gets through."""
    all_subs = []
    try:
        for p, label in ((nginx, "nginx"), (haproxy, "haproxy")):
            all_subs.append(Subscribers(label, p.port, app, f"idle-{label}", n=len(SIZES), seconds=IDLE + 15))
        for s in all_subs:
            s.start()
        time.sleep(IDLE)
        expected = deliver(nginx.port, app, "idle-nginx", all_subs[:1])
        assert deliver(haproxy.port, app, "idle-haproxy", all_subs[1:]) == expected
        seen = {}
        for s in all_subs:
            seen.update(s.join(20))
        check_delivered(seen, expected)
        for name, s in seen.items():
            if name.endswith(("sse", "xhr_streaming")):
                assert s.heartbeats >= 1, name
            if name.endswith("polling"):  # the hub's own empty answer after --poll-timeout
                assert any(20 < t < IDLE for t in s.empty_polls), (name, s.empty_polls)
    finally:
        for s in all_subs:
            s.close()


def test_hub_sees_the_client_behind_the_proxy(proxy, app):
    """A pusher-js HTTP session answers only the client address that opened it. Through the
    proxy, clients 127.0.0.2 and 127.0.0.3 all reach the hub from 127.0.0.1: the hub tells
    them apart by X-Forwarded-For alone, and what a client writes there itself does not count."""
    c = pusher_xhr.Client(proxy.port, key=app["key"])
    status, _, body = http_request(proxy.port, "POST", c.receive_url("xhr"), b"", c.headers(), source="127.0.0.2")
    assert status == 200 and pusher_xhr.frames_of(body) == [("o", None)], (status, body)

    def ping(source, headers=None):
        return http_request(proxy.port, "POST", c.unique(f"{c.base}/xhr_send"), b"[]",
                            {**c.headers(), **(headers or {})}, source=source)[0]

    assert ping("127.0.0.2") == 204
    assert ping("127.0.0.3") == 404
    assert ping("127.0.0.3", {"X-Forwarded-For": "127.0.0.2"}) == 404
    assert ping("127.0.0.2", {"X-Forwarded-For": "127.0.0.3"}) == 204
