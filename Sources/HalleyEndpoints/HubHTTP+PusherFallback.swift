import HalleyCore
import HalleyHub
import HalleyHTTP
import HalleyProtocol
import HalleyServer
import HalleyWebSocket

/// pusher-js's HTTP fallbacks, as pusher-js requests them (`src/core/http/`): every request a
/// POST under `/pusher/app/{key}/{server}/{session}/` (`httpPath` `/pusher`, pusher-js's
/// default; another one is not served):
/// - `xhr_streaming`: a response that lasts as long as the session (chunked), with a prelude,
///   `o`, then `a[...]` frames and `h` heartbeats; the client rotates it after 256 KiB;
/// - `xhr`: a poll, answered with what waits (or `h` after `pollTimeout`);
/// - `xhr_send`: a JSON array of JSON strings, each one a Pusher message (`[]`: a ping).
/// The session is named only by `{server}/{session}`: a hash of it picks the loop that owns it.
extension HubHTTP {
    static let pusherHTTPPlainHeaders = SharedBytes(
        Array(
            "Content-Type: application/javascript; charset=UTF-8\r\nCache-Control: no-store, no-cache, no-transform, must-revalidate, max-age=0\r\n"
                .utf8))

    static func pusherHTTPHeaders(origin: String?) -> [(String, String)] {
        var h = [
            ("Content-Type", "application/javascript; charset=UTF-8"),
            ("Cache-Control", "no-store, no-cache, no-transform, must-revalidate, max-age=0"),
        ]
        if let o = origin {
            h.append(("Access-Control-Allow-Origin", o))
            h.append(("Vary", "Origin"))
        }
        return h
    }

    /// A receive answer (a poll's frames, a refusal): SockJS's content type, never cached.
    static func pusherHTTPResponse(_ status: Int, _ body: [UInt8], origin: String?) -> HTTPResponse {
        var r = HTTPResponse(status: status, body: .bytes(body))
        if origin == nil {
            r.encodedHeaders = pusherHTTPPlainHeaders
        } else {
            r.headers = pusherHTTPHeaders(origin: origin)
        }
        return r
    }

    static func pusherHTTPText(_ status: Int, _ text: String, origin: String?) -> HTTPResponse {
        var h = [("Content-Type", "text/plain; charset=UTF-8")]
        if let o = origin {
            h.append(("Access-Control-Allow-Origin", o))
            h.append(("Vary", "Origin"))
        }
        return HTTPResponse(status: status, headers: h, body: .bytes(Array((text + "\n").utf8)))
    }
}

extension HubEndpoints {
    /// Adds pusher-js's HTTP fallback routes (called by `install`).
    func installPusherFallback(on router: Router) {
        let base = PusherHTTP.pathPrefix + "/app/{key}/{server}/{session}/"
        router.add([.post], base + "xhr_streaming") { [self] request, responder in
            routeFallback(request, responder) { $0.pusherReceive($1, $2, $3, streaming: true) }
        }
        router.add([.post], base + "xhr") { [self] request, responder in
            routeFallback(request, responder) { $0.pusherReceive($1, $2, $3, streaming: false) }
        }
        router.add([.post], base + "xhr_send") { [self] request, responder in
            routeFallback(request, responder) { $0.pusherSend($1, $2, $3) }
        }
        for kind in Self.pusherHTTPKinds {
            router.add([.options], base + kind) { [self] request, responder in pusherPreflight(request, responder) }
        }
    }

    /// Runs `body` on the loop that owns the session the path names (moving the connection).
    func routeFallback(
        _ request: HTTPRequest, _ responder: Responder,
        _ body: @escaping @Sendable (LoopEndpoints, HTTPRequest, Responder, String) -> Void
    ) {
        precondition(!loops.isEmpty, "HubEndpoints.attach() must run after Hub.attach, before requests")
        guard let (path, id) = Self.pusherHTTPPath(request) else {
            responder.respond(HubHTTP.pusherHTTPText(404, "Not found: bad server or session id", origin: nil))
            return
        }
        let owner = Self.pusherHTTPOwner(id, loops: loops.count)
        if owner != responder.loopIndex {
            responder.handOff(toLoop: owner, request) { [self] req, resp in
                serveFallback(loops[resp.loopIndex], req, resp, path, body)
            }
            return
        }
        serveFallback(loops[responder.loopIndex], request, responder, path, body)
    }

    /// With Redis: a session this loop does not hold may be another node's (recorded in Redis
    /// when it opened): its request is forwarded there; else served here (a new session).
    func serveFallback(
        _ le: LoopEndpoints, _ request: HTTPRequest, _ responder: Responder, _ path: String,
        _ body: @escaping @Sendable (LoopEndpoints, HTTPRequest, Responder, String) -> Void
    ) {
        guard hub.clustered, le.pusherHTTP.byPath[path] == nil, request.head.headers[Self.forwardedHeader] == nil
        else { return body(le, request, responder, path) }
        hub.broker.pusherSessionOwner(path, loop: responder.loopIndex) { [self] node in
            guard let node, node != hub.nodeNumber.load(ordering: .relaxed) else {
                return body(le, request, responder, path)
            }
            forward(request, responder, node: node) { body(le, request, responder, path) }
        }
    }
}

extension HubEndpoints {
    static let pusherHTTPKinds = ["xhr_streaming", "xhr", "xhr_send"]

    /// `key/server/session` when `server` and `session` are plausible ids (pusher-js: 0-999 and
    /// 8 characters of [0-9a-v]; SockJS: anything without a dot), else nil.
    static func pusherHTTPPath(_ request: HTTPRequest) -> (path: String, id: String)? {
        guard let key = request.parameters["key"], let server = request.parameters["server"],
            let session = request.parameters["session"]
        else { return nil }
        func plausible(_ s: String) -> Bool {
            !s.isEmpty && s.utf8.count <= 64
                && s.utf8.allSatisfy { c in
                    (c >= 48 && c <= 57) || (c >= 65 && c <= 90) || (c >= 97 && c <= 122) || c == 45 || c == 95
                }
        }
        guard plausible(server), plausible(session), !key.isEmpty, key.utf8.count <= 200 else { return nil }
        let id = server + "/" + session
        return (key + "/" + id, id)
    }

    /// The loop that owns the session `id` (`server/session`): FNV-1a of its bytes, so every
    /// request of the session lands on the same loop whatever loop accepted it.
    static func pusherHTTPOwner(_ id: String, loops: Int) -> Int {
        var h: UInt32 = 2_166_136_261
        for c in id.utf8 { h = (h ^ UInt32(c)) &* 16_777_619 }
        return Int(h % UInt32(max(1, loops)))
    }

    /// CORS: the hub's `--origins` (as on the WebSocket handshake: refused, 403), then the
    /// app's own origins when it has them. No `Origin`: not a browser, allowed.
    func pusherHTTPOrigin(_ request: HTTPRequest, app: App?) -> (allowed: Bool, origin: String?) {
        guard let o = request.head.headers["Origin"] else { return (true, nil) }
        return (config.origins.allows(o) && (app?.origins?.allows(o) ?? true), o)
    }

    /// CORS preflight: pusher-js sends `Content-Type: application/json`, so browsers ask first.
    func pusherPreflight(_ request: HTTPRequest, _ responder: Responder) {
        let (ok, origin) = pusherHTTPOrigin(request, app: hub.app(key: request.parameters["key"] ?? ""))
        guard ok else {
            responder.respond(HubHTTP.pusherHTTPText(403, "Forbidden: origin not allowed", origin: nil))
            return
        }
        var h: [(String, String)] = [
            ("Access-Control-Allow-Methods", "OPTIONS, POST"),
            ("Access-Control-Allow-Headers", request.head.headers["Access-Control-Request-Headers"] ?? "Content-Type"),
            ("Access-Control-Max-Age", "600"),
        ]
        if let o = origin {
            h.append(("Access-Control-Allow-Origin", o))
            h.append(("Vary", "Origin"))
        }
        responder.respond(HTTPResponse(status: 204, headers: h))
    }
}

extension LoopEndpoints {
    /// `xhr_streaming` / `xhr`: the first one opens the session (`o`, then
    /// `connection_established`); later ones re-attach (no `o`).
    func pusherReceive(_ request: HTTPRequest, _ responder: Responder, _ path: String, streaming: Bool) {
        let key = request.parameters["key"] ?? ""
        let app = hub.app(key: key)
        let (ok, origin) = endpoints.pusherHTTPOrigin(request, app: nil)
        guard ok else {
            Log.info("pusher-js \(path): origin \(origin ?? "-") refused")
            responder.respond(HubHTTP.pusherHTTPText(403, "Forbidden: origin not allowed", origin: nil))
            return
        }
        let client = endpoints.clientAddress(request, responder)
        if let t = pusherHTTP.byPath[path], ClientLimits.sameClient(t.client, client) {
            // The session's app checks every receive request's origin, not only the opening's
            // (as `xhr_send` does): a session is not a way around `allowed_origins`.
            // An ended session's transport lingers with no session: the path's app decides then.
            if let o = origin, let allowed = (t.session?.app ?? app)?.origins, !allowed.allows(o) {
                Log.info("pusher-js \(path): origin \(o) refused by the session's app")
                responder.respond(HubHTTP.pusherHTTPText(403, "Forbidden: origin not allowed", origin: nil))
                return
            }
            if streaming {
                guard let st = responder.startStream(status: 200, headers: Self.pusherStreamHeaders(origin)) else {
                    return
                }
                t.attach(stream: st, open: false)
            } else {
                t.attach(poll: responder, origin: origin)
            }
            return
        }
        // `o` first, so that pusher-js's handshake sees the code (a `c` before `o` is lost).
        func refuse(_ code: UInt16, _ message: String) {
            Log.info("pusher-js \(path): refused: \(code) \(message)")
            responder.respond(
                HubHTTP.pusherHTTPResponse(200, SockJS.open + SockJS.close(code: code, reason: message), origin: origin)
            )
        }
        guard let app = app else {
            return refuse(PusherErrorCode.applicationDoesNotExist, "Application does not exist")
        }
        guard app.enabled else { return refuse(PusherErrorCode.applicationDisabled, "Application disabled") }
        if let o = origin, let allowed = app.origins, !allowed.allows(o) {
            // As on WebSocket: the app's own origin list refuses with 4009 (so pusher-js stops).
            return refuse(PusherErrorCode.connectionUnauthorized, "Origin not allowed for this application")
        }
        let q = Query.parse(request.head.query)
        guard let p = Query.value(q, "protocol") else {
            return refuse(PusherErrorCode.noProtocolVersion, "No protocol version supplied")
        }
        guard let v = Int(p), (4...7).contains(v) else {
            return refuse(PusherErrorCode.unsupportedProtocolVersion, "Unsupported protocol version \(p)")
        }
        if pusherHTTP.byPath[path] != nil {
            // Another address names a live session: it is not that session's client.
            Log.debug("pusher-js \(path): a request from \(client), not the session's address: 404")
            responder.respond(HubHTTP.pusherHTTPText(404, "Not found: no such session", origin: origin))
            return
        }
        guard let s = loopHub.newSession(app: app, resumable: false, client: client) else {
            return refuse(loopHub.refusal.code, loopHub.refusal.message)
        }
        let t = PusherHTTPTransport(endpoints: self, path: path, client: client, session: s)
        t.kind = streaming ? .xhrStreaming : .xhrPolling
        pusherHTTP.byPath[path] = t
        if hub.clustered {  // other nodes forward this session's requests here
            hub.broker.setPusherSessionOwner(path, node: hub.nodeNumber.load(ordering: .relaxed), loop: loop.index)
        }
        s.attach(t, lastSeen: nil)
        t.sendControl(s.established(resumed: false, reason: nil))
        if streaming {
            guard let st = responder.startStream(status: 200, headers: Self.pusherStreamHeaders(origin)) else { return }
            t.attach(stream: st, open: true)
        } else {
            // SockJS polling: the first answer is `o` alone; the handshake comes with the next.
            t.respondFrame(responder, origin: origin, SockJS.open)
        }
    }

    static func pusherStreamHeaders(_ origin: String?) -> [(String, String)] {
        var h = HubHTTP.pusherHTTPHeaders(origin: origin)
        h.append(("X-Accel-Buffering", "no"))
        return h
    }

    /// `xhr_send`: each string of the array is one Pusher message for the session. 204 (the
    /// client ignores the answer); unknown session 404; a body that is not an array of
    /// strings 400. Any of them, `[]` included, tells the session its client is alive.
    func pusherSend(_ request: HTTPRequest, _ responder: Responder, _ path: String) {
        guard let t = pusherHTTP.byPath[path], let s = t.session,
            ClientLimits.sameClient(t.client, endpoints.clientAddress(request, responder))
        else {
            let (ok, origin) = endpoints.pusherHTTPOrigin(request, app: hub.app(key: request.parameters["key"] ?? ""))
            responder.respond(HubHTTP.pusherHTTPText(404, "Not found: no such session", origin: ok ? origin : nil))
            return
        }
        let (ok, origin) = endpoints.pusherHTTPOrigin(request, app: s.app)
        guard ok else {
            responder.respond(HubHTTP.pusherHTTPText(403, "Forbidden: origin not allowed", origin: nil))
            return
        }
        t.heard()
        let messages: [String]
        do {
            messages = try SockJS.parseSendBody(request.body)
        } catch {
            Log.info("pusher-js \(path): xhr_send: \(error)")
            responder.respond(HubHTTP.pusherHTTPText(400, error.description, origin: origin))
            return
        }
        for var m in messages {
            guard t.session === s else { break }  // a message ended the session
            m.withUTF8 { s.handle(text: UnsafeRawBufferPointer($0)) }
        }
        var h: [(String, String)] = [("Content-Type", "text/plain; charset=UTF-8")]
        if let o = origin {
            h.append(("Access-Control-Allow-Origin", o))
            h.append(("Vary", "Origin"))
        }
        responder.respond(HTTPResponse(status: 204, headers: h))
    }
}
