"""The hub's limits, each broken by the smallest amount and checked at the limit:
event name length, channel name length, channels per publish, published data size (text
and base64), subscriptions per session, sessions per node.

Small limits come from flags (`--max-event-bytes 100`, …) so the tests are fast.
"""

from __future__ import annotations

import base64
import json
import time

import pytest
from websockets.exceptions import ConnectionClosed

from halley_client import Halley
from hub_client import SSE, WS, Poll, http_request, publish, publish_signed, wait_until

TOKEN = "tok"
MAX_EVENT_BYTES = 100
MAX_CHANNELS = 3


@pytest.fixture(scope="module")
def hub(public_root):
    h = Halley(public_root, ["--app-token", TOKEN, "--max-event-bytes", MAX_EVENT_BYTES,
                             "--max-channels-per-publish", MAX_CHANNELS])
    yield h
    rc = h.stop()
    assert rc == 0, f"halley exited with {rc}\n{h.log_text()[-4000:]}"


_counter = [0]


def chan(prefix="l"):
    _counter[0] += 1
    return f"{prefix}-{_counter[0]}-{time.monotonic_ns() % 10**9}"


def error_of(body):
    assert isinstance(body, dict) and isinstance(body.get("error"), str), body
    return body["error"]


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


def recv_event(w, event, timeout=5.0):
    deadline = time.monotonic() + timeout
    while True:
        m = w.recv(timeout=max(0.01, deadline - time.monotonic()))
        if m["event"] == event:
            return m


# ---- event name: 200 characters


def test_event_name_length_limit(hub):
    c = chan()
    status, body = publish(hub.port, {"channel": c, "event": "e" * 200, "data": "x"})
    assert status == 202, body
    assert body["channels"][c]["offset"] == 1
    status, body = publish(hub.port, {"channel": c, "event": "e" * 201, "data": "x"})
    assert status == 400, body
    assert "event name is longer than 200" in error_of(body)


def test_event_name_at_limit_is_delivered(hub):
    c = chan()
    w = WS(hub.port)
    try:
        w.hello()
        w.subscribe(c)
        status, body = publish(hub.port, {"channel": c, "event": "n" * 200, "data": "x"})
        assert status == 201, body
        assert w.recv()["event"] == "n" * 200
    finally:
        w.close()


# ---- channel name: 164 characters


def test_publish_channel_name_length_limit(hub):
    name = "c" * 164
    status, body = publish(hub.port, {"channel": name, "event": "e", "data": "x"})
    assert status == 202, body
    assert set(body["channels"]) == {name}
    status, body = publish(hub.port, {"channel": "c" * 165, "event": "e", "data": "x"})
    assert status == 400, body
    assert "longer than 164" in error_of(body)
    status, body = publish(hub.port, {"channels": ["ok", "c" * 165], "event": "e", "data": "x"})
    assert status == 400, body
    assert "longer than 164" in error_of(body)


def test_publish_channel_name_with_space_400(hub):
    status, body = publish(hub.port, {"channel": "a b", "event": "e", "data": "x"})
    assert status == 400, body
    assert "character outside" in error_of(body)


def test_subscribe_channel_name_length_limit(hub):
    w = WS(hub.port)
    try:
        w.hello()
        w.subscribe("s" * 164)
        w.subscribe("s" * 165, wait=False)
        m = w.recv()
        assert m["event"] == "pusher:subscription_error" and m["channel"] == "s" * 165, m
        d = json.loads(m["data"])
        assert d["status"] == 400 and d["type"] == "InvalidChannel", d
    finally:
        w.close()


# ---- channels per publish: --max-channels-per-publish 3


def test_channels_per_publish_limit(hub):
    names = [chan() for _ in range(MAX_CHANNELS + 1)]
    status, body = publish(hub.port, {"channels": names[:MAX_CHANNELS], "event": "e", "data": "x"})
    assert status == 202, body
    assert set(body["channels"]) == set(names[:MAX_CHANNELS])
    assert all(body["channels"][n]["offset"] == 1 for n in names[:MAX_CHANNELS])
    status, body = publish(hub.port, {"channels": names, "event": "e", "data": "x"})
    assert status == 400, body
    assert f"more than {MAX_CHANNELS} channels" in error_of(body)
    # Nothing of the refused publish was published.
    status, body = publish(hub.port, {"channel": names[0], "event": "e", "data": "x"})
    assert body["channels"][names[0]]["offset"] == 2, body


def test_channel_plus_channels_count_together(hub):
    names = [chan() for _ in range(MAX_CHANNELS)]
    status, body = publish(hub.port, {"channel": names[0], "channels": names[1:], "event": "e", "data": "x"})
    assert status == 202, body
    assert set(body["channels"]) == set(names)
    status, body = publish(hub.port, {"channel": chan(), "channels": names, "event": "e", "data": "x"})
    assert status == 400, body
    assert f"more than {MAX_CHANNELS} channels" in error_of(body)


def test_default_channels_per_publish_is_100(halley):
    names = [f"d{i}-{time.monotonic_ns() % 10**9}" for i in range(101)]
    status, body = publish_signed(halley.port, {"channels": names[:100], "event": "e", "data": "x"})
    assert status == 202, body
    assert len(body["channels"]) == 100
    status, body = publish_signed(halley.port, {"channels": names, "event": "e", "data": "x"})
    assert status == 400, body
    assert "more than 100 channels" in error_of(body)


# ---- data size: --max-event-bytes 100


def test_data_size_limit(hub):
    c = chan()
    status, body = publish(hub.port, {"channel": c, "event": "e", "data": "d" * MAX_EVENT_BYTES})
    assert status == 202, body
    status, body = publish(hub.port, {"channel": c, "event": "e", "data": "d" * (MAX_EVENT_BYTES + 1)})
    assert status == 413, body
    assert f"data is {MAX_EVENT_BYTES + 1} bytes; the limit is {MAX_EVENT_BYTES}" in error_of(body)


def test_data_size_counts_utf8_bytes(hub):
    c = chan()
    # "é" is 2 bytes in UTF-8: 50 of them are at the limit, plus one ASCII byte is over.
    status, body = publish(hub.port, {"channel": c, "event": "e", "data": "é" * 50})
    assert status == 202, body
    status, body = publish(hub.port, {"channel": c, "event": "e", "data": "é" * 50 + "x"})
    assert status == 413, body
    assert f"data is {MAX_EVENT_BYTES + 1} bytes" in error_of(body)


def test_data_size_of_non_string_data(hub):
    # An object is measured as its JSON text.
    c = chan()
    at_limit = {"k": "v" * (MAX_EVENT_BYTES - len('{"k":""}'))}
    over = {"k": "v" * (MAX_EVENT_BYTES - len('{"k":""}') + 1)}
    w = WS(hub.port)
    try:
        w.hello()
        w.subscribe(c)
        status, body = publish(hub.port, {"channel": c, "event": "obj", "data": at_limit})
        assert status == 201, body
        m = recv_event(w, "obj")
        assert len(m["data"].encode()) == MAX_EVENT_BYTES and json.loads(m["data"]) == at_limit
        status, body = publish(hub.port, {"channel": c, "event": "obj", "data": over})
        assert status == 413, body
        assert f"data is {MAX_EVENT_BYTES + 1} bytes" in error_of(body)
    finally:
        w.close()


def test_data_base64_size_limit_after_decoding(hub):
    c = chan()
    w = WS(hub.port, halley=False)
    try:
        w.hello()
        w.subscribe(c)
        payload = bytes(range(MAX_EVENT_BYTES))
        status, body = publish(hub.port, {"channel": c, "event": "bin",
                                          "data_base64": base64.b64encode(payload).decode()})
        assert status == 201, body
        m = recv_event(w, "bin")
        assert m["halley:binary"] is True and base64.b64decode(m["data"]) == payload
        status, body = publish(hub.port, {"channel": c, "event": "bin",
                                          "data_base64": base64.b64encode(payload + b"!").decode()})
        assert status == 413, body
        assert f"data is {MAX_EVENT_BYTES + 1} bytes; the limit is {MAX_EVENT_BYTES}" in error_of(body)
    finally:
        w.close()


def test_oversized_data_is_not_delivered(hub):
    c = chan()
    w = WS(hub.port)
    try:
        w.hello()
        w.subscribe(c)
        status, _ = publish(hub.port, {"channel": c, "event": "big", "data": "x" * (MAX_EVENT_BYTES + 1)})
        assert status == 413
        status, body = publish(hub.port, {"channel": c, "event": "small", "data": "y"})
        assert status == 201 and body["channels"][c]["offset"] == 1, body
        m = w.recv()
        assert (m["event"], m["halley:offset"]) == ("small", 1), m
    finally:
        w.close()


# ---- subscriptions per session: --max-subscriptions 2


@pytest.mark.parametrize("halley", [True, False])
def test_max_subscriptions(start_halley, halley):
    h = start_halley("--max-subscriptions", "2")
    w = WS(h.port, halley=halley)
    try:
        w.hello()
        w.subscribe("one")
        w.subscribe("two")
        w.subscribe("two")  # a repeated subscribe is answered again and takes no new slot
        w.subscribe("three", wait=False)
        m = w.recv()
        assert m["event"] == "pusher:subscription_error" and m["channel"] == "three", m
        d = json.loads(m["data"])
        assert d["type"] == "LimitReached" and d["status"] == 400, d
        # The refused channel is not subscribed; the others still are.
        status, body = publish_signed(h.port, {"channel": "three", "event": "e", "data": "x"})
        assert (status, body["sessions"]) == (202, 0), body
        status, body = publish_signed(h.port, {"channel": "two", "event": "e", "data": "x"})
        assert (status, body["sessions"]) == (201, 1), body
        assert recv_event(w, "e")["channel"] == "two"
        # Unsubscribing frees a slot.
        w.send({"event": "pusher:unsubscribe", "data": {"channel": "one"}})
        w.subscribe("three")
        w.subscribe("four", wait=False)
        m = w.recv()
        assert m["event"] == "pusher:subscription_error" and m["channel"] == "four", m
        assert json.loads(m["data"])["type"] == "LimitReached"
    finally:
        w.close()


def test_max_subscriptions_over_http(start_halley):
    h = start_halley("--max-subscriptions", "2")
    p = Poll(h.port)
    for c in ["one", "two", "three"]:
        p.subscribe(c)
    msgs = p.poll(timeout=5)
    assert [m["event"] for m in msgs] == ["pusher_internal:subscription_succeeded"] * 2 + ["pusher:subscription_error"]
    assert msgs[2]["channel"] == "three"
    d = json.loads(msgs[2]["data"])
    assert d["type"] == "LimitReached" and d["status"] == 400


# ---- sessions per node: --max-sessions 2


def test_max_sessions(start_halley):
    h = start_halley("--max-sessions", "2")
    a = WS(h.port, halley=False)
    b = WS(h.port, halley=False)
    try:
        assert a.hello()["socket_id"] != b.hello()["socket_id"]
        third = WS(h.port, halley=False)
        msgs, code = close_code(third)
        assert [m["event"] for m in msgs] == ["pusher:error"], msgs
        assert msgs[0]["data"]["code"] == 4100
        assert code == 4100
        # A resumable WebSocket is refused the same way.
        msgs, code = close_code(WS(h.port, halley=True))
        assert msgs[0]["event"] == "pusher:error" and msgs[0]["data"]["code"] == 4100 and code == 4100
        # HTTP transports: 503.
        status, _, body = http_request(h.port, "GET", "/halley/poll?key=app-key")
        assert status == 503, body
        assert "over capacity" in error_of(json.loads(body)) and json.loads(body)["code"] == 4100
        sse = SSE(h.port)
        try:
            assert sse.status == 503
        finally:
            sse.close()
        # The sessions at the limit are fine.
        a.send({"event": "pusher:ping", "data": {}})
        assert a.recv()["event"] == "pusher:pong"
    finally:
        b.close()
    # A plain session ends with its socket: its slot is free again.
    assert wait_until(lambda: http_request(h.port, "GET", "/halley/poll?key=app-key")[0] == 200, timeout=5)
    # …and now the node is full again (a + the poll session).
    status, _, body = http_request(h.port, "GET", "/halley/poll?key=app-key")
    assert status == 503, body
    a.close()
