"""Operations: SIGHUP re-reads the apps file (apps added, removed, changed, a secret rotated
with an overlap, a broken file kept out), SIGTERM drains (every client told to reconnect with
4200, held polls and streams answered, exit within the grace), and --log-format json."""

from __future__ import annotations

import json
import signal
import socket
import threading
import time

import pusher
import pytest
from websockets.exceptions import ConnectionClosed

import pusher_xhr
from hub_client import SSE, WS, Poll, http_request, publish, publish_signed, wait_until

APPS = [
    {"id": "1", "key": "k1", "secret": "s1", "token": "t1"},
    {"id": "2", "key": "k2", "secret": "s2", "token": "t2"},
    {"id": "3", "key": "k3", "secret": "s3", "token": "t3"},
]


def write(path, apps):
    path.write_text(json.dumps({"apps": apps}))


def closed_with(ws, code, timeout=5):
    """The messages before the close (a pusher:error first), and asserts the close code."""
    got = []
    with pytest.raises(ConnectionClosed) as e:
        while True:
            got.append(ws.recv(timeout=timeout))
    assert e.value.rcvd is not None and e.value.rcvd.code == code, (e.value, got)
    return got


def pusher_error(messages, code):
    errs = [m for m in messages if m["event"] == "pusher:error"]
    assert errs and errs[-1]["data"]["code"] == code, messages
    return errs[-1]["data"]["message"]


def delivered(ws, port, channel, token):
    """A publish on `channel` with the app's bearer token reaches `ws` (it still works)."""
    status, _ = publish(port, {"channel": channel, "event": "ping", "data": "x"}, token=token)
    assert status in (201, 202), status
    m = ws.recv()
    assert m["event"] == "ping" and m["channel"] == channel, m


def auth(key, secret, ws, channel):
    """The signature an app's auth endpoint gives (the official SDK's)."""
    client = pusher.Pusher(app_id="1", key=key, secret=secret, host="127.0.0.1", port=1, ssl=False)
    return client.authenticate(channel=channel, socket_id=ws.established["socket_id"])["auth"]


def reload(h, path, apps, expect=r"SIGHUP: \d+ apps? reloaded"):
    mark = h.log_mark()
    write(path, apps)
    h.signal(signal.SIGHUP)
    assert h.wait_for_log(expect, start=mark, timeout=5), h.log_text()[-2000:]
    return mark


# ---- reload ------------------------------------------------------------------------------------

def test_sighup_adds_removes_and_changes_apps_without_dropping_others(start_halley, tmp_path):
    path = tmp_path / "apps.json"
    write(path, APPS)
    h = start_halley("--config", str(path))
    conns = {}
    for a in APPS:
        ws = WS(h.port, key=a["key"], halley=False)
        ws.hello()
        ws.subscribe("c")
        conns[a["id"]] = ws
    # App 3 removed, app 2 disabled, app 1 changed (client events off), app 4 added.
    new = [dict(APPS[0], client_events=False, max_connections=1), dict(APPS[1], enabled=False),
           {"id": "4", "key": "k4", "secret": "s4", "token": "t4"}]
    mark = reload(h, path, new)
    line = next(x for x in h.lines_since(mark) if "reloaded" in x)
    assert "added 4, removed 3, changed 1, 2" in line, line
    assert "s1" not in line and "t1" not in line  # never the secrets or tokens
    # The removed app's clients: 4001; the disabled app's: 4003.
    assert "does not exist" in pusher_error(closed_with(conns["3"], 4001), 4001)
    assert "disabled" in pusher_error(closed_with(conns["2"], 4003), 4003).lower()
    # App 1's connection goes on, with the new settings: client events are refused now.
    delivered(conns["1"], h.port, "c", "t1")
    ws1 = conns["1"]
    ws1.send({"event": "pusher:subscribe", "data": {"channel": "private-c", "auth": auth("k1", "s1", ws1, "private-c")}})
    assert ws1.recv()["event"] == "pusher_internal:subscription_succeeded"
    ws1.send({"event": "client-x", "channel": "private-c", "data": {}})
    m = ws1.recv()
    assert m["event"] == "pusher:error" and "not enabled" in m["data"]["message"], m
    # The quota set by the reload counts the session opened before it.
    over = WS(h.port, key="k1", halley=False)
    assert "quota" in pusher_error(closed_with(over, 4004), 4004)
    # Removed and disabled apps are refused for new connections and publishes; the new one works.
    gone = WS(h.port, key="k3", halley=False)
    assert pusher_error(closed_with(gone, 4001), 4001)
    status, _ = publish(h.port, {"channel": "c", "event": "e", "data": "x"}, token="t3")
    assert status == 401
    ws4 = WS(h.port, key="k4", halley=False)
    ws4.hello()
    ws4.subscribe("c")
    delivered(ws4, h.port, "c", "t4")
    conns["1"].close()
    ws4.close()


def test_sighup_with_a_broken_file_keeps_the_running_apps(start_halley, tmp_path):
    path = tmp_path / "apps.json"
    write(path, APPS[:1])
    h = start_halley("--config", str(path))
    ws = WS(h.port, key="k1", halley=False)
    ws.hello()
    ws.subscribe("c")
    for broken in ['{"apps": [', '{"apps": [{"id": "x1", "key": "k", "secret": "s"}]}', '']:
        mark = h.log_mark()
        path.write_text(broken)
        h.signal(signal.SIGHUP)
        assert h.wait_for_log(r"error SIGHUP: apps file not reloaded, keeping the running apps", start=mark, timeout=5)
        delivered(ws, h.port, "c", "t1")
    ws.close()


def test_a_rotated_secret_is_accepted_during_the_overlap_only(start_halley, tmp_path):
    path = tmp_path / "apps.json"
    write(path, APPS[:1])
    h = start_halley("--config", str(path), "--secret-overlap", "3")
    body = {"channel": "c", "event": "e", "data": "x"}
    ok = (201, 202)
    assert publish_signed(h.port, body, key="k1", secret="s1")[0] in ok
    reload(h, path, [dict(APPS[0], secret="s1-new")])
    t0 = time.monotonic()
    # Both secrets sign API requests and channel subscriptions during the overlap.
    assert publish_signed(h.port, body, key="k1", secret="s1-new")[0] in ok
    assert publish_signed(h.port, body, key="k1", secret="s1")[0] in ok
    for secret in ("s1", "s1-new"):
        ws = WS(h.port, key="k1", halley=False)
        ws.hello()
        ws.send({"event": "pusher:subscribe", "data": {"channel": "private-r", "auth": auth("k1", secret, ws, "private-r")}})
        assert ws.recv()["event"] == "pusher_internal:subscription_succeeded"
        ws.close()
    assert time.monotonic() - t0 < 3, "the checks above took longer than the overlap"
    # After it, the old one is refused.
    time.sleep(max(0.0, 3.2 - (time.monotonic() - t0)))
    assert publish_signed(h.port, body, key="k1", secret="s1")[0] == 401
    assert publish_signed(h.port, body, key="k1", secret="s1-new")[0] in ok


def test_sighup_without_a_config_file_says_so(start_halley):
    h = start_halley()
    mark = h.log_mark()
    h.signal(signal.SIGHUP)
    assert h.wait_for_log(r"SIGHUP: nothing to reload", start=mark, timeout=5)


# ---- drain -------------------------------------------------------------------------------------

def test_sigterm_tells_every_transport_to_reconnect_and_exits_within_the_grace(start_halley):
    h = start_halley("--app-token", "tok", "--shutdown-grace", "8")
    plain = WS(h.port, halley=False)
    plain.hello()
    plain.subscribe("d")
    resumable = WS(h.port, halley=True)
    resumable.hello()
    resumable.subscribe("d")
    sse = SSE(h.port)
    assert sse.recv()["event"] == "pusher:connection_established"
    poll = Poll(h.port)
    poll.subscribe("d")
    assert poll.poll()[0]["event"] == "pusher_internal:subscription_succeeded"
    held = {}

    def hold():
        t = time.monotonic()
        held["messages"] = poll.poll(timeout=15)
        held["after"] = time.monotonic() - t

    ht = threading.Thread(target=hold, daemon=True)
    ht.start()
    xhr = pusher_xhr.Client(h.port)
    st = xhr.stream()
    assert pusher_xhr.next_message(st, "pusher:connection_established")
    idle = socket.create_connection(("127.0.0.1", h.port))
    time.sleep(0.5)  # the poll is held now
    assert ht.is_alive()

    mark = h.log_mark()
    t0 = time.monotonic()
    h.signal(signal.SIGTERM)
    for ws in (plain, resumable):
        assert "reconnect" in pusher_error(closed_with(ws, 4200), 4200)
    e = sse.event()
    assert e is not None and e[1]["event"] == "pusher:error" and e[1]["data"]["code"] == 4200, e
    assert sse.event() is None, "the stream did not end"
    ht.join(5)
    assert not ht.is_alive(), "the held poll was not answered"
    assert held["after"] < 3
    assert [m["data"]["code"] for m in held["messages"] if m["event"] == "pusher:error"] == [4200], held
    m = pusher_xhr.next_message(st)
    assert m["event"] == "pusher:error" and m["data"]["code"] == 4200, m
    c = pusher_xhr.next_message(st)
    assert c[0] == "c" and c[1] == 4200, c
    idle.settimeout(3)
    assert idle.recv(10) == b"", "an idle connection stayed open"
    # New connections are refused, the process exits 0 well within the grace.
    rc = h.wait_exit(timeout=8)
    assert rc == 0
    assert time.monotonic() - t0 < 5
    assert h.wait_for_log(r"told to reconnect \(4200\)", start=mark, timeout=1)
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", h.port), timeout=1)


# ---- JSON logs ---------------------------------------------------------------------------------

def test_log_format_json_writes_one_object_per_line(start_halley):
    h = start_halley("--log-format", "json", "--log-level", "info")
    mark = h.log_mark()
    h.signal(signal.SIGHUP)
    assert h.wait_for_log("nothing to reload", start=mark)
    h.signal(signal.SIGTERM)
    assert h.wait_exit(timeout=10) == 0
    lines = [x for x in h.log_lines() if x.strip()]
    assert len(lines) >= 2
    for line in lines:
        o = json.loads(line)
        assert set(o) == {"time", "level", "msg"}, o
        assert o["level"] in ("debug", "info", "warning", "error")
        assert o["time"].endswith("Z") and "T" in o["time"]
    assert any("halley listening on http://127.0.0.1:" in json.loads(x)["msg"] for x in lines)
    assert any(json.loads(x)["msg"] == "halley stopped" for x in lines)


# ---- /stats --------------------------------------------------------------------------------------

def get_stats(port, token):
    h = {"Authorization": f"Bearer {token}"} if token is not None else {}
    status, headers, body = http_request(port, "GET", "/stats", headers=h)
    return status, headers, body


def test_stats_needs_the_admin_token(start_halley):
    off = start_halley()
    status, _, body = get_stats(off.port, "x")
    assert status == 403 and b"--admin-token" in body
    h = start_halley("--admin-token", "adm")
    for token in (None, "adm2", "ad", ""):
        status, headers, _ = get_stats(h.port, token)
        assert status == 401, token
        assert headers.get("www-authenticate") == "Bearer"
    status, headers, body = get_stats(h.port, "adm")
    assert status == 200 and headers["cache-control"] == "no-store"
    assert json.loads(body)["total"]["sessions"] == {"live": 0, "lingering": 0}


def test_stats_count_sessions_transports_messages_and_resumes(start_halley, tmp_path):
    path = tmp_path / "apps.json"
    write(path, APPS[:2])
    h = start_halley("--config", str(path), "--admin-token", "adm")
    a = WS(h.port, key="k1", halley=False)
    a.hello()
    a.subscribe("c")
    r = WS(h.port, key="k1", halley=True)
    est = r.hello()
    r.subscribe("c")
    b = SSE(h.port, query="key=k2")
    b.recv()
    for i in range(4):
        assert publish(h.port, {"channel": "c", "event": "e", "data": str(i)}, token="t1")[0] == 201
    for ws in (a, r):
        for _ in range(4):
            assert ws.recv()["event"] == "e"
    r.abort()
    r2 = WS(h.port, key="k1", halley=True, session=est["socket_id"], token=est["halley:token"], last_seq=6)
    assert r2.recv()["event"] == "pusher:connection_established"

    def stats():
        status, _, body = get_stats(h.port, "adm")
        assert status == 200
        return json.loads(body)

    # Session counts are taken once a second.
    assert wait_until(lambda: stats()["apps"]["1"]["connections"]["websocket"] == 2, timeout=3)
    s = stats()
    one, two = s["apps"]["1"], s["apps"]["2"]
    assert one["sessions"] == {"live": 2, "lingering": 0}
    assert one["channels"] == 1 and one["subscriptions"] == 2
    assert one["messages_in"] == 4 and one["messages_out"] == 8
    assert one["sessions_opened"] == 2 and one["resumes"] == 1 and one["fallbacks"] == 0
    assert two["connections"]["sse"] == 1 and two["fallbacks"] == 1 and two["messages_in"] == 0
    assert s["total"]["messages_out"] == 8 and s["total"]["connections"]["sse"] == 1
    assert s["open_connections"] >= 3
    assert set(s["history"]) == {"messages_in_per_second", "messages_out_per_second", "sessions"}
    # One app's own view, signed like the HTTP API; another app's signature is refused.
    client = pusher.Pusher(app_id="1", key="k1", secret="s1", host="127.0.0.1", port=h.port, ssl=False)
    req = pusher.http.Request(client._pusher_client, "GET", "/apps/1/stats", {})
    status, _, body = http_request(h.port, "GET", req.signed_path)
    assert status == 200, body
    mine = json.loads(body)
    assert list(mine["apps"]) == ["1"] and "history" not in mine and "open_connections" not in mine
    other = pusher.Pusher(app_id="2", key="k2", secret="s2", host="127.0.0.1", port=h.port, ssl=False)
    req = pusher.http.Request(other._pusher_client, "GET", "/apps/1/stats", {})
    assert http_request(h.port, "GET", req.signed_path)[0] == 401
    for c in (a, r2, b):
        c.close()
