#!/usr/bin/env python3
"""Memory per idle keep-alive HTTP connection: halley, and nginx for context.

Starts the server, warms it with one request, measures its RSS (VmRSS of
/proc/PID/status), then opens idle keep-alive connections in steps (by default
half of N, then N). Every connection sends one complete `GET /small.txt HTTP/1.1`
and reads the whole response, so it is an established keep-alive connection past
its first request, and then stays idle. After each step the script waits
--settle seconds, checks that no connection was closed by the server, and
measures RSS again. It reports the growth per connection from the baseline and
the slope between steps. Finally it closes every connection and measures once
more (fd count back to baseline, RSS retained).

halley runs with `--threads 1 --keepalive-timeout 600`; nginx with 1 worker
(RSS of the worker process). nginx allocates and touches its connection and
event arrays for all worker_connections slots at start, so that cost is in its
baseline, not in the growth: the script sizes it with a second nginx started
with 512 slots and reports it beside the growth. The issue's goal is < 512 B per
connection for halley. RSS covers user-space memory only: the kernel's
per-socket memory is not in it. smaps_rollup's Rss is shown beside VmRSS as a
cross-check (VmRSS comes from batched per-CPU counters).

Usage: Scripts/bench/idle_http.sh [-n 10000] [--steps 5000,10000] [--no-nginx]
       [--no-build | --halley-bin PATH] [--enforce]     (see --help)

The client opens connections non-blocking, --inflight at a time, with a
selector, so it is not the bottleneck; RLIMIT_NOFILE is raised to the hard
limit (the servers inherit it).

Exit status: 0 when every measurement worked, 1 on any failure (server did not
start or died, a connection failed or was closed, a response was wrong), 3 with
--enforce when halley's per-connection growth is over the goal.
"""

import argparse
import errno
import os
import re
import resource
import selectors
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from benchlib import (REPO, Failure, build, die_with_parent, failures_summary, fd_count, free_port, log, proc_status,
                      readable_count, smaps_rss, version)

GOAL_BYTES = 512
SMALL = b"Halley idle-connection benchmark: a small file of sixty bytes".ljust(59, b".")[:59] + b"\n"
assert len(SMALL) == 60



# ---- /proc ----------------------------------------------------------------------------------


def children(pid):
    kids = []
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{task}/children") as f:
                kids += [int(x) for x in f.read().split()]
        except OSError:
            pass
    if kids:
        return kids
    for d in os.listdir("/proc"):  # kernels without /proc/PID/task/TID/children
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as f:
                    if int(f.read().rsplit(")", 1)[1].split()[1]) == pid:
                        kids.append(int(d))
            except (OSError, IndexError, ValueError):
                pass
    return kids



def alive(proc):
    return proc.poll() is None


# ---- servers --------------------------------------------------------------------------------

class Server:
    name = "?"
    proc = None
    port = None

    def rss_pid(self):
        return self.proc.pid

    def check_alive(self):
        if not alive(self.proc):
            raise Failure(f"{self.name} exited (status {self.proc.returncode}); log:\n{self.log_text()}")

    def stop(self):
        if self.proc is None or not alive(self.proc):
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            log(f"{self.name} (pid {self.proc.pid}) ignored SIGTERM for 10 s: SIGKILL")
            self.proc.kill()
            self.proc.wait()

    def log_text(self):
        return ""


class Halley(Server):
    name = "halley"

    def __init__(self, binary, root, tmp):
        self.binary, self.root, self.tmp = binary, root, tmp
        self.log_path = os.path.join(tmp, "halley.log")

    def start(self):
        self.cmd = [self.binary, "--port", "0", "--threads", "1", "--keepalive-timeout", "600",
                    "--public", self.root, "--log-level", "info", "--shutdown-grace", "1",
               # every client is 127.0.0.1: the per-address abuse limits do not apply here
               "--max-connections-per-address", "0", "--session-opens-per-second", "0", "--max-lingering-per-address", "0"]
        log("halley: " + " ".join(self.cmd))
        self.logf = open(self.log_path, "wb")
        # halley reads HALLEY_* variables as options: run it with none of them.
        env = {k: v for k, v in os.environ.items() if not k.startswith("HALLEY_")}
        self.proc = subprocess.Popen(self.cmd, env=env, stdin=subprocess.DEVNULL, stdout=self.logf, stderr=self.logf,
                                     preexec_fn=die_with_parent)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            m = re.search(r"halley listening on http://127\.0\.0\.1:(\d+) \(([^)]*)\)", self.log_text())
            if m:
                self.port = int(m.group(1))
                log(f"halley pid {self.proc.pid}, port {self.port} ({m.group(2)})")
                return
            self.check_alive()
            time.sleep(0.05)
        raise Failure("halley did not log its port within 10 s:\n" + self.log_text())

    def log_text(self):
        with open(self.log_path, errors="replace") as f:
            return f.read()

    def extra_log(self):
        normal = ("halley listening on", "SIGTERM: stopping (grace 1 s, 0 connections open)", "halley stopped")
        return [l for l in self.log_text().splitlines() if not any(x in l for x in normal)]


class Nginx(Server):
    name = "nginx"

    def __init__(self, binary, root, tmp, connections, nofile, worker_connections=None, tag="nginx"):
        self.binary, self.root = binary, root
        self.dir = os.path.join(tmp, tag)
        os.makedirs(self.dir)
        # nginx closes idle keep-alive connections to make room ("worker_connections are not
        # enough, reusing connections") once fewer than 1/16 of its slots are free.
        self.worker_connections = worker_connections or (connections + connections // 8 + 512)
        self.nofile = nofile
        self.worker = None

    def start(self):
        self.port = free_port()
        d = self.dir
        # As root, nginx would run its worker as `nobody`; keep root so it reads the same
        # root as halley. As another user the directive is not allowed.
        user = "user root;\n" if os.getuid() == 0 else ""
        conf = f"""{user}worker_processes 1;
worker_rlimit_nofile {self.nofile};
daemon off;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{
    worker_connections {self.worker_connections};
}}
http {{
    types {{ text/plain txt; text/html html; }}
    default_type application/octet-stream;
    access_log off;
    sendfile on;
    tcp_nodelay on;
    open_file_cache max=1000 inactive=60s;
    keepalive_requests 1000000000;
    keepalive_timeout 600s;
    client_body_temp_path {d}/client_body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    server {{
        listen 127.0.0.1:{self.port} backlog=4096;
        root {self.root};
        location / {{ }}
    }}
}}
"""
        conf_path = os.path.join(d, "nginx.conf")
        with open(conf_path, "w") as f:
            f.write(conf)
        base = [self.binary, "-p", d + "/", "-e", os.path.join(d, "error.log"), "-c", conf_path]
        t = subprocess.run(base + ["-t", "-q"], capture_output=True, text=True)
        if t.returncode != 0:
            raise Failure(f"nginx -t failed:\n{t.stderr}\n{conf}")
        log("nginx: " + " ".join(base))
        self.errf = open(os.path.join(d, "stderr.log"), "wb")
        self.proc = subprocess.Popen(base, stdin=subprocess.DEVNULL, stdout=self.errf, stderr=self.errf,
                                     preexec_fn=die_with_parent)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            self.check_alive()
            kids = children(self.proc.pid)
            if kids and port_open(self.port):
                if len(kids) != 1:
                    raise Failure(f"nginx has {len(kids)} children, expected 1 worker: {kids}")
                self.worker = kids[0]
                log(f"nginx master pid {self.proc.pid}, worker pid {self.worker}, port {self.port}, "
                    f"worker_connections {self.worker_connections}")
                return
            time.sleep(0.05)
        raise Failure("nginx did not start within 10 s:\n" + self.log_text())

    def rss_pid(self):
        return self.worker

    def check_alive(self):
        super().check_alive()
        if self.worker is not None and not os.path.exists(f"/proc/{self.worker}"):
            raise Failure(f"nginx worker {self.worker} is gone; log:\n{self.log_text()}")

    def log_text(self):
        out = ""
        for n in ("error.log", "stderr.log"):
            p = os.path.join(self.dir, n)
            if os.path.exists(p):
                with open(p, errors="replace") as f:
                    out += f.read()
        return out

    def extra_log(self):
        return self.log_text().splitlines()



def port_open(port):
    s = socket.socket()
    s.settimeout(0.5)
    try:
        s.connect(("127.0.0.1", port))
        return True
    except OSError:
        return False
    finally:
        s.close()


# ---- the client -----------------------------------------------------------------------------

class Conn:
    __slots__ = ("sock", "state", "buf", "need")

    def __init__(self, sock):
        self.sock, self.state, self.buf, self.need = sock, "connect", b"", None


def open_idle(port, count, inflight, timeout):
    """Opens `count` connections, each past one complete request/response; returns the
    sockets. Raises Failure on any error."""
    request = f"GET /small.txt HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUser-Agent: idle_http.py\r\n\r\n".encode()
    sel = selectors.DefaultSelector()
    done, pending, started = [], 0, 0
    deadline = time.monotonic() + timeout
    errors = []

    def fail(c, why):
        errors.append(why)
        sel.unregister(c.sock)
        c.sock.close()

    try:
        while len(done) + len(errors) < count:
            while pending < inflight and started < count:
                s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                s.setblocking(False)
                err = s.connect_ex(("127.0.0.1", port))
                if err not in (0, errno.EINPROGRESS):
                    s.close()
                    raise Failure(f"connect #{started}: {os.strerror(err)}")
                sel.register(s, selectors.EVENT_WRITE, Conn(s))
                pending += 1
                started += 1
            if time.monotonic() > deadline:
                raise Failure(f"timed out: {len(done)} of {count} connections ready after {timeout} s")
            for key, _ in sel.select(timeout=1.0):
                c = key.data
                if c.state == "connect":
                    err = c.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                    if err:
                        fail(c, f"connect: {os.strerror(err)}"); pending -= 1; continue
                    n = c.sock.send(request)
                    if n != len(request):
                        fail(c, "short send"); pending -= 1; continue
                    c.state = "read"
                    sel.modify(c.sock, selectors.EVENT_READ, c)
                    continue
                try:
                    chunk = c.sock.recv(65536)
                except OSError as e:
                    fail(c, f"recv: {e}"); pending -= 1; continue
                if not chunk:
                    fail(c, f"server closed the connection before the full response ({len(c.buf)} bytes read)")
                    pending -= 1
                    continue
                c.buf += chunk
                if c.need is None:
                    end = c.buf.find(b"\r\n\r\n")
                    if end < 0:
                        continue
                    head = c.buf[:end].decode("latin-1")
                    lines = head.split("\r\n")
                    if not lines[0].startswith("HTTP/1.1 200"):
                        fail(c, f"status line {lines[0]!r}"); pending -= 1; continue
                    hdr = {}
                    for l in lines[1:]:
                        k, _, v = l.partition(":")
                        hdr[k.strip().lower()] = v.strip()
                    if "close" in hdr.get("connection", "").lower():
                        fail(c, "response has Connection: close"); pending -= 1; continue
                    if "content-length" not in hdr:
                        fail(c, "response has no Content-Length"); pending -= 1; continue
                    c.need = end + 4 + int(hdr["content-length"])
                if len(c.buf) > c.need:
                    fail(c, f"{len(c.buf) - c.need} bytes after the response"); pending -= 1; continue
                if len(c.buf) == c.need:
                    if not c.buf.endswith(SMALL):
                        fail(c, "wrong body"); pending -= 1; continue
                    sel.unregister(c.sock)
                    done.append(c.sock)
                    pending -= 1
        if errors:
            raise Failure(failures_summary(errors, count, "connections"))
        return done
    except BaseException:
        for k in list(sel.get_map().values()):
            k.fileobj.close()
        for s in done:
            s.close()
        raise
    finally:
        sel.close()



# ---- the measurement ------------------------------------------------------------------------

def measure(server, steps, args):
    """Returns a result dict for one server."""
    server.start()
    res = {"name": server.name, "steps": []}
    socks = []
    try:
        # Warm-up: one connection, one request, closed; first-request costs (file cache,
        # buffers) are not per-connection costs.
        for s in open_idle(server.port, 1, 1, 10):
            s.close()
        time.sleep(args.settle)
        server.check_alive()
        pid = server.rss_pid()
        base = proc_status(pid)
        base["Rss"] = smaps_rss(pid)
        base_fds = fd_count(pid)
        res["base"] = base
        log(f"{server.name}: baseline VmRSS {base['VmRSS']} kB (RssAnon {base.get('RssAnon', '?')} kB), {base_fds} fds")
        prev_n, prev_rss = 0, base["VmRSS"]
        for n in steps:
            t0 = time.monotonic()
            socks += open_idle(server.port, n - len(socks), args.inflight, args.open_timeout)
            took = time.monotonic() - t0
            time.sleep(args.settle)
            server.check_alive()
            st = proc_status(pid)
            st["Rss"] = smaps_rss(pid)
            fds = fd_count(pid)
            lost = readable_count(socks)
            per_conn = (st["VmRSS"] - base["VmRSS"]) * 1024 / n
            slope = (st["VmRSS"] - prev_rss) * 1024 / (n - prev_n)
            anon_per_conn = ((st.get("RssAnon", 0) - base.get("RssAnon", 0)) * 1024 / n) if "RssAnon" in st else None
            exact_per_conn = ((st["Rss"] - base["Rss"]) * 1024 / n) if st["Rss"] and base["Rss"] else None
            step = {"n": n, "rss": st["VmRSS"], "anon": st.get("RssAnon"), "fds": fds, "lost": lost,
                    "per_conn": per_conn, "slope": slope, "anon_per_conn": anon_per_conn,
                    "exact_per_conn": exact_per_conn, "open_s": took}
            res["steps"].append(step)
            log(f"{server.name}: {n:6d} idle connections (opened in {took:.1f} s): VmRSS {st['VmRSS']} kB, "
                f"+{per_conn:.0f} B/conn from baseline, +{slope:.0f} B/conn since previous step; "
                f"{fds - base_fds} more fds; {lost} closed by the server")
            if lost:
                raise Failure(f"{server.name} closed {lost} of {n} idle connections")
            if fds - base_fds < n:
                raise Failure(f"{server.name} holds {fds - base_fds} more fds than at baseline, expected ≥ {n}")
            prev_n, prev_rss = n, st["VmRSS"]
        for s in socks:
            s.close()
        socks = []
        time.sleep(args.settle)
        server.check_alive()
        st = proc_status(pid)
        res["after_close"] = {"rss": st["VmRSS"], "fds": fd_count(pid), "base_fds": base_fds}
        log(f"{server.name}: all closed: VmRSS {st['VmRSS']} kB, {res['after_close']['fds']} fds "
            f"(baseline {base_fds})")
        if res["after_close"]["fds"] != base_fds:
            raise Failure(f"{server.name} holds {res['after_close']['fds']} fds after the client closed "
                          f"everything, {base_fds} at baseline")
    except BaseException:
        for s in socks:
            s.close()
        server.stop()
        log(f"{server.name} log (beyond the start line):")
        for l in server.extra_log():
            log("  " + l)
        raise
    for s in socks:
        s.close()
    server.stop()
    res["log"] = server.extra_log()
    return res


def nginx_prealloc(args, root, tmp, nofile, big, big_res):
    """nginx allocates (and touches) its connection and event arrays for every
    worker_connections slot at start, so that memory is in its baseline rather than in
    the growth. Estimates it from the baseline of a second nginx with 512 slots."""
    small = Nginx(args.nginx_bin, root, tmp, 0, nofile, worker_connections=512, tag="nginx-512")
    log(f"nginx with worker_connections 512, to size the per-slot preallocation:")
    small.start()
    try:
        for s in open_idle(small.port, 1, 1, 10):
            s.close()
        time.sleep(args.settle)
        small.check_alive()
        rss = proc_status(small.worker)["VmRSS"]
    finally:
        small.stop()
    per_slot = (big_res["base"]["VmRSS"] - rss) * 1024 / (big.worker_connections - 512)
    log(f"nginx: baseline VmRSS {rss} kB with 512 slots, {big_res['base']['VmRSS']} kB with "
        f"{big.worker_connections}: {per_slot:.0f} B per slot")
    return per_slot



def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-n", "--connections", type=int, default=int(os.environ.get("N", "10000")),
                    help="idle connections in the last step (default $N or 10000)")
    ap.add_argument("--steps", default=os.environ.get("STEPS"),
                    help="comma-separated connection counts to measure at (default N/2,N)")
    ap.add_argument("--settle", type=float, default=float(os.environ.get("SETTLE", "2")),
                    help="seconds to wait before each measurement (default 2)")
    ap.add_argument("--inflight", type=int, default=256, help="connections being opened at once (default 256)")
    ap.add_argument("--open-timeout", type=float, default=120, help="seconds allowed to open one step (default 120)")
    ap.add_argument("--halley-bin", default=os.environ.get("HALLEY_BIN"),
                    help="halley binary (default: build, then .build/release/halley)")
    ap.add_argument("--no-build", action="store_true", default=bool(os.environ.get("NO_BUILD")),
                    help="do not run `swift build -c release`")
    ap.add_argument("--nginx-bin", default=os.environ.get("NGINX_BIN", "nginx"))
    ap.add_argument("--no-nginx", action="store_true", help="measure halley only")
    ap.add_argument("--enforce", action="store_true",
                    help=f"exit 3 when halley grows by {GOAL_BYTES} B or more per connection")
    ap.add_argument("--keep-tmp", action="store_true", default=bool(os.environ.get("KEEP_TMP")))
    args = ap.parse_args()

    n = args.connections
    steps = sorted({int(x) for x in args.steps.split(",")}) if args.steps else sorted({max(1, n // 2), n})
    if steps[0] < 1:
        raise Failure("steps must be ≥ 1")
    n = steps[-1]

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < n + 200:
        raise Failure(f"RLIMIT_NOFILE is {soft} (hard {hard}): too low for {n} connections plus the server's own")
    lo, hi = map(int, open("/proc/sys/net/ipv4/ip_local_port_range").read().split())
    if hi - lo + 1 < n + 100:
        raise Failure(f"ip_local_port_range {lo}-{hi} has too few ports for {n} connections")

    if args.halley_bin is None:
        build(args.no_build)
        args.halley_bin = os.path.join(REPO, ".build", "release", "halley")
    if not os.access(args.halley_bin, os.X_OK):
        raise Failure(f"no halley binary at {args.halley_bin}")
    if not args.no_nginx and shutil.which(args.nginx_bin) is None:
        raise Failure(f"{args.nginx_bin} not found (apt-get install -y nginx-light), or pass --no-nginx")

    def git(*a):
        r = subprocess.run(["git", "-C", REPO, *a], capture_output=True, text=True)
        return r.stdout.strip() if r.returncode == 0 else "?"
    dirty = subprocess.run(["git", "-C", REPO, "diff", "--quiet", "--", "Sources"]).returncode != 0
    log("==> environment")
    log(f"host:    {' '.join(os.uname()[i] for i in (0, 2, 4))}, {os.cpu_count()} cores")
    log(f"halley:  {args.halley_bin} (git {git('rev-parse', '--short', 'HEAD')}{', Sources modified' if dirty else ''})")
    if not args.no_nginx:
        log(f"nginx:   {version([args.nginx_bin, '-v'])}")
    log(f"python:  {sys.version.split()[0]}; RLIMIT_NOFILE {soft}; ports {lo}-{hi}")
    log(f"steps:   {', '.join(map(str, steps))} connections; settle {args.settle} s; {args.inflight} opening at once")

    tmp = tempfile.mkdtemp(prefix="halley-bench-idle.")
    os.chmod(tmp, 0o755)
    results = []
    try:
        root = os.path.join(tmp, "root")
        os.makedirs(root)
        with open(os.path.join(root, "small.txt"), "wb") as f:
            f.write(SMALL)
        os.chmod(root, 0o755)
        servers = [Halley(args.halley_bin, root, tmp)]
        if not args.no_nginx:
            servers.append(Nginx(args.nginx_bin, root, tmp, n, soft))
        for srv in servers:
            log(f"\n==> {srv.name}")
            results.append(measure(srv, steps, args))
            if isinstance(srv, Nginx):
                results[-1]["prealloc"] = nginx_prealloc(args, root, tmp, soft, srv, results[-1])
            extra = results[-1]["log"]
            log(f"{srv.name} log (beyond the start line): " + ("(nothing)" if not extra else ""))
            for l in extra:
                log("  " + l)
    finally:
        if args.keep_tmp:
            log(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)

    log("")
    log("=== summary: RSS growth per idle keep-alive connection, from the baseline after one request ===")
    log("B/conn and slope from VmRSS (slope: since the previous step); anon: RssAnon; smaps: Rss of")
    log("/proc/PID/smaps_rollup (exact). Kernel socket memory is not in any of them.")
    log(f"{'server':<8} {'conns':>7} {'VmRSS kB':>10} {'B/conn':>8} {'anon B/conn':>12} {'slope B/conn':>13} {'smaps B/conn':>13}")
    for r in results:
        log(f"{r['name']:<8} {0:>7} {r['base']['VmRSS']:>10}   (baseline)")
        for s in r["steps"]:
            anon = f"{s['anon_per_conn']:.0f}" if s["anon_per_conn"] is not None else "?"
            exact = f"{s['exact_per_conn']:.0f}" if s["exact_per_conn"] is not None else "?"
            log(f"{r['name']:<8} {s['n']:>7} {s['rss']:>10} {s['per_conn']:>8.0f} {anon:>12} {s['slope']:>13.0f} {exact:>13}")
        a = r["after_close"]
        log(f"{r['name']:<8} {'closed':>7} {a['rss']:>10}   fds {a['fds']} (baseline {a['base_fds']})")
    for r in results:
        if "prealloc" in r:
            log(f"{r['name']}: another ~{r['prealloc']:.0f} B per connection slot is preallocated at start "
                f"(in the baseline, not above): ~{r['steps'][-1]['per_conn'] + r['prealloc']:.0f} B per connection in all")
    h = results[0]["steps"][-1]["per_conn"]
    met = h < GOAL_BYTES
    log(f"goal: halley < {GOAL_BYTES} B per connection at {steps[-1]}: {h:.0f} B -> {'met' if met else 'NOT met'}")
    if args.enforce and not met:
        return 3
    return 0


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # unwinds: servers stopped, tmp removed
    try:
        sys.exit(main())
    except Failure as e:
        print(f"idle_http: error: {e}", file=sys.stderr, flush=True)
        sys.exit(1)
    except KeyboardInterrupt:
        sys.exit(130)
