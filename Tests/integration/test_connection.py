"""Connection management: keep-alive, pipelining, HTTP/1.0, Connection: close,
Expect: 100-continue, request bodies (Content-Length and chunked)."""

from __future__ import annotations

import socket
import time

import pytest

from halley_client import Client, assert_no_data, connect, rss_kb, sha256
from public_tree import FILES, assert_serving

SMALL = ["/one.txt", "/two.txt", "/three.txt", "/four.txt", "/app.js", "/data.json"]


def body_of(path):
    return FILES[path.lstrip("/")]


def get_req(path, extra=b"", version=b"1.1", method=b"GET"):
    host = b"Host: halley.test\r\n"
    return method + b" " + path.encode() + b" HTTP/" + version + b"\r\n" + host + extra + b"\r\n"


# ---- keep-alive


def test_many_requests_on_one_connection(halley):
    with connect(halley.port) as s:
        c = Client(s)
        for i in range(60):
            path = SMALL[i % len(SMALL)]
            c.send_request("GET", path)
            r = c.read_response()
            assert r.status == 200
            assert r.body == body_of(path)
            assert "close" not in r.connection_tokens
        c.assert_open()


def test_connection_close_on_http11(halley):
    with connect(halley.port) as s:
        c = Client(s)
        c.send_request("GET", "/one.txt", [("Connection", "close")])
        r = c.read_response()
        assert r.status == 200 and r.body == FILES["one.txt"]
        assert "close" in r.connection_tokens
        c.assert_closed()


def test_connection_close_token_in_a_list(halley):
    with connect(halley.port) as s:
        c = Client(s)
        c.send_request("GET", "/one.txt", [("Connection", "Upgrade, CLOSE")])
        r = c.read_response()
        assert "close" in r.connection_tokens
        c.assert_closed()


def test_http10_closes_by_default(halley):
    with connect(halley.port) as s:
        c = Client(s)
        c.send_raw(b"GET /one.txt HTTP/1.0\r\n\r\n")
        r = c.read_response("GET")
        assert r.status == 200
        assert r.body == FILES["one.txt"]
        assert "close" in r.connection_tokens
        c.assert_closed()


def test_http10_keep_alive(halley):
    with connect(halley.port) as s:
        c = Client(s)
        for path in ("/one.txt", "/two.txt", "/three.txt"):
            c.send_raw(b"GET " + path.encode() + b" HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
            r = c.read_response("GET")
            assert r.status == 200
            assert r.body == body_of(path)
            assert "keep-alive" in r.connection_tokens
            assert "close" not in r.connection_tokens
        c.assert_open()
        # And 1.0 without keep-alive on the same connection ends it.
        c.send_raw(b"GET /four.txt HTTP/1.0\r\nHost: x\r\n\r\n")
        r = c.read_response("GET")
        assert r.body == FILES["four.txt"]
        assert "close" in r.connection_tokens
        c.assert_closed()


def test_http10_head_and_missing(halley):
    with connect(halley.port) as s:
        c = Client(s)
        c.send_raw(b"HEAD /index.html HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        r = c.read_response("HEAD")
        assert r.status == 200 and r.body == b""
        assert r.header("content-length") == str(len(FILES["index.html"]))
        c.send_raw(b"GET /nope HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        r = c.read_response("GET")
        assert r.status == 404
        assert "keep-alive" in r.connection_tokens
        c.assert_open()


def test_leading_empty_lines_are_ignored(halley):
    with connect(halley.port) as s:
        c = Client(s)
        c.send_request("GET", "/one.txt")
        assert c.read_response().status == 200
        # RFC 9112 §2.2: a server SHOULD ignore at least one empty line before a request.
        c.send_raw(b"\r\n" + get_req("/two.txt"))
        r = c.read_response("GET")
        assert r.status == 200 and r.body == FILES["two.txt"]


def test_absolute_form_target(halley):
    with connect(halley.port) as s:
        c = Client(s)
        c.send_raw(b"GET http://halley.test/sub/page.html?q=1 HTTP/1.1\r\nHost: halley.test\r\n\r\n")
        r = c.read_response("GET")
        assert r.status == 200
        assert r.body == FILES["sub/page.html"]


# ---- pipelining


def test_pipelined_requests_answer_in_order(halley):
    paths = ["/one.txt", "/two.txt", "/three.txt", "/four.txt", "/data.json"]
    with connect(halley.port) as s:
        c = Client(s)
        c.send_raw(b"".join(get_req(p) for p in paths))
        for p in paths:
            r = c.read_response("GET")
            assert r.status == 200
            assert r.body == body_of(p), p
        c.assert_open()


def test_pipelining_mixed_methods_statuses_and_large_files(halley):
    plan = [
        ("GET", "/one.txt", 200),
        ("HEAD", "/big.bin", 200),
        ("GET", "/missing", 404),
        ("GET", "/big.bin", 200),
        ("DELETE", "/two.txt", 405),
        ("GET", "/medium.bin", 200),
        ("GET", "/sub", 301),
        ("GET", "/three.txt", 200),
    ]
    with connect(halley.port, timeout=15) as s:
        c = Client(s)
        c.send_raw(b"".join(get_req(p, method=m.encode()) for m, p, _ in plan))
        for m, p, status in plan:
            r = c.read_response(m)
            assert r.status == status, (m, p)
            if m == "GET" and status == 200:
                assert sha256(r.body) == sha256(body_of(p)), p
            if m == "HEAD":
                assert r.body == b""
                assert r.header("content-length") == str(len(body_of(p)))


def test_long_pipeline(halley):
    n = 200
    paths = [SMALL[i % len(SMALL)] for i in range(n)]
    with connect(halley.port, timeout=10) as s:
        c = Client(s)
        c.send_raw(b"".join(get_req(p) for p in paths))
        for p in paths:
            r = c.read_response("GET")
            assert r.status == 200 and r.body == body_of(p)


def test_pipeline_stops_after_connection_close(halley):
    reqs = get_req("/one.txt") + get_req("/two.txt", b"Connection: close\r\n") + get_req("/three.txt")
    with connect(halley.port) as s:
        c = Client(s)
        c.send_raw(reqs)
        assert c.read_response("GET").body == FILES["one.txt"]
        r = c.read_response("GET")
        assert r.body == FILES["two.txt"]
        assert "close" in r.connection_tokens
        c.assert_closed()


def test_request_sent_byte_by_byte(halley):
    req = get_req("/two.txt", b"X-Padding: " + b"p" * 40 + b"\r\n")
    with connect(halley.port) as s:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        c = Client(s)
        for i in range(len(req)):
            s.sendall(req[i : i + 1])
            time.sleep(0.002)
        r = c.read_response("GET")
        assert r.status == 200 and r.body == FILES["two.txt"]


def test_pipelined_requests_split_at_odd_places(halley):
    body = b"x" * 300
    stream = (
        get_req("/one.txt")
        + b"POST /two.txt HTTP/1.1\r\nHost: h\r\nContent-Length: 300\r\n\r\n" + body
        + b"POST /three.txt HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
        + get_req("/four.txt")
    )
    expected = [(200, FILES["one.txt"]), (405, None), (405, None), (200, FILES["four.txt"])]
    for step in (1, 7, 61, 128):
        with connect(halley.port) as s:
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            c = Client(s)
            for i in range(0, len(stream), step):
                s.sendall(stream[i : i + step])
                if step < 8 and i % 64 == 0:
                    time.sleep(0.001)
            for status, b in expected:
                r = c.read_response("GET")
                assert r.status == status, step
                if b is not None:
                    assert r.body == b


# ---- request bodies


def test_post_with_body_is_read_then_405(halley):
    with connect(halley.port) as s:
        c = Client(s)
        body = b"a=1&b=" + b"z" * 5000
        c.send_request("POST", "/index.html", [("Content-Type", "application/x-www-form-urlencoded")], body=body)
        r = c.read_response()
        assert r.status == 405
        assert r.header("allow") == "GET, HEAD"
        c.send_request("GET", "/one.txt")
        assert c.read_response().body == FILES["one.txt"]


def test_body_at_the_limit_is_accepted(halley):
    # Default --max-body-bytes: 1 MiB exactly is allowed.
    with connect(halley.port, timeout=10) as s:
        c = Client(s)
        c.send_request("PUT", "/one.txt", body=b"b" * 1048576)
        assert c.read_response().status == 405
        c.send_request("GET", "/two.txt")
        assert c.read_response().body == FILES["two.txt"]


def chunked(*parts, ext=b"", trailers=b""):
    out = b""
    for p in parts:
        out += b"%x%s\r\n%s\r\n" % (len(p), ext, p)
    return out + b"0\r\n" + trailers + b"\r\n"


def test_chunked_body_then_keep_alive(halley):
    with connect(halley.port) as s:
        c = Client(s)
        head = b"POST /one.txt HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
        c.send_raw(head)
        body = chunked(b"hello", b" ", b"w" * 3000, ext=b";name=value", trailers=b"X-Checksum: 42\r\n")
        for i in range(0, len(body), 100):
            c.send_raw(body[i : i + 100])
        r = c.read_response("POST")
        assert r.status == 405
        assert "close" not in r.connection_tokens
        c.send_request("GET", "/two.txt")
        assert c.read_response().body == FILES["two.txt"]


def test_chunked_upper_case_hex_and_many_chunks(halley):
    with connect(halley.port) as s:
        c = Client(s)
        parts = [bytes([65 + i % 26]) * (i + 1) for i in range(40)] + [b"q" * 0x1AB]
        body = b"".join(b"%X\r\n%s\r\n" % (len(p), p) for p in parts) + b"0\r\n\r\n"
        c.send_raw(b"POST /x HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n" + body + get_req("/three.txt"))
        assert c.read_response("POST").status == 405
        assert c.read_response("GET").body == FILES["three.txt"]


def test_chunked_body_over_limit_is_413_and_closes(start_halley):
    h = start_halley("--max-body-bytes", "1000")
    with connect(h.port) as s:
        c = Client(s)
        c.send_raw(b"POST /one.txt HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n")
        c.send_raw(chunked(b"a" * 600)[:-5])  # one chunk of 600, no last-chunk yet
        c.send_raw(b"258\r\n" + b"b" * 600 + b"\r\n")  # 1200 in total
        r = c.read_response("POST")
        assert r.status == 413
        assert "close" in r.connection_tokens
        c.assert_closed()
    # Exactly at the limit, in several chunks, is fine.
    with connect(h.port) as s:
        c = Client(s)
        c.send_raw(b"POST /one.txt HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n")
        c.send_raw(chunked(b"a" * 500, b"b" * 499, b"c"))
        r = c.read_response("POST")
        assert r.status == 405
        c.assert_open()
    assert_serving(h)


def test_chunk_size_overflow_is_refused(halley):
    with connect(halley.port) as s:
        c = Client(s)
        c.send_raw(b"POST /one.txt HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffffffffffff\r\n")
        r = c.read_response("POST")
        assert r.status in (400, 413)
        assert "close" in r.connection_tokens
        c.assert_closed()


# ---- Expect: 100-continue


def test_expect_100_continue_before_the_body(halley):
    with connect(halley.port) as s:
        c = Client(s)
        body = b"payload" * 100
        c.send_raw(
            b"POST /index.html HTTP/1.1\r\nHost: h\r\nContent-Length: %d\r\nExpect: 100-continue\r\n\r\n" % len(body)
        )
        c.expect("POST")
        info = c.read_informational()  # must arrive while the body is still unsent
        assert info.status_code == 100
        assert c.pending_bytes() == b"", "the final response came before the body was sent"
        assert_no_data(s, 0.2)
        c.send_raw(body)
        r = c.read_response()
        assert r.status == 405
        assert r.header("allow") == "GET, HEAD"
        c.send_request("GET", "/one.txt")
        assert c.read_response().body == FILES["one.txt"]


def test_expect_100_continue_raw_bytes(halley):
    with connect(halley.port) as s:
        s.sendall(b"PUT /one.txt HTTP/1.1\r\nHost: h\r\nContent-Length: 4\r\nExpect: 100-Continue\r\n\r\n")
        got = b""
        deadline = time.monotonic() + 3
        while not got.endswith(b"\r\n\r\n") and time.monotonic() < deadline:
            got += s.recv(1000)
        assert got == b"HTTP/1.1 100 Continue\r\n\r\n"


def test_expect_100_continue_with_chunked_body(halley):
    with connect(halley.port) as s:
        c = Client(s)
        c.send_raw(b"POST /index.html HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nExpect: 100-continue\r\n\r\n")
        c.expect("POST")
        assert c.read_informational().status_code == 100
        c.send_raw(chunked(b"abc", b"defg"))
        assert c.read_response().status == 405


def test_expect_100_continue_over_the_limit_is_413_without_100(halley):
    with connect(halley.port) as s:
        c = Client(s)
        c.send_raw(b"POST /index.html HTTP/1.1\r\nHost: h\r\nContent-Length: 1048577\r\nExpect: 100-continue\r\n\r\n")
        r = c.read_response("POST")
        assert r.informational == [], "100 Continue sent for a body that is refused"
        assert r.status == 413
        assert "close" in r.connection_tokens
        c.assert_closed()


def test_expect_100_continue_without_body_gets_no_100(halley):
    with connect(halley.port) as s:
        c = Client(s)
        c.send_raw(b"GET /one.txt HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\n\r\n")
        r = c.read_response("GET")
        assert r.status == 200 and r.body == FILES["one.txt"]
        assert r.informational == []


def test_expect_100_continue_is_ignored_on_http10(halley):
    # RFC 9110 §10.1.1: "A server that receives a 100-continue expectation in an HTTP/1.0
    # request MUST ignore that expectation." An HTTP/1.0 client cannot parse a 1xx response.
    with connect(halley.port) as s:
        c = Client(s)
        c.send_raw(b"POST /index.html HTTP/1.0\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
        s.settimeout(0.5)
        try:
            early = s.recv(1000)
        except socket.timeout:
            early = b""
        s.settimeout(5)
        assert not early.startswith(b"HTTP/1.1 100"), f"interim response sent to an HTTP/1.0 client: {early!r}"
        c.expect("POST")
        if early:  # h11 reads b"" as end of stream
            c.conn.receive_data(early)
        c.send_raw(b"hello")
        r = c.read_response()
        assert r.status == 405
        assert "close" in r.connection_tokens
        c.assert_closed()


# ---- half-close, refusals behind good requests, slow readers


@pytest.mark.parametrize("path", ["/one.txt", "/big.bin"])
def test_response_after_client_half_close(halley, path):
    # A client may send its request and shut down its sending side (`nc -N`); the response
    # still comes in full.
    with connect(halley.port, timeout=10) as s:
        c = Client(s)
        c.send_request("GET", path)
        s.shutdown(socket.SHUT_WR)
        r = c.read_response()
        assert r.status == 200
        assert sha256(r.body) == sha256(body_of(path))
        c.assert_closed()


def test_pipelined_requests_then_half_close(halley):
    paths = ["/one.txt", "/big.bin", "/two.txt", "/medium.bin", "/three.txt"]
    with connect(halley.port, timeout=10) as s:
        c = Client(s)
        c.send_raw(b"".join(get_req(p) for p in paths))
        s.shutdown(socket.SHUT_WR)
        for p in paths:
            r = c.read_response("GET")
            assert r.status == 200
            assert sha256(r.body) == sha256(body_of(p)), p
        c.assert_closed()


def test_refused_request_behind_good_ones(halley):
    # The good responses are all delivered before the refusal, in order, then the close.
    stream = get_req("/one.txt") + get_req("/big.bin") + b"GET / HTTP/1.1\r\nBad Header: x\r\n\r\n" + get_req("/two.txt")
    with connect(halley.port, timeout=10) as s:
        c = Client(s)
        c.send_raw(stream)
        assert c.read_response("GET").body == FILES["one.txt"]
        assert sha256(c.read_response("GET").body) == sha256(FILES["big.bin"])
        r = c.read_response("GET")
        assert r.status == 400
        assert "close" in r.connection_tokens
        c.assert_closed()


def test_pipelining_with_a_slow_reader(halley):
    # Small receive window and slow reads: responses queue up in the server; order and
    # framing must survive partial writes.
    paths = ["/medium.bin", "/one.txt", "/medium.bin", "/four.txt", "/img.png", "/medium.bin", "/two.txt"]
    with connect(halley.port, timeout=10, rcvbuf=8192) as s:
        c = Client(s, recv_size=4096, recv_delay=0.0005)
        c.send_raw(b"".join(get_req(p) for p in paths))
        for p in paths:
            r = c.read_response("GET")
            assert r.status == 200
            assert sha256(r.body) == sha256(body_of(p)), p
        c.assert_open()


def test_query_is_not_checked_as_a_path(halley):
    # Encoded slashes and dot segments in the query are not a traversal.
    r = halley.get("/one.txt?next=..%2f..%2fetc%2fpasswd&x=%00")
    assert r.status == 200 and r.body == FILES["one.txt"]


def test_pipelining_without_reading_is_bounded(start_halley):
    # 5,000 pipelined requests for a 200 KiB file (1 GB of answers) from a client that does
    # not read: the hub answers only while the answers drain, so its memory stays flat; then
    # every answer arrives, in order, once the client reads.
    h = start_halley(threads=1, memory=True)
    before = rss_kb(h.proc.pid)
    n = 5000
    req = b"GET /medium.bin HTTP/1.1\r\nHost: h\r\n\r\n"
    with connect(h.port) as s:
        s.setblocking(False)
        data = req * n
        sent = 0
        deadline = time.monotonic() + 3
        while sent < len(data) and time.monotonic() < deadline:
            try:
                sent += s.send(data[sent:])
            except BlockingIOError:
                time.sleep(0.01)
        time.sleep(1)
        grown = rss_kb(h.proc.pid) - before
        assert grown < 20 * 1024, f"hub grew {grown} kB for a client that does not read"
        # Now read a few answers: they are complete and in order.
        s.setblocking(True)
        s.settimeout(5)
        c = Client(s)
        for _ in range(3):
            r = c.read_response("GET")
            assert r.status == 200 and r.body == FILES["medium.bin"]
