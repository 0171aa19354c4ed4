"""The soak's clients, one coroutine each, thousands in one asyncio process.

Each `run_*` coroutine is one client's life: it opens its session, does what its kind does
until its lifetime is up (or the run stops), then goes away in one of the ways real clients go
(a WebSocket close handshake, a bare FIN, a TCP reset). `loadgen.py` runs a slot per client
and starts a new client in the slot when one ends: that is the churn.

Kinds:
- `ws`: a Pusher WebSocket session (pusher-js over `/app/{key}`), public channels.
- `presence`: the same, joining and leaving presence rooms (signed as an app backend signs).
- `chat`: the same on a private channel, sending client events.
- `ws-resumable`, `sse`, `poll`: a resumable Halley session starting on that transport; it
  drops its transport now and then and resumes (session id + token + last seq), half the
  time on another transport (a switch). Tracked by `tracking.Resumable`.
- `xhr-streaming`, `xhr-polling`: pusher-js's HTTP fallbacks (SockJS dialect).
- `slow-*`: slow consumers: they subscribe to the busy `soak-slow` channel with a 4 KiB
  receive buffer, read for a few seconds, then stop reading; the hub must cut them (4100)
  without harm to anyone else.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import itertools
import json
import os
import random
import socket
import sys
import time

from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import ConnectionClosed

import aio_http
from aio_http import Conn, HTTPError
from tracking import C, OPEN, Plain, Resumable, error

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "Tests", "integration"))
import pusher_xhr  # noqa: E402  (pusher-js's SockJS frames and session names)
from hub_client import decode_binary_frame  # noqa: E402

HOST = "127.0.0.1"
APP_ID, KEY, SECRET, TOKEN = "7", "soak-key", "soak-secret", "soak-token"
SLOW = "soak-slow"
HOT = [f"soak-hot-{i}" for i in range(8)]
WARM = [f"soak-{i}" for i in range(240)]
ROOMS = [f"presence-room-{i}" for i in range(30)]
CHATS = [f"private-chat-{i}" for i in range(20)]
HOT_SHARE = 0.06  # clients that also take a busy channel
TAIL_MARGIN = 15.0  # seconds: what a session must have seen when it ends
WS_QUERY = "protocol=7&client=js&version=8.4.0&flash=false"

_n = itertools.count()
_background: set = set()


def spawn(coro):
    """A task nobody awaits, kept referenced until it is done (asyncio holds only weak ones)."""
    t = asyncio.create_task(coro)
    _background.add(t)
    t.add_done_callback(_background.discard)
    return t


class Ctx:
    """What every client shares: the hub's port, the run's phases, the send pool."""

    def __init__(self, port, lifetime, resume_every, deflate):
        self.port = port
        self.lifetime = lifetime  # mean seconds a client lives (exponential)
        self.resume_every = resume_every  # (lo, hi) seconds between a session's resumes
        self.deflate = deflate  # share of WebSockets offering permessage-deflate
        self.pool = aio_http.Pool(port, 24)
        self.stopping = asyncio.Event()  # no more churn, resumes or publishes
        self.final = asyncio.Event()  # publishes are all delivered: check what arrived
        self.close_all = asyncio.Event()  # everyone goes
        self.lives: set = set()

    def life(self):
        lf = Life(self)
        if self.stopping.is_set():
            lf.wake.set()
        return lf

    def stop(self):
        self.stopping.set()
        for lf in list(self.lives):
            lf.wake.set()

    def lifetime_draw(self):
        return min(max(random.expovariate(1.0 / self.lifetime), 5.0), 5 * self.lifetime)


class Life:
    """A client's sleep, cut short when the run stops or its transport dies."""

    def __init__(self, ctx):
        self.ctx = ctx
        self.wake = asyncio.Event()
        ctx.lives.add(self)

    async def sleep(self, seconds) -> bool:
        """True when woken before `seconds`."""
        if self.wake.is_set():
            return True
        if seconds <= 0:
            return False
        try:
            async with asyncio.timeout(seconds):
                await self.wake.wait()
            return True
        except TimeoutError:
            return False

    def done(self):
        self.ctx.lives.discard(self)


def sign(text):
    return hmac.new(SECRET.encode(), text.encode(), hashlib.sha256).hexdigest()


def auth(socket_id, channel, channel_data=None):
    """What an app backend answers pusher-js's auth request with (docs/PROTOCOL.md)."""
    text = f"{socket_id}:{channel}" + (f":{channel_data}" if channel_data else "")
    return f"{KEY}:{sign(text)}"


def pick_channels():
    chans = random.sample(WARM, 2)
    if random.random() < HOT_SHARE:
        chans.append(random.choice(HOT))
    return chans


def subscribe_msg(ch, since=None, **extra):
    data = {"channel": ch, **extra}
    if since is not None:
        data["halley:since"] = since
    return {"event": "pusher:subscribe", "data": data}


def decode(raw):
    if isinstance(raw, bytes):
        header, _payload = decode_binary_frame(raw)
        C["binary frames"] += 1
        return header
    return json.loads(raw)


def note_error_event(kind, m):
    ev = m.get("event")
    if ev == "pusher:error":
        d = m.get("data")
        d = json.loads(d) if isinstance(d, str) else (d or {})
        error(f"{kind}: pusher:error {d.get('code')}", json.dumps(d)[:200])
    elif ev == "pusher:subscription_error":
        error(f"{kind}: subscription_error {m.get('channel', '')[:14]}", str(m.get("data"))[:200])


async def open_ws(ctx, query, rcvbuf=None, deflate=None):
    kw = dict(compression="deflate" if (random.random() < ctx.deflate if deflate is None else deflate) else None,
              ping_interval=None, max_size=None, open_timeout=30, close_timeout=3, proxy=None,
              user_agent_header=None)
    if rcvbuf:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.setblocking(False)
        try:
            async with asyncio.timeout(30):
                await asyncio.get_running_loop().sock_connect(sock, (HOST, ctx.port))
        except BaseException:
            sock.close()
            raise
        kw["sock"] = sock
    ws = await ws_connect(f"ws://{HOST}:{ctx.port}/app/{KEY}?{query}", **kw)
    if kw["compression"]:
        C["websockets with permessage-deflate"] += 1
    return ws


async def ws_established(ws, kind):
    async with asyncio.timeout(30):
        m = decode(await ws.recv())
    if m.get("event") != "pusher:connection_established":
        note_error_event(kind, m)
        raise HTTPError(f"not established: {str(m)[:200]}")
    return json.loads(m["data"])


async def end_ws(ws, style=None):
    """Goes the way a client goes: close handshake, a FIN without one, or a reset."""
    style = style or random.choices(("close", "fin", "reset"), (6, 3, 1))[0]
    C[f"ends: {style}"] += 1
    if style == "close":
        try:
            async with asyncio.timeout(5):
                await ws.close()
        except Exception:  # noqa: BLE001
            ws.transport.abort()
    elif style == "fin":
        ws.transport.close()
    else:
        aio_http.reset(ws.transport)


def closed_code(e):
    return e.rcvd.code if e.rcvd is not None else None


# ---- plain Pusher WebSocket sessions: ws, presence, chat -------------------------------------

async def run_plain_ws(ctx, slot, kind):
    ws = await open_ws(ctx, WS_QUERY)
    OPEN[kind] += 1
    C[f"opened {kind}"] += 1
    lf = ctx.life()
    track = Plain(kind, slot.get("last"))
    reader = None
    state = {"closing": False, "joined": None}
    try:
        sid = (await ws_established(ws, kind))["socket_id"]
        for ch in pick_channels():
            await ws.send(json.dumps(subscribe_msg(ch)))

        async def read():
            try:
                async for raw in ws:
                    m = decode(raw)
                    ev = m.get("event", "")
                    C["plain messages"] += 1
                    if ev.startswith("client-"):
                        C["client events received"] += 1
                    elif ev in ("pusher_internal:member_added", "pusher_internal:member_removed"):
                        C[ev.replace("pusher_internal:", "presence ")] += 1
                    elif ev == "pusher_internal:subscription_succeeded" and m.get("channel", "").startswith("presence-"):
                        C["presence joins"] += 1
                    elif ev in ("pusher:error", "pusher:subscription_error"):
                        note_error_event(kind, m)
                    track.on(m)
            except ConnectionClosed as e:
                if not state["closing"]:
                    error(f"{kind}: closed by the hub ({closed_code(e)})", str(e))
            finally:
                lf.wake.set()

        reader = asyncio.create_task(read())
        end = time.monotonic() + ctx.lifetime_draw()
        if kind == "presence":
            user = f"user-{random.randrange(250)}"  # some users have two connections
            info = json.dumps({"user_id": user, "user_info": {"name": user}})
            while not ctx.stopping.is_set() and not reader.done() and time.monotonic() < end:
                room = random.choice(ROOMS)
                await ws.send(json.dumps(subscribe_msg(room, auth=auth(sid, room, info), channel_data=info)))
                if await lf.sleep(min(random.uniform(5, 30), end - time.monotonic())):
                    break
                await ws.send(json.dumps({"event": "pusher:unsubscribe", "data": {"channel": room}}))
                C["presence leaves"] += 1
                if await lf.sleep(min(random.uniform(1, 5), end - time.monotonic())):
                    break
        elif kind == "chat":
            ch = random.choice(CHATS)
            await ws.send(json.dumps(subscribe_msg(ch, auth=auth(sid, ch))))
            while not ctx.stopping.is_set() and not reader.done() and time.monotonic() < end:
                if await lf.sleep(min(random.uniform(1, 4), end - time.monotonic())):
                    break
                await ws.send(json.dumps({"event": "client-typing", "channel": ch, "data": {"n": next(_n), "t": time.time()}}))
                C["client events sent"] += 1
        else:
            await lf.sleep(end - time.monotonic())
        if ctx.stopping.is_set() and not reader.done():
            await ctx.close_all.wait()
    finally:
        state["closing"] = True
        lf.done()
        slot["last"] = track.last_seen()
        if reader is not None:
            reader.cancel()
        await end_ws(ws, "fin" if ctx.close_all.is_set() else None)
        OPEN[kind] -= 1


# ---- pusher-js HTTP fallbacks: xhr-streaming, xhr-polling ------------------------------------

def xhr_url(base, what, receive=True):
    q = f"protocol=7&client=js&version={pusher_xhr.VERSION}&" if receive else ""
    return f"{base}/{what}?{q}t={int(time.time() * 1000)}&n={next(_n)}"


async def xhr_send(ctx, base, kind, msgs):
    body = pusher_xhr.compact([pusher_xhr.compact(m) for m in msgs]).encode()
    status, _, data = await ctx.pool.request("POST", xhr_url(base, "xhr_send", False),
                                             {"Content-Type": "application/json"}, body, timeout=30)
    C["xhr sends"] += 1
    if status != 204:
        error(f"{kind}: xhr_send answered {status}", data[:200].decode("utf-8", "replace"))


def xhr_messages(ctx, kind, frame, track, state):
    """One SockJS frame; returns the close code of a `c` frame, else None."""
    if frame[0] == "h":
        C["xhr heartbeats"] += 1
        return None
    if frame[0] == "o":
        return None
    if frame[0] == "c":
        return frame[1]
    for m in frame[1]:
        ev = m.get("event", "")
        if ev == "pusher:connection_established":
            state["established"] = True
            continue
        if ev in ("pusher:error", "pusher:subscription_error"):
            note_error_event(kind, m)
        C["xhr messages"] += 1
        track.on(m)
    return None


async def run_xhr_streaming(ctx, slot, kind, slow=False):
    base = f"/pusher/app/{KEY}/{pusher_xhr.session_path()}"
    track = Plain(kind, slot.get("last"), slow=slow)
    state = {"established": False, "closing": False}
    gate = asyncio.Event()  # a slow consumer's reader waits here while it "stops reading"
    gate.set()
    lf = ctx.life()
    conn = Conn(ctx.port)
    await conn.open(30, rcvbuf=4096 if slow else None)
    OPEN[kind] += 1
    C[f"opened {kind}"] += 1
    reader = None
    try:
        status, _, body = await conn.start("POST", xhr_url(base, "xhr_streaming"), {"Content-Type": "application/json"}, timeout=30)
        if status != 200:
            raise HTTPError(f"xhr_streaming answered {status}")

        async def read(body):
            nonlocal conn
            try:
                while True:
                    if not gate.is_set():
                        await gate.wait()
                    line = await body.readline()
                    if line is None:
                        if not state["closing"]:
                            error(f"{kind}: stream ended without c")
                        return
                    if len(line) == 2048 and line == b"h" * 2048:
                        continue  # the prelude
                    f = pusher_xhr.parse_frame(line)
                    code = xhr_messages(ctx, kind, f, track, state)
                    if f[0] == "h" and not slow:
                        spawn(ping(ctx, base, kind))  # pusher-js answers every h with []
                    if code is not None:
                        C[f"{kind} cut by the hub: {code}"] += 1
                        if not slow and not state["closing"]:
                            error(f"{kind}: c[{code}]", str(f))
                        return
                    if body.total > pusher_xhr.MAX_BUFFER_LENGTH and not body.buf:
                        # pusher-js's rotation: abort at a line boundary, post a new stream.
                        conn.abort()
                        conn = Conn(ctx.port)
                        status, _, body = await conn.start("POST", xhr_url(base, "xhr_streaming"),
                                                           {"Content-Type": "application/json"}, timeout=30)
                        C["xhr stream rotations"] += 1
                        if status != 200:
                            error(f"{kind}: rotated stream answered {status}")
                            return
            except (HTTPError, ConnectionError, asyncio.IncompleteReadError) as e:
                if not state["closing"]:
                    error(f"{kind}: stream failed", repr(e))
            finally:
                lf.wake.set()

        reader = asyncio.create_task(read(body))
        async with asyncio.timeout(30):
            while not state["established"] and not reader.done():
                await asyncio.sleep(0.05)
        chans = [SLOW, random.choice(HOT)] if slow else pick_channels()
        await xhr_send(ctx, base, kind, [{"event": "pusher:subscribe", "data": {"auth": "", "channel": ch}} for ch in chans])
        if slow:
            await slow_stall(ctx, lf, gate.clear, kind)
            if ctx.stopping.is_set():
                await ctx.close_all.wait()
                return
            gate.set()  # what came before the cut is still in the buffers: read it, then `c`
            try:
                async with asyncio.timeout(30):
                    await asyncio.wait({reader})
            except TimeoutError:
                pass
            if not reader.done():
                C[f"{kind} cut by the hub: still open"] += 1
            return
        await lf.sleep(ctx.lifetime_draw())
        if ctx.stopping.is_set() and not reader.done():
            await ctx.close_all.wait()
    finally:
        state["closing"] = True
        lf.done()
        slot["last"] = track.last_seen()
        if reader is not None:
            reader.cancel()
        conn.abort()  # pusher-js: xhr.abort()
        OPEN[kind] -= 1


async def ping(ctx, base, kind):
    try:
        await xhr_send(ctx, base, kind, [])
    except Exception as e:  # noqa: BLE001
        error(f"{kind}: ping failed", repr(e))


async def run_xhr_polling(ctx, slot, kind):
    base = f"/pusher/app/{KEY}/{pusher_xhr.session_path()}"
    track = Plain(kind, slot.get("last"))
    state = {"established": False, "closing": False}
    lf = ctx.life()
    conn = Conn(ctx.port)
    OPEN[kind] += 1
    C[f"opened {kind}"] += 1

    async def poll_loop():
        subscribed = False
        try:
            while True:
                status, _, body = await conn.request("POST", xhr_url(base, "xhr"), {"Content-Type": "application/json"}, timeout=60)
                C["xhr polls"] += 1
                if status != 200:
                    error(f"{kind}: xhr answered {status}", body[:200].decode("utf-8", "replace"))
                    return
                for f in pusher_xhr.frames_of(body):
                    code = xhr_messages(ctx, kind, f, track, state)
                    if code is not None:
                        C[f"{kind} closed by the hub: {code}"] += 1
                        if not state["closing"]:
                            error(f"{kind}: c[{code}]", str(f))
                        return
                if state["established"] and not subscribed:
                    subscribed = True
                    await xhr_send(ctx, base, kind, [{"event": "pusher:subscribe", "data": {"auth": "", "channel": ch}}
                                                     for ch in pick_channels()])
        except (HTTPError, ConnectionError, asyncio.IncompleteReadError, TimeoutError) as e:
            if not state["closing"]:
                error(f"{kind}: poll failed", repr(e))
        finally:
            lf.wake.set()

    reader = asyncio.create_task(poll_loop())
    try:
        await lf.sleep(ctx.lifetime_draw())
        if ctx.stopping.is_set() and not reader.done():
            await ctx.close_all.wait()
    finally:
        state["closing"] = True
        lf.done()
        slot["last"] = track.last_seen()
        reader.cancel()
        conn.abort()
        OPEN[kind] -= 1


# ---- slow consumers ---------------------------------------------------------------------------

async def slow_stall(ctx, lf, pause, kind):
    """Reads for a few seconds, stops reading (`pause`: the socket's 4 KiB receive buffer
    fills, then the hub's buffers), and waits: the hub should cut the session (4100)."""
    await lf.sleep(random.uniform(3, 8))
    pause()
    C[f"{kind} stalls"] += 1
    await lf.sleep(random.uniform(30, 60))


async def run_slow_ws(ctx, slot, kind):
    resumable = kind == "slow-resumable"
    ws = await open_ws(ctx, WS_QUERY + ("&halley=1" if resumable else ""), rcvbuf=4096, deflate=False)
    OPEN[kind] += 1
    C[f"opened {kind}"] += 1
    lf = ctx.life()
    track = Resumable(kind, slow=True) if resumable else Plain(kind, slow=True)
    try:
        d = await ws_established(ws, kind)
        for ch in (SLOW, random.choice(HOT)):
            await ws.send(json.dumps(subscribe_msg(ch)))
            if resumable:
                track.chans[ch] = [None, None]

        async def read():
            try:
                async for raw in ws:  # never acknowledged: the resumable one's buffer fills
                    track.on(decode(raw))
                    C["slow messages"] += 1
            except ConnectionClosed:
                pass

        reader = asyncio.create_task(read())
        await slow_stall(ctx, lf, reader.cancel, kind)
        if ctx.stopping.is_set():
            await ctx.close_all.wait()
            return
        code = None
        try:  # what came before the cut is still in the buffers: read it all, then the close
            async with asyncio.timeout(30):
                async for raw in ws:
                    track.on(decode(raw))
        except ConnectionClosed as e:
            code = closed_code(e)
        except TimeoutError:
            code = "still open"
        C[f"{kind} cut by the hub: {code}"] += 1
        if resumable and code != "still open":
            # The session ended: a resume must say why (docs/PROTOCOL.md, "Resuming").
            w2 = await open_ws(ctx, WS_QUERY + f"&halley=1&session={d['socket_id']}&last_seq={track.last_seq}", deflate=False)
            await w2.send(json.dumps({"event": "halley:resume", "data": {"token": d["halley:token"]}}))
            d2 = await ws_established(w2, kind)
            C[f"{kind} resume after the cut: {d2.get('halley:reason') if not d2.get('halley:resumed') else 'resumed'}"] += 1
            await end_ws(w2, "close")
    finally:
        lf.done()
        await end_ws(ws, "reset")
        OPEN[kind] -= 1


async def run_slow_xhr(ctx, slot, kind):
    await run_xhr_streaming(ctx, slot, kind, slow=True)
