"""No way out of the public root: dot segments, encoded slashes and backslashes, NUL bytes,
symbolic links (out of the root and inside it), dotfiles."""

from __future__ import annotations

import pytest

from halley_client import Client, connect
from public_tree import DOTFILE_MARKER, FILES, OUTSIDE_MARKER, assert_serving

try:
    with open("/etc/passwd", "rb") as _f:
        PASSWD = _f.read()
except OSError:  # pragma: no cover
    PASSWD = b"root:x:0:0:"

FORBIDDEN = [OUTSIDE_MARKER, DOTFILE_MARKER, PASSWD[:40], b"root:x:0:0"]


def raw_get(halley, target: bytes, method=b"GET"):
    """Sends the target byte for byte (no client-side normalisation) and checks that the
    connection is still usable afterwards unless the server said it closes."""
    with connect(halley.port) as s:
        c = Client(s)
        c.send_raw(method + b" " + target + b" HTTP/1.1\r\nHost: halley.test\r\n\r\n")
        r = c.read_response(method=method.decode())
        for secret in FORBIDDEN:
            assert secret not in r.body
        if "close" not in r.connection_tokens:
            c.send_request("GET", "/one.txt")
            nxt = c.read_response()
            assert nxt.body == FILES["one.txt"]
        return r


@pytest.mark.parametrize(
    "target",
    [
        b"/../etc/passwd",
        b"/..",
        b"/a/../../x",
        b"/sub/../../outside/secret.txt",
        b"/../outside/secret.txt",
        b"/%2e%2e/%2e%2e/etc/passwd",
        b"/%2E%2E/%2E%2E/etc/passwd",
        b"/.%2e/outside/secret.txt",
        b"/%2e./outside/secret.txt",
        b"/sub/%2e%2e/%2e%2e/outside/secret.txt",
        b"/./one.txt",
        b"/sub/./page.html",
        b"http://halley.test/../etc/passwd",
    ],
)
def test_dot_segments_are_400(halley, target):
    mark = halley.log_mark()
    r = raw_get(halley, target)
    assert r.status == 400
    assert halley.wait_for_log(r"400", timeout=2, start=mark), "no log line for the 400"


@pytest.mark.parametrize(
    "target",
    [
        b"/%2f..%2fetc/passwd",
        b"/%2F..%2Fetc%2Fpasswd",
        b"/..%2f..%2f..%2fetc%2fpasswd",
        b"/sub%2fpage.html",
        b"/%5c..%5cetc%5cpasswd",
        b"/..%5C..%5Cetc",
        b"/..\\..\\etc\\passwd",
        b"/sub\\page.html",
    ],
)
def test_encoded_slashes_and_backslashes_are_400(halley, target):
    assert raw_get(halley, target).status == 400


@pytest.mark.parametrize("target", [b"/one.txt%00", b"/one.txt%00.html", b"/%00", b"/sub/%00/../x"])
def test_nul_byte_is_400(halley, target):
    assert raw_get(halley, target).status == 400


@pytest.mark.parametrize("target", [b"/%zz", b"/one%2", b"/%", b"/%ff.txt", b"/caf%C3.txt", b"/%C0%AE%C0%AE/etc/passwd"])
def test_malformed_percent_encoding_is_400(halley, target):
    assert raw_get(halley, target).status == 400


@pytest.mark.parametrize(
    "target",
    [
        b"/link_out.txt",  # -> ../outside/secret.txt
        b"/link_out_dir/secret.txt",  # directory link out of the root
        b"/link_out_dir/",
        b"/passwd",  # -> /etc/passwd
        b"/link_in.html",  # -> index.html, inside the root: still refused
        b"/link_sub/page.html",  # directory link inside the root
        b"/link_sub/",
    ],
)
def test_symlinks_are_404(halley, target):
    for method in (b"GET", b"HEAD"):
        assert raw_get(halley, target, method).status == 404


@pytest.mark.parametrize(
    "target",
    [b"/.secret", b"/%2esecret", b"/.hidden/inside.txt", b"/.hidden/", b"/.hidden", b"/sub/.secret", b"/.git/config"],
)
def test_dotfiles_are_404(halley, target):
    assert raw_get(halley, target).status == 404


@pytest.mark.parametrize("target", [b"/%252e%252e/outside/secret.txt", b"/%252fetc%252fpasswd"])
def test_double_encoding_is_not_decoded_twice(halley, target):
    r = raw_get(halley, target)
    assert r.status in (400, 404)


def test_server_still_serves_after_traversal_attempts(halley):
    for t in (b"/../etc/passwd", b"/%2f", b"/link_out.txt", b"/.secret"):
        raw_get(halley, t)
    assert_serving(halley)
