"""Deadlines: slowloris heads (408), stalled bodies (408), idle connections (closed quietly),
blocked writes (closed), with timeouts of one or two seconds so that the suite stays fast.

The server checks deadlines in a once-a-second sweep, so a deadline of N seconds may be
reached up to about one second late, never early."""

from __future__ import annotations

import socket
import threading
import time

import pytest

from halley_client import Client, Halley, connect, parse_metrics, read_until_close, sha256
from public_tree import FILES, assert_serving

HEADER_TIMEOUT = 1
BODY_TIMEOUT = 2
KEEPALIVE_TIMEOUT = 2
SEND_TIMEOUT = 1


@pytest.fixture(scope="module")
def fast(public_root):
    h = Halley(
        public_root,
        [
            "--header-timeout", HEADER_TIMEOUT,
            "--body-timeout", BODY_TIMEOUT,
            "--keepalive-timeout", KEEPALIVE_TIMEOUT,
            "--send-timeout", SEND_TIMEOUT,
            "--metrics-port", "0",
        ],
    )
    yield h
    rc = h.stop()
    assert rc == 0, h.log_text()


def read_408(c: Client, t0: float, limit: float):
    r = c.read_response("GET")
    elapsed = time.monotonic() - t0
    assert r.status == 408
    assert "close" in r.connection_tokens
    c.assert_closed(timeout=1)
    assert elapsed < limit, f"408 after {elapsed:.2f} s"
    return elapsed


def metrics(h):
    return parse_metrics(h.get("/metrics", port=h.metrics_port).body.decode())


# ---- header timeout (slowloris)


def test_partial_head_gets_408(fast):
    mark = fast.log_mark()
    before = metrics(fast)
    with connect(fast.port) as s:
        c = Client(s)
        t0 = time.monotonic()
        c.send_raw(b"GET /one.txt HTTP/1.1\r\nHost: halley.test\r\nX-Slow: ")
        read_408(c, t0, HEADER_TIMEOUT + 2)
    assert fast.wait_for_log(r"408 header", start=mark, timeout=1)
    after = metrics(fast)
    key = 'halley_limit_breaches_total{kind="header_timeout"}'
    assert after[key] - before[key] == 1
    assert after['halley_http_requests_total{class="4xx"}'] - before['halley_http_requests_total{class="4xx"}'] == 1
    assert_serving(fast)


def test_trickled_head_gets_408(fast):
    # Sending a byte now and then does not extend the header deadline.
    req = b"GET /one.txt HTTP/1.1\r\nHost: halley.test\r\n" + b"X-Drip: " + b"d" * 100
    with connect(fast.port) as s:
        c = Client(s)
        t0 = time.monotonic()
        i = 0
        got = None
        while time.monotonic() - t0 < HEADER_TIMEOUT + 3 and i < len(req):
            try:
                s.sendall(req[i : i + 1])
            except (BrokenPipeError, ConnectionResetError):
                break
            i += 1
            try:
                s.settimeout(0.2)
                got = s.recv(65536)
                break
            except TimeoutError:
                continue
            finally:
                s.settimeout(5)
        assert got, "no response while trickling the head"
        c.conn.receive_data(got)
        read_408(c, t0, HEADER_TIMEOUT + 2.5)


def test_partial_second_request_gets_408(fast):
    # Sent together with the first request, so that no idle gap (keep-alive timeout) comes
    # between them.
    with connect(fast.port) as s:
        c = Client(s)
        t0 = time.monotonic()
        c.send_raw(b"GET /one.txt HTTP/1.1\r\nHost: h\r\n\r\nGET /two.txt HTTP/1.1\r\n")
        assert c.read_response("GET").body == FILES["one.txt"]
        read_408(c, t0, HEADER_TIMEOUT + 2)


def test_fresh_idle_connection_closed_quietly(fast):
    mark = fast.log_mark()
    with connect(fast.port) as s:
        t0 = time.monotonic()
        data = read_until_close(s, timeout=KEEPALIVE_TIMEOUT + 2.5)
        assert data == b"", f"an idle connection got {data!r}"
        assert time.monotonic() - t0 < KEEPALIVE_TIMEOUT + 2.5
    time.sleep(0.1)
    assert not [l for l in fast.lines_since(mark) if "408" in l], "a 408 was logged for an idle connection"


def test_idle_keepalive_closed_quietly_after_a_response(fast):
    with connect(fast.port) as s:
        c = Client(s)
        c.send_request("GET", "/two.txt")
        assert c.read_response().body == FILES["two.txt"]
        t0 = time.monotonic()
        c.assert_closed(timeout=KEEPALIVE_TIMEOUT + 2.5)
        assert time.monotonic() - t0 < KEEPALIVE_TIMEOUT + 2.5


def test_empty_lines_do_not_keep_a_connection_open(fast):
    # Empty lines before a request are skipped (RFC 9112 §2.2), but dripping them must not
    # hold a connection open past the header and keep-alive timeouts.
    with connect(fast.port) as s:
        t0 = time.monotonic()
        ended = None
        while time.monotonic() - t0 < HEADER_TIMEOUT + KEEPALIVE_TIMEOUT + 1:
            try:
                s.sendall(b"\r\n")
                s.settimeout(0.3)
                data = s.recv(65536)
            except socket.timeout:
                continue
            except (BrokenPipeError, ConnectionResetError):
                ended = b""
                break
            ended = data
            break
        assert ended is not None, (
            f"connection still open after dripping empty lines for {time.monotonic() - t0:.1f} s "
            f"(--header-timeout {HEADER_TIMEOUT}, --keepalive-timeout {KEEPALIVE_TIMEOUT})"
        )
        if ended:
            c = Client(s)
            c.conn.receive_data(ended)
            r = c.read_response("GET")
            assert r.status in (400, 408)


# ---- body timeout


def _stall(port, head_and_some_body, results, key):
    try:
        with connect(port) as s:
            c = Client(s)
            c.send_raw(head_and_some_body)
            t0 = time.monotonic()
            results[key] = read_408(c, t0, BODY_TIMEOUT + 2)
    except Exception as e:
        results[key] = e


def test_stalled_bodies_get_408(fast):
    """A Content-Length body and a chunked body stall, at the same time."""
    mark = fast.log_mark()
    before = metrics(fast)
    results = {}
    threads = [
        threading.Thread(target=_stall, args=(fast.port, data, results, key), daemon=True)
        for key, data in (
            ("length", b"POST /one.txt HTTP/1.1\r\nHost: h\r\nContent-Length: 100\r\n\r\n" + b"0123456789"),
            ("chunked", b"POST /one.txt HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n10\r\nhalf"),
        )
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(BODY_TIMEOUT + 5)
    for key in ("length", "chunked"):
        assert not isinstance(results.get(key), Exception), (key, results.get(key))
        assert results.get(key) is not None, key
    assert fast.wait_for_log(r"408 body", start=mark, timeout=1)
    after = metrics(fast)
    assert after['halley_limit_breaches_total{kind="body_timeout"}'] - before['halley_limit_breaches_total{kind="body_timeout"}'] == 2


def test_slow_but_steady_body_is_not_timed_out(fast):
    # The body deadline is a stall limit: a byte every 0.3 s for 3 s (longer than the body
    # timeout in total) is fine.
    with connect(fast.port) as s:
        c = Client(s)
        c.send_raw(b"POST /one.txt HTTP/1.1\r\nHost: h\r\nContent-Length: 9\r\n\r\n")
        for _ in range(9):
            time.sleep(0.25)
            c.send_raw(b"x")
        r = c.read_response("POST")
        assert r.status == 405


# ---- deadlines are not shorter than configured


def _time_to_408(port, offset, results, i, kind):
    try:
        time.sleep(offset)
        with connect(port) as s:
            c = Client(s)
            if kind == "header":
                t0 = time.monotonic()
                c.send_raw(b"GET /one.txt HTTP/1.1\r\nHost: h\r\n")
                r = c.read_response("GET")
                results[i] = (time.monotonic() - t0, r.status)
            elif kind == "body":
                c.send_raw(b"POST /one.txt HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nab")
                t0 = time.monotonic()
                r = c.read_response("POST")
                results[i] = (time.monotonic() - t0, r.status)
            else:  # keep-alive
                c.send_request("GET", "/one.txt")
                c.read_response()
                t0 = time.monotonic()
                rest = read_until_close(s, timeout=5)
                results[i] = (time.monotonic() - t0, rest)
    except Exception as e:  # reported by the test
        results[i] = e


@pytest.mark.parametrize(
    "kind, timeout", [("header", HEADER_TIMEOUT), ("keepalive", KEEPALIVE_TIMEOUT), ("body", BODY_TIMEOUT)]
)
def test_deadlines_are_not_early(fast, kind, timeout):
    """Three connections started a third of a second apart, so that they fall at different
    phases of the server's once-a-second sweep: none may time out before its deadline."""
    results = [None] * 3
    threads = [
        threading.Thread(target=_time_to_408, args=(fast.port, i / 3, results, i, kind), daemon=True) for i in range(3)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout + 6)
    for r in results:
        assert not isinstance(r, Exception), r
        assert r is not None, "no result"
    elapsed = sorted(round(r[0], 2) for r in results)
    assert all(e >= timeout - 0.1 for e in elapsed), (
        f"--{kind}-timeout {timeout}: connections timed out after {elapsed} s"
    )
    assert all(e <= timeout + 1.5 for e in elapsed), elapsed


# ---- send timeout


def test_blocked_write_is_closed_after_send_timeout(fast):
    mark = fast.log_mark()
    with connect(fast.port, rcvbuf=16384) as s:
        c = Client(s)
        c.send_request("GET", "/big.bin")
        assert fast.wait_for_log(r"send timeout", start=mark, timeout=SEND_TIMEOUT + 3), "no send timeout"
        data = read_until_close(s, timeout=5)
        assert len(data) < len(FILES["big.bin"])
    assert_serving(fast)


# ---- keep-alive idleness starts when a response has been written, not when it began


def test_keepalive_idle_time_counts_from_the_end_of_a_long_response(start_halley):
    h = start_halley("--keepalive-timeout", "3")
    data = FILES["huge.bin"]
    with connect(h.port, timeout=10, rcvbuf=65536) as s:
        c = Client(s, recv_size=65536, recv_delay=0.01)
        c.send_request("GET", "/huge.bin")
        t0 = time.monotonic()
        r = c.read_response()
        took = time.monotonic() - t0
        assert sha256(r.body) == sha256(data)
        assert took > 2.5, f"download too fast ({took:.1f} s) to test this"
        # Idle for 1 s: well under the 3 s keep-alive timeout.
        c.recv_delay = 0
        time.sleep(1.0)
        c.send_request("GET", "/one.txt")
        try:
            r2 = c.read_response()
        except AssertionError as e:
            raise AssertionError(
                f"connection closed after 1 s of idleness (--keepalive-timeout 3) following a {took:.1f} s download: {e}"
            ) from None
        assert r2.body == FILES["one.txt"]
