"""Fixtures for Halley's integration tests: a public tree and the real binary.

`halley` is one server shared by the whole session (defaults, two loops); `start_halley`
starts servers with test-specific flags. Every server is stopped with SIGTERM at teardown
and must exit 0.
"""

from __future__ import annotations

import os

import pytest

from halley_client import HALLEY_BIN, Halley, no_sanitizer_reports
from public_tree import build_public


def pytest_configure(config):
    config.addinivalue_line(
        "markers",
        "server_bug(reason): asserts the correct behaviour where the current server is known to be "
        "wrong; deselect with -m 'not server_bug'",
    )


@pytest.fixture(scope="session", autouse=True)
def _binary_exists():
    if not os.access(HALLEY_BIN, os.X_OK):
        pytest.exit(f"halley binary not found at {HALLEY_BIN} (set HALLEY_BIN or run `swift build`)", returncode=2)


# Fails the test when a hub it ran wrote a sanitizer report (HALLEY_SANITIZER_LOGS).
_no_sanitizer_reports = pytest.fixture(autouse=True)(no_sanitizer_reports)


@pytest.fixture(scope="session")
def public_root(tmp_path_factory) -> str:
    return build_public(str(tmp_path_factory.mktemp("halley")))


@pytest.fixture(scope="session")
def halley(public_root):
    """A shared server with default limits, two loops, and metrics."""
    h = Halley(public_root, ["--metrics-port", "0"])
    yield h
    rc = h.stop()
    assert rc == 0, f"halley exited with {rc}\n{h.log_text()[-4000:]}"


@pytest.fixture
def start_halley(public_root):
    """Starts servers with extra flags: start_halley("--header-timeout", "1", ...)."""
    started: list[Halley] = []

    def start(*args, env=None, public=None, threads=2, memory=False) -> Halley:
        """`memory=True`: a test that measures RSS (runs HALLEY_MEMORY_BIN, no sanitizer)."""
        h = Halley(public or public_root, list(args), env=env, threads=threads, memory=memory)
        started.append(h)
        return h

    yield start
    failures = []
    for h in started:
        rc = h.stop()
        if rc != 0:
            failures.append(f"{h.cmd} exited with {rc}\n{h.log_text()[-4000:]}")
    assert not failures, "\n".join(failures)
