"""The public tree the tests serve, and small shared checks."""

from __future__ import annotations

import os

from halley_client import Halley, simple_get

OUTSIDE_MARKER = b"OUTSIDE-SECRET-7c1e2f0a9b"
DOTFILE_MARKER = b"DOTFILE-SECRET-55aa11"

# Files of the public tree: path -> bytes.
FILES = {
    "index.html": b"<!doctype html><title>Halley</title><p>INDEX-PAGE</p>\n",
    "app.js": b"console.log('APP-JS');\n",
    "style.css": b"body { color: #123456; } /* STYLE-CSS */\n",
    "data.json": b'{"data": "DATA-JSON"}\n',
    "img.png": b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4,
    "blob.xyz": b"UNKNOWN-EXTENSION\x00\x01\x02",
    "noext": b"NO-EXTENSION",
    "LOUD.HTML": b"<p>UPPERCASE-EXTENSION</p>",
    "empty.txt": b"",
    "one.txt": b"FIRST FILE\n",
    "two.txt": b"SECOND FILE, A LITTLE LONGER\n",
    "three.txt": b"THIRD\n",
    "four.txt": b"FOURTH FILE " * 50,
    "mutable.txt": b"VERSION-ONE\n",
    "space name.txt": b"SPACE-IN-NAME",
    "caf\u00e9.txt": b"UTF8-NAME",
    "sub/index.html": b"<p>SUB-INDEX</p>\n",
    "sub/page.html": b"<p>SUB-PAGE</p>\n",
    "sub/deeper/leaf.txt": b"DEEP-LEAF",
    "medium.bin": os.urandom(200 * 1024),  # cached in memory, above the cork copy threshold
    "big.bin": os.urandom(5 * 1024 * 1024 + 12345),  # > 1 MiB: sendfile
    "huge.bin": os.urandom(20 * 1024 * 1024),  # slow downloads (shutdown, keep-alive)
    ".secret": DOTFILE_MARKER,
    ".hidden/inside.txt": DOTFILE_MARKER,
}


def build_public(tmp) -> str:
    """Creates tmp/public (served) and tmp/outside (not served); returns the public root."""
    root = os.path.join(tmp, "public")
    outside = os.path.join(tmp, "outside")
    os.makedirs(outside, exist_ok=True)
    with open(os.path.join(outside, "secret.txt"), "wb") as f:
        f.write(OUTSIDE_MARKER)
    for rel, data in FILES.items():
        p = os.path.join(root, rel)
        os.makedirs(os.path.dirname(p), exist_ok=True)
        with open(p, "wb") as f:
            f.write(data)
    os.makedirs(os.path.join(root, "emptydir"), exist_ok=True)
    # Symbolic links: out of the root (file, directory, /etc/passwd) and inside it.
    os.symlink(os.path.join(outside, "secret.txt"), os.path.join(root, "link_out.txt"))
    os.symlink(outside, os.path.join(root, "link_out_dir"))
    os.symlink("/etc/passwd", os.path.join(root, "passwd"))
    os.symlink(os.path.join(root, "index.html"), os.path.join(root, "link_in.html"))
    os.symlink("sub", os.path.join(root, "link_sub"))
    return root


def assert_serving(h: Halley):
    """The server still answers a plain GET on a new connection."""
    r = simple_get(h.port, "/one.txt")
    assert r.status == 200
    assert r.body == FILES["one.txt"]
