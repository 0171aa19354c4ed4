#!/usr/bin/env python3
"""A tiny app backend for Halley's demo pages (development only; standard library only).

    Scripts/run.sh                       # the hub on http://127.0.0.1:8080
    python3 Scripts/demo_backend.py      # this, on http://127.0.0.1:8081

It does the two things a real app's backend does for the demos:

- POST /auth: signs private and presence subscriptions for halley.js, in the batch format
  (`socket_id=S&channel_name[0]=A&channel_name[1]=B` → `{"A": {"status": 200, "data":
  {"auth": …, "channel_data": …}}}`) and pusher-js's single form (`channel_name=A` →
  `{"auth": …}`). Presence members are named by the `name` parameter the page sends: a demo
  trusts it; a real backend takes the user from its own login session instead.
- Publishes a made-up price to channel `ticker` every second with a signed `POST /publish`,
  exactly as a backend feeds the ticker demo.

The browser tests import `AuthBackend` and `sign_query` from here.
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import http.client
import json
import random
import re
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def hmac_hex(secret: str, text: str) -> str:
    return hmac.new(secret.encode(), text.encode(), hashlib.sha256).hexdigest()


def channel_auth(key: str, secret: str, socket_id: str, channel: str, user: str | None) -> dict:
    """Pusher "Authorizing subscriptions": key:HMAC-SHA256(secret, socket_id:channel[:channel_data])."""
    if channel.startswith("presence-"):
        name = (user or "guest").strip()[:40] or "guest"
        user_id = re.sub(r"[^A-Za-z0-9_.-]", "_", name.lower())[:64]
        channel_data = json.dumps({"user_id": user_id, "user_info": {"name": name}}, separators=(",", ":"))
        return {"auth": f"{key}:{hmac_hex(secret, f'{socket_id}:{channel}:{channel_data}')}", "channel_data": channel_data}
    return {"auth": f"{key}:{hmac_hex(secret, f'{socket_id}:{channel}')}"}


def sign_query(key: str, secret: str, method: str, path: str, body: bytes) -> str:
    """The Pusher HTTP API query signature (what every Pusher server SDK sends)."""
    params = {
        "auth_key": key,
        "auth_timestamp": str(int(time.time())),
        "auth_version": "1.0",
        "body_md5": hashlib.md5(body).hexdigest(),
    }
    query = "&".join(f"{k}={params[k]}" for k in sorted(params))
    return query + "&auth_signature=" + hmac_hex(secret, f"{method}\n{path}\n{query}")


class JSONHandler(BaseHTTPRequestHandler):
    """JSON answers open to every origin (CORS), no access log: the demo backend's handler and
    the browser tests' SDK backend build on it."""
    extra_cors: tuple = ()

    def log_message(self, *args):
        pass

    def allowed_headers(self):
        return "Content-Type, Authorization"

    def cors(self):
        self.send_header("Access-Control-Allow-Origin", self.headers.get("Origin") or "*")
        for k, v in self.extra_cors:
            self.send_header(k, v)
        self.send_header("Vary", "Origin")
        self.send_header("Access-Control-Allow-Methods", "POST, OPTIONS")
        self.send_header("Access-Control-Allow-Headers", self.allowed_headers())

    def answer(self, status, obj):
        # bytes as text: the Pusher SDK gives an encrypted channel's shared_secret as bytes.
        body = json.dumps(obj, default=lambda o: o.decode() if isinstance(o, bytes) else str(o)).encode()
        self.send_response(status)
        self.cors()
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_OPTIONS(self):
        self.send_response(204)
        self.cors()
        self.send_header("Content-Length", "0")
        self.end_headers()


class AuthBackend:
    """The auth endpoint (and the optional ticker) on 127.0.0.1:`port` (0: a free one)."""

    def __init__(self, key="app-key", secret="app-secret", port=0, host="127.0.0.1", hub=None, ticker=0.0):
        self.key, self.secret = key, secret
        self.requests: list[dict] = []  # every auth request: {"socket_id", "channels"}
        backend = self

        class Handler(JSONHandler):
            def do_GET(self):
                self.answer(200, {"halley_demo_backend": True, "auth": "POST /auth"})

            def do_POST(self):
                if urllib.parse.urlsplit(self.path).path != "/auth":
                    return self.answer(404, {"error": "not found"})
                n = int(self.headers.get("Content-Length") or 0)
                form = urllib.parse.parse_qs(self.rfile.read(n).decode(), keep_blank_values=True)
                socket_id = (form.get("socket_id") or [""])[0]
                if not re.fullmatch(r"\d+\.\d+", socket_id):
                    return self.answer(400, {"error": "bad socket_id"})
                user = (form.get("name") or [None])[0]
                batch = sorted((k for k in form if re.fullmatch(r"channel_name\[\d+\]", k)),
                               key=lambda k: int(k[13:-1]))
                if batch:
                    names = [form[k][0] for k in batch]
                    backend.requests.append({"socket_id": socket_id, "channels": names})
                    out = {}
                    for name in names:
                        if name.startswith(("private-", "presence-")):
                            out[name] = {"status": 200, "data": channel_auth(backend.key, backend.secret, socket_id, name, user)}
                        else:
                            out[name] = {"status": 400}
                    return self.answer(200, out)
                name = (form.get("channel_name") or [""])[0]
                backend.requests.append({"socket_id": socket_id, "channels": [name]})
                if not name.startswith(("private-", "presence-")):
                    return self.answer(403, {"error": "not a private or presence channel"})
                return self.answer(200, channel_auth(backend.key, backend.secret, socket_id, name, user))

        self.server = ThreadingHTTPServer((host, port), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.url = f"http://{host}:{self.port}/auth"
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self.server.serve_forever, daemon=True)]
        if hub and ticker > 0:
            self._threads.append(threading.Thread(target=self._tick, args=(hub, ticker), daemon=True))
        for t in self._threads:
            t.start()

    def publish(self, hub: str, body: dict) -> int:
        u = urllib.parse.urlsplit(hub)
        raw = json.dumps(body).encode()
        c = http.client.HTTPConnection(u.hostname, u.port or 80, timeout=5)
        try:
            c.request("POST", "/publish?" + sign_query(self.key, self.secret, "POST", "/publish", raw), raw,
                      {"Content-Type": "application/json"})
            r = c.getresponse()
            r.read()
            return r.status
        finally:
            c.close()

    def _tick(self, hub, every):
        prices = {"HAL": 100.0, "SWFT": 42.0, "WSK": 7.5}
        n = 0
        while not self._stop.wait(every):
            n += 1
            sym = random.choice(list(prices))
            prices[sym] = max(0.01, prices[sym] * (1 + random.gauss(0, 0.01)))
            try:
                self.publish(hub, {"channel": "ticker", "event": "price",
                                   "data": json.dumps({"n": n, "symbol": sym, "price": round(prices[sym], 2),
                                                       "at": int(time.time() * 1000)})})
            except OSError:
                pass  # the hub is not up (yet): next tick

    def stop(self):
        self._stop.set()
        self.server.shutdown()
        self.server.server_close()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--port", type=int, default=8081)
    ap.add_argument("--hub", default="http://127.0.0.1:8080", help="the hub to publish the ticker to")
    ap.add_argument("--key", default="app-key")
    ap.add_argument("--secret", default="app-secret")
    ap.add_argument("--ticker", type=float, default=1.0, help="seconds between ticker prices (0: off)")
    a = ap.parse_args()
    b = AuthBackend(a.key, a.secret, a.port, hub=a.hub, ticker=a.ticker)
    print(f"demo backend: auth at {b.url}, ticker to {a.hub} every {a.ticker}s (Ctrl-C stops)", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        b.stop()


if __name__ == "__main__":
    main()
