"""The hub's time and size limits on sessions and channels, each broken end to end over real
sockets with a small value: --history-seconds (recovery refused once the messages aged out),
--cache-seconds, --poll-timeout (an empty answer, cursor unchanged), --session-buffer-bytes on
SSE and long-polling under both --slow-consumer policies; and the documented defaults
(--help, README, the 1 MiB session buffer)."""

from __future__ import annotations

import json
import re
import subprocess
import threading
import time
from pathlib import Path

import pytest

from halley_client import HALLEY_BIN
from hub_client import SSE, WS, Poll, http_request, publish, send_http

TOKEN = "tok"
ROOT = Path(__file__).resolve().parents[2]


def pub(h, channel, data, event="tick"):
    status, r = publish(h.port, {"channel": channel, "event": event, "data": data}, token=TOKEN)
    assert status in (201, 202), (status, r)
    return status, r


def raw_poll(h, p, cursor=None, key=None, timeout=30):
    q = f"session={p.session}&cursor={p.cursor if cursor is None else cursor}"
    if key:
        q += f"&key={key}"
    status, _, body = http_request(h.port, "GET", f"/halley/poll?{q}", timeout=timeout, headers={"X-Halley-Token": p.token})
    return status, json.loads(body)


# ---- --history-seconds


def test_history_seconds_ages_messages_out_of_recovery(start_halley):
    h = start_halley("--app-token", TOKEN, "--history-seconds", "2")
    keeper = WS(h.port)  # keeps the channel (and its epoch) alive while its history ages
    keeper.hello()
    sub = keeper.subscribe("aged")
    epoch = sub["halley:epoch"]
    for i in range(3):
        pub(h, "aged", str(i + 1))
    # Young enough: recovered.
    young = WS(h.port)
    young.hello()
    r = young.subscribe("aged", since={"epoch": epoch, "offset": 0})
    assert r["halley:recovered"] is True, r
    assert [young.recv()["data"] for _ in range(3)] == ["1", "2", "3"]
    young.close()
    time.sleep(3.5)  # 2 s, swept once a second
    old = WS(h.port)
    old.hello()
    r = old.subscribe("aged", since={"epoch": epoch, "offset": 0})
    assert r["halley:recovered"] is False and r["halley:reason"] == "history_expired", r
    assert r["halley:epoch"] == epoch and r["halley:offset"] == 3
    # Nothing from history follows the refusal; live messages do.
    pub(h, "aged", "4")
    m = old.recv()
    assert m["data"] == "4" and m["halley:offset"] == 4, m
    # A client that had everything is not refused: nothing is missing.
    up = WS(h.port)
    up.hello()
    r = up.subscribe("aged", since={"epoch": epoch, "offset": 4})
    assert r["halley:recovered"] is True, r
    for w in (keeper, old, up):
        w.close()


# ---- --cache-seconds


def test_cache_seconds_forgets_the_last_message(start_halley):
    h = start_halley("--app-token", TOKEN, "--cache-seconds", "1")

    def first_after_subscribing():
        w = WS(h.port)
        w.hello()
        w.subscribe("cache-c")
        m = w.recv()
        w.close()
        return m

    pub(h, "cache-c", "v1", event="e")
    m = first_after_subscribing()
    assert m["event"] == "e" and m["data"] == "v1", m
    time.sleep(2.5)
    m = first_after_subscribing()
    assert m["event"] == "pusher:cache_miss" and m["channel"] == "cache-c", m


# ---- --poll-timeout


def test_poll_timeout_answers_empty_with_the_cursor_unchanged(start_halley):
    # 2 s: the timeout is checked on the loop's once-a-second tick against whole seconds, so
    # a poll is answered 1 to 3 s after it arrives (with 1 s it could be at once, before the
    # publish below).
    h = start_halley("--app-token", TOKEN, "--poll-timeout", "2")
    p = Poll(h.port)
    assert "session" in p.first and "token" in p.first
    p.subscribe("pt")
    assert p.poll()[0]["event"] == "pusher_internal:subscription_succeeded"
    cursor = p.cursor
    t0 = time.monotonic()
    status, j = raw_poll(h, p)
    waited = time.monotonic() - t0
    assert status == 200 and j["messages"] == [] and j["cursor"] == cursor, j
    assert 0.9 <= waited < 5.0, waited  # not at once, and far from the 25 s default
    # Only the first answer of a session carries its id and token.
    assert "session" not in j and "token" not in j, j
    # A poll still waits after an empty answer, and a publish during the wait arrives at once.
    t = threading.Timer(0.3, pub, args=(h, "pt", "late"))
    t.start()
    t0 = time.monotonic()
    got = p.poll()
    t.join()
    assert [(m["event"], m["data"]) for m in got] == [("tick", "late")], got
    assert time.monotonic() - t0 < 0.9
    assert p.cursor == cursor + 1


# ---- --session-buffer-bytes, --slow-consumer close


def fill(h, channel, n=40, size=200):
    for i in range(n):
        pub(h, channel, f"{i + 1}:" + "z" * size)


def test_session_buffer_close_on_sse(start_halley):
    h = start_halley("--app-token", TOKEN, "--session-buffer-bytes", "4096")
    s = SSE(h.port)
    info = json.loads(s.recv()["data"])
    sid, token = info["socket_id"], info["halley:token"]
    send_http(h.port, sid, token, {"event": "pusher:subscribe", "data": {"channel": "sb"}})
    assert s.recv()["event"] == "pusher_internal:subscription_succeeded"
    fill(h, "sb")  # never acknowledged: about 4096 / 250 fit
    events = []
    while True:
        e = s.event()
        if e is None:
            break
        events.append(e[1])
    ticks = [m for m in events if m["event"] == "tick"]
    assert 5 <= len(ticks) < 40, len(ticks)
    assert [int(m["data"].split(":")[0]) for m in ticks] == list(range(1, len(ticks) + 1))
    last = events[-1]
    assert last["event"] == "pusher:error" and last["data"]["code"] == 4100, last
    # The session is gone: the stream's own resume starts over, saying why.
    again = SSE(h.port, last_event_id=s.last_id)
    info2 = json.loads(again.recv()["data"])
    assert info2["halley:resumed"] is False and info2["halley:reason"] == "buffer_overflow", info2
    assert info2["socket_id"] != sid
    again.close()
    status, body = send_http(h.port, sid, token, {"event": "pusher:ping", "data": {}})
    assert status == 404 and body["halley:reason"] == "buffer_overflow", body


def test_session_buffer_close_on_long_poll(start_halley):
    h = start_halley("--app-token", TOKEN, "--session-buffer-bytes", "4096")
    p = Poll(h.port)
    p.subscribe("pb")
    assert p.poll()[0]["event"] == "pusher_internal:subscription_succeeded"
    fill(h, "pb")  # nobody polls meanwhile
    status, j = raw_poll(h, p)
    assert status == 404 and j["halley:reason"] == "buffer_overflow", j
    # With the key, the poll starts a new session and says why the old one is gone.
    status, j = raw_poll(h, p, key="app-key")
    assert status == 200, j
    est = j["messages"][0]
    info = json.loads(est["data"])
    assert est["event"] == "pusher:connection_established" and j["session"] != p.session, j
    assert info["halley:resumed"] is False and info["halley:reason"] == "buffer_overflow", info
    # The old session's subscription ended with it.
    status, r = publish(h.port, {"channel": "pb", "event": "tick", "data": "after"}, token=TOKEN)
    assert status == 202 and r["sessions"] == 0, r


# ---- --session-buffer-bytes, --slow-consumer gap


def test_session_buffer_gap_on_sse(start_halley):
    h = start_halley("--app-token", TOKEN, "--session-buffer-bytes", "4096", "--slow-consumer", "gap", "--heartbeat", "1")
    s = SSE(h.port)
    info = json.loads(s.recv()["data"])
    sid, token = info["socket_id"], info["halley:token"]
    send_http(h.port, sid, token, {"event": "pusher:subscribe", "data": {"channel": "gs"}})
    assert s.recv()["event"] == "pusher_internal:subscription_succeeded"
    fill(h, "gs")
    ticks = []
    while True:
        m = s.recv()
        if m["event"] == "halley:heartbeat":  # a second without anything: all that fitted came
            break
        assert m["event"] == "tick", m  # no gap notice while the buffer is full
        ticks.append(m)
    assert 5 <= len(ticks) < 40, len(ticks)
    # Acknowledging by POST makes room: the notice comes next on the stream.
    assert send_http(h.port, sid, token, {"event": "halley:ack", "data": {"seq": ticks[-1]["halley:seq"]}})[0] == 200
    gap = s.recv()
    while gap["event"] == "halley:heartbeat":
        gap = s.recv()
    assert gap["event"] == "halley:gap" and gap["channel"] == "gs", gap
    assert json.loads(gap["data"]) == {"from": ticks[-1]["halley:offset"] + 1, "to": 40}
    assert gap["halley:seq"] == ticks[-1]["halley:seq"] + 1
    pub(h, "gs", "41:")
    m = s.recv()
    while m["event"] == "halley:heartbeat":
        m = s.recv()
    assert m["halley:offset"] == 41 and m["halley:seq"] == gap["halley:seq"] + 1, m
    s.close()


def test_session_buffer_gap_on_long_poll(start_halley):
    h = start_halley("--app-token", TOKEN, "--session-buffer-bytes", "4096", "--slow-consumer", "gap")
    p = Poll(h.port)
    p.subscribe("gp")
    assert p.poll()[0]["event"] == "pusher_internal:subscription_succeeded"
    fill(h, "gp")
    # The messages that fitted, then the notice: as soon as acknowledging makes room for it
    # (this poll's cursor acknowledged the subscription answer, which may be enough).
    got = p.poll(timeout=5)
    if got[-1]["event"] != "halley:gap":
        got += p.poll(timeout=5)
    ticks, gap = got[:-1], got[-1]
    assert 5 <= len(ticks) < 40 and all(m["event"] == "tick" for m in ticks), got
    assert [m["halley:offset"] for m in ticks] == list(range(1, len(ticks) + 1))
    assert gap["event"] == "halley:gap" and gap["channel"] == "gp", gap
    assert json.loads(gap["data"]) == {"from": len(ticks) + 1, "to": 40}
    pub(h, "gp", "41:")
    got = p.poll(timeout=5)
    assert [m["halley:offset"] for m in got] == [41], got


def test_a_resume_sends_what_waited_before_the_gap_notice(start_halley):
    """Under `gap`, a WebSocket resume that acknowledges part of what waited makes room for
    the pending gap notice: the notice comes after the messages resent, numbered next, never
    before them (a client drops a seq it has passed: the resent messages would be lost)."""
    h = start_halley("--app-token", TOKEN, "--session-buffer-bytes", "4096", "--slow-consumer", "gap")
    ws = WS(h.port)
    info = ws.hello()
    ws.subscribe("gr")
    fill(h, "gr")
    ticks = []
    while True:
        try:
            m = ws.recv(timeout=1)
        except TimeoutError:
            break
        assert m["event"] == "tick", m  # no notice: nothing acknowledged, the buffer is full
        ticks.append(m)
    assert 5 <= len(ticks) < 40, len(ticks)
    ws.abort()
    seen = ticks[2]["halley:seq"]
    ws2 = WS(h.port, session=info["socket_id"], token=info["halley:token"], last_seq=seen)
    assert ws2.hello()["halley:resumed"] is True
    got = []
    while not got or got[-1]["event"] != "halley:gap":
        got.append(ws2.recv(timeout=5))
    seqs = [m["halley:seq"] for m in got]
    assert seqs == list(range(seen + 1, seen + 1 + len(got))), seqs
    assert [m["halley:offset"] for m in got[:-1]] == [m["halley:offset"] for m in ticks[3:]]
    assert json.loads(got[-1]["data"]) == {"from": len(ticks) + 1, "to": 40}
    ws2.close()


# ---- the documented defaults


HUB_DEFAULTS = {
    "session-linger": "30",
    "session-buffer-bytes": "1048576",
    "slow-consumer": "close",
    "max-sessions": "100000",
    "max-subscriptions": "100",
    "history-size": "100",
    "history-seconds": "300",
    "cache-seconds": "1800",
    "poll-timeout": "25",
    "heartbeat": "25",
    "stream-max-bytes": "524288",
    "max-event-bytes": "10240",
}


def test_help_and_readme_give_the_same_hub_defaults():
    out = subprocess.run([HALLEY_BIN, "--help"], capture_output=True, timeout=5, env={}).stdout.decode()
    readme = (ROOT / "README.md").read_text()
    for flag, want in HUB_DEFAULTS.items():
        line = next((l for l in out.splitlines() if l.strip().startswith(f"--{flag} ")), None)
        assert line is not None, flag
        m = re.search(r"\(default ([^)]+)\)", line)
        assert m and m.group(1) == want, (flag, line)
        row = re.search(rf"^\| `--{re.escape(flag)}` \| `?([^`|]+?)`? \|", readme, re.M)
        assert row and row.group(1) == want, (flag, row and row.group(0))
    protocol = " ".join((ROOT / "docs" / "PROTOCOL.md").read_text().split())
    assert "up to 25 s (`--poll-timeout`)" in protocol
    assert "`--session-linger`, default 30 s" in protocol
    assert "`--session-buffer-bytes`, default 1 MiB" in protocol


def test_default_session_buffer_is_one_mebibyte(start_halley):
    """Unacknowledged bytes of a long-poll session: about 1,000,000 are kept, about
    1,100,000 end it (10 KB messages, the default --max-event-bytes)."""
    h = start_halley("--app-token", TOKEN)
    p = Poll(h.port)
    p.subscribe("mib")
    assert p.poll()[0]["event"] == "pusher_internal:subscription_succeeded"
    data = "x" * 9_990
    for i in range(100):
        pub(h, "mib", f"{i:09d}" + data)
    # Answered at once, acknowledging nothing new. A publish is answered once it is ordered;
    # its delivery to this session's loop can come a turn later: ask again (the same cursor)
    # until all 100 are there.
    for _ in range(20):
        status, j = raw_poll(h, p)
        assert status == 200, (status, j)
        if len(j["messages"]) == 100:
            break
    assert [m["halley:offset"] for m in j["messages"]] == list(range(1, 101))
    for i in range(100, 110):
        pub(h, "mib", f"{i:09d}" + data)
    status, j = raw_poll(h, p)
    assert status == 404 and j["halley:reason"] == "buffer_overflow", j
