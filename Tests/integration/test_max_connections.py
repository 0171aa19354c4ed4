"""--max-connections: at the limit the listener pauses (newcomers wait in the kernel backlog)
and resumes when a connection closes; the listener is never lost."""

from __future__ import annotations

import time

import pytest

from halley_client import Client, assert_no_data, connect, parse_metrics
from public_tree import FILES, assert_serving


def open_client(port, path="/one.txt") -> Client:
    c = Client(connect(port))
    c.send_request("GET", path)
    r = c.read_response()
    assert r.status == 200
    return c


def test_connection_limit_queues_and_resumes(start_halley):
    h = start_halley("--max-connections", "5", threads=1)
    clients = [open_client(h.port) for _ in range(5)]

    # The sixth connects (kernel backlog) but is not served while five are open.
    sixth = Client(connect(h.port))
    sixth.send_request("GET", "/two.txt")
    assert_no_data(sixth.sock, 1.0)
    assert h.wait_for_log(r"connection limit 5", timeout=1)

    # The five still work meanwhile.
    for c in clients:
        c.send_request("GET", "/three.txt")
        assert c.read_response().body == FILES["three.txt"]

    # One closes: the sixth is accepted and answered.
    clients.pop(0).sock.close()
    t0 = time.monotonic()
    r = sixth.read_response()
    assert r.status == 200 and r.body == FILES["two.txt"]
    assert time.monotonic() - t0 < 2.5
    clients.append(sixth)

    # At the limit again: a seventh waits, then gets in when another leaves.
    seventh = Client(connect(h.port))
    seventh.send_request("GET", "/four.txt")
    assert_no_data(seventh.sock, 0.5)
    clients.pop(0).sock.close()
    assert seventh.read_response().body == FILES["four.txt"]
    clients.append(seventh)

    # Everyone leaves: the listener serves normally again.
    for c in clients:
        c.sock.close()
    for _ in range(10):
        assert_serving(h)


def test_limit_across_two_loops(start_halley):
    h = start_halley("--max-connections", "4", threads=2)
    clients = [open_client(h.port) for _ in range(4)]
    waiting = [Client(connect(h.port)) for _ in range(3)]
    for w in waiting:
        w.send_request("GET", "/one.txt")
    for w in waiting:
        assert_no_data(w.sock, 0.3)
    for c in clients:
        c.sock.close()
    # Every waiting client is served within the loops' once-a-second resume.
    for w in waiting:
        assert w.read_response().body == FILES["one.txt"]
        w.sock.close()
    assert_serving(h)


def test_reaching_the_limit_is_not_a_breach(start_halley):
    """halley_limit_breaches_total{kind="connections"} counts connections that had to wait.
    Filling the hub exactly to its limit refuses nobody."""
    h = start_halley("--max-connections", "3", "--metrics-port", "0", threads=1)
    clients = [open_client(h.port) for _ in range(2)]
    # The metrics connection is the third: the limit is reached, not exceeded.
    with connect(h.metrics_port) as s:
        m = Client(s)
        m.send_request("GET", "/metrics")
        first = parse_metrics(m.read_response().body.decode())
    assert first['halley_limit_breaches_total{kind="connections"}'] == 0, (
        "a connection breach was counted although no connection waited"
    )
    for c in clients:
        c.sock.close()


def test_breach_is_counted_when_a_connection_waits(start_halley):
    h = start_halley("--max-connections", "2", "--metrics-port", "0", threads=1)
    clients = [open_client(h.port) for _ in range(2)]
    waiting = Client(connect(h.port))
    waiting.send_request("GET", "/one.txt")
    assert_no_data(waiting.sock, 0.5)
    for c in clients:
        c.sock.close()
    assert waiting.read_response().status == 200
    waiting.sock.close()
    time.sleep(0.1)
    with connect(h.metrics_port) as s:
        m = Client(s)
        m.send_request("GET", "/metrics")
        values = parse_metrics(m.read_response().body.decode())
    assert values['halley_limit_breaches_total{kind="connections"}'] >= 1
