#!/usr/bin/env python3
"""Groups sanitizer reports (AddressSanitizer, ThreadSanitizer) by kind and by the first frames
in Halley's own sources, so a run with hundreds of reports reads as a short list of sites.

    Scripts/sanitizers/summary.py LOG...    (- reads standard input; exit status 1 when any report is found)
"""
import collections
import re
import subprocess
import sys

HEAD = re.compile(r"(ERROR: AddressSanitizer: [\w-]+|WARNING: ThreadSanitizer: [\w ()-]+?(?= \(pid|$)|ERROR: LeakSanitizer: [\w ]+|runtime error: .*)")
FRAME = re.compile(r"^\s+#\d+ 0x[0-9a-f]+ in (.+?) (/\S+?/Sources/(\S+?))(?::\d+(?::\d+)?)?$")


def demangle(text):
    try:
        return subprocess.run(["swift", "demangle", "--simplified"], input=text, capture_output=True, text=True,
                              timeout=60).stdout or text
    except Exception:
        return text


def reports(text):
    cur = None
    for line in text.splitlines():
        m = HEAD.search(line)
        if m:
            if cur:
                yield cur
            cur = [m.group(1).strip(), []]
            continue
        if cur is None:
            continue
        f = FRAME.match(line)
        if f and len(cur[1]) < 3:
            cur[1].append(f"{f.group(1)} ({f.group(3)})")
        elif line.strip() == "" and cur[1]:
            yield cur
            cur = None
    if cur:
        yield cur


def main(paths):
    counts = collections.Counter()
    for p in paths:
        try:
            text = sys.stdin.read() if p == "-" else open(p, errors="replace").read()
        except OSError:
            continue
        for kind, frames in reports(demangle(text)):
            counts[(kind, tuple(frames))] += 1
    for (kind, frames), n in counts.most_common():
        print(f"{n:5d} × {kind}")
        for f in frames:
            print(f"          {f}")
    return 1 if counts else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
