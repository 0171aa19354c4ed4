"""halley.js (issue 13): a WebSocket that opens and then carries nothing, pusher-js's
authorization and sign-in contracts against an endpoint written with the official Pusher SDK,
presence members whatever their ids.
"""

from __future__ import annotations

import json
import time

import pytest

from conftest import TOKEN, record, screenshot, wait_for
from hub_client import publish
from proxies import Proxy
from sdk_backend import SDKBackend
from test_browser import Publisher, assert_in_order_once, open_panel, panel_state, unique, wait_last


# ---- 1. a WebSocket that opens and then carries nothing -------------------------------------

@pytest.mark.parametrize("mode", ["silent", "held"])
def test_a_websocket_that_carries_nothing_falls_back_without_loss(hub, browser, mode):
    """Behind a proxy that passes the WebSocket handshake (and the hub's first message, in the
    same read) and then forwards nothing, or holds frames for 30 s at a time, halley.js does not
    take WebSocket as up (its ping gets no pong within confirmTimeout), falls back to SSE on the
    same session, and every event arrives once, in order. The origin remembers WebSocket as
    broken: the next page starts on SSE."""
    proxy = Proxy(hub.port, silent_ws=mode == "silent", hold_ws=30 if mode == "held" else None)
    d = browser()
    channel = unique(f"quiet-{mode}")
    pub = None
    try:
        open_panel(d, proxy.origin, channel, "&probeDelay=600000")
        wait_for(d, "return panel.subscribedAt", timeout=20, what="subscribed")
        pub = Publisher(hub.port, channel, every=0.1, count=30).start()
        pub._thread.join(20)
        sent = pub.stop()
        wait_last(d, sent, timeout=20)
        s = panel_state(d)
        assert s["transport"] == "sse", s["log"]
        assert s["ns"] == list(range(1, 31)), s["ns"]
        assert any(" silent " in l for l in s["log"]), s["log"]
        assert len(proxy.websocket_requests()) == 1
        record(f"halleyjs_ws_{mode}", first_event_ms=round(s["first"]), transport=s["transport"],
               fallback_ms=s["switches"][0]["took"], events=len(s["ns"]))
        # Remembered as broken for this origin: a reload does not try WebSocket first.
        d.refresh()
        wait_for(d, "return panel.client.connection.state === 'connected'", what="connected after reload")
        assert d.execute_script("return panel.client.connection.transport") == "sse"
        assert len(proxy.websocket_requests()) == 1
    finally:
        if pub:
            pub.stop()
        proxy.stop()


@pytest.mark.parametrize("silent", [True, "after_first_frame"], ids=["resume-lost", "ping-lost"])
def test_the_probe_through_a_silent_proxy_does_not_take_the_session(hub, browser, silent):
    """On SSE, a WebSocket probe through a silent proxy: either its `halley:resume` never
    reaches the hub (no hello: the probe times out), or it does, the hub moves the session to
    the probe and answers, and then nothing passes (no pong: the probe is silent; the session
    comes back to SSE). Either way the events keep coming, once and in order."""
    proxy = Proxy(hub.port, silent_ws=silent)
    d = browser()
    channel = unique("probe-silent")
    d.get(f"{proxy.origin}/connection.html?channel={channel}&transports=sse,ws&probeDelay=1000&probeMaxDelay=1000")
    wait_for(d, "return panel.client.connection.state === 'connected' && panel.subscribedAt", what="subscribed on SSE")
    pub = Publisher(hub.port, channel, every=0.1, count=60).start()
    try:
        pub._thread.join(15)
        sent = pub.stop()
        wait_last(d, sent, timeout=20)
        s = panel_state(d)
        assert s["transport"] == "sse", s["log"]
        assert_in_order_once(s["ns"], sent)
        assert any(("probe failed silent" if silent == "after_first_frame" else "probe failed") in l for l in s["log"]), s["log"]
        assert len(proxy.websocket_requests()) >= 1
    finally:
        pub.stop()
        proxy.stop()


# ---- 2. pusher-js's contracts ---------------------------------------------------------------

def subscribe_all(d, options_js, names, extra_js=""):
    d.execute_script(f"""
        var h = new Halley('app-key', {options_js});
        window.t = {{h: h, ok: [], errors: []}};
        {extra_js}
        arguments[0].forEach(function (n) {{
          var c = h.subscribe(n);
          c.bind('pusher:subscription_succeeded', function () {{ t.ok.push(n); }});
          c.bind('pusher:subscription_error', function (e) {{ t.errors.push([n, e]); }});
        }});""", names)
    wait_for(d, f"return t.ok.length + t.errors.length === {len(names)}", what="every subscription answered")
    return d.execute_script("return {ok: t.ok, errors: t.errors}")


def test_default_authorization_is_pusher_js_single_form_request(hub, browser, sdk):
    """Without options beyond the endpoint, each private or presence channel is one form POST of
    `socket_id` and `channel_name` (pusher-js's request), which an SDK-written endpoint answers."""
    d = browser()
    d.get(f"http://127.0.0.1:{hub.port}/connection.html?channel=pub-{unique('x')}")
    before = len(sdk.auth_requests())
    names = ["private-a1", "presence-a2"]
    t = subscribe_all(d, f"{{channelAuthorization: {{endpoint: '{sdk.origin}/pusher/auth', params: {{name: 'Ann'}}}}}}", names)
    assert t["errors"] == [] and sorted(t["ok"]) == sorted(names), t
    reqs = sdk.auth_requests()[before:]
    assert len(reqs) == 2 and all(r["content_type"] == "application/x-www-form-urlencoded" for r in reqs), reqs
    assert sorted(r["form"]["channel_name"] for r in reqs) == sorted(names)
    assert all(set(r["form"]) == {"socket_id", "channel_name", "name"} for r in reqs), reqs
    me = d.execute_script("var m = t.h.channel('presence-a2').members; return [m.count, m.me && m.me.id, m.me && m.me.info.name]")
    assert me == [1, "ann", "Ann"]


def test_headers_provider_and_params_provider_reach_the_endpoint(hub, browser, sdk):
    d = browser()
    d.get(f"http://127.0.0.1:{hub.port}/connection.html?channel=pub-{unique('x')}")
    before = len(sdk.auth_requests())
    t = subscribe_all(d, f"""{{channelAuthorization: {{endpoint: '{sdk.origin}/pusher/auth', headers: {{'X-Static': 's'}},
                                headersProvider: function () {{ return {{'X-Dynamic': 'd1'}}; }},
                                paramsProvider: function () {{ return {{name: 'Pat'}}; }}}}}}""", ["private-hp"])
    assert t["errors"] == [], t
    r = sdk.auth_requests()[before]
    assert r["headers"].get("x-static") == "s" and r["headers"].get("x-dynamic") == "d1" and r["form"]["name"] == "Pat", r


def test_custom_handler_is_called_as_pusher_js_calls_it(hub, browser, sdk):
    """customHandler({socketId, channelName}, callback): the app fetches the signature itself;
    an error passed to the callback is a subscription error."""
    d = browser()
    d.get(f"http://127.0.0.1:{hub.port}/connection.html?channel=pub-{unique('x')}")
    handler = f"""function (params, callback) {{
        t.calls.push(params);
        if (params.channelName === 'private-nope') return callback(new Error('no'), null);
        fetch('{sdk.origin}/pusher/auth', {{method: 'POST', headers: {{'Content-Type': 'application/x-www-form-urlencoded'}},
              body: 'socket_id=' + params.socketId + '&channel_name=' + params.channelName}})
          .then(function (r) {{ return r.json(); }}).then(function (j) {{ callback(null, j); }}, function (e) {{ callback(e, null); }});
    }}"""
    t = subscribe_all(d, f"{{channelAuthorization: {{customHandler: {handler}}}}}", ["private-c1", "private-nope"],
                      extra_js="t.calls = [];")
    assert t["ok"] == ["private-c1"] and [e[0] for e in t["errors"]] == ["private-nope"], t
    calls = d.execute_script("return t.calls")
    sid = d.execute_script("return t.h.connection.socket_id")
    assert sorted(c["channelName"] for c in calls) == ["private-c1", "private-nope"] and all(c["socketId"] == sid for c in calls)


def test_batch_authorization_falls_back_to_single_requests(hub, browser, sdk):
    """batch: true against a stock endpoint (it refuses a batch, 400): the channels are asked
    one by one, now and later, and all subscribe."""
    d = browser()
    d.get(f"http://127.0.0.1:{hub.port}/connection.html?channel=pub-{unique('x')}")
    before = len(sdk.auth_requests())
    names = ["private-b1", "private-b2", "presence-b3"]
    t = subscribe_all(d, f"{{channelAuthorization: {{endpoint: '{sdk.origin}/pusher/auth', batch: true, params: {{name: 'Bo'}}}}}}", names)
    assert t["errors"] == [] and sorted(t["ok"]) == sorted(names), t
    reqs = sdk.auth_requests()[before:]
    assert len(reqs) == 4 and "channel_name[0]" in reqs[0]["form"], [r["form"] for r in reqs]
    assert sorted(r["form"].get("channel_name", "") for r in reqs[1:]) == sorted(names)


def test_members_count_any_user_id(hub, browser, sdk):
    """User ids that are names of Object.prototype members count like any other."""
    a, b = browser(), browser()
    channel = f"presence-{unique('m')}"
    for d, name in ((a, "constructor"), (b, "toString")):
        d.get(f"http://127.0.0.1:{hub.port}/connection.html?channel=pub-{unique('x')}")
        subscribe_all(d, f"{{channelAuthorization: {{endpoint: '{sdk.origin}/pusher/auth', params: {{name: '{name}', user_id: '{name}'}}}}}}", [channel])
    wait_for(a, f"return t.h.channel('{channel}').members.count === 2", what="two members")
    got = a.execute_script(f"var m = t.h.channel('{channel}').members, ids = []; m.each(function (x) {{ ids.push(x.id); }});"
                           "return [m.count, ids.sort(), m.get('toString') && m.get('toString').info.name, m.me && m.me.id]")
    assert got == [2, ["constructor", "toString"], "toString", "constructor"], got


def test_signin_and_events_to_the_user(hub, browser, sdk):
    """pusher-js's user sign-in: signin() asks userAuthentication (an SDK-written endpoint),
    then user.bind gets what the backend sends with the SDK's send_to_user; a new session
    signs in again by itself."""
    d = browser()
    d.get(f"http://127.0.0.1:{hub.port}/connection.html?channel=pub-{unique('x')}")
    d.execute_script(f"""
        var h = new Halley('app-key', {{userAuthentication: {{endpoint: '{sdk.origin}/pusher/user-auth', params: {{name: 'Uma'}}}}}});
        window.u = {{h: h, got: [], signedIn: 0}};
        h.user.bind('pusher:signin_success', function () {{ u.signedIn++; }});
        h.user.bind('notice', function (data) {{ u.got.push(data); }});
        h.signin();""")
    wait_for(d, "return u.signedIn === 1 && u.h.user._serverChannel && u.h.user._serverChannel.subscribed", what="signed in")
    assert d.execute_script("return u.h.user.user_data") == {"id": "uma", "name": "Uma"}
    sdk.sdk.send_to_user("uma", "notice", {"n": 1})
    wait_for(d, "return u.got.length === 1", what="the event to the user")
    assert d.execute_script("return u.got") == [{"n": 1}]
    # A new session: signed in again by itself, events flow again.
    d.execute_script("u.h.disconnect(); u.h.connect();")
    wait_for(d, "return u.signedIn === 2 && u.h.user._serverChannel.subscribed", timeout=15, what="signed in on the new session")
    sdk.sdk.send_to_user("uma", "notice", {"n": 2})
    wait_for(d, "return u.got.length === 2", what="the second event to the user")
    assert len(sdk.auth_requests("/pusher/user-auth")) >= 2


# ---- 3. one connection for all tabs ---------------------------------------------------------

def metric(h, name):
    import re
    from hub_client import http_request
    text = http_request(h.metrics_port, "GET", "/metrics")[2].decode()
    m = re.search(rf"^{re.escape(name)} (\S+)$", text, re.M)
    return float(m.group(1)) if m else None


def test_five_tabs_share_one_session_and_survive_the_leader_closing(start_hub, browser):
    """Five tabs of one origin make one session at the hub (read from /metrics). The leader tab
    closes while events flow: another tab takes the session over, and every event reaches
    every tab still open once, in order. With shareConnection: false each tab has its own."""
    h = start_hub("--metrics-port", "0")
    # Background tabs keep their timers (Chromium otherwise throttles hidden tabs' timers to
    # once a second, which only slows the test's polling of the pages).
    d = browser("--disable-background-timer-throttling", "--disable-renderer-backgrounding",
                "--disable-backgrounding-occluded-windows")
    channel = unique("tabs")
    url = f"http://127.0.0.1:{h.port}/connection.html?channel={channel}"
    d.get(url)
    handles = [d.current_window_handle]
    for _ in range(4):
        d.switch_to.new_window("tab")
        d.get(url)
        handles.append(d.current_window_handle)

    def each(script):
        out = []
        for w in handles:
            d.switch_to.window(w)
            out.append(d.execute_script(script))
        return out

    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if all(each("return panel.client.connection.state === 'connected' && !!panel.subscribedAt")):
            break
        time.sleep(0.2)
    assert all(each("return panel.client.connection.state === 'connected' && !!panel.subscribedAt")), \
        each("return [panel.client.connection.state, panel.subscribedAt, panel.client._share && panel.client._share.role]")
    roles = each("return panel.client._share.role")
    assert roles.count("leader") == 1 and roles.count("follower") == 4, roles
    assert metric(h, "halley_sessions") == 1, "five tabs, one session"
    sids = set(each("return panel.client.connection.socket_id"))
    assert len(sids) == 1, sids
    leader = handles[roles.index("leader")]
    pub = Publisher(h.port, channel, every=0.04, count=150).start()
    try:
        time.sleep(2)
        d.switch_to.window(leader)
        d.close()
        handles.remove(leader)
        pub._thread.join(20)
        sent = pub.stop()
        for w in handles:
            d.switch_to.window(w)
            wait_last(d, sent, timeout=20)
            ns = panel_state(d)["ns"]
            assert ns == list(range(1, sent + 1)), f"lost {sorted(set(range(1, sent + 1)) - set(ns))[:20]} or duplicated: {ns[:40]}"
        roles = each("return panel.client._share.role")
        assert roles.count("leader") == 1, roles
        assert set(each("return panel.client.connection.socket_id")) == sids, "the same session, resumed"
        assert metric(h, "halley_sessions") == 1, "the session was resumed, not replaced"
        # A tab without sharing has a session of its own.
        d.switch_to.new_window("tab")
        d.get(url + "&share=0")
        wait_for(d, "return panel.client.connection.state === 'connected' && !panel.client._share", what="an unshared tab")
        assert wait_until_metric(h, "halley_sessions", 2)
    finally:
        pub.stop()


def wait_until_metric(h, name, value, timeout=5):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if metric(h, name) == value:
            return True
        time.sleep(0.1)
    return False


def test_tabs_share_private_presence_client_events_and_sign_in(start_hub, browser):
    """Two tabs sharing a session, with an SDK-written auth endpoint: a follower's private and
    presence channels are authorized by the leader; the presence channel counts the user once
    and the follower knows who it is; a client event from one tab reaches the other tab (and
    another browser through the hub); a sign-in asked by the follower brings it the events
    sent to the user; after the leader tab closes, the follower leads and still receives."""
    h = start_hub()
    sdk = SDKBackend(h.port)
    try:
        d = browser("--disable-background-timer-throttling", "--disable-renderer-backgrounding",
                    "--disable-backgrounding-occluded-windows")
        setup = """
            var backend = arguments[0], done = arguments[arguments.length - 1], s = document.createElement('script');
            s.src = '/halley.js';
            s.onload = function () {
              var h = new Halley('app-key', {channelAuthorization: {endpoint: backend + '/pusher/auth', params: {name: 'Tia'}},
                                             userAuthentication: {endpoint: backend + '/pusher/user-auth', params: {name: 'Tia'}}});
              window.T = {h: h, got: [], user: [], ok: []};
              h.user.bind('notice', function (data) { T.user.push(data); });
              done(true);
            };
            document.head.appendChild(s);"""
        url = f"http://127.0.0.1:{h.port}/index.html"
        d.get(url)
        d.execute_async_script(setup, sdk.origin)
        a = d.current_window_handle
        wait_for(d, "return T.h._share && T.h._share.role === 'leader' && T.h.connection.state === 'connected'", what="tab A leads")
        d.switch_to.new_window("tab")
        d.get(url)
        d.execute_async_script(setup, sdk.origin)
        b = d.current_window_handle
        wait_for(d, "return T.h._share.role === 'follower' && T.h.connection.state === 'connected'", what="tab B follows")
        sub = """var name = arguments[0], c = T.h.subscribe(name);
                 c.bind('pusher:subscription_succeeded', function () { T.ok.push(name); });
                 c.bind('client-hi', function (data, meta) { T.got.push([name, data, (meta && meta.user_id) || null]); });"""
        for ch in ("private-shared", "presence-shared"):
            d.execute_script(sub, ch)
        wait_for(d, "return T.ok.length === 2", what="B's private and presence channels")
        assert d.execute_script("var m = T.h.channel('presence-shared').members; return [m.count, m.me && m.me.id]") == [1, "tia"]
        d.switch_to.window(a)
        for ch in ("private-shared", "presence-shared"):
            d.execute_script(sub, ch)
        wait_for(d, "return T.ok.length === 2", what="A's channels (already on the hub)")
        assert d.execute_script("return T.h.channel('presence-shared').members.count") == 1
        # Another browser, a session of its own, on the private channel.
        other = browser()
        other.get(url)
        other.execute_async_script(setup.replace("'Tia'", "'Oz'"), sdk.origin)
        other.execute_script(sub, "private-shared")
        wait_for(other, "return T.ok.length === 1", what="the other browser subscribed")
        # A client event from the follower: the leader tab and the other browser get it.
        d.switch_to.window(b)
        d.execute_script("T.h.channel('private-shared').trigger('client-hi', {from: 'B'})")
        d.switch_to.window(a)
        wait_for(d, "return T.got.length === 1", what="tab A gets B's client event")
        assert d.execute_script("return T.got") == [["private-shared", {"from": "B"}, None]]
        wait_for(other, "return T.got.length === 1", what="the other browser gets it")
        # Sign-in asked by the follower.
        d.switch_to.window(b)
        d.execute_script("T.h.user.signin()")
        wait_for(d, "return T.h.user.user_data && T.h.user._serverChannel && T.h.user._serverChannel.subscribed", what="B signed in")
        sdk.sdk.send_to_user("tia", "notice", {"n": 1})
        wait_for(d, "return T.user.length === 1", what="B gets the event to the user")
        # The leader closes: B leads, the session goes on.
        d.switch_to.window(a)
        d.close()
        d.switch_to.window(b)
        wait_for(d, "return T.h._share.role === 'leader' && T.h.connection.state === 'connected'", timeout=15, what="B leads")
        sdk.sdk.trigger("presence-shared", "news", {"n": 2})
        d.execute_script("T.h.channel('presence-shared').bind('news', function (x) { T.got.push(['news', x, null]); })")
        sdk.sdk.trigger("presence-shared", "news", {"n": 3})
        wait_for(d, "return T.got.some(g => g[0] === 'news' && g[1].n === 3)", what="B receives as the leader")
        assert d.execute_script("var m = T.h.channel('presence-shared').members; return [m.count, m.me && m.me.id]") == [1, "tia"]
    finally:
        sdk.stop()


def test_a_coded_refusal_over_http_stops_the_client(hub, browser):
    """An unknown key on SSE: the hub's 404 carries code 4001, and halley.js stops (failed)
    at once instead of trying the next transport and backing off forever."""
    d = browser()
    d.get(f"http://127.0.0.1:{hub.port}/connection.html?key=no-such-key&transports=sse,poll&channel=x")
    wait_for(d, "return panel.client.connection.state === 'failed'", timeout=10, what="failed")
    log = d.execute_script("return panel.client.connection.log.map(e => [e.transport, e.event, e.detail].join(' '))")
    assert not any(l.startswith("poll attempt") for l in log), log
