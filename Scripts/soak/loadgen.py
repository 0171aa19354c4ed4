#!/usr/bin/env python3
"""The soak's load: N clients of every transport with churn, publishes at a fixed rate, in one
asyncio process (Scripts/soak.sh pins it to its own core). Run by `soak.py`; alone:

    loadgen.py --port P --duration SECONDS [--connections 10000] [--rate 50] --out DIR

Every client lives in a slot (`RUNNERS`); when it goes (its lifetime is drawn from an
exponential distribution, mean `--lifetime`), a new one takes the slot: that is the churn.
The mix (share of the N slots): see `MIX`; plus `SLOW_KINDS`, the few slow consumers.

Phases: ramp (slots start at `--ramp-rate` a second), load until `--duration`, then stop: no
more publishes, churn or resumes; `--drain` seconds for what is in flight; every resumable
session checks it got every offset published on its channels; everyone closes.

Writes `DIR/loadgen-progress.json` every 5 s (what is open, the counts) and
`DIR/loadgen-result.json` at the end (counts, errors with samples, loss samples, loop lag).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import random
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import clients  # noqa: E402
import session  # noqa: E402
from aio_http import Conn  # noqa: E402
from clients import HOT, SLOW, TOKEN, WARM, Ctx  # noqa: E402
from tracking import C, ERROR_SAMPLES, ERRORS, LOSS_SAMPLES, OPEN, PUBLISHED, error  # noqa: E402

RUNNERS = {
    "ws": clients.run_plain_ws, "presence": clients.run_plain_ws, "chat": clients.run_plain_ws,
    "ws-resumable": session.run_resumable, "sse": session.run_resumable, "poll": session.run_resumable,
    "xhr-streaming": clients.run_xhr_streaming, "xhr-polling": clients.run_xhr_polling,
    "slow-ws": clients.run_slow_ws, "slow-resumable": clients.run_slow_ws, "slow-xhr": clients.run_slow_xhr,
}
MIX = (("ws", 0.36), ("presence", 0.03), ("chat", 0.01), ("ws-resumable", 0.25), ("sse", 0.12), ("poll", 0.08),
       ("xhr-streaming", 0.09), ("xhr-polling", 0.06))
SLOW_KINDS = ("slow-ws", "slow-ws", "slow-resumable", "slow-resumable", "slow-xhr")
LAG = {"max": 0.0, "over_1s": 0, "over_5s": 0}


def plan(n, only=None):
    """Slots by kind: the shares of MIX rounded, the rest plain WebSocket, and the slow ones
    (`only`: N of one kind, to look at one client at a time)."""
    if only:
        return [only] * n
    kinds = []
    for kind, share in MIX:
        kinds += [kind] * int(n * share)
    kinds += ["ws"] * (n - len(kinds))
    return kinds + list(SLOW_KINDS)


async def slot(ctx, kind, delay):
    await asyncio.sleep(delay)
    state = {}
    while not ctx.stopping.is_set():
        try:
            await RUNNERS[kind](ctx, state, kind)
        except asyncio.CancelledError:
            raise
        except Exception as e:  # noqa: BLE001 - every failed client is counted and shown
            C["client failures"] += 1
            error(f"{kind}: {type(e).__name__}", repr(e))
            await asyncio.sleep(1)
        if ctx.stopping.is_set():
            break
        await asyncio.sleep(random.uniform(0.05, 1.0))


def publish_body(n):
    """Mostly warm and hot channels; `soak-slow` gets big messages (what slow consumers drown
    in); some publishes go to two channels; some are binary."""
    r = random.random()
    if r < 0.08:
        chans, size = [SLOW], 8000
    elif r < 0.54:
        chans, size = [random.choice(HOT)], random.choice((40, 200, 600, 1500))
    else:
        chans, size = [random.choice(WARM)], random.choice((40, 200, 600, 3000))
    if chans[0] != SLOW and random.random() < 0.05:
        chans.append(random.choice(WARM))
    body = {"event": "soak", "channels": chans} if len(chans) > 1 else {"event": "soak", "channel": chans[0]}
    if random.random() < 0.03:
        body["data_base64"] = __import__("base64").b64encode(os.urandom(size)).decode()
    else:
        body["data"] = json.dumps({"n": n, "pad": "x" * size})
    return body


async def publisher(ctx, rate):
    conn = Conn(ctx.port)
    t0 = time.monotonic()
    n = 0
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {TOKEN}"}
    while not ctx.stopping.is_set():
        delay = t0 + n / rate - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        elif delay < -1:
            C["publishes late by over 1 s"] += 1
        n += 1
        try:
            status, _, data = await conn.request("POST", "/publish", headers, json.dumps(publish_body(n)).encode(), timeout=10)
        except Exception as e:  # noqa: BLE001
            error("publish failed", repr(e))
            conn.abort()
            conn = Conn(ctx.port)
            continue
        if status not in (201, 202):
            error(f"publish answered {status}", data[:200].decode("utf-8", "replace"))
            continue
        t = time.monotonic()
        for ch, v in json.loads(data)["channels"].items():
            PUBLISHED.add(ch, v["epoch"], v["offset"], t)
            C["published messages"] += 1
        C["publishes"] += 1
    conn.close()


async def lag_monitor():
    step = 0.25
    while True:
        t = time.monotonic()
        await asyncio.sleep(step)
        lag = time.monotonic() - t - step
        LAG["max"] = max(LAG["max"], lag)
        if lag > 1:
            LAG["over_1s"] += 1
        if lag > 5:
            LAG["over_5s"] += 1


async def collector():
    """A full collection every 30 s: websockets connections and finished tasks hold reference
    cycles, which the raised thresholds (main) would otherwise keep for minutes."""
    while True:
        await asyncio.sleep(30)
        t = time.monotonic()
        gc.collect()
        LAG["gc_max"] = max(LAG.get("gc_max", 0.0), time.monotonic() - t)


def snapshot(t0, phase):
    return {"t": round(time.monotonic() - t0, 1), "phase": phase, "open": dict(OPEN), "open_total": sum(OPEN.values()),
            "counts": dict(C), "errors": sum(ERRORS.values()), "lag": dict(LAG)}


def write_json(path, obj):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=1, sort_keys=True)
    os.replace(tmp, path)


async def progress(out, t0, phase):
    while True:
        write_json(os.path.join(out, "loadgen-progress.json"), snapshot(t0, phase["now"]))
        await asyncio.sleep(5)


async def amain(args):
    t0 = time.monotonic()
    ctx = Ctx(args.port, args.lifetime, (args.resume_min, args.resume_max), args.deflate)
    phase = {"now": "load"}
    kinds = plan(args.connections, args.only)
    random.shuffle(kinds)
    print(f"loadgen: {len(kinds)} clients: " + ", ".join(f"{k} {kinds.count(k)}" for k in dict.fromkeys(sorted(kinds))),
          flush=True)
    helpers = [asyncio.create_task(lag_monitor()), asyncio.create_task(progress(args.out, t0, phase)),
               asyncio.create_task(collector())]
    slots = [asyncio.create_task(slot(ctx, k, i / args.ramp_rate), name=k) for i, k in enumerate(kinds)]
    pub = asyncio.create_task(publisher(ctx, args.rate))
    await asyncio.sleep(args.duration)

    phase["now"] = "stopping"
    print(f"loadgen: {time.monotonic() - t0:.0f} s: stopping (open: {sum(OPEN.values())})", flush=True)
    ctx.stop()
    try:
        async with asyncio.timeout(15):
            await pub
    except TimeoutError:
        pub.cancel()
    await asyncio.sleep(args.drain)
    phase["now"] = "checking"
    ctx.final.set()
    await asyncio.sleep(2)
    phase["now"] = "closing"
    ctx.close_all.set()
    print(f"loadgen: {time.monotonic() - t0:.0f} s: closing (open: {sum(OPEN.values())})", flush=True)
    done, pending = await asyncio.wait(slots, timeout=3)
    if pending and os.environ.get("SOAK_DEBUG"):
        print("pending after 3 s:", sorted(t.get_name() for t in pending), flush=True)
        for t in list(pending)[:3]:
            c = t.get_coro()
            chain = []
            while c is not None:
                f = getattr(c, "cr_frame", None) or getattr(c, "ag_frame", None) or getattr(c, "gi_frame", None)
                chain.append(f"{f.f_code.co_name}:{f.f_lineno}" if f else repr(c)[:80])
                c = getattr(c, "cr_await", None) or getattr(c, "ag_await", None) or getattr(c, "gi_yieldfrom", None)
            print("  " + " -> ".join(chain), flush=True)
    done, pending = await asyncio.wait(slots, timeout=27)
    C["slots not finished 30 s after closing"] = len(pending)
    for t in pending:
        t.cancel()
    await asyncio.sleep(0.5)
    ctx.pool.close()
    for h in helpers:
        h.cancel()
    result = snapshot(t0, "done")
    result.update(errors=dict(ERRORS), error_samples=ERROR_SAMPLES, loss_samples=LOSS_SAMPLES,
                  plan={k: kinds.count(k) for k in dict.fromkeys(kinds)})
    write_json(os.path.join(args.out, "loadgen-result.json"), result)
    print(f"loadgen: done in {time.monotonic() - t0:.0f} s", flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--duration", type=float, required=True, help="seconds of load")
    ap.add_argument("--connections", type=int, default=10000)
    ap.add_argument("--rate", type=float, default=50, help="publishes a second")
    ap.add_argument("--lifetime", type=float, default=90, help="mean seconds a client lives")
    ap.add_argument("--resume-min", type=float, default=20)
    ap.add_argument("--resume-max", type=float, default=60)
    ap.add_argument("--ramp-rate", type=float, default=400, help="clients started a second at the start")
    ap.add_argument("--deflate", type=float, default=0.1, help="share of WebSockets offering permessage-deflate")
    ap.add_argument("--drain", type=float, default=8)
    ap.add_argument("--only", choices=sorted(RUNNERS), help="every client of this kind (for diagnosis)")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    gc.set_threshold(50000, 20, 50)  # fewer full collections over 10,000 clients' objects
    asyncio.run(amain(args))


if __name__ == "__main__":
    main()
