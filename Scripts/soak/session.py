"""A resumable Halley session (`ws-resumable`, `sse`, `poll` clients of the soak): opened on one
transport, dropped and resumed now and then (session id, token, last seq), half the time on
another transport, as halley.js does. What it receives goes through `tracking.Resumable`,
which counts every offset lost or repeated; a resume the hub refuses is recovered from
channel history (`halley:since`) and counted as an error.
"""

from __future__ import annotations

import asyncio
import json
import random
import time

from websockets.exceptions import ConnectionClosed

from aio_http import Conn, HTTPError
from clients import (KEY, TAIL_MARGIN, WS_QUERY, closed_code, decode, end_ws, note_error_event, open_ws, pick_channels,
                     spawn, subscribe_msg, ws_established)
from tracking import C, OPEN, Resumable, error

TRANSPORTS = ("ws", "sse", "poll")


class Session:
    """One resumable Halley session, moved between transports during its life."""

    def __init__(self, ctx, kind, transport):
        self.ctx = ctx
        self.kind = kind
        self.transport = transport
        self.t = Resumable(kind)
        self.sid = self.token = None
        self.ws = None
        self.conn = None
        self.reader = None
        self.dead = None  # why the transport ended on its own
        self.detaching = False
        self.acked = 0
        self.ack_at = time.monotonic()
        self.ack_task = None
        self.established = None
        self.lf = None

    # -- life

    async def run(self):
        ctx = self.ctx
        self.lf = ctx.life()
        OPEN[self.kind] += 1
        C[f"opened {self.kind}"] += 1
        try:
            await self.attach(resume=False)
            for ch in pick_channels():
                self.t.chans[ch] = [None, None]
            await self.send([subscribe_msg(ch) for ch in self.t.chans])
            end = time.monotonic() + ctx.lifetime_draw()
            while not ctx.stopping.is_set():
                left = end - time.monotonic()
                if left <= 0:
                    break
                await self.lf.sleep(min(random.uniform(*ctx.resume_every), left))
                if ctx.stopping.is_set():
                    break
                if self.dead is not None:
                    self.lf.wake.clear()
                    await self.resume(self.transport, planned=False)
                    continue
                if time.monotonic() >= end:
                    break
                new = self.transport if random.random() < 0.5 else random.choice([t for t in TRANSPORTS if t != self.transport])
                await self.detach()
                await asyncio.sleep(random.uniform(0, 2))
                await self.resume(new, planned=True)
            if ctx.stopping.is_set():
                if self.dead is not None:
                    await self.resume(self.transport, planned=False)
                await ctx.final.wait()
                self.t.tail_check(None)
                await ctx.close_all.wait()
            else:
                self.t.tail_check(time.monotonic() - TAIL_MARGIN)
                C["sessions left to expire"] += 1
        finally:
            self.lf.done()
            await self.detach("fin" if ctx.close_all.is_set() else None)
            OPEN[self.kind] -= 1

    async def resume(self, transport, planned):
        if transport != self.transport:
            C["transport switches"] += 1
            C[f"switch {self.transport}->{transport}"] += 1
        C["resumes" if planned else "resumes after the transport ended"] += 1
        if self.dead is not None:
            C[f"transport ended: {self.dead}"] += 1
            self.dead = None
        await self.detach()
        self.transport = transport
        await self.attach(resume=True)

    # -- transports

    async def attach(self, resume):
        self.detaching = False
        self.established = asyncio.get_running_loop().create_future()
        if self.transport == "ws":
            q = WS_QUERY + "&halley=1"
            if resume:
                q += f"&session={self.sid}&last_seq={self.t.last_seq}"
            self.ws = await open_ws(self.ctx, q)
            C["opened transport ws"] += 1
            if resume:
                await self.ws.send(json.dumps({"event": "halley:resume", "data": {"token": self.token}}))
            self.on_established(await ws_established(self.ws, self.kind), resume)
            self.reader = asyncio.create_task(self.read_ws())
        elif self.transport == "sse":
            headers = {"Accept": "text/event-stream"}
            path = f"/halley/sse?key={KEY}"
            if resume and self.t.last_seq > 0 and random.random() < 0.5:
                headers["Last-Event-ID"] = f"{self.t.last_seq}:{self.sid}:{self.token}"  # EventSource's own way
            elif resume:
                path += f"&session={self.sid}&last_seq={self.t.last_seq}"
                headers["X-Halley-Token"] = self.token
            self.conn = Conn(self.ctx.port)
            status, _, body = await self.conn.start("GET", path, headers, timeout=30)
            if status != 200:
                raise HTTPError(f"sse answered {status}: {(await body.read_all())[:200]!r}")
            C["opened transport sse"] += 1
            self.reader = asyncio.create_task(self.read_sse(body))
            await self.wait_established()
        else:
            self.conn = Conn(self.ctx.port)
            if not resume:
                status, _, body = await self.conn.request("GET", f"/halley/poll?key={KEY}", timeout=30)
                if status != 200:
                    raise HTTPError(f"poll open answered {status}: {body[:200]!r}")
                j = json.loads(body)
                self.sid, self.token = j["session"], j["token"]
                for m in j["messages"]:
                    self.process(m)
            C["opened transport poll"] += 1
            self.reader = asyncio.create_task(self.poll_loop(resume))
            # A resuming poll is answered when there is something to say (up to
            # --poll-timeout): attached now; a refused resume shows in its answer.
            self.established.set_result(True)

    async def wait_established(self):
        """Until the transport's first answer (or its end: then the attach failed)."""
        async with asyncio.timeout(60):
            await asyncio.wait({self.established, self.reader}, return_when=asyncio.FIRST_COMPLETED)
        if not self.established.done():
            raise HTTPError(f"{self.transport} ended before it was established ({self.dead})")

    def on_established(self, d, resume):
        if self.established is not None and not self.established.done():
            self.established.set_result(True)
        if not resume:
            self.sid, self.token = d["socket_id"], d["halley:token"]
            return
        if d.get("halley:resumed"):
            if d["socket_id"] != self.sid:
                error(f"{self.kind}: resumed another session", str(d))
            return
        self.session_lost(d.get("halley:reason"), d["socket_id"], d.get("halley:token"))

    def session_lost(self, reason, sid, token):
        """A resume found the session gone: the hub started a new one. Recover every channel
        from history (`halley:since`), as halley.js does."""
        C[f"resume refused: {reason}"] += 1
        error(f"{self.kind}: resume refused ({reason})", f"session {self.sid} -> {sid}")
        self.sid, self.token = sid, token
        self.t.new_session()
        self.acked = 0
        msgs = []
        for ch, (epoch, nxt) in self.t.chans.items():
            if nxt is None:
                msgs.append(subscribe_msg(ch))
            else:
                self.t.pending_since[ch] = nxt - 1
                msgs.append(subscribe_msg(ch, since={"epoch": epoch, "offset": nxt - 1}))
        spawn(self.send(msgs))

    async def send(self, msgs):
        """Client messages: over the WebSocket, or `POST /halley/send` for HTTP transports."""
        if self.transport == "ws" and self.ws is not None:
            for m in msgs:
                await self.ws.send(json.dumps(m))
            return
        status, _, body = await self.ctx.pool.request(
            "POST", f"/halley/send?session={self.sid}",
            {"Content-Type": "application/json", "X-Halley-Token": self.token}, json.dumps(msgs).encode(), timeout=30)
        C["http sends"] += 1
        if status != 200:
            error(f"{self.kind}: /halley/send answered {status}", body[:200].decode("utf-8", "replace"))

    def process(self, m):
        ev = m.get("event", "")
        if ev == "pusher:connection_established":
            return
        if ev in ("pusher:error", "pusher:subscription_error"):
            note_error_event(self.kind, m)
        C["resumable messages"] += 1
        self.t.on(m)

    def transport_ended(self, why):
        if not self.detaching:
            self.dead = why
            self.lf.wake.set()

    async def read_ws(self):
        ws = self.ws
        try:
            async for raw in ws:
                self.process(decode(raw))
                if self.t.last_seq > self.acked and (self.t.last_seq - self.acked >= 50 or time.monotonic() - self.ack_at > 1.5):
                    self.acked, self.ack_at = self.t.last_seq, time.monotonic()
                    await ws.send(json.dumps({"event": "halley:ack", "data": {"seq": self.acked}}))
                    C["acks"] += 1
            self.transport_ended("ws ended")
        except ConnectionClosed as e:
            code = closed_code(e)
            if not self.detaching:
                error(f"{self.kind}: ws closed by the hub ({code})", str(e))
            self.transport_ended(f"ws closed {code}")

    async def ack_http(self, seq):
        try:
            await self.send([{"event": "halley:ack", "data": {"seq": seq}}])
            C["acks"] += 1
        except Exception as e:  # noqa: BLE001
            error(f"{self.kind}: ack failed", repr(e))

    async def read_sse(self, body):
        data, eid = [], None
        try:
            while True:
                line = await body.readline()
                if line is None:
                    if not self.detaching:
                        error(f"{self.kind}: sse stream ended without halley:reconnect")
                    self.transport_ended("sse ended")
                    return
                if line.endswith(b"\r"):
                    line = line[:-1]
                if not line:
                    if not data:
                        continue
                    m = json.loads(b"\n".join(data))
                    seq = m.get("halley:seq")
                    if seq is not None and (eid is None or not eid.startswith(b"%d:" % seq)):
                        error(f"{self.kind}: sse event id {eid!r} for seq {seq}")  # must be seq:session:token
                    data, eid = [], None
                    ev = m.get("event")
                    if ev == "pusher:connection_established":
                        self.on_established(json.loads(m["data"]), self.sid is not None)
                    elif ev == "halley:heartbeat":
                        C["sse heartbeats"] += 1
                    elif ev == "halley:reconnect":
                        C["sse stream rotations"] += 1
                        self.transport_ended("sse rotation")
                        return
                    else:
                        self.process(m)
                    if (self.t.last_seq > self.acked and time.monotonic() - self.ack_at > 5
                            and (self.ack_task is None or self.ack_task.done())):
                        self.acked, self.ack_at = self.t.last_seq, time.monotonic()
                        self.ack_task = spawn(self.ack_http(self.acked))
                    continue
                if line.startswith(b":"):
                    continue
                field, _, value = line.partition(b":")
                if value.startswith(b" "):
                    value = value[1:]
                if field == b"data":
                    data.append(value)
                elif field == b"id":
                    eid = value
        except (HTTPError, ConnectionError, asyncio.IncompleteReadError) as e:
            if not self.detaching:
                error(f"{self.kind}: sse read failed", repr(e))
            self.transport_ended("sse failed")

    async def poll_loop(self, resume):
        conn = self.conn
        first = resume
        try:
            while True:
                path = f"/halley/poll?session={self.sid}&cursor={self.t.last_seq}" + (f"&key={KEY}" if first else "")
                if random.random() < 0.8:  # halley.js: a text/plain POST (no preflight)
                    status, _, body = await conn.request("POST", path, {"Content-Type": "text/plain"},
                                                         json.dumps({"halley:token": self.token}).encode(), timeout=60)
                else:
                    status, _, body = await conn.request("GET", path, {"X-Halley-Token": self.token}, timeout=60)
                C["polls"] += 1
                if status == 409 and first:  # the hub has not seen the previous poll's connection go yet
                    C["poll 409 on resume"] += 1
                    await asyncio.sleep(0.2)
                    continue
                if status != 200:
                    error(f"{self.kind}: poll answered {status}", body[:200].decode("utf-8", "replace"))
                    self.transport_ended(f"poll {status}")
                    return
                j = json.loads(body)
                if first:
                    first = False
                    if j.get("session", self.sid) != self.sid:
                        d = json.loads(j["messages"][0]["data"])
                        self.on_established(d, True)
                    elif self.established is not None and not self.established.done():
                        self.established.set_result(True)
                for m in j["messages"]:
                    self.process(m)
                if not conn.reusable:
                    conn.close()
        except (HTTPError, ConnectionError, asyncio.IncompleteReadError, TimeoutError) as e:
            if not self.detaching:
                error(f"{self.kind}: poll failed", repr(e))
            self.transport_ended("poll failed")

    async def detach(self, style=None):
        self.detaching = True
        if self.reader is not None:
            self.reader.cancel()
            self.reader = None
        if self.ws is not None:
            await end_ws(self.ws, style)
            self.ws = None
        if self.conn is not None:
            if (style or random.choice(("fin", "reset"))) == "reset":
                self.conn.abort()
            else:
                self.conn.close()
            self.conn = None


async def run_resumable(ctx, slot, kind):
    await Session(ctx, kind, {"ws-resumable": "ws", "sse": "sse", "poll": "poll"}[kind]).run()
