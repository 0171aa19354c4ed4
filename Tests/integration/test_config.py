"""Flags and HALLEY_* environment variables, bad configurations, --help, log levels."""

from __future__ import annotations

import json
import os
import select
import socket
import subprocess
import time

import pytest

from halley_client import HALLEY_BIN, Client, connect
from hub_client import WS, publish_signed
from public_tree import FILES

ALL_FLAGS = [
    "--host", "--port", "--public", "--threads", "--log-level", "--metrics-port", "--max-connections",
    "--max-request-line", "--max-header-bytes", "--max-headers", "--max-body-bytes", "--header-timeout",
    "--body-timeout", "--keepalive-timeout", "--send-timeout", "--shutdown-grace", "--static-cache-control",
]


def clean_env(**extra):
    env = {k: v for k, v in os.environ.items() if not k.startswith("HALLEY_")}
    env.update(extra)
    return env


def run_fails(args, env=None, timeout=5):
    p = subprocess.run([HALLEY_BIN, *args], env=clean_env(**(env or {})), capture_output=True, timeout=timeout)
    return p.returncode, (p.stdout + p.stderr).decode("utf-8", "replace")


def post_status(port, length):
    with connect(port) as s:
        c = Client(s)
        c.send_request("POST", "/one.txt", body=b"x" * length)
        return c.read_response().status


def test_help_lists_every_flag():
    p = subprocess.run([HALLEY_BIN, "--help"], env=clean_env(), capture_output=True, timeout=5)
    assert p.returncode == 0
    text = p.stdout.decode()
    for flag in ALL_FLAGS:
        assert flag in text, flag
    assert "HALLEY_MAX_BODY_BYTES" in text


def test_env_variable_sets_a_limit(start_halley):
    h = start_halley(env={"HALLEY_MAX_BODY_BYTES": "100"})
    assert post_status(h.port, 100) == 405
    assert post_status(h.port, 101) == 413


def test_flag_wins_over_env(start_halley):
    h = start_halley("--max-body-bytes", "1000", env={"HALLEY_MAX_BODY_BYTES": "100"})
    assert post_status(h.port, 101) == 405
    assert post_status(h.port, 1001) == 413


def test_env_variables_for_other_options(start_halley):
    h = start_halley(
        env={"HALLEY_MAX_HEADERS": "3", "HALLEY_STATIC_CACHE_CONTROL": "public, max-age=60", "HALLEY_METRICS_PORT": "0"},
        threads=1,
    )
    assert h.metrics_port is not None
    assert h.get("/one.txt").header("cache-control") == "public, max-age=60"
    assert h.get("/one.txt", [("A", "1"), ("B", "2")]).status == 200
    assert h.get("/one.txt", [("A", "1"), ("B", "2"), ("C", "3")]).status == 431


def test_threads_from_env(public_root):
    # The fixture always passes --threads; here the variable alone decides.
    p = subprocess.Popen(
        [HALLEY_BIN, "--port", "0", "--public", public_root],
        env=clean_env(HALLEY_THREADS="3"), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )
    try:
        ready, _, _ = select.select([p.stdout], [], [], 10)
        assert ready, "halley printed nothing"
        line = p.stdout.readline().decode()
        assert "(3 loops" in line, line
    finally:
        p.terminate()
        p.communicate(timeout=15)
    assert p.returncode == 0


def test_flag_equals_syntax(start_halley):
    h = start_halley("--max-request-line=64", "--static-cache-control=no-store")
    assert h.get("/one.txt").header("cache-control") == "no-store"
    assert h.get("/" + "a" * 60).status == 414


@pytest.mark.parametrize(
    "args, env, needle",
    [
        (["--bogus"], None, "--bogus"),
        (["--threads", "0"], None, "--threads"),
        (["--port", "abc"], None, "--port"),
        (["--port"], None, "--port"),
        (["--max-header-bytes", "10"], None, "--max-header-bytes"),
        (["--log-level", "loud"], None, "--log-level"),
        (["stray"], None, "stray"),
        ([], {"HALLEY_PORT": "abc"}, "--port"),
        ([], {"HALLEY_MAX_BODY_BYTES": "-1"}, "--max-body-bytes"),
        # The official Pusher SDKs refuse app ids that are not digits.
        (["--app-id", "abc"], None, "--app-id: expected digits, got 'abc'"),
        (["--app-id", "7a"], None, "--app-id: expected digits"),
        (["--app-id", ""], None, "--app-id: expected digits"),
        ([], {"HALLEY_APP_ID": "app-7"}, "--app-id: expected digits, got 'app-7'"),
        (["--redis", "rediss://127.0.0.1:6379"], None, "--redis: rediss:// (TLS) is not supported"),
        (["--redis", "http://127.0.0.1"], None, "--redis: not a redis:// URL"),
        ([], {"HALLEY_REDIS": "redis://127.0.0.1:70000"}, "--redis: bad port"),
        (["--node-id", "a b"], None, "--node-id: 1 to 64 letters"),
        (["--tls-records", "kernel"], None, "--tls-records: expected own or openssl, got 'kernel'"),
        ([], {"HALLEY_TLS_RECORDS": "OWN"}, "--tls-records: expected own or openssl"),
    ],
)
def test_bad_options_exit_2(args, env, needle):
    rc, out = run_fails(args, env)
    assert rc == 2, out
    assert needle in out
    assert "error" in out


def test_port_in_use_fails_to_start(start_halley, public_root):
    """A second server on a port that is already taken must not start (and silently share
    the port with the first through SO_REUSEPORT)."""
    first = start_halley()
    try:
        rc, out = run_fails(["--port", str(first.port), "--public", public_root, "--threads", "1"], timeout=2)
    except subprocess.TimeoutExpired:
        pytest.fail(f"a second halley started on port {first.port}, which the first one already listens on")
    assert rc == 1, out
    assert "start failed" in out


def test_missing_public_root_turns_static_off(start_halley, tmp_path):
    h = start_halley(public=str(tmp_path / "does-not-exist"), threads=1)
    assert h.wait_for_log(r"warning public root .* is not a directory", timeout=1)
    assert h.get("/").status == 404
    assert h.get("/index.html").status == 404


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_log_level_warning_hides_refusals(public_root):
    # At "warning" the start line (info) is not printed either: use a fixed port.
    port = free_port()
    p = subprocess.Popen(
        [HALLEY_BIN, "--port", str(port), "--threads", "1", "--public", public_root, "--log-level", "warning"],
        env=clean_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                connect(port, timeout=1).close()
                break
            except ConnectionRefusedError:
                assert time.monotonic() < deadline, "halley did not start"
                time.sleep(0.05)
        with connect(port) as s:
            c = Client(s)
            c.send_raw(b"GET / HTTP/2.0\r\nHost: h\r\n\r\n")
            assert c.read_response("GET").status == 505
        with connect(port) as s:
            c = Client(s)
            c.send_request("GET", "/one.txt")
            assert c.read_response().body == FILES["one.txt"]
    finally:
        p.terminate()
        out, _ = p.communicate(timeout=15)
    assert p.returncode == 0
    # Only the start and stop lines (and warnings) are written whatever the level (the start line carries
    # the port); the refused request's info line is not.
    lines = out.decode().splitlines()
    assert not any(": 505 " in l for l in lines), f"info lines at --log-level warning: {out!r}"
    # The development-app warning is a warning: it shows at this level.
    assert any("using the development app" in l for l in lines), lines
    rest = [l.split(" ", 2)[2] for l in lines if "listening on" not in l and "development app" not in l]
    assert len(rest) == 2 and rest[0].startswith("SIGTERM: stopping") and rest[1] == "halley stopped", lines


def test_host_flag(start_halley):
    h = start_halley("--host", "127.0.0.1", threads=1)
    assert h.get("/one.txt").status == 200


# ---- the app's credentials and the development-app warning

DEV_WARNING = "development"


def warnings_of(h):
    return [l for l in h.log_lines() if " warning " in f" {l} " and DEV_WARNING in l]


@pytest.mark.parametrize("via", ["flags", "env"])
def test_configured_app_starts_without_the_development_warning(start_halley, via):
    if via == "flags":
        h = start_halley("--app-id", "7", "--app-key", "k", "--app-secret", "s")
    else:
        h = start_halley(env={"HALLEY_APP_ID": "7", "HALLEY_APP_KEY": "k", "HALLEY_APP_SECRET": "s"})
    line = h.wait_for_log(r"app id \S+, key ", timeout=5)
    assert line is not None and "app id 7, key k" in line, h.log_text()
    assert " s " not in line
    # The configured app is the one that works: a subscriber on key k gets a publish signed
    # with secret s (by the Pusher SDK's signer) ...
    ws = WS(h.port, key="k")
    ws.hello()
    ws.subscribe("news")
    status, r = publish_signed(h.port, {"channel": "news", "event": "e", "data": "hi"}, key="k", secret="s")
    assert status == 201 and r["sessions"] == 1, r
    m = ws.recv()
    assert m["event"] == "e" and m["data"] == "hi"
    ws.close()
    # ... and the development credentials are gone.
    status, _ = publish_signed(h.port, {"channel": "news", "event": "e", "data": "x"})
    assert status == 401
    status, _ = publish_signed(h.port, {"channel": "news", "event": "e", "data": "x"}, key="k", secret="app-secret")
    assert status == 401
    # Checked last: the start-up warnings follow the app line, and the log reader has read
    # them by the time these requests were answered.
    time.sleep(0.3)
    assert DEV_WARNING not in h.log_text()
    assert "app-secret" not in h.log_text()


@pytest.mark.parametrize(
    "args, env, names",
    [
        # An id alone keeps the public key and secret: the warning stays, naming both.
        ([], {"HALLEY_APP_ID": "5"}, ["key 'app-key'", "secret 'app-secret'"]),
        (["--app-id", "5"], None, ["key 'app-key'", "secret 'app-secret'"]),
        # A key of its own but the public secret: anyone can sign API requests.
        (["--app-id", "5", "--app-key", "k"], None, ["secret 'app-secret'"]),
        ([], {"HALLEY_APP_KEY": "k"}, ["secret 'app-secret'"]),
        # A secret of its own but the development key.
        ([], {"HALLEY_APP_SECRET": "s"}, ["key 'app-key'"]),
        # The default values given explicitly are still the development ones.
        (["--app-id", "5", "--app-key", "k", "--app-secret", "app-secret"], None, ["secret 'app-secret'"]),
    ],
)
def test_development_key_or_secret_warns_whatever_the_flags(start_halley, args, env, names):
    h = start_halley(*args, env=env)
    line = h.wait_for_log(r"warning .*development", timeout=5)
    assert line is not None, h.log_text()
    app_id = "5" if "--app-id" in args or "HALLEY_APP_ID" in (env or {}) else "1"
    assert f"app {app_id} uses the development " in line, line
    for n in names:
        assert n in line, (n, line)
    for n in {"key 'app-key'", "secret 'app-secret'"} - set(names):
        assert n not in line, (n, line)
    assert len(warnings_of(h)) == 1, h.log_text()
    assert h.wait_for_log(r"app id \S+, key ", timeout=1) is not None


def test_default_app_warns_as_the_development_app(start_halley):
    h = start_halley()
    line = h.wait_for_log(r"warning .*development", timeout=5)
    assert line is not None and "using the development app (id 1, key app-key, secret app-secret)" in line, line
    assert len(warnings_of(h)) == 1


def test_apps_file_with_development_credentials_warns_per_app(start_halley, tmp_path):
    path = tmp_path / "apps.json"
    path.write_text(json.dumps({"apps": [
        {"id": "1", "key": "app-key", "secret": "app-secret"},
        {"id": "2", "key": "k2", "secret": "s2"},
        {"id": "3", "key": "k3", "secret": "app-secret"},
    ]}))
    h = start_halley("--config", str(path))
    assert h.wait_for_log("apps loaded from", timeout=5)
    assert h.wait_for_log(r"warning app 3 ", timeout=5)
    ws = warnings_of(h)
    assert len(ws) == 2, h.log_text()
    one = next(l for l in ws if "app 1 " in l)
    three = next(l for l in ws if "app 3 " in l)
    assert "key 'app-key'" in one and "secret 'app-secret'" in one and str(path) in one
    assert "secret 'app-secret'" in three and "key 'app-key'" not in three
    assert not any("app 2 " in l for l in ws)
    # A file without them: silent.
    path2 = tmp_path / "apps2.json"
    path2.write_text(json.dumps({"apps": [{"id": "2", "key": "k2", "secret": "s2"}]}))
    h2 = start_halley("--config", str(path2))
    assert h2.wait_for_log("1 app loaded from", timeout=5)
    # The warnings would follow at once; a request answered, then a pause, leaves the log
    # reader time to have read them.
    ws2 = WS(h2.port, key="k2")
    ws2.hello()
    ws2.close()
    time.sleep(0.3)
    assert DEV_WARNING not in h2.log_text()
