"""What the benchmark scripts share: process inspection (/proc), building, versions, and the
idle-connection helpers of idle_http.py, ws_idle.py and session_idle.py."""

from __future__ import annotations

import ctypes
import os
import selectors
import signal
import socket
import subprocess

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
