"""GET /metrics on --metrics-port: Prometheus text, and counters that follow the traffic."""

from __future__ import annotations

import os
import re
import time

import pytest

from prometheus_client.parser import text_string_to_metric_families

from halley_client import Client, connect, parse_metrics
from hub_client import WS, publish

README = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "README.md")

FAMILIES = {
    "halley_connections_open": "gauge",
    "halley_connections_accepted_total": "counter",
    "halley_http_requests_total": "counter",
    "halley_bytes_in_total": "counter",
    "halley_bytes_out_total": "counter",
    "halley_limit_breaches_total": "counter",
    "halley_http_bad_requests_total": "counter",
}

REQ = 'halley_http_requests_total{class="%s"}'
BREACH = 'halley_limit_breaches_total{kind="%s"}'


def scrape(h):
    r = h.get("/metrics", port=h.metrics_port)
    assert r.status == 200
    return parse_metrics(r.body.decode())


def test_metrics_format(halley):
    r = halley.get("/metrics", port=halley.metrics_port)
    assert r.status == 200
    assert r.header("content-type") == "text/plain; version=0.0.4; charset=utf-8"
    text = r.body.decode()
    assert text.endswith("\n")
    for name, kind in FAMILIES.items():
        assert f"# TYPE {name} {kind}\n" in text, name
        assert re.search(rf"^# HELP {name} \S", text, re.M), name
    # The Prometheus project's own parser reads all of it.
    assert list(text_string_to_metric_families(text))
    values = parse_metrics(text)
    for cls in ("1xx", "2xx", "3xx", "4xx", "5xx"):
        assert REQ % cls in values
    for kind in ("request_line", "headers", "body", "header_timeout", "body_timeout", "connections"):
        assert BREACH % kind in values
    assert values["halley_connections_open"] >= 1  # this scrape's own connection


def test_head_and_other_methods_on_metrics(halley):
    head = halley.get("/metrics", method="HEAD", port=halley.metrics_port)
    assert head.status == 200 and head.body == b""
    assert int(head.header("content-length")) > 100
    post = halley.get("/metrics", method="POST", port=halley.metrics_port)
    assert post.status == 405
    assert post.header("allow") == "GET, HEAD"


def test_routes_are_separate(halley):
    # /metrics is not on the main port (a static path: 404) ...
    assert halley.get("/metrics").status == 404
    # ... and static files are not on the metrics port.
    for path in ("/", "/index.html", "/one.txt", "/metrics/", "/metrics.txt"):
        assert halley.get(path, port=halley.metrics_port).status == 404, path


def send_raw(port, data):
    with connect(port) as s:
        c = Client(s)
        c.send_raw(data)
        return c.read_response("GET")


def test_counters_follow_the_traffic(halley):
    before = scrape(halley)
    # 2 x 2xx on one connection
    with connect(halley.port) as s:
        c = Client(s)
        for path in ("/one.txt", "/two.txt"):
            c.send_request("GET", path)
            assert c.read_response().status == 200
    # 3xx, 4xx
    assert halley.get("/sub").status == 301
    assert halley.get("/nope").status == 404
    # limit breaches and a malformed request
    assert send_raw(halley.port, b"GET / HTTP/1.1\r\nHost: h\r\n" + b"".join(b"X-%d: v\r\n" % i for i in range(120)) + b"\r\n").status == 431
    assert send_raw(halley.port, b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: h\r\n\r\n").status == 414
    assert send_raw(halley.port, b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 99999999\r\n\r\n").status == 413
    assert send_raw(halley.port, b"GET / HTTP/1.1\r\n\r\n").status == 400
    assert send_raw(halley.port, b"GET / HTTP/2.0\r\nHost: h\r\n\r\n").status == 505
    # 1xx
    with connect(halley.port) as s:
        c = Client(s)
        c.send_raw(b"POST /one.txt HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\nExpect: 100-continue\r\n\r\n")
        c.expect("POST")
        assert c.read_informational().status_code == 100
        c.send_raw(b"ok")
        assert c.read_response().status == 405
    time.sleep(0.05)
    after = scrape(halley)

    def d(key):
        return after[key] - before[key]

    assert d(REQ % "1xx") == 1
    assert d(REQ % "2xx") == 2 + 1  # plus the first scrape's own response
    assert d(REQ % "3xx") == 1
    assert d(REQ % "4xx") == 1 + 1 + 1 + 1 + 1 + 1  # 404, 431, 414, 413, 400, 405
    assert d(REQ % "5xx") == 1  # 505
    assert d(BREACH % "headers") == 1
    assert d(BREACH % "request_line") == 1
    assert d(BREACH % "body") == 1
    assert d("halley_http_bad_requests_total") == 2  # 400, 505
    assert d("halley_connections_accepted_total") == 10  # 9 here + the first scrape
    assert d("halley_bytes_in_total") > 9000 + 120 * 8
    assert d("halley_bytes_out_total") > 0


def test_bytes_out_counts_large_files(halley):
    before = scrape(halley)
    r = halley.get("/big.bin", timeout=15)
    assert r.status == 200
    after = scrape(halley)
    assert after["halley_bytes_out_total"] - before["halley_bytes_out_total"] >= len(r.body)


def test_open_connections_gauge(halley):
    base = scrape(halley)["halley_connections_open"]
    socks = [connect(halley.port) for _ in range(3)]
    try:
        deadline = time.monotonic() + 3
        while scrape(halley)["halley_connections_open"] != base + 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert scrape(halley)["halley_connections_open"] == base + 3
    finally:
        for s in socks:
            s.close()
    deadline = time.monotonic() + 3
    while scrape(halley)["halley_connections_open"] != base and time.monotonic() < deadline:
        time.sleep(0.05)
    assert scrape(halley)["halley_connections_open"] == base


@pytest.mark.parametrize("flag", [[], ["--metrics-port", "0"]])
def test_metrics_port_is_optional(start_halley, flag):
    h = start_halley(*flag)
    assert (h.metrics_port is not None) == bool(flag)
    assert h.get("/metrics").status == 404


def documented_families():
    """The families the README's metrics table lists (`| `name` | type | …`)."""
    text = open(README, encoding="utf-8").read()
    section = text.split("### Metrics", 1)[1].split("\n## ", 1)[0]
    return dict(re.findall(r"^\| `(halley_[a-z_]+)` \| (gauge|counter|histogram) \|", section, re.M))


def test_every_metric_is_documented_and_parses(start_halley):
    """Every family /metrics writes is in the README's table with its type (and the other way
    round), the whole text parses with prometheus-client, and the histograms count what was done."""
    h = start_halley("--metrics-port", "0", "--app-token", "tok")
    ws = WS(h.port, halley=False)
    ws.hello()
    ws.subscribe("m")
    for i in range(7):
        status, _ = publish(h.port, {"channel": "m", "event": "e", "data": str(i)})
        assert status == 201
        assert ws.recv()["event"] == "e"
    time.sleep(1.2)  # the per-loop session counts are taken once a second
    r = h.get("/metrics", port=h.metrics_port)
    text = r.body.decode()
    written = dict(re.findall(r"^# TYPE (\S+) (\S+)$", text, re.M))
    documented = documented_families()
    assert written == documented
    families = {f.name: f for f in text_string_to_metric_families(text)}
    for name in ("halley_publish_handling_seconds", "halley_delivery_latency_seconds"):
        f = families[name]
        assert f.type == "histogram"
        buckets = [(s.labels["le"], s.value) for s in f.samples if s.name == name + "_bucket"]
        count = next(s.value for s in f.samples if s.name == name + "_count")
        total = next(s.value for s in f.samples if s.name == name + "_sum")
        assert [v for _, v in buckets] == sorted(v for _, v in buckets), buckets
        assert buckets[-1] == ("+Inf", count)
        assert count == 7, (name, count)  # seven publishes, one subscriber loop
        assert 0 < total < 7, total
    values = parse_metrics(text)
    assert values['halley_app_messages_in_total{app="1"}'] == 7
    assert values['halley_app_messages_out_total{app="1"}'] == 7
    assert values['halley_app_connections{app="1",transport="websocket"}'] == 1
    assert values['halley_app_subscriptions{app="1"}'] == 1
    ws.close()
