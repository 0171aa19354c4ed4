"""Webhooks and the apps configuration file, against the real binary.

A receiver (the standard library's http.server on 127.0.0.1 port 0, in a thread) plays the
app's backend: it checks `X-Pusher-Key` and `X-Pusher-Signature` (hex HMAC-SHA256 of the
body with the app's secret), can answer 500 to chosen requests, and records every body.
The hub is started with `--config FILE` naming the receiver's URL.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from halley_client import HALLEY_BIN
from hub_client import WS

KEY = "hook-key"
SECRET = "hook-secret"


class Receiver:
    """Records webhook requests; answers `statuses` in turn, then 200."""

    def __init__(self, statuses=()):
        self.statuses = list(statuses)
        self.requests: list[dict] = []
        self.cond = threading.Condition()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                n = int(self.headers.get("Content-Length", "0"))
                body = self.rfile.read(n)
                with outer.cond:
                    status = outer.statuses.pop(0) if outer.statuses else 200
                    outer.requests.append({
                        "path": self.path,
                        "headers": {k.lower(): v for k, v in self.headers.items()},
                        "body": body,
                        "status": status,
                        "at": time.monotonic(),
                    })
                    outer.cond.notify_all()
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def wait(self, count, timeout=10.0):
        """The first `count` requests, waiting up to `timeout` seconds for them."""
        deadline = time.monotonic() + timeout
        with self.cond:
            while len(self.requests) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self.cond.wait(left)
            return list(self.requests)

    def delivered_events(self):
        """The events of the requests answered 2xx, in order."""
        with self.cond:
            return [e for r in self.requests if r["status"] < 300 for e in json.loads(r["body"])["events"]]

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.close()


def write_config(tmp_path, url, events=None, extra_apps=()):
    hook = {"url": url}
    if events:
        hook["events"] = events
    apps = [{"id": "42", "key": KEY, "secret": SECRET, "webhooks": [hook]}, *extra_apps]
    path = tmp_path / "apps.json"
    path.write_text(json.dumps({"apps": apps}))
    return str(path)


def check_signed(req):
    assert req["path"] == "/hook"
    assert req["headers"]["content-type"] == "application/json"
    assert req["headers"]["x-pusher-key"] == KEY
    want = hmac.new(SECRET.encode(), req["body"], hashlib.sha256).hexdigest()
    assert req["headers"]["x-pusher-signature"] == want
    body = json.loads(req["body"])
    assert isinstance(body["time_ms"], int) and abs(body["time_ms"] / 1000 - time.time()) < 60
    return body


def pusher_ws(port):
    ws = WS(port, key=KEY, halley=False)
    ws.hello()
    return ws


def unsubscribe(ws, channel):
    ws.send({"event": "pusher:unsubscribe", "data": {"channel": channel}})


# ---- delivery


def test_occupied_is_signed_and_retried_after_a_500(tmp_path, start_halley):
    rcv = Receiver(statuses=[500])
    try:
        h = start_halley("--config", write_config(tmp_path, rcv.url))
        ws = pusher_ws(h.port)
        ws.subscribe("hooked")
        reqs = rcv.wait(2, timeout=10)
        assert len(reqs) == 2, reqs
        first, retry = reqs
        assert first["status"] == 500 and retry["status"] == 200
        body = check_signed(first)
        assert body["events"] == [{"name": "channel_occupied", "channel": "hooked"}]
        # The retry is the same request: same events, same time_ms, same signature.
        check_signed(retry)
        assert retry["body"] == first["body"]
        assert retry["headers"]["x-pusher-signature"] == first["headers"]["x-pusher-signature"]
        # Back-off: the first retry waits about a second.
        assert 0.8 <= retry["at"] - first["at"] <= 3.5
        ws.close()
    finally:
        rcv.close()


def test_vacated_is_debounced_across_a_resubscribe(tmp_path, start_halley, receiver):
    h = start_halley("--config", write_config(tmp_path, receiver.url))
    ws = pusher_ws(h.port)
    ws.subscribe("reload")
    assert len(receiver.wait(1, timeout=5)) == 1
    assert receiver.delivered_events() == [{"name": "channel_occupied", "channel": "reload"}]

    # A page reload: unsubscribe and subscribe again within the debounce window (3 s), quickly
    # and late in the window (the once-a-second intake must not let the release win).
    for pause in (0.3, 2.7):
        unsubscribe(ws, "reload")
        time.sleep(pause)
        ws.subscribe("reload")
        time.sleep(4.0)
        assert receiver.delivered_events() == [{"name": "channel_occupied", "channel": "reload"}], pause

    # Leaving for good: channel_vacated arrives once the window has passed.
    unsubscribe(ws, "reload")
    left = time.monotonic()
    reqs = receiver.wait(2, timeout=10)
    assert len(reqs) == 2
    check_signed(reqs[1])
    assert 2.5 <= reqs[1]["at"] - left <= 6.0
    assert receiver.delivered_events() == [
        {"name": "channel_occupied", "channel": "reload"},
        {"name": "channel_vacated", "channel": "reload"},
    ]
    ws.close()


def test_only_the_listed_events_are_sent(tmp_path, start_halley, receiver):
    h = start_halley("--config", write_config(tmp_path, receiver.url, events=["channel_vacated"]))
    ws = pusher_ws(h.port)
    ws.subscribe("picky")
    unsubscribe(ws, "picky")
    reqs = receiver.wait(1, timeout=8)
    assert len(reqs) == 1
    assert json.loads(reqs[0]["body"])["events"] == [{"name": "channel_vacated", "channel": "picky"}]
    ws.close()


def test_events_gathered_within_a_second_share_one_request(tmp_path, start_halley, receiver):
    h = start_halley("--config", write_config(tmp_path, receiver.url, events=["channel_occupied"]))
    ws = pusher_ws(h.port)
    names = [f"batch-{i}" for i in range(5)]
    for n in names:
        ws.subscribe(n)
    reqs = receiver.wait(1, timeout=5)
    time.sleep(1.5)
    events = receiver.delivered_events()
    assert sorted(e["channel"] for e in events) == names
    assert len(receiver.requests) <= 2  # one, or two if a tick fell between the subscribes
    assert reqs
    ws.close()


def sub_presence(ws, channel, user_id):
    socket_id = ws.established["socket_id"]
    channel_data = json.dumps({"user_id": user_id})
    sig = hmac.new(SECRET.encode(), f"{socket_id}:{channel}:{channel_data}".encode(), hashlib.sha256).hexdigest()
    ws.send({"event": "pusher:subscribe", "data": {"channel": channel, "auth": f"{KEY}:{sig}", "channel_data": channel_data}})
    while True:
        m = ws.recv()
        if m["event"] == "pusher_internal:subscription_succeeded":
            return m
        assert m["event"].startswith("pusher_internal:member"), m


def test_presence_members_and_client_events(tmp_path, start_halley, receiver):
    h = start_halley("--config", write_config(tmp_path, receiver.url))
    a, b = pusher_ws(h.port), pusher_ws(h.port)
    sub_presence(a, "presence-room", "u1")
    sub_presence(b, "presence-room", "u2")
    a.send({"event": "client-typing", "channel": "presence-room", "data": {"who": "u1"}})
    assert b.recv()["event"] == "client-typing"
    unsubscribe(b, "presence-room")
    assert receiver.wait(1, timeout=5)
    time.sleep(4.5)
    events = receiver.delivered_events()
    for r in receiver.requests:
        check_signed(r)
    # The first subscribe: channel_occupied, then member_added.
    assert events[:2] == [
        {"name": "channel_occupied", "channel": "presence-room"},
        {"name": "member_added", "channel": "presence-room", "user_id": "u1"},
    ], events
    assert events[2] == {"name": "member_added", "channel": "presence-room", "user_id": "u2"}, events
    client_event = events[3]
    assert json.loads(client_event.pop("data")) == {"who": "u1"}
    assert client_event == {"name": "client_event", "channel": "presence-room", "event": "client-typing",
                            "socket_id": a.established["socket_id"], "user_id": "u1"}
    # Debounced: u2's departure arrives about 3 s later, in a request of its own.
    assert events[4:] == [{"name": "member_removed", "channel": "presence-room", "user_id": "u2"}]
    assert len(receiver.requests) == 2
    a.close()
    b.close()


# ---- the configuration file


def run_halley(args, timeout=5):
    env = {k: v for k, v in os.environ.items() if not k.startswith("HALLEY_")}
    p = subprocess.run([HALLEY_BIN, "--port", "0", *args], env=env, capture_output=True, timeout=timeout)
    return p.returncode, (p.stdout + p.stderr).decode("utf-8", "replace")


def test_config_file_errors_name_file_app_and_field(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"apps": [
        {"id": "1", "key": "a", "secret": "s"},
        {"id": "2", "key": "b", "secret": "s", "webhooks": [{"url": "https://example.com/h"}]},
    ]}))
    rc, out = run_halley(["--config", str(bad)])
    assert rc == 2
    assert f"--config: {bad}: apps[1].webhooks[0].url: https is not supported yet (no TLS client): use http://" in out

    bad.write_text('{"apps": [{"id": "1", "key": "a", "secret": "s", "events": []}]}')
    rc, out = run_halley(["--config", str(bad)])
    assert rc == 2 and f'{bad}: apps[0]: unknown field "events"' in out

    rc, out = run_halley(["--config", str(tmp_path / "missing.json")])
    assert rc == 2 and "missing.json: cannot read: No such file or directory" in out


def test_config_cannot_be_combined_with_app_flags(tmp_path):
    path = write_config(tmp_path, "http://127.0.0.1:9/hook")
    rc, out = run_halley(["--config", path, "--app-secret", "x"])
    assert rc == 2
    assert "--config: cannot be combined with --app-secret" in out


def test_config_apps_replace_the_default_app_and_secrets_stay_out_of_the_log(tmp_path, start_halley):
    path = write_config(tmp_path, "http://127.0.0.1:9/hook",
                        extra_apps=[{"id": "43", "key": "other-key", "secret": "other-secret", "enabled": False}])
    h = start_halley(env={"HALLEY_CONFIG": path})
    line = h.wait_for_log("apps loaded from", timeout=5)
    assert line and "2 apps loaded from" in line and "ids 42, 43" in line and "1 webhook URL" in line
    text = h.log_text()
    assert SECRET not in text and "other-secret" not in text and "development app" not in text
    ws = pusher_ws(h.port)  # the configured key connects
    ws.close()
