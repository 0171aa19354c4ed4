#!/usr/bin/env python3
"""Memory per idle connection: a server's RSS growth as idle connections pile up.

    Scripts/bench/idle.py http|ws|wss|sessions [-n 10000] [--steps 5000,10000] [--targets ...]

Each target runs alone on SERVER_CPU (halley --threads 1, nginx one worker). It is warmed with
one connection that does what the measured ones will (then closed), its memory read from
/proc (VmRSS, RssAnon, the exact Rss of smaps_rollup, VmData, RssShmem), then idle
connections opened in steps (N/2, then N): after each, SETTLE s, the server must have closed
or written to none of them, and the growth per connection is reported, from the baseline and
since the previous step. Everything is closed at the end: the descriptors must return to the
baseline. Kernel socket memory is in none of these figures.
  http      keep-alive connections past one GET /small.txt (60 B); halley --keepalive-timeout
            600 and nginx (worker_connections sized for N; its per-slot arrays are allocated at
            start, so a second nginx with 512 slots sizes them). Goal: halley < 512 B.
  ws        WebSockets to /echo (ping interval 3600 s): halley plain; halley-deflate, a
            browser's offer (permessage-deflate; client_max_window_bits) that the hub answers
            with client_no_context_takeover (one inflater per loop); halley-deflate-kept, the same
            offer to a hub with --ws-client-context-takeover on (an inflater per connection); in
            both each connection sends one compressed "hello" and reads its echo, so zlib state
            exists (VmData shows what a filled 32 KiB window would take). Node ws for context;
            uws, the uWebSockets peer (when uws/build.sh has built it), for the goal.
  wss       WebSockets to /echo over TLS 1.3 (RSA 2048 certificate, TLS_AES_256_GCM_SHA384), each
            after one echo: halley (its own TLS 1.3 records; OpenSSL's SSL is freed after the
            handshake) and halley-openssl (--tls-records openssl). Opened one at a time, blocking.
  sessions  WebSocket sessions subscribed to channel `bench`: halley's Pusher session (goal
            < 1 KiB), halley-resumable (halley=1: token and resend buffer, the subscription
            answer acknowledged), halley-deflate(-kept) as above with pusher:subscribe
            compressed, Nchan's /sub/bench and uws's /sub/bench (a WebSocket subscribed to a
            topic: what a Pusher session is reduced to). Then one message is published: every session
            must receive it; memory again ("after 1 msg").
Environment: N, STEPS, TARGETS, SETTLE=2, SERVER_CPU=0, HALLEY_BIN, SCRATCH, NO_BUILD=1, KEEP_TMP=1
"""

import argparse
import os
import selectors
import re
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchlib as b  # noqa: E402

KINDS = {
    "http": ["halley", "nginx"],
    "ws": ["halley", "halley-deflate", "halley-deflate-kept", "node", "uws"],
    "wss": ["halley", "halley-openssl"],
    "sessions": ["halley", "halley-resumable", "halley-deflate", "halley-deflate-kept", "nchan", "uws"],
}
GOALS = {"http": 512, "sessions": 1024}
SMALL = b"Halley idle-connection benchmark: a small file of sixty bytes".ljust(59, b".")[:59] + b"\n"
NGINX_HTTP = """{user}worker_processes 1;
worker_rlimit_nofile {nofile};
pid {d}/nginx.pid;
events {{ worker_connections {slots}; }}
http {{
    access_log off;
    sendfile on;
    tcp_nodelay on;
    keepalive_requests 1000000000;
    keepalive_timeout 600s;
    open_file_cache max=1000 inactive=60s;
    client_body_temp_path {d}/cb; proxy_temp_path {d}/px; fastcgi_temp_path {d}/fc; uwsgi_temp_path {d}/uw; scgi_temp_path {d}/sc;
    server {{ listen 127.0.0.1:{port} backlog=4096; root {root}; }}
}}
"""


def start(kind, target, a, tmp, slots=None):
    """The target's server and the connection options that reach it."""
    if target == "nginx":
        port, d = b.free_port(), os.path.join(tmp, f"nginx-{slots}")
        conf = NGINX_HTTP.format(user="user root;\n" if os.getuid() == 0 else "", nofile=b.raise_nofile(0), d=d,
                                 slots=slots, port=port, root=os.path.join(tmp, "root"))
        return b.nginx(conf, tmp, port, name=f"nginx-{slots}", cpu=a.cpu, probe="/small.txt"), {"kind": "http"}
    if target == "node":
        return b.node(tmp, a.cpu), {"kind": "ws"}
    if target == "nchan":
        return b.nchan(tmp, a.cpu), {"kind": "raw", "path": "/sub/bench"}
    if target == "uws":
        return b.uws(tmp, a.cpu), {"kind": "ws", "path": "/echo"} if kind == "ws" else {"kind": "raw", "path": "/sub/bench"}
    args = {"http": ["--keepalive-timeout", "600", "--public", os.path.join(tmp, "root")],
            "ws": ["--ws-ping-interval", "3600"],
            "wss": ["--ws-ping-interval", "3600", "--tls-port", "0", "--tls-cert", os.path.join(tmp, "rsa.crt"),
                    "--tls-key", os.path.join(tmp, "rsa.key"), "--tls-records",
                    "openssl" if target.endswith("-openssl") else "own"],
            "sessions": ["--ws-ping-interval", "3600", "--app-token", "benchtoken"]}[kind]
    if target.endswith("-kept"):
        args += ["--ws-client-context-takeover", "on"]
    server = b.halley(a.halley_bin, tmp, *args, cpu=a.cpu, name=target)
    if kind == "http":
        return server, {"kind": "http"}
    if kind == "wss":
        m = re.search(r"https on https://127\.0\.0\.1:(\d+)", server.log_text())
        if not m:
            raise b.Failure("halley did not say its https port")
        return server, {"tls_port": int(m.group(1))}
    opts = {"kind": "ws" if kind == "ws" else "pusher",
            "path": "/echo" if kind == "ws" else "/app/app-key?protocol=7" + ("&halley=1" if "resumable" in target else "")}
    if "deflate" in target:
        opts["deflate"] = b.BROWSER_DEFLATE
        opts["expect_ext"] = ("!" if target.endswith("-kept") else "") + "client_no_context_takeover"
    return server, opts


def open_wss(count, timeout=120, tls_port=0, **_):
    """`count` wss connections to /echo, one at a time, each after one echo (so records have
    gone both ways), non-blocking when returned."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    socks = []

    def recv(s, when):
        chunk = s.recv(4096)
        if not chunk:
            raise b.Failure(f"the server closed a connection {when}")
        return chunk
    try:
        for k in range(count):
            s = ctx.wrap_socket(socket.create_connection(("127.0.0.1", tls_port), timeout=timeout))
            socks.append(s)
            s.sendall(b"GET /echo HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                      b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
            buf = b""
            while b"\r\n\r\n" not in buf:
                buf += recv(s, "during the upgrade")
            if not buf.startswith(b"HTTP/1.1 101 "):
                raise b.Failure(f"upgrade answered {buf[:40]!r}")
            buf, msgs = buf.partition(b"\r\n\r\n")[2], []
            s.sendall(b.masked(1, b"hello %d" % k))
            while not msgs:
                msgs, buf = b.frames(buf + recv(s, "before the echo"))
            if msgs[0] != (1, b"hello %d" % k):
                raise b.Failure(f"echo {msgs[0]!r}")
            s.setblocking(False)
        return socks
    except BaseException:
        for s in socks:
            s.close()
        raise


def snapshot(server):
    st = b.proc_status(server.pid)
    st["fds"] = b.fd_count(server.pid)
    return st


def receive_everywhere(socks, marker, timeout):
    """How many sockets received a text message holding `marker`."""
    got, bufs = 0, {s: b"" for s in socks}
    deadline = time.monotonic() + timeout
    with selectors.DefaultSelector() as sel:
        for s in socks:
            sel.register(s, selectors.EVENT_READ)
        while got < len(socks) and time.monotonic() < deadline:
            for key, _ in sel.select(timeout=0.5):
                s = key.fileobj
                msgs, bufs[s] = b.frames(bufs[s] + s.recv(65536))
                if any(op == 1 and marker in p for op, p in msgs):
                    got += 1
                    sel.unregister(s)
    return got


def measure(kind, target, steps, a, tmp):
    server, opts = start(kind, target, a, tmp, slots=steps[-1] + steps[-1] // 8 + 512)
    res = {"name": target, "rows": []}
    socks = []
    try:
        opener = open_wss if kind == "wss" else b.open_many
        for s in opener(1, **opts, port=server.port):
            s.close()
        time.sleep(a.settle)
        base = res["base"] = snapshot(server)
        b.log(f"{target}: baseline VmRSS {base['VmRSS']} kB, {base['fds']} fds")

        def record(label, n, prev):
            time.sleep(a.settle)
            server.check_alive()
            st = snapshot(server)
            per = {k: (st[k] - base[k]) * 1024 / n for k in ("VmRSS", "RssAnon", "Rss", "VmData", "RssShmem")
                   if k in st and k in base}
            per["slope"] = (st["VmRSS"] - prev[1]) * 1024 / (n - prev[0]) if n > prev[0] else 0
            touched = b.readable_count(socks)
            res["rows"].append((label, n, st["VmRSS"], per))
            b.log(f"{target}: {n:6d} {label}: VmRSS {st['VmRSS']} kB, +{per['VmRSS']:.0f} B each from the baseline, "
                  f"{st['fds'] - base['fds']} more fds; {touched} closed or written to by the server")
            if touched or st["fds"] - base["fds"] < n:
                raise b.Failure(f"{target} closed or wrote to {touched} idle connections, or holds too few fds")
            return n, st["VmRSS"]

        prev = (0, base["VmRSS"])
        for n in steps:
            t0 = time.monotonic()
            socks += opener(n - len(socks), a.open_timeout, **opts, port=server.port)
            b.log(f"{target}: {n} connections open in {time.monotonic() - t0:.1f} s")
            prev = record("idle", n, prev)
        if kind == "sessions":
            marker = f"idle-check-{os.getpid()}-{int(time.time())}"
            if target in ("nchan", "uws"):
                status, body = b.post(f"http://127.0.0.1:{server.port}/pub/bench", marker)
            else:
                status, body = b.post(f"http://127.0.0.1:{server.port}/publish", '{"channel":"bench","event":"tick",'
                                      f'"data":"{marker}"}}', Authorization="Bearer benchtoken")
            got = receive_everywhere(socks, marker.encode(), a.open_timeout)
            b.log(f"{target}: one message published ({status}): {got} of {len(socks)} sessions received it")
            if got != len(socks):
                raise b.Failure(f"{target}: {len(socks) - got} sessions did not receive the message")
            record("after 1 msg", len(socks), prev)
        for s in socks:
            s.close()
        socks = []
        time.sleep(a.settle)
        res["closed"] = snapshot(server)
        b.log(f"{target}: all closed: VmRSS {res['closed']['VmRSS']} kB, {res['closed']['fds']} fds")
        if res["closed"]["fds"] != base["fds"]:
            raise b.Failure(f"{target} holds {res['closed']['fds']} fds after every close, {base['fds']} at the baseline")
        if target == "nginx":
            # nginx allocates (and touches) its arrays for every connection slot at start: size
            # them with a second nginx that has 512 slots.
            small, _ = start(kind, target, a, tmp, slots=512)
            for s in b.open_many(1, kind="http", port=small.port):
                s.close()
            time.sleep(a.settle)
            res["per_slot"] = (base["VmRSS"] - snapshot(small)["VmRSS"]) * 1024 / (steps[-1] + steps[-1] // 8)
            small.stop()
    finally:
        for s in socks:
            s.close()
        server.stop()
        for line in server.news()[:20]:
            b.log(f"  {target} log: {line}")
    return res


def main():
    env = os.environ.get
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("kind", choices=KINDS)
    ap.add_argument("-n", type=int, default=int(env("N", "10000")), help="connections in the last step")
    ap.add_argument("--steps", default=env("STEPS"), help="connection counts to measure at (default N/2,N)")
    ap.add_argument("--targets", default=env("TARGETS"), help="default: every one of the kind (uws when built)")
    ap.add_argument("--settle", type=float, default=float(env("SETTLE", "2")))
    ap.add_argument("--open-timeout", type=float, default=120)
    ap.add_argument("--cpu", type=int, default=int(env("SERVER_CPU", "0")))
    ap.add_argument("--halley-bin", default=env("HALLEY_BIN"))
    ap.add_argument("--enforce-goal", action="store_true", help="exit 3 when halley misses its goal")
    a = ap.parse_args()
    steps = sorted({int(x) for x in a.steps.split(",")}) if a.steps else sorted({max(1, a.n // 2), a.n})
    targets = a.targets.split(",") if a.targets else [t for t in KINDS[a.kind] if t != "uws" or b.have_uws()]
    if not set(targets) <= set(KINDS[a.kind]):
        raise b.Failure(f"targets of {a.kind}: {', '.join(KINDS[a.kind])}")
    b.raise_nofile(steps[-1])
    if a.halley_bin is None:
        scratch = env("SCRATCH", os.path.join(b.REPO, ".build"))
        if not env("NO_BUILD"):
            subprocess.run(["swift", "build", "-c", "release", "--product", "halley", "--scratch-path", scratch],
                           cwd=b.REPO, check=True, stdout=subprocess.DEVNULL)
        a.halley_bin = os.path.join(scratch, "release", "halley")
    rev = subprocess.run(["git", "-C", b.REPO, "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    b.log(f"==> {a.kind}: {', '.join(targets)}; steps {steps}; settle {a.settle} s; servers on core {a.cpu}; "
          f"halley {a.halley_bin} (git {rev.stdout.strip()})")
    tmp = tempfile.mkdtemp(prefix=f"halley-bench-idle-{a.kind}.")
    os.chmod(tmp, 0o755)
    os.makedirs(os.path.join(tmp, "root"))
    with open(os.path.join(tmp, "root", "small.txt"), "wb") as f:
        f.write(SMALL)
    if a.kind == "wss":
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj",
                        "/CN=localhost", "-keyout", os.path.join(tmp, "rsa.key"), "-out", os.path.join(tmp, "rsa.crt")],
                       check=True, capture_output=True)
    try:
        results = [measure(a.kind, t, steps, a, tmp) for t in targets]
    finally:
        if env("KEEP_TMP"):
            b.log(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)

    b.log(f"\n=== summary: memory growth per idle {a.kind} connection from the baseline, in bytes")
    b.log("VmRSS (slope: since the previous step); anon: RssAnon; smaps: Rss of smaps_rollup (exact); VmData: heap")
    b.log("and mappings reserved, touched or not; shmem: RssShmem (Nchan's shared zone)")
    b.log(f"{'target':<20} {'conns':>6} {'state':<12} {'VmRSS kB':>9} {'B/conn':>7} {'anon':>6} {'slope':>6} "
          f"{'smaps':>6} {'VmData':>7} {'shmem':>6}")
    for r in results:
        b.log(f"{r['name']:<20} {0:>6} {'baseline':<12} {r['base']['VmRSS']:>9}")
        for label, n, rss, per in r["rows"]:
            cols = [f"{per[k]:.0f}" if k in per else "?" for k in ("VmRSS", "RssAnon", "slope", "Rss", "VmData", "RssShmem")]
            b.log(f"{r['name']:<20} {n:>6} {label:<12} {rss:>9} {cols[0]:>7} {cols[1]:>6} {cols[2]:>6} {cols[3]:>6} "
                  f"{cols[4]:>7} {cols[5]:>6}")
        if "per_slot" in r:
            b.log(f"{r['name']:<20} and ~{r['per_slot']:.0f} B preallocated per connection slot (in its baseline)")
    missed = 0
    goal = GOALS.get(a.kind)
    for r in results:
        if r["name"] == "halley" and goal:
            per = [p["VmRSS"] for label, _, _, p in r["rows"] if label == "idle"][-1]
            missed = per >= goal
            b.log(f"goal: halley < {goal} B per idle connection at {steps[-1]}: {per:.0f} B, {'MISSED' if missed else 'met'}")
    return 3 if missed and a.enforce_goal else 0


if __name__ == "__main__":
    import signal
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # unwinds: servers stopped, tmp removed
    try:
        sys.exit(main())
    except b.Failure as e:
        print(f"idle: error: {e}", file=sys.stderr, flush=True)
        sys.exit(1)
    except KeyboardInterrupt:
        sys.exit(130)
