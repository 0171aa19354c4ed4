"""The hub's API on the wire: POST /publish (bearer and Pusher-signed, validation, offsets,
socket_id exclusion), WebSocket opening and protocol errors, CORS and origins, and the
HTTP transports' error answers (poll, send, 409 on overlapping polls, cache- channels).

Every assertion is on what the server sends: status codes, JSON `error` texts,
`pusher:error` codes, WebSocket close codes, `pusher:subscription_error` data.
Limits (sizes, counts) are in test_hub_limits.py.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time

import pusher.signature
import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus

from halley_client import Halley
from hub_client import SSE, WS, Poll, http_request, publish, publish_signed, send_http, token_header

TOKEN = "tok"
GOOD = "http://good.example"
EVIL = "http://evil.example"


# ---- fixtures and helpers


@pytest.fixture(scope="module")
def hub(public_root):
    """One server for this module: a bearer token, origins limited to GOOD."""
    h = Halley(public_root, ["--app-token", TOKEN, "--origins", GOOD])
    yield h
    rc = h.stop()
    assert rc == 0, f"halley exited with {rc}\n{h.log_text()[-4000:]}"


_counter = [0]


def chan(prefix="c"):
    """A channel name no other test uses (the module's server is shared)."""
    _counter[0] += 1
    return f"{prefix}-{_counter[0]}-{time.monotonic_ns() % 10**9}"


def error_of(body):
    assert isinstance(body, dict) and isinstance(body.get("error"), str), body
    return body["error"]


def split_query(qs):
    return dict(p.split("=", 1) for p in qs.split("&"))


def resign(params, secret="app-secret"):
    """The query of `params` with a fresh auth_signature, by the Pusher SDK's rules: HMAC-SHA256
    of `POST\\n/publish\\n` + sorted `k=v` joined by `&`."""
    p = {k: v for k, v in params.items() if k != "auth_signature"}
    qs = "&".join(f"{k}={v}" for k, v in sorted(p.items()))
    p["auth_signature"] = pusher.signature.sign(secret, "POST\n/publish\n" + qs)
    return "&".join(f"{k}={v}" for k, v in sorted(p.items()))


def with_timestamp(ts):
    def tamper(qs):
        p = split_query(qs)
        p["auth_timestamp"] = str(ts)
        return resign(p)
    return tamper


def at_second_start():
    """Waits until the wall clock is early in a second, so that a request sent now is seen by
    the server in the same second."""
    while time.time() % 1 > 0.3:
        time.sleep(0.02)


def close_code(ws, timeout=5.0):
    """Reads until the server closes the WebSocket; returns (messages before, close code)."""
    msgs = []
    deadline = time.monotonic() + timeout
    while True:
        try:
            msgs.append(ws.recv(timeout=max(0.01, deadline - time.monotonic())))
        except ConnectionClosed as e:
            assert e.rcvd is not None, f"no close frame from the server: {e!r}"
            return msgs, e.rcvd.code
        except TimeoutError:
            raise AssertionError(f"WebSocket still open after {timeout} s; got {msgs}")


def sub_error_data(m, channel):
    assert m["event"] == "pusher:subscription_error", m
    assert m["channel"] == channel, m
    assert isinstance(m["data"], str), m  # Pusher protocol events carry data as a JSON string
    return json.loads(m["data"])


def subscribed_ws(port, channel, halley=True, **kw):
    w = WS(port, halley=halley, **kw)
    w.hello()
    w.subscribe(channel)
    return w


def recv_event(w, event, timeout=5.0):
    """The next message that is not a protocol message."""
    deadline = time.monotonic() + timeout
    while True:
        m = w.recv(timeout=max(0.01, deadline - time.monotonic()))
        if m["event"] == event:
            return m


def assert_silent(w, wait=0.3):
    try:
        m = w.recv(timeout=wait)
    except TimeoutError:
        return
    raise AssertionError(f"unexpected message: {m}")


# ---- POST /publish: authentication


def test_publish_bearer_202_without_subscribers(hub):
    c = chan()
    status, body = publish(hub.port, {"channel": c, "event": "e", "data": "x"})
    assert status == 202, body
    assert body["sessions"] == 0
    assert set(body["channels"]) == {c}
    assert body["channels"][c]["offset"] == 1
    assert isinstance(body["channels"][c]["epoch"], str) and body["channels"][c]["epoch"]


def test_publish_bearer_201_with_a_subscriber(hub):
    c = chan()
    w = subscribed_ws(hub.port, c)
    try:
        status, body = publish(hub.port, {"channel": c, "event": "e", "data": "hello"})
        assert status == 201, body
        assert body["sessions"] == 1
        assert body["channels"][c]["offset"] == 1
        m = recv_event(w, "e")
        assert m["channel"] == c and m["data"] == "hello" and m["halley:offset"] == 1
    finally:
        w.close()


def test_publish_bearer_with_key_query(hub):
    status, _, data = http_request(hub.port, "POST", "/publish?key=app-key",
                                   json.dumps({"channel": chan(), "event": "e", "data": ""}).encode(),
                                   {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"})
    assert status == 202, data
    status, _, data = http_request(hub.port, "POST", "/publish?key=other-key",
                                   json.dumps({"channel": chan(), "event": "e", "data": ""}).encode(),
                                   {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"})
    assert status == 401, data
    assert "unknown key" in error_of(json.loads(data))


def test_publish_wrong_token_401(hub):
    status, body = publish(hub.port, {"channel": chan(), "event": "e", "data": "x"}, token="tok2")
    assert status == 401, body
    assert "invalid bearer token" in error_of(body)


def test_publish_no_auth_401(hub):
    status, body = publish(hub.port, {"channel": chan(), "event": "e", "data": "x"}, token=None)
    assert status == 401, body
    assert "missing auth_key" in error_of(body)


def test_publish_bearer_refused_when_app_has_no_token(halley):
    status, body = publish(halley.port, {"channel": chan(), "event": "e", "data": "x"}, token="tok")
    assert status == 401, body
    assert "invalid bearer token" in error_of(body)


def test_publish_not_bearer_scheme_401(hub):
    status, _, data = http_request(hub.port, "POST", "/publish", json.dumps({"channel": chan(), "event": "e"}).encode(),
                                   {"Authorization": f"Basic {TOKEN}"})
    assert status == 401, data
    assert "Bearer" in error_of(json.loads(data))


def test_publish_signed_ok(hub):
    c = chan()
    w = subscribed_ws(hub.port, c)
    try:
        status, body = publish_signed(hub.port, {"channel": c, "event": "signed", "data": "s"})
        assert status == 201, body
        assert body["channels"][c]["offset"] == 1 and body["sessions"] == 1
        m = recv_event(w, "signed")
        assert m["data"] == "s"
    finally:
        w.close()


def test_publish_signed_tampered_signature_401(hub):
    def flip(qs):
        p = split_query(qs)
        s = p["auth_signature"]
        p["auth_signature"] = s[:-1] + ("0" if s[-1] != "0" else "1")
        return "&".join(f"{k}={v}" for k, v in sorted(p.items()))

    status, body = publish_signed(hub.port, {"channel": chan(), "event": "e", "data": "x"}, tamper=flip)
    assert status == 401, body
    assert "invalid auth_signature" in error_of(body)


def test_publish_signed_tampered_query_401(hub):
    # A parameter changed after signing (the signature no longer covers the query).
    def change(qs):
        p = split_query(qs)
        p["auth_timestamp"] = str(int(p["auth_timestamp"]) - 1)
        return "&".join(f"{k}={v}" for k, v in sorted(p.items()))

    status, body = publish_signed(hub.port, {"channel": chan(), "event": "e", "data": "x"}, tamper=change)
    assert status == 401, body
    assert "invalid auth_signature" in error_of(body)


def test_publish_signed_wrong_secret_401(hub):
    status, body = publish_signed(hub.port, {"channel": chan(), "event": "e", "data": "x"}, secret="not-the-secret")
    assert status == 401, body
    assert "invalid auth_signature" in error_of(body)


def test_publish_signed_unknown_key_401(hub):
    status, body = publish_signed(hub.port, {"channel": chan(), "event": "e", "data": "x"}, key="nokey")
    assert status == 401, body
    assert "unknown auth_key" in error_of(body)


def test_publish_signed_stale_timestamp_401(hub):
    status, body = publish_signed(hub.port, {"channel": chan(), "event": "e", "data": "x"},
                                  tamper=with_timestamp(int(time.time()) - 700))
    assert status == 401, body
    assert "auth_timestamp" in error_of(body)


def test_publish_signed_timestamp_skew_limit(hub):
    # 600 s away is accepted, 601 s refused, in the past and in the future.
    at_second_start()
    status, body = publish_signed(hub.port, {"channel": chan(), "event": "e", "data": "x"},
                                  tamper=with_timestamp(int(time.time()) - 600))
    assert status == 202, body
    status, body = publish_signed(hub.port, {"channel": chan(), "event": "e", "data": "x"},
                                  tamper=with_timestamp(int(time.time()) - 601))
    assert status == 401, body
    assert "auth_timestamp" in error_of(body) and "601" in error_of(body)
    at_second_start()
    status, body = publish_signed(hub.port, {"channel": chan(), "event": "e", "data": "x"},
                                  tamper=with_timestamp(int(time.time()) + 600))
    assert status == 202, body
    status, body = publish_signed(hub.port, {"channel": chan(), "event": "e", "data": "x"},
                                  tamper=with_timestamp(int(time.time()) + 602))
    assert status == 401, body
    assert "auth_timestamp" in error_of(body)


def test_publish_signed_body_md5_mismatch_401(hub):
    def other_md5(qs):
        p = split_query(qs)
        p["body_md5"] = hashlib.md5(b"another body").hexdigest()
        return resign(p)

    status, body = publish_signed(hub.port, {"channel": chan(), "event": "e", "data": "x"}, tamper=other_md5)
    assert status == 401, body
    assert "body_md5" in error_of(body)


def test_publish_signed_missing_auth_version_401(hub):
    def drop(qs):
        p = split_query(qs)
        del p["auth_version"]
        return resign(p)

    status, body = publish_signed(hub.port, {"channel": chan(), "event": "e", "data": "x"}, tamper=drop)
    assert status == 401, body
    assert "auth_version" in error_of(body)


# ---- POST /publish: validation


def test_publish_bad_json_400(hub):
    status, body = publish(hub.port, None, raw=b'{"channel": "a", "event": ')
    assert status == 400, body
    error_of(body)


def test_publish_not_an_object_400(hub):
    status, body = publish(hub.port, ["a", "e"])
    assert status == 400, body
    assert "JSON object" in error_of(body)


def test_publish_missing_event_400(hub):
    status, body = publish(hub.port, {"channel": chan(), "data": "x"})
    assert status == 400, body
    assert "missing event" in error_of(body)
    status, body = publish(hub.port, {"channel": chan(), "event": "", "data": "x"})
    assert status == 400, body
    assert "missing event" in error_of(body)


def test_publish_missing_channel_400(hub):
    status, body = publish(hub.port, {"event": "e", "data": "x"})
    assert status == 400, body
    assert "missing channel" in error_of(body)
    status, body = publish(hub.port, {"channels": [], "event": "e", "data": "x"})
    assert status == 400, body
    assert "missing channel" in error_of(body)


def test_publish_channels_not_an_array_400(hub):
    status, body = publish(hub.port, {"channels": "news", "event": "e", "data": "x"})
    assert status == 400, body
    assert "channels must be an array" in error_of(body)
    status, body = publish(hub.port, {"channels": ["news", 3], "event": "e", "data": "x"})
    assert status == 400, body
    assert "channels must be an array" in error_of(body)


def test_publish_bad_channel_name_400(hub):
    status, body = publish(hub.port, {"channel": "bad name", "event": "e", "data": "x"})
    assert status == 400, body
    assert "character outside" in error_of(body)
    # One bad name among good ones refuses the whole publish, and nothing is published.
    good = chan()
    status, body = publish(hub.port, {"channels": [good, "bad/name"], "event": "e", "data": "x"})
    assert status == 400, body
    assert "character outside" in error_of(body)
    status, body = publish(hub.port, {"channel": good, "event": "e", "data": "x"})
    assert status == 202 and body["channels"][good]["offset"] == 1, body
    # Every character Pusher allows is accepted.
    status, body = publish(hub.port, {"channel": "Az09-_=@,.;", "event": "e", "data": "x"})
    assert status == 202, body


def test_publish_data_base64_not_base64_400(hub):
    status, body = publish(hub.port, {"channel": chan(), "event": "e", "data_base64": "not base64!"})
    assert status == 400, body
    assert "data_base64 is not base64" in error_of(body)
    status, body = publish(hub.port, {"channel": chan(), "event": "e", "data_base64": 12})
    assert status == 400, body
    assert "data_base64 is not base64" in error_of(body)


def test_publish_data_base64_arrives_binary(hub):
    c = chan()
    w = subscribed_ws(hub.port, c, halley=False)
    try:
        status, body = publish(hub.port, {"channel": c, "event": "bin", "data_base64": "AAEC/w=="})
        assert status == 201, body
        m = recv_event(w, "bin")
        assert m["halley:binary"] is True and m["data"] == "AAEC/w=="
    finally:
        w.close()


@pytest.mark.parametrize("sid", ["abc", "1234", "1234.", ".5678", "12.34.56", "-1.5"])
def test_publish_bad_socket_id_400(hub, sid):
    status, body = publish(hub.port, {"channel": chan(), "event": "e", "data": "x", "socket_id": sid})
    assert status == 400, body
    assert "socket_id" in error_of(body)


def test_publish_socket_id_not_a_string_400(hub):
    status, body = publish(hub.port, {"channel": chan(), "event": "e", "data": "x", "socket_id": 1234.5678})
    assert status == 400, body
    assert "socket_id" in error_of(body)


def test_publish_socket_id_excludes_that_session(hub):
    c = chan()
    mine = subscribed_ws(hub.port, c, halley=False)
    other = subscribed_ws(hub.port, c, halley=False)
    try:
        sid = mine.established["socket_id"]
        status, body = publish(hub.port, {"channel": c, "event": "first", "data": "1", "socket_id": sid})
        assert status == 201, body
        m = recv_event(other, "first")
        assert m["data"] == "1" and m["halley:offset"] == 1
        status, body = publish(hub.port, {"channel": c, "event": "second", "data": "2"})
        assert status == 201, body
        # The publisher's own session skips "first" and gets "second" next.
        m = mine.recv()
        assert m["event"] == "second" and m["halley:offset"] == 2, m
        assert recv_event(other, "second")["halley:offset"] == 2
    finally:
        mine.close()
        other.close()


def test_publish_excluding_the_only_subscriber_reaches_none(hub):
    c = chan()
    mine = subscribed_ws(hub.port, c, halley=False)
    try:
        status, body = publish(hub.port, {"channel": c, "event": "e", "data": "x",
                                          "socket_id": mine.established["socket_id"]})
        assert_silent(mine)
        assert (status, body["sessions"]) == (202, 0), body
    finally:
        mine.close()


def test_publish_non_string_data_arrives_as_json_text(hub):
    c = chan()
    w = subscribed_ws(hub.port, c)
    try:
        values = [{"text": "hi", "n": [1, 2.5, None, True]}, [1, "two"], 42, None, False]
        for v in values:
            status, body = publish(hub.port, {"channel": c, "event": "obj", "data": v})
            assert status == 201, body
        for v in values:
            m = recv_event(w, "obj")
            assert isinstance(m["data"], str), m
            assert json.loads(m["data"]) == v, m
    finally:
        w.close()


def test_publish_missing_data_is_empty_string(hub):
    c = chan()
    w = subscribed_ws(hub.port, c)
    try:
        status, body = publish(hub.port, {"channel": c, "event": "nodata"})
        assert status == 201, body
        assert recv_event(w, "nodata")["data"] == ""
    finally:
        w.close()


def test_publish_offsets_grow_by_one_per_channel(hub):
    a, b = chan("a"), chan("b")
    wa = subscribed_ws(hub.port, a)
    wb = subscribed_ws(hub.port, b)
    try:
        epochs = set()
        for i in range(1, 4):
            status, body = publish(hub.port, {"channel": a, "event": "e", "data": str(i)})
            assert status == 201, body
            assert body["channels"][a]["offset"] == i
            epochs.add(body["channels"][a]["epoch"])
        assert len(epochs) == 1, "one channel keeps its epoch"
        status, body = publish(hub.port, {"channels": [a, b], "event": "multi", "data": "m"})
        assert status == 201, body
        assert set(body["channels"]) == {a, b}
        assert body["channels"][a]["offset"] == 4
        assert body["channels"][b]["offset"] == 1
        assert body["channels"][a]["epoch"] in epochs
        assert body["sessions"] == 2
        # Subscribers see the same offsets.
        got = [recv_event(wa, "e")["halley:offset"] for _ in range(3)]
        assert got == [1, 2, 3]
        ma, mb = recv_event(wa, "multi"), recv_event(wb, "multi")
        assert (ma["channel"], ma["halley:offset"]) == (a, 4)
        assert (mb["channel"], mb["halley:offset"]) == (b, 1)
        status, body = publish(hub.port, {"channel": b, "event": "e", "data": ""})
        assert body["channels"][b]["offset"] == 2
    finally:
        wa.close()
        wb.close()


def test_publish_duplicate_channel_published_once(hub):
    c = chan()
    w = subscribed_ws(hub.port, c)
    try:
        status, body = publish(hub.port, {"channels": [c, c], "event": "dup", "data": ""})
        assert status == 201, body
        assert body["channels"][c]["offset"] == 1 and body["sessions"] == 1
        recv_event(w, "dup")
        assert_silent(w)
    finally:
        w.close()


# ---- WebSocket opening and protocol errors


def test_ws_unknown_key_4001(hub):
    w = WS(hub.port, key="no-such-key")
    msgs, code = close_code(w)
    assert len(msgs) == 1, msgs
    assert msgs[0]["event"] == "pusher:error"
    assert msgs[0]["data"]["code"] == 4001, msgs
    assert code == 4001


def test_ws_no_protocol_4008(hub):
    w = WS(hub.port, protocol=None)
    msgs, code = close_code(w)
    assert [m["event"] for m in msgs] == ["pusher:error"]
    assert msgs[0]["data"]["code"] == 4008
    assert code == 4008


@pytest.mark.parametrize("version", ["99", "3", "8", "x"])
def test_ws_unsupported_protocol_4007(hub, version):
    w = WS(hub.port, protocol=version)
    msgs, code = close_code(w)
    assert [m["event"] for m in msgs] == ["pusher:error"]
    assert msgs[0]["data"]["code"] == 4007
    assert code == 4007


@pytest.mark.parametrize("version", ["4", "7"])
def test_ws_supported_protocol_versions(hub, version):
    w = WS(hub.port, protocol=version)
    try:
        assert w.hello()["socket_id"]
    finally:
        w.close()


@pytest.mark.parametrize("halley", [True, False])
def test_ws_invalid_channel_subscription_error_400(hub, halley):
    w = WS(hub.port, halley=halley)
    try:
        w.hello()
        for name in ["bad name", "x" * 165, ""]:
            w.subscribe(name, wait=False)
            m = w.recv()
            d = sub_error_data(m, name)
            assert d["status"] == 400 and d["type"] == "InvalidChannel", d
            # In the session's order: numbered on a resumable session only.
            assert ("halley:seq" in m) == halley, m
        w.subscribe("x" * 164)  # the longest valid name
    finally:
        w.close()


@pytest.mark.parametrize("name", ["private-x", "presence-x"])
def test_ws_private_and_presence_without_auth_subscription_error_401(hub, name):
    w = WS(hub.port)
    try:
        w.hello()
        w.subscribe(name, wait=False)
        d = sub_error_data(w.recv(), name)
        assert d["status"] == 401 and d["type"] == "AuthError", d
    finally:
        w.close()


def test_ws_subscribe_without_channel_is_an_error(hub):
    w = WS(hub.port)
    try:
        w.hello()
        w.send({"event": "pusher:subscribe", "data": {}})
        m = w.recv()
        assert m["event"] == "pusher:error", m
        w.subscribe(chan())  # still usable
    finally:
        w.close()


def test_ws_ping_pong(hub):
    w = WS(hub.port, halley=False)
    try:
        w.hello()
        w.send({"event": "pusher:ping", "data": {}})
        assert w.recv() == {"event": "pusher:pong", "data": {}}
        # pusher-js sends data as a string
        w.send({"event": "pusher:ping", "data": "{}"})
        assert w.recv() == {"event": "pusher:pong", "data": {}}
    finally:
        w.close()


@pytest.mark.parametrize("text", ["{not json", "[1,2]", '"a string"', '{"data":{}}', '{"event":""}'])
def test_ws_invalid_message_error_and_still_usable(hub, text):
    c = chan()
    w = WS(hub.port)
    try:
        w.hello()
        w.ws.send(text)
        m = w.recv()
        assert m["event"] == "pusher:error", m
        assert isinstance(m["data"]["message"], str)
        w.send({"event": "pusher:ping", "data": {}})
        assert w.recv()["event"] == "pusher:pong"
        w.subscribe(c)
        status, _ = publish(hub.port, {"channel": c, "event": "after", "data": "ok"})
        assert status == 201
        assert recv_event(w, "after")["data"] == "ok"
    finally:
        w.close()


def test_ws_client_event_on_a_public_channel_is_refused(hub):
    c = chan()
    w = WS(hub.port)
    try:
        w.hello()
        w.subscribe(c)
        w.send({"event": "client-foo", "channel": c, "data": {"x": 1}})
        m = w.recv()
        assert m["event"] == "pusher:error", m
        # 4301 is Pusher's code for the rate limit only: this refusal has none.
        assert m["data"]["code"] is None and "private and presence" in m["data"]["message"], m
        # The connection stays open.
        w.send({"event": "pusher:ping", "data": {}})
        assert w.recv()["event"] == "pusher:pong"
    finally:
        w.close()


# ---- CORS and origins (--origins http://good.example)


def test_preflight_good_origin_204(hub):
    for path in ["/halley/poll", "/halley/sse", "/halley/send"]:
        status, h, body = http_request(hub.port, "OPTIONS", path, headers={
            "Origin": GOOD, "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type"})
        assert status == 204, (path, body)
        assert h.get("access-control-allow-origin") == GOOD
        methods = {m.strip() for m in h.get("access-control-allow-methods", "").split(",")}
        assert {"GET", "POST"} <= methods, h
        allowed = {x.strip().lower() for x in h.get("access-control-allow-headers", "").split(",")}
        assert "last-event-id" in allowed and "content-type" in allowed, h
        assert "origin" in h.get("vary", "").lower()
        assert body == b""


def test_preflight_bad_origin_403(hub):
    status, h, body = http_request(hub.port, "OPTIONS", "/halley/poll", headers={
        "Origin": EVIL, "Access-Control-Request-Method": "GET"})
    assert status == 403, body
    assert "access-control-allow-origin" not in h
    assert "origin" in error_of(json.loads(body))


def test_poll_good_origin_has_acao(hub):
    status, h, body = http_request(hub.port, "GET", "/halley/poll?key=app-key", headers={"Origin": GOOD})
    assert status == 200, body
    assert h.get("access-control-allow-origin") == GOOD
    j = json.loads(body)
    assert j["messages"][0]["event"] == "pusher:connection_established"


def test_poll_bad_origin_403(hub):
    status, h, body = http_request(hub.port, "GET", "/halley/poll?key=app-key", headers={"Origin": EVIL})
    assert status == 403, body
    assert "access-control-allow-origin" not in h
    assert "origin not allowed" in error_of(json.loads(body))


def test_send_bad_origin_403(hub):
    p = Poll(hub.port, origin=GOOD)
    status, h, body = http_request(hub.port, "POST", f"/halley/send?session={p.session}",
                                   json.dumps({"event": "pusher:ping", "data": {}}).encode(),
                                   {"Origin": EVIL, "Content-Type": "application/json", **token_header(p.token)})
    assert status == 403, body
    assert "access-control-allow-origin" not in h
    status, body = p.send({"event": "pusher:ping", "data": {}})
    assert status == 200 and body == {"ok": True}


def test_ws_bad_origin_403(hub):
    with pytest.raises(InvalidStatus) as e:
        WS(hub.port, origin=EVIL)
    assert e.value.response.status_code == 403
    w = WS(hub.port, origin=GOOD)
    try:
        assert w.hello()["socket_id"]
    finally:
        w.close()


def test_sse_origin(hub):
    bad = SSE(hub.port, origin=EVIL)
    try:
        assert bad.status == 403
        assert "access-control-allow-origin" not in bad.headers
        assert "origin not allowed" in error_of(json.loads(bad.resp.read()))
    finally:
        bad.close()
    good = SSE(hub.port, origin=GOOD)
    try:
        assert good.status == 200
        assert good.headers.get("access-control-allow-origin") == GOOD
        assert good.headers["content-type"].startswith("text/event-stream")
        assert good.recv()["event"] == "pusher:connection_established"
    finally:
        good.close()


def test_requests_without_origin_allowed(hub):
    # Not a browser: the origin policy does not apply (and no CORS header is added).
    status, h, body = http_request(hub.port, "GET", "/halley/poll?key=app-key")
    assert status == 200, body
    assert "access-control-allow-origin" not in h


# ---- HTTP transport errors


def test_poll_without_key_400(hub):
    status, _, body = http_request(hub.port, "GET", "/halley/poll")
    assert status == 400, body
    assert "missing key" in error_of(json.loads(body))


def test_poll_unknown_key_404(hub):
    status, _, body = http_request(hub.port, "GET", "/halley/poll?key=nope")
    assert status == 404, body
    assert "unknown app key" in error_of(json.loads(body))


def test_poll_unknown_session_404(hub):
    # An id the hub never issued reads as `expired`: the hub cannot tell it from a session
    # that expired long ago or before a restart (docs/PROTOCOL.md, "Resuming"). A real expiry,
    # a wrong token (answered the same) and `terminated`: test_hub_resume.py.
    status, _, body = http_request(hub.port, "GET", "/halley/poll?session=1234.5678&cursor=0", headers=token_header("00"))
    assert status == 404, body
    j = json.loads(body)
    assert "session not found" in error_of(j) and j["halley:reason"] == "expired"
    # With the key, a new session starts instead, saying why.
    status, _, body = http_request(hub.port, "GET", "/halley/poll?session=1234.5678&cursor=0&key=app-key", headers=token_header("00"))
    assert status == 200, body
    j = json.loads(body)
    info = json.loads(j["messages"][0]["data"])
    assert j["session"] != "1234.5678" and info["halley:resumed"] is False and info["halley:reason"] == "expired", j


def test_send_unknown_session_404(hub):
    status, body = send_http(hub.port, "1234.5678", "0123456789abcdef0123456789abcdef",
                             {"event": "pusher:ping", "data": {}})
    assert status == 404, body
    assert "session not found" in error_of(body)
    assert body["halley:reason"] == "expired"


def test_send_malformed_session_400(hub):
    status, body = send_http(hub.port, "nope", "x", {"event": "pusher:ping", "data": {}})
    assert status == 400, body
    assert "session" in error_of(body)


def test_send_wrong_token_404(hub):
    p = Poll(hub.port)
    wrong = ("0" if p.token[0] != "0" else "1") + p.token[1:]
    status, body = send_http(hub.port, p.session, wrong, {"event": "pusher:ping", "data": {}})
    assert status == 404, body
    assert "session not found" in error_of(body)
    assert isinstance(body["halley:reason"], str) and body["halley:reason"]
    # The session itself is untouched.
    status, body = send_http(hub.port, p.session, p.token, {"event": "pusher:ping", "data": {}})
    assert status == 200 and body == {"ok": True}


@pytest.mark.parametrize("raw", [b"{not json", b"", b'[{"event":"pusher:ping"}, 3]', b'{"data":{}}'])
def test_send_invalid_body_400(hub, raw):
    p = Poll(hub.port)
    status, _, body = http_request(hub.port, "POST", f"/halley/send?session={p.session}", raw,
                                   {"Content-Type": "application/json", **token_header(p.token)})
    assert status == 400, body
    error_of(json.loads(body))


def test_send_array_of_messages(hub):
    c1, c2 = chan(), chan()
    p = Poll(hub.port)
    status, body = p.send([{"event": "pusher:subscribe", "data": {"channel": c1}},
                           {"event": "pusher:subscribe", "data": {"channel": c2}}])
    assert status == 200 and body == {"ok": True}
    msgs = p.poll(timeout=5)
    assert [(m["event"], m["channel"]) for m in msgs] == [
        ("pusher_internal:subscription_succeeded", c1), ("pusher_internal:subscription_succeeded", c2)]
    assert [m["halley:seq"] for m in msgs] == [1, 2]


def test_overlapping_poll_409_and_first_poll_still_answered(hub):
    c = chan()
    p = Poll(hub.port)
    p.subscribe(c)
    msgs = p.poll(timeout=5)
    assert [m["event"] for m in msgs] == ["pusher_internal:subscription_succeeded"]
    result = {}

    def first():
        try:
            result["messages"] = p.poll(timeout=15)
        except BaseException as e:  # reported by the main thread
            result["error"] = e

    t = threading.Thread(target=first, daemon=True)
    t.start()
    time.sleep(0.4)  # the first poll is waiting on the server
    assert t.is_alive(), result
    status, h, body = http_request(hub.port, "GET", f"/halley/poll?session={p.session}&cursor={p.cursor}",
                                   headers=token_header(p.token))
    assert status == 409, body
    assert "poll already pending" in error_of(json.loads(body))
    status, body = publish(hub.port, {"channel": c, "event": "later", "data": "for the first poll"})
    assert status == 201, body
    t.join(10)
    assert not t.is_alive(), "the first poll was not answered"
    assert "error" not in result, result
    assert [(m["event"], m["data"]) for m in result["messages"]] == [("later", "for the first poll")]


def test_cache_channel_miss_then_last_message(hub):
    c = chan("cache")
    first = WS(hub.port)
    try:
        first.hello()
        first.subscribe(c)
        m = first.recv()
        assert m["event"] == "pusher:cache_miss" and m["channel"] == c, m
        for i in (1, 2):
            status, body = publish(hub.port, {"channel": c, "event": "state", "data": f"v{i}"})
            assert status == 201, body
            assert recv_event(first, "state")["data"] == f"v{i}"
    finally:
        first.close()
    for halley in (True, False):
        w = WS(hub.port, halley=halley)
        try:
            w.hello()
            w.subscribe(c)
            m = w.recv()
            assert (m["event"], m["channel"], m["data"], m["halley:offset"]) == ("state", c, "v2", 2), m
            assert_silent(w)
        finally:
            w.close()


def test_cache_channel_over_poll(hub):
    c = chan("cache")
    p = Poll(hub.port)
    p.subscribe(c)
    msgs = p.poll(timeout=5)
    assert [m["event"] for m in msgs] == ["pusher_internal:subscription_succeeded", "pusher:cache_miss"]
    status, _ = publish(hub.port, {"channel": c, "event": "state", "data": "v1"})
    assert status == 201
    assert [m["data"] for m in p.poll(timeout=5)] == ["v1"]
    q = Poll(hub.port)
    q.subscribe(c)
    msgs = q.poll(timeout=5)
    assert [m["event"] for m in msgs] == ["pusher_internal:subscription_succeeded", "state"]
    assert msgs[1]["data"] == "v1" and msgs[1]["halley:offset"] == 1


# ---- the app's own origins (apps file `allowed_origins`) on every request of a session


def test_app_allowed_origins_apply_to_every_request_of_a_session(start_halley, tmp_path):
    """WebSocket checks the app's origins on every opening, resumes included; the HTTP
    transports check them on every request of a session (poll, send, SSE resume by query or
    by Last-Event-ID), with the answer that refuses an opening, and leave the session alone."""
    good, bad = "https://app.example", "https://other.example"
    cfg = tmp_path / "apps.json"
    cfg.write_text(json.dumps({"apps": [
        {"id": "2", "key": "strict", "secret": "s2", "token": TOKEN, "allowed_origins": [good]},
    ]}))
    h = start_halley("--config", str(cfg))
    status, headers, body = http_request(h.port, "GET", "/halley/poll?key=strict", headers={"Origin": bad})
    refusal = (status, json.loads(body))
    assert refusal == (403, {"error": "origin not allowed for this application", "code": 4009}), refusal
    assert headers["access-control-allow-origin"] == bad

    p = Poll(h.port, key="strict", origin=good)
    p.subscribe("strict-a")
    assert p.poll()[0]["event"] == "pusher_internal:subscription_succeeded"
    qs = f"session={p.session}"

    def answer(method, path, body=None):
        hd = {"Origin": bad, **token_header(p.token)}
        if body is not None:
            hd["Content-Type"] = "application/json"
        status, headers, data = http_request(h.port, method, path, body, hd)
        return (status, json.loads(data)), headers

    # A poll from another origin: refused, and its cursor acknowledges nothing (it names the
    # message published here, which the good poll below must still get).
    status, r = publish(h.port, {"channel": "strict-a", "event": "e", "data": "pre"}, token=TOKEN)
    assert status == 201 and r["sessions"] == 1, r
    got, headers = answer("GET", f"/halley/poll?{qs}&cursor={p.cursor + 1}")
    assert got == refusal and headers["access-control-allow-origin"] == bad
    # A send: refused, and the message had no effect (no subscription to strict-b).
    sub_b = json.dumps({"event": "pusher:subscribe", "data": {"channel": "strict-b"}}).encode()
    assert answer("POST", f"/halley/send?{qs}", sub_b)[0] == refusal
    # SSE resumes, by query and by Last-Event-ID.
    s = SSE(h.port, query=f"{qs}&last_seq={p.cursor}", origin=bad, token=p.token)
    assert (s.status, json.loads(s.resp.read())) == refusal
    s.close()
    s = SSE(h.port, query="key=strict", last_event_id=f"{p.cursor}:{p.session}:{p.token}", origin=bad)
    assert (s.status, json.loads(s.resp.read())) == refusal
    s.close()
    # WebSocket resume from the bad origin: refused as before (4009).
    ws = WS(h.port, key="strict", session=p.session, token=p.token, last_seq=p.cursor, origin=bad)
    m = ws.recv()
    assert m["event"] == "pusher:error" and m["data"]["code"] == 4009, m
    ws.close()

    # The session is untouched: from the good origin it still polls, subscribed to strict-a
    # only, and gets what was published meanwhile.
    status, r = publish(h.port, {"channel": "strict-b", "event": "e", "data": "b"}, token=TOKEN)
    assert status == 202 and r["sessions"] == 0, r
    status, r = publish(h.port, {"channel": "strict-a", "event": "e", "data": "a"}, token=TOKEN)
    assert status == 201 and r["sessions"] == 1, r
    got = p.poll()
    assert [(m["event"], m["data"]) for m in got] == [("e", "pre"), ("e", "a")], got
    assert p.send({"event": "pusher:subscribe", "data": {"channel": "strict-b"}}) == (200, {"ok": True})
    # Without an Origin (not a browser) the session's requests are allowed, as its opening is.
    p.origin = None
    m = p.poll()
    assert m[0]["event"] == "pusher_internal:subscription_succeeded" and m[0]["channel"] == "strict-b", m


def test_ping_over_http_is_answered_on_the_attached_stream_or_waiting_poll(hub):
    """`pusher:ping` sent by POST /halley/send: the pong comes on the session's SSE stream or
    its waiting poll; with neither attached it is dropped (pongs are not numbered or kept)."""
    ping = {"event": "pusher:ping", "data": {}}
    s = SSE(hub.port)
    info = json.loads(s.recv()["data"])
    sid, token = info["socket_id"], info["halley:token"]
    assert send_http(hub.port, sid, token, ping) == (200, {"ok": True})
    assert s.recv() == {"event": "pusher:pong", "data": {}}
    s.close()

    p = Poll(hub.port)
    got = []
    t = threading.Thread(target=lambda: got.append(p.poll(timeout=10)))
    t.start()
    # Pings until the poll answers: a ping that arrives before the poll does is dropped.
    t0 = time.monotonic()
    while t.is_alive() and time.monotonic() - t0 < 10:
        assert p.send(ping) == (200, {"ok": True})
        t.join(0.3)
    t.join(10)
    assert got == [[{"event": "pusher:pong", "data": {}}]], got
    assert time.monotonic() - t0 < 5
    # No poll waiting: the pong is not kept for the next one.
    assert p.send(ping) == (200, {"ok": True})
    c = chan("pong")
    p.subscribe(c)
    assert [m["event"] for m in p.poll(timeout=5)] == ["pusher_internal:subscription_succeeded"]


@pytest.mark.parametrize("header,status", [
    (f"Bearer {TOKEN}", 201),
    (f"bearer {TOKEN}", 201),
    (f"BEARER \t {TOKEN} \t", 201),
    (f"Bearer {TOKEN}x", 401),
    (f"Bearer {TOKEN[:-1]}", 401),
    (f"Bearer\t{TOKEN}", 401),
    (f"Bearer{TOKEN}", 401),
    ("Bearer ", 401),
    ("Bear", 401),
])
def test_publish_bearer_scheme_any_case_token_trimmed(hub, header, status):
    """RFC 9110 11.1: the scheme in any case; optional whitespace around the token; the token
    compared whole (a prefix or an extension of it is refused)."""
    c = chan()
    w = subscribed_ws(hub.port, c)
    try:
        got, _, data = http_request(hub.port, "POST", "/publish",
                                    json.dumps({"channel": c, "event": "e", "data": "x"}).encode(),
                                    {"Authorization": header, "Content-Type": "application/json"})
        assert got == status, (header, got, data)
    finally:
        w.close()
