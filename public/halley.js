/*
 * halley.js — the browser client of the Halley realtime hub.
 *
 *   <script src="https://hub.example/halley.js"></script>
 *   <script>
 *     const halley = new Halley("app-key");          // connects to the hub that served this file
 *     const news = halley.subscribe("news");
 *     news.bind("headline", (data, meta) => console.log(data, meta.offset));
 *   </script>
 *
 * Plain JavaScript, no build step, no dependencies. As a classic script it defines the global
 * `Halley`; `import "./halley.js"` (a module) does the same, and `halley.mjs` next to it exports
 * it (`import Halley from "https://hub.example/halley.mjs"`).
 *
 * The API follows pusher-js. What it adds (docs/PROTOCOL.md has the wire side):
 * - Transports WebSocket → SSE streaming → long-polling. Each counts as up only when the first
 *   server message arrives within its deadline (`wsTimeout`, `streamTimeout`, `pollTimeout`);
 *   otherwise the next one is tried. The transport that worked is remembered per hub origin in
 *   localStorage for `transportTTL`, and tried first next time. On a fallback transport
 *   WebSocket is probed again after `probeDelay` (doubling up to `probeMaxDelay`); a probe that
 *   works takes the session over without loss.
 * - Every session is resumable: the hub numbers messages (`halley:seq`), the client
 *   acknowledges them and comes back with session id, token and last seq after any drop, on any
 *   transport. Messages are dispatched once, in order. When the session is gone the client
 *   subscribes again with each channel's epoch and offset (`halley:since`) and the channel
 *   reports `halley:recovered` or `halley:not_recovered`; skipped messages arrive as `halley:gap`.
 * - Reconnects use exponential back-off with full jitter (`backoffBase` 0.5 s, doubling per
 *   failed attempt up to `backoffMax` 30 s; a connection that worked ≥ 1 s resets it), never
 *   give up on network errors, react to the browser's online/offline events and honour close
 *   codes: 4000–4099 do not reconnect (state `failed`), 4100–4199 back off, 4200–4299 at once.
 * - Binary: `trigger("client-…", ArrayBuffer | typed array | DataView | Blob)`; binary events
 *   arrive as ArrayBuffer or Blob (`binaryType`).
 * - Private and presence channels are authorized with one request for all channels waiting
 *   (`channelAuthorization.endpoint`, batch format of pusher-js-auth) or a custom handler.
 */
(function (global) {
  "use strict";

  var VERSION = "1.0.0";
  var TRANSPORTS = ["ws", "sse", "poll"];

  var DEFAULTS = {
    host: null,                   // hub origin ("https://hub.example", "hub.example:8080"); default: this script's origin
    forceTLS: null,               // with a host without scheme: wss/https (default: the page's scheme)
    transports: TRANSPORTS,       // order of attempts; leave one out to disable it
    wsTimeout: 5000,              // ms from opening a WebSocket to its first message
    streamTimeout: 5000,          // ms from opening an SSE stream to its first event
    pollTimeout: 10000,           // ms from the first poll to its answer
    pollRequestTimeout: 40000,    // ms a held long-poll may take (the hub answers within 25 s)
    activityTimeout: 120000,      // ms of silence before a ping (the hub's activity_timeout wins if lower)
    pongTimeout: 30000,           // ms a ping may go unanswered before the transport is dropped
    backoffBase: 500,             // bound of the first retry's random delay; doubled per failed attempt
    backoffMax: 30000,            // largest back-off bound
    rememberTransport: true,
    transportTTL: 30 * 60 * 1000, // how long a working transport is remembered per origin
    probeDelay: 15000,            // first WebSocket probe after settling on a fallback transport
    probeMaxDelay: 5 * 60 * 1000,
    ackInterval: 1000,            // ms between acknowledgements while messages arrive
    binaryType: "arraybuffer",    // or "blob", as WebSocket.binaryType
    autoConnect: true,
    disconnectOnPageHide: true,   // leave presence channels at once when the page goes away
    channelAuthorization: null,   // {endpoint, headers, params, credentials, batch, customHandler}
    authEndpoint: null,           // pusher-js style shorthand for channelAuthorization.endpoint
    auth: null,                   // pusher-js style {headers, params}
    authorizer: null,             // function (socketId, channelNames) -> Promise<{name: {auth, channel_data}}>
    storage: null                 // a Storage (default: localStorage when available)
  };

  // ---- where this script came from --------------------------------------------------------

  /** The origin of the URL this file was loaded from: a classic script knows its element; a
   *  module (or a script run later) finds its own URL in a stack trace. */
  function scriptOrigin() {
    try {
      var cs = typeof document !== "undefined" && document.currentScript;
      if (cs && cs.src) return new URL(cs.src, location.href).origin;
    } catch (e) { /* fall through */ }
    try {
      var m = /(https?:\/\/[^\s)'"]+)/.exec(new Error().stack || "");
      if (m) return new URL(m[1]).origin;
    } catch (e) { /* fall through */ }
    return typeof location !== "undefined" ? location.origin : null;
  }
  var SCRIPT_ORIGIN = scriptOrigin();

  // ---- small helpers ----------------------------------------------------------------------

  function now() { return Date.now(); }
  function extend(target) {
    for (var i = 1; i < arguments.length; i++) {
      var src = arguments[i];
      if (src) for (var k in src) if (Object.prototype.hasOwnProperty.call(src, k) && src[k] !== undefined) target[k] = src[k];
    }
    return target;
  }
  function parseJSON(text) { try { return JSON.parse(text); } catch (e) { return null; } }
  /** pusher-js parses `data` as JSON when it can. */
  function decodeData(data) {
    if (typeof data !== "string") return data;
    try { return JSON.parse(data); } catch (e) { return data; }
  }
  function later(fn) { setTimeout(fn, 0); }
  function report(err) { later(function () { throw err; }); }  // a handler's error, not ours

  function isBinary(x) {
    return x != null && (x instanceof ArrayBuffer || ArrayBuffer.isView(x) ||
      (typeof Blob !== "undefined" && x instanceof Blob));
  }
  function toBase64(bytes) {
    var s = "";
    for (var i = 0; i < bytes.length; i += 0x8000) s += String.fromCharCode.apply(null, bytes.subarray(i, i + 0x8000));
    return btoa(s);
  }
  function fromBase64(text) {
    var s = atob(text), out = new Uint8Array(s.length);
    for (var i = 0; i < s.length; i++) out[i] = s.charCodeAt(i);
    return out.buffer;
  }
  /** ArrayBuffer, view or Blob → Promise of Uint8Array (Blob reads are asynchronous). */
  function bytesOf(x) {
    if (x instanceof ArrayBuffer) return Promise.resolve(new Uint8Array(x));
    if (ArrayBuffer.isView(x)) return Promise.resolve(new Uint8Array(x.buffer, x.byteOffset, x.byteLength));
    if (x.arrayBuffer) return x.arrayBuffer().then(function (b) { return new Uint8Array(b); });
    return new Promise(function (resolve, reject) {
      var r = new FileReader();
      r.onload = function () { resolve(new Uint8Array(r.result)); };
      r.onerror = function () { reject(r.error); };
      r.readAsArrayBuffer(x);
    });
  }
  var utf8 = typeof TextDecoder !== "undefined" ? new TextDecoder() : null;

  /** A resumable session's binary frame: 4-byte big-endian header length, the header JSON
   *  (the message without `data`), then the payload. */
  function decodeBinaryFrame(buf) {
    if (buf.byteLength < 4) return null;
    var n = new DataView(buf).getUint32(0);
    if (4 + n > buf.byteLength) return null;
    var head = parseJSON(utf8.decode(new Uint8Array(buf, 4, n)));
    if (!head) return null;
    head.data = buf.slice(4 + n);
    head.__binary = true;
    return head;
  }

  // ---- events -----------------------------------------------------------------------------

  /** bind / unbind / bind_global as in pusher-js. Handlers get (data, metadata). */
  function Emitter() {
    this._handlers = Object.create(null);
    this._globals = [];
  }
  Emitter.prototype.bind = function (event, fn, context) {
    (this._handlers[event] || (this._handlers[event] = [])).push({ fn: fn, ctx: context });
    return this;
  };
  Emitter.prototype.unbind = function (event, fn, context) {
    var names = event == null ? Object.keys(this._handlers) : [event];
    for (var i = 0; i < names.length; i++) {
      var list = this._handlers[names[i]];
      if (!list) continue;
      this._handlers[names[i]] = list.filter(function (h) {
        return (fn != null && h.fn !== fn) || (context != null && h.ctx !== context);
      });
      if (!this._handlers[names[i]].length) delete this._handlers[names[i]];
    }
    return this;
  };
  Emitter.prototype.bind_global = function (fn) { this._globals.push(fn); return this; };
  Emitter.prototype.unbind_global = function (fn) {
    this._globals = fn == null ? [] : this._globals.filter(function (g) { return g !== fn; });
    return this;
  };
  Emitter.prototype.unbind_all = function () { this._handlers = Object.create(null); this._globals = []; return this; };
  Emitter.prototype.emit = function (event, data, meta) {
    var globals = this._globals.slice(), list = (this._handlers[event] || []).slice();
    for (var i = 0; i < globals.length; i++) {
      try { globals[i](event, data, meta); } catch (e) { report(e); }
    }
    for (var j = 0; j < list.length; j++) {
      try { list[j].fn.call(list[j].ctx || this, data, meta); } catch (e) { report(e); }
    }
    return this;
  };
  function mixin(Ctor) {
    for (var k in Emitter.prototype) Ctor.prototype[k] = Emitter.prototype[k];
  }

  // ---- transport memory (per hub origin) --------------------------------------------------

  function TransportMemory(storage, origin, ttl) {
    this.storage = storage;
    this.key = "halley:transport:" + origin;
    this.ttl = ttl;
  }
  TransportMemory.prototype.recall = function () {
    try {
      var v = this.storage && parseJSON(this.storage.getItem(this.key));
      if (v && v.until > now() && TRANSPORTS.indexOf(v.transport) >= 0) return v.transport;
    } catch (e) { /* private mode, disabled storage */ }
    return null;
  };
  TransportMemory.prototype.remember = function (name) {
    try { if (this.storage) this.storage.setItem(this.key, JSON.stringify({ transport: name, until: now() + this.ttl })); } catch (e) { /* ignore */ }
  };

  // ---- transports ---------------------------------------------------------------------------
  //
  // A transport carries one attempt: start() opens it, its messages go to conn._receive, and
  // it reports its end once through conn._transportDown(t, info). `up` turns true with the
  // first message from the hub. close() ends it quietly (no report).

  function Transport(conn, name, resume) {
    this.conn = conn;
    this.name = name;
    this.resume = resume;     // {session, token, lastSeq} or null
    this.up = false;
    this.closed = false;
    this.startedAt = now();
    this.upAt = 0;
  }
  Transport.prototype.deliver = function (msg) {
    if (this.closed) return;
    if (!this.up) { this.up = true; this.upAt = now(); }
    this.conn._receive(this, msg);
  };
  Transport.prototype.finish = function (info) {
    if (this.closed) return;
    this.closed = true;
    this._teardown();
    this.conn._transportDown(this, info || {});
  };
  Transport.prototype.close = function () {
    if (this.closed) return;
    this.closed = true;
    this._teardown();
  };

  /** The hub's JSON error body of a refused HTTP request, classified. */
  function httpRefusal(status, body) {
    var j = parseJSON(body) || {};
    var text = String(j.error || "");
    var fatal = (status === 404 && /unknown app key|missing key/.test(text)) ||
      (status === 403 && /origin not allowed|application disabled/.test(text));
    // 503: the hub is at its session limit; 403 with this text: the app's connection quota.
    // Other refusals (a proxy's 403 or 404 on one path) move on to the next transport.
    return { status: status, error: text || ("HTTP " + status), fatal: fatal,
      backoff: status === 503 || (status === 403 && /quota/.test(text)) };
  }

  // WebSocket: /app/{key}?protocol=7&halley=1[&session&last_seq]; a resume's token goes in the
  // first message (halley:resume), never in a URL (URLs end up in access logs).
  function WSTransport(conn, resume) { Transport.call(this, conn, "ws", resume); }
  WSTransport.prototype = Object.create(Transport.prototype);
  WSTransport.prototype.start = function () {
    var self = this, ws;
    try {
      ws = new WebSocket(this.conn.wsURL(this.resume));
    } catch (e) {
      later(function () { self.finish({ error: String(e) }); });
      return;
    }
    this.ws = ws;
    ws.binaryType = "arraybuffer";
    var resume = this.resume;
    ws.onopen = function () {
      if (resume) ws.send(JSON.stringify({ event: "halley:resume", data: { token: resume.token } }));
    };
    ws.onmessage = function (ev) {
      var msg = typeof ev.data === "string" ? parseJSON(ev.data) : decodeBinaryFrame(ev.data);
      if (msg) self.deliver(msg);
    };
    ws.onclose = function (ev) { self.finish({ code: ev.code, reason: ev.reason }); };
    ws.onerror = function () { /* a close event follows */ };
  };
  WSTransport.prototype.send = function (list) {
    if (!this.ws || this.ws.readyState !== 1) return false;
    for (var i = 0; i < list.length; i++) this.ws.send(JSON.stringify(list[i]));
    return true;
  };
  WSTransport.prototype._teardown = function () {
    var ws = this.ws;
    if (!ws) return;
    ws.onopen = ws.onmessage = ws.onclose = ws.onerror = null;
    try { ws.close(1000); } catch (e) { /* not open yet in old browsers */ }
  };

  // SSE over fetch streaming: /halley/sse?key&[session&last_seq], a resume's token in the
  // X-Halley-Token header. Read with fetch rather than EventSource so the client decides when
  // and how to reconnect, and can send that header.
  function SSETransport(conn, resume) { Transport.call(this, conn, "sse", resume); }
  SSETransport.prototype = Object.create(Transport.prototype);
  SSETransport.prototype.start = function () {
    var self = this;
    if (typeof fetch === "undefined" || typeof ReadableStream === "undefined" || !utf8) {
      later(function () { self.finish({ error: "streaming not supported" }); });
      return;
    }
    this.abort = new AbortController();
    var decoder = new TextDecoder(), buffer = "", data = [], rotate = false;
    var headers = { Accept: "text/event-stream" };
    if (this.resume) headers["X-Halley-Token"] = this.resume.token;
    fetch(this.conn.httpURL("/halley/sse", this.resume), {
      cache: "no-store", credentials: "omit", signal: this.abort.signal, headers: headers
    }).then(function (res) {
      if (!res.ok) return res.text().then(function (t) { self.finish(httpRefusal(res.status, t)); });
      if (!res.body) return self.finish({ error: "no response body" });
      var reader = res.body.getReader();
      function line(l) {
        if (l === "") {
          if (data.length) {
            var msg = parseJSON(data.join("\n"));
            data = [];
            if (msg) {
              if (msg.event === "halley:reconnect") rotate = true;
              self.deliver(msg);
            }
          }
          return;
        }
        if (l.charCodeAt(0) === 58) return;  // ":" comment (prelude padding)
        var i = l.indexOf(":"), field = i < 0 ? l : l.slice(0, i), value = i < 0 ? "" : l.slice(i + 1);
        if (value.charCodeAt(0) === 32) value = value.slice(1);
        if (field === "data") data.push(value);
      }
      function pump() {
        return reader.read().then(function (r) {
          if (self.closed) return;
          if (r.done) return self.finish({ ended: true, rotate: rotate });
          buffer += decoder.decode(r.value, { stream: true });
          var start = 0, nl;
          while ((nl = buffer.indexOf("\n", start)) >= 0) {
            var l = buffer.slice(start, nl);
            if (l.charCodeAt(l.length - 1) === 13) l = l.slice(0, -1);
            start = nl + 1;
            line(l);
            if (self.closed) return;
          }
          buffer = buffer.slice(start);
          return pump();
        });
      }
      return pump();
    }).catch(function (e) { self.finish({ error: String(e) }); });
  };
  SSETransport.prototype.send = function (list) { return this.conn._httpSend(list); };
  SSETransport.prototype._teardown = function () { if (this.abort) this.abort.abort(); };

  // Long-polling: GET /halley/poll (the first answers at once; the next ones wait for messages
  // after their cursor, which acknowledges everything up to it).
  function PollTransport(conn, resume) { Transport.call(this, conn, "poll", resume); }
  PollTransport.prototype = Object.create(Transport.prototype);
  PollTransport.prototype.start = function () {
    if (typeof fetch === "undefined") {
      var self = this;
      later(function () { self.finish({ error: "fetch not supported" }); });
      return;
    }
    this._poll();
  };
  PollTransport.prototype._poll = function () {
    var self = this, conn = this.conn;
    if (this.closed || conn._holdHTTP(this, function () { self._poll(); })) return;
    var resuming = !this.up && this.resume;
    var params = this.up ? { session: conn._session, token: conn._token, cursor: conn._lastSeq }
      : resuming ? { session: this.resume.session, token: this.resume.token, cursor: this.resume.lastSeq } : null;
    var url = conn.httpURL("/halley/poll", null) + (params
      ? "&session=" + encodeURIComponent(params.session) + "&cursor=" + params.cursor
      : "");
    this.abort = new AbortController();
    var timer = setTimeout(function () { self.abort.abort(); }, conn.opts.pollRequestTimeout);
    if (resuming) this._nudge(150);
    fetch(url, { cache: "no-store", credentials: "omit", signal: this.abort.signal,
      headers: params ? { "X-Halley-Token": params.token } : {} }).then(function (res) {
      return res.text().then(function (text) {
        clearTimeout(timer);
        if (self.closed) return;
        if (res.status === 409) {
          // The hub still holds the poll this one replaces (it has not seen it go): again soon.
          conn._note("poll", "409", "previous poll still held by the hub");
          setTimeout(function () { self._poll(); }, 250);
          return;
        }
        if (!res.ok) return self.finish(httpRefusal(res.status, text));
        var j = parseJSON(text);
        if (!j || !Array.isArray(j.messages)) return self.finish({ error: "bad poll answer" });
        if (!self.up && resuming && !j.session) {
          // Resumed: the hub says nothing but the messages after the cursor.
          self.deliver({ event: "pusher:connection_established", __synthetic: true,
            data: JSON.stringify({ socket_id: params.session, "halley:token": params.token, "halley:resumed": true }) });
        }
        for (var i = 0; i < j.messages.length && !self.closed; i++) self.deliver(j.messages[i]);
        if (self.up && self === conn._active) conn._lastRx = now();  // an empty answer shows the path is alive
        self._poll();
      });
    }).catch(function (e) { clearTimeout(timer); self.finish({ error: String(e) }); });
  };
  /** A resumed poll waits for messages; a ping makes the hub answer it at once (with a pong),
   *  so the transport's deadline measures the path, not the channel's quietness. */
  PollTransport.prototype._nudge = function (delay) {
    var self = this;
    setTimeout(function () {
      if (self.closed || self.up) return;
      self.conn._httpSend([{ event: "pusher:ping", data: {} }], self.resume);
      self._nudge(1000);
    }, delay);
  };
  PollTransport.prototype.send = function (list) { return this.conn._httpSend(list); };
  PollTransport.prototype._teardown = function () { if (this.abort) this.abort.abort(); };

  var TRANSPORT_CLASSES = { ws: WSTransport, sse: SSETransport, poll: PollTransport };

  // ---- connection ---------------------------------------------------------------------------

  /** The connection manager: states, transport choice, resume, acks, back-off, probes.
   *  States (pusher-js): initialized, connecting, connected, unavailable, failed, disconnected. */
  function Connection(client, opts) {
    Emitter.call(this);
    this.client = client;
    this.opts = opts;
    this.state = "initialized";
    this.socket_id = null;
    this.transport = null;      // name of the transport in use
    this.switches = [];         // {at, from, to, reason}: the transport history of this page
    this.log = [];              // {at, transport, event, detail}: attempts, failures, probes
    this.memory = new TransportMemory(opts.storage, client.origin, opts.transportTTL);
    this._session = null;
    this._token = null;
    this._lastSeq = 0;          // last message seq dispatched
    this._ackedSeq = 0;
    this._held = Object.create(null);  // messages that came early (seq > last + 1)
    this._active = null;
    this._probe = null;
    this._probeDelay = opts.probeDelay;
    this._attempt = 0;
    this._chainIndex = 0;
    this._chainStartedAt = 0;
    this._out = [];             // outgoing messages waiting for a connection (entries may be pending Blob reads)
    this._httpQueue = [];
    this._httpBusy = false;
    this._lastRx = 0;
    this._pingAt = 0;
    this._wanted = false;
    this._heldHTTP = null;
    this._pendingReconnect = false;
    this._activityTimeout = opts.activityTimeout;
  }
  mixin(Connection);

  Connection.prototype._note = function (transport, event, detail) {
    var e = { at: now(), transport: transport, event: event, detail: detail };
    this.log.push(e);
    if (this.log.length > 200) this.log.shift();
    this.emit("log", e);
  };

  Connection.prototype._setState = function (s, detail) {
    if (this.state === s) return;
    var previous = this.state;
    this.state = s;
    this.emit("state_change", { previous: previous, current: s, detail: detail });
    this.emit(s, detail);
  };

  Connection.prototype.wsURL = function (resume) {
    var u = this.client.origin.replace(/^http/, "ws") + "/app/" + encodeURIComponent(this.client.key) +
      "?protocol=7&client=halley-js&version=" + VERSION + "&halley=1";
    if (resume) u += "&session=" + encodeURIComponent(resume.session) + "&last_seq=" + resume.lastSeq;
    return u;
  };
  Connection.prototype.httpURL = function (path, resume) {
    var u = this.client.origin + path + "?key=" + encodeURIComponent(this.client.key);
    if (resume) u += "&session=" + encodeURIComponent(resume.session) + "&last_seq=" + resume.lastSeq;
    return u;
  };

  Connection.prototype._resumeParams = function () {
    return this._session ? { session: this._session, token: this._token, lastSeq: this._lastSeq } : null;
  };
  Connection.prototype._order = function () {
    return this.opts.transports.filter(function (t) { return TRANSPORTS.indexOf(t) >= 0; });
  };

  Connection.prototype.connect = function () {
    if (this._wanted && (this.state === "connecting" || this.state === "connected" || this.state === "unavailable")) return;
    this._wanted = true;
    this._attempt = 0;
    this._watch();
    this._setState("connecting");
    this._startChain(this._preferred());
  };

  /** Where a chain of attempts starts: the transport that last worked here, else the one
   *  remembered for this origin, else the first. */
  Connection.prototype._preferred = function () {
    var order = this._order();
    var t = this._lastGood || (this.opts.rememberTransport ? this.memory.recall() : null);
    var i = t ? order.indexOf(t) : -1;
    return i < 0 ? 0 : i;
  };

  Connection.prototype._startChain = function (index) {
    clearTimeout(this._retryTimer);
    this._retryTimer = null;
    if (!this._wanted) return;
    this._chainIndex = index;
    this._chainStartedAt = now();
    this._try(index);
  };

  Connection.prototype._try = function (index) {
    var order = this._order(), name = order[index];
    var t = new TRANSPORT_CLASSES[name](this, this._resumeParams());
    if (this._active) this._active.close();
    this._active = t;
    this._note(name, "attempt", t.resume ? "resume " + t.resume.session + " after seq " + t.resume.lastSeq : "new session");
    var self = this, limit = name === "ws" ? this.opts.wsTimeout : name === "sse" ? this.opts.streamTimeout : this.opts.pollTimeout;
    t.deadline = setTimeout(function () {
      if (t.closed || t.helloed) return;
      self._note(name, "timeout", "no message within " + limit + " ms");
      t.close();
      self._transportDown(t, { timeout: true });
    }, limit);
    t.start();
  };

  /** A transport ended (or missed its deadline). */
  Connection.prototype._transportDown = function (t, info) {
    clearTimeout(t.deadline);
    if (t === this._probe) return this._probeFailed(t, info);
    if (t !== this._active) return;
    this._active = null;
    var detail = info.timeout ? "timeout" : info.code ? "close " + info.code + (info.reason ? " " + info.reason : "")
      : info.status ? "HTTP " + info.status + " " + (info.error || "") : info.ended ? "ended" : info.error || "closed";
    if (!info.timeout) this._note(t.name, t.helloed ? "dropped" : "failed", detail);
    if (!this._wanted) return;
    var code = info.code || 0;
    if ((code >= 4000 && code < 4100) || info.fatal) return this._fail(t, detail);
    if (!t.helloed) {
      // Not up: the next transport at once; after the last, back off and start over.
      var order = this._order(), next = this._chainIndex + 1;
      if (next < order.length && !(code >= 4100 && code < 4300) && !info.backoff) {
        this._chainIndex = next;
        return this._try(next);
      }
      if (this.state !== "unavailable") this._setState("unavailable", detail);
      return this._retry(code >= 4200 && code < 4300 ? 0 : this._backoff(), 0);
    }
    // It was up and dropped: come back on the same transport (it may fall back from there).
    if (this._probe) { this._pendingReconnect = true; return; }
    // A connection that worked for a while starts the back-off over; one dropped at once
    // (a hub that accepts and closes) keeps climbing it.
    if (now() - t.upAt >= 1000) this._attempt = 0;
    var index = Math.max(0, this._order().indexOf(t.name));
    if (info.rotate) return this._startChain(index);  // SSE byte budget: reopen at once
    if (this.state === "connected") this._setState("connecting", detail);
    var delay = code >= 4200 && code < 4300 ? 0 : code >= 4100 && code < 4200 ? this._backoff(2) : this._backoff();
    this._retry(delay, index);
  };

  /** Full jitter ("Exponential Backoff And Jitter", AWS architecture blog): a uniform delay
   *  in [0, min(max, base·2^n)) for the n-th retry in a row, so clients dropped together (a
   *  hub restart) come back spread out. `floor`: at least that n (4100–4199: back off). */
  Connection.prototype._backoff = function (floor) {
    var n = Math.max(this._attempt++, floor || 0);
    var cap = Math.min(this.opts.backoffMax, this.opts.backoffBase * Math.pow(2, n));
    return Math.floor(Math.random() * cap);
  };

  Connection.prototype._retry = function (delay, index) {
    var self = this;
    clearTimeout(this._retryTimer);
    this._note(null, "retry", "in " + delay + " ms");
    this.emit("retry", { delay: delay });
    this._retryTimer = setTimeout(function () {
      self._retryTimer = null;
      if (self.state === "connected") return;
      self._startChain(index);
    }, delay);
  };

  Connection.prototype._fail = function (t, detail) {
    this._wanted = false;
    this._stopTimers();
    if (this._probe) { this._probe.close(); this._probe = null; }
    this.emit("error", { type: "HalleyError", transport: t.name, error: detail });
    this._setState("failed", detail);
  };

  /** The hub's first message: the session is new, or resumed. */
  Connection.prototype._hello = function (t, data) {
    clearTimeout(t.deadline);
    t.helloed = true;
    var fromProbe = t === this._probe;
    var previous = this.transport;
    if (fromProbe) {
      this._probe = null;
      var old = this._active;
      this._active = t;
      if (old) old.close();
      this._pendingReconnect = false;
      this._heldHTTP = null;
      this._probeDelay = this.opts.probeDelay;
      this._note("ws", "upgraded", "from " + previous);
    }
    var resumed = data["halley:resumed"] === true && this._session === data.socket_id;
    var lost = this._session && !resumed ? { previous: this._session, reason: data["halley:reason"] || "expired" } : null;
    if (!resumed) {
      this._session = data.socket_id;
      this._token = data["halley:token"];
      this._lastSeq = 0;
      this._ackedSeq = 0;
      this._held = Object.create(null);
      this._httpQueue = [];  // messages for the old session
    }
    this.socket_id = this._session;
    if (data.activity_timeout) this._activityTimeout = Math.min(this.opts.activityTimeout, data.activity_timeout * 1000);
    this._lastRx = now();
    this._pingAt = 0;
    this._lastGood = t.name;
    if (this.opts.rememberTransport) this.memory.remember(t.name);
    this.transport = t.name;
    this._note(t.name, "connected", resumed ? "resumed " + this._session + " after seq " + (t.resume ? t.resume.lastSeq : 0) : "new session " + this._session + (lost ? " (" + lost.reason + ")" : ""));
    if (previous !== t.name) {
      // took: from the first attempt of this chain (or the probe's start) to this hello.
      var sw = { at: now(), from: previous, to: t.name, reason: fromProbe ? "upgrade" : previous ? "reconnect" : "initial",
        took: now() - (fromProbe ? t.startedAt : this._chainStartedAt) };
      this.switches.push(sw);
      this.emit("transport", sw);
    }
    this._setState("connected", { transport: t.name, resumed: resumed });
    if (lost) this.emit("halley:session_lost", lost);
    this.client._connected(resumed);
    this._pump();
    this._scheduleProbe();
  };

  /** Every message of the active transport (or the probe) comes here. */
  Connection.prototype._receive = function (t, msg) {
    if (t !== this._active && t !== this._probe) return;
    if (msg.event === "pusher:connection_established") {
      var data = typeof msg.data === "string" ? parseJSON(msg.data) : msg.data;
      if (data && data.socket_id) this._hello(t, data);
      return;
    }
    if (t === this._probe) return;  // nothing else comes before the hello
    if (!t.helloed) return;         // a poll's pong or heartbeat before its session is known
    this._lastRx = now();
    this._pingAt = 0;
    var seq = msg["halley:seq"];
    if (typeof seq !== "number") return this.client._dispatch(msg);
    if (seq <= this._lastSeq) return;  // already dispatched (resent after a resume)
    if (seq > this._lastSeq + 1) { this._held[seq] = msg; return; }
    this._lastSeq = seq;
    this.client._dispatch(msg);
    while (this._held[this._lastSeq + 1]) {
      var next = this._held[this._lastSeq + 1];
      delete this._held[this._lastSeq + 1];
      this._lastSeq++;
      this.client._dispatch(next);
    }
    for (var k in this._held) if (+k <= this._lastSeq) delete this._held[k];
    this._scheduleAck();
  };

  Connection.prototype._scheduleAck = function () {
    var self = this;
    if (this._ackTimer) return;
    this._ackTimer = setTimeout(function () {
      self._ackTimer = null;
      var t = self._active;
      if (!t || !t.helloed || self._lastSeq <= self._ackedSeq) return;
      if (t.name === "poll") { self._ackedSeq = self._lastSeq; return; }  // its cursor acknowledges
      var seq = self._lastSeq;
      if (t.send([{ event: "halley:ack", data: { seq: seq } }]) !== false) self._ackedSeq = seq;
    }, this.opts.ackInterval);
  };

  // -- sending

  /** Queues a message (or a Promise of one, for Blob payloads) in order. `channel`: held
   *  until that channel is subscribed on the current session. */
  Connection.prototype.send = function (msg, channel) {
    this._out.push({ msg: msg, channel: channel || null });
    if (msg && typeof msg.then === "function") {
      var entry = this._out[this._out.length - 1], self = this;
      msg.then(function (m) { entry.msg = m; self._pump(); }, function (e) { entry.msg = null; self.emit("error", { type: "SendError", error: String(e) }); self._pump(); });
    }
    this._pump();
    return true;
  };
  Connection.prototype._pump = function () {
    var t = this._active;
    if (this.state !== "connected" || !t || !t.helloed) return;
    var batch = [];
    while (this._out.length) {
      var e = this._out[0];
      if (e.msg && typeof e.msg.then === "function") break;  // a Blob still being read
      this._out.shift();
      if (!e.msg) continue;
      if (e.channel && !e.channel.subscribed) { e.channel._waiting.push(e.msg); continue; }
      batch.push(e.msg);
    }
    if (batch.length && t.send(batch) === false) this._out = batch.map(function (m) { return { msg: m }; }).concat(this._out);
  };
  /** Sends now if connected (used for subscriptions on the current session). */
  Connection.prototype._sendNow = function (msg) {
    var t = this._active;
    if (this.state !== "connected" || !t || !t.helloed) return false;
    return t.send([msg]) !== false;
  };

  /** POST /halley/send for the HTTP transports: one request in flight, the rest batched
   *  behind it, so messages reach the hub in order. `session` overrides the current one
   *  (a resuming poll's nudge). */
  Connection.prototype._httpSend = function (list, session) {
    var s = session || this._resumeParams();
    if (!s) return false;
    for (var i = 0; i < list.length; i++) this._httpQueue.push({ msg: list[i], session: s.session, token: s.token, tries: 0 });
    this._httpFlush();
    return true;
  };
  Connection.prototype._httpFlush = function () {
    if (this._httpBusy || !this._httpQueue.length) return;
    var first = this._httpQueue[0], batch = [];
    while (this._httpQueue.length && this._httpQueue[0].session === first.session) batch.push(this._httpQueue.shift());
    var self = this;
    this._httpBusy = true;
    var url = this.client.origin + "/halley/send?session=" + encodeURIComponent(first.session);
    // text/plain keeps the request "simple" (no CORS preflight); the hub reads the body as JSON.
    // The token travels in the body, never in the URL.
    var body = { "halley:token": first.token, messages: batch.map(function (b) { return b.msg; }) };
    fetch(url, { method: "POST", body: JSON.stringify(body), cache: "no-store",
      credentials: "omit", headers: { "Content-Type": "text/plain;charset=UTF-8" } })
      .then(function (res) {
        self._httpBusy = false;
        if (!res.ok && res.status !== 404 && res.status !== 400) throw new Error("HTTP " + res.status);
        self._httpFlush();
      })
      .catch(function () {
        // Not known to have arrived: try again (a resend of a subscribe or ack is harmless),
        // unless the session has changed meanwhile.
        self._httpBusy = false;
        var again = batch.filter(function (b) { return ++b.tries < 5 && b.session === self._session; });
        self._httpQueue = again.concat(self._httpQueue);
        setTimeout(function () { self._httpFlush(); }, 500);
      });
  };
  /** Last words when the page goes away (the fetch may not finish): sendBeacon. */
  Connection.prototype._beacon = function (list) {
    var s = this._resumeParams();
    if (!s || typeof navigator === "undefined" || !navigator.sendBeacon) return false;
    var url = this.client.origin + "/halley/send?session=" + encodeURIComponent(s.session);
    var body = { "halley:token": s.token, messages: list };
    return navigator.sendBeacon(url, new Blob([JSON.stringify(body)], { type: "text/plain;charset=UTF-8" }));
  };

  // -- probing WebSocket from a fallback transport

  Connection.prototype._scheduleProbe = function () {
    var self = this;
    clearTimeout(this._probeTimer);
    if (this.transport === "ws" || this._order().indexOf("ws") < 0 || !this.opts.probeDelay) return;
    var delay = this._probeDelay;
    this._probeDelay = Math.min(this.opts.probeMaxDelay, delay * 2);
    this._probeTimer = setTimeout(function () { self._startProbe(); }, delay);
  };
  Connection.prototype._startProbe = function () {
    if (this.state !== "connected" || this.transport === "ws" || this._probe || !this._active) return;
    var t = new WSTransport(this, this._resumeParams()), self = this;
    this._probe = t;
    this._note("ws", "probe", "from " + this.transport + ", resume after seq " + this._lastSeq);
    t.deadline = setTimeout(function () {
      if (t.closed || t.helloed) return;
      t.close();
      self._probeFailed(t, { timeout: true });
    }, this.opts.wsTimeout);
    t.start();
  };
  Connection.prototype._probeFailed = function (t, info) {
    clearTimeout(t.deadline);
    if (this._probe !== t) return;
    this._probe = null;
    this._note("ws", "probe failed", info.timeout ? "timeout" : info.code ? "close " + info.code : info.error || "closed");
    this._scheduleProbe();
    // The fallback transport waited while the probe ran: let it go on.
    if (this._pendingReconnect) {
      this._pendingReconnect = false;
      this._heldHTTP = null;
      if (this._wanted) this._startChain(Math.max(0, this._order().indexOf(this.transport)));
    } else if (this._heldHTTP) {
      var fn = this._heldHTTP;
      this._heldHTTP = null;
      fn();
    }
  };
  /** While a probe runs, an HTTP transport must not attach again (it would take the session
   *  back from the probe): its next request waits for the probe's outcome. */
  Connection.prototype._holdHTTP = function (t, fn) {
    if (!this._probe || t !== this._active) return false;
    this._heldHTTP = fn;
    return true;
  };

  // -- liveness, online/offline

  Connection.prototype._watch = function () {
    var self = this;
    if (this._watchTimer) return;
    this._watchTimer = setInterval(function () {
      var t = self._active;
      if (self.state !== "connected" || !t || !t.helloed) return;
      var quiet = now() - self._lastRx;
      if (self._pingAt && now() - self._pingAt > self.opts.pongTimeout) {
        self._note(t.name, "no pong", "dropping the transport");
        t.close();
        self._transportDown(t, { error: "pong timeout" });
      } else if (!self._pingAt && quiet > self._activityTimeout) {
        self._pingAt = now();
        t.send([{ event: "pusher:ping", data: {} }]);
      }
    }, 1000);
    if (typeof window !== "undefined" && window.addEventListener && !this._onlineBound) {
      this._onlineBound = true;
      window.addEventListener("offline", function () { self._offline(); });
      window.addEventListener("online", function () { self._online(); });
    }
  };
  Connection.prototype._offline = function () {
    if (!this._wanted) return;
    this._note(this.transport, "offline", "the browser went offline");
    if (this._probe) { this._probe.close(); this._probe = null; }
    var t = this._active;
    this._active = null;
    if (t) t.close();
    this._setState("unavailable", "offline");
    this._retry(this.opts.backoffMax, this._preferred());  // the online event usually comes first
  };
  Connection.prototype._online = function () {
    if (!this._wanted || this.state === "connected") return;
    this._note(null, "online", "reconnecting now");
    this._attempt = 0;
    var t = this._active;
    this._active = null;
    if (t) t.close();
    this._startChain(this._preferred());
  };

  Connection.prototype._stopTimers = function () {
    clearTimeout(this._retryTimer); this._retryTimer = null;
    clearTimeout(this._probeTimer); this._probeTimer = null;
    clearTimeout(this._ackTimer); this._ackTimer = null;
    clearInterval(this._watchTimer); this._watchTimer = null;
  };

  Connection.prototype.disconnect = function () {
    this._wanted = false;
    this._stopTimers();
    if (this._probe) { this._probe.close(); this._probe = null; }
    var t = this._active;
    this._active = null;
    if (t) t.close();
    this.transport = null;
    this._setState("disconnected");
  };

  // ---- channels -----------------------------------------------------------------------------

  function Channel(name, client) {
    Emitter.call(this);
    this.name = name;
    this.client = client;
    this.subscribed = false;
    this.subscriptionPending = false;
    this.subscriptionCount = null;
    this.epoch = null;          // the channel's history epoch and the last offset seen in it
    this.offset = null;
    this._session = null;       // the session the subscribe was sent on
    this._waiting = [];         // client events waiting for the subscription
  }
  mixin(Channel);
  Channel.prototype.isPrivate = function () { return this.name.indexOf("private-") === 0 || this.name.indexOf("presence-") === 0; };

  /** Client events (`client-…`, private and presence channels). Binary payloads (ArrayBuffer,
   *  typed array, DataView, Blob) go as base64 with `halley:binary` and arrive as binary. */
  Channel.prototype.trigger = function (event, data) {
    if (String(event).indexOf("client-") !== 0) throw new Error("client events must start with 'client-'");
    var name = this.name, msg;
    if (isBinary(data)) {
      msg = bytesOf(data).then(function (b) { return { event: event, channel: name, data: toBase64(b), "halley:binary": true }; });
    } else {
      msg = { event: event, channel: name, data: data === undefined ? {} : data };
    }
    return this.client.connection.send(msg, this);
  };
  Channel.prototype.unsubscribe = function () { this.client.unsubscribe(this.name); };
  Channel.prototype.cancelSubscription = Channel.prototype.unsubscribe;

  Channel.prototype._track = function (msg) {
    var e = msg["halley:epoch"], o = msg["halley:offset"];
    if (e != null && e !== this.epoch) { this.epoch = e; this.offset = o != null ? o : null; return; }
    if (typeof o === "number" && (this.offset == null || o > this.offset)) this.offset = o;
  };

  Channel.prototype._succeeded = function (msg) {
    var recovered = msg["halley:recovered"];
    var previousEpoch = this.epoch;
    this._track(msg);
    this.subscribed = true;
    this.subscriptionPending = false;
    var data = decodeData(msg.data);
    if (this.members) {
      this.members._set(data && data.presence);
      this.emit("pusher:subscription_succeeded", this.members);
    } else {
      this.emit("pusher:subscription_succeeded", data);
    }
    if (recovered === true) this.emit("halley:recovered", { epoch: this.epoch, since: msg["halley:since"] });
    if (recovered === false) {
      this.emit("halley:not_recovered", { reason: msg["halley:reason"] || "unknown", epoch: this.epoch,
        previousEpoch: previousEpoch, offset: this.offset });
    }
    var waiting = this._waiting;
    this._waiting = [];
    for (var i = 0; i < waiting.length; i++) this.client.connection.send(waiting[i], this);
  };

  /** Presence members (pusher-js): count, me, each(fn), get(id). */
  function Members() { this._reset(); this.myID = null; this.me = null; }
  Members.prototype._reset = function () { this.members = {}; this.count = 0; };
  Members.prototype._set = function (p) {
    this._reset();
    if (!p) return;
    var hash = p.hash || {};
    var ids = p.ids || Object.keys(hash);
    for (var i = 0; i < ids.length; i++) this.members[ids[i]] = hash[ids[i]] == null ? null : hash[ids[i]];
    this.count = ids.length;
    if (this.myID != null && this.myID in this.members) this.me = { id: this.myID, info: this.members[this.myID] };
  };
  Members.prototype._add = function (d) {
    var fresh = !(d.user_id in this.members);
    this.members[d.user_id] = d.user_info == null ? null : d.user_info;
    if (fresh) this.count++;
    return { id: d.user_id, info: this.members[d.user_id] };
  };
  Members.prototype._remove = function (d) {
    if (!(d.user_id in this.members)) return null;
    var m = { id: d.user_id, info: this.members[d.user_id] };
    delete this.members[d.user_id];
    this.count--;
    return m;
  };
  Members.prototype.get = function (id) {
    return Object.prototype.hasOwnProperty.call(this.members, id) ? { id: id, info: this.members[id] } : null;
  };
  Members.prototype.each = function (fn) {
    for (var id in this.members) if (Object.prototype.hasOwnProperty.call(this.members, id)) fn({ id: id, info: this.members[id] });
  };

  // ---- authorization ------------------------------------------------------------------------

  /** One request for every channel waiting: `socket_id=S&channel_name[0]=A&channel_name[1]=B`
   *  (pusher-js-auth's batch format), answered `{"A": {"status": 200, "data": {"auth": …,
   *  "channel_data": …}}, "B": {"status": 403}}` (a bare `{auth, channel_data}` per channel
   *  is accepted too). `batch: false`: one pusher-js request per channel
   *  (`socket_id=S&channel_name=A` → `{auth, channel_data}`), for any Pusher backend. */
  function endpointAuthorizer(cfg) {
    function post(body) {
      var headers = extend({ "Content-Type": "application/x-www-form-urlencoded" }, cfg.headers);
      return fetch(cfg.endpoint, { method: "POST", headers: headers, body: body, credentials: cfg.credentials || "same-origin" })
        .then(function (res) {
          return res.text().then(function (t) {
            if (!res.ok) { var err = new Error("auth endpoint answered " + res.status); err.status = res.status; throw err; }
            var j = parseJSON(t);
            if (!j) throw new Error("auth endpoint answered no JSON");
            return j;
          });
        });
    }
    function extra() {
      var params = typeof cfg.params === "function" ? cfg.params() : cfg.params, s = "";
      for (var k in params || {}) s += "&" + encodeURIComponent(k) + "=" + encodeURIComponent(params[k]);
      return s;
    }
    return function (socketId, names) {
      if (cfg.batch === false) {
        return Promise.all(names.map(function (n) {
          return post("socket_id=" + encodeURIComponent(socketId) + "&channel_name=" + encodeURIComponent(n) + extra())
            .then(function (j) { return j; }, function (e) { return e; });
        })).then(function (list) {
          var out = {};
          names.forEach(function (n, i) { out[n] = list[i]; });
          return out;
        });
      }
      var body = "socket_id=" + encodeURIComponent(socketId);
      names.forEach(function (n, i) { body += "&channel_name%5B" + i + "%5D=" + encodeURIComponent(n); });
      return post(body + extra()).then(function (j) {
        var out = {};
        names.forEach(function (n) {
          var r = j[n];
          if (!r) { out[n] = Object.assign(new Error("no authorization for " + n), { status: 404 }); return; }
          if (r.status && r.status !== 200) { out[n] = Object.assign(new Error("authorization refused"), { status: r.status }); return; }
          out[n] = r.data || r;
        });
        return out;
      });
    };
  }

  // ---- the client -------------------------------------------------------------------------

  function resolveOrigin(host, forceTLS) {
    if (!host) return Halley.defaultOrigin || SCRIPT_ORIGIN;
    if (/^(https?|wss?):\/\//.test(host)) return new URL(host.replace(/^ws/, "http")).origin;
    var tls = forceTLS != null ? forceTLS : typeof location !== "undefined" && location.protocol === "https:";
    return (tls ? "https://" : "http://") + host.replace(/\/+$/, "");
  }

  /** new Halley(key, options): see DEFAULTS for the options. */
  function Halley(key, options) {
    if (!(this instanceof Halley)) return new Halley(key, options);
    if (!key) throw new Error("Halley: an app key is required");
    Emitter.call(this);
    var opts = extend({}, DEFAULTS, options);
    if (!opts.storage) { try { opts.storage = global.localStorage; } catch (e) { opts.storage = null; } }
    this.key = key;
    this.config = opts;
    this.origin = resolveOrigin(opts.host, opts.forceTLS);
    this.channels = Object.create(null);
    var authCfg = extend({}, opts.auth, opts.channelAuthorization);
    if (opts.authEndpoint && !authCfg.endpoint) authCfg.endpoint = opts.authEndpoint;
    this._authorize = opts.authorizer || authCfg.customHandler || (authCfg.endpoint ? endpointAuthorizer(authCfg) : null);
    this._authQueue = [];
    this.connection = new Connection(this, opts);
    var self = this;
    if (opts.disconnectOnPageHide && typeof window !== "undefined" && window.addEventListener) {
      // Leave presence channels at once rather than after the session's linger; a page
      // restored from the back/forward cache connects again (and recovers from history).
      window.addEventListener("pagehide", function () {
        self._hidden = self.connection._wanted;
        if (self._hidden) self.disconnect();
      });
      window.addEventListener("pageshow", function (ev) {
        if (ev.persisted && self._hidden) { self._hidden = false; self.connect(); }
      });
    }
    if (opts.autoConnect) this.connect();
  }
  mixin(Halley);
  Halley.VERSION = VERSION;
  Halley.defaultOrigin = null;   // set by halley.mjs from import.meta.url
  Halley.scriptOrigin = SCRIPT_ORIGIN;
  Halley.DEFAULTS = DEFAULTS;

  Halley.prototype.connect = function () { this.connection.connect(); return this; };
  /** Leaves every channel (so presence rosters update at once) and closes the transport. The
   *  session stays resumable on the hub for its linger time; connect() starts a new one. */
  Halley.prototype.disconnect = function () {
    this._leave();
    this.connection.disconnect();
    this.connection._session = null;
    for (var n in this.channels) {
      this.channels[n].subscribed = false;
      this.channels[n]._session = null;
    }
    return this;
  };
  Halley.prototype._leave = function () {
    var c = this.connection, list = [];
    for (var n in this.channels) if (this.channels[n]._session === c._session) list.push({ event: "pusher:unsubscribe", data: { channel: n } });
    if (!list.length || c.state !== "connected" || !c._active) return;
    if (c._active.name === "ws") c._active.send(list);
    else c._beacon(list);
  };

  Halley.prototype.channel = function (name) { return this.channels[name] || null; };
  Halley.prototype.allChannels = function () {
    var out = [];
    for (var n in this.channels) out.push(this.channels[n]);
    return out;
  };

  Halley.prototype.subscribe = function (name) {
    var ch = this.channels[name];
    if (ch) return ch;
    ch = this.channels[name] = new Channel(name, this);
    if (name.indexOf("presence-") === 0) ch.members = new Members();
    if (this.connection.state === "connected") this._subscribeNow([ch]);
    return ch;
  };

  Halley.prototype.unsubscribe = function (name) {
    var ch = this.channels[name];
    if (!ch) return;
    delete this.channels[name];
    ch.subscribed = false;
    if (ch._session && ch._session === this.connection._session) {
      this.connection._sendNow({ event: "pusher:unsubscribe", data: { channel: name } }) ||
        this.connection.send({ event: "pusher:unsubscribe", data: { channel: name } });
    }
    ch._session = null;
  };

  /** pusher-js send_event: any event, optionally on a channel. */
  Halley.prototype.send_event = function (event, data, channel) {
    return this.connection.send({ event: event, data: data, channel: channel });
  };

  /** The connection is up: on a new session, every channel is subscribed again (with its
   *  epoch and offset, to recover what was missed from the channel's history); on a resumed
   *  one, only channels added meanwhile. */
  Halley.prototype._connected = function (resumed) {
    var sid = this.connection._session, todo = [];
    for (var n in this.channels) {
      var ch = this.channels[n];
      if (ch._session !== sid) {
        if (!resumed) ch.subscribed = false;
        todo.push(ch);
      }
    }
    if (todo.length) this._subscribeNow(todo);
  };

  Halley.prototype._subscribeNow = function (channels) {
    var sid = this.connection._session, self = this;
    channels.forEach(function (ch) {
      ch._session = sid;
      ch.subscriptionPending = true;
      if (ch.isPrivate()) self._authQueue.push(ch);
      else self.connection._sendNow(self._subscribeMessage(ch, null));
    });
    if (this._authQueue.length && !this._authTimer) {
      // Channels subscribed in the same turn share one authorization request.
      this._authTimer = setTimeout(function () { self._authTimer = null; self._authorizeWaiting(); }, 0);
    }
  };

  Halley.prototype._subscribeMessage = function (ch, auth) {
    var data = { channel: ch.name };
    if (auth) {
      data.auth = auth.auth;
      if (auth.channel_data) data.channel_data = auth.channel_data;
    }
    if (ch.epoch != null && ch.offset != null) data["halley:since"] = { epoch: ch.epoch, offset: ch.offset };
    return { event: "pusher:subscribe", data: data };
  };

  Halley.prototype._authorizeWaiting = function () {
    var sid = this.connection._session, self = this;
    var list = this._authQueue.filter(function (ch) { return self.channels[ch.name] === ch && ch._session === sid; });
    this._authQueue = [];
    if (!list.length) return;
    function refuse(ch, err) {
      ch.subscriptionPending = false;
      ch.emit("pusher:subscription_error", { type: "AuthError", error: String(err && err.message || err), status: err && err.status || 0 });
    }
    if (!this._authorize) {
      list.forEach(function (ch) { refuse(ch, new Error("no channelAuthorization endpoint or authorizer configured")); });
      return;
    }
    var names = list.map(function (ch) { return ch.name; });
    Promise.resolve().then(function () { return self._authorize(sid, names); }).then(function (answers) {
      if (self.connection._session !== sid) return;  // a new session subscribes again
      list.forEach(function (ch) {
        if (self.channels[ch.name] !== ch) return;
        var a = answers && answers[ch.name];
        if (!a || a instanceof Error || !a.auth) return refuse(ch, a instanceof Error ? a : new Error("no auth for " + ch.name));
        if (ch.members && a.channel_data) {
          var cd = parseJSON(a.channel_data);
          if (cd && cd.user_id != null) ch.members.myID = String(cd.user_id);
        }
        self.connection._sendNow(self._subscribeMessage(ch, a)) || self.connection.send(self._subscribeMessage(ch, a));
      });
    }, function (err) {
      list.forEach(function (ch) { refuse(ch, err); });
    });
  };

  /** A message in the session's order. */
  Halley.prototype._dispatch = function (msg) {
    var event = msg.event, name = msg.channel, ch = name ? this.channels[name] : null;
    switch (event) {
      case "pusher:error": {
        var d = decodeData(msg.data) || {};
        this.connection.emit("error", { type: "PusherError", data: d, code: d.code, message: d.message });
        return;
      }
      case "pusher:pong": case "halley:heartbeat": case "halley:reconnect": return;
      case "pusher_internal:subscription_succeeded":
        if (ch) ch._succeeded(msg);
        return;
      case "pusher:subscription_error":
        if (ch) {
          ch.subscriptionPending = false;
          ch.emit("pusher:subscription_error", decodeData(msg.data));
        }
        return;
      case "pusher_internal:member_added":
        if (ch && ch.members) {
          ch._track(msg);
          ch.emit("pusher:member_added", ch.members._add(decodeData(msg.data)));
        }
        return;
      case "pusher_internal:member_removed":
        if (ch && ch.members) {
          ch._track(msg);
          var gone = ch.members._remove(decodeData(msg.data));
          if (gone) ch.emit("pusher:member_removed", gone);
        }
        return;
      case "halley:gap":
        if (ch) ch.emit("halley:gap", decodeData(msg.data));
        return;
    }
    if (!ch) {
      // A channel left meanwhile: dropped. An event without a channel: to the client's binds.
      if (!name) this.emit(event, decodeData(msg.data), { event: event, seq: msg["halley:seq"] });
      return;
    }
    ch._track(msg);
    var data;
    if (msg.__binary || msg["halley:binary"]) {
      var buf = msg.__binary ? msg.data : fromBase64(msg.data);
      data = this.config.binaryType === "blob" && typeof Blob !== "undefined" ? new Blob([buf]) : buf;
    } else {
      data = decodeData(msg.data);
    }
    var meta = { channel: name, event: event, offset: msg["halley:offset"], seq: msg["halley:seq"], binary: !!(msg.__binary || msg["halley:binary"]) };
    if (msg.user_id != null) meta.user_id = msg.user_id;
    ch.emit(event, data, meta);
    this.emit(event, data, meta);
  };

  // ---- export -------------------------------------------------------------------------------

  global.Halley = Halley;
  if (typeof module === "object" && module && module.exports) module.exports = Halley;
})(typeof globalThis !== "undefined" ? globalThis : typeof self !== "undefined" ? self : this);
