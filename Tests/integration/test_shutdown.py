"""Graceful shutdown on SIGTERM: responses in flight finish, new connections are refused,
idle connections close at once, and the process exits 0 within the grace period."""

from __future__ import annotations

import signal
import socket
import threading
import time

import h11

from halley_client import HOST, Client, ClosedEarly, connect, read_until_close, sha256
from public_tree import FILES

SMALL = ["/one.txt", "/two.txt", "/three.txt", "/four.txt", "/data.json", "/medium.bin", "/index.html"]


def refused_or_unanswered(port) -> bool:
    """True when a new connection is refused, reset, or closed without any response."""
    try:
        s = socket.create_connection((HOST, port), timeout=2)
    except (ConnectionRefusedError, ConnectionResetError):
        return True
    with s:
        try:
            s.sendall(b"GET /one.txt HTTP/1.1\r\nHost: h\r\n\r\n")
            s.settimeout(2)
            return s.recv(100) == b""
        except (ConnectionResetError, BrokenPipeError):
            return True
        except socket.timeout:
            return False


def test_download_in_flight_completes(start_halley):
    h = start_halley()
    data = FILES["huge.bin"]
    result = {}

    def download():
        try:
            with connect(h.port, timeout=15, rcvbuf=65536) as s:
                c = Client(s, recv_size=65536, recv_delay=0.01)
                c.send_request("GET", "/huge.bin")
                r = c.read_response()
                result["response"] = r
                result["closed"] = read_until_close(s, timeout=5) == b""
        except Exception as e:
            result["error"] = e

    t = threading.Thread(target=download, daemon=True)
    t.start()
    time.sleep(0.7)  # some megabytes in
    assert t.is_alive(), result
    mark = h.log_mark()
    t_sig = time.monotonic()
    h.signal(signal.SIGTERM)
    assert h.wait_for_log(r"SIGTERM", start=mark, timeout=2)
    time.sleep(0.2)
    # New connections are refused while the download goes on.
    assert refused_or_unanswered(h.port), "a new connection was served during shutdown"
    assert t.is_alive(), "the download ended early"
    t.join(20)
    assert "error" not in result, result.get("error")
    r = result["response"]
    assert r.status == 200
    assert len(r.body) == len(data)
    assert sha256(r.body) == sha256(data)
    assert result["closed"], "the connection stayed open after the last response"
    rc = h.wait_exit(timeout=10)
    assert rc == 0
    assert time.monotonic() - t_sig < 10, "exit took longer than the grace period"
    assert h.wait_for_log(r"halley stopped", start=mark, timeout=1)


def test_idle_connections_close_at_once(start_halley):
    h = start_halley()
    idle = []
    for _ in range(3):
        c = Client(connect(h.port))
        c.send_request("GET", "/one.txt")
        c.read_response()
        idle.append(c)
    fresh = [connect(h.port) for _ in range(2)]  # never sent anything
    time.sleep(0.1)
    t0 = time.monotonic()
    h.signal(signal.SIGTERM)
    for c in idle:
        c.assert_closed(timeout=2)
    for s in fresh:
        assert read_until_close(s, timeout=2) == b""
    assert h.wait_exit(timeout=3) == 0
    assert time.monotonic() - t0 < 2, "idle connections held the shutdown"
    for s in fresh:
        s.close()


def test_grace_period_ends_a_stuck_download(start_halley):
    h = start_halley("--shutdown-grace", "1")
    s = connect(h.port, rcvbuf=16384)
    c = Client(s)
    c.send_request("GET", "/huge.bin")
    time.sleep(0.2)  # the server is blocked writing; the client never reads
    t0 = time.monotonic()
    h.signal(signal.SIGTERM)
    rc = h.wait_exit(timeout=5)
    took = time.monotonic() - t0
    assert rc == 0
    assert 0.8 <= took < 3.5, f"exited {took:.2f} s after SIGTERM with --shutdown-grace 1"
    data = read_until_close(s, timeout=5)
    assert len(data) < len(FILES["huge.bin"])
    s.close()


def test_second_signal_exits_at_once(start_halley):
    h = start_halley()
    s = connect(h.port, rcvbuf=16384)
    c = Client(s)
    c.send_request("GET", "/huge.bin")
    time.sleep(0.2)
    h.signal(signal.SIGTERM)
    assert h.wait_for_log(r"SIGTERM", timeout=2)
    time.sleep(0.1)
    t0 = time.monotonic()
    h.signal(signal.SIGINT)
    rc = h.wait_exit(timeout=3)
    assert rc == 1, rc
    assert time.monotonic() - t0 < 2
    h.returncode = 0  # expected: tell the fixture not to complain
    s.close()


def hammer(port, stop_at, stats, lock, idx):
    """Keep-alive requests for small files until the server closes or refuses. Every
    response that began to arrive must be complete and correct."""
    n = 0
    while True:
        try:
            s = connect(port, timeout=5)
        except (ConnectionRefusedError, ConnectionResetError, socket.timeout):
            with lock:
                stats["refused"] += 1
            return
        with s:
            c = Client(s)
            while True:
                path = SMALL[(n + idx) % len(SMALL)]
                n += 1
                try:
                    c.send_request("GET", path)
                except (BrokenPipeError, ConnectionResetError):
                    with lock:
                        stats["unanswered"] += 1
                    break
                except h11.LocalProtocolError:
                    break  # the previous response said Connection: close
                try:
                    r = c.read_response()
                except ClosedEarly as e:
                    with lock:
                        if e.partial:
                            stats["truncated"].append((path, str(e)))
                        else:
                            stats["unanswered"] += 1
                    break
                except (h11.RemoteProtocolError, socket.timeout) as e:
                    with lock:
                        stats["truncated"].append((path, repr(e)))
                    break
                with lock:
                    if r.status != 200 or r.body != FILES[path.lstrip("/")]:
                        stats["wrong"].append((path, r.status, len(r.body)))
                    else:
                        stats["ok"] += 1
                    if time.monotonic() > stop_at:
                        stats["late"] += 1
                if "close" in r.connection_tokens:
                    with lock:
                        stats["closed_by_header"] += 1
                    break
        if time.monotonic() > stop_at + 10:
            return


def test_busy_clients_get_complete_responses(start_halley):
    h = start_halley()
    stats = {"ok": 0, "refused": 0, "unanswered": 0, "late": 0, "closed_by_header": 0, "truncated": [], "wrong": []}
    lock = threading.Lock()
    threads = [
        threading.Thread(target=hammer, args=(h.port, time.monotonic() + 20, stats, lock, i), daemon=True)
        for i in range(8)
    ]
    for t in threads:
        t.start()
    time.sleep(0.8)
    with lock:
        assert stats["ok"] > 50, stats
    t_sig = time.monotonic()
    h.signal(signal.SIGTERM)
    for t in threads:
        t.join(15)
    assert not any(t.is_alive() for t in threads), "a client thread hung"
    assert stats["truncated"] == [], stats["truncated"][:5]
    assert stats["wrong"] == [], stats["wrong"][:5]
    assert stats["refused"] >= 1, stats
    assert h.wait_exit(timeout=10) == 0
    assert time.monotonic() - t_sig < 10


def test_request_completed_during_shutdown_is_answered(start_halley):
    h = start_halley()
    with connect(h.port) as s:
        c = Client(s)
        c.send_raw(b"GET /one.txt HTTP/1.1\r\nHost: halley.test\r\n")  # head not finished
        time.sleep(0.2)
        h.signal(signal.SIGTERM)
        assert h.wait_for_log(r"SIGTERM", timeout=2)
        time.sleep(0.2)
        c.send_raw(b"\r\n")
        r = c.read_response("GET")
        assert r.status == 200 and r.body == FILES["one.txt"]
        assert "close" in r.connection_tokens
        c.assert_closed()
    assert h.wait_exit(timeout=5) == 0


def test_sighup_does_not_stop_and_sigint_stops_gracefully(start_halley):
    h = start_halley()
    mark = h.log_mark()
    h.signal(signal.SIGHUP)
    assert h.wait_for_log(r"SIGHUP", start=mark, timeout=2)
    assert h.get("/one.txt").body == FILES["one.txt"]
    assert h.alive()
    h.signal(signal.SIGINT)
    assert h.wait_exit(timeout=5) == 0
    assert h.wait_for_log(r"SIGINT: stopping", start=mark, timeout=1)
