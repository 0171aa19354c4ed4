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
 * - Private and presence channels and user sign-in are authorized as pusher-js does
 *   (`channelAuthorization` / `userAuthentication`: a form POST of `socket_id` and
 *   `channel_name` to `/pusher/auth`, or `customHandler(params, callback)`), so a backend written
 *   for pusher-js (Laravel's `/broadcasting/auth`, an SDK's `authorizeChannel`) answers as is;
 *   `channelAuthorization.batch: true` asks for every waiting channel in one request.
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
    confirmTimeout: 4000,         // ms for the answer to the ping sent after the hello (WebSocket, SSE): a
                                  // transport is up only once it has carried traffic both ways
    holeTimeout: 3000,            // ms a missing seq is waited for before the session is resumed
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
    shareConnection: true,        // tabs of this page origin share one session with the hub (Web Locks + BroadcastChannel)
    // pusher-js's forms (https://pusher.com/docs/channels/using_channels/authorized-connections/):
    // {endpoint ("/pusher/auth"), transport ("ajax"), params, headers, headersProvider(),
    //  paramsProvider(), customHandler({socketId, channelName}, callback(error, {auth, channel_data})),
    //  credentials (fetch's, default "same-origin"); Halley's own: batch (true: one request
    //  for every channel waiting, pusher-js-auth's batch format), batchHandler(socketId, names)
    //  -> Promise<{name: {auth, channel_data}}>}
    channelAuthorization: null,
    // {endpoint ("/pusher/user-auth"), transport, params, headers, headersProvider(), paramsProvider(),
    //  customHandler({socketId}, callback(error, {auth, user_data}))}: for signin()
    userAuthentication: null,
    authEndpoint: null,           // pusher-js's older shorthand for channelAuthorization.endpoint
    auth: null,                   // pusher-js's older {headers, params}
    authorizer: null,             // pusher-js's older (channel, options) -> {authorize(socketId, callback)}
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
    try {
      if (!this.storage) return;
      var v = parseJSON(this.storage.getItem(this.key)) || {};
      v.transport = name;
      v.until = now() + this.ttl;
      if (v.broken && v.broken[name]) delete v.broken[name];
      this.storage.setItem(this.key, JSON.stringify(v));
    } catch (e) { /* ignore */ }
  };
  /** A transport that opened and then carried nothing back (a proxy that passes the WebSocket
   *  handshake and then forwards nothing, or holds frames): not tried first again for the TTL
   *  (still probed, which costs nothing when it fails). */
  TransportMemory.prototype.markBroken = function (name) {
    try {
      if (!this.storage) return;
      var v = parseJSON(this.storage.getItem(this.key)) || {};
      v.broken = v.broken || {};
      v.broken[name] = now() + this.ttl;
      if (v.transport === name) delete v.transport;
      this.storage.setItem(this.key, JSON.stringify(v));
    } catch (e) { /* ignore */ }
  };
  TransportMemory.prototype.isBroken = function (name) {
    try {
      var v = this.storage && parseJSON(this.storage.getItem(this.key));
      return !!(v && v.broken && v.broken[name] > now());
    } catch (e) { return false; }
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

  /** The hub's JSON error body of a refused HTTP request, classified by its `code` (the
   *  Pusher close code of the same refusal on WebSocket; docs/PROTOCOL.md): 4000–4099 stop,
   *  4100–4199 (over capacity, a per-address limit) back off. Without a code (a proxy's 403 or
   *  404 on one path) the next transport is tried; a 429 or 503 without one backs off. */
  function httpRefusal(status, body) {
    var j = parseJSON(body) || {};
    var code = typeof j.code === "number" ? j.code : 0;
    return { status: status, code: code, error: String(j.error || "HTTP " + status), reason: j["halley:reason"] || null,
      fatal: code >= 4000 && code < 4100,
      backoff: (code >= 4100 && code < 4200) || (!code && (status === 429 || status === 503)) };
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

  // Long-polling: GET /halley/poll opens the session and answers at once; then POST
  // /halley/poll (the token in the body) waits for messages after its cursor, which
  // acknowledges everything up to it.
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
    // A session's poll is a POST whose text/plain body carries the token: a "simple" request
    // (no CORS preflight per poll, as a header would need) with no token in its URL.
    var init = { cache: "no-store", credentials: "omit", signal: this.abort.signal };
    if (params) {
      init.method = "POST";
      init.headers = { "Content-Type": "text/plain;charset=UTF-8" };
      init.body = JSON.stringify({ "halley:token": params.token });
    }
    fetch(url, init).then(function (res) {
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
    this._brokenHere = Object.create(null);  // transports found silent on this page
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
  /** The transports to try, in order: the configured ones, less those found silent here (for
   *  `transportTTL`), unless that would leave none. */
  Connection.prototype._order = function () {
    var all = this.opts.transports.filter(function (t) { return TRANSPORTS.indexOf(t) >= 0; }), self = this;
    var working = all.filter(function (t) { return !self._brokenHere[t] && !(self.opts.rememberTransport && self.memory.isBroken(t)); });
    return working.length ? working : all;
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
    // An HTTP transport learns the hub's code from its `pusher:error` before the stream ends or
    // the poll is answered (a WebSocket from its close frame): 4200 (a hub draining) is "at once".
    var code = info.code || t.hubCode || 0;
    var detail = info.timeout ? "timeout" : info.silent ? "silent" : code ? "close " + code + (info.reason ? " " + info.reason : "")
      : info.status ? "HTTP " + info.status + " " + (info.error || "") : info.ended ? "ended" : info.error || "closed";
    if (!info.timeout && !info.silent) this._note(t.name, t.confirmed ? "dropped" : "failed", detail);
    if (!this._wanted) return;
    if ((code >= 4000 && code < 4100) || info.fatal) return this._fail(t, detail);
    if (!t.confirmed) {
      // Not up: the next transport at once; after the last, back off and start over.
      // The one after it in the configured order (it may just have left `_order()`, found silent).
      var order = this._order(), all = this.opts.transports, next = order.length;
      for (var k = all.indexOf(t.name) + 1; k < all.length; k++) {
        if (order.indexOf(all[k]) >= 0) { next = order.indexOf(all[k]); break; }
      }
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

  /** The hub's first message: the session is new, or resumed. The transport is not up yet:
   *  a proxy may have passed the handshake and this first message and nothing after (some
   *  antivirus scanners and corporate proxies do), so the client pings and waits for the pong
   *  (`confirmTimeout`) before it counts the transport as up (`_confirm`). Long-polling is
   *  request and answer by nature: up at once. */
  Connection.prototype._hello = function (t, data) {
    clearTimeout(t.deadline);
    t.helloed = true;
    t.hello = data;
    if (t !== this._probe) this._adopt(t, data);
    if (t.name === "poll") return this._confirm(t);
    var self = this, limit = this.opts.confirmTimeout;
    t.send([{ event: "pusher:ping", data: {} }]);
    t.confirmTimer = setTimeout(function () {
      if (t.closed || t.confirmed) return;
      self._note(t.name, "silent", "no answer to a ping within " + limit + " ms: remembered as broken here");
      self._brokenHere[t.name] = true;
      self.memory.markBroken(t.name);
      t.close();
      if (t === self._probe) self._probeFailed(t, { silent: true });
      else self._transportDown(t, { silent: true });
    }, limit);
  };

  /** Takes the session the hub named in `data` (new, or the one resumed). */
  Connection.prototype._adopt = function (t, data) {
    var resumed = data["halley:resumed"] === true && this._session === data.socket_id;
    t.resumed = resumed;
    t.lost = this._session && !resumed ? { previous: this._session, reason: data["halley:reason"] || "expired" } : null;
    if (!resumed) {
      this._session = data.socket_id;
      this._token = data["halley:token"];
      this._lastSeq = 0;
      this._ackedSeq = 0;
      this._held = Object.create(null);
      this._httpQueue = [];  // messages for the old session
      clearTimeout(this._holeTimer);
      this._holeTimer = null;
      this._holeResumedAt = null;
    }
    this.socket_id = this._session;
    if (data.activity_timeout) this._activityTimeout = Math.min(this.opts.activityTimeout, data.activity_timeout * 1000);
  };

  /** The transport carried traffic both ways: it is up. */
  Connection.prototype._confirm = function (t) {
    clearTimeout(t.confirmTimer);
    t.confirmed = true;
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
      this._adopt(t, t.hello);
      this._note("ws", "upgraded", "from " + previous);
    }
    var early = t.early || [];
    t.early = null;
    var resumed = t.resumed, lost = t.lost;
    this._lastRx = now();
    this._pingAt = 0;
    this._lastGood = t.name;
    delete this._brokenHere[t.name];
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
    for (var i = 0; i < early.length && this._active === t; i++) this._receive(t, early[i]);
    this.client._connected(resumed);
    this._pump();
    this._scheduleProbe();
  };

  /** Every message of the active transport (or the probe) comes here. */
  Connection.prototype._receive = function (t, msg) {
    if (t !== this._active && t !== this._probe) return;
    if (msg.event === "pusher:error") {
      var err = typeof msg.data === "string" ? parseJSON(msg.data) : msg.data;
      if (err && err.code >= 4000 && err.code < 4300) t.hubCode = err.code;
    }
    if (msg.event === "pusher:connection_established") {
      var data = typeof msg.data === "string" ? parseJSON(msg.data) : msg.data;
      if (data && data.socket_id && !t.helloed) this._hello(t, data);
      return;
    }
    if (t.helloed && !t.confirmed && msg.event === "pusher:pong") return this._confirm(t);
    if (t === this._probe) {
      // Once it has its hello the hub sends the session's messages on the probe only: kept
      // for when it is confirmed (then dispatched, in order), dropped with it if it fails.
      if (t.helloed) (t.early || (t.early = [])).push(msg);
      return;
    }
    if (!t.helloed) return;         // a poll's pong or heartbeat before its session is known
    this._lastRx = now();
    this._pingAt = 0;
    var seq = msg["halley:seq"];
    if (typeof seq !== "number") return this.client._dispatch(msg);
    if (seq <= this._lastSeq) return;  // already dispatched (resent after a resume)
    if (seq > this._lastSeq + 1) { this._held[seq] = msg; this._watchHole(t); return; }
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

  /** Messages after a missing seq wait for it (the hub sends in order, so a hole means a
   *  message went astray between transports). If it does not come within `holeTimeout`, the
   *  transport is dropped and the session resumed from the last seq dispatched (the hub
   *  resends what followed); if the hole is still there after that (the hub no longer has it),
   *  the client goes on from the next message it holds and reports the loss. */
  Connection.prototype._watchHole = function (t) {
    var self = this, from = this._lastSeq;
    if (this._holeTimer) return;
    this._holeTimer = setTimeout(function () {
      self._holeTimer = null;
      var held = Object.keys(self._held).map(Number).sort(function (a, b) { return a - b; });
      if (!held.length || self._lastSeq > from) return;  // filled meanwhile
      if (self._holeResumedAt !== from) {
        self._holeResumedAt = from;
        self._note(t.name, "hole", "seq " + (from + 1) + " missing: resuming after " + from);
        var a = self._active;
        if (a) { a.close(); self._transportDown(a, { error: "missing seq" }); }
        return;
      }
      self._note(t.name, "hole", "seq " + (from + 1) + " to " + (held[0] - 1) + " lost");
      self.emit("error", { type: "HalleyError", error: "messages lost", from: from + 1, to: held[0] - 1 });
      self._lastSeq = held[0] - 1;
      var first = self._held[held[0]];
      delete self._held[held[0]];
      self._receive(self._active || t, first);
    }, this.opts.holeTimeout);
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
    if (this._follower) return this._follower._pump();
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
    if (this.transport === "ws" || this.opts.transports.indexOf("ws") < 0 || !this.opts.probeDelay) return;
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
    clearTimeout(t.confirmTimer);
    this._note("ws", "probe failed", info.timeout ? "timeout" : info.silent ? "silent" : info.code ? "close " + info.code : info.error || "closed");
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
    clearTimeout(this._holeTimer); this._holeTimer = null;
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
    var share = this.client._share;
    if (share && share.role === "leader") Promise.resolve(msg).then(function (m) { share._relayClientEvent(m, null); });
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

  /** Presence members (pusher-js): count, me, each(fn), get(id). `members` has no prototype
   *  and is read with hasOwnProperty only: a user id "constructor", "toString" or "__proto__"
   *  is a member like any other. */
  var own = Object.prototype.hasOwnProperty;
  function Members() { this._reset(); this.myID = null; this.me = null; }
  Members.prototype._reset = function () { this.members = Object.create(null); this.count = 0; };
  Members.prototype._set = function (p) {
    this._reset();
    if (!p) return;
    var hash = p.hash || {};
    var ids = p.ids || Object.keys(hash);
    for (var i = 0; i < ids.length; i++) {
      var id = String(ids[i]);
      if (!own.call(this.members, id)) this.count++;
      this.members[id] = own.call(hash, id) && hash[id] != null ? hash[id] : null;
    }
    if (this.myID != null && own.call(this.members, this.myID)) this.me = { id: this.myID, info: this.members[this.myID] };
  };
  Members.prototype._add = function (d) {
    var id = String(d.user_id), fresh = !own.call(this.members, id);
    this.members[id] = d.user_info == null ? null : d.user_info;
    if (fresh) this.count++;
    return { id: id, info: this.members[id] };
  };
  Members.prototype._remove = function (d) {
    var id = String(d.user_id);
    if (!own.call(this.members, id)) return null;
    var m = { id: id, info: this.members[id] };
    delete this.members[id];
    this.count--;
    return m;
  };
  Members.prototype.get = function (id) {
    return own.call(this.members, id) ? { id: id, info: this.members[id] } : null;
  };
  /** The roster as the hub sends it (`{ids, hash, count}`), for a tab that joins later. */
  Members.prototype._export = function () {
    var ids = [], hash = Object.create(null);
    for (var id in this.members) if (own.call(this.members, id)) { ids.push(id); hash[id] = this.members[id]; }
    return { ids: ids, hash: hash, count: ids.length };
  };
  Members.prototype.each = function (fn) {
    for (var id in this.members) if (own.call(this.members, id)) fn({ id: id, info: this.members[id] });
  };

  // ---- authorization ------------------------------------------------------------------------

  function formBody(fields) {
    var out = [];
    for (var k in fields) if (own.call(fields, k) && fields[k] != null) out.push(encodeURIComponent(k) + "=" + encodeURIComponent(fields[k]));
    return out.join("&");
  }

  /** POSTs `fields` (and the configured params) form-encoded to `cfg.endpoint`, as pusher-js's
   *  ajax transport does; resolves with the JSON answer, rejects with an Error carrying
   *  `status` on a non-2xx answer. */
  function authRequest(cfg, what, fields) {
    if (cfg.transport && cfg.transport !== "ajax") return Promise.reject(new Error(what + ": transport " + cfg.transport + " is not supported (use ajax)"));
    var params = extend({}, typeof cfg.params === "function" ? cfg.params() : cfg.params, cfg.paramsProvider && cfg.paramsProvider());
    var headers = extend({ "Content-Type": "application/x-www-form-urlencoded" }, cfg.headers, cfg.headersProvider && cfg.headersProvider());
    return fetch(cfg.endpoint, { method: "POST", headers: headers, body: formBody(extend({}, params, fields)), credentials: cfg.credentials || "same-origin" })
      .then(function (res) {
        return res.text().then(function (t) {
          if (!res.ok) {
            throw extend(new Error("Unable to retrieve auth string from " + what + " endpoint - received status: " + res.status + " from " + cfg.endpoint), { status: res.status });
          }
          var j = parseJSON(t);
          if (!j) throw extend(new Error("JSON returned from " + what + " endpoint was invalid, yet status code was 200. Data was: " + t), { status: res.status });
          return j;
        });
      });
  }

  /** pusher-js's customHandler(params, callback) as a Promise. */
  function viaCallback(fn, params) {
    return new Promise(function (resolve, reject) {
      fn(params, function (err, data) { if (err) reject(err instanceof Error ? err : new Error(String(err))); else resolve(data); });
    });
  }

  /** How this client authorizes channels: pusher-js's forms by default (one form POST per
   *  channel, `socket_id` + `channel_name` → `{auth, channel_data, shared_secret}`), or a
   *  batch (`batch: true`: `socket_id=S&channel_name[0]=A&channel_name[1]=B` answered
   *  `{"A": {"status": 200, "data": {auth, channel_data}}, "B": {"status": 403}}`; an endpoint
   *  that answers a batch with an error gets single requests from then on). */
  function ChannelAuthorizer(opts) {
    var cfg = extend({ endpoint: "/pusher/auth" }, opts.auth, opts.channelAuthorization);
    if (opts.authEndpoint && !(opts.channelAuthorization && opts.channelAuthorization.endpoint)) cfg.endpoint = opts.authEndpoint;
    this.cfg = cfg;
    this.opts = opts;
    this.batchWorks = cfg.batch === true || !!cfg.batchHandler;
  }
  ChannelAuthorizer.prototype.one = function (socketId, name) {
    var cfg = this.cfg, opts = this.opts;
    if (cfg.customHandler) return viaCallback(cfg.customHandler, { socketId: socketId, channelName: name });
    if (opts.authorizer) {
      var a = opts.authorizer({ name: name }, opts);
      return new Promise(function (resolve, reject) {
        a.authorize(socketId, function (err, data) { if (err) reject(err instanceof Error ? err : new Error(String(err))); else resolve(data); });
      });
    }
    return authRequest(cfg, "channel-authorization", { socket_id: socketId, channel_name: name });
  };
  /** Resolves with {name: authData | Error} for every name. */
  ChannelAuthorizer.prototype.all = function (socketId, names) {
    var self = this;
    function singly() {
      return Promise.all(names.map(function (n) {
        return self.one(socketId, n).then(function (d) { return d; }, function (e) { return e; });
      })).then(function (list) {
        var out = {};
        names.forEach(function (n, i) { out[n] = list[i]; });
        return out;
      });
    }
    if (!this.batchWorks || (names.length < 2 && !this.cfg.batchHandler)) return singly();
    var request = this.cfg.batchHandler ? Promise.resolve(this.cfg.batchHandler(socketId, names)) : authRequest(this.cfg, "channel-authorization",
      (function () { var f = { socket_id: socketId }; names.forEach(function (n, i) { f["channel_name[" + i + "]"] = n; }); return f; })());
    return request.then(function (j) {
      var out = {}, isBatch = j && typeof j === "object" && names.every(function (n) { return j[n] && typeof j[n] === "object"; });
      if (!isBatch) throw new Error("not a batch answer");
      names.forEach(function (n) {
        var r = j[n];
        if (r.status && r.status !== 200) out[n] = extend(new Error("authorization refused for " + n), { status: r.status });
        else out[n] = r.data || r;
      });
      return out;
    }).catch(function (e) {
      if (self.cfg.batchHandler) throw e;
      // A stock backend (one channel_name per request) refused the batch: single requests,
      // now and from now on.
      self.batchWorks = false;
      return singly();
    });
  };

  /** The signed-in user (pusher-js's `pusher.user`): `signin()`, then `bind(event, fn)` gets
   *  the events the app's backend sends to the user (`#server-to-user-{id}`). */
  function UserFacade(client) {
    Emitter.call(this);
    this.client = client;
    this.user_data = null;
    this.signin_requested = false;
    this._serverChannel = null;
    this._pending = false;
  }
  mixin(UserFacade);
  UserFacade.prototype.signin = function () {
    this.signin_requested = true;
    var share = this.client._share;
    if (share && share.role === "follower") share._post({ t: "signin", tab: share.tab });  // the leader signs the session in
    else if (this.client.connection.state === "connected") this._signin();
    return this;
  };
  UserFacade.prototype._signin = function () {
    var c = this.client.connection, sid = c._session, self = this, opts = this.client.config;
    if (!this.signin_requested || this._pending || !sid) return;
    var cfg = extend({ endpoint: "/pusher/user-auth" }, opts.userAuthentication);
    this._pending = true;
    var req = cfg.customHandler ? viaCallback(cfg.customHandler, { socketId: sid }) : authRequest(cfg, "user-authentication", { socket_id: sid });
    req.then(function (a) {
      self._pending = false;
      if (c._session !== sid) return self._signin();  // a new session meanwhile
      if (!a || !a.auth || a.user_data == null) throw new Error("user-authentication answered no auth and user_data");
      c.send({ event: "pusher:signin", data: { auth: a.auth, user_data: a.user_data } });
    }).catch(function (e) {
      self._pending = false;
      // Through the dispatch, so that the tabs sharing this session hear it too.
      self.client._dispatch({ event: "halley:signin_error", data: { error: String(e && e.message || e), status: e && e.status || 0 } });
    });
  };
  UserFacade.prototype._succeeded = function (data) {
    var d = decodeData(data) || {};
    this.user_data = typeof d.user_data === "string" ? parseJSON(d.user_data) : d.user_data;
    var id = this.user_data && this.user_data.id;
    if (id == null) return;
    var name = "#server-to-user-" + id, self = this;
    if (!this._serverChannel || this._serverChannel.name !== name) {
      if (this._serverChannel) this.client.unsubscribe(this._serverChannel.name);
      this._serverChannel = this.client.subscribe(name);
      this._serverChannel.bind_global(function (event, payload, meta) {
        if (event.indexOf("pusher") !== 0 && event.indexOf("halley:") !== 0) self.emit(event, payload, meta);
      });
    } else if (this._serverChannel._session !== this.client.connection._session) {
      this.client._subscribeNow([this._serverChannel]);  // signed in again on a new session
    }
    this.emit("pusher:signin_success", this.user_data);
  };
  /** A new session: sign in again (a resumed one still is). */
  UserFacade.prototype._connected = function (resumed) {
    if (!resumed) this.user_data = null;
    if (this.signin_requested && !resumed) this._signin();
  };

  // ---- one connection for all tabs ----------------------------------------------------------
  //
  // The tabs of one page origin that use one hub and key share one session: the tab holding
  // the Web Lock "halley:<hub>:<key>" (the leader) runs the transport and subscribes, on the
  // hub, every channel any tab wants (a presence channel counts the user once); the others
  // (followers) reach it over the BroadcastChannel of the same name. The leader passes on every
  // message it dispatches; each tab dispatches those of its own channels, once (by seq). A
  // client event one tab sends on a private or presence channel reaches the other tabs too, as
  // it would with a connection each. The leader also sends a snapshot (session, token,
  // channels, who wants what): when its tab closes, the lock goes to another tab, which takes
  // the old leader's last messages, then resumes the same session from the last seq it saw, so
  // nothing is lost. Every tab of the session has the same socket_id. Not SharedWorker: a
  // worker's script must be on the page's own origin, and a hub usually serves halley.js from
  // its own.

  var SHARING = Object.create(null);  // share names taken by a client of this page
  var TAKEOVER_GRACE = 300;           // ms a new leader waits for the old one's last messages

  function Share(client) {
    this.client = client;
    this.name = "halley:" + client.origin + ":" + client.key;
    this.tab = Math.random().toString(36).slice(2) + now().toString(36);
    this.role = null;                         // "pending", "follower", "taking" or "leader"
    this.tabs = Object.create(null);          // leader: other tabs → {channel: true}
    this.channels = Object.create(null);      // leader: channels only other tabs want
    this.snap = null;                         // follower: the leader's last snapshot
    this.session = null;                      // follower: the session of lastSeq
    this.lastSeq = 0;                         // follower: last seq passed on
    this.sent = [];                           // follower: messages the leader has not acknowledged
    this.sendId = 0;
    this.away = false;                        // follower: left (pagehide); offsets may be behind
    this._release = null;
    this._lockWanted = false;
    this._orphans = [];
    this._snapTimer = null;
    var self = this;
    this.bc = new BroadcastChannel(this.name);
    this.bc.onmessage = function (ev) { self._got(ev.data); };
    client.connection.bind("state_change", function () { if (self.role === "leader") self._snapshot(); });
  }
  Share.available = function () {
    return typeof BroadcastChannel !== "undefined" && typeof navigator !== "undefined" && !!navigator.locks &&
      typeof navigator.locks.request === "function";
  };
  Share.prototype._post = function (m) { try { this.bc.postMessage(m); } catch (e) { report(e); } };

  /** connect(): the lock decides. */
  Share.prototype.start = function () {
    var self = this;
    if (this.role === "leader") return this.client.connection.connect();
    if (this.role === "follower" || this.role === "pending" || this.role === "taking") return;
    this.role = "pending";
    if (this._lockWanted) return this._follow();  // a lock request is queued already
    navigator.locks.request(this.name, { ifAvailable: true }, function (lock) {
      if (lock) return self._lead();
      self._follow();
      self._lockWanted = true;
      navigator.locks.request(self.name, function () { self._lockWanted = false; return self._lead(); });
      return null;
    });
  };

  /** disconnect(): true when it was handled here (a follower leaves; a leader with other tabs
   *  hands the session over instead of leaving its channels). */
  Share.prototype.stop = function () {
    var c = this.client.connection;
    if (this.role === "follower" || this.role === "pending" || this.role === "taking") {
      this._post({ t: "leave", tab: this.tab });
      this.role = null;
      this.away = true;
      c._follower = null;
      c._wanted = false;
      c._setState("disconnected");
      return true;
    }
    if (this.role === "leader" && Object.keys(this.tabs).length) {
      // Its own channels that no other tab wants stay on the hub until the next leader's hello
      // (it leaves them then): a presence roster sees this tab's user leave only if no other
      // tab of the session has the channel.
      this._snapshot(true);
      this._post({ t: "leaving", tab: this.tab });
      this.role = null;
      this.away = true;
      c.disconnect();
      c._session = null;
      for (var n in this.client.channels) { this.client.channels[n].subscribed = false; this.client.channels[n]._session = null; }
      this.tabs = Object.create(null);
      this.channels = Object.create(null);
      if (this._release) { var r = this._release; this._release = null; r(); }
      return true;
    }
    if (this.role === "leader" && this._release) { var r2 = this._release; this._release = null; this.role = null; later(r2); }
    return false;
  };

  Share.prototype._lead = function () {
    var self = this, was = this.role;
    var held = new Promise(function (resolve) { self._release = resolve; });
    if (was === null) { this._release(); this._release = null; return held; }  // stopped meanwhile
    if (was === "follower") {
      // The old leader's last messages may still be on their way: take them first (until its
      // `leaving`, at most TAKEOVER_GRACE ms), so the resume starts after the last one.
      this.role = "taking";
      this._takeTimer = setTimeout(function () { self._becomeLeader(true); }, TAKEOVER_GRACE);
      return held;
    }
    this._becomeLeader(false);
    return held;
  };
  Share.prototype._becomeLeader = function (takeOver) {
    clearTimeout(this._takeTimer);
    if (this.role !== "taking" && this.role !== "pending") return;
    this.role = "leader";
    if (takeOver) this._takeOver();
    else this.client.connection.connect();
    this._post({ t: "leader", tab: this.tab });
  };

  Share.prototype._follow = function () {
    if (this.role !== "pending") return;
    this.role = "follower";
    var c = this.client.connection;
    c._follower = this;
    c._wanted = true;
    c._setState("connecting");
    this._announce();
    this._pump();
  };
  Share.prototype._announce = function () {
    var offsets = {};
    for (var n in this.client.channels) offsets[n] = this.away ? this.client.channels[n].offset : null;
    this._post({ t: "join", tab: this.tab, channels: Object.keys(this.client.channels), offsets: offsets,
      signin: this.client.user.signin_requested });
    this.away = false;
    for (var i = 0; i < this.sent.length; i++) this._post(this.sent[i]);  // to the new leader
  };

  Share.prototype._got = function (m) {
    if (!m || m.tab === this.tab) return;
    if (this.role === "leader") this._leaderGot(m);
    else if (this.role === "follower" || this.role === "taking") this._followerGot(m);
  };

  // -- the leader

  Share.prototype._leaderGot = function (m) {
    var client = this.client;
    switch (m.t) {
      case "join":
        // The tab's whole set: what it no longer has (an unsubscribe lost in a leader change) goes.
        var had = this.tabs[m.tab] || Object.create(null), want = Object.create(null);
        this.tabs[m.tab] = Object.create(null);
        for (var i = 0; i < (m.channels || []).length; i++) {
          var n = m.channels[i];
          want[n] = true;
          this._want(m.tab, n, !!had[n], m.offsets && m.offsets[n]);
        }
        for (var old in had) if (!want[old]) this._unwant(m.tab, old);
        if (m.signin) client.user.signin();
        this._snapshot();
        break;
      case "sub": this._want(m.tab, m.channel, false, null); this._snapshot(); break;
      case "unsub": this._unwant(m.tab, m.channel); this._snapshot(); break;
      case "leave":
        var wanted = Object.keys(this.tabs[m.tab] || {});
        for (var j = 0; j < wanted.length; j++) this._unwant(m.tab, wanted[j]);
        delete this.tabs[m.tab];
        this._snapshot();
        break;
      case "signin": client.user.signin(); break;
      case "send":
        if (m.id) this._post({ t: "sent", to: m.tab, id: m.id });
        var ch = m.channel ? client._hubChannel(m.channel) : null;
        client.connection.send(m.msg, ch || undefined);
        this._relayClientEvent(m.msg, m.tab);
        break;
    }
  };

  /** The leader's answer to a tab that joins a channel already on the hub. `behind`: the
   *  tab left (bfcache) and comes back with an older offset: it is told it missed some. */
  Share.prototype._succeededFor = function (ch, behind) {
    var m = { event: "pusher_internal:subscription_succeeded", channel: ch.name,
      data: JSON.stringify(ch.members ? { presence: ch.members._export() } : {}),
      "halley:epoch": ch.epoch, "halley:offset": ch.offset };
    if (ch.members && ch.members.myID != null) m["halley:my_id"] = ch.members.myID;
    if (behind) { m["halley:recovered"] = false; m["halley:reason"] = "missed_while_away"; }
    return m;
  };

  /** Tab `tab` wants `name`: subscribed on the hub if nobody had it; a tab that joins a channel
   *  subscribed already gets its subscription answer (the roster, for presence) from here. */
  Share.prototype._want = function (tab, name, quiet, offset) {
    var client = this.client;
    (this.tabs[tab] || (this.tabs[tab] = Object.create(null)))[name] = true;
    var ch = client.channels[name] || this.channels[name];
    if (!ch) {
      ch = this.channels[name] = new Channel(name, client);
      if (name.indexOf("presence-") === 0) ch.members = new Members();
      if (client.connection.state === "connected") client._subscribeNow([ch]);
      return;
    }
    if (ch.subscribed && !quiet) {
      var behind = offset != null && ch.offset != null && offset < ch.offset;
      this._post({ t: "msg", to: tab, session: client.connection._session, msg: this._succeededFor(ch, behind) });
    }
  };
  Share.prototype._wantedElsewhere = function (name) {
    for (var t in this.tabs) if (this.tabs[t][name]) return true;
    return false;
  };
  Share.prototype._unwant = function (tab, name) {
    if (this.tabs[tab]) delete this.tabs[tab][name];
    if (this.client.channels[name] || this._wantedElsewhere(name)) return;
    var ch = this.channels[name];
    delete this.channels[name];
    if (ch) this._unsubscribeOnHub(ch);
  };
  Share.prototype._unsubscribeOnHub = function (ch) {
    var c = this.client.connection;
    if (ch._session && ch._session === c._session) {
      c._sendNow({ event: "pusher:unsubscribe", data: { channel: ch.name } }) || c.send({ event: "pusher:unsubscribe", data: { channel: ch.name } });
    }
    ch._session = null;
  };
  /** The leader's page subscribes a channel another tab has on the hub: the same object
   *  becomes the page's (a subscription or authorization in flight goes on). */
  Share.prototype._adopt = function (name) {
    var ch = this.channels[name];
    delete this.channels[name];
    this.client.channels[name] = ch;
    if (ch.subscribed) later(function () { ch.emit("pusher:subscription_succeeded", ch.members || {}); });
    return ch;
  };
  /** The leader's page leaves a channel other tabs still want: the object stays on the hub,
   *  without the page's handlers. */
  Share.prototype._keep = function (ch) {
    ch.unbind_all();
    this.channels[ch.name] = ch;
  };

  Share.prototype._broadcast = function (msg) {
    if (!Object.keys(this.tabs).length) return;
    if (msg.event === "pusher_internal:subscription_succeeded" && msg.channel) {
      var ch = this.client._hubChannel(msg.channel);
      if (ch && ch.members && ch.members.myID != null) { msg = extend({}, msg); msg["halley:my_id"] = ch.members.myID; }
    }
    this._post({ t: "msg", session: this.client.connection._session, msg: msg });
  };
  /** A client event sent by one tab goes to the hub (for other sessions) and to the other tabs
   *  of this session that have the channel, as separate connections would get it: only on the
   *  channels where the hub relays client events (private and presence, not encrypted), with
   *  the user's id on presence channels. */
  Share.prototype._relayClientEvent = function (msg, fromTab) {
    if (!msg || !msg.channel || String(msg.event).indexOf("client-") !== 0) return;
    var name = msg.channel;
    if (!(name.indexOf("private-") === 0 || name.indexOf("presence-") === 0) || name.indexOf("private-encrypted-") === 0) return;
    var copy = { event: msg.event, channel: name, data: typeof msg.data === "string" ? msg.data : JSON.stringify(msg.data) };
    if (msg["halley:binary"]) copy["halley:binary"] = true;
    var ch = this.client._hubChannel(name);
    if (ch && ch.members && ch.members.myID != null) copy.user_id = ch.members.myID;
    this._post({ t: "msg", except: fromTab, session: this.client.connection._session, msg: copy });
    if (fromTab && this.client.channels[name]) this.client._dispatchLocal(copy);
  };

  Share.prototype._snapshot = function (now_) {
    var self = this;
    if (!now_) {
      if (this._snapTimer) return;
      this._snapTimer = setTimeout(function () { self._snapTimer = null; self._snapshot(true); }, 0);
      return;
    }
    var c = this.client.connection, channels = {}, all = this.client._hubChannels(), tabs = {};
    for (var n in all) {
      var ch = all[n];
      channels[n] = { epoch: ch.epoch, offset: ch.offset, subscribed: ch.subscribed && ch._session === c._session,
        myID: ch.members ? ch.members.myID : null, mine: !!this.client.channels[n] };
    }
    for (var t in this.tabs) tabs[t] = Object.keys(this.tabs[t]);
    this._post({ t: "snap", tab: this.tab, state: c.state, transport: c.transport, session: c._session, token: c._token,
      channels: channels, tabs: tabs, signin: this.client.user.signin_requested });
  };
  /** After every hello of the leader's session: channels no tab wants any more (the previous
   *  leader's own) leave the hub. */
  Share.prototype._connected = function () {
    if (this.role !== "leader") return;
    var orphans = this._orphans;
    this._orphans = [];
    for (var i = 0; i < orphans.length; i++) {
      var ch = this.channels[orphans[i]];
      if (ch && !this._wantedElsewhere(ch.name) && !this.client.channels[ch.name]) {
        delete this.channels[ch.name];
        this._unsubscribeOnHub(ch);
      }
    }
    this._snapshot();
  };

  // -- a follower

  Share.prototype._followerGot = function (m) {
    var c = this.client.connection;
    switch (m.t) {
      case "leader": if (this.role === "follower") this._announce(); break;
      case "leaving": if (this.role === "taking") this._becomeLeader(true); break;
      case "snap":
        this.snap = m;
        if (this.role !== "follower") break;
        this._newSession(m.session);
        c.socket_id = m.session;
        c.transport = m.transport;
        if (m.state && m.state !== "initialized") c._setState(m.state);
        break;
      case "sent":
        if (m.to !== this.tab) break;
        this.sent = this.sent.filter(function (x) { return x.id !== m.id; });
        break;
      case "msg":
        if ((m.to && m.to !== this.tab) || m.except === this.tab) return;
        this._newSession(m.session);
        var seq = m.msg["halley:seq"];
        if (typeof seq === "number") {
          if (seq <= this.lastSeq) return;
          this.lastSeq = seq;
        }
        this.client._dispatchLocal(m.msg);
        break;
    }
  };
  Share.prototype._newSession = function (session) {
    if (!session || session === this.session) return;
    this.session = session;
    this.lastSeq = 0;
  };
  /** The follower's messages go to the leader (a Blob being read waits its turn), kept until
   *  the leader acknowledges them: a leader change in between sends them to the next one. */
  Share.prototype._pump = function () {
    var c = this.client.connection;
    while (c._out.length) {
      var e = c._out[0];
      if (e.msg && typeof e.msg.then === "function") break;
      c._out.shift();
      if (!e.msg) continue;
      var m = { t: "send", tab: this.tab, id: ++this.sendId, msg: e.msg, channel: e.channel ? e.channel.name : null };
      this.sent.push(m);
      this._post(m);
    }
  };

  /** This tab takes over (the leader's tab closed): the same session, resumed after the last
   *  seq this tab saw, with every channel any tab wants still subscribed on it (presence ones
   *  subscribed again: the hub answers with the roster as it is now). */
  Share.prototype._takeOver = function () {
    var c = this.client.connection, s = this.snap, client = this.client, mine;
    c._follower = null;
    this.tabs = Object.create(null);
    this.channels = Object.create(null);
    this._orphans = [];
    var unsent = this.sent;
    this.sent = [];
    if (s && s.session && s.session === this.session) {
      c._session = s.session;
      c._token = s.token;
      c._lastSeq = this.lastSeq;
      c._ackedSeq = 0;
      c._held = Object.create(null);
      for (var t in s.tabs) {
        if (t === this.tab) continue;
        var set = this.tabs[t] = Object.create(null);
        for (var i = 0; i < s.tabs[t].length; i++) set[s.tabs[t][i]] = true;
      }
      for (var n in s.channels) {
        var info = s.channels[n];
        mine = client.channels[n];
        var ch = mine || new Channel(n, client);
        if (ch.epoch == null) { ch.epoch = info.epoch; ch.offset = info.offset; }
        if (n.indexOf("presence-") === 0) {
          if (!ch.members) ch.members = new Members();
          if (info.myID != null) ch.members.myID = info.myID;
        } else if (info.subscribed) {
          ch._session = s.session;
          ch.subscribed = true;
        }
        if (!mine) {
          this.channels[n] = ch;
          if (!this._wantedElsewhere(n)) this._orphans.push(n);  // the old leader's alone
        }
      }
      if (s.signin) client.user.signin_requested = true;
    }
    // What this tab sent and the old leader did not acknowledge goes out on the session now.
    for (var k = 0; k < unsent.length; k++) {
      var cm = unsent[k].channel ? client._hubChannel(unsent[k].channel) : null;
      c.send(unsent[k].msg, cm || undefined);
    }
    c._wanted = false;
    c.connect();
  };

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
    this._authorizer = new ChannelAuthorizer(opts);
    this._authQueue = [];
    this.user = new UserFacade(this);
    this.connection = new Connection(this, opts);
    // One client per page shares (the first for this hub and key): a second client in the same
    // page asked for a connection of its own.
    var shareName = "halley:" + this.origin + ":" + key;
    this._share = opts.shareConnection && Share.available() && !SHARING[shareName] ? new Share(this) : null;
    if (this._share) SHARING[shareName] = true;
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

  Halley.prototype.connect = function () {
    if (this._share) this._share.start();
    else this.connection.connect();
    return this;
  };
  /** pusher-js's user sign-in: asks `userAuthentication` for a signature and sends
   *  `pusher:signin`; then `halley.user.bind(event, fn)` gets the events sent to the user.
   *  Signed in again by itself on every new session. */
  Halley.prototype.signin = function () { this.user.signin(); return this; };
  /** Leaves every channel (so presence rosters update at once) and closes the transport. The
   *  session stays resumable on the hub for its linger time; connect() starts a new one. */
  Halley.prototype.disconnect = function () {
    if (this._share && this._share.stop()) return this;  // a follower, or a leader that handed over
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
    var share = this._share;
    if (share && share.role === "follower") {
      share._post({ t: "sub", tab: share.tab, channel: name });
      return ch;
    }
    if (share && share.role === "leader" && share.channels[name]) {
      delete this.channels[name];
      return share._adopt(name);  // another tab has it on the hub already: the same object
    }
    if (this.connection.state === "connected") this._subscribeNow([ch]);
    return ch;
  };

  Halley.prototype.unsubscribe = function (name) {
    var ch = this.channels[name];
    if (!ch) return;
    delete this.channels[name];
    var share = this._share;
    if (share && share.role === "follower") {
      ch.subscribed = false;
      share._post({ t: "unsub", tab: share.tab, channel: name });
      return;
    }
    if (share && share.role === "leader" && share._wantedElsewhere(name)) {
      share._keep(ch);  // other tabs still want it: it stays on the hub
      return;
    }
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
    var all = this._hubChannels();
    for (var n in all) {
      var ch = all[n];
      if (ch._session !== sid) {
        if (!resumed) ch.subscribed = false;
        // The user's channel waits for the sign-in of the new session (UserFacade).
        if (n.indexOf("#server-to-user-") !== 0) todo.push(ch);
      }
    }
    if (todo.length) this._subscribeNow(todo);
    this.user._connected(resumed);
    if (this._share) this._share._connected();
  };

  /** The channel `name` this tab has on the hub: its own, or, leading shared tabs, theirs. */
  Halley.prototype._hubChannel = function (name) {
    var s = this._share;
    return this.channels[name] || (s && s.role === "leader" ? s.channels[name] : null) || null;
  };

  /** Every channel this tab has on the hub: its own, and, leading shared tabs, theirs. */
  Halley.prototype._hubChannels = function () {
    var s = this._share;
    if (!s || s.role !== "leader") return this.channels;
    var all = Object.create(null);
    for (var a in s.channels) all[a] = s.channels[a];
    for (var b in this.channels) all[b] = this.channels[b];
    return all;
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
    var list = this._authQueue.filter(function (ch) { return self._hubChannel(ch.name) === ch && ch._session === sid; });
    this._authQueue = [];
    if (!list.length) return;
    function refuse(ch, err) {
      // As the hub's own refusal would come: through the dispatch, so that other tabs sharing
      // this session and wanting the channel hear it too.
      self._dispatch({ event: "pusher:subscription_error", channel: ch.name,
        data: { type: "AuthError", error: String(err && err.message || err), status: err && err.status || 0 } });
    }
    var names = list.map(function (ch) { return ch.name; });
    Promise.resolve().then(function () { return self._authorizer.all(sid, names); }).then(function (answers) {
      if (self.connection._session !== sid) return;  // a new session subscribes again
      list.forEach(function (ch) {
        if (self._hubChannel(ch.name) !== ch) return;
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
  /** Dispatches a message another tab passed on (not passed on again). */
  Halley.prototype._dispatchLocal = function (msg) { this._dispatch(msg, true); };

  Halley.prototype._dispatch = function (msg, local) {
    var share = this._share;
    if (share && share.role === "leader" && !local) share._broadcast(msg);
    var event = msg.event, name = msg.channel, mine = name ? this.channels[name] : null;
    var ch = name ? this._hubChannel(name) : null;
    switch (event) {
      case "pusher:error": {
        var d = decodeData(msg.data) || {};
        this.connection.emit("error", { type: "PusherError", data: d, code: d.code, message: d.message });
        return;
      }
      case "pusher:pong": case "halley:heartbeat": case "halley:reconnect": return;
      case "pusher:signin_success":
        this.user._succeeded(msg.data);
        return;
      case "halley:signin_error":
        this.user.emit("pusher:signin_error", msg.data);
        this.connection.emit("error", { type: "AuthError", error: msg.data && msg.data.error });
        return;
      case "pusher_internal:subscription_succeeded":
        if (ch) {
          // A tab sharing the session learns the user it is from the leader, who authorized.
          if (ch.members && msg["halley:my_id"] != null) ch.members.myID = String(msg["halley:my_id"]);
          ch._succeeded(msg);
        }
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
    if (mine) this.emit(event, data, meta);
  };

  // ---- export -------------------------------------------------------------------------------

  global.Halley = Halley;
  if (typeof module === "object" && module && module.exports) module.exports = Halley;
})(typeof globalThis !== "undefined" ? globalThis : typeof self !== "undefined" ? self : this);
