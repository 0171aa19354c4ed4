import HalleyCore
import HalleyHub
import HalleyHTTP
import HalleyLoop
import HalleyProtocol
import HalleyServer
import HalleyWebSocket

/// The hub's endpoints: the Pusher WebSocket path, SSE, long-polling, sending over HTTP,
/// and `POST /publish`.
enum HubHTTP {
    static func jsonHeaders(origin: String?) -> [(String, String)] {
        var h = [("Content-Type", "application/json")]
        if let o = origin {
            h.append(("Access-Control-Allow-Origin", o))
            h.append(("Vary", "Origin"))
        }
        return h
    }

    static func json(_ status: Int, _ body: [UInt8], origin: String? = nil) -> HTTPResponse {
        guard origin == nil else {
            return HTTPResponse(status: status, headers: jsonHeaders(origin: origin), body: .bytes(body))
        }
        // The common case (a backend's request): the header line encoded once.
        var r = HTTPResponse(status: status, body: .bytes(body))
        r.encodedHeaders = jsonContentType
        return r
    }

    static let jsonContentType = SharedBytes(Array("Content-Type: application/json\r\n".utf8))

    /// A refusal's `"halley:reason"` (docs/PROTOCOL.md, "Session tokens" and "How a session
    /// ends"): what a client acts on besides the code.
    enum Reason {
        /// The session the request names is over (or never was: `expired`).
        case session(SessionEnd)
        /// A session token in the URL, without `--allow-tokens-in-urls`.
        case tokenInURL

        var text: String {
            switch self {
            case .session(let end): end.rawValue
            case .tokenInURL: "token_in_url"
            }
        }
    }

    /// `{"error": message, "code": code, "halley:reason": reason}`. `code` is the Pusher close
    /// code the same refusal gets on WebSocket (docs/PROTOCOL.md, "Errors and close codes"):
    /// clients act on it (4000–4099 stop, 4100–4199 back off), never on the English text.
    static func error(
        _ status: Int, _ message: String, origin: String? = nil, reason: Reason? = nil, code: UInt16? = nil
    ) -> HTTPResponse {
        var b = JSONObjectBuilder()
        b.string("error", message)
        if let c = code { b.int("code", UInt64(c)) }
        if let r = reason { b.string("halley:reason", r.text) }
        return json(status, b.closed, origin: origin)
    }
}

extension HubEndpoints {
    /// Adds the hub's routes. `endpoint` is the WebSocket endpoint (origins, compression).
    public func install(on router: Router, endpoint: WebSocketHandshake.Endpoint) {
        router.add([.get], "/app/{key}") { [self] request, responder in
            routeToOwner(request, responder, forwardable: false) { $0.webSocket($1, $2, $3, endpoint: endpoint) }
        }
        router.add([.get], "/halley/sse") { [self] request, responder in
            routeToOwner(request, responder) { $0.sse($1, $2, $3) }
        }
        // POST too: a poll with `{"halley:token": …}` as a text/plain body is a simple request
        // (no CORS preflight, where a GET with X-Halley-Token needs one per distinct URL: one
        // per poll, as the cursor changes).
        router.add([.get, .post], "/halley/poll") { [self] request, responder in
            routeToOwner(request, responder) { $0.poll($1, $2, $3) }
        }
        router.add([.post], "/halley/send") { [self] request, responder in
            routeToOwner(request, responder) { $0.send($1, $2, $3) }
        }
        for path in ["/halley/sse", "/halley/poll", "/halley/send"] {
            router.add([.options], path) { [self] request, responder in preflight(request, responder) }
        }
        router.add([.post], "/publish") { [self] request, responder in
            timed(responder) { publishEndpoint(request, responder) }
        }
        router.add([.get], "/stats") { [self] request, responder in statsEndpoint(request, responder) }
        installPusherAPI(on: router)
        installPusherFallback(on: router)
    }

    /// The session a request names (`session`, or the SSE event id), if any.
    static func namedSession(_ request: HTTPRequest, _ q: [(String, String)]) -> SessionID? {
        if let s = Query.value(q, "session") { return SessionID(s) }
        if let id = request.head.headers["Last-Event-ID"] ?? Query.value(q, "last_event_id"),
            let e = Wire.parseEventID(id)
        {
            return SessionID(e.session)
        }
        return nil
    }

    /// Runs `body` on the loop that owns the session the request names (moving the
    /// connection there), or here for a new session. With Redis, an HTTP session's request
    /// (`forwardable`) for a session of another node is forwarded there; a WebSocket that
    /// resumes another node's session is served here (told `expired`, it subscribes again with
    /// its offsets and recovers from this node's history).
    func routeToOwner(
        _ request: HTTPRequest, _ responder: Responder, forwardable: Bool = true,
        _ body: @escaping @Sendable (LoopEndpoints, HTTPRequest, Responder, [(String, String)]) -> Void
    ) {
        precondition(!loops.isEmpty, "HubEndpoints.attach() must run after Hub.attach, before requests")
        // The router answers HEAD with GET routes; these would open a session or a stream.
        if request.method == .head {
            var r = HubHTTP.error(405, "HEAD opens no session; use GET")
            r.headers.append(("Allow", "GET"))
            responder.respond(r)
            return
        }
        let q = Query.parse(request.head.query)
        let named = Self.namedSession(request, q)  // once: a long-poll runs this per delivery
        if forwardable, let id = named, let node = ownerElsewhere(id, request) {
            forward(request, responder, node: node) { [self] in serveOnOwnerLoop(request, responder, q, id, body) }
            return
        }
        if let id = named {
            serveOnOwnerLoop(request, responder, q, id, body)
            return
        }
        body(loops[responder.loopIndex], request, responder, q)
    }

    /// Runs `body` on the loop that owns session `id` (moving the connection there).
    func serveOnOwnerLoop(
        _ request: HTTPRequest, _ responder: Responder, _ q: [(String, String)], _ id: SessionID,
        _ body: @escaping @Sendable (LoopEndpoints, HTTPRequest, Responder, [(String, String)]) -> Void
    ) {
        let owner = id.owner(loops: loops.count)
        if owner != responder.loopIndex {
            responder.handOff(toLoop: owner, request) { [self] req, resp in
                body(loops[resp.loopIndex], req, resp, q)
            }
            return
        }
        body(loops[responder.loopIndex], request, responder, q)
    }
}

extension HubEndpoints {
    /// The client a request comes from (a trusted proxy's client: `ClientLimitConfig`).
    func clientAddress(_ request: HTTPRequest, _ responder: Responder) -> IPAddress {
        if let c = request.head.headers[Self.clientHeader], isForwardedByANode(request), let ip = IPAddress(c[...]) {
            return ip  // the client as the node that forwarded the request saw it
        }
        return hub.clientLimits.clientAddress(peer: responder.peer, headers: request.head.headers)
    }

    /// CORS: the origin to echo, or a refusal (the WebSocket origin policy applies).
    func corsOrigin(_ request: HTTPRequest) -> (allowed: Bool, origin: String?) {
        guard let o = request.head.headers["Origin"] else { return (true, nil) }
        return (config.origins.allows(o), o)
    }

    func preflight(_ request: HTTPRequest, _ responder: Responder) {
        let (ok, origin) = corsOrigin(request)
        guard ok, let o = origin else {
            responder.respond(HubHTTP.error(403, "origin not allowed", code: PusherErrorCode.connectionUnauthorized))
            return
        }
        responder.respond(
            HTTPResponse(
                status: 204,
                headers: [
                    ("Access-Control-Allow-Origin", o), ("Vary", "Origin"),
                    ("Access-Control-Allow-Methods", "GET, POST, OPTIONS"),
                    ("Access-Control-Allow-Headers", "Content-Type, Last-Event-ID, Authorization, X-Halley-Token"),
                    ("Access-Control-Max-Age", "600"),
                ]))
    }
}

extension LoopEndpoints {
    // MARK: WebSocket

    func webSocket(
        _ request: HTTPRequest, _ responder: Responder, _ q: [(String, String)], endpoint: WebSocketHandshake.Endpoint
    ) {
        let key = request.parameters["key"] ?? ""
        let opening: WebSocketTransport.Opening
        if let app = hub.app(key: key) {
            let resumable = Query.value(q, "halley") == "1"
            if !app.enabled {
                opening = .refuse(PusherErrorCode.applicationDisabled, "Application disabled")
            } else if let o = app.origins, !o.allows(request.head.headers["Origin"]) {
                opening = .refuse(PusherErrorCode.connectionUnauthorized, "Origin not allowed for this application")
            } else if let p = Query.value(q, "protocol") {
                if let v = Int(p), (4...7).contains(v) {
                    opening = resumeOrNew(app, q, resumable: resumable)
                } else {
                    opening = .refuse(PusherErrorCode.unsupportedProtocolVersion, "unsupported protocol version \(p)")
                }
            } else {
                opening = .refuse(PusherErrorCode.noProtocolVersion, "no protocol version supplied")
            }
        } else {
            opening = .refuse(PusherErrorCode.applicationDoesNotExist, "application does not exist")
        }
        let client = endpoints.clientAddress(request, responder)
        responder.upgrade(request, endpoint: endpoint) { [unowned self] _ in
            WebSocketTransport(endpoints: self, opening: opening, client: client)
        }
    }

    func resumeOrNew(_ app: App, _ q: [(String, String)], resumable: Bool) -> WebSocketTransport.Opening {
        guard resumable, let sid = Query.value(q, "session"), let id = SessionID(sid) else {
            return .new(app, resumable: resumable, reason: nil)
        }
        let last = Query.value(q, "last_seq").flatMap { UInt64($0) } ?? 0
        guard let token = Query.value(q, "token") else {
            // The token comes in the first message (`halley:resume`), not in the URL.
            return .awaitResume(app, id, lastSeen: last)
        }
        guard endpoints.config.allowTokensInURLs else {
            Log.info(
                "websocket: a session token in a URL refused (send halley:resume; --allow-tokens-in-urls accepts the old form)"
            )
            return .refuse(
                PusherErrorCode.tokenInURL,
                "Session tokens in URLs are refused: send halley:resume as the first message")
        }
        return resume(app, id, token: token, lastSeen: last)
    }

    /// The opening of a resume that showed its token.
    func resume(_ app: App, _ id: SessionID, token: String, lastSeen: UInt64) -> WebSocketTransport.Opening {
        switch loopHub.lookup(id, token: token) {
        // By id: a reload replaces the app's value in the table before each loop updates its
        // sessions' copy, and a resume in between is still the same app's.
        case .found(let s) where s.app.id == app.id:
            return .resume(s, lastSeen: lastSeen)
        case .found:
            return .new(app, resumable: true, reason: .expired)  // another app's session: as if unknown
        case .gone(let why):
            return .new(app, resumable: true, reason: why)
        }
    }

    enum Opened {
        case session(Session)
        case refused(HTTPResponse)
    }

    /// A new resumable session for an HTTP transport, or the answer that refuses it: 403 for
    /// a disabled app, an origin the app does not allow, or its connection quota; 429 past a
    /// per-address limit; 503 at the node's session limit.
    func openSession(_ app: App, _ request: HTTPRequest, _ responder: Responder, origin: String?) -> Opened {
        guard app.enabled else {
            return .refused(
                HubHTTP.error(403, "application disabled", origin: origin, code: PusherErrorCode.applicationDisabled))
        }
        if let r = appOriginRefusal(app.origins, request, origin: origin) { return .refused(r) }
        guard let s = loopHub.newSession(app: app, resumable: true, client: endpoints.clientAddress(request, responder))
        else {
            if loopHub.refusedByClientLimit {
                var r = HubHTTP.error(429, loopHub.refusal.message, origin: origin, code: PusherErrorCode.overCapacity)
                r.headers.append(("Retry-After", "5"))
                return .refused(r)
            }
            let quota = loopHub.refusal.code == PusherErrorCode.overConnectionQuota
            return .refused(
                HubHTTP.error(
                    quota ? 403 : 503, quota ? "application is over connection quota" : "over capacity", origin: origin,
                    code: quota ? PusherErrorCode.overConnectionQuota : PusherErrorCode.overCapacity))
        }
        return .session(s)
    }

    /// The app's own origins (`allowed_origins` of the apps file): checked on every request of
    /// a session, not only the one that opens it (as WebSocket checks every opening, resumes
    /// included); the same 403 as the opening's refusal. The session itself is left as it is.
    /// Takes the app's policy, the one field it reads.
    func appOriginRefusal(_ origins: OriginPolicy?, _ request: HTTPRequest, origin: String?) -> HTTPResponse? {
        guard let o = origins, !o.allows(request.head.headers["Origin"]) else { return nil }
        return HubHTTP.error(
            403, "origin not allowed for this application", origin: origin, code: PusherErrorCode.connectionUnauthorized
        )
    }

    // MARK: session tokens

    /// The session token an HTTP request shows: the `X-Halley-Token` header. A `token` in the
    /// query (the old form) is taken only with `--allow-tokens-in-urls`: URLs end up in access
    /// logs and browser history, and a logged token lets its reader resume the session (its
    /// authorized private and presence channels) and send as its client. Otherwise the request
    /// is refused 400, so a client still sending it learns why.
    enum TokenShown {
        case success(String)
        case failure(HTTPResponse)
    }

    func sessionToken(_ request: HTTPRequest, _ q: [(String, String)], origin: String?) -> TokenShown {
        let inURL = Query.value(q, "token")
        // Refused even beside a header: the URL has gone to the access log all the same.
        if inURL != nil && !endpoints.config.allowTokensInURLs {
            return .failure(Self.tokenInURLRefusal(origin: origin))
        }
        if let t = request.head.headers["X-Halley-Token"] { return .success(t) }
        return .success(inURL ?? "")
    }

    static func tokenInURLRefusal(origin: String?) -> HTTPResponse {
        Log.info(
            "a session token in a URL refused (send it in the X-Halley-Token header; --allow-tokens-in-urls accepts the old form)"
        )
        return HubHTTP.error(
            400, "session tokens in URLs are refused: send the X-Halley-Token header", origin: origin,
            reason: .tokenInURL,
            code: PusherErrorCode.tokenInURL)
    }

    // MARK: Server-Sent Events

    func sse(_ request: HTTPRequest, _ responder: Responder, _ q: [(String, String)]) {
        let (ok, origin) = endpoints.corsOrigin(request)
        guard ok else {
            responder.respond(HubHTTP.error(403, "origin not allowed", code: PusherErrorCode.connectionUnauthorized));
            return
        }
        var resume: (id: SessionID, token: String, seq: UInt64)? = nil
        // The event id carries the token: the Last-Event-ID header, or the query's copy (a URL:
        // only with --allow-tokens-in-urls).
        var eventID = request.head.headers["Last-Event-ID"]
        if eventID == nil, let fromQuery = Query.value(q, "last_event_id") {
            guard endpoints.config.allowTokensInURLs else {
                responder.respond(Self.tokenInURLRefusal(origin: origin)); return
            }
            eventID = fromQuery
        }
        if let raw = eventID, let e = Wire.parseEventID(raw), let id = SessionID(e.session) {
            resume = (id, e.token, e.seq)
        } else if let s = Query.value(q, "session"), let id = SessionID(s) {
            let token: String
            switch sessionToken(request, q, origin: origin) {
            case .success(let t): token = t
            case .failure(let r): responder.respond(r); return
            }
            resume = (id, token, Query.value(q, "last_seq").flatMap { UInt64($0) } ?? 0)
        }
        var session: Session? = nil
        var lastSeen: UInt64? = nil
        var reason: SessionEnd? = nil
        if let r = resume {
            switch loopHub.lookup(r.id, token: r.token) {
            case .found(let s):
                if let refused = appOriginRefusal(s.app.origins, request, origin: origin) {
                    responder.respond(refused)
                    return
                }
                session = s
                lastSeen = r.seq
            case .gone(let why):
                reason = why
            }
        }
        if session == nil {
            let key = Query.value(q, "key") ?? ""
            guard let app = hub.app(key: key) else {
                responder.respond(
                    HubHTTP.error(
                        key.isEmpty ? 400 : 404, key.isEmpty ? "missing key" : "unknown app key", origin: origin,
                        reason: reason.map(HubHTTP.Reason.session),
                        code: PusherErrorCode.applicationDoesNotExist))
                return
            }
            switch openSession(app, request, responder, origin: origin) {
            case .session(let s): session = s
            case .refused(let r):
                responder.respond(r)
                return
            }
        }
        let s = session!
        var headers: [(String, String)] = [
            ("Content-Type", "text/event-stream; charset=utf-8"),
            ("Cache-Control", "no-cache, no-transform"),
            ("X-Accel-Buffering", "no"),
        ]
        if let o = origin {
            headers.append(("Access-Control-Allow-Origin", o))
            headers.append(("Vary", "Origin"))
        }
        guard let stream = responder.startStream(status: 200, headers: headers) else {
            // The connection went before its answer: a session opened for it would wait for
            // a transport forever (it never lingers: nothing attached it).
            if case .opened = s.phase { loopHub.end(s, .expired) }
            return
        }
        let t = SSETransport(loopHub: loopHub, stream: stream, session: s)
        streams.append(t)
        stream.write([
            .bytes(Wire.ssePrelude(padding: endpoints.config.ssePadding, retryMillis: endpoints.config.sseRetryMillis))
        ])
        // The first event has an id too (the last seq seen), so a stream that drops before the
        // first numbered event still resumes the session.
        if lastSeen != nil { hub.stats(s.app.id)?.add(.resumes) }
        t.sendEstablished(s.established(resumed: lastSeen != nil, reason: reason), lastSeen: lastSeen ?? 0)
        s.attach(t, lastSeen: lastSeen)
    }

    // MARK: long-polling

    func poll(_ request: HTTPRequest, _ responder: Responder, _ q: [(String, String)]) {
        let (ok, origin) = endpoints.corsOrigin(request)
        guard ok else {
            responder.respond(HubHTTP.error(403, "origin not allowed", code: PusherErrorCode.connectionUnauthorized));
            return
        }
        var reason: SessionEnd? = nil
        if let sid = Query.value(q, "session"), let id = SessionID(sid) {
            var token: String
            switch sessionToken(request, q, origin: origin) {
            case .success(let t): token = t
            case .failure(let r): responder.respond(r); return
            }
            if token.isEmpty, !request.body.isEmpty, let v = try? JSONParser.parse(request.body),
                let t = v.object?["halley:token"]?.string
            {
                token = t
            }
            switch loopHub.lookup(id, token: token) {
            case .found(let s):
                if let refused = appOriginRefusal(s.app.origins, request, origin: origin) {
                    responder.respond(refused)
                    return
                }
                if let p = s.transport as? PollTransport, !p.answered {
                    Log.info("session \(s.id): overlapping poll refused")
                    responder.respond(HubHTTP.error(409, "poll already pending for this session", origin: origin))
                    return
                }
                let cursor = Query.value(q, "cursor").flatMap { UInt64($0) } ?? 0
                let p = PollTransport(
                    endpoints: self, responder: responder, session: s, cursor: cursor, introduce: false, origin: origin)
                s.attach(p, lastSeen: cursor)
                if p.queuedForAnswer {
                    // Messages are waiting: answer now, inside the connection's event (its
                    // epoll interest never changes: no epoll_ctl for this poll).
                    p.answer()
                    return
                }
                if p.answered { return }
                polls.append(p)
                responder.onDisconnect { [unowned p] in
                    p.answered = true
                    if let s = p.session {
                        p.session = nil
                        s.transportGone(p)
                    }
                }
                return
            case .gone(let why):
                reason = why
            }
        }
        let key = Query.value(q, "key") ?? ""
        guard let app = hub.app(key: key) else {
            if reason != nil {
                responder.respond(
                    HubHTTP.error(404, "session not found", origin: origin, reason: reason.map(HubHTTP.Reason.session)))
            } else {
                responder.respond(
                    HubHTTP.error(
                        key.isEmpty ? 400 : 404, key.isEmpty ? "missing key" : "unknown app key", origin: origin,
                        code: PusherErrorCode.applicationDoesNotExist))
            }
            return
        }
        let s: Session
        switch openSession(app, request, responder, origin: origin) {
        case .session(let ok): s = ok
        case .refused(let r):
            responder.respond(r)
            return
        }
        let p = PollTransport(
            endpoints: self, responder: responder, session: s, cursor: 0, introduce: true, origin: origin)
        p.controls.append(s.established(resumed: false, reason: reason))
        s.attach(p, lastSeen: nil)
        p.answer()
    }

    // MARK: sending over HTTP

    func send(_ request: HTTPRequest, _ responder: Responder, _ q: [(String, String)]) {
        let (ok, origin) = endpoints.corsOrigin(request)
        guard ok else {
            responder.respond(HubHTTP.error(403, "origin not allowed", code: PusherErrorCode.connectionUnauthorized));
            return
        }
        guard let sid = Query.value(q, "session"), let id = SessionID(sid) else {
            responder.respond(HubHTTP.error(400, "missing or malformed session", origin: origin))
            return
        }
        // The body: one message, an array of them, or `{"halley:token": T, "messages": [...]}`
        // (the token in the body keeps the request simple for CORS, and works for sendBeacon,
        // which cannot set headers).
        let value: JSONValue
        do {
            value = try JSONParser.parse(request.body)
        } catch {
            responder.respond(HubHTTP.error(400, "\(error)", origin: origin))
            return
        }
        var list = value.array ?? [value]
        var token: String
        switch sessionToken(request, q, origin: origin) {
        case .success(let t): token = t
        case .failure(let r): responder.respond(r); return
        }
        if let o = value.object, let t = o["halley:token"]?.string {
            guard let m = o["messages"]?.array else {
                responder.respond(
                    HubHTTP.error(400, "expected {\"halley:token\": …, \"messages\": [...]}", origin: origin))
                return
            }
            token = t
            list = m
        }
        let s: Session
        switch loopHub.lookup(id, token: token) {
        case .found(let found): s = found
        case .gone(let why):
            responder.respond(HubHTTP.error(404, "session not found", origin: origin, reason: .session(why)))
            return
        }
        if let refused = appOriginRefusal(s.app.origins, request, origin: origin) {
            responder.respond(refused)
            return
        }
        var messages: [ClientMessage] = []
        for v in list {
            guard let m = try? ClientMessage.decode(v) else {
                responder.respond(
                    HubHTTP.error(400, "each message must be a JSON object with an event", origin: origin))
                return
            }
            messages.append(m)
        }
        for m in messages { s.handle(m) }
        responder.respond(HubHTTP.json(200, Array(#"{"ok":true}"#.utf8), origin: origin))
    }
}
