"""Clients for the hub's transports, for the integration tests.

- `publish` / `publish_signed`: POST /publish with a bearer token, or signed by the official
  Pusher server SDK's request signer (pusher.http.Request), exactly as a Pusher backend does.
- `WS`: a Pusher-protocol WebSocket session over the `websockets` library (sync client).
- `SSE`: an event stream read with http.client (chunked decoding by the standard library).
- `Poll`: long-polling with http.client.

Every call has a timeout: no test can hang.
"""

from __future__ import annotations

import base64
import http.client
import json
import socket
import struct
import time

import pusher
import pusher.http
from websockets.sync.client import connect as ws_connect

HOST = "127.0.0.1"
TIMEOUT = 5.0


# ---- publishing

def http_request(port, method, path, body=None, headers=None, timeout=TIMEOUT, source=None):
    """`source`: the local address to send from (any 127.x.y.z: another client to the hub)."""
    c = http.client.HTTPConnection(HOST, port, timeout=timeout, source_address=(source, 0) if source else None)
    try:
        c.request(method, path, body=body, headers=headers or {})
        r = c.getresponse()
        data = r.read()
        return r.status, dict((k.lower(), v) for k, v in r.getheaders()), data
    finally:
        c.close()


def publish(port, body, token="tok", raw=None):
    """POST /publish with a bearer token; returns (status, parsed JSON or raw bytes)."""
    payload = raw if raw is not None else json.dumps(body).encode()
    headers = {"Content-Type": "application/json"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    status, _, data = http_request(port, "POST", "/publish", payload, headers)
    try:
        return status, json.loads(data)
    except ValueError:
        return status, data


def pusher_client(port, app_id="1", key="app-key", secret="app-secret"):
    return pusher.Pusher(app_id=app_id, key=key, secret=secret, host=HOST, port=port, ssl=False)


def publish_signed(port, body, key="app-key", secret="app-secret", tamper=None):
    """POST /publish signed with the Pusher SDK's own signer. `tamper(query_string)` may alter
    the signed query before sending."""
    client = pusher_client(port, key=key, secret=secret)
    req = pusher.http.Request(client._pusher_client, "POST", "/publish", body)
    path = req.signed_path
    if tamper:
        path = "/publish?" + tamper(req.query_string)
    status, _, data = http_request(port, "POST", path, req.body, {"Content-Type": "application/json"})
    try:
        return status, json.loads(data)
    except ValueError:
        return status, data


# ---- messages

def decode_binary_frame(b: bytes):
    """A resumable session's binary frame: 4-byte header length, header JSON, payload."""
    (n,) = struct.unpack(">I", b[:4])
    header = json.loads(b[4:4 + n])
    return header, b[4 + n:]


def exact_text(n: int, seed: int, chars, lead="", fill="x") -> str:
    """Exactly `n` bytes of UTF-8: `lead`, then `chars` cycled from `seed` while they fit, then
    `fill` to the size (payloads across frame-length boundaries, byte for byte)."""
    out, used, i = [lead], len(lead.encode()), seed
    while True:
        c = chars[i % len(chars)]
        if used + len(c.encode()) > n:
            break
        out.append(c)
        used += len(c.encode())
        i += 1
    out.append(fill * (n - used))
    s = "".join(out)
    assert len(s.encode()) == n
    return s


def payload_of(msg):
    """The payload bytes of a received channel event (text, base64 flag, or binary frame)."""
    if "halley:binary_payload" in msg:
        return msg["halley:binary_payload"]
    if msg.get("halley:binary"):
        return base64.b64decode(msg["data"])
    return msg["data"].encode()


class Dedup:
    """What a Halley client does: keep messages whose seq is above the last one seen."""

    def __init__(self):
        self.last_seq = 0
        self.messages = []
        self.duplicates = 0

    def add(self, msg):
        seq = msg.get("halley:seq")
        if seq is None:
            self.messages.append(msg)
            return True
        if seq <= self.last_seq:
            self.duplicates += 1
            return False
        assert seq == self.last_seq + 1, f"seq jumped from {self.last_seq} to {seq}: {msg}"
        self.last_seq = seq
        self.messages.append(msg)
        return True

    def events(self, name=None):
        return [m for m in self.messages if not m["event"].startswith(("pusher", "halley:")) and (name is None or m["event"] == name)]


# ---- WebSocket

class WS:
    """A resume names the session and last seq in the URL and shows its token in the first
    message (`halley:resume`); `token_in_url=True` sends the old form (the token in the URL),
    which the hub takes only with --allow-tokens-in-urls."""

    def __init__(self, port, key="app-key", halley=True, session=None, token=None, last_seq=None, protocol="7",
                 compression="deflate", origin=None, extra="", token_in_url=False, sock=None):
        q = []
        if protocol is not None:
            q.append(f"protocol={protocol}")
        if halley:
            q.append("halley=1")
        if session:
            q += [f"session={session}", f"last_seq={last_seq or 0}"]
            if token_in_url:
                q.append(f"token={token}")
        url = f"ws://{HOST}:{port}/app/{key}?{'&'.join(q)}{extra}"
        kw = {}
        if origin:
            kw["origin"] = origin
        if sock is not None:
            kw["sock"] = sock
        self.ws = ws_connect(url, open_timeout=TIMEOUT, close_timeout=2, compression=compression, max_size=None, legacy=True, **kw)
        if session and not token_in_url and token is not None:  # token None: the test sends its own first message
            try:
                self.send({"event": "halley:resume", "data": {"token": token}})
            except Exception:  # noqa: BLE001 - a refused opening is closed already; recv() tells
                pass
        self.established = None

    def recv(self, timeout=TIMEOUT):
        m = self.ws.recv(timeout=timeout)
        if isinstance(m, bytes):
            header, payload = decode_binary_frame(m)
            header["halley:binary_payload"] = payload
            return header
        return json.loads(m)

    def hello(self):
        m = self.recv()
        assert m["event"] == "pusher:connection_established", m
        self.established = json.loads(m["data"])
        return self.established

    def send(self, obj):
        self.ws.send(json.dumps(obj))

    def subscribe(self, channel, since=None, wait=True):
        data = {"channel": channel}
        if since:
            data["halley:since"] = since
        self.send({"event": "pusher:subscribe", "data": data})
        if wait:
            m = self.recv()
            assert m["event"] == "pusher_internal:subscription_succeeded" and m["channel"] == channel, m
            return m

    def ack(self, seq):
        self.send({"event": "halley:ack", "data": {"seq": seq}})

    def abort(self):
        """Drops the TCP connection without a closing handshake."""
        sock = self.ws.socket
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()

    def close(self):
        try:
            self.ws.close()
        except Exception:
            pass


# ---- Server-Sent Events

class SSE:
    """`token`: sent in the X-Halley-Token header (with `session` and `last_seq` in `query`)."""

    def __init__(self, port, query="key=app-key", last_event_id=None, origin=None, timeout=TIMEOUT, token=None,
                 source=None):
        self.conn = http.client.HTTPConnection(HOST, port, timeout=timeout, source_address=(source, 0) if source else None)
        headers = {"Accept": "text/event-stream"}
        if last_event_id:
            headers["Last-Event-ID"] = last_event_id
        if token is not None:
            headers["X-Halley-Token"] = token
        if origin:
            headers["Origin"] = origin
        self.conn.request("GET", f"/halley/sse?{query}", headers=headers)
        self.resp = self.conn.getresponse()
        self.status = self.resp.status
        self.headers = dict((k.lower(), v) for k, v in self.resp.getheaders())
        self.last_id = None
        self.comments = []
        self.retry = None
        self.ended = False

    def event(self):
        """The next event as (id, parsed data); None when the stream ended."""
        data, eid = [], None
        while True:
            line = self.resp.readline()
            if not line:
                self.ended = True
                return None
            line = line.decode().rstrip("\n")
            if line == "":
                if data:
                    if eid is not None:
                        self.last_id = eid
                    return eid, json.loads("\n".join(data))
                continue
            if line.startswith(":"):
                self.comments.append(line)
                continue
            field, _, value = line.partition(":")
            value = value[1:] if value.startswith(" ") else value
            if field == "data":
                data.append(value)
            elif field == "id":
                eid = value
            elif field == "retry":
                self.retry = int(value)

    def recv(self):
        e = self.event()
        assert e is not None, "stream ended"
        return e[1]

    def close(self):
        self.conn.close()

    def abort(self):
        s = self.conn.sock
        if s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.conn.close()


# ---- long-polling and HTTP sending

class Poll:
    def __init__(self, port, key="app-key", origin=None, source=None):
        self.port = port
        self.origin = origin
        self.source = source
        status, headers, body = self.get(f"/halley/poll?key={key}")
        assert status == 200, (status, body)
        j = json.loads(body)
        self.session, self.token, self.cursor = j["session"], j["token"], j["cursor"]
        self.first = j

    def headers(self, token=None):
        h = {"Origin": self.origin} if self.origin else {}
        if token is not None:
            h["X-Halley-Token"] = token
        return h

    def get(self, path, timeout=30, token=None):
        return http_request(self.port, "GET", path, headers=self.headers(token), timeout=timeout, source=self.source)

    def poll(self, timeout=30):
        status, headers, body = self.get(f"/halley/poll?session={self.session}&cursor={self.cursor}", timeout, token=self.token)
        assert status == 200, (status, body)
        j = json.loads(body)
        self.cursor = j["cursor"]
        return j["messages"]

    def send(self, msg):
        h = {"Content-Type": "application/json", **self.headers(self.token)}
        status, _, body = http_request(self.port, "POST", f"/halley/send?session={self.session}",
                                       json.dumps(msg).encode(), h, source=getattr(self, "source", None))
        return status, json.loads(body)

    def subscribe(self, channel, since=None, auth=None):
        data = {"channel": channel}
        if since:
            data["halley:since"] = since
        if auth:
            data["auth"] = auth
        status, body = self.send({"event": "pusher:subscribe", "data": data})
        assert status == 200, (status, body)


def send_http(port, session, token, msg, source=None):
    """POST /halley/send with the token in the X-Halley-Token header."""
    status, _, body = http_request(port, "POST", f"/halley/send?session={session}", json.dumps(msg).encode(),
                                   {"Content-Type": "application/json", "X-Halley-Token": token}, source=source)
    return status, json.loads(body)


def token_header(token):
    return {"X-Halley-Token": token}


def wait_until(pred, timeout=5.0, step=0.02):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(step)
    return pred()
