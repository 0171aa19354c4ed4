"""Several nodes over Redis (`--redis`): three hub processes and a real `redis-server`.

A message published on any node (POST /publish, the HTTP API, a client event) reaches the
channel's subscribers on every node once, in the channel's order, with Redis's offsets and
epoch; a publish Redis cannot take is answered 503 (never accepted and lost); messages a node
missed on pub/sub are read back from the channel's stream.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import signal
import threading
import time

import pytest

from cluster import Balancer, RedisServer
from halley_client import parse_metrics
from hub_client import SSE, WS, Poll, http_request, publish, publish_signed, pusher_client, send_http, wait_until


@pytest.fixture
def redis(tmp_path):
    r = RedisServer(str(tmp_path))
    yield r
    r.stop()


@pytest.fixture
def nodes(start_halley, redis):
    return [
        start_halley("--redis", redis.url, "--node-id", f"n{i}", "--app-token", "tok", "--metrics-port", "0")
        for i in range(3)
    ]


def metrics(h):
    r = h.get("/metrics", port=h.metrics_port)
    assert r.status == 200
    return parse_metrics(r.body.decode())


def broker_up(h):
    return metrics(h).get("halley_broker_up") == 1


def ready(nodes):
    assert wait_until(lambda: all(broker_up(h) for h in nodes), timeout=10), [h.log_text()[-2000:] for h in nodes]


def start_nodes(start_halley, redis, count, *extra):
    """`count` hubs on `redis` (bearer token `tok`, metrics on), each with its broker up."""
    nodes = [start_halley("--redis", redis.url, "--app-token", "tok", "--metrics-port", "0", *extra)
             for _ in range(count)]
    ready(nodes)
    return nodes


def subscriber(port, channel):
    """A plain Pusher WebSocket session subscribed to `channel`."""
    ws = WS(port, halley=False)
    ws.hello()
    ws.subscribe(channel)
    return ws


def events(ws, n, timeout=10):
    """The next n messages that are not protocol events."""
    out = []
    deadline = time.monotonic() + timeout
    while len(out) < n:
        m = ws.recv(timeout=max(0.1, deadline - time.monotonic()))
        if not m["event"].startswith(("pusher", "halley:")):
            out.append(m)
    return out


def test_a_publish_on_any_node_reaches_every_node_once_in_order(nodes):
    ready(nodes)
    subs = []
    for h in nodes:
        ws = WS(h.port, halley=False)
        ws.hello()
        subs.append((ws, ws.subscribe("news")))
    # An SSE stream and a long-poll on the other nodes take the same path.
    sse = SSE(nodes[1].port)
    info = json.loads(sse.recv()["data"])
    assert send_http(nodes[1].port, info["socket_id"], info["halley:token"],
                     {"event": "pusher:subscribe", "data": {"channel": "news"}})[0] == 200
    assert sse.recv()["event"] == "pusher_internal:subscription_succeeded"
    poll = Poll(nodes[2].port)
    poll.subscribe("news")
    assert poll.poll()[-1]["event"] == "pusher_internal:subscription_succeeded"

    answers = []
    n = 60
    for i in range(n):
        body = {"channel": "news", "event": "e", "data": f"m{i}"}
        port = nodes[i % 3].port
        if i % 4 == 3:
            status, j = publish_signed(port, body)  # signed as a Pusher backend signs
        else:
            status, j = publish(port, body)
        assert status in (201, 202), (status, j)
        answers.append(j["channels"]["news"])
    epoch = answers[0]["epoch"]
    assert [a["offset"] for a in answers] == list(range(1, n + 1))
    assert {a["epoch"] for a in answers} == {epoch}
    for ws, sub in subs:
        assert sub["halley:epoch"] == epoch and sub["halley:offset"] == 0
        got = events(ws, n)
        assert [m["data"] for m in got] == [f"m{i}" for i in range(n)]
        assert [m["halley:offset"] for m in got] == list(range(1, n + 1))
        with pytest.raises(TimeoutError):
            ws.recv(timeout=0.3)  # nothing twice
        ws.close()
    got = [m for m in (sse.recv() for _ in range(n))]
    assert [m["data"] for m in got] == [f"m{i}" for i in range(n)]
    sse.close()
    polled = []
    while len(polled) < n:
        polled += [m for m in poll.poll(timeout=10) if m["event"] == "e"]
    assert [m["data"] for m in polled] == [f"m{i}" for i in range(n)]


SIZES = [0, 1, 125, 126, 127, 1023, 1024, 1025, 65535, 65536, 65537]


def test_payload_sizes_across_nodes_byte_for_byte(start_halley, redis):
    hubs = start_nodes(start_halley, redis, 2, "--max-event-bytes", "200000", "--max-body-bytes", "400000")
    plain = WS(hubs[1].port, halley=False)
    plain.hello()
    plain.subscribe("sizes")
    resumable = WS(hubs[1].port)  # halley.js's session: binary messages come as binary frames
    resumable.hello()
    resumable.subscribe("sizes")
    for n in SIZES:
        text = "".join(chr(0x20 + (i * 7 + n) % 0x5e) for i in range(n))
        assert publish(hubs[0].port, {"channel": "sizes", "event": "t", "data": text})[0] in (201, 202)
        raw = bytes((i * 31 + n) % 256 for i in range(n))
        assert publish(hubs[0].port, {"channel": "sizes", "event": "b",
                                      "data_base64": base64.b64encode(raw).decode()})[0] in (201, 202)
        t = events(plain, 1)[0]
        assert t["data"] == text, n
        b = events(plain, 1)[0]
        assert base64.b64decode(b["data"]) == raw, n
        t = events(resumable, 1)[0]
        assert t["data"] == text, n
        b = events(resumable, 1)[0]
        assert b["halley:binary_payload"] == raw, n
    plain.close()
    resumable.close()


def auth(socket_id, channel, secret="app-secret", key="app-key"):
    sig = hmac.new(secret.encode(), f"{socket_id}:{channel}".encode(), hashlib.sha256).hexdigest()
    return f"{key}:{sig}"


def test_client_events_and_the_http_api_cross_nodes(nodes):
    ready(nodes)
    a = WS(nodes[0].port, halley=False)
    sa = a.hello()["socket_id"]
    b = WS(nodes[1].port, halley=False)
    sb = b.hello()["socket_id"]
    for ws, sid in ((a, sa), (b, sb)):
        ws.send({"event": "pusher:subscribe", "data": {"channel": "private-room", "auth": auth(sid, "private-room")}})
        assert ws.recv()["event"] == "pusher_internal:subscription_succeeded"
    a.send({"event": "client-typing", "channel": "private-room", "data": {"who": "a"}})
    m = events(b, 1)[0]
    assert m["event"] == "client-typing" and json.loads(m["data"]) == {"who": "a"}
    with pytest.raises(TimeoutError):
        events(a, 1, timeout=0.5)  # not back to its sender
    # The official SDK: trigger, trigger_batch and socket_id exclusion through node 2.
    client = pusher_client(nodes[2].port)
    client.trigger("private-room", "api", {"n": 1})
    client.trigger_batch([{"channel": "private-room", "name": "api", "data": json.dumps({"n": 2})},
                          {"channel": "private-room", "name": "api", "data": json.dumps({"n": 3})}])
    client.trigger("private-room", "api", {"n": 4}, socket_id=sa)
    assert [json.loads(m["data"])["n"] for m in events(b, 4)] == [1, 2, 3, 4]
    assert [json.loads(m["data"])["n"] for m in events(a, 3)] == [1, 2, 3]
    with pytest.raises(TimeoutError):
        events(a, 1, timeout=0.5)
    a.close()
    b.close()


def test_a_node_that_joins_later_starts_at_redis_offsets(start_halley, redis):
    [first] = start_nodes(start_halley, redis, 1)
    for i in range(5):
        assert publish(first.port, {"channel": "late", "event": "e", "data": str(i)})[0] == 202
    [later] = start_nodes(start_halley, redis, 1)
    ws = WS(later.port, halley=False)
    ws.hello()
    sub = ws.subscribe("late")
    status, j = publish(first.port, {"channel": "late", "event": "e", "data": "5"})
    assert status == 201 or status == 202
    assert sub["halley:epoch"] == j["channels"]["late"]["epoch"]
    assert sub["halley:offset"] == 5
    m = events(ws, 1)[0]
    assert (m["data"], m["halley:offset"]) == ("5", 6)
    ws.close()
    # A node that received the messages has them in its history: recovery there works.
    again = WS(first.port, halley=False)
    again.hello()
    r = again.subscribe("late", since={"epoch": sub["halley:epoch"], "offset": 3})
    assert r["halley:recovered"] is True
    assert [m["data"] for m in events(again, 3)] == ["3", "4", "5"]
    again.close()
    # The later node never had 1..5: it reads them from the channel's stream in Redis.
    late = WS(later.port, halley=False)
    late.hello()
    r = late.subscribe("late", since={"epoch": sub["halley:epoch"], "offset": 1})
    assert r["halley:recovered"] is True, r
    got = events(late, 5)
    assert [(m["data"], m["halley:offset"]) for m in got] == [(str(i), i + 1) for i in range(1, 6)]
    with pytest.raises(TimeoutError):
        events(late, 1, timeout=0.3)
    late.close()


def shard_of(app, channel):
    """BrokerWire.shard: FNV-1a of app, a newline and the channel, mod 64."""
    h = 0xCBF29CE484222325
    for c in f"{app}\n{channel}".encode():
        h = ((h ^ c) * 0x100000001B3) & (2**64 - 1)
    return h % 64


def test_a_fresh_node_recovers_from_the_stream(start_halley, redis):
    """A node that has never had the channel reads a recovery from the channel's stream."""
    [first] = start_nodes(start_halley, redis, 1)
    for i in range(8):
        status, j = publish(first.port, {"channel": "fresh", "event": "e", "data": str(i)})
    epoch = j["channels"]["fresh"]["epoch"]
    [later] = start_nodes(start_halley, redis, 1)
    ws = WS(later.port, halley=False)
    ws.hello()
    r = ws.subscribe("fresh", since={"epoch": epoch, "offset": 3})
    assert r["halley:recovered"] is True and r["halley:offset"] == 8, r
    assert [(m["data"], m["halley:offset"]) for m in events(ws, 5)] == [(str(i), i + 1) for i in range(3, 8)]
    assert publish(first.port, {"channel": "fresh", "event": "e", "data": "8"})[0] in (201, 202)
    assert [(m["data"], m["halley:offset"]) for m in events(ws, 1)] == [("8", 9)]
    ws.close()


def test_a_recovery_older_than_the_stream_is_refused_on_a_later_node(start_halley, redis):
    [first] = start_nodes(start_halley, redis, 1, "--history-size", "3")
    # MAXLEN ~ 3 trims whole stream nodes (100 entries): after 250, the oldest are gone.
    for i in range(250):
        status, j = publish(first.port, {"channel": "trim", "event": "e", "data": str(i)})
        assert status == 202
    epoch = j["channels"]["trim"]["epoch"]
    [later] = start_nodes(start_halley, redis, 1, "--history-size", "3")
    ws = WS(later.port, halley=False)
    ws.hello()
    r = ws.subscribe("trim", since={"epoch": epoch, "offset": 2})
    assert r["halley:recovered"] is False and r["halley:reason"] == "history_expired", r
    assert r["halley:offset"] == 250
    assert len(redis.command("XRANGE", f"h:{{{shard_of('1', 'trim')}}}:1:trim:s", "-", "+")) < 250
    r = ws.subscribe("trim2", since={"epoch": epoch, "offset": 2})
    assert r["halley:recovered"] is False and r["halley:reason"] == "epoch_changed", r
    ws.close()


def test_redis_down_publishes_get_503_then_the_nodes_come_back(nodes, redis):
    ready(nodes)
    ws = WS(nodes[1].port, halley=False)
    ws.hello()
    first = ws.subscribe("outage")
    # 202: no subscriber on the publishing node (other nodes' are not counted)
    assert publish(nodes[0].port, {"channel": "outage", "event": "e", "data": "before"})[0] == 202
    assert events(ws, 1)[0]["data"] == "before"
    redis.stop()
    assert wait_until(lambda: not any(broker_up(h) for h in nodes), timeout=5)
    status, headers, body = http_request(nodes[0].port, "POST", "/publish",
                                         json.dumps({"channel": "outage", "event": "e", "data": "lost?"}).encode(),
                                         {"Authorization": "Bearer tok", "Content-Type": "application/json"})
    assert status == 503, body
    assert headers.get("retry-after") == "1"
    assert b"not published" in body
    with pytest.raises(Exception) as e:  # the SDK raises on a 503 from the HTTP API
        pusher_client(nodes[2].port).trigger("outage", "e", "lost?")
    assert "503" in str(e.value) or "Service Unavailable" in str(e.value) or "Not published" in str(e.value)
    m = metrics(nodes[0])
    assert m["halley_broker_publish_failures_total"] >= 1
    assert nodes[0].wait_for_log("redis: connection to .* lost")
    redis.restart(down_seconds=1.0)  # no persistence: Redis comes back empty
    ready(nodes)
    assert nodes[0].wait_for_log("redis: reconnected to")
    status, j = publish(nodes[1].port, {"channel": "outage", "event": "e", "data": "after"})
    assert status == 201, j
    assert j["channels"]["outage"]["epoch"] != first["halley:epoch"]  # Redis lost the channel: a new epoch
    m = events(ws, 1)[0]
    assert (m["data"], m["halley:offset"]) == ("after", 1)  # nothing accepted was lost; "lost?" never was
    with pytest.raises(TimeoutError):
        events(ws, 1, timeout=0.5)
    ws.close()


def test_messages_missed_on_pubsub_are_read_from_the_stream(start_halley, redis):
    # The stream keeps --history-size messages per channel: what the nodes' pub/sub links miss
    # while they reconnect (100 ms) must fit in it.
    nodes = start_nodes(start_halley, redis, 3, "--history-size", "1000")
    ws = subscriber(nodes[2].port, "gaps")
    n = 300
    done = threading.Event()

    def publisher():
        try:
            for i in range(n):
                assert publish(nodes[i % 2].port, {"channel": "gaps", "event": "e", "data": str(i)})[0] in (201, 202)
                if i in (50, 150):
                    # Every node's pub/sub link; node 2 stopped for the next five publishes, so
                    # it misses them however slow the machine (it reconnects in 100 ms).
                    os.kill(nodes[2].proc.pid, signal.SIGSTOP)
                    redis.command("CLIENT", "KILL", "TYPE", "pubsub")
                if i in (55, 155):
                    os.kill(nodes[2].proc.pid, signal.SIGCONT)
            done.set()
        finally:
            os.kill(nodes[2].proc.pid, signal.SIGCONT)

    t = threading.Thread(target=publisher)
    t.start()
    got = events(ws, n, timeout=30)
    t.join(10)
    assert done.is_set()
    assert [m["data"] for m in got] == [str(i) for i in range(n)]
    assert [m["halley:offset"] for m in got] == list(range(1, n + 1))
    with pytest.raises(TimeoutError):
        events(ws, 1, timeout=0.5)
    filled = metrics(nodes[2])['halley_broker_gap_messages_total{result="filled"}']
    assert filled >= 1, "the kills came between publishes: some messages must have come from the stream"
    assert metrics(nodes[2])['halley_broker_gap_messages_total{result="lost"}'] == 0
    ws.close()


def test_a_gap_longer_than_the_stream_is_skipped_counted_and_logged(start_halley, redis):
    """--history-size 5: the stream cannot cover what a node's pub/sub link misses while it
    reconnects; the subscriber gets the rest in order, never a message twice, and the node says
    how many it lost."""
    nodes = start_nodes(start_halley, redis, 2, "--history-size", "5")
    ws = subscriber(nodes[1].port, "short")
    # Node 1 is stopped while its link is killed and the 100 are published, so it cannot be back
    # (100 ms) before they are: on a slow machine it was, and the stream covered its short gap.
    os.kill(nodes[1].proc.pid, signal.SIGSTOP)
    try:
        redis.command("CLIENT", "KILL", "TYPE", "pubsub")
        for i in range(100):
            assert publish(nodes[0].port, {"channel": "short", "event": "e", "data": str(i)})[0] in (201, 202)
    finally:
        os.kill(nodes[1].proc.pid, signal.SIGCONT)
    assert wait_until(lambda: broker_up(nodes[1]), timeout=5)
    assert publish(nodes[0].port, {"channel": "short", "event": "e", "data": "last"})[0] in (201, 202)
    got = []
    while not got or got[-1]["data"] != "last":
        got += events(ws, 1)
    offsets = [m["halley:offset"] for m in got]
    assert offsets == sorted(set(offsets)), "in order, once"
    m = metrics(nodes[1])
    lost = m['halley_broker_gap_messages_total{result="lost"}']
    assert lost >= 1 and lost + len(got) == 101, (lost, len(got))
    assert nodes[1].wait_for_log(r"message\(s\) of short \(app 1\) are no longer in the stream")
    ws.close()


def test_kill_9_of_a_node_resumable_sessions_lose_nothing(start_halley, redis, tmp_path):
    """A resumable session (halley.js's protocol) on the node that dies comes back through the
    balancer on another node: the session is gone with its node (`expired`), the client
    subscribes again with the offset it has, and the new node's history (every node gets every
    message) gives it the rest: every accepted message once. A plain Pusher client subscribes
    afresh and misses what was published while it was away, as with Pusher itself."""
    nodes = start_nodes(start_halley, redis, 3, "--history-size", "1000")
    lb = Balancer(str(tmp_path), [h.port for h in nodes])
    try:
        ws = WS(nodes[0].port)
        info = ws.hello()
        sub = ws.subscribe("k9")
        plain = WS(nodes[0].port, halley=False)
        plain.hello()
        plain.subscribe("k9")
        accepted: list[int] = []
        stop = threading.Event()

        def publisher():
            i = 0
            while not stop.is_set():  # straight to the nodes that live (an answer lost with a node is ambiguous)
                status, j = publish(nodes[1 + i % 2].port, {"channel": "k9", "event": "e", "data": str(i)})
                assert status in (201, 202), (status, j)
                accepted.append(j["channels"]["k9"]["offset"])
                i += 1
                time.sleep(0.005)

        t = threading.Thread(target=publisher)
        t.start()
        got = events(ws, 20)
        plain_got = events(plain, 20)
        last = got[-1]
        ws.ack(last["halley:seq"])
        nodes[0].crash()
        time.sleep(0.3)  # the balancer's health check takes the dead node out
        again = WS(lb.port, session=info["socket_id"], token=info["halley:token"], last_seq=last["halley:seq"])
        est = again.hello()
        assert est["halley:resumed"] is False and est["halley:reason"] == "expired"
        r = again.subscribe("k9", since={"epoch": sub["halley:epoch"], "offset": got[-1]["halley:offset"]})
        assert r["halley:recovered"] is True, r
        plain2 = WS(lb.port, halley=False)
        plain2.hello()
        fresh = plain2.subscribe("k9")
        time.sleep(0.5)
        stop.set()
        t.join(10)
        final = accepted[-1]
        while got[-1]["halley:offset"] < final:
            got += events(again, 1)
        offsets = [m["halley:offset"] for m in got]
        assert offsets == sorted(accepted), "every accepted message once, in order"
        with pytest.raises(TimeoutError):
            events(again, 1, timeout=0.5)
        # The plain client: from its new subscription on; what came between is missed.
        p2 = []
        while not p2 or p2[-1]["halley:offset"] < final:
            p2 += events(plain2, 1)
        assert [m["halley:offset"] for m in p2] == [o for o in sorted(accepted) if o > fresh["halley:offset"]]
        missed = [o for o in sorted(accepted) if plain_got[-1]["halley:offset"] < o <= fresh["halley:offset"]]
        print(f"plain Pusher client missed {len(missed)} of {len(accepted)} messages")
    finally:
        lb.stop()


@pytest.fixture
def behind_balancer(start_halley, redis, tmp_path):
    """Three nodes behind HAProxy round-robin: each request goes to the next node."""
    nodes = [start_halley("--redis", redis.url, "--node-id", f"n{i}", "--app-token", "tok", "--metrics-port", "0")
             for i in range(3)]
    ready(nodes)
    for h in nodes:  # each has its number (in its sessions' ids) before the test opens any
        assert h.wait_for_log(r"number \d+ among the nodes"), h.log_text()[-2000:]
    lb = Balancer(str(tmp_path), [h.port for h in nodes])
    yield nodes, lb
    lb.stop()


def test_long_polling_through_round_robin_every_message_once_in_order(behind_balancer):
    nodes, lb = behind_balancer
    p = Poll(lb.port)
    p.subscribe("rr")  # /halley/send through the balancer: to the owner
    got = [m for m in p.poll() if m["event"] == "pusher_internal:subscription_succeeded"]
    assert got
    n = 60

    def publisher():
        for i in range(n):
            assert publish(nodes[i % 3].port, {"channel": "rr", "event": "e", "data": str(i)})[0] in (201, 202)
            time.sleep(0.003)

    t = threading.Thread(target=publisher)
    t.start()
    seen, polls = [], 0
    while len(seen) < n:
        seen += [m for m in p.poll(timeout=10) if m["event"] == "e"]
        polls += 1
    t.join(10)
    assert [m["data"] for m in seen] == [str(i) for i in range(n)]
    assert [m["halley:offset"] for m in seen] == list(range(1, n + 1))
    seqs = [m["halley:seq"] for m in seen]
    assert seqs == sorted(set(seqs))
    # The balancer sent the polls round the nodes: the two that do not own the session relayed
    # theirs to the one that does.
    forwarded = [metrics(h)["halley_forwarded_requests_total"] for h in nodes]
    assert sorted(forwarded)[0] == 0 and sorted(forwarded)[1] >= 1, (forwarded, polls)
    status, body = p.send({"event": "pusher:unsubscribe", "data": {"channel": "rr"}})
    assert status == 200, body


def test_sse_reconnects_through_round_robin_every_message_once_in_order(behind_balancer):
    nodes, lb = behind_balancer
    s = SSE(lb.port)
    info = json.loads(s.recv()["data"])
    sid, token = info["socket_id"], info["halley:token"]
    assert send_http(lb.port, sid, token, {"event": "pusher:subscribe", "data": {"channel": "sse-rr"}})[0] == 200
    sub = s.recv()
    assert sub["event"] == "pusher_internal:subscription_succeeded"
    n = 40
    seen = []
    for part in range(4):  # four streams: each reconnect lands on the next node
        for i in range(part * 10, part * 10 + 10):
            assert publish(nodes[i % 3].port, {"channel": "sse-rr", "event": "e", "data": str(i)})[0] in (201, 202)
        while len(seen) < part * 10 + 10:
            m = s.recv()
            if m["event"] == "e":
                seen.append(m)
        last = seen[-1]["halley:seq"]
        s.close()
        s = SSE(lb.port, last_event_id=f"{last}:{sid}:{token}")
        assert s.status == 200
    assert [m["data"] for m in seen] == [str(i) for i in range(n)]
    s.conn.sock.settimeout(0.5)
    with pytest.raises(TimeoutError):
        while True:  # the resumed stream's own events, then nothing: no message twice
            assert s.recv()["event"] != "e"
    s.close()
    assert sum(metrics(h)["halley_forwarded_requests_total"] for h in nodes) >= 2


def test_a_request_for_a_dead_nodes_session_is_told_expired(behind_balancer):
    nodes, lb = behind_balancer
    p = Poll(nodes[0].port)
    nodes[0].crash()
    # Its number's key outlives it (up to 15 s): the forward fails to connect and the session
    # is unknown where the request landed.
    for _ in range(3):
        status, _, body = http_request(lb.port, "GET", f"/halley/poll?session={p.session}&cursor={p.cursor}",
                                       headers={"X-Halley-Token": p.token})
        assert status == 404 and json.loads(body)["halley:reason"] == "expired", (status, body)


def test_pusher_js_xhr_transports_through_round_robin(behind_balancer):
    """pusher-js's xhr_polling and xhr_streaming sessions, every request through the balancer:
    the node a session opened on records it in Redis; the others forward its requests there."""
    from pusher_xhr import Client, next_message, open_stream

    nodes, lb = behind_balancer
    polling = Client(lb.port)
    status, _, frames = polling.poll()
    assert status == 200 and frames == [("o", None)]
    status, _, frames = polling.poll()
    assert frames[0][1][0]["event"] == "pusher:connection_established"
    polling.subscribe("pjs-rr")
    streaming = Client(lb.port)
    st, _ = open_stream(streaming)
    streaming.subscribe("pjs-rr")
    assert next_message(st, "pusher_internal:subscription_succeeded")
    got = []
    while not any(m["event"] == "pusher_internal:subscription_succeeded" for m in got):
        status, _, frames = polling.poll()
        got += [m for f in frames if f[0] == "a" for m in f[1]]
    n = 30
    for i in range(n):
        assert publish(nodes[i % 3].port, {"channel": "pjs-rr", "event": "e", "data": str(i)})[0] in (201, 202)
    polled = []
    while len(polled) < n:
        status, _, frames = polling.poll(timeout=10)
        assert status == 200
        polled += [m for f in frames if f[0] == "a" for m in f[1] if m["event"] == "e"]
    assert [m["data"] for m in polled] == [str(i) for i in range(n)]
    streamed = [next_message(st, "e") for _ in range(n)]
    assert [m["data"] for m in streamed] == [str(i) for i in range(n)]
    assert sum(metrics(h)["halley_forwarded_requests_total"] for h in nodes) >= 4
    st.abort()


def test_events_to_a_user_and_terminate_connections_reach_every_node(nodes):
    """send_to_user and terminate_connections through one node act on the user's sessions on
    every node (the official SDK against the third node)."""
    from test_pusher import Client as PusherClient, signin

    ready(nodes)
    pusher_client(nodes[2].port).send_to_user("u-9", "missed", {"n": 0})  # nobody signed in: live only, gone
    time.sleep(1.5)  # the nodes forget the channel (swept each second): the next event is offset 2 of it
    a, b = PusherClient(nodes[0].port), PusherClient(nodes[1].port)
    for c in (a, b):
        signin(c, "u-9")
        assert c.next("pusher:signin_success")
    sdk = pusher_client(nodes[2].port)
    sdk.send_to_user("u-9", "notice", {"n": 1})
    for c in (a, b):
        m = c.next("notice")
        assert m["channel"] == "#server-to-user-u-9" and json.loads(m["data"]) == {"n": 1}
    sdk.send_to_user("u-9", "notice", {"n": 2})
    for c in (a, b):
        assert json.loads(c.next("notice")["data"]) == {"n": 2}
    for h in nodes:  # a user's channel keeps nothing: its first event is no gap to read
        assert metrics(h)['halley_broker_gap_messages_total{result="lost"}'] == 0
        assert metrics(h)['halley_broker_gap_messages_total{result="filled"}'] == 0
        assert "no longer in the stream" not in h.log_text()
    assert sdk.terminate_user_connections("u-9") == {}
    for c in (a, b):
        m = c.next("pusher:error")
        assert m["data"]["code"] == 4009
        with pytest.raises(Exception):
            c.recv(timeout=2)
        assert c.ws.close_code == 4009
    for h in nodes[:2]:
        assert h.wait_for_log(r"terminating 1 connection\(s\) of user u-9 of app 1 on this node")


def test_presence_is_one_roster_for_the_cluster(nodes):
    """Members on three nodes see one roster; member_added / member_removed once per user for
    the cluster (a user's second session, on another node, announces nothing)."""
    from test_pusher import Client as PusherClient

    ready(nodes)
    sdk = pusher_client(nodes[0].port)
    a = PusherClient(nodes[0].port)
    assert a.sub_presence("presence-room", "ann", {"n": 1}, client=sdk) == {
        "ids": ["ann"], "hash": {"ann": {"n": 1}}, "count": 1}
    b = PusherClient(nodes[1].port)
    roster = b.sub_presence("presence-room", "bob", {"n": 2}, client=sdk)
    assert sorted(roster["ids"]) == ["ann", "bob"] and roster["count"] == 2
    m = a.next("pusher_internal:member_added")
    assert json.loads(m["data"]) == {"user_id": "bob", "user_info": {"n": 2}}
    # Ann again, on the third node: no member_added anywhere.
    a2 = PusherClient(nodes[2].port)
    roster = a2.sub_presence("presence-room", "ann", {"n": 1}, client=sdk)
    assert sorted(roster["ids"]) == ["ann", "bob"] and roster["count"] == 2
    assert not [x for x in a.quiet(0.5) + b.quiet(0.1) if x["event"].startswith("pusher_internal:member")]
    # The HTTP API of any node answers for the cluster's presence.
    for h in nodes:
        api = pusher_client(h.port)
        assert api.channel_info("presence-room", ["user_count"]) == {"occupied": True, "user_count": 2}
        assert sorted(u["id"] for u in api.users_info("presence-room")["users"]) == ["ann", "bob"]
    # Ann's first session leaves: she is still there (her other one).
    a.send({"event": "pusher:unsubscribe", "data": {"channel": "presence-room"}})
    assert not [x for x in b.quiet(0.5) if x["event"].startswith("pusher_internal:member")]
    # Her last leaves: member_removed once, on Bob's node too.
    a2.close()
    m = b.next("pusher_internal:member_removed", timeout=5)
    assert json.loads(m["data"]) == {"user_id": "ann"}
    late = PusherClient(nodes[0].port)
    roster = late.sub_presence("presence-room", "cy", client=sdk)
    assert sorted(roster["ids"]) == ["bob", "cy"] and roster["count"] == 2, roster
    assert json.loads(b.next("pusher_internal:member_added")["data"])["user_id"] == "cy"
    for c in (a, b, late):
        c.close()


def test_presence_members_of_a_dead_node_leave_within_20_seconds(nodes):
    from test_pusher import Client as PusherClient

    ready(nodes)
    for h in nodes:
        assert h.wait_for_log(r"number \d+ among the nodes")
    sdk = pusher_client(nodes[1].port)
    doomed = PusherClient(nodes[0].port)
    doomed.sub_presence("presence-k9", "dora", client=sdk)
    watcher = PusherClient(nodes[1].port)
    assert sorted(watcher.sub_presence("presence-k9", "wes", client=sdk)["ids"]) == ["dora", "wes"]
    t0 = time.monotonic()
    nodes[0].crash()
    m = watcher.next("pusher_internal:member_removed", timeout=25)
    took = time.monotonic() - t0
    assert json.loads(m["data"]) == {"user_id": "dora"}
    assert took <= 20.5, took  # node key TTL 15 s + one sweep (5 s)
    print(f"a dead node's member left after {took:.1f} s")
    # The roster is right for a newcomer.
    c = PusherClient(nodes[2].port)
    assert c.sub_presence("presence-k9", "cal", client=sdk)["ids"] in (["wes", "cal"], ["cal", "wes"])
    c.close()
    watcher.close()


def test_occupancy_the_api_and_webhooks_count_the_cluster_once(start_halley, redis, tmp_path):
    """Subscribers of a channel on three nodes: /channels and subscription_count on any node
    count them all; channel_occupied and channel_vacated (and a presence user's member_added)
    come once for the cluster."""
    from test_webhooks import KEY, SECRET, Receiver, check_signed, pusher_ws, sub_presence, unsubscribe, write_config

    receiver = Receiver()
    try:
        config = write_config(tmp_path, receiver.url)
        nodes = [start_halley("--redis", redis.url, "--config", config, "--metrics-port", "0") for _ in range(3)]
        ready(nodes)
        subs = []
        for h in nodes:
            ws = pusher_ws(h.port)
            ws.subscribe("room")
            subs.append(ws)
        extra = pusher_ws(nodes[2].port)
        extra.subscribe("room")
        lobby = pusher_ws(nodes[0].port)
        lobby.subscribe("lobby")
        for h in nodes:
            api = pusher_client(h.port, app_id="42", key=KEY, secret=SECRET)
            assert wait_until(lambda: api.channel_info("room", ["subscription_count"]).get("subscription_count") == 4)
            assert api.channel_info("room", ["subscription_count"]) == {"occupied": True, "subscription_count": 4}
            assert api.channels_info(attributes=["subscription_count"]) == {
                "channels": {"lobby": {"subscription_count": 1}, "room": {"subscription_count": 4}}}
            assert api.channels_info(prefix_filter="ro") == {"channels": {"room": {}}}
        for ws in subs[:2]:  # one user on two nodes: one member_added
            sub_presence(ws, "presence-hall", "u1")
        assert wait_until(lambda: sorted(e["name"] for e in receiver.delivered_events()
                                         if e["channel"] == "presence-hall") == ["channel_occupied", "member_added"]), \
            receiver.delivered_events()
        for ws in subs + [extra]:
            unsubscribe(ws, "room")
        api = pusher_client(nodes[1].port, app_id="42", key=KEY, secret=SECRET)
        assert wait_until(lambda: api.channel_info("room", ["subscription_count"]) == {
            "occupied": False, "subscription_count": 0})
        assert api.channels_info() == {"channels": {"lobby": {}, "presence-hall": {}}}
        # channel_vacated waits out its debounce (3 s) on the node that sent it.
        assert wait_until(lambda: len([e for e in receiver.delivered_events() if e["channel"] == "room"]) >= 2,
                          timeout=10)
        time.sleep(1.5)  # anything sent twice would be here by now
        hall = [e for e in receiver.delivered_events() if e["channel"] == "presence-hall"]
        assert sorted(e["name"] for e in hall) == ["channel_occupied", "member_added"], hall  # once each
        for r in receiver.wait(1):
            check_signed(r)
        room = [e for e in receiver.delivered_events() if e["channel"] == "room"]
        assert room == [{"name": "channel_occupied", "channel": "room"}, {"name": "channel_vacated", "channel": "room"}]
        for ws in subs + [extra, lobby]:
            ws.close()
    finally:
        receiver.close()


@pytest.mark.parametrize("how", ["password", "acl-user"])
def test_redis_auth_with_a_password_or_an_acl_user(start_halley, tmp_path, how):
    """Redis that wants AUTH: the default user with a password, or an ACL user (here one that
    may not run CLUSTER SLOTS: the hub takes the server as a single one, and says so)."""
    if how == "password":
        r = RedisServer(str(tmp_path), ["--requirepass", "pw0rd"], auth=("default", "pw0rd"))
        url = f"redis://:pw0rd@127.0.0.1:{r.port}"
    else:
        r = RedisServer(str(tmp_path), ["--user", "default", "off", "--user", "hub", "on", ">s3cret", "~*", "&*",
                                        "+@all", "-cluster"], auth=("hub", "s3cret"))
        url = f"redis://hub:s3cret@127.0.0.1:{r.port}"
    try:
        nodes = [start_halley("--redis", url, "--app-token", "tok", "--metrics-port", "0") for _ in range(2)]
        ready(nodes)
        ws = subscriber(nodes[1].port, "locked")
        assert publish(nodes[0].port, {"channel": "locked", "event": "e", "data": "in"})[0] in (201, 202)
        assert [m["data"] for m in events(ws, 1)] == ["in"]
        ws.close()
        if how == "acl-user":
            assert nodes[0].wait_for_log(r"refused CLUSTER SLOTS .*NOPERM.*taking it as a single server")
        # A wrong password: the hub says so and keeps trying; publishes get 503.
        bad = start_halley("--redis", url.replace("s3cret", "nope").replace("pw0rd", "nope"), "--app-token", "tok")
        assert bad.wait_for_log(r"handshake refused: .*(WRONGPASS|invalid)")
        assert publish(bad.port, {"channel": "locked", "event": "e", "data": "x"})[0] == 503
    finally:
        r.stop()
