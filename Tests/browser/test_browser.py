"""halley.js in a real browser (headless Chromium) against the real hub, directly and through
proxies that break the network the way real ones do. The pages are the demo pages of
`public/`; each exposes its state (`window.panel`, `chat`, `echoDemo`, `ticker`) to the test.

Times are measured in the page: `performance.now()` counts from the start of navigation, so
"first event" is page load → first channel event dispatched to the application.
"""

from __future__ import annotations

import base64
import json
import math
import os
import subprocess
import threading
import time

import pytest

from conftest import ROOT, TOKEN, record, screenshot, wait_for
from hub_client import publish
from proxies import Proxy


class Publisher:
    """Publishes `price` events numbered 1, 2, 3… to one channel with POST /publish (bearer
    token), directly to the hub, every `every` seconds until stopped or `count` reached."""

    def __init__(self, port, channel, every=0.05, count=None):
        self.port, self.channel, self.every, self.count = port, channel, every, count
        self.sent = 0
        self.failures = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self):
        self._thread.start()
        return self

    def _run(self):
        symbols = ["HAL", "SWFT", "WSK"]
        while not self._stop.is_set() and (self.count is None or self.sent < self.count):
            n = self.sent + 1
            data = {"n": n, "symbol": symbols[n % 3], "price": round(100 + 5 * math.sin(n / 7) + n % 3 * 20, 2)}
            status, body = publish(self.port, {"channel": self.channel, "event": "price", "data": json.dumps(data)}, token=TOKEN)
            if status not in (201, 202):
                self.failures.append((status, body))
            self.sent = n
            self._stop.wait(self.every)

    def stop(self):
        self._stop.set()
        self._thread.join(5)
        assert not self.failures, self.failures[:3]
        return self.sent


def unique(prefix):
    return f"{prefix}-{int(time.time() * 1000) % 10_000_000}"


def panel_state(d):
    return d.execute_script("""
        var c = panel.client.connection;
        return {created: panel.createdAt, first: panel.firstEventAt, subscribed: panel.subscribedAt, transport: c.transport, state: c.state,
                switches: c.switches, ns: panel.events.filter(e => e.data && e.data.n).map(e => e.data.n),
                log: c.log.map(e => [e.transport, e.event, e.detail].join(' '))};""")


def wait_last(d, n, timeout=10.0):
    wait_for(d, f"return panel.events.some(e => e.data && e.data.n === {n})", timeout=timeout, what=f"event {n}")


def assert_in_order_once(ns, upto):
    """Every event from the first one received (those published before the subscription are
    not for this page) to `upto`: once each, in order."""
    assert ns, "no events"
    want = list(range(ns[0], upto + 1))
    assert ns == want, f"lost {sorted(set(want) - set(ns))[:20]}, or duplicated / out of order: {ns[:60]}"


def open_panel(d, origin, channel, extra=""):
    d.get(f"{origin}/connection.html?channel={channel}{extra}")


# ---- 1. direct ------------------------------------------------------------------------------

def test_direct_uses_websocket_and_events_arrive(hub, browser):
    d = browser()
    channel = unique("direct")
    pub = Publisher(hub.port, channel).start()
    try:
        open_panel(d, f"http://127.0.0.1:{hub.port}", channel)
        wait_for(d, "return panel.events.length >= 5", what="five events")
    finally:
        sent = pub.stop()
    wait_last(d, sent)
    s = panel_state(d)
    assert s["transport"] == "ws" and s["state"] == "connected", s
    assert [w["to"] for w in s["switches"]] == ["ws"], s["switches"]
    assert_in_order_once(s["ns"], sent)
    # halley.js found the hub from its own script URL (no host option on the page).
    assert d.execute_script("return panel.client.origin") == f"http://127.0.0.1:{hub.port}"
    record("path1_direct", first_event_ms=round(s["first"]), client_created_ms=round(s["created"]), subscribed_ms=round(s["subscribed"]),
           transport=s["transport"])
    screenshot(d, "connection-panel-websocket")


# ---- 2. WebSocket refused → streaming -------------------------------------------------------

def test_websocket_refused_falls_back_to_streaming(hub, browser):
    proxy = Proxy(hub.port, refuse_ws=True)
    d = browser()
    channel = unique("refused")
    pub = Publisher(hub.port, channel).start()
    try:
        open_panel(d, proxy.origin, channel, "&probeDelay=600000")
        wait_for(d, "return panel.events.length >= 5", what="five events")
        sent = pub.stop()
        # A binary payload published by REST arrives as an ArrayBuffer over SSE too (base64 on
        # the wire).
        payload = bytes(range(256))[::-3]
        status, _ = publish(hub.port, {"channel": channel, "event": "bytes",
                                       "data_base64": base64.b64encode(payload).decode()}, token=TOKEN)
        assert status == 201
        wait_for(d, "return panel.events.some(e => e.event === 'bytes')", what="the binary event")
        s = panel_state(d)
        assert s["transport"] == "sse", s
        assert proxy.refused >= 1
        assert [w["to"] for w in s["switches"]] == ["sse"], s["switches"]
        wait_last(d, sent)
        assert_in_order_once(panel_state(d)["ns"], sent)
        b = d.execute_script("return panel.events.find(e => e.event === 'bytes')")
        assert b["binary"] and bytes(b["data"]) == payload
        # Remembered for this origin: a reload starts on SSE without trying WebSocket.
        assert d.execute_script("return panel.client.connection.memory.recall()") == "sse"
        record("path2_refused_ws", first_event_ms=round(s["first"]), client_created_ms=round(s["created"]), subscribed_ms=round(s["subscribed"]),
               fallback_ms=s["switches"][0]["took"], transport=s["transport"])
        screenshot(d, "connection-panel-sse")
        before = len(proxy.websocket_requests())
        d.refresh()
        wait_for(d, "return panel.client.connection.state === 'connected'", what="connected after reload")
        assert d.execute_script("return panel.client.connection.transport") == "sse"
        assert len(proxy.websocket_requests()) == before, "a remembered transport skips WebSocket"
    finally:
        proxy.stop()


def test_websocket_probe_upgrades_without_loss(hub, browser):
    """On SSE behind a proxy that refuses WebSocket; the proxy starts allowing it while events
    flow; a probe takes the session over: every event once, in order, across the switch."""
    proxy = Proxy(hub.port, refuse_ws=True)
    d = browser()
    channel = unique("upgrade")
    pub = Publisher(hub.port, channel, every=0.03).start()
    try:
        open_panel(d, proxy.origin, channel, "&probeDelay=1000&probeMaxDelay=2000")
        wait_for(d, "return panel.client.connection.transport === 'sse' && panel.events.length > 3", what="on SSE")
        wait_for(d, "return panel.client.connection.log.some(e => e.event === 'probe failed')", what="a refused probe")
        proxy.refuse_ws = False
        wait_for(d, "return panel.client.connection.transport === 'ws'", timeout=10, what="the upgrade")
        time.sleep(0.5)
        sent = pub.stop()
        wait_last(d, sent)
        s = panel_state(d)
        assert_in_order_once(s["ns"], sent)
        assert [(w["to"], w["reason"]) for w in s["switches"]] == [("sse", "initial"), ("ws", "upgrade")], s["switches"]
        record("upgrade_sse_to_ws", probe_to_hello_ms=s["switches"][1]["took"], events=sent)
        screenshot(d, "connection-panel-upgrade")
    finally:
        pub.stop()
        proxy.stop()


# ---- 3. streaming buffered → long-polling ---------------------------------------------------

def test_buffering_proxy_ends_on_long_polling(hub, browser):
    proxy = Proxy(hub.port, refuse_ws=True, buffer=True)
    d = browser()
    channel = unique("buffered")
    pub = Publisher(hub.port, channel).start()
    try:
        open_panel(d, proxy.origin, channel, "&probeDelay=600000")
        wait_for(d, "return panel.events.length >= 5", timeout=20, what="five events")
        sent = pub.stop()
        wait_last(d, sent)
        s = panel_state(d)
        assert s["transport"] == "poll", s
        assert [w["to"] for w in s["switches"]] == ["poll"], s["switches"]
        assert any("sse timeout" in l for l in s["log"]), s["log"]
        assert s["switches"][0]["took"] < 12000, "bounded: WebSocket refusal + the stream deadline (5 s)"
        assert_in_order_once(s["ns"], sent)
        record("path3_buffered_stream", first_event_ms=round(s["first"]), client_created_ms=round(s["created"]), subscribed_ms=round(s["subscribed"]),
               fallback_ms=s["switches"][0]["took"], transport=s["transport"])
        screenshot(d, "connection-panel-long-polling")
    finally:
        pub.stop()
        proxy.stop()


# ---- 4. connections cut while events flow ---------------------------------------------------

@pytest.mark.parametrize("transports", ["ws,sse,poll", "sse,poll", "poll"])
def test_cut_connections_every_event_once_in_order(hub, browser, transports):
    """Every connection through the proxy is aborted every 2 s (the first cut 2 s after the
    page starts loading) while 25 events a second flow: every event published after the
    subscription arrives once and in order, on each transport."""
    d = browser()
    proxy = Proxy(hub.port, cut_every=2.0)
    channel = unique("cut")
    pub = Publisher(hub.port, channel, every=0.04, count=250).start()
    try:
        open_panel(d, proxy.origin, channel, f"&transports={transports}&probeDelay=600000")
        pub._thread.join(30)
        sent = pub.stop()
        time.sleep(0.3)
        proxy.cut_every = None
        wait_for(d, f"return panel.events.some(e => e.data && e.data.n === {sent})", timeout=20, what="the last event")
        s = panel_state(d)
        ns = s["ns"]
        assert ns and ns[0] <= 20, f"the first event came late: {ns[:5]}"
        assert ns == list(range(ns[0], sent + 1)), f"lost, duplicated or out of order: {sorted(set(range(ns[0], sent + 1)) - set(ns))[:20]}"
        # A cut that finds no connection open (a poll between two requests) or only a response
        # already read costs nothing; at least two must have hit.
        drops = [l for l in s["log"] if " dropped " in l or " failed " in l or " timeout " in l]
        assert proxy.cuts >= 2 and len(drops) >= 2, (proxy.cuts, s["log"])
        assert all(w["to"] == transports.split(",")[0] or w["reason"] != "initial" for w in s["switches"]), s["switches"]
        # Every resume went through the proxy: none of them put the session's token in a URL
        # (issue 18: an access log would have handed the session to its reader).
        token = d.execute_script("return panel.client.connection._token")
        targets = [t for (_, _, t, _) in proxy.requests]
        assert token and len(targets) > 5, (token, targets[:5])
        assert not [t for t in targets if token in t or "token=" in t], [t for t in targets if "token" in t][:5]
        # The longest pause between two events: what a cut costs the application.
        stall = d.execute_script("var t = panel.events.map(e => e.at), m = 0;"
                                 "for (var i = 1; i < t.length; i++) m = Math.max(m, t[i] - t[i - 1]); return m;")
        record(f"path4_cut_{transports.replace(',', '_')}", first_event_ms=round(s["first"]), client_created_ms=round(s["created"]), cuts=proxy.cuts,
               drops=len(drops), events=len(ns), longest_stall_ms=round(stall),
               transports_used="/".join(sorted({w["to"] for w in s["switches"]})))
        if transports == "ws,sse,poll":
            screenshot(d, "connection-panel-cut")
    finally:
        pub.stop()
        proxy.stop()


# ---- 5. presence chat -----------------------------------------------------------------------

def chat_state(d):
    return d.execute_script("return {joined: chat.joined, members: chat.members || [], events: chat.events,"
                            " messages: chat.messages.map(m => m.from + ': ' + m.text), authFailed: chat.authFailed}")


def test_presence_chat_join_talk_leave(hub, sdk, browser):
    ann, bob = browser(), browser()
    base = f"http://127.0.0.1:{hub.port}/chat.html?auth={sdk.origin}/pusher/auth"
    ann.get(base + "&name=Ann")
    wait_for(ann, "return chat.joined", what="Ann joined")
    bob.get(base + "&name=Bob")
    wait_for(bob, "return chat.joined && chat.members.length === 2", what="Bob sees Ann and himself")
    assert chat_state(bob)["members"] == ["Ann", "Bob"]
    wait_for(ann, "return chat.events.includes('joined:Bob')", what="Ann sees Bob join")
    assert chat_state(ann)["members"] == ["Ann", "Bob"]

    bob.execute_script("chat.say('hi Ann, Bob here')")
    wait_for(ann, "return chat.messages.some(m => m.text === 'hi Ann, Bob here' && m.from === 'Bob')", what="Ann gets Bob's line")
    ann.execute_script("chat.say('hello Bob!')")
    wait_for(bob, "return chat.messages.some(m => m.text === 'hello Bob!' && m.from === 'Ann')", what="Bob gets Ann's line")
    ann.execute_script("chat.say('see you')")
    wait_for(bob, "return chat.messages.some(m => m.text === 'see you')", what="Bob gets the second line")
    screenshot(bob, "chat")

    bob.get("about:blank")  # pagehide: halley.js leaves its channels at once
    wait_for(ann, "return chat.events.includes('left:Bob')", timeout=5, what="Ann sees Bob leave")
    s = chat_state(ann)
    assert s["members"] == ["Ann"]
    assert s["messages"] == ["Bob: hi Ann, Bob here", "Ann: hello Bob!", "Ann: see you"]
    screenshot(ann, "chat-after-leave")


def test_chat_without_auth_backend_says_so(hub, browser):
    d = browser()
    d.get(f"http://127.0.0.1:{hub.port}/chat.html?name=Eve&auth=http://127.0.0.1:9/auth")
    wait_for(d, "return chat.authFailed", what="the auth failure")
    assert d.execute_script("return !document.getElementById('noauth').hidden")


def test_private_and_presence_channels_share_one_auth_request(hub, backend, browser):
    """The batch option (one request for four channels) needs an endpoint that answers a
    batch: the demo backend's. (Stock endpoints, and the fallback to single requests:
    test_halley_js.py.)"""
    d = browser()
    d.get(f"http://127.0.0.1:{hub.port}/connection.html?channel=batch-public")
    before = len(backend.requests)
    names = ["private-b1", "private-b2", "presence-b3", "private-b4"]
    d.execute_script("""
        var h = new Halley('app-key', {channelAuthorization: {endpoint: arguments[0], batch: true, params: {name: 'Zed'}}});
        window.batch = {h: h, ok: [], errors: []};
        arguments[1].forEach(function (n) {
          var c = h.subscribe(n);
          c.bind('pusher:subscription_succeeded', function () { batch.ok.push(n); });
          c.bind('pusher:subscription_error', function (e) { batch.errors.push([n, e]); });
        });""", backend.url, names)
    wait_for(d, "return batch.ok.length === 4 || batch.errors.length", what="four subscriptions")
    assert d.execute_script("return batch.errors") == []
    reqs = backend.requests[before:]
    assert len(reqs) == 1 and sorted(reqs[0]["channels"]) == sorted(names), reqs
    me = d.execute_script("var m = batch.h.channel('presence-b3').members; return [m.count, m.me && m.me.id, m.me && m.me.info.name]")
    assert me == [1, "zed", "Zed"]


# ---- 6. binary ------------------------------------------------------------------------------

def test_binary_round_trip_through_echo(hub, browser):
    d = browser()
    d.get(f"http://127.0.0.1:{hub.port}/echo.html")
    payload = list(range(256)) + [0, 255, 128]
    for kind in ["arraybuffer", "uint8array", "blob"]:
        got = d.execute_async_script("var done = arguments[2]; echoDemo.echo(arguments[0], arguments[1]).then(done);", kind, payload)
        assert got == payload, kind
    assert d.execute_async_script("var done = arguments[0]; echoDemo.echo('text', [104, 105]).then(done);") == "hi"
    screenshot(d, "echo")


@pytest.mark.parametrize("receiver", ["ws", "poll"])
def test_binary_round_trip_through_a_channel(hub, sdk, browser, receiver):
    """Client events carrying bytes, from one halley.js client to another: as a binary frame to
    a WebSocket session, as base64 to a long-polling one; ArrayBuffer, typed array, DataView,
    Blob in; ArrayBuffer (or Blob with binaryType) out."""
    d = browser()
    extra = "&btransports=poll" if receiver == "poll" else "&binaryType=blob"
    d.get(f"http://127.0.0.1:{hub.port}/echo.html?auth={sdk.origin}/pusher/auth{extra}")
    wait_for(d, "return echoDemo.channelReady()", what="both clients subscribed")
    sent = []
    for i, kind in enumerate(["arraybuffer", "uint8array", "dataview", "blob"]):
        payload = [(i * 37 + k * 11) % 256 for k in range(64 + i)]
        sent.append(payload)
        d.execute_script("echoDemo.sendChannel(arguments[0], arguments[1])", kind, payload)
    wait_for(d, "return echoDemo.received.length === 4", what="four binary events")
    got = d.execute_script("return echoDemo.received")
    assert [g["bytes"] for g in got] == sent
    assert {g["transport"] for g in got} == {receiver}
    assert {g["kind"] for g in got} == {"Blob" if receiver == "ws" else "ArrayBuffer"}
    if receiver == "ws":
        screenshot(d, "echo-channel")


# ---- the other demo pages -------------------------------------------------------------------

def test_ticker_and_landing_pages(hub, browser):
    d = browser()
    d.get(f"http://127.0.0.1:{hub.port}/")
    links = d.execute_script("return Array.from(document.querySelectorAll('a')).map(a => a.getAttribute('href'))")
    assert {"chat.html", "ticker.html", "echo.html", "connection.html"} <= set(links)
    screenshot(d, "landing")
    pub = Publisher(hub.port, "ticker", every=0.1).start()
    try:
        d.get(f"http://127.0.0.1:{hub.port}/ticker.html")
        wait_for(d, "return ticker.events.length >= 12", what="a dozen prices")
        assert d.execute_script("return document.querySelectorAll('.quote').length") == 3
        record("ticker_page", first_event_ms=round(d.execute_script("return ticker.firstEventAt")))
        screenshot(d, "ticker")
    finally:
        pub.stop()


def test_module_import_and_host_from_script_url(hub, browser):
    """halley.mjs imported as an ES module, halley.js imported as one (it finds its URL in a
    stack trace), and a page on another origin that loads halley.js from the hub: each client
    connects to the hub that served the script, not to the page's origin."""
    proxy = Proxy(hub.port)
    hub_origin = f"http://127.0.0.1:{hub.port}"
    try:
        d = browser()
        d.get(f"{hub_origin}/connection.html?channel=module-check")
        got = d.execute_async_script("""
            var done = arguments[0];
            import('/halley.mjs').then(function (m) {
              var h = new m.default('app-key', {autoConnect: false});
              return import('/halley.js?as-module').then(function () {
                done([m.Halley === m.default, typeof m.default, h.origin, window.Halley.scriptOrigin]);
              });
            }).catch(function (e) { done(String(e)); });""")
        assert got == [True, "function", hub_origin, hub_origin], got
        # A page on another origin (the proxy) with <script src="http://hub/halley.js">.
        d.get(f"{proxy.origin}/connection.html?channel=module-check")
        got = d.execute_async_script("""
            var done = arguments[1], s = document.createElement('script');
            s.src = arguments[0] + '/halley.js';
            s.onload = function () { done([location.origin, new Halley('app-key', {autoConnect: false}).origin]); };
            document.head.appendChild(s);""", hub_origin)
        assert got == [proxy.origin, hub_origin], got
    finally:
        proxy.stop()


# ---- sessions that expire: recovery from channel history ------------------------------------

def test_expired_session_recovers_from_history_or_says_not_recovered(start_hub, browser):
    """The network goes away for longer than the session lingers (1 s here). Back online the
    client gets a new session, subscribes again with the channel's epoch and offset, and the
    hub replays what it missed from history (`halley:recovered`); when more was missed than
    the history keeps (10 here), the channel says `halley:not_recovered`."""
    hub = start_hub("--session-linger", "1", "--history-size", "10")
    proxy = Proxy(hub.port)
    d = browser()
    channel = unique("recover")
    try:
        open_panel(d, proxy.origin, channel, "&backoffMax=500")
        wait_for(d, "return panel.subscribedAt != null", what="subscribed")
        d.execute_script("window.rec = []; panel.client.channel(arguments[0]).bind('halley:recovered', d => rec.push(d));"
                         "panel.client.connection.bind('halley:session_lost', d => rec.push({lost: d.reason}));", channel)
        pub = Publisher(hub.port, channel, every=0.01, count=3).start()
        pub._thread.join(5)
        wait_last(d, 3)
        proxy.down = True
        time.sleep(2.5)  # the session expires on the hub
        for n in range(4, 9):
            publish(hub.port, {"channel": channel, "event": "price", "data": json.dumps({"n": n})}, token=TOKEN)
        proxy.down = False
        wait_last(d, 8, timeout=15)
        assert_in_order_once(panel_state(d)["ns"], 8)
        rec = d.execute_script("return rec")
        assert {"lost": "expired"} in rec and any("epoch" in r for r in rec), rec

        proxy.down = True
        time.sleep(2.5)
        for n in range(9, 30):
            publish(hub.port, {"channel": channel, "event": "price", "data": json.dumps({"n": n})}, token=TOKEN)
        proxy.down = False
        wait_for(d, "return panel.notRecovered.length > 0", timeout=15, what="halley:not_recovered")
        assert d.execute_script("return panel.notRecovered[0].reason") == "history_expired"
        publish(hub.port, {"channel": channel, "event": "price", "data": json.dumps({"n": 30})}, token=TOKEN)
        wait_last(d, 30)
        ns = panel_state(d)["ns"]
        assert ns[:8] == list(range(1, 9)) and ns[-1] == 30 and ns == sorted(set(ns)), ns
    finally:
        proxy.stop()


def test_unknown_key_fails_without_reconnecting(hub, browser):
    """Close code 4001 (4000–4099): state `failed`, no further attempts."""
    proxy = Proxy(hub.port)
    d = browser()
    try:
        open_panel(d, proxy.origin, "nokey", "&key=no-such-key")
        wait_for(d, "return panel.client.connection.state === 'failed'", what="failed")
        n = len(proxy.websocket_requests())
        time.sleep(1.5)
        assert len(proxy.websocket_requests()) == n == 1
        assert d.execute_script("return panel.client.connection.state") == "failed"
    finally:
        proxy.stop()


def test_offline_then_online_resumes_without_loss(hub, browser):
    """The browser says it is offline (DevTools network emulation): the client drops its
    transport and reports `unavailable`; back online it resumes at once and gets what was
    published meanwhile."""
    d = browser()
    channel = unique("offline")
    open_panel(d, f"http://127.0.0.1:{hub.port}", channel)
    wait_for(d, "return panel.subscribedAt != null", what="subscribed")
    for n in (1, 2):
        publish(hub.port, {"channel": channel, "event": "price", "data": json.dumps({"n": n})}, token=TOKEN)
    wait_last(d, 2)
    d.execute_cdp_cmd("Network.enable", {})
    d.execute_cdp_cmd("Network.emulateNetworkConditions", {"offline": True, "latency": 0, "downloadThroughput": -1, "uploadThroughput": -1})
    wait_for(d, "return panel.client.connection.state === 'unavailable'", what="unavailable")
    for n in (3, 4, 5):
        publish(hub.port, {"channel": channel, "event": "price", "data": json.dumps({"n": n})}, token=TOKEN)
    time.sleep(0.3)
    d.execute_cdp_cmd("Network.emulateNetworkConditions", {"offline": False, "latency": 0, "downloadThroughput": -1, "uploadThroughput": -1})
    t0 = time.monotonic()
    wait_last(d, 5, timeout=5)
    back = time.monotonic() - t0
    assert_in_order_once(panel_state(d)["ns"], 5)
    log = panel_state(d)["log"]
    assert any(" offline " in l for l in log) and any(" online " in l for l in log), log
    assert any("connected resumed" in l for l in log), log
    record("offline_online", back_online_to_missed_events_ms=round(back * 1000))


def test_gap_notice_reaches_the_application(start_hub, browser):
    """`--slow-consumer gap` with a 4 KiB session buffer: a burst larger than the buffer before
    the client's next ack is skipped, and the channel fires `halley:gap` with the offsets lost;
    everything else arrives once, in order."""
    hub = start_hub("--slow-consumer", "gap", "--session-buffer-bytes", "4096")
    d = browser()
    channel = unique("gap")
    open_panel(d, f"http://127.0.0.1:{hub.port}", channel, "&ackInterval=2000")
    wait_for(d, "return panel.subscribedAt != null", what="subscribed")
    pad = "x" * 200
    for n in range(1, 61):
        publish(hub.port, {"channel": channel, "event": "price", "data": json.dumps({"n": n, "pad": pad})}, token=TOKEN)
    time.sleep(2.5)  # the client acknowledges; room again
    publish(hub.port, {"channel": channel, "event": "price", "data": json.dumps({"n": 61})}, token=TOKEN)
    wait_last(d, 61)
    gaps = d.execute_script("return panel.gaps")
    ns = panel_state(d)["ns"]
    assert gaps, "no halley:gap"
    lost = set()
    for g in gaps:
        lost |= set(range(g["from"], g["to"] + 1))  # offsets = n here (one publisher, fresh channel)
    assert ns == sorted(set(ns)) and set(ns) | lost == set(range(1, 62)) and not set(ns) & lost, (ns, gaps)


# ---- TLS: the demo over https, halley.js over wss ----------------------------------------------

def test_demo_over_https_and_wss(start_hub, browser, tmp_path):
    key, cert = str(tmp_path / "key.pem"), str(tmp_path / "cert.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", cert, "-days", "1",
                    "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"], check=True, capture_output=True)
    h = start_hub("--tls-port", "0", "--tls-cert", cert, "--tls-key", key)
    d = browser("--ignore-certificate-errors")  # the test CA is not in Chromium's store
    channel = unique("tls")
    pub = Publisher(h.port, channel).start()
    try:
        open_panel(d, f"https://127.0.0.1:{h.tls_port}", channel)
        wait_for(d, "return panel.events.length >= 5", what="five events over wss")
    finally:
        sent = pub.stop()
    wait_last(d, sent)
    s = panel_state(d)
    assert s["transport"] == "ws" and s["state"] == "connected", s
    assert_in_order_once(s["ns"], sent)
    assert d.execute_script("return panel.client.origin") == f"https://127.0.0.1:{h.tls_port}"
    screenshot(d, "connection-panel-https")
