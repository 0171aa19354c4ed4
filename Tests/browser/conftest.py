"""Fixtures for the browser tests: the real hub serving the real `public/`, the demo app
backend (auth endpoint), headless Chromium through Selenium, screenshots and measurements.

    HALLEY_BIN=.build/debug/halley .venv/bin/python -m pytest Tests/browser
"""

from __future__ import annotations

import json
import os
import sys
import time

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(ROOT, "Tests", "integration"))
sys.path.insert(0, os.path.join(ROOT, "Scripts"))

from demo_backend import AuthBackend  # noqa: E402
from halley_client import Halley, no_sanitizer_reports  # noqa: E402

OUT = os.path.join(ROOT, ".test-out")
SHOTS = os.path.join(OUT, "screenshots")
CHROMEDRIVER = os.environ.get("CHROMEDRIVER", "/usr/bin/chromedriver")
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
TOKEN = "tok"

_metrics: dict = {}


# Fails the test when a hub it ran wrote a sanitizer report (HALLEY_SANITIZER_LOGS).
_no_sanitizer_reports = pytest.fixture(autouse=True)(no_sanitizer_reports)


@pytest.fixture(scope="session")
def hub():
    """One hub for the session: two loops, the repository's public/, a bearer token for
    POST /publish, and a short session linger so a vanished browser leaves presence soon."""
    h = Halley(os.path.join(ROOT, "public"), ["--app-token", TOKEN, "--session-linger", "10"])
    yield h
    rc = h.stop()
    assert rc == 0, f"halley exited with {rc}\n{h.log_text()[-4000:]}"


@pytest.fixture(scope="session")
def backend():
    """The demo app backend (Scripts/demo_backend.py): only for what needs its batch format."""
    b = AuthBackend()
    yield b
    b.stop()


@pytest.fixture(scope="session")
def sdk(hub):
    """An app backend written with the official Pusher SDK and nothing else (sdk_backend.py):
    the auth endpoint the tests use, as a Laravel app would answer."""
    from sdk_backend import SDKBackend
    b = SDKBackend(hub.port)
    yield b
    b.stop()


@pytest.fixture
def browser():
    """Starts headless Chromium sessions (each a fresh profile: no remembered transport)."""
    started = []

    def start(*extra):
        o = webdriver.ChromeOptions()
        o.binary_location = CHROMIUM
        for a in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                  "--window-size=1200,900", "--disable-extensions", "--no-first-run",
                  # Never resolve names off this machine (TESTING.md).
                  "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1 , EXCLUDE localhost", *extra):
            o.add_argument(a)
        o.set_capability("goog:loggingPrefs", {"browser": "ALL"})
        d = webdriver.Chrome(options=o, service=Service(executable_path=CHROMEDRIVER))
        d.set_page_load_timeout(20)
        d.set_script_timeout(20)
        started.append(d)
        return d

    yield start
    for d in started:
        try:
            d.quit()
        except Exception:
            pass


def screenshot(driver, name):
    os.makedirs(SHOTS, exist_ok=True)
    path = os.path.join(SHOTS, name + ".png")
    driver.save_screenshot(path)
    return os.path.relpath(path, ROOT)


def wait_for(driver, script, timeout=10.0, step=0.05, what=None):
    """Polls `return …` in the page until it is truthy; returns the value."""
    deadline = time.monotonic() + timeout
    while True:
        v = driver.execute_script(script)
        if v:
            return v
        if time.monotonic() > deadline:
            logs = ""
            try:
                logs = "\n".join(str(e) for e in driver.get_log("browser")[-20:])
            except Exception:
                pass
            raise AssertionError(f"timed out after {timeout}s waiting for {what or script}\nbrowser log:\n{logs}")
        time.sleep(step)


def record(name, **values):
    _metrics[name] = values


def pytest_sessionfinish(session, exitstatus):
    if _metrics:
        os.makedirs(OUT, exist_ok=True)
        with open(os.path.join(OUT, "browser-metrics.json"), "w") as f:
            json.dump(_metrics, f, indent=2, sort_keys=True)


def pytest_terminal_summary(terminalreporter):
    if not _metrics:
        return
    terminalreporter.section("browser measurements (ms from navigation start; .test-out/browser-metrics.json)")
    for k in sorted(_metrics):
        terminalreporter.line(f"{k}: " + ", ".join(f"{a}={b}" for a, b in _metrics[k].items()))
    shots = sorted(os.listdir(SHOTS)) if os.path.isdir(SHOTS) else []
    terminalreporter.line(f"screenshots ({len(shots)}): .test-out/screenshots/ " + " ".join(shots))


@pytest.fixture
def start_hub():
    """Hubs with test-specific flags (stopped, and checked to exit 0, at teardown)."""
    started = []

    def start(*args):
        h = Halley(os.path.join(ROOT, "public"), ["--app-token", TOKEN, *args])
        started.append(h)
        return h

    yield start
    for h in started:
        rc = h.stop()
        assert rc == 0, f"halley exited with {rc}\n{h.log_text()[-4000:]}"
