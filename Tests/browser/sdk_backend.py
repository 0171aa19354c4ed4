"""An app backend written with the official Pusher server SDK (PyPI `pusher`) and nothing
else, answering as a Laravel app or any SDK-based endpoint does:

- `POST /pusher/auth`, form `socket_id` + `channel_name` (one channel: a batch request has no
  `channel_name` and is refused 400, as Laravel's `/broadcasting/auth` refuses it) →
  `Pusher.authenticate(channel, socket_id, custom_data)`; presence members are named by the
  form's `name` (a real app takes the user from its login session);
- `POST /pusher/user-auth`, form `socket_id` → `Pusher.authenticate_user(socket_id, user_data)`;
- `send_to_user`, `trigger` and the encryption master key for `private-encrypted-` channels.

Every request is recorded (`requests`) so a test can count them.
"""

from __future__ import annotations

import base64
import os
import re
import threading
import urllib.parse
import sys
from http.server import ThreadingHTTPServer

import pusher

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "Scripts"))
from demo_backend import JSONHandler  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))


def pusher_js_dir():
    """The unmodified pusher-js 8.6.0 browser builds: $PUSHER_JS_DIR, else the machine's
    shared peers beside the repository (../shared/peers/pusher-js), else /work/shared/…"""
    for d in (os.environ.get("PUSHER_JS_DIR"), os.path.join(HERE, "..", "..", "..", "shared", "peers", "pusher-js"),
              "/work/shared/peers/pusher-js"):
        if d and os.path.exists(os.path.join(d, "pusher.js")):
            return os.path.abspath(d)
    return None


PUSHER_JS = pusher_js_dir()
STATIC = {
    "/pusher.js": os.path.join(PUSHER_JS or "", "pusher.js"),
    "/pusher-with-encryption.js": os.path.join(PUSHER_JS or "", "pusher-with-encryption.js"),
    "/pusher.html": os.path.join(HERE, "pages", "pusher.html"),
}

# 32 bytes, base64: what the SDK takes to derive each encrypted channel's key.
ENCRYPTION_KEY = base64.b64encode(bytes(range(32))).decode()


class SDKBackend:
    def __init__(self, hub_port, key="app-key", secret="app-secret", app_id="1"):
        self.sdk = pusher.Pusher(app_id=app_id, key=key, secret=secret, host="127.0.0.1", port=hub_port, ssl=False,
                                 encryption_master_key_base64=ENCRYPTION_KEY)
        self.requests: list[dict] = []
        backend = self

        class Handler(JSONHandler):
            extra_cors = (("Access-Control-Allow-Credentials", "true"),)

            def allowed_headers(self):
                return self.headers.get("Access-Control-Request-Headers") or "Content-Type"

            def do_GET(self):
                f = STATIC.get(urllib.parse.urlsplit(self.path).path)
                if not f or not os.path.exists(f):
                    return self.answer(404, {"message": "not found"})
                with open(f, "rb") as fh:
                    body = fh.read()
                self.send_response(200)
                self.send_header("Content-Type", "text/html; charset=utf-8" if f.endswith(".html") else "text/javascript")
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Cache-Control", "no-store")
                self.end_headers()
                self.wfile.write(body)

            def do_POST(self):
                path = urllib.parse.urlsplit(self.path).path
                n = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(n).decode()
                form = {k: v[0] for k, v in urllib.parse.parse_qs(raw, keep_blank_values=True).items()}
                backend.requests.append({"path": path, "form": form, "content_type": self.headers.get("Content-Type"),
                                         "headers": {k.lower(): v for k, v in self.headers.items()}})
                socket_id = form.get("socket_id", "")
                name = form.get("name") or "guest"
                # The form's `user_id` when given (tests of odd ids), else one made from the name.
                user_id = form.get("user_id") or re.sub(r"[^a-z0-9_.-]", "_", name.lower())[:64]
                try:
                    if path == "/pusher/auth":
                        channel = form.get("channel_name")
                        if not channel:
                            return self.answer(400, {"message": "channel_name is required"})
                        if not channel.startswith(("private-", "presence-")):
                            return self.answer(403, {"message": "not a private or presence channel"})
                        custom = {"user_id": user_id, "user_info": {"name": name}} if channel.startswith("presence-") else None
                        return self.answer(200, backend.sdk.authenticate(channel=channel, socket_id=socket_id, custom_data=custom))
                    if path == "/pusher/user-auth":
                        return self.answer(200, backend.sdk.authenticate_user(socket_id, {"id": user_id, "name": name}))
                except ValueError as e:
                    return self.answer(403, {"message": str(e)})
                self.answer(404, {"message": "not found"})

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.origin = f"http://127.0.0.1:{self.port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def auth_requests(self, path="/pusher/auth"):
        return [r for r in self.requests if r["path"] == path]

    def stop(self):
        self.server.shutdown()
        self.server.server_close()
