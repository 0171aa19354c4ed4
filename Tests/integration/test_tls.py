"""TLS (https and wss) over real sockets: a certificate made at test time with the openssl
CLI; Python's ssl with h11 and http.client, curl, websockets over wss with and without
permessage-deflate, the hub's transports, bad input on the TLS port, and SIGHUP reload.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import threading
import time
import warnings

import h11
import pytest
from websockets.sync.client import connect as ws_connect

from halley_client import HOST, rss_kb
from hub_client import publish, wait_until
from test_websocket import frame


def make_cert(d, cn):
    key, cert = os.path.join(d, f"{cn}.key"), os.path.join(d, f"{cn}.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", cert,
                    "-days", "2", "-subj", f"/CN={cn}", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
                   check=True, capture_output=True)
    return cert, key


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    d = str(tmp_path_factory.mktemp("tls"))
    return {"dir": d, "a": make_cert(d, "halley-a"), "b": make_cert(d, "halley-b")}


@pytest.fixture(params=["own", "openssl"])
def tls_hub(start_halley, certs, request):
    # Every test twice: TLS 1.3 records by Halley's own record layer (the default) and by
    # OpenSSL (`--tls-records openssl`).
    cert, key = certs["a"]
    return start_halley("--tls-port", "0", "--tls-cert", cert, "--tls-key", key, "--tls-handshake-timeout", "2",
                        "--app-token", "tok", "--tls-records", request.param)


_contexts = {}


def client_ctx(cafile, alpn=("http/1.1",)):
    # One context per CA and ALPN list: a TLS session can only be resumed from its context.
    k = (cafile, alpn)
    if k in _contexts:
        return _contexts[k]
    c = ssl.create_default_context(cafile=cafile)
    _contexts[k] = c
    if alpn:
        c.set_alpn_protocols(list(alpn))
    return c


def https_get(port, path, cafile, session=None):
    raw = socket.create_connection((HOST, port), timeout=5)
    s = client_ctx(cafile).wrap_socket(raw, server_hostname="localhost", session=session)
    conn = h11.Connection(h11.CLIENT)
    s.sendall(conn.send(h11.Request(method="GET", target=path, headers=[("Host", "localhost")])))
    s.sendall(conn.send(h11.EndOfMessage()))
    body = b""
    resp = None
    while True:
        ev = conn.next_event()
        if ev is h11.NEED_DATA:
            conn.receive_data(s.recv(65536))
            continue
        if isinstance(ev, h11.Response):
            resp = ev
        elif isinstance(ev, h11.Data):
            body += ev.data
        elif isinstance(ev, h11.EndOfMessage):
            break
    return resp, body, s


def test_https_static_and_alpn(tls_hub, certs, public_root):
    cafile = certs["a"][0]
    resp, body, s = https_get(tls_hub.tls_port, "/", cafile)
    assert resp.status_code == 200 and len(body) > 0
    assert s.selected_alpn_protocol() == "http/1.1"
    assert s.version() in ("TLSv1.2", "TLSv1.3")
    s.close()
    # plain HTTP still on the main port
    c = http.client.HTTPConnection(HOST, tls_hub.port, timeout=5)
    c.request("GET", "/")
    assert c.getresponse().status == 200
    c.close()


def test_large_file_over_tls(tls_hub, certs, public_root):
    # a file larger than the static cache goes by pread + encrypt in 64 KiB steps
    blob = os.urandom(3 * 1024 * 1024 + 123)
    with open(os.path.join(public_root, "tls-big.bin"), "wb") as f:
        f.write(blob)
    try:
        resp, body, s = https_get(tls_hub.tls_port, "/tls-big.bin", certs["a"][0])
        assert resp.status_code == 200 and body == blob
        s.close()
    finally:
        os.unlink(os.path.join(public_root, "tls-big.bin"))


def test_curl_keepalive_and_pipelined_requests(tls_hub, certs):
    if not shutil.which("curl"):
        pytest.skip("curl not installed")
    url = f"https://localhost:{tls_hub.tls_port}/"
    r = subprocess.run(["curl", "-s", "-o", "/dev/null", "-o", "/dev/null", "-o", "/dev/null", "-w", "%{http_code} %{num_connects}\n", "--cacert", certs["a"][0],
                        "--resolve", f"localhost:{tls_hub.tls_port}:127.0.0.1", url, url, url], capture_output=True, text=True, timeout=20)
    lines = r.stdout.split()
    assert lines[0::2] == ["200", "200", "200"] and lines[1::2] == ["1", "0", "0"], r.stdout  # one connection reused
    # pipelining: three requests in one write
    raw = socket.create_connection((HOST, tls_hub.tls_port), timeout=5)
    s = client_ctx(certs["a"][0]).wrap_socket(raw, server_hostname="localhost")
    s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n" * 3)
    data = b""
    deadline = time.monotonic() + 5
    while data.count(b"HTTP/1.1 200") < 3 and time.monotonic() < deadline:
        data += s.recv(65536)
    assert data.count(b"HTTP/1.1 200") == 3
    s.close()


def test_session_resumption(tls_hub, certs):
    cafile = certs["a"][0]
    _, _, s = https_get(tls_hub.tls_port, "/", cafile)
    sess = s.session
    s.close()
    _, _, s2 = https_get(tls_hub.tls_port, "/", cafile, session=sess)
    assert s2.session_reused
    s2.close()


def test_tls_1_1_is_refused(tls_hub, certs):
    c = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    c.load_verify_locations(certs["a"][0])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # old versions on purpose
        c.minimum_version = ssl.TLSVersion.TLSv1
        c.maximum_version = ssl.TLSVersion.TLSv1_1
    try:
        c.set_ciphers("ALL:@SECLEVEL=0")
    except ssl.SSLError:
        pass
    raw = socket.create_connection((HOST, tls_hub.tls_port), timeout=5)
    with pytest.raises((ssl.SSLError, ConnectionResetError, OSError)):
        c.wrap_socket(raw, server_hostname="localhost")
    raw.close()
    # refused by the hub for the version, not by the client
    assert tls_hub.wait_for_log("unsupported protocol")


def test_tls_1_2_session_resumption(tls_hub, certs):
    c = ssl.create_default_context(cafile=certs["a"][0])
    c.maximum_version = ssl.TLSVersion.TLSv1_2
    s = c.wrap_socket(socket.create_connection((HOST, tls_hub.tls_port), timeout=5), server_hostname="localhost")
    assert s.version() == "TLSv1.2" and s.cipher()[0].startswith("ECDHE-")
    s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    while s.recv(65536):
        pass
    sess = s.session
    s.close()
    s2 = c.wrap_socket(socket.create_connection((HOST, tls_hub.tls_port), timeout=5), server_hostname="localhost", session=sess)
    assert s2.session_reused
    s2.close()


def _tls_socket(port, cafile, ragged_ok):
    c = ssl.create_default_context(cafile=cafile)
    return c.wrap_socket(socket.create_connection((HOST, port), timeout=10), server_hostname="localhost",
                         suppress_ragged_eofs=ragged_ok)


def test_close_notify_on_keepalive_timeout_and_after_the_clients(start_halley, certs):
    cert, key = certs["a"]
    h = start_halley("--tls-port", "0", "--tls-cert", cert, "--tls-key", key, "--keepalive-timeout", "1")
    s = _tls_socket(h.tls_port, cert, ragged_ok=False)
    s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    data = b""
    while b"INDEX-PAGE" not in data:
        data += s.recv(65536)
    # the hub closes the idle connection: with close_notify (a ragged EOF would raise here)
    assert s.recv(100) == b""
    s.close()
    # the client's close_notify arriving in the same segment as its request: the hub answers
    # and closes at once (not at the keep-alive timeout)
    obj, _, outg, raw = _memory_bio_client(h.tls_port, cert)
    obj.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    try:
        obj.unwrap()
    except ssl.SSLWantReadError:
        pass
    t0 = time.monotonic()
    raw.sendall(outg.read())  # the request and the close_notify in one write
    while raw.recv(65536):
        pass
    assert time.monotonic() - t0 < 3, "the close_notify behind the request was not seen"
    raw.close()


def test_idle_tls_connections_give_buffers_back(start_halley, certs, public_root):
    # 60 keep-alive https connections, each sends a 200 KB body and reads a 200 KB file (both
    # memory BIOs grow), then stays open: the hub must give the grown buffers back.
    cert, key = certs["a"]
    h = start_halley("--tls-port", "0", "--tls-cert", cert, "--tls-key", key, threads=1, memory=True)
    blob = os.urandom(200_000)
    with open(os.path.join(public_root, "tls-idle.bin"), "wb") as f:
        f.write(blob)
    ctx = client_ctx(cert)
    socks = []
    try:
        for _ in range(60):
            s = ctx.wrap_socket(socket.create_connection((HOST, h.tls_port), timeout=15), server_hostname="localhost")
            s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            _read_response(s)
            socks.append(s)
        time.sleep(0.3)
        before = rss_kb(h.proc.pid)
        body = os.urandom(200_000)
        for s in socks:
            s.sendall(b"POST /publish HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
            _read_response(s)
            s.sendall(b"GET /tls-idle.bin HTTP/1.1\r\nHost: x\r\n\r\n")
            assert _read_response(s) == blob
        time.sleep(0.3)
        grown = rss_kb(h.proc.pid) - before
        # a memory BIO keeps its largest buffer (~170 KB per connection here): the hub swaps them out
        assert grown < 60 * 40, f"{grown} kB for 60 idle connections after 200 KB each way"
    finally:
        for s in socks:
            s.close()
        os.unlink(os.path.join(public_root, "tls-idle.bin"))


def test_idle_wss_connections_are_small_with_own_records(start_halley, certs):
    # 400 idle wss connections after one echo each, in both modes: with our own records
    # OpenSSL's SSL (and its BIOs and cipher contexts) is freed after the handshake.
    cert, key = certs["a"]
    per_conn = {}
    for mode in ("own", "openssl"):
        h = start_halley("--tls-port", "0", "--tls-cert", cert, "--tls-key", key, "--tls-records", mode,
                         threads=1, memory=True)
        ctx, socks, before = client_ctx(cert, alpn=()), [], None
        try:
            for k in range(410):
                if k == 10:
                    time.sleep(0.3)
                    before = rss_kb(h.proc.pid)
                s = ctx.wrap_socket(socket.create_connection((HOST, h.tls_port), timeout=15),
                                    server_hostname="localhost")
                s.sendall(b"GET /echo HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                          b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
                data = b""
                while b"\r\n\r\n" not in data:
                    data += s.recv(4096)
                assert data.startswith(b"HTTP/1.1 101 ")
                s.sendall(frame(1, b"hello %d" % k))
                want = frame(1, b"hello %d" % k, mask=False)
                data = data.partition(b"\r\n\r\n")[2]
                while len(data) < len(want):
                    data += s.recv(4096)
                assert data == want
                socks.append(s)
            time.sleep(0.3)
            per_conn[mode] = (rss_kb(h.proc.pid) - before) * 1024 / 400
        finally:
            for s in socks:
                s.close()
    # about 3.7 KB against 17 KB on the machine of session 15 (20.9 KB before the SSL was freed)
    assert per_conn["own"] < 8000 and per_conn["own"] < per_conn["openssl"] / 2, per_conn


def _read_response(s):
    """One HTTP/1.1 response with Content-Length; returns its body."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = s.recv(65536)
        assert chunk, "closed"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    n = int(re.search(rb"(?i)content-length: *(\d+)", head).group(1))
    while len(body) < n:
        chunk = s.recv(65536)
        assert chunk, "closed"
        body += chunk
    return body


@pytest.mark.parametrize("compression", [None, "deflate"])
def test_wss_echo(tls_hub, certs, compression):
    ctx = client_ctx(certs["a"][0], alpn=None)
    with ws_connect(f"wss://localhost:{tls_hub.tls_port}/echo", ssl=ctx, compression=compression,
                    open_timeout=5, max_size=None) as ws:
        for size in (0, 10, 125, 126, 65535, 65536, 300_000):
            msg = os.urandom(size)
            ws.send(msg)
            assert ws.recv(timeout=5) == msg
        text = "héllo " * 5000
        ws.send(text)
        assert ws.recv(timeout=5) == text
        if compression:
            assert ws.response.headers.get("Sec-WebSocket-Extensions", "").startswith("permessage-deflate")


def _memory_bio_client(port, cafile, maximum_version=None):
    """A client SSLObject between memory BIOs (the test decides what goes on the socket),
    its handshake with the hub's TLS port done: (obj, incoming BIO, outgoing BIO, socket)."""
    c = ssl.create_default_context(cafile=cafile)
    if maximum_version:
        c.maximum_version = maximum_version
    inc, outg = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = c.wrap_bio(inc, outg, server_hostname="localhost")
    raw = socket.create_connection((HOST, port), timeout=10)
    while True:
        try:
            obj.do_handshake()
            break
        except ssl.SSLWantReadError:
            if outg.pending:
                raw.sendall(outg.read())
            d = raw.recv(65536)
            assert d, "the hub closed during the handshake"
            inc.write(d)
    if outg.pending:
        raw.sendall(outg.read())
    return obj, inc, outg, raw


@pytest.mark.parametrize("version", ["TLSv1_3", "TLSv1_2"])
def test_wss_records_split_and_merged_every_way(tls_hub, certs, version):
    # The hub reads the socket only when OpenSSL holds nothing more (no SSL_read that can
    # only say WANT_READ): records must come out whole however TCP cuts them. Binary
    # messages across the frame-length and record (16 KiB) boundaries, each frame its own
    # TLS record, sent: all records in one write; byte by byte; in pieces of 7 and 1,000
    # bytes; each echo checked byte for byte; then a frame and the client's close_notify in
    # one write: the echo, then the end of the stream. A thread drains the socket meanwhile
    # (the echoes would otherwise fill it and stall both sides).
    obj, inc, outg, raw = _memory_bio_client(tls_hub.tls_port, certs["a"][0], getattr(ssl.TLSVersion, version))
    assert obj.version() == version.replace("_", ".")
    got, lock, ended, failed = bytearray(), threading.Lock(), threading.Event(), []

    def pump():
        while not ended.is_set():
            try:
                chunk = raw.recv(65536)
            except TimeoutError:
                continue  # quiet for 10 s: read_plain's deadline says so
            except OSError as e:
                failed.append(e)
                return
            if not chunk:
                ended.set()
                return
            with lock:
                got.extend(chunk)

    threading.Thread(target=pump, daemon=True).start()
    plain = b""

    def read_plain(n):
        nonlocal plain
        deadline = time.monotonic() + 10
        while len(plain) < n:
            try:
                plain += obj.read(65536)
                continue
            except ssl.SSLWantReadError:
                pass
            with lock:
                chunk = bytes(got)
                got.clear()
            if chunk:
                inc.write(chunk)
            else:
                assert not failed, failed
                assert time.monotonic() < deadline, f"{len(plain)} of {n} bytes after 10 s"
                time.sleep(0.002)
        out, plain = plain[:n], plain[n:]
        return out

    def read_echo():
        h = read_plain(2)
        assert h[0] == 0x82, h
        n = h[1] & 0x7F
        if n == 126:
            n = int.from_bytes(read_plain(2), "big")
        elif n == 127:
            n = int.from_bytes(read_plain(8), "big")
        return read_plain(n)

    obj.write(b"GET /echo HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
              b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
    raw.sendall(outg.read())
    while b"\r\n\r\n" not in plain:
        plain = read_plain(len(plain) + 1) + plain
    head, _, plain = plain.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 101")
    sizes = [1, 125, 126, 1024, 16_000, 16_384, 16_385, 65_535, 65_536, 70_000]
    for cut in (None, 1, 7, 1000):
        msgs = [os.urandom(n) for n in sizes if cut != 1 or n <= 1024]
        for m in msgs:
            obj.write(frame(0x2, m))  # one record per frame (two or more past 16 KiB)
        wire = outg.read()
        if cut is None:
            raw.sendall(wire)
        else:
            for i in range(0, len(wire), cut):
                raw.sendall(wire[i:i + cut])
        for m in msgs:
            assert read_echo() == m, f"echo of {len(m)} B, cut {cut}"
    last = os.urandom(300)
    obj.write(frame(0x2, last))
    try:
        obj.unwrap()
    except ssl.SSLWantReadError:
        pass
    raw.sendall(outg.read())  # the frame and the close_notify in one write
    assert read_echo() == last
    assert ended.wait(5), "no end of stream after the client's close_notify"
    raw.close()


def test_hub_over_wss_and_https_transports(tls_hub, certs):
    ctx = client_ctx(certs["a"][0], alpn=None)
    with ws_connect(f"wss://localhost:{tls_hub.tls_port}/app/app-key?protocol=7", ssl=ctx, open_timeout=5) as ws:
        hello = json.loads(ws.recv(timeout=5))
        assert hello["event"] == "pusher:connection_established"
        ws.send(json.dumps({"event": "pusher:subscribe", "data": {"channel": "tls-news"}}))
        assert json.loads(ws.recv(timeout=5))["event"] == "pusher_internal:subscription_succeeded"
        # SSE over https on the same channel
        sse = http.client.HTTPSConnection("localhost", tls_hub.tls_port, timeout=5, context=client_ctx(certs["a"][0]))
        sse.request("GET", "/halley/sse?key=app-key")
        r = sse.getresponse()
        assert r.status == 200

        def next_event():
            data = []
            while True:
                line = r.readline().decode().rstrip("\n")
                if line == "" and data:
                    return json.loads("\n".join(data))
                if line.startswith("data: "):
                    data.append(line[6:])

        est = next_event()
        sid = json.loads(est["data"])["socket_id"]
        tok = json.loads(est["data"])["halley:token"]
        post = http.client.HTTPSConnection("localhost", tls_hub.tls_port, timeout=5, context=client_ctx(certs["a"][0]))
        post.request("POST", f"/halley/send?session={sid}",
                     body=json.dumps({"event": "pusher:subscribe", "data": {"channel": "tls-news"}}),
                     headers={"X-Halley-Token": tok})
        assert post.getresponse().status == 200
        assert next_event()["event"] == "pusher_internal:subscription_succeeded"
        status, body = publish(tls_hub.port, {"channel": "tls-news", "event": "flash", "data": "x" * 5000})
        assert status == 201, body
        m = json.loads(ws.recv(timeout=5))
        assert m["event"] == "flash" and m["data"] == "x" * 5000
        m = next_event()
        assert m["event"] == "flash" and m["data"] == "x" * 5000
        sse.close()
        post.close()


def test_plain_http_on_tls_port_gets_400(tls_hub):
    s = socket.create_connection((HOST, tls_hub.tls_port), timeout=5)
    s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    data = s.recv(4096)
    assert data.startswith(b"HTTP/1.1 400 ") and b"HTTPS" in data
    s.close()
    assert tls_hub.wait_for_log("plain HTTP on the TLS port")


def test_garbage_and_stalled_handshakes_do_not_disturb_others(tls_hub, certs):
    cafile = certs["a"][0]
    # a live wss connection throughout
    ctx = client_ctx(cafile, alpn=None)
    ws = ws_connect(f"wss://localhost:{tls_hub.tls_port}/echo", ssl=ctx, open_timeout=5, legacy=True)
    # garbage that looks like a TLS record
    g = socket.create_connection((HOST, tls_hub.tls_port), timeout=5)
    g.sendall(b"\x16\x03\x01\x00\x05hello" + os.urandom(2000))
    g.settimeout(5)
    try:
        rest = g.recv(4096)
        assert rest == b"" or rest[0] == 0x15  # an alert, then the close
    except ConnectionResetError:
        pass
    g.close()
    assert tls_hub.wait_for_log("TLS handshake failed")
    # a handshake that stalls: closed at the deadline (2 s here)
    st = socket.create_connection((HOST, tls_hub.tls_port), timeout=6)
    st.sendall(b"\x16\x03\x01")  # a record header and nothing more
    t0 = time.monotonic()
    assert st.recv(100) == b""
    took = time.monotonic() - t0
    assert 1.5 <= took <= 4.5, took
    st.close()
    assert tls_hub.wait_for_log("TLS handshake timeout")
    # a TCP connection that never says anything: also closed at the deadline
    idle = socket.create_connection((HOST, tls_hub.tls_port), timeout=6)
    assert idle.recv(100) == b""
    idle.close()
    ws.send("still here")
    assert ws.recv(timeout=5) == "still here"
    ws.close()


def test_sighup_reloads_the_certificate_without_dropping_connections(start_halley, certs, tmp_path):
    cert, key = str(tmp_path / "cert.pem"), str(tmp_path / "key.pem")
    shutil.copy(certs["a"][0], cert)
    shutil.copy(certs["a"][1], key)
    h = start_halley("--tls-cert", cert, "--tls-key", key)  # TLS on the main port
    assert h.tls_port == h.port
    ctx_a = client_ctx(certs["a"][0], alpn=None)
    ws = ws_connect(f"wss://localhost:{h.port}/echo", ssl=ctx_a, open_timeout=5, legacy=True)
    shutil.copy(certs["b"][0], cert)
    shutil.copy(certs["b"][1], key)
    h.proc.send_signal(signal.SIGHUP)
    assert h.wait_for_log("TLS certificate and key reloaded")
    # new connections see certificate b
    resp, _, s = https_get(h.port, "/", certs["b"][0])
    assert resp.status_code == 200
    s.close()
    with pytest.raises(ssl.SSLCertVerificationError):
        https_get(h.port, "/", certs["a"][0])
    # the old connection goes on
    ws.send("after reload")
    assert ws.recv(timeout=5) == "after reload"
    ws.close()
    # a broken file on the next reload: the current certificate stays
    with open(key, "w") as f:
        f.write("not a key")
    h.proc.send_signal(signal.SIGHUP)
    assert h.wait_for_log("TLS reload failed, keeping the old certificate")
    resp, _, s = https_get(h.port, "/", certs["b"][0])
    assert resp.status_code == 200
    s.close()


@pytest.mark.parametrize("case", ["missing", "unreadable", "mismatch", "not-pem", "encrypted", "only-cert"])
def test_startup_errors(certs, tmp_path, public_root, case):
    from halley_client import HALLEY_BIN
    cert, key = certs["a"]
    args = ["--tls-cert", cert, "--tls-key", key]
    expect = ""
    if case == "missing":
        args[3] = str(tmp_path / "nope.key")
        expect = "not found"
    elif case == "unreadable":
        p = tmp_path / "locked.key"
        shutil.copy(key, p)
        os.chmod(p, 0)
        if os.access(p, os.R_OK):
            pytest.skip("running as root: permissions do not apply")
        args[3] = str(p)
        expect = "not readable"
    elif case == "mismatch":
        args[3] = certs["b"][1]
        expect = "does not match"
    elif case == "not-pem":
        p = tmp_path / "junk.pem"
        p.write_text("junk")
        args[1] = str(p)
        expect = "not a PEM certificate"
    elif case == "encrypted":
        p = tmp_path / "enc.key"
        subprocess.run(["openssl", "pkey", "-in", key, "-out", str(p), "-aes256", "-passout", "pass:secret"], check=True)
        args[3] = str(p)
        expect = "is encrypted"
    elif case == "only-cert":
        args = ["--tls-cert", cert]
        expect = "needs both"
    r = subprocess.run([HALLEY_BIN, "--port", "0", "--public", public_root, *args], capture_output=True, text=True, timeout=10,
                       stdin=subprocess.DEVNULL)
    assert r.returncode != 0
    assert expect in (r.stdout + r.stderr), r.stdout + r.stderr
