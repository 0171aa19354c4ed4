"""Nodes over a Redis Cluster: three hubs and a local cluster of three Debian `redis-server`
masters (no replicas). Each hub is given a different master; it reads the slot map, sends
each command to the master of its key's slot and subscribes to each shard channel
(`SSUBSCRIBE`) on the master that serves it. A slot moved while messages flow (MOVED, ASK,
and the `sunsubscribe` Redis sends to a moved shard channel's subscribers) loses nothing.
"""

from __future__ import annotations

import threading
import time

import pytest

from cluster import RedisCluster, key_slot
from hub_client import WS, publish, pusher_client, wait_until
from test_cluster import broker_up, events, metrics, ready, shard_of


@pytest.fixture
def rcluster(tmp_path):
    c = RedisCluster(str(tmp_path))
    yield c
    c.stop()


def hubs_on(start_halley, rcluster, *extra):
    nodes = [start_halley("--redis", rcluster.url(i), "--app-token", "tok", "--metrics-port", "0", *extra)
             for i in range(3)]
    ready(nodes)
    for h in nodes:
        assert h.wait_for_log(r"is a Redis Cluster of 3 master\(s\)")
        assert h.wait_for_log(r"number \d+ among the nodes")
    return nodes


def subscribers(nodes, names):
    """A plain Pusher WebSocket session on each node, subscribed to every channel of `names`."""
    subs = []
    for h in nodes:
        ws = WS(h.port, halley=False)
        ws.hello()
        for name in names:
            ws.subscribe(name)
        subs.append(ws)
    return subs


def channels_on_every_master(rcluster, count):
    """`count` channel names whose shards are spread over the three masters."""
    names, owners = [], set()
    i = 0
    while len(names) < count or len(owners) < 3:
        name = f"ch{i}"
        i += 1
        owner = rcluster.owner(key_slot(f"{{{shard_of('1', name)}}}"))
        if len(names) < count or owner not in owners:
            names.append(name)
            owners.add(owner)
    return names


def test_a_redis_cluster_carries_every_shard_once_in_order(start_halley, rcluster):
    nodes = hubs_on(start_halley, rcluster)
    names = channels_on_every_master(rcluster, 9)
    subs = subscribers(nodes, names)
    n = 10
    for i in range(n):
        for k, c in enumerate(names):
            status, j = publish(nodes[(i + k) % 3].port, {"channel": c, "event": "e", "data": f"{c}/{i}"})
            assert status in (201, 202), (status, j)
            assert j["channels"][c]["offset"] == i + 1
    for ws in subs:
        got = events(ws, n * len(names))
        for c in names:
            mine = [m for m in got if m["channel"] == c]
            assert [m["data"] for m in mine] == [f"{c}/{i}" for i in range(n)]
            assert [m["halley:offset"] for m in mine] == list(range(1, n + 1))
        with pytest.raises(TimeoutError):
            ws.recv(timeout=0.3)  # nothing twice
    # Every master holds some of the channels' keys (the load is spread), and every command
    # went straight to the master of its slot: none was redirected.
    assert all(int(s.command("DBSIZE")) > 0 for s in rcluster.servers)
    for h in nodes:
        m = metrics(h)
        assert m['halley_broker_redirections_total{kind="moved"}'] == 0
        assert m['halley_broker_redirections_total{kind="ask"}'] == 0
    # A recovery on another node reads the stream from the master of its shard.
    late = WS(nodes[2].port, halley=False)
    late.hello()
    epoch = publish(nodes[0].port, {"channel": names[0], "event": "e", "data": "last"})[1]["channels"][names[0]]["epoch"]
    r = late.subscribe(names[0], since={"epoch": epoch, "offset": n - 2})
    assert r["halley:recovered"] is True, r
    assert [m["data"] for m in events(late, 3)] == [f"{names[0]}/{n - 2}", f"{names[0]}/{n - 1}", "last"]
    # The HTTP API counts the cluster's subscriptions, its occupied channels read from every
    # master.
    api = pusher_client(nodes[1].port)
    assert wait_until(lambda: api.channel_info(names[0], ["subscription_count"]).get("subscription_count") == 4)
    assert sorted(api.channels_info()["channels"]) == sorted(names)
    for ws in subs + [late]:
        ws.close()


def test_presence_over_a_redis_cluster(start_halley, rcluster):
    from test_pusher import Client as PusherClient

    nodes = hubs_on(start_halley, rcluster)
    sdk = pusher_client(nodes[0].port)
    a = PusherClient(nodes[0].port)
    a.sub_presence("presence-c", "ann", {"n": 1}, client=sdk)
    b = PusherClient(nodes[1].port)
    assert sorted(b.sub_presence("presence-c", "bob", client=sdk)["ids"]) == ["ann", "bob"]
    assert a.next("pusher_internal:member_added")["channel"] == "presence-c"
    assert pusher_client(nodes[2].port).channel_info("presence-c", ["user_count"])["user_count"] == 2
    b.close()
    assert a.next("pusher_internal:member_removed", timeout=5)["channel"] == "presence-c"
    a.close()


def test_a_slot_moved_while_messages_flow_loses_nothing(start_halley, rcluster):
    """The slot of a channel's shard moves to another master while two publishers send to it
    through different nodes: the commands follow ASK and MOVED, every node subscribes to the
    shard channel where it now lives (Redis sent `sunsubscribe`), and every subscriber gets
    every accepted message once, in order. While the slot's keys are on the new master and the
    slot is not yet handed over (half a second here, milliseconds in `redis-cli --cluster
    reshard`), its messages are published on the new master, where no node is subscribed yet:
    the nodes read them from the stream after the hand-over, so the history must hold them."""
    nodes = hubs_on(start_halley, rcluster, "--history-size", "2000")
    channel = "moving"
    slot = key_slot(f"{{{shard_of('1', channel)}}}")
    src = rcluster.owner(slot)
    dst = (src + 1) % 3
    subs = subscribers(nodes, [channel])
    accepted: list[tuple[int, str]] = []
    refused = []
    stop = threading.Event()
    lock = threading.Lock()

    def publisher(k):
        i = 0
        while not stop.is_set():
            data = f"p{k}-{i}"
            status, j = publish(nodes[k].port, {"channel": channel, "event": "e", "data": data})
            with lock:
                if status in (201, 202):
                    accepted.append((j["channels"][channel]["offset"], data))
                else:
                    refused.append(status)
            i += 1
            time.sleep(0.005)

    threads = [threading.Thread(target=publisher, args=(k,)) for k in (0, 1)]
    for t in threads:
        t.start()
    time.sleep(0.5)
    rcluster.move_slot(slot, dst, between=lambda: time.sleep(0.5))
    time.sleep(2)
    stop.set()
    for t in threads:
        t.join()
    assert rcluster.owner(slot) == dst
    assert set(refused) <= {503}, refused
    assert len(accepted) > 100
    accepted.sort()
    assert [o for o, _ in accepted] == list(range(1, len(accepted) + 1))  # no offset taken twice or skipped
    for ws in subs:
        got = events(ws, len(accepted), timeout=15)
        assert [(m["halley:offset"], m["data"]) for m in got] == accepted
        with pytest.raises(TimeoutError):
            ws.recv(timeout=0.3)
        ws.close()
    for h in nodes:
        assert h.wait_for_log(r"moved to another master")
        m = metrics(h)
        assert m['halley_broker_gap_messages_total{result="lost"}'] == 0
        assert m['halley_broker_gap_messages_total{result="filled"}'] > 0
    moved = [metrics(h)['halley_broker_redirections_total{kind="moved"}'] for h in nodes]
    ask = [metrics(h)['halley_broker_redirections_total{kind="ask"}'] for h in nodes]
    assert sum(ask) > 0 and all(m > 0 for m in moved[:2]), (moved, ask)  # the publishing nodes followed both
    print(f"redirections followed per node: MOVED {moved}, ASK {ask}")
    print(f"{len(accepted)} accepted, {len(refused)} refused (503) while slot {slot} moved")


def test_a_master_restarted_the_nodes_reconnect_and_go_on(start_halley, rcluster):
    """A master killed and started again (its cluster configuration kept, its data gone, as
    without persistence): publishes meanwhile get 503, none is accepted and lost; the hubs
    reconnect to it, load their functions again, and the channels it serves start a new
    epoch; those on the other masters go on."""
    nodes = hubs_on(start_halley, rcluster)
    names = channels_on_every_master(rcluster, 3)
    victim = rcluster.owner(key_slot(f"{{{shard_of('1', names[0])}}}"))
    subs = subscribers(nodes, names)
    for c in names:
        assert publish(nodes[0].port, {"channel": c, "event": "e", "data": "before"})[0] in (201, 202)
    rcluster.servers[victim].stop()
    assert wait_until(lambda: publish(nodes[1].port, {"channel": names[0], "event": "e", "data": "x"})[0] == 503,
                      timeout=5)
    assert wait_until(lambda: not all(broker_up(h) for h in nodes), timeout=5)
    rcluster.servers[victim].start()
    ready(nodes)
    for h in nodes:
        assert h.wait_for_log(r"redis: reconnected to")
    rcluster.wait_ok()
    after = {}
    for c in names:
        # Until the masters agree the cluster is whole again, Redis answers CLUSTERDOWN: 503.
        deadline = time.monotonic() + 10
        while (r := publish(nodes[2].port, {"channel": c, "event": "e", "data": "after"}))[0] == 503:
            assert time.monotonic() < deadline, r
            time.sleep(0.1)
        status, j = r
        assert status in (201, 202), (status, j)
        after[c] = j["channels"][c]["offset"]
    assert after[names[0]] == 1  # its master lost its keys: a new epoch, from offset 1
    for ws in subs:
        got = events(ws, 2 * len(names))
        for c in names:
            assert [m["data"] for m in got if m["channel"] == c] == ["before", "after"]
        ws.close()


def test_a_master_fails_over_to_its_replica(start_halley, tmp_path):
    """Three masters with a replica each; a master is killed (-9) and its replica takes over
    (cluster-node-timeout 1 s): the nodes read the new map, reach the new master and go on.
    What the replica had received is kept: offsets go on from there, every message once, in
    order, on every node."""
    c = RedisCluster(str(tmp_path), replicas=1, node_timeout_ms=1000)
    try:
        nodes = hubs_on(start_halley, c)
        names = channels_on_every_master(c, 3)
        slot = key_slot(f"{{{shard_of('1', names[0])}}}")
        victim = c.owner(slot)
        subs = subscribers(nodes, names)
        for i in range(5):
            for name in names:
                assert publish(nodes[i % 3].port, {"channel": name, "event": "e", "data": f"b{i}"})[0] in (201, 202)
        time.sleep(0.5)  # replicated (asynchronously) by now
        c.servers[victim].stop()
        t0 = time.monotonic()
        after = {}
        for name in names:
            deadline = time.monotonic() + 20
            while (r := publish(nodes[1].port, {"channel": name, "event": "e", "data": "after"}))[0] == 503:
                assert time.monotonic() < deadline, r
                time.sleep(0.1)
            assert r[0] in (201, 202), r
            after[name] = r[1]["channels"][name]["offset"]
        took = time.monotonic() - t0
        assert c.owner(slot) != victim
        assert after == {name: 6 for name in names}, after
        for ws in subs:
            got = events(ws, 6 * len(names), timeout=15)
            for name in names:
                assert [m["data"] for m in got if m["channel"] == name] == [f"b{i}" for i in range(5)] + ["after"]
            with pytest.raises(TimeoutError):
                ws.recv(timeout=0.3)
            ws.close()
        for h in nodes:
            assert h.wait_for_log(r"is no longer a master of the cluster")
        print(f"publishes were answered again {took:.1f} s after the master died")
    finally:
        c.stop()
