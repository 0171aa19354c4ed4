"""Unmodified pusher-js 8.6.0 in headless Chromium against the hub (issue 13): on WebSocket and
on its HTTP fallbacks (`xhr_streaming`, `xhr_polling`), with an app backend written with the
official Pusher server SDK (Tests/browser/sdk_backend.py) serving the page, signing channels
and sign-ins. Public, private, presence (two pages), client events, `private-encrypted-`
(pusher-with-encryption.js and the SDK's encryption master key), sign-in and send_to_user,
event sizes from 1 to 10,240 bytes compared byte for byte, and the hostile proxies of the
halley.js tests, with the time to the first event beside halley.js's.
"""

from __future__ import annotations

import json
import time

import pytest

from conftest import record, wait_for
from hub_client import exact_text
from proxies import Proxy
from sdk_backend import PUSHER_JS, SDKBackend
from test_browser import Publisher, open_panel, panel_state, unique

TRANSPORTS = ["ws", "xhr_streaming", "xhr_polling"]
SIZES = [1, 125, 126, 1000, 1024, 4096, 10240]
_TEXT = ['"', "\\", "é", "✓", "😀", "<", "a", " "]


def text_of(n, seed):
    """`n` bytes of UTF-8 that JSON.parse refuses (pusher-js parses `data` when it can)."""
    return exact_text(n, seed, _TEXT, lead="x", fill="y")


@pytest.fixture(scope="module")
def app(hub):
    assert PUSHER_JS, "pusher-js 8.6 not found: set PUSHER_JS_DIR (../shared/peers/pusher-js on the project's machines)"
    b = SDKBackend(hub.port)
    yield b
    b.stop()


def open_pusher(d, app, hub_port, transports=None, name="guest", build="pusher"):
    q = f"hub=127.0.0.1:{hub_port}&name={name}&build={build}"
    if transports:
        q += f"&transports={transports}"
    d.get(f"{app.origin}/pusher.html?{q}")
    wait_for(d, "return window.P && P.pusher.connection.state === 'connected'", timeout=20, what="pusher-js connected")


def events(d, channel, event=None):
    return d.execute_script("return P.events.filter(e => e.channel === arguments[0] && (!arguments[1] || e.event === arguments[1]))",
                            channel, event)


def subscribed(d, channel, timeout=10):
    d.execute_script("P.sub(arguments[0])", channel)
    wait_for(d, "return P.events.some(e => e.channel === arguments[0] && e.event.indexOf('pusher:subscription') === 0)"
             .replace("arguments[0]", json.dumps(channel)), timeout=timeout, what=f"{channel} answered")
    got = events(d, channel, "pusher:subscription_succeeded")
    assert got, events(d, channel)
    return got[0]


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_pusher_js_public_private_sizes_and_client_events(hub, browser, app, transport):
    a = browser()
    open_pusher(a, app, hub.port, transport, name="Ann")
    assert a.execute_script("return P.transport()") == transport
    pub, priv = unique(f"pj-{transport}"), f"private-{unique('pj')}"
    subscribed(a, pub)
    subscribed(a, priv)
    # Every size, byte for byte, on a public and a private channel, from the SDK.
    sent = {}
    for seed, n in enumerate(SIZES):
        text = text_of(n, seed)
        app.sdk.trigger(pub, f"e{n}", text)
        app.sdk.trigger(priv, f"e{n}", text)
        sent[f"e{n}"] = text
    for ch in (pub, priv):
        wait_for(a, f"return P.events.filter(e => e.channel === {json.dumps(ch)} && e.event[0] === 'e').length === {len(SIZES)}",
                 timeout=15, what=f"every size on {ch}")
        got = {e["event"]: e["data"] for e in events(a, ch) if e["event"].startswith("e")}
        assert got == sent, [k for k in sent if got.get(k) != sent[k]]
    # Client events between two pusher-js pages (not echoed to the sender).
    b = browser()
    open_pusher(b, app, hub.port, transport, name="Bob")
    subscribed(b, priv)
    a.execute_script("P.pusher.channel(arguments[0]).trigger('client-hello', {from: 'Ann', big: 'z'.repeat(5000)})", priv)
    wait_for(b, f"return P.events.some(e => e.event === 'client-hello')", what="Bob gets Ann's client event")
    got = [e for e in events(b, priv) if e["event"] == "client-hello"]
    assert got[0]["data"] == {"from": "Ann", "big": "z" * 5000}
    time.sleep(0.3)
    assert not [e for e in events(a, priv) if e["event"] == "client-hello"], "echoed to the sender"


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_pusher_js_presence_on_two_pages(hub, browser, app, transport):
    channel = f"presence-{unique('pjp')}"
    a, b = browser(), browser()
    open_pusher(a, app, hub.port, transport, name="Ann")
    s = subscribed(a, channel)
    assert s["count"] == 1 and s["me"] == "ann", s
    open_pusher(b, app, hub.port, transport, name="Bob")
    s = subscribed(b, channel)
    assert s["count"] == 2 and s["me"] == "bob", s
    wait_for(a, "return P.events.some(e => e.event === 'member_added' && e.id === 'bob')", what="Ann sees Bob")
    b.get("about:blank")  # pusher-js closes its connection on unload
    wait_for(a, "return P.events.some(e => e.event === 'member_removed' && e.id === 'bob')", timeout=20, what="Ann sees Bob leave")


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_pusher_js_encrypted_channel_and_sign_in(hub, browser, app, transport):
    """pusher-with-encryption.js decrypts what the SDK encrypts with the master key (the hub
    relays the ciphertext untouched); sign-in and send_to_user reach `pusher.user`."""
    d = browser()
    open_pusher(d, app, hub.port, transport, name="Enc", build="pusher-with-encryption")
    channel = f"private-encrypted-{unique('pje')}"
    subscribed(d, channel)
    app.sdk.trigger(channel, "secret", {"msg": "only the page can read this ✓"})
    wait_for(d, f"return P.events.some(e => e.event === 'secret')", what="the decrypted event")
    assert [e["data"] for e in events(d, channel, "secret")] == [{"msg": "only the page can read this ✓"}]
    d.execute_script("P.pusher.signin()")
    wait_for(d, "return P.pusher.user.user_data && P.pusher.user.serverToUserChannel && P.pusher.user.serverToUserChannel.subscribed",
             what="signed in")
    app.sdk.send_to_user("enc", "notice", {"n": 7})
    wait_for(d, "return P.user.length === 1", what="the event to the user")
    assert d.execute_script("return P.user") == [{"n": 7}]


# ---- behind the hostile proxies, beside halley.js -----------------------------------------

PROXIES = {
    "websocket refused": dict(refuse_ws=True),
    "websocket silent after the handshake": dict(silent_ws=True),
    "websocket frames held 30 s": dict(hold_ws=30),
}


@pytest.mark.parametrize("proxy_name", list(PROXIES))
def test_behind_hostile_proxies_pusher_js_beside_halley_js(hub, browser, app, proxy_name):
    """The same page load behind each proxy, pusher-js (all its transports enabled) and
    halley.js: the transport each ends on and the time to the first event, recorded side by
    side (.test-out/browser-metrics.json). halley.js must get every event; pusher-js must when
    the proxy refuses WebSocket (it falls back to xhr_streaming); behind the silent and holding
    proxies pusher-js's figure is what a user sees (it has no round-trip check)."""
    proxy = Proxy(hub.port, **PROXIES[proxy_name])
    channel = unique("hostile")
    pub = Publisher(hub.port, channel, every=0.2, count=100).start()
    try:
        # pusher-js: its page is served by the app backend; the hub through the proxy.
        p = browser()
        q = f"hub=127.0.0.1:{proxy.port}&name=p"
        p.get(f"{app.origin}/pusher.html?{q}")
        p.execute_script("P.sub(arguments[0])", channel)
        # halley.js: its own page through the proxy.
        h = browser()
        open_panel(h, proxy.origin, channel, "&probeDelay=600000")
        # Long enough to see pusher-js's first event behind the 30 s hold.
        deadline = time.monotonic() + (40 if "held" in proxy_name else 25)
        while time.monotonic() < deadline:
            if h.execute_script("return panel.firstEventAt") and p.execute_script("return P.first"):
                break
            time.sleep(0.2)
        hs = panel_state(h)
        pj_first = p.execute_script("return P.first")  # ms from navigation start, as the panel's
        pj = {"first_event_ms": round(pj_first) if pj_first else None, "transport": p.execute_script("return P.transport()"),
              "state": p.execute_script("return P.pusher.connection.state")}
        hj = {"first_event_ms": round(hs["first"]) if hs["first"] else None, "transport": hs["transport"]}
        record(f"proxy {proxy_name}: pusher-js", **pj)
        record(f"proxy {proxy_name}: halley.js", **hj)
        assert hj["first_event_ms"] is not None and hj["transport"] == "sse", (hj, hs["log"])
        if proxy_name == "websocket refused":
            assert pj["first_event_ms"] is not None and pj["transport"] in ("xhr_streaming", "xhr_polling"), pj
    finally:
        pub.stop()
        proxy.stop()
