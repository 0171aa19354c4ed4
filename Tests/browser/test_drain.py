"""A hub that drains (SIGTERM) tells halley.js to reconnect at once (4200) on every transport:
the client notes the code and retries with no back-off."""

from __future__ import annotations

import signal

import pytest

from conftest import wait_for


@pytest.mark.parametrize("transports", ["ws", "sse", "poll"])
def test_sigterm_makes_halley_js_reconnect_at_once(start_hub, browser, transports):
    h = start_hub("--shutdown-grace", "5")
    d = browser()
    d.get(f"http://127.0.0.1:{h.port}/connection.html?channel=drain&transports={transports}")
    wait_for(d, "return panel.client.connection.state === 'connected'", what="connected")
    want = {"ws": "ws", "sse": "sse", "poll": "poll"}[transports]
    assert d.execute_script("return panel.client.connection.transport") == want
    d.execute_script("window.mark = panel.client.connection.log.length")
    h.signal(signal.SIGTERM)
    assert h.wait_exit(timeout=8) == 0
    log = wait_for(d, "var l = panel.client.connection.log.slice(window.mark);"
                      " return l.some(function (e) { return e.event === 'retry'; }) && l", what="a retry")
    dropped = [e for e in log if e["event"] == "dropped"]
    assert dropped and dropped[0]["detail"].startswith("close 4200"), log
    retry = next(e for e in log if e["event"] == "retry")
    assert retry["detail"] == "in 0 ms", log
