"""Small HTTP proxies that stand between the browser and the hub, each breaking the network in
one way that real proxies do (asyncio, one thread per proxy, 127.0.0.1 on a free port).

Every request goes upstream on a connection of its own with `Connection: close`, so the proxy
knows where each response ends (the upstream closes) without parsing responses. WebSocket
upgrades are piped both ways untouched, or refused.

- `refuse_ws`: answers every WebSocket upgrade with 403, as proxies that do not speak it do.
- `buffer`: (with `refuse_ws`) holds every response until `buffer_bytes` have arrived or the
  response has ended, as buffering proxies and some antivirus filters do; a stream never
  gets through, a complete response does.
- `cut_every`: aborts every connection (both sides, RST) every so many seconds.
- `silent_ws`: passes a WebSocket upgrade and its answer (the 101 and what the hub writes in
  the next 300 ms: its first message), then forwards nothing in either direction and keeps
  both connections open, as some antivirus HTTP scanners and corporate proxies do.
  With `silent_ws="after_first_frame"` the client's first read (a resume's `halley:resume`)
  goes through too, so the hub answers, and then nothing.
- `hold_ws`: forwards WebSocket bytes both ways, but (after the upgrade's first 300 ms) holds
  them and lets them through only every `hold_ws` seconds (30 by default in the tests).
- `down`: the network is gone: open connections are aborted, new ones closed at once.

Attributes can be changed while the proxy runs (`proxy.refuse_ws = False` lets WebSocket through
from then on; `proxy.cut_every = 2.5` starts cutting).
"""

from __future__ import annotations

import asyncio
import threading
import time


class Proxy:
    def __init__(self, upstream_port: int, refuse_ws=False, buffer=False, buffer_bytes=256 * 1024, cut_every=None,
                 silent_ws=False, hold_ws=None):
        self.upstream_port = upstream_port
        self.refuse_ws = refuse_ws
        self.silent_ws = silent_ws
        self.hold_ws = hold_ws
        self.buffer = buffer
        self.buffer_bytes = buffer_bytes
        self.cut_every = cut_every
        self._down = False
        self.requests: list[tuple[float, str, str, bool]] = []  # (time, method, target, websocket)
        self.refused = 0
        self.cuts = 0
        self._conns: set[asyncio.StreamWriter] = set()
        self.loop = asyncio.new_event_loop()
        ready = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(ready,), daemon=True)
        self._thread.start()
        if not ready.wait(5):
            raise RuntimeError("proxy did not start")

    # ---- lifecycle

    def _run(self, ready):
        asyncio.set_event_loop(self.loop)
        self.server = self.loop.run_until_complete(asyncio.start_server(self._handle, "127.0.0.1", 0))
        self.port = self.server.sockets[0].getsockname()[1]
        self.loop.create_task(self._cutter())
        ready.set()
        self.loop.run_forever()

    def stop(self):
        async def shutdown():
            self.server.close()
            for w in list(self._conns):
                w.transport.abort()
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            self.loop.stop()

        if self.loop.is_running():
            asyncio.run_coroutine_threadsafe(shutdown(), self.loop)
            self._thread.join(5)
            self.loop.close()

    @property
    def down(self):
        return self._down

    @down.setter
    def down(self, value):
        self._down = value
        if value:
            self.loop.call_soon_threadsafe(lambda: [w.transport.abort() for w in list(self._conns)])

    @property
    def origin(self):
        return f"http://127.0.0.1:{self.port}"

    def websocket_requests(self):
        return [r for r in self.requests if r[3]]

    # ---- cutting

    async def _cutter(self):
        last = time.monotonic()
        while True:
            await asyncio.sleep(0.1)
            every = self.cut_every
            if not every:
                last = time.monotonic()
                continue
            if time.monotonic() - last >= every:
                last = time.monotonic()
                if self._conns:
                    self.cuts += 1
                for w in list(self._conns):
                    w.transport.abort()

    # ---- one client connection

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        if self._down:
            writer.transport.abort()
            return
        self._conns.add(writer)
        up_w = None
        try:
            try:
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
            except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, asyncio.TimeoutError, ConnectionError):
                return
            lines = head.decode("latin-1").split("\r\n")
            method, target = (lines[0].split(" ") + ["", ""])[:2]
            headers = [l for l in lines[1:] if l]
            websocket = any(l.lower().startswith("upgrade:") and "websocket" in l.lower() for l in headers)
            self.requests.append((time.monotonic(), method, target, websocket))
            if websocket and self.refuse_ws:
                self.refused += 1
                writer.write(b"HTTP/1.1 403 Forbidden\r\nContent-Type: text/plain\r\nContent-Length: 24\r\n"
                             b"Connection: close\r\n\r\nWebSocket not allowed.\r\n")
                await writer.drain()
                return
            if not websocket:
                headers = [l for l in headers if not l.lower().startswith(("connection:", "keep-alive:"))]
                headers.append("Connection: close")
            up_r, up_w = await asyncio.open_connection("127.0.0.1", self.upstream_port)
            self._conns.add(up_w)
            up_w.write(("\r\n".join([lines[0]] + headers) + "\r\n\r\n").encode("latin-1"))
            if websocket and self.silent_ws:
                # The answer and what follows it for 300 ms go through; then nothing, either way.
                if self.silent_ws == "after_first_frame":
                    # The 101, then the client's first frame to the hub.
                    answer = await up_r.read(65536)
                    writer.write(answer)
                    await writer.drain()
                    first = await asyncio.wait_for(reader.read(65536), 10)
                    up_w.write(first)
                    await up_w.drain()
                until = time.monotonic() + 0.3
                while time.monotonic() < until:
                    try:
                        data = await asyncio.wait_for(up_r.read(65536), max(0.01, until - time.monotonic()))
                    except asyncio.TimeoutError:
                        break
                    if not data:
                        break
                    writer.write(data)
                    await writer.drain()
                while not reader.at_eof() and not up_r.at_eof():
                    await asyncio.sleep(0.5)
                return
            hold = self.hold_ws if websocket else None
            to_hub = asyncio.ensure_future(self._pipe(reader, up_w, hold=hold, first_free=False))
            to_client = asyncio.ensure_future(self._pipe(up_r, writer, buffered=self.buffer and not websocket, hold=hold))
            if websocket:
                await asyncio.wait([to_hub, to_client], return_when=asyncio.FIRST_COMPLETED)
            else:
                await to_client  # the response ends when the hub closes
            to_hub.cancel()
            to_client.cancel()
        except (ConnectionError, OSError, asyncio.CancelledError):
            pass
        finally:
            for w in (writer, up_w):
                if w is not None:
                    self._conns.discard(w)
                    try:
                        w.close()
                    except Exception:
                        pass

    async def _pipe(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter, buffered=False, hold=None, first_free=True):
        held = bytearray()
        if hold:
            return await self._pipe_held(src, dst, hold, first_free)
        try:
            while True:
                data = await src.read(65536)
                if not data:
                    break
                if buffered:
                    held += data
                    if len(held) < self.buffer_bytes:
                        continue
                    data, held = bytes(held), bytearray()
                dst.write(data)
                await dst.drain()
            if held:
                dst.write(bytes(held))
                await dst.drain()
            if dst.can_write_eof():
                dst.write_eof()
        except (ConnectionError, OSError, asyncio.CancelledError):
            pass

    async def _pipe_held(self, src, dst, every, first_free):
        """Collects what arrives and writes it out only every `every` seconds (the first read
        of the hub's answer, the 101, goes at once)."""
        held = bytearray()
        done = asyncio.Event()

        async def collect():
            nonlocal held
            try:
                while True:
                    data = await src.read(65536)
                    if not data:
                        break
                    held += data
            except (ConnectionError, OSError, asyncio.CancelledError):
                pass
            done.set()

        task = asyncio.ensure_future(collect())
        try:
            if first_free:
                # The upgrade's answer and what follows it for 300 ms (the hub's first message).
                until = time.monotonic() + 0.3
                while time.monotonic() < until and not done.is_set():
                    await asyncio.sleep(0.01)
                    if held:
                        dst.write(bytes(held))
                        held = bytearray()
                        await dst.drain()
            while not done.is_set():
                try:
                    await asyncio.wait_for(done.wait(), every)
                except asyncio.TimeoutError:
                    pass
                if held:
                    dst.write(bytes(held))
                    held = bytearray()
                    await dst.drain()
        except (ConnectionError, OSError, asyncio.CancelledError):
            pass
        finally:
            task.cancel()
