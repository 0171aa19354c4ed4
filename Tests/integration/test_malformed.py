"""Requests the parser refuses: each gets its exact status with `Connection: close`, the
connection then closes, one log line names the status, and the server goes on serving.
Also the limits' boundaries (exactly at a limit is accepted)."""

from __future__ import annotations

import re
import time

import pytest

from halley_client import Client, connect
from public_tree import FILES, assert_serving

H = b"Host: halley.test\r\n"

# Defaults: --max-request-line 8192, --max-header-bytes 16384, --max-headers 100,
# --max-body-bytes 1048576.
MAX_LINE = 8192
MAX_HEAD = 16384
MAX_FIELDS = 100
MAX_BODY = 1048576


def request_line(length: int) -> bytes:
    """A GET request line of exactly `length` bytes (without CRLF)."""
    line = b"GET /" + b"a" * (length - len(b"GET / HTTP/1.1")) + b" HTTP/1.1"
    assert len(line) == length
    return line


def head_of_size(total: int) -> bytes:
    """A complete head (ending in the empty line) of exactly `total` bytes."""
    start = b"GET /one.txt HTTP/1.1\r\n" + H + b"X-Pad: "
    pad = total - len(start) - 4
    head = start + b"p" * pad + b"\r\n\r\n"
    assert len(head) == total
    return head


def head_with_fields(n: int) -> bytes:
    """A head with exactly `n` header fields (Host included)."""
    return b"GET /one.txt HTTP/1.1\r\n" + H + b"".join(b"X-F%d: v\r\n" % i for i in range(n - 1)) + b"\r\n"


CASES = [
    # limits
    ("request-line-over-limit", request_line(MAX_LINE + 1) + b"\r\n" + H + b"\r\n", 414),
    ("request-line-huge-unterminated", b"GET /" + b"x" * 20000, 414),
    ("head-over-limit", head_of_size(MAX_HEAD + 1), 431),
    ("head-huge-unterminated", b"GET / HTTP/1.1\r\n" + H + b"X-A: " + b"y" * 30000, 431),
    ("too-many-fields", head_with_fields(MAX_FIELDS + 1), 431),
    ("content-length-over-limit", b"POST /one.txt HTTP/1.1\r\n" + H + b"Content-Length: %d\r\n\r\n" % (MAX_BODY + 1), 413),
    ("content-length-enormous", b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 999999999999999999\r\n\r\n", 413),
    # transfer codings and framing conflicts (RFC 9112 §6)
    ("te-gzip", b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: gzip\r\n\r\n", 501),
    ("te-gzip-chunked", b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: gzip, chunked\r\n\r\n", 501),
    ("te-gzip-chunked-two-fields", b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n", 501),
    ("te-chunked-not-last", b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked, gzip\r\n\r\n", 400),
    ("te-chunked-twice", b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked, chunked\r\n\r\n", 400),
    ("te-empty", b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: \r\n\r\n", 400),
    ("te-and-cl", b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\nhello", 400),
    ("cl-and-te", b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400),
    ("te-on-http10", b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400),
    ("two-cl-equal", b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 5\r\nContent-Length: 5\r\n\r\nhello", 400),
    ("two-cl-different", b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 5\r\nContent-Length: 6\r\n\r\nhello!", 400),
    ("cl-list", b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 5, 5\r\n\r\nhello", 400),
    ("cl-abc", b"POST / HTTP/1.1\r\n" + H + b"Content-Length: abc\r\n\r\n", 400),
    ("cl-negative", b"POST / HTTP/1.1\r\n" + H + b"Content-Length: -1\r\n\r\n", 400),
    ("cl-plus", b"POST / HTTP/1.1\r\n" + H + b"Content-Length: +5\r\n\r\nhello", 400),
    ("cl-hex", b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 0x10\r\n\r\n", 400),
    ("cl-empty", b"POST / HTTP/1.1\r\n" + H + b"Content-Length: \r\n\r\n", 400),
    ("cl-inner-space", b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 1 0\r\n\r\n", 400),
    # line endings and header syntax
    ("bare-lf", b"GET / HTTP/1.1\nHost: halley.test\n\n", 400),
    ("bare-lf-in-one-header", b"GET / HTTP/1.1\r\n" + H + b"X-A: 1\nX-B: 2\r\n\r\n", 400),
    ("bare-cr-in-header", b"GET / HTTP/1.1\r\n" + H + b"X-A: 1\rX-B: 2\r\n\r\n", 400),
    ("obs-fold", b"GET / HTTP/1.1\r\n" + H + b"X-Long: first\r\n second\r\n\r\n", 400),
    ("obs-fold-tab", b"GET / HTTP/1.1\r\n" + H + b"X-Long: first\r\n\tsecond\r\n\r\n", 400),
    ("space-before-colon", b"GET / HTTP/1.1\r\n" + H + b"X-Bad : value\r\n\r\n", 400),
    ("space-before-colon-host", b"GET / HTTP/1.1\r\nHost : halley.test\r\n\r\n", 400),
    ("no-colon", b"GET / HTTP/1.1\r\n" + H + b"JustAName\r\n\r\n", 400),
    ("empty-name", b"GET / HTTP/1.1\r\n" + H + b": value\r\n\r\n", 400),
    ("bad-char-in-name", b"GET / HTTP/1.1\r\n" + H + b"X(Bad): v\r\n\r\n", 400),
    ("ctl-in-value", b"GET / HTTP/1.1\r\n" + H + b"X-A: a\x01b\r\n\r\n", 400),
    ("nul-in-value", b"GET / HTTP/1.1\r\n" + H + b"X-A: a\x00b\r\n\r\n", 400),
    ("del-in-value", b"GET / HTTP/1.1\r\n" + H + b"X-A: a\x7fb\r\n\r\n", 400),
    ("esc-in-value", b"GET / HTTP/1.1\r\n" + H + b"X-A: \x1b[31mred\r\n\r\n", 400),
    # Host (RFC 9112 §3.2)
    ("no-host-http11", b"GET /one.txt HTTP/1.1\r\nUser-Agent: t\r\n\r\n", 400),
    ("two-hosts", b"GET /one.txt HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400),
    ("two-hosts-same", b"GET /one.txt HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n", 400),
    ("two-hosts-http10", b"GET /one.txt HTTP/1.0\r\nHost: a\r\nHost: b\r\n\r\n", 400),
    # request line and version
    ("http2-version", b"GET / HTTP/2.0\r\n" + H + b"\r\n", 505),
    ("http3-version", b"GET / HTTP/3.0\r\n" + H + b"\r\n", 505),
    ("http09-version", b"GET / HTTP/0.9\r\n" + H + b"\r\n", 505),
    ("http1x-version", b"GET / HTTP/1.x\r\n" + H + b"\r\n", 400),
    ("lowercase-version", b"GET / http/1.1\r\n" + H + b"\r\n", 400),
    ("long-version", b"GET / HTTP/1.10\r\n" + H + b"\r\n", 400),
    ("no-version", b"GET /\r\n" + H + b"\r\n", 400),
    ("trailing-space-after-version", b"GET / HTTP/1.1 \r\n" + H + b"\r\n", 400),
    ("double-space", b"GET  / HTTP/1.1\r\n" + H + b"\r\n", 400),
    ("empty-target", b"GET  HTTP/1.1\r\n" + H + b"\r\n", 400),
    ("bad-method-char", b"G(T / HTTP/1.1\r\n" + H + b"\r\n", 400),
    ("ctl-in-target", b"GET /a\x01b HTTP/1.1\r\n" + H + b"\r\n", 400),
    ("raw-utf8-in-target", b"GET /caf\xc3\xa9.txt HTTP/1.1\r\n" + H + b"\r\n", 400),
    ("tab-separator", b"GET\t/\tHTTP/1.1\r\n" + H + b"\r\n", 400),
    ("relative-target", b"GET one.txt HTTP/1.1\r\n" + H + b"\r\n", 400),
    ("asterisk-with-get", b"GET * HTTP/1.1\r\n" + H + b"\r\n", 400),
    ("ftp-absolute-target", b"GET ftp://halley.test/x HTTP/1.1\r\n" + H + b"\r\n", 400),
    # Expect (RFC 9110 §10.1.1)
    ("expect-other", b"GET / HTTP/1.1\r\n" + H + b"Expect: something-else\r\n\r\n", 417),
    ("expect-other-with-body", b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 3\r\nExpect: 200-ok\r\n\r\nabc", 417),
    # garbage
    ("garbage", b"\x00\xff\xfe\xfdgarbage\x01\x02\r\n\r\n", 400),
    ("garbage-text", b"hello there, server\r\n\r\n", 400),
    ("only-crlf-then-lf", b"\r\n\n", 400),
    # chunked body errors
    ("chunk-size-not-hex", b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n", 400),
    ("chunk-size-empty", b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\n\r\nhello\r\n0\r\n\r\n", 400),
    ("chunk-missing-crlf", b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\n5\r\nhelloXX0\r\n\r\n", 400),
    ("chunk-size-bare-lf", b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\n5\nhello\r\n0\r\n\r\n", 400),
    ("chunk-size-negative", b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\n-5\r\nhello\r\n0\r\n\r\n", 400),
    ("chunk-trailer-obs-fold", b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\n0\r\nX-T: 1\r\n folded\r\n\r\n", 400),
    ("chunk-over-body-limit", b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\n100001\r\n", 413),
]

LOG_STATUS = re.compile(r"\b(400|408|413|414|417|431|501|505)\b")


@pytest.mark.parametrize("name, data, status", CASES, ids=[c[0] for c in CASES])
def test_refused(halley, name, data, status):
    mark = halley.log_mark()
    with connect(halley.port) as s:
        c = Client(s)
        c.send_raw(data)
        r = c.read_response("GET")
        assert r.status == status, f"{name}: got {r.status} {r.body!r}"
        assert "close" in r.connection_tokens
        assert r.header("content-length") == str(len(r.body))
        c.assert_closed()
    # One log line for the refusal, naming its status.
    assert halley.wait_for_log(rf"\b{status}\b", timeout=2, start=mark), f"no log line with {status}"
    time.sleep(0.05)
    refusals = [l for l in halley.lines_since(mark) if LOG_STATUS.search(l)]
    assert len(refusals) == 1, refusals
    assert str(status) in refusals[0]
    assert_serving(halley)


def test_refused_request_with_a_large_body_still_gets_its_response(halley):
    # The client keeps sending the refused body: the server must not reset the connection
    # before the client has read the 413 (it half-closes and drains instead).
    with connect(halley.port) as s:
        c = Client(s)
        c.send_raw(b"POST /one.txt HTTP/1.1\r\n" + H + b"Content-Length: 5000000\r\n\r\n" + b"z" * 200000)
        r = c.read_response("POST")
        assert r.status == 413
        assert "close" in r.connection_tokens


def test_bytes_after_a_refused_request_are_not_parsed(halley):
    # A smuggling attempt: after the 400, the "second request" must not be answered.
    smuggle = (
        b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 44\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"0\r\n\r\nGET /two.txt HTTP/1.1\r\nHost: halley.test\r\n\r\n"
    )
    with connect(halley.port) as s:
        c = Client(s)
        c.send_raw(smuggle)
        r = c.read_response("POST")
        assert r.status == 400
        c.assert_closed()


# ---- exactly at the limits: accepted


@pytest.mark.parametrize(
    "name, data, status",
    [
        ("request-line-at-limit", request_line(MAX_LINE) + b"\r\n" + H + b"\r\n", 404),
        ("head-at-limit", head_of_size(MAX_HEAD), 200),
        ("fields-at-limit", head_with_fields(MAX_FIELDS), 200),
        ("cl-zero", b"POST /one.txt HTTP/1.1\r\n" + H + b"Content-Length: 0\r\n\r\n", 405),
        ("cl-leading-zeros", b"POST /one.txt HTTP/1.1\r\n" + H + b"Content-Length: 003\r\n\r\nabc", 405),
        ("http10-without-host", b"GET /one.txt HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", 200),
        ("obs-text-in-value", b"GET /one.txt HTTP/1.1\r\n" + H + b"X-Name: caf\xc3\xa9 \xff\r\n\r\n", 200),
        ("tab-in-value", b"GET /one.txt HTTP/1.1\r\n" + H + b"X-A: a\tb\r\n\r\n", 200),
        ("empty-value", b"GET /one.txt HTTP/1.1\r\n" + H + b"X-Empty:\r\n\r\n", 200),
        ("lowercase-host-and-no-space", b"GET /one.txt HTTP/1.1\r\nhOsT:halley.test\r\n\r\n", 200),
        ("expect-case-insensitive", b"GET /one.txt HTTP/1.1\r\n" + H + b"Expect: 100-CONTINUE\r\n\r\n", 200),
        ("te-chunked-case", b"POST /one.txt HTTP/1.1\r\n" + H + b"Transfer-Encoding: Chunked\r\n\r\n0\r\n\r\n", 405),
        ("unknown-method", b"FROB /one.txt HTTP/1.1\r\n" + H + b"\r\n", 405),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_at_the_limit_accepted(halley, name, data, status):
    with connect(halley.port) as s:
        c = Client(s)
        c.send_raw(data)
        r = c.read_response("GET")
        assert r.status == status, f"{name}: {r.status} {r.body!r}"
        if status == 200:
            assert r.body == FILES["one.txt"]
        assert "close" not in r.connection_tokens
        c.send_request("GET", "/two.txt")
        assert c.read_response().body == FILES["two.txt"]


def test_custom_limits(start_halley):
    h = start_halley("--max-request-line", "64", "--max-header-bytes", "256", "--max-headers", "3", "--max-body-bytes", "10")
    cases = [
        (b"GET /" + b"a" * 60 + b" HTTP/1.1\r\n" + H + b"\r\n", 414),
        (b"GET /" + b"a" * 50 + b" HTTP/1.1\r\n" + H + b"\r\n", 404),  # line of 64 bytes
        (b"GET /one.txt HTTP/1.1\r\n" + H + b"X-A: " + b"v" * 220 + b"\r\n\r\n", 431),
        (b"GET /one.txt HTTP/1.1\r\n" + H + b"A: 1\r\nB: 2\r\nC: 3\r\n\r\n", 431),
        (b"GET /one.txt HTTP/1.1\r\n" + H + b"A: 1\r\nB: 2\r\n\r\n", 200),
        (b"POST /one.txt HTTP/1.1\r\n" + H + b"Content-Length: 11\r\n\r\n" + b"x" * 11, 413),
        (b"POST /one.txt HTTP/1.1\r\n" + H + b"Content-Length: 10\r\n\r\n" + b"x" * 10, 405),
        (b"POST /one.txt HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\n6\r\nxxxxxx\r\n5\r\nxxxxx\r\n0\r\n\r\n", 413),
    ]
    for data, status in cases:
        with connect(h.port) as s:
            c = Client(s)
            c.send_raw(data)
            r = c.read_response("GET")
            assert r.status == status, (data[:40], r.status)
            if status >= 413:
                assert "close" in r.connection_tokens
                c.assert_closed()
    assert_serving(h)
