"""Static files: content types, validators and 304s, HEAD, directories, methods, large
files sent with sendfile, and revalidation of the in-memory cache."""

from __future__ import annotations

import email.utils
import os
import re
import time

import pytest

from halley_client import Client, connect, sha256
from public_tree import FILES

ALL_METHODS_BUT_GET_HEAD = ["POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE", "BREW"]


@pytest.mark.parametrize(
    "path, content_type",
    [
        ("/index.html", "text/html; charset=utf-8"),
        ("/app.js", "text/javascript; charset=utf-8"),
        ("/style.css", "text/css; charset=utf-8"),
        ("/data.json", "application/json"),
        ("/img.png", "image/png"),
        ("/blob.xyz", "application/octet-stream"),
        ("/noext", "application/octet-stream"),
        ("/LOUD.HTML", "text/html; charset=utf-8"),
        ("/empty.txt", "text/plain; charset=utf-8"),
    ],
)
def test_content_type_and_body(halley, path, content_type):
    r = halley.get(path)
    assert r.status == 200
    assert r.header("content-type") == content_type
    assert r.body == FILES[path.lstrip("/")]
    assert r.header("content-length") == str(len(r.body))


def test_static_headers(halley, public_root):
    r = halley.get("/index.html")
    assert r.status == 200
    assert r.http_version == b"1.1"
    assert r.reason == b"OK"
    # One of each, no duplicates.
    for name in ("date", "content-type", "etag", "last-modified", "cache-control", "content-length"):
        assert len(r.header_all(name)) == 1, f"{name}: {r.header_all(name)}"
    assert r.header("cache-control") == "no-cache"
    assert re.fullmatch(r'"[^"]+"', r.header("etag")), r.header("etag")
    mtime = int(os.stat(os.path.join(public_root, "index.html")).st_mtime)
    assert r.header("last-modified") == email.utils.formatdate(mtime, usegmt=True)
    date = email.utils.parsedate_to_datetime(r.header("date")).timestamp()
    assert abs(date - time.time()) < 5
    assert re.fullmatch(r"[A-Z][a-z]{2}, \d\d [A-Z][a-z]{2} \d{4} \d\d:\d\d:\d\d GMT", r.header("date"))
    # The ETag is stable and differs between files.
    assert halley.get("/index.html").header("etag") == r.header("etag")
    assert halley.get("/app.js").header("etag") != r.header("etag")


def test_root_serves_index(halley):
    r = halley.get("/")
    assert r.status == 200
    assert r.body == FILES["index.html"]
    assert r.header("content-type") == "text/html; charset=utf-8"


def test_directory_with_slash_serves_its_index(halley):
    r = halley.get("/sub/")
    assert r.status == 200
    assert r.body == FILES["sub/index.html"]
    assert r.header("content-type") == "text/html; charset=utf-8"


@pytest.mark.parametrize(
    "target, location",
    [("/sub", "/sub/"), ("/sub/deeper", "/sub/deeper/"), ("/sub?x=1&y=2", "/sub/?x=1&y=2"), ("/emptydir", "/emptydir/")],
)
def test_directory_without_slash_redirects(halley, target, location):
    r = halley.get(target)
    assert r.status == 301
    assert r.header("location") == location
    assert r.body == b""


def test_directory_without_index_is_404(halley):
    assert halley.get("/emptydir/").status == 404
    assert halley.get("/sub/deeper/").status == 404


def test_nested_file_and_encoded_name(halley):
    assert halley.get("/sub/page.html").body == FILES["sub/page.html"]
    assert halley.get("/sub/deeper/leaf.txt").body == FILES["sub/deeper/leaf.txt"]
    assert halley.get("/space%20name.txt").body == FILES["space name.txt"]
    assert halley.get("/caf%C3%A9.txt").body == FILES["caf\u00e9.txt"]
    assert halley.get("/caf%c3%a9.txt").body == FILES["caf\u00e9.txt"]
    assert halley.get("/%6fne.txt").body == FILES["one.txt"]
    # Doubled slashes collapse to the same file.
    assert halley.get("//sub//page.html").body == FILES["sub/page.html"]


def test_query_string_is_ignored_for_files(halley):
    r = halley.get("/one.txt?v=123&cache=bust")
    assert r.status == 200
    assert r.body == FILES["one.txt"]


@pytest.mark.parametrize("target", ["/missing.html", "/sub/missing.txt", "/nodir/x.js", "/one.txt/", "/one.txt/x"])
def test_missing_is_404(halley, target):
    r = halley.get(target)
    assert r.status == 404
    assert r.header("content-length") == str(len(r.body))


@pytest.mark.parametrize("method", ALL_METHODS_BUT_GET_HEAD)
def test_other_methods_are_405(halley, method):
    r = halley.get("/index.html", method=method)
    assert r.status == 405
    assert r.header("allow") == "GET, HEAD"


def test_405_keeps_the_connection(halley):
    with connect(halley.port) as s:
        c = Client(s)
        c.send_request("DELETE", "/index.html")
        assert c.read_response().status == 405
        c.send_request("GET", "/index.html")
        r = c.read_response()
        assert r.status == 200
        assert r.body == FILES["index.html"]


@pytest.mark.parametrize("path", ["/index.html", "/big.bin", "/medium.bin", "/empty.txt", "/missing", "/sub"])
def test_head_matches_get_without_body(halley, path):
    get = halley.get(path)
    with connect(halley.port) as s:
        c = Client(s)
        c.send_request("HEAD", path)
        head = c.read_response()
        assert head.status == get.status
        assert head.body == b""
        for name in ("content-type", "etag", "last-modified", "cache-control", "content-length", "location", "allow"):
            assert head.header_all(name) == get.header_all(name), name
        # No body bytes follow the HEAD response: the next response parses cleanly.
        c.send_request("GET", "/one.txt")
        nxt = c.read_response()
        assert nxt.status == 200 and nxt.body == FILES["one.txt"]


# ---- conditional requests


@pytest.fixture
def index_validators(halley):
    r = halley.get("/index.html")
    return r.header("etag"), r.header("last-modified")


@pytest.mark.parametrize(
    "inm",
    ["{etag}", "*", '"nope", {etag}', '"a","b",{etag}', "W/{etag}", '"x", W/{etag} , "y"'],
)
def test_if_none_match_gives_304(halley, index_validators, inm):
    etag, last_modified = index_validators
    value = inm.format(etag=etag)
    for method in ("GET", "HEAD"):
        with connect(halley.port) as s:
            c = Client(s)
            c.send_request(method, "/index.html", [("If-None-Match", value)])
            r = c.read_response()
            assert r.status == 304, (method, value)
            assert r.body == b""
            assert r.header("etag") == etag
            assert r.header("last-modified") == last_modified
            assert r.header("cache-control") == "no-cache"
            # 304 is bodiless by definition; the connection must stay in sync.
            c.send_request("GET", "/one.txt")
            assert c.read_response().body == FILES["one.txt"]


@pytest.mark.parametrize("inm", ['"nope"', '"nope", "other"', 'W/"nope"'])
def test_if_none_match_mismatch_gives_200(halley, inm):
    r = halley.get("/index.html", [("If-None-Match", inm)])
    assert r.status == 200
    assert r.body == FILES["index.html"]


def test_if_none_match_of_another_file_gives_200(halley):
    other = halley.get("/app.js").header("etag")
    r = halley.get("/index.html", [("If-None-Match", other)])
    assert r.status == 200


def test_if_modified_since(halley, index_validators):
    _, last_modified = index_validators
    lm = email.utils.parsedate_to_datetime(last_modified).timestamp()
    later = email.utils.formatdate(lm + 3600, usegmt=True)
    earlier = email.utils.formatdate(lm - 3600, usegmt=True)
    assert halley.get("/index.html", [("If-Modified-Since", last_modified)]).status == 304
    assert halley.get("/index.html", [("If-Modified-Since", later)]).status == 304
    r = halley.get("/index.html", [("If-Modified-Since", earlier)])
    assert r.status == 200 and r.body == FILES["index.html"]
    # An unparseable date is ignored.
    assert halley.get("/index.html", [("If-Modified-Since", "yesterday")]).status == 200


def test_if_none_match_wins_over_if_modified_since(halley, index_validators):
    etag, last_modified = index_validators
    r = halley.get("/index.html", [("If-None-Match", '"nope"'), ("If-Modified-Since", last_modified)])
    assert r.status == 200
    r = halley.get("/index.html", [("If-None-Match", etag), ("If-Modified-Since", "Thu, 01 Jan 1970 00:00:00 GMT")])
    assert r.status == 304


# ---- large files


@pytest.mark.parametrize("path", ["/big.bin", "/medium.bin"])
def test_large_file_arrives_intact(halley, path):
    r = halley.get(path, timeout=15)
    data = FILES[path.lstrip("/")]
    assert r.status == 200
    assert r.header("content-length") == str(len(data))
    assert r.header("content-type") == "application/octet-stream"
    assert r.header("etag")
    assert len(r.body) == len(data)
    assert sha256(r.body) == sha256(data)


def test_large_files_back_to_back_on_one_connection(halley):
    with connect(halley.port, timeout=15) as s:
        c = Client(s)
        for path in ("/big.bin", "/one.txt", "/big.bin", "/medium.bin"):
            c.send_request("GET", path)
            r = c.read_response()
            assert r.status == 200
            assert sha256(r.body) == sha256(FILES[path.lstrip("/")]), path


def test_large_file_304(halley):
    etag = halley.get("/big.bin", method="HEAD").header("etag")
    r = halley.get("/big.bin", [("If-None-Match", etag)])
    assert r.status == 304 and r.body == b""


# ---- the cache sees changes on disk
#
# Each loop revalidates a cached file at most once a second, so one second after a change
# every loop must serve the new state. Ten fresh connections reach both loops.

REVALIDATE = 1.2


def _bump_mtime(path):
    st = os.stat(path)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 2_000_000_000))


def test_changes_on_disk_are_seen_within_a_second(halley, public_root):
    """A changed file (new ETag), a deleted file and a file grown past the in-memory limit
    (then sent with sendfile): all at once, so that one wait covers them."""
    mutable = os.path.join(public_root, "mutable.txt")
    transient = os.path.join(public_root, "transient.txt")
    grows = os.path.join(public_root, "grows.bin")
    with open(transient, "wb") as f:
        f.write(b"HERE")
    with open(grows, "wb") as f:
        f.write(b"small")
    # Cached in every loop now.
    olds = [halley.get("/mutable.txt") for _ in range(10)]
    assert [o.body for o in olds] == [FILES["mutable.txt"]] * 10
    assert [halley.get("/transient.txt").status for _ in range(10)] == [200] * 10
    assert [halley.get("/grows.bin").body for _ in range(10)] == [b"small"] * 10
    old = olds[0]

    new_content = b"VERSION-TWO, LONGER THAN BEFORE\n"
    with open(mutable, "wb") as f:
        f.write(new_content)
    _bump_mtime(mutable)
    os.unlink(transient)
    large = os.urandom(1536 * 1024)
    with open(grows, "wb") as f:
        f.write(large)
    _bump_mtime(grows)
    time.sleep(REVALIDATE)

    news = [halley.get("/mutable.txt") for _ in range(10)]
    assert [n.body for n in news] == [new_content] * 10
    r = news[0]
    assert {n.header("etag") for n in news} == {r.header("etag")}
    assert r.header("etag") != old.header("etag")
    assert r.header("content-length") == str(len(new_content))
    assert r.header("last-modified") != old.header("last-modified")
    # The old validator no longer matches; the new one does.
    assert halley.get("/mutable.txt", [("If-None-Match", old.header("etag"))]).status == 200
    assert halley.get("/mutable.txt", [("If-None-Match", r.header("etag"))]).status == 304

    assert [halley.get("/transient.txt").status for _ in range(10)] == [404] * 10
    for _ in range(10):
        assert sha256(halley.get("/grows.bin", timeout=10).body) == sha256(large)
    os.unlink(grows)
    with open(mutable, "wb") as f:
        f.write(FILES["mutable.txt"])


def test_scripts_are_readable_cross_origin(halley):
    # halley.js / halley.mjs are loaded by pages of other origins; a module script is fetched
    # in CORS mode and needs Access-Control-Allow-Origin.
    assert halley.get("/app.js").header("access-control-allow-origin") == "*"
    assert halley.get("/index.html").header("access-control-allow-origin") is None
