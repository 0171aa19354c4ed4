#!/usr/bin/env python3
"""A bounded multi-loop load on one hub, for a ThreadSanitizer build (issue 12): every path on
which loops share state runs at once for DURATION seconds on `--threads 2`, and the run fails
on any sanitizer report (or when a worker did nothing: a stress that does not stress is no test).

    HALLEY_BIN=.build-tsan/release/halley Scripts/sanitizers/stress.py [--duration 60] [--logs DIR]

Workers (threads of this process, each its own connections):
- publishers: `POST /publish` (bearer) and the official SDK's `trigger` on 8 channels;
- WebSocket subscribers (plain Pusher and resumable), spread over both loops;
- resumers: resumable WebSocket, SSE and long-poll sessions that drop and resume, so their
  requests land on the other loop and are handed to the owner;
- presence: users join and leave a presence channel (rosters and member events across loops);
- client events on a private channel; pusher-js `xhr_streaming` + `xhr_send`;
- sign-in and `terminate_connections` from the API; channel queries from the API;
- webhooks to a receiver here (occupied/vacated, member events, client events);
- then 6 s of `/stats` and API reads alone beside idle sessions (see `main`).
"""

from __future__ import annotations

import argparse
import base64
import collections
import hashlib
import hmac
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(ROOT, "Tests", "integration"))

import pusher_xhr  # noqa: E402
from halley_client import Halley, WebhookReceiver  # noqa: E402
from hub_client import SSE, WS, Poll, http_request, publish, pusher_client, send_http  # noqa: E402

KEY, SECRET, TOKEN, APP = "skey", "ssecret", "tok", "9"
CHANNELS = [f"c{i}" for i in range(8)]
counts: collections.Counter = collections.Counter()
errors: list[str] = []
lock = threading.Lock()


def bump(name, n=1):
    with lock:
        counts[name] += n


def sign(text):
    return hmac.new(SECRET.encode(), text.encode(), hashlib.sha256).hexdigest()


def auth(socket_id, channel, channel_data=None):
    text = f"{socket_id}:{channel}" + (f":{channel_data}" if channel_data else "")
    return f"{KEY}:{sign(text)}"


def worker(name, stop, body):
    """Runs `body()` until `stop` is set; an exception is a failure unless the hub is stopping."""
    def run():
        while not stop.is_set():
            try:
                body()
            except Exception as e:  # noqa: BLE001 - any failure of a worker is reported
                if not stop.is_set():
                    with lock:
                        errors.append(f"{name}: {type(e).__name__}: {e}"[:300])
                    time.sleep(0.2)
    t = threading.Thread(target=run, name=name, daemon=True)
    t.start()
    return t


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--duration", type=float, default=float(os.environ.get("STRESS_SECONDS", "60")))
    ap.add_argument("--logs", default=os.environ.get("HALLEY_SANITIZER_LOGS") or tempfile.mkdtemp(prefix="tsan-"))
    args = ap.parse_args()
    os.makedirs(args.logs, exist_ok=True)
    os.environ["TSAN_OPTIONS"] = f"log_path={args.logs}/tsan halt_on_error=0 second_deadlock_stack=1 history_size=4"
    os.environ["ASAN_OPTIONS"] = f"log_path={args.logs}/asan halt_on_error=0 detect_leaks=0"
    hooks = WebhookReceiver(lambda events: bump("webhook events", len(events)))
    work = tempfile.mkdtemp(prefix="stress-")
    os.makedirs(os.path.join(work, "public"))
    cfg = os.path.join(work, "apps.json")
    main_app = {"id": APP, "key": KEY, "secret": SECRET, "token": TOKEN, "client_events_per_second": 1000,
                "webhooks": [{"url": hooks.url}]}
    with open(cfg, "w") as f:
        json.dump({"apps": [main_app]}, f)
    # Every worker here is one address (127.0.0.1): the per-address limits are off.
    hub = Halley(os.path.join(work, "public"), ["--config", cfg, "--log-level", "warning", "--session-linger", "3",
                                                "--max-connections-per-address", "0", "--session-opens-per-second", "0",
                                                "--max-lingering-per-address", "0", "--poll-timeout", "1",
                                                "--heartbeat", "1", "--ws-ping-interval", "2", "--admin-token", "adm"], threads=2,
                 start_timeout=30)
    port = hub.port
    sdk = pusher_client(port, app_id=APP, key=KEY, secret=SECRET)
    stop = threading.Event()
    threads = []

    def publisher():
        ch = random.choice(CHANNELS)
        if random.random() < 0.5:
            status, r = publish(port, {"channel": ch, "event": "p", "data": "x" * random.choice([10, 200, 1500])}, token=TOKEN)
            assert status in (201, 202), (status, r)
        else:
            sdk.trigger([ch, random.choice(CHANNELS)], "t", {"n": random.random()})
        bump("publishes")
        time.sleep(0.005)

    def subscriber(resumable):
        def body():
            ws = WS(port, key=KEY, halley=resumable)
            ws.hello()
            for ch in random.sample(CHANNELS, 3):
                ws.subscribe(ch, wait=False)
            deadline = time.monotonic() + random.uniform(2, 6)
            while time.monotonic() < deadline and not stop.is_set():
                try:
                    m = ws.recv(timeout=1)
                except TimeoutError:
                    continue
                if resumable and "halley:seq" in m:
                    ws.ack(m["halley:seq"])
                bump("ws messages")
            ws.close()
        return body

    def ws_resumer():
        ws = WS(port, key=KEY, halley=True)
        est = ws.hello()
        ws.subscribe(random.choice(CHANNELS), wait=False)
        last = 0
        for _ in range(5):
            end = time.monotonic() + 0.5
            while time.monotonic() < end:
                try:
                    m = ws.recv(timeout=0.5)
                except TimeoutError:
                    break
                last = m.get("halley:seq", last)
            ws.abort()
            t_abort = time.monotonic()
            ws = WS(port, key=KEY, halley=True, session=est["socket_id"], token=est["halley:token"], last_seq=last)
            again = ws.hello()
            assert again["socket_id"] == est["socket_id"], (again, f"{time.monotonic() - t_abort:.2f} s after the abort", time.strftime("%H:%M:%S"))
            bump("ws resumes")
        ws.close()

    def sse_resumer():
        s = SSE(port, query=f"key={KEY}")
        d = json.loads(s.recv()["data"])
        sid, tok = d["socket_id"], d["halley:token"]
        send_http(port, sid, tok, {"event": "pusher:subscribe", "data": {"channel": random.choice(CHANNELS)}})
        for _ in range(4):
            end = time.monotonic() + 0.4
            while time.monotonic() < end:
                s.event()
            last = s.last_id
            s.abort()
            s = SSE(port, query=f"key={KEY}", last_event_id=last)
            bump("sse resumes")
        s.close()

    def poller():
        p = Poll(port, key=KEY)
        p.subscribe(random.choice(CHANNELS))
        for _ in range(10):
            bump("poll messages", len(p.poll(timeout=10)))

    def presence():
        user = f"u{random.randrange(6)}"
        ws = WS(port, key=KEY, halley=False)
        sid = ws.hello()["socket_id"]
        cd = json.dumps({"user_id": user, "user_info": {"n": user}})
        ws.send({"event": "pusher:subscribe", "data": {"channel": "presence-room", "auth": auth(sid, "presence-room", cd),
                                                       "channel_data": cd}})
        end = time.monotonic() + random.uniform(0.2, 1.5)
        while time.monotonic() < end:
            try:
                ws.recv(timeout=0.3)
            except TimeoutError:
                pass
        if random.random() < 0.5:
            ws.send({"event": "pusher:unsubscribe", "data": {"channel": "presence-room"}})
        ws.close()
        bump("presence visits")

    def client_events():
        a, b = WS(port, key=KEY, halley=False), WS(port, key=KEY, halley=False)
        for w in (a, b):
            sid = w.hello()["socket_id"]
            w.send({"event": "pusher:subscribe", "data": {"channel": "private-chat", "auth": auth(sid, "private-chat")}})
            assert w.recv()["event"] == "pusher_internal:subscription_succeeded"
        for i in range(50):
            a.send({"event": "client-x", "channel": "private-chat", "data": {"i": i}})
            if i % 10 == 9:
                a.send({"event": "client-b", "channel": "private-chat", "data": base64.b64encode(b"\x00\xff" * i).decode(),
                        "halley:binary": True})
        got = 0
        end = time.monotonic() + 3
        while got < 55 and time.monotonic() < end:
            if b.recv(timeout=3)["event"].startswith("client-"):
                got += 1
        bump("client events", got)
        a.close()
        b.close()

    def signin_terminate():
        user = f"t{random.randrange(3)}"
        ws = WS(port, key=KEY, halley=False)
        sid = ws.hello()["socket_id"]
        ud = json.dumps({"id": user})
        ws.send({"event": "pusher:signin", "data": {"auth": f"{KEY}:{sign(f'{sid}::user::{ud}')}", "user_data": ud}})
        assert ws.recv()["event"] == "pusher:signin_success"
        sdk.send_to_user(user, "hello", {"u": user})
        sdk.terminate_user_connections(user)
        bump("terminations")
        try:
            while True:
                ws.recv(timeout=2)
        except Exception:
            pass
        ws.close()

    def xhr():
        c = pusher_xhr.Client(port, key=KEY)
        st, est = pusher_xhr.open_stream(c)
        c.subscribe(random.choice(CHANNELS))
        end = time.monotonic() + random.uniform(1, 3)
        while time.monotonic() < end:
            m = pusher_xhr.next_message(st, timeout=2)
            assert not isinstance(m, tuple), m
            bump("xhr messages")
            if random.random() < 0.05:
                c.ping()
        st.abort()

    def api_queries():
        sdk.channels_info(prefix_filter="c")
        sdk.channel_info(random.choice(CHANNELS), ["subscription_count"])
        sdk.users_info("presence-room")
        bump("api queries")
        time.sleep(0.05)

    def stats():
        status, _, body = http_request(port, "GET", "/stats", headers={"Authorization": "Bearer adm"})
        assert status == 200, status
        json.loads(body)
        bump("stats reads")
        time.sleep(0.2)

    def reload():
        """SIGHUP with a second app added or removed (its clients closed 4001) and the main
        app's rate changed, while a client of the second app is connected."""
        extra = random.random() < 0.5
        apps = [dict(main_app, client_events_per_second=random.choice([999, 1000]))]
        if extra:
            apps.append({"id": "77", "key": "k77", "secret": "s77"})
        with open(cfg + ".tmp", "w") as f:
            json.dump({"apps": apps}, f)
        os.replace(cfg + ".tmp", cfg)
        hub.signal(signal.SIGHUP)
        bump("reloads")
        try:
            ws = WS(port, key="k77", halley=False)
            ws.recv(timeout=2)
            time.sleep(random.uniform(0.2, 1))
            ws.close()
        except Exception:  # noqa: BLE001 - refused (4001) while the app is out: expected
            pass

    for i in range(2):
        threads.append(worker(f"publisher-{i}", stop, publisher))
    threads.append(worker("stats", stop, stats))
    threads.append(worker("reload", stop, reload))
    for i in range(12):
        threads.append(worker(f"ws-{i}", stop, subscriber(resumable=i % 2 == 0)))
    for name, body, n in (("ws-resume", ws_resumer, 2), ("sse-resume", sse_resumer, 2), ("poll", poller, 2),
                          ("presence", presence, 4), ("client-events", client_events, 1),
                          ("signin-terminate", signin_terminate, 1), ("xhr", xhr, 2), ("api", api_queries, 1)):
        for i in range(n):
            threads.append(worker(f"{name}-{i}", stop, body))

    t0 = time.monotonic()
    while time.monotonic() - t0 < args.duration and hub.alive():
        time.sleep(1)
    stop.set()
    for t in threads:
        t.join(10)
    # A quiet phase: readers alone, beside idle sessions on both loops. Under the load above,
    # the loops' constant use of the hub lock orders almost everything; a value read outside
    # its lock then races only with the rare write that no other lock happens to order (the
    # /stats history did, once in many runs). Alone, such a race shows within seconds.
    if hub.alive():
        idle = []
        try:
            for _ in range(8):
                ws = WS(port, key=KEY, halley=False)
                ws.recv(timeout=5)
                idle.append(ws)
            t1 = time.monotonic()
            while time.monotonic() - t1 < 6:
                stats()
                api_queries()
                bump("quiet reads")
        except Exception as e:  # noqa: BLE001 - recorded as a worker error
            errors.append(f"quiet reads: {e!r}")
        for ws in idle:
            ws.close()
    alive = hub.alive()
    rc = hub.stop(timeout=60)
    hooks.server.shutdown()

    print(f"stress: {args.duration:.0f} s on --threads 2; " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
    failed = False
    if not alive or rc != 0:
        print(f"STRESS FAILURE: the hub exited with {rc}\n" + hub.log_text()[-1500:])
        failed = True
    quiet = [k for k in ("publishes", "ws messages", "ws resumes", "sse resumes", "poll messages", "presence visits",
                         "client events", "terminations", "xhr messages", "api queries", "webhook events",
                         "stats reads", "reloads", "quiet reads") if counts[k] == 0]
    if quiet:
        print(f"STRESS FAILURE: these workers did nothing: {', '.join(quiet)}")
        failed = True
    if errors:
        print(f"STRESS FAILURE: {len(errors)} worker errors (first 10):\n  " + "\n  ".join(errors[:10]))
        failed = True
    reports = [os.path.join(args.logs, n) for n in os.listdir(args.logs)]
    if reports:
        print(f"STRESS FAILURE: sanitizer reports in {args.logs}:")
        subprocess.run([sys.executable, os.path.join(HERE, "summary.py"), *reports])
        # The reports themselves, so a CI log that keeps only the run's output still shows the stacks.
        for path in sorted(reports)[:3]:
            with open(path, errors="replace") as f:
                lines = f.read().splitlines()
            print(f"--- {path} ({len(lines)} lines; first 150)\n" + "\n".join(lines[:150]))
        failed = True
    if not failed:
        print("stress: no sanitizer report")
    return 1 if failed else 0


if __name__ == "__main__":
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    sys.exit(main())
