"""What the benchmark scripts share: process inspection (/proc), building, versions, and the
idle-connection helpers of idle_http.py, ws_idle.py and session_idle.py."""

from __future__ import annotations

import ctypes
import os
import re
import selectors
import signal
import socket
import subprocess
import time

REPO = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))


class Failure(Exception):
    pass


def log(msg=""):
    print(msg, flush=True)


def proc_status(pid):
    """VmRSS, RssAnon, RssFile, VmData in kB."""
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            k, _, v = line.partition(":")
            if k in ("VmRSS", "RssAnon", "RssFile", "VmHWM", "VmData"):
                out[k] = int(v.split()[0])
    return out


def smaps_rss(pid):
    """Rss in kB from /proc/PID/smaps_rollup: counted from the page tables, exact, where
    VmRSS is a (per-CPU batched) counter; None when unavailable."""
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Rss:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def fd_count(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


def die_with_parent():
    """preexec_fn: the server gets SIGTERM if this script dies, however it dies."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(1, signal.SIGTERM, 0, 0, 0)  # PR_SET_PDEATHSIG


def build(no_build):
    if no_build:
        return
    log(f"building: (cd {REPO} && swift build -c release)")
    r = subprocess.run(["swift", "build", "-c", "release"], cwd=REPO, capture_output=True, text=True)
    if r.returncode != 0:
        raise Failure("swift build failed:\n" + r.stdout[-3000:] + r.stderr[-3000:])
    log("\n".join(r.stdout.strip().splitlines()[-1:]))


def version(cmd):
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=10)
        return (r.stdout + r.stderr).strip().splitlines()[0]
    except (OSError, IndexError, subprocess.TimeoutExpired):
        return "?"


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def readable_count(socks):
    """How many idle sockets are readable now: the server closed them (EOF, reset) or sent
    something."""
    sel = selectors.DefaultSelector()
    for s in socks:
        sel.register(s, selectors.EVENT_READ)
    try:
        return len(sel.select(timeout=0))
    finally:
        sel.close()


def failures_summary(errors, count, what):
    """One line for the connections that failed to open: the most common reasons first."""
    first = {}
    for e in errors:
        first[e] = first.get(e, 0) + 1
    return f"{len(errors)} of {count} {what} failed: " + "; ".join(f"{n} x {e}" for e, n in list(first.items())[:5])


class ServerProcess:
    """A server under test, started by `launch`: its log file, the port it prints, its stop.
    Subclasses set `name`, `log_path` and `normal` (log lines that are not news)."""
    name = "?"
    proc = None
    port = None
    log_path = None
    normal = ()

    def check_alive(self):
        if self.proc.poll() is not None:
            raise Failure(f"{self.name} exited (status {self.proc.returncode}); log:\n{self.log_text()}")

    def stop(self):
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            log(f"{self.name} (pid {self.proc.pid}) ignored SIGTERM for 10 s: SIGKILL")
            self.proc.kill()
            self.proc.wait()

    def log_text(self):
        with open(self.log_path, errors="replace") as f:
            return f.read()

    def extra_log(self):
        return [l for l in self.log_text().splitlines() if l.strip() and not any(x in l for x in self.normal)]

    def launch(self, cmd, pattern, env=None):
        """Starts `cmd` with its output in the log and waits (10 s) for a line matching
        `pattern`, whose group 1 is the port and group 2 a description."""
        log(f"{self.name}: " + " ".join(cmd))
        self.logf = open(self.log_path, "wb")
        self.proc = subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL, stdout=self.logf, stderr=self.logf,
                                     preexec_fn=die_with_parent)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            m = re.search(pattern, self.log_text())
            if m:
                self.port = int(m.group(1))
                log(f"{self.name} pid {self.proc.pid}, port {self.port} ({m.group(2)})")
                return
            self.check_alive()
            time.sleep(0.05)
        raise Failure(f"{self.name} did not print its port within 10 s:\n" + self.log_text())
