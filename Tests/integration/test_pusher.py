"""Pusher compatibility over real sockets: private and presence channels, client events,
user sign-in, connection errors, and the HTTP API driven by the official Pusher server SDK
(PyPI `pusher`) and a third-party protocol client (PyPI `Pysher`).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import socket
import struct
import threading
import time

import pusher
import pusher.errors
import pytest

import pusher_xhr
from hub_client import HOST, WS, http_request, publish, publish_signed, pusher_client, wait_until

KEY, SECRET = "app-key", "app-secret"


def sign(text, secret=SECRET):
    return hmac.new(secret.encode(), text.encode(), hashlib.sha256).hexdigest()


class Client(WS):
    """A plain Pusher-protocol session (what pusher-js speaks), with helpers."""

    def __init__(self, port, **kw):
        kw.setdefault("halley", False)
        super().__init__(port, **kw)
        self.hello()
        self.socket_id = self.established["socket_id"]

    def next(self, event=None, timeout=5.0):
        """The next message (skipping others when `event` is given)."""
        deadline = time.monotonic() + timeout
        while True:
            m = self.recv(timeout=max(0.05, deadline - time.monotonic()))
            if event is None or m["event"] == event:
                return m

    def quiet(self, seconds=0.3):
        """Messages that arrive within `seconds` (none expected, usually)."""
        got = []
        try:
            while True:
                got.append(self.recv(timeout=seconds))
        except TimeoutError:
            return got

    def sub(self, channel, auth=None, channel_data=None):
        data = {"channel": channel}
        if auth is not None:
            data["auth"] = auth
        if channel_data is not None:
            data["channel_data"] = channel_data
        self.send({"event": "pusher:subscribe", "data": data})
        m = self.next()
        return m

    def sub_private(self, channel, client=None):
        a = (client or sdk_default()).authenticate(channel=channel, socket_id=self.socket_id)
        m = self.sub(channel, a["auth"])
        assert m["event"] == "pusher_internal:subscription_succeeded", m
        return m

    def sub_presence(self, channel, user_id, info=None, client=None):
        a = (client or sdk_default()).authenticate(channel=channel, socket_id=self.socket_id,
                                                   custom_data={"user_id": user_id, "user_info": info or {}})
        m = self.sub(channel, a["auth"], a["channel_data"])
        assert m["event"] == "pusher_internal:subscription_succeeded", m
        return json.loads(m["data"])["presence"]


_sdk = {}


def sdk_default():
    return _sdk["c"]


@pytest.fixture
def sdk(halley):
    c = pusher_client(halley.port)
    _sdk["c"] = c
    return c


# ---- private channels

def test_private_channel_with_sdk_auth_receives_sdk_events(halley, sdk):
    c = Client(halley.port)
    c.sub_private("private-orders")
    assert sdk.trigger("private-orders", "created", {"id": 7}) == {}
    m = c.next("created")
    assert m["channel"] == "private-orders" and json.loads(m["data"]) == {"id": 7}
    c.close()


@pytest.mark.parametrize("auth, why", [
    (None, "no auth"),
    ("app-key:" + "0" * 64, "wrong signature"),
    ("other-key:" + "0" * 64, "other key"),
    ("garbage", "malformed"),
])
def test_private_channel_refuses_bad_auth(halley, sdk, auth, why):
    c = Client(halley.port)
    m = c.sub("private-x", auth)
    assert m["event"] == "pusher:subscription_error" and m["channel"] == "private-x", (why, m)
    d = json.loads(m["data"])
    assert d["type"] == "AuthError" and d["status"] == 401, d
    # nothing delivered on a refused subscription
    sdk.trigger("private-x", "e", "x")
    assert c.quiet() == []
    c.close()


def test_auth_of_another_socket_is_refused(halley, sdk):
    a, b = Client(halley.port), Client(halley.port)
    auth = sdk.authenticate(channel="private-x", socket_id=a.socket_id)["auth"]
    m = b.sub("private-x", auth)
    assert m["event"] == "pusher:subscription_error", m
    a.close(); b.close()


def test_encrypted_channel_is_relayed_untouched(halley, sdk):
    c = Client(halley.port)
    # the hub checks the subscription signature only; the shared secret stays with the app
    m = c.sub("private-encrypted-vault", f"{KEY}:" + sign(f"{c.socket_id}:private-encrypted-vault"))
    assert m["event"] == "pusher_internal:subscription_succeeded", m
    payload = json.dumps({"ciphertext": "AAEC", "nonce": "BBBB"})
    status, _, body = signed(halley.port, "POST", "/apps/1/events",
                             {"name": "secret", "channel": "private-encrypted-vault", "data": payload})
    assert status == 200, body
    m = c.next("secret")
    assert m["data"] == payload
    c.close()


# ---- presence

def test_presence_roster_and_member_events(halley, sdk):
    a = Client(halley.port)
    roster = a.sub_presence("presence-room", "alice", {"name": "Alice"})
    assert roster == {"ids": ["alice"], "hash": {"alice": {"name": "Alice"}}, "count": 1}

    b = Client(halley.port)
    roster = b.sub_presence("presence-room", "bob", {"name": "Bob"})
    assert sorted(roster["ids"]) == ["alice", "bob"] and roster["count"] == 2
    assert roster["hash"]["alice"] == {"name": "Alice"}
    m = a.next("pusher_internal:member_added")
    assert m["channel"] == "presence-room" and json.loads(m["data"]) == {"user_id": "bob", "user_info": {"name": "Bob"}}
    assert b.quiet() == []  # no member_added for oneself

    # bob's second connection: no member_added; its departure: no member_removed
    b2 = Client(halley.port)
    roster = b2.sub_presence("presence-room", "bob", {"name": "Bob"})
    assert roster["count"] == 2
    assert a.quiet() == []
    b2.close()
    assert a.quiet(0.5) == []

    # bob's last connection leaves: member_removed
    b.close()
    m = a.next("pusher_internal:member_removed")
    assert json.loads(m["data"]) == {"user_id": "bob"}

    assert sdk.users_info("presence-room") == {"users": [{"id": "alice"}]}
    assert sdk.channel_info("presence-room", ["user_count"]) == {"occupied": True, "user_count": 1}
    a.close()


def test_presence_numeric_user_id_and_bad_channel_data(halley, sdk):
    c = Client(halley.port)
    roster = c.sub_presence("presence-n", 42)
    assert roster["ids"] == ["42"]
    # channel_data that is not what was signed
    a = sdk.authenticate(channel="presence-m", socket_id=c.socket_id, custom_data={"user_id": "1"})
    m = c.sub("presence-m", a["auth"], json.dumps({"user_id": "2"}))
    assert m["event"] == "pusher:subscription_error", m
    # channel_data without user_id (validly signed)
    cd = json.dumps({"user_info": {}})
    m = c.sub("presence-m", f"{KEY}:" + sign(f"{c.socket_id}:presence-m:{cd}"), cd)
    assert m["event"] == "pusher:subscription_error" and json.loads(m["data"])["status"] == 400, m
    c.close()


def test_presence_member_limit(start_halley):
    h = start_halley("--max-presence-members", "2")
    cl = pusher_client(h.port)
    cs = [Client(h.port) for _ in range(3)]
    for i in range(2):
        cs[i].sub_presence("presence-full", f"u{i}", client=cl)
    a = cl.authenticate(channel="presence-full", socket_id=cs[2].socket_id, custom_data={"user_id": "u2"})
    m = cs[2].sub("presence-full", a["auth"], a["channel_data"])
    assert m["event"] == "pusher:subscription_error", m
    d = json.loads(m["data"])
    assert d["status"] == 403 and "full" in d["error"], d
    # an existing user's further session still joins
    a = cl.authenticate(channel="presence-full", socket_id=cs[2].socket_id, custom_data={"user_id": "u0"})
    assert cs[2].sub("presence-full", a["auth"], a["channel_data"])["event"] == "pusher_internal:subscription_succeeded"
    for c in cs:
        c.close()


# ---- client events

def test_client_events_relay_not_echoed(halley, sdk):
    a, b = Client(halley.port), Client(halley.port)
    a.sub_private("private-chat")
    b.sub_private("private-chat")
    a.send({"event": "client-typing", "channel": "private-chat", "data": {"who": "a"}})
    m = b.next("client-typing")
    assert m["channel"] == "private-chat" and json.loads(m["data"]) == {"who": "a"}
    assert "user_id" not in m
    assert a.quiet() == []
    a.close(); b.close()


def test_presence_client_events_carry_user_id(halley, sdk):
    a, b = Client(halley.port), Client(halley.port)
    a.sub_presence("presence-chat", "ann")
    b.sub_presence("presence-chat", "ben")
    a.next("pusher_internal:member_added")
    a.send({"event": "client-hi", "channel": "presence-chat", "data": "hello"})
    m = b.next("client-hi")
    assert m["user_id"] == "ann" and m["data"] == "hello"
    a.close(); b.close()


@pytest.mark.parametrize("channel, subscribe", [("public-x", True), ("private-not-mine", False)])
def test_client_events_refused_on_public_or_unsubscribed_channels(halley, sdk, channel, subscribe):
    a = Client(halley.port)
    if subscribe:
        assert a.sub(channel)["event"] == "pusher_internal:subscription_succeeded"
    a.send({"event": "client-x", "channel": channel, "data": {}})
    m = a.next("pusher:error")
    # 4301 is Pusher's code for the rate limit only; other refusals carry no code.
    assert m["data"]["code"] is None, m
    assert ("private and presence" if subscribe else "not subscribed") in m["data"]["message"], m
    a.close()


def test_client_event_rate_limit(halley, sdk):
    a, b = Client(halley.port), Client(halley.port)
    a.sub_private("private-rate")
    b.sub_private("private-rate")
    # 25 in a burst: 10 per second pass (the burst may straddle a second boundary: ≤ 20)
    for i in range(25):
        a.send({"event": "client-n", "channel": "private-rate", "data": {"i": i}})
    errors = []
    deadline = time.monotonic() + 1
    while time.monotonic() < deadline:
        try:
            m = a.recv(timeout=0.2)
        except TimeoutError:
            break
        if m["event"] == "pusher:error":
            errors.append(m["data"])
    got = [m for m in b.quiet(0.5) if m["event"] == "client-n"]
    assert 10 <= len(got) <= 20, len(got)
    assert len(errors) == 25 - len(got)
    assert all(e["code"] == 4301 and "rate limit" in e["message"] for e in errors)
    a.close(); b.close()


def test_client_events_can_be_disabled(start_halley, tmp_path):
    cfg = tmp_path / "apps.json"
    cfg.write_text(json.dumps({"apps": [{"id": "5", "key": "k5", "secret": "s5", "client_events": False}]}))
    h = start_halley("--config", str(cfg))
    cl = pusher_client(h.port, app_id="5", key="k5", secret="s5")
    a = Client(h.port, key="k5")
    a.sub_private("private-q", client=cl)
    a.send({"event": "client-x", "channel": "private-q", "data": {}})
    m = a.next("pusher:error")
    assert m["data"]["code"] is None and "not enabled" in m["data"]["message"]
    a.close()


def test_an_apps_event_limits_hold_on_every_path(start_halley, tmp_path):
    """One check for every way of publishing (issue 17): an app's `max_event_bytes` (64 here,
    the node's default is 10 KiB) and the 200-byte event name, both counted in UTF-8 bytes, on
    POST /publish (bearer and signed, text and base64), the HTTP API's events and
    batch_events, and client events over WebSocket and pusher-js's xhr_send. At the limit the
    event arrives; one byte over it is refused with the path's own error and arrives nowhere.
    Another app keeps the node's limit."""
    cfg = tmp_path / "apps.json"
    cfg.write_text(json.dumps({"apps": [
        {"id": "7", "key": "k7", "secret": "s7", "token": "t7", "max_event_bytes": 64},
        {"id": "8", "key": "k8", "secret": "s8", "token": "t8"}]}))
    h = start_halley("--config", str(cfg))
    cl = pusher_client(h.port, app_id="7", key="k7", secret="s7")
    ch = "private-lim"
    recv = Client(h.port, key="k7")
    recv.sub_private(ch, client=cl)
    at, over = "é" * 32, "é" * 32 + "x"  # 64 and 65 bytes (33 characters)
    name_at, name_over = "é" * 100, "é" * 100 + "x"  # 200 and 201 bytes

    def arrives(event, data):
        m = recv.next(event)
        assert m["channel"] == ch and m["data"] == data, m

    def nothing_arrives():
        assert [m for m in recv.quiet(0.3) if not m["event"].startswith("pusher")] == []

    def bearer(body, token="t7"):
        return publish(h.port, body, token=token)

    # POST /publish with a bearer token: text, base64, and the name.
    assert bearer({"channel": ch, "event": "p1", "data": at})[0] == 201
    arrives("p1", at)
    status, body = bearer({"channel": ch, "event": "p1", "data": over})
    assert status == 413 and "event data is 65 bytes; the limit is 64" in body["error"], body
    status, body = bearer({"channel": ch, "event": "p2", "data_base64": base64.b64encode(b"\0" * 65).decode()})
    assert status == 413 and "event data is 65 bytes" in body["error"], body
    assert bearer({"channel": ch, "event": name_at, "data": "n"})[0] == 201
    arrives(name_at, "n")
    status, body = bearer({"channel": ch, "event": name_over, "data": "n"})
    assert status == 400 and "event name is longer than 200 bytes" in body["error"], body
    nothing_arrives()
    # The same body is fine for the other app (the node's 10 KiB).
    assert bearer({"channel": ch, "event": "p1", "data": over}, token="t8")[0] == 202
    # POST /publish signed like the HTTP API.
    status, body = publish_signed(h.port, {"channel": ch, "event": "p3", "data": over}, key="k7", secret="s7")
    assert status == 413 and "event data is 65 bytes" in body["error"], body
    # The HTTP API: events and batch_events.
    status, _, body = signed(h.port, "POST", "/apps/7/events", {"name": "a1", "channel": ch, "data": at}, key="k7", secret="s7")
    assert status == 200, body
    arrives("a1", at)
    for name, data, want, text in [("a1", over, 413, "event data is 65 bytes; the limit is 64"),
                                   (name_over, "n", 400, "event name is longer than 200 bytes")]:
        status, _, body = signed(h.port, "POST", "/apps/7/events", {"name": name, "channel": ch, "data": data}, key="k7", secret="s7")
        assert status == want and text in body.decode(), body
        status, _, body = signed(h.port, "POST", "/apps/7/batch_events",
                                 {"batch": [{"name": "b1", "channel": ch, "data": "ok"}, {"name": name, "channel": ch, "data": data}]},
                                 key="k7", secret="s7")
        assert status == want and text in body.decode(), body
    nothing_arrives()  # a refused batch publishes none of its events
    # Client events over WebSocket.
    a = Client(h.port, key="k7")
    a.sub_private(ch, client=cl)
    a.send({"event": "client-w", "channel": ch, "data": at})
    arrives("client-w", at)
    a.send({"event": "client-w", "channel": ch, "data": over})
    m = a.next("pusher:error")
    assert m["data"]["message"] == "event data is 65 bytes; the limit is 64", m
    a.send({"event": "client-" + "é" * 97, "channel": ch, "data": "n"})  # 7 + 194 = 201 bytes
    assert a.next("pusher:error")["data"]["message"] == "event name is longer than 200 bytes"
    # A binary client event counts its decoded bytes (88 characters of base64 for 64 bytes).
    b64_at, b64_over = base64.b64encode(bytes(range(64))).decode(), base64.b64encode(bytes(range(65))).decode()
    a.send({"event": "client-b", "channel": ch, "data": b64_at, "halley:binary": True})
    m = recv.next("client-b")
    assert m["halley:binary"] is True and base64.b64decode(m["data"]) == bytes(range(64)), m
    a.send({"event": "client-b", "channel": ch, "data": b64_over, "halley:binary": True})
    assert a.next("pusher:error")["data"]["message"] == "event data is 65 bytes; the limit is 64"
    nothing_arrives()
    a.close()
    # Client events over pusher-js's xhr_send.
    x = pusher_xhr.Client(h.port, key="k7")
    st, est = pusher_xhr.open_stream(x)
    x.subscribe(ch, "k7:" + sign(f"{est['socket_id']}:{ch}", "s7"))
    assert pusher_xhr.next_message(st)["event"] == "pusher_internal:subscription_succeeded"
    assert x.send("client-x", at, channel=ch)[0] == 204
    arrives("client-x", at)
    assert x.send("client-x", over, channel=ch)[0] == 204
    m = pusher_xhr.next_message(st, "pusher:error")
    assert m["data"]["message"] == "event data is 65 bytes; the limit is 64", m
    assert x.send("client-" + "é" * 97, "n", channel=ch)[0] == 204
    m = pusher_xhr.next_message(st, "pusher:error")
    assert m["data"]["message"] == "event name is longer than 200 bytes", m
    nothing_arrives()
    st.abort()
    recv.close()


# ---- user sign-in and events to a user

def signin(c, user_id, secret=SECRET):
    user_data = json.dumps({"id": user_id, "name": "N"})
    c.send({"event": "pusher:signin", "data": {"auth": f"{KEY}:" + sign(f"{c.socket_id}::user::{user_data}", secret),
                                               "user_data": user_data}})
    return user_data


def test_signin_events_to_user_and_terminate(halley, sdk):
    c = Client(halley.port)
    user_data = signin(c, "u-42")
    m = c.next()
    assert m["event"] == "pusher:signin_success" and json.loads(m["data"]) == {"user_data": user_data}, m
    # pusher-js then subscribes to its user channel
    m = c.sub("#server-to-user-u-42", "")
    assert m["event"] == "pusher_internal:subscription_succeeded", m
    sdk.send_to_user("u-42", "notice", {"n": 1})
    m = c.next("notice")
    assert m["channel"] == "#server-to-user-u-42" and json.loads(m["data"]) == {"n": 1}

    other = Client(halley.port)
    assert other.sub("#server-to-user-u-42", "")["event"] == "pusher:subscription_error"

    # the Python SDK's terminate path (no /apps/{id} prefix)
    assert sdk.terminate_user_connections("u-42") == {}
    m = c.next("pusher:error")
    assert m["data"]["code"] == 4009
    with pytest.raises(Exception):
        c.recv(timeout=2)
    assert c.ws.close_code == 4009
    other.close()


def test_signin_with_bad_signature(halley):
    c = Client(halley.port)
    signin(c, "u-1", secret="wrong")
    m = c.next("pusher:error")
    assert m["data"]["code"] == 4009 and "signature" in m["data"]["message"].lower()
    c.close()


# ---- connection errors

@pytest.mark.parametrize("path, code", [
    ("/app/nope?protocol=7", 4001),
    ("/app/app-key?protocol=99", 4007),
    ("/app/app-key", 4008),
])
def test_connection_errors_close_with_pusher_codes(halley, path, code):
    from websockets.sync.client import connect
    ws = connect(f"ws://{HOST}:{halley.port}{path}", open_timeout=5, legacy=True)
    m = json.loads(ws.recv(timeout=5))
    assert m["event"] == "pusher:error" and m["data"]["code"] == code, m
    with pytest.raises(Exception):
        ws.recv(timeout=5)
    assert ws.close_code == code
    ws.close()


def test_disabled_app_and_connection_quota(start_halley, tmp_path):
    cfg = tmp_path / "apps.json"
    cfg.write_text(json.dumps({"apps": [
        {"id": "7", "key": "off", "secret": "s7", "enabled": False},
        {"id": "8", "key": "small", "secret": "s8", "max_connections": 1},
    ]}))
    h = start_halley("--config", str(cfg))
    from websockets.sync.client import connect
    ws = connect(f"ws://{HOST}:{h.port}/app/off?protocol=7", open_timeout=5, legacy=True)
    assert json.loads(ws.recv(timeout=5))["data"]["code"] == 4003
    ws.close()
    first = Client(h.port, key="small")
    ws = connect(f"ws://{HOST}:{h.port}/app/small?protocol=7", open_timeout=5, legacy=True)
    assert json.loads(ws.recv(timeout=5))["data"]["code"] == 4004
    with pytest.raises(Exception):
        ws.recv(timeout=5)
    assert ws.close_code == 4004
    first.close()
    # the quota frees when the first leaves
    assert wait_until(lambda: _connects(h.port, "small"))
    # the disabled app's API: 403
    cl = pusher_client(h.port, app_id="7", key="off", secret="s7")
    with pytest.raises(pusher.errors.PusherForbidden):
        cl.trigger("c", "e", "d")


def _connects(port, key):
    try:
        c = Client(port, key=key)
        c.close()
        return True
    except AssertionError:
        return False


def test_ping_timeout_closes_4201(start_halley):
    h = start_halley("--ws-ping-interval", "1", "--ws-pong-timeout", "1")
    s = socket.create_connection((HOST, h.port), timeout=10)
    s.sendall(b"GET /app/app-key?protocol=7 HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
              b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n")
    data = b""
    deadline = time.monotonic() + 10
    close_code = None
    texts = []
    while time.monotonic() < deadline and close_code is None:
        chunk = s.recv(65536)
        if not chunk:
            break
        data += chunk
        if b"\r\n\r\n" in data and data.startswith(b"HTTP/1.1 101"):
            head, _, rest = data.partition(b"\r\n\r\n")
            frames = rest
            while len(frames) >= 2:
                op, ln = frames[0] & 0x0F, frames[1] & 0x7F
                if ln > 125 or len(frames) < 2 + ln:
                    break
                payload = frames[2:2 + ln]
                frames = frames[2 + ln:]
                if op == 1:
                    texts.append(json.loads(payload))
                elif op == 8:
                    close_code = struct.unpack(">H", payload[:2])[0]
    s.close()
    assert close_code == 4201, (close_code, data[-200:])
    assert any(t["event"] == "pusher:error" and t["data"]["code"] == 4201 for t in texts), texts


# ---- the HTTP API with the official SDK

def signed(port, method, path, body=None, key=KEY, secret=SECRET, tamper=None, query=None):
    """A request signed by the SDK's own signer (pusher.http.Request)."""
    client = pusher_client(port, key=key, secret=secret)
    params = body if method == "POST" else (query or {})
    req = pusher.http.Request(client._pusher_client, method, path, params)
    qs = req.query_string
    if tamper:
        qs = tamper(qs)
    status, headers, data = http_request(port, method, f"{path}?{qs}", req.body if method == "POST" else None,
                                         {"Content-Type": "application/json"} if method == "POST" else {})
    return status, headers, data


def test_sdk_trigger_batch_and_socket_exclusion(halley, sdk):
    a, b = Client(halley.port), Client(halley.port)
    for c in (a, b):
        assert c.sub("news")["event"] == "pusher_internal:subscription_succeeded"
        assert c.sub("sport")["event"] == "pusher_internal:subscription_succeeded"
    assert sdk.trigger(["news", "sport"], "flash", "both", socket_id=a.socket_id) == {}
    got = {b.next("flash")["channel"], b.next("flash")["channel"]}
    assert got == {"news", "sport"}
    assert [m for m in a.quiet() if m["event"] == "flash"] == []
    r = sdk.trigger_batch([{"channel": "news", "name": "b1", "data": "1"},
                           {"channel": "sport", "name": "b2", "data": {"x": 2}}])
    assert r == {}
    assert b.next("b1")["data"] == "1"
    assert json.loads(b.next("b2")["data"]) == {"x": 2}
    a.close(); b.close()


def test_sdk_channel_queries(halley, sdk):
    cs = [Client(halley.port) for _ in range(3)]
    for c in cs:
        c.sub("q-public")
    cs[0].sub_presence("presence-q", "p1")
    cs[1].sub_presence("presence-q", "p2")
    r = sdk.channels_info(prefix_filter="q-")
    assert r == {"channels": {"q-public": {}}}, r
    r = sdk.channels_info(prefix_filter="presence-q", attributes=["user_count"])
    assert r == {"channels": {"presence-q": {"user_count": 2}}}, r
    assert sdk.channel_info("q-public", ["subscription_count"]) == {"occupied": True, "subscription_count": 3}
    assert sdk.channel_info("q-empty") == {"occupied": False}
    assert sorted(u["id"] for u in sdk.users_info("presence-q")["users"]) == ["p1", "p2"]
    with pytest.raises(pusher.errors.PusherBadRequest):
        sdk.channel_info("q-public", ["user_count"])
    with pytest.raises(pusher.errors.PusherBadRequest):
        sdk.channels_info(attributes=["user_count"])
    with pytest.raises(pusher.errors.PusherBadRequest):
        sdk.users_info("q-public")
    with pytest.raises(pusher.errors.PusherBadRequest):
        sdk.channel_info("presence-q", ["subscription_count"])
    for c in cs:
        c.close()


def test_events_info_counts(halley, sdk):
    cs = [Client(halley.port) for _ in range(2)]
    for c in cs:
        c.sub("info-ch")
    cs[0].sub_presence("presence-info", "x")
    status, _, body = signed(halley.port, "POST", "/apps/1/events",
                             {"name": "e", "channels": ["info-ch", "presence-info"], "data": "d",
                              "info": "subscription_count,user_count"})
    assert status == 200, body
    assert json.loads(body) == {"channels": {"info-ch": {"subscription_count": 2},
                                             "presence-info": {"user_count": 1}}}
    status, _, body = signed(halley.port, "POST", "/apps/1/batch_events",
                             {"batch": [{"name": "e", "channel": "info-ch", "data": "d", "info": "subscription_count"},
                                        {"name": "e", "channel": "info-ch", "data": "d"}]})
    assert status == 200 and json.loads(body) == {"batch": [{"subscription_count": 2}, {}]}, body
    for c in cs:
        c.close()


def test_cache_channel_info(halley, sdk):
    sdk.trigger("cache-weather", "now", {"t": 21})
    r = sdk.channel_info("cache-weather", ["cache"])
    assert r["occupied"] is False and json.loads(r["cache"]["data"]) == {"t": 21} and 0 < r["cache"]["ttl"] <= 1800, r


# ---- the HTTP API's errors: Pusher's statuses and plain-text bodies

def _replace(name, value):
    def f(qs):
        parts = [p for p in qs.split("&") if not p.startswith(name + "=")]
        return "&".join(parts + [f"{name}={value}"])
    return f


@pytest.mark.parametrize("tamper, status, text", [
    (_replace("auth_signature", "0" * 64), 401, "Invalid signature"),
    (_replace("auth_timestamp", str(int(time.time()) - 3600)), 401, "Timestamp expired"),
    (_replace("body_md5", "0" * 32), 401, "body_md5"),
    (_replace("auth_key", "nope"), 401, "Unknown auth_key"),
    (_replace("auth_version", "2.0"), 401, "auth_version"),
])
def test_api_refuses_bad_signatures(halley, tamper, status, text):
    s, headers, body = signed(halley.port, "POST", "/apps/1/events", {"name": "e", "channel": "c", "data": "d"}, tamper=tamper)
    assert s == status and text in body.decode(), (s, body)
    assert headers["content-type"].startswith("text/plain") and body.endswith(b"\n")


def test_api_errors(halley, sdk):
    s, _, body = signed(halley.port, "POST", "/apps/99/events", {"name": "e", "channel": "c", "data": "d"})
    assert s == 404, body
    s, _, body = signed(halley.port, "POST", "/apps/1/events", {"name": "e", "channel": "c", "data": "x" * 10241})
    assert s == 413 and b"10240" in body, body
    s, _, body = signed(halley.port, "POST", "/apps/1/events", {"name": "e", "channel": "c", "data": "x" * 10240})
    assert s == 200, body
    s, _, body = signed(halley.port, "POST", "/apps/1/events", {"name": "e", "channels": [f"c{i}" for i in range(101)], "data": "d"})
    assert s == 400 and b"Too many channels" in body, body
    s, _, body = signed(halley.port, "POST", "/apps/1/events", {"name": "e", "channel": "bad channel", "data": "d"})
    assert s == 400, body
    s, _, body = signed(halley.port, "POST", "/apps/1/events", {"channel": "c", "data": "d"})
    assert s == 400 and b"name" in body, body
    s, _, body = signed(halley.port, "POST", "/apps/1/batch_events",
                        {"batch": [{"name": "e", "channel": "c", "data": "d"}] * 11})
    assert s == 400 and b"10" in body, body
    s, _, body = signed(halley.port, "POST", "/apps/1/batch_events",
                        {"batch": [{"name": "e", "channel": "c", "data": "d"}, {"name": "e", "channel": "c", "data": "x" * 20000}]})
    assert s == 413, body
    # the SDK maps them to its exceptions
    with pytest.raises(pusher.errors.PusherBadStatus, match="413"):
        sdk.trigger_batch([{"channel": "c", "name": "e", "data": "x" * 10000}, {"channel": "c", "name": "e", "data": "y" * 10300}],
                          already_encoded=True)
    bad = pusher_client(halley.port, secret="wrong")
    with pytest.raises(pusher.errors.PusherBadAuth):
        bad.trigger("c", "e", "d")


# ---- Pysher, a third-party protocol client

def test_pysher_public_private_presence(halley, sdk):
    import pysher
    got = {"public": [], "private": [], "presence": [], "sub": []}
    ready = threading.Event()
    p = pysher.Pusher(key=KEY, secret=SECRET, custom_host=HOST, port=halley.port, secure=False,
                      user_data={"user_id": "py-1", "user_info": {"name": "Py"}}, log_level=logging.WARNING)

    def on_connect(_data):
        for name, kind in (("py-public", "public"), ("private-py", "private"), ("presence-py", "presence")):
            ch = p.subscribe(name)
            ch.bind("pusher_internal:subscription_succeeded", lambda d, n=name: got["sub"].append((n, d)))
            ch.bind("ev", lambda d, k=kind: got[k].append(d))
        ready.set()

    p.connection.bind("pusher:connection_established", on_connect)
    p.connect()
    try:
        assert ready.wait(5)
        assert wait_until(lambda: len(got["sub"]) == 3, timeout=5), got
        subs = dict(got["sub"])
        assert json.loads(subs["presence-py"])["presence"]["hash"] == {"py-1": {"name": "Py"}}
        for name in ("py-public", "private-py", "presence-py"):
            sdk.trigger(name, "ev", {"to": name})
        assert wait_until(lambda: all(got[k] for k in ("public", "private", "presence")), timeout=5), got
        assert json.loads(got["private"][0]) == {"to": "private-py"}
        assert sdk.channel_info("presence-py", ["user_count"])["user_count"] == 1
    finally:
        p.disconnect(timeout=2)


# ---- limits and the server's own pings

def test_server_pings_with_pusher_ping(start_halley):
    h = start_halley("--ws-ping-interval", "1", "--ws-pong-timeout", "3")
    c = Client(h.port)
    m = c.next("pusher:ping", timeout=5)
    assert m == {"event": "pusher:ping", "data": {}}
    c.send({"event": "pusher:pong", "data": {}})
    # answered: still open after the pong timeout
    time.sleep(3.5)
    c.send({"event": "pusher:ping", "data": {}})
    assert c.next("pusher:pong", timeout=5)["event"] == "pusher:pong"
    c.close()


def test_presence_user_info_limit(halley, sdk):
    c = Client(halley.port)
    a = sdk.authenticate(channel="presence-big", socket_id=c.socket_id, custom_data={"user_id": "u", "user_info": {"x": "y" * 1100}})
    m = c.sub("presence-big", a["auth"], a["channel_data"])
    assert m["event"] == "pusher:subscription_error" and json.loads(m["data"])["status"] == 400, m
    a = sdk.authenticate(channel="presence-big", socket_id=c.socket_id, custom_data={"user_id": "u", "user_info": {"x": "y" * 900}})
    assert c.sub("presence-big", a["auth"], a["channel_data"])["event"] == "pusher_internal:subscription_succeeded"
    c.close()


def test_client_event_size_and_name_limits(halley, sdk):
    a, b = Client(halley.port), Client(halley.port)
    a.sub_private("private-lim")
    b.sub_private("private-lim")
    a.send({"event": "client-big", "channel": "private-lim", "data": "x" * 10241})
    assert "limit is 10240" in a.next("pusher:error")["data"]["message"]
    a.send({"event": "client-" + "n" * 200, "channel": "private-lim", "data": "x"})
    assert "longer than 200" in a.next("pusher:error")["data"]["message"]
    a.send({"event": "client-ok", "channel": "private-lim", "data": "x" * 10240})
    assert len(b.next("client-ok")["data"]) == 10240
    a.close(); b.close()


@pytest.mark.parametrize("skew, status", [(-600, 200), (600, 200), (-601, 401), (601, 401)])
def test_api_timestamp_window(halley, skew, status):
    ts = str(int(time.time()) + skew)
    s, _, body = signed(halley.port, "POST", "/apps/1/events", {"name": "e", "channel": "c", "data": "d"},
                        tamper=lambda qs: _resign(qs, ts, '{"name": "e", "channel": "c", "data": "d"}'))
    # the clock may tick between signing and checking: a boundary case may land one second out
    assert s == status or abs(skew) == 600, (skew, s, body)


def _resign(qs, ts, body):
    """The same query with another timestamp, signed again."""
    params = dict(p.split("=", 1) for p in qs.split("&"))
    params["auth_timestamp"] = ts
    params.pop("auth_signature", None)
    text = "POST\n/apps/1/events\n" + "&".join(f"{k}={params[k]}" for k in sorted(params))
    params["auth_signature"] = sign(text)
    return "&".join(f"{k}={v}" for k, v in params.items())


def test_user_channel_survives_unsubscribe_and_is_live_only(halley, sdk):
    c = Client(halley.port)
    signin(c, "u-keep")
    assert c.next("pusher:signin_success")
    c.send({"event": "pusher:unsubscribe", "data": {"channel": "#server-to-user-u-keep"}})
    sdk.send_to_user("u-keep", "still", {"n": 1})
    assert c.next("still")["channel"] == "#server-to-user-u-keep"
    # events to a user nobody is signed in as are not kept for later
    sdk.send_to_user("u-offline", "lost", {"n": 2})
    d = Client(halley.port)
    signin(d, "u-offline")
    assert d.next("pusher:signin_success")
    assert [m for m in d.quiet(0.5) if m["event"] == "lost"] == []
    c.close(); d.close()
