#if canImport(Glibc)
import Glibc
#endif
import HalleyCore
import HalleyHTTP
import HalleyLoop
import HalleyWebSocket

/// Hands a handler's response back to the connection that asked, now or later (long-polls
/// answer later). A response for a request the connection has moved past is ignored.
public struct Responder {
    let connection: HTTPConnection
    let serial: UInt32

    public func respond(_ response: HTTPResponse) { connection.respond(response, serial: serial) }

    /// Upgrades to WebSocket when the handshake is valid; answers the refusal otherwise.
    public func upgrade(
        _ request: HTTPRequest, endpoint: WebSocketHandshake.Endpoint,
        _ makeDelegate: (HTTPRequest) -> WebSocketDelegate?
    ) {
        connection.upgrade(request, serial: serial, endpoint: endpoint, makeDelegate)
    }

    /// The loop the connection lives on: a late response must be given on it.
    public var loop: EventLoop { connection.ctx.loop }

    public var loopIndex: Int { connection.ctx.loop.index }

    /// The socket's peer; `ClientLimits.clientAddress` reads a trusted proxy's headers.
    public var peer: IPAddress { connection.peer }

    /// Starts a streaming response (chunked on HTTP/1.1); nil if the request was answered.
    public func startStream(status: Int, headers: [(String, String)]) -> HTTPStream? {
        connection.startStream(serial: serial, status: status, headers: headers)
    }

    /// For a request held open (a long-poll): `body` runs if the client goes away before the
    /// answer. While it is set the connection watches for the peer's hang-up.
    public func onDisconnect(_ body: @escaping () -> Void) {
        connection.hold(serial: serial, watch: body)
    }

    /// Moves the connection to loop `index` and calls `then` there with a responder on the
    /// new loop (at once when it is already there).
    public func handOff(
        toLoop index: Int, _ request: HTTPRequest, then: @escaping @Sendable (HTTPRequest, Responder) -> Void
    ) {
        connection.handOff(request, serial: serial, toLoop: index, then: then)
    }

    /// The peer's address is not tracked; the connection's descriptor identifies it in logs.
    public var connectionID: Int32 { connection.fd }
}

/// One HTTP/1.1 client connection, owned by one loop for its whole life.
///
/// Requests are answered strictly in order (pipelining): while a handler holds a request or
/// the answers already given have not drained, later requests stay unparsed in `pendingIn`
/// and the socket is not read, which bounds what a client can make the hub buffer (about one
/// read, 256 KiB, of requests and 64 KiB plus one response of answers). Idle, the connection
/// holds no buffer at all.
final class HTTPConnection: Connection {
    /// The routes of the listener that accepted it (the main port, or the metrics port).
    /// `unowned(unsafe)`: the server holds its routers for the life of the process; no count
    /// per request.
    unowned(unsafe) let router: Router
    var parser: HTTPRequestParser
    /// Bytes received but not yet parsed (a partial head, or requests behind a held one).
    var pendingIn: ByteBuffer?
    /// A request whose body is still arriving.
    var partial: PartialRequest?

    // Per-request facts for the response (set by dispatch).
    var serial: UInt32 = 0
    var respondHead = false
    var respondMinor: UInt8 = 1
    var respondKeepAlive = true

    /// What the connection does with its current request: one thing at a time.
    enum Exchange {
        /// No answer owed: requests are read and parsed (as long as `ending` allows).
        case reading
        /// A handler owes the answer to request `serial`.
        case answering
        /// A long-poll held open: `watch` runs if the client goes away first. `sawData`:
        /// bytes (a pipelined request) arrived meanwhile; they wait unread until the answer.
        case held(watch: () -> Void, sawData: Bool)
        /// A streaming response (SSE, xhr_streaming): the request is held until it ends.
        case streaming(HTTPStream, sawData: Bool)
        /// A hand-over to another loop, asked for inside our event, done when it ends.
        case handingOff(HandOff)
        /// A handler upgraded the connection (WebSocket): the new handler takes over when
        /// the event ends.
        case upgrading(Connection)
    }
    var exchange = Exchange.reading

    /// How the connection ends: `closing` takes no more requests (flush the answers owed,
    /// then half-close); `lingering` has half-closed and reads until the client closes.
    enum Ending {
        case open, closing, lingering
    }
    var ending = Ending.open
    /// The client half-closed (EOF read).
    var peerClosed = false

    /// An answer is owed (the handler, a held request or a stream, or a move in progress).
    var awaiting: Bool {
        switch exchange {
        case .reading, .upgrading: return false
        case .answering, .held, .streaming, .handingOff: return true
        }
    }

    /// The handler may still answer: respond, stream, hold, upgrade or move.
    var answerable: Bool {
        switch exchange {
        case .answering, .held: return true
        case .reading, .streaming, .handingOff, .upgrading: return false
        }
    }

    /// A long-poll or stream is held open, watching for the client's hang-up.
    var isHeld: Bool {
        switch exchange {
        case .held, .streaming: return true
        default: return false
        }
    }

    /// The streaming response in progress, if any.
    var stream: HTTPStream? {
        if case .streaming(let st, _) = exchange { return st }
        return nil
    }

    /// The socket is read now: parsing requests, or draining a lingering close.
    var mayRead: Bool {
        guard !closed && !peerClosed else { return false }
        if ending == .lingering { return true }
        guard case .reading = exchange else { return false }
        return out == nil && ending == .open
    }

    /// Finishes an upgrade or a hand-over asked for during this event; true when the
    /// connection is no longer this object's.
    func finishLeaving() -> Bool {
        switch exchange {
        case .upgrading(let next):
            finishUpgrade(next)
            return true
        case .handingOff(let h):
            finishHandOff(h)
            return true
        case .reading, .answering, .held, .streaming:
            return false
        }
    }

    /// Holds the request open (a long-poll) with `watch` to run if the client goes first.
    func hold(serial s: UInt32, watch: @escaping () -> Void) {
        guard s == serial, !closed else { return }
        switch exchange {
        case .answering: exchange = .held(watch: watch, sawData: false)
        case .held(_, let saw): exchange = .held(watch: watch, sawData: saw)
        case .reading, .streaming, .handingOff, .upgrading: return
        }
        if !inEvent { updateInterest() }
    }

    /// Monotonic second the current phase started (the head's first byte, or idleness).
    var phaseStart: Int32
    final class PartialRequest {
        let head: HTTPRequestHead
        var body: [UInt8] = []
        init(head: HTTPRequestHead) { self.head = head }
    }

    init(fd: Int32, context: LoopContext, router: Router) {
        self.router = router
        self.parser = HTTPRequestParser(limits: context.config.http)
        phaseStart = context.seconds
        super.init(fd: fd, context: context)
        interest = Events.readable | Events.readHangup
    }

    // MARK: events

    public override func handleEvent(_ events: UInt32) {
        inEvent = true
        defer { inEvent = false }
        if events & Events.writable != 0 && out != nil {
            drainOutput()
            if canProcessPending { process(UnsafeRawBufferPointer(start: nil, count: 0)) }
        }
        if !closed && isHeld {
            // A held long-poll or stream keeps the idle interest (readable | read-hang-up), so
            // holding and answering cost no epoll_ctl. The peer hung up: it is gone. Bytes
            // (a pipelined request) wait unread: stop watching for them until the hold ends.
            if events & (Events.hangup | Events.error | Events.readHangup) != 0 { close(); return }
            if events & Events.readable != 0 {
                switch exchange {
                case .held(let w, false): exchange = .held(watch: w, sawData: true)
                case .streaming(let st, false): exchange = .streaming(st, sawData: true)
                default: break
                }
            }
        }
        if !closed && events & (Events.hangup | Events.error | Events.readHangup) != 0
            && interest & Events.readable == 0
        {
            // Not reading (a held request, a blocked write): level-triggered epoll would
            // report the hang-up again every turn. The peer is gone: close.
            close()
            return
        }
        if !closed && events & (Events.readable | Events.hangup | Events.error) != 0 { readable() }
        if finishLeaving() { return }
        if closed { return }
        if ctx.isCorkOwner(self) { ctx.flushCork() }
        updateInterest()
    }

    /// Requests wait in `pendingIn` behind a held request or a blocked write; true when they
    /// may go on.
    var canProcessPending: Bool {
        guard case .reading = exchange else { return false }
        return !closed && ending == .open && out == nil && pendingIn != nil
    }

    override var readsNow: Bool { mayRead }

    func readable() {
        let buf = ctx.loop.readBuffer
        for _ in 0..<4 {
            guard mayRead else { return }
            let n: Int
            do {
                guard case .done(let r) = try readSome(buf) else { return }
                n = r
            } catch {
                if ending != .lingering { Log.debug("fd \(fd): \(error)") }
                close()
                return
            }
            if n == 0 {
                peerEOF()
                return
            }
            ctx.count(.bytesIn, n)
            lastIO = ctx.seconds
            if ending == .lingering { continue }
            process(UnsafeRawBufferPointer(start: buf.baseAddress, count: n))
            if n < buf.count { return }
        }
    }

    func peerEOF() {
        peerClosed = true
        if ending != .lingering && (awaiting || out != nil || ctx.isCorkOwner(self)) {
            // A response is still owed or being written: finish it, then close.
            ending = .closing
            return
        }
        close()
    }

    // MARK: parsing

    /// Parses what has arrived, dispatching every complete request in order.
    func process(_ fresh: UnsafeRawBufferPointer) {
        if let p = pendingIn {
            if fresh.count > 0 { p.append(fresh) }
            let used = consume(p.readable)
            if closed { return }
            p.moveReader(by: used)
            if p.isEmpty { pendingIn = nil }
        } else {
            let used = consume(fresh)
            if closed { return }
            if used < fresh.count {
                let rest = UnsafeRawBufferPointer(rebasing: fresh[used...])
                let p = ByteBuffer(capacity: max(rest.count, 512))
                p.append(rest)
                pendingIn = p
            }
        }
    }

    func consume(_ buf: UnsafeRawBufferPointer) -> Int {
        var off = 0
        // The head of the request being read, when `haveHead` (not an optional: see
        // `HTTPRequestHead.placeholder`).
        var head = HTTPRequestHead.placeholder
        var haveHead = false
        var body: [UInt8] = []
        if let p = partial {
            head = p.head
            haveHead = true
            body = p.body
            partial = nil
        }
        while case .reading = exchange, ending == .open, !closed {
            // Pipelined requests are answered only while their answers drain: past 64 KiB
            // gathered, write; if the socket does not take it all, the rest of the requests
            // wait unparsed (and the socket unread) until it does. A client that pipelines
            // without reading cannot make the hub hold more than one read's worth of answers.
            if ctx.isCorkOwner(self) && ctx.corkedBytes > 64 * 1024 { ctx.flushCork() }
            if out != nil || closed { break }
            // The request's clock starts with its first byte; empty lines between requests
            // do not restart it (they would otherwise hold a connection open for ever).
            let wasIdle = parser.isIdle
            let result = parser.parse(UnsafeRawBufferPointer(rebasing: buf[off...]))
            if wasIdle && !parser.isIdle { phaseStart = ctx.seconds }
            switch result {
            case .needMore(let c):
                off += c
                if haveHead { let p = PartialRequest(head: head); p.body = body; partial = p }
                return off
            case .head(let h, let c):
                off += c
                if h.expectsContinue && off == buf.count {
                    // RFC 9110 §10.1.1: the client waits for this before sending the body.
                    ctx.cork(for: self)
                    ctx.corkAppend(Self.continueLine)
                    ctx.count(.requests1xx)
                }
                head = h
                haveHead = true
                // Reserve what is announced, up to 64 KiB: a head alone must not make us
                // allocate the whole body limit.
                if let cl = h.contentLength, cl > 0 { body.reserveCapacity(min(cl, 64 * 1024)) }
            case .body(let r, let c):
                body.append(
                    contentsOf: UnsafeRawBufferPointer(rebasing: buf[(off + r.lowerBound)..<(off + r.upperBound)]))
                off += c
            case .end(let c):
                off += c
                if haveHead {
                    haveHead = false
                    var h = HTTPRequestHead.placeholder
                    swap(&h, &head)  // moved out: no copy of the head
                    let b = body
                    body = []
                    dispatch(h, b)
                }
            case .error(let e):
                refuse(e)
                return buf.count
            }
        }
        if haveHead { let p = PartialRequest(head: head); p.body = body; partial = p }
        return off
    }

    static let continueLine: [UInt8] = Array("HTTP/1.1 100 Continue\r\n\r\n".utf8)

    func dispatch(_ head: HTTPRequestHead, _ body: [UInt8]) {
        serial &+= 1
        exchange = .answering
        respondHead = head.method == .head
        respondMinor = UInt8(head.minorVersion)
        respondKeepAlive = head.keepAlive && !ctx.shuttingDown && !peerClosed
        let responder = Responder(connection: self, serial: serial)
        switch router.match(head.method, head.path) {
        case .handler(let h, let params):
            h(HTTPRequest(head: head, body: body, parameters: params), responder)
        case .methodNotAllowed(let allowed):
            var r = HTTPResponse.text(405, "Method Not Allowed\n")
            r.headers.append(("Allow", allowed.map(\.description).joined(separator: ", ")))
            respond(r, serial: serial)
        case .notFound:
            respond(.text(404, "Not Found\n"), serial: serial)
        }
    }

    /// A connection past its address's limit (ClientLimitConfig.maxConnectionsPerAddress) is
    /// answered 429 at once, before it sends anything, and closed: waiting for its request
    /// would let it hold a slot of the node's `--max-connections` for the keep-alive timeout.
    /// What it sends meanwhile is read and dropped during the close's linger (at most 2 s), so
    /// the answer is not reset away.
    func refuseOverLimit() {
        serial &+= 1
        exchange = .answering
        respondHead = false
        respondMinor = 1
        respondKeepAlive = false
        var r = HTTPResponse.text(429, "Too Many Requests: too many connections from your address\n")
        r.headers.append(("Retry-After", "10"))
        respond(r, serial: serial)
    }

    /// Answers a request the parser refused, then closes (RFC 9112 §11: after a framing error
    /// the rest of the stream cannot be trusted).
    func refuse(_ e: HTTPParseError) {
        switch e.limitKind {
        case "request_line": ctx.count(.breachRequestLine)
        case "headers": ctx.count(.breachHeaders)
        case "body": ctx.count(.breachBody)
        default: ctx.count(.badRequests)
        }
        Log.info("fd \(fd): \(e.status) \(e.reason)")
        serial &+= 1
        exchange = .answering
        respondHead = false
        respondMinor = 1
        respondKeepAlive = false
        pendingIn = nil
        partial = nil
        respond(.text(e.status, HTTPStatus.reason(e.status) + "\n"), serial: serial)
    }

    // MARK: responding

    func respond(_ r: HTTPResponse, serial s: UInt32) {
        guard s == serial, answerable, !closed else { return }
        exchange = .reading
        let keepAlive = respondKeepAlive && !r.close
        if !keepAlive && ending == .open { ending = .closing }
        ctx.cork(for: self)
        encode(r, keepAlive: keepAlive)
        ctx.count(Counter.forStatus(r.status))
        phaseStart = ctx.seconds
        if !inEvent {
            // A late answer (long-poll, timeout): write it now, then go on with the requests
            // that were waiting behind it.
            inEvent = true
            defer { inEvent = false }
            ctx.flushCork()
            if canProcessPending { process(UnsafeRawBufferPointer(start: nil, count: 0)) }
            if closed || finishLeaving() { return }
            if ctx.isCorkOwner(self) { ctx.flushCork() }
            updateInterest()
        }
    }

    func encode(_ r: HTTPResponse, keepAlive: Bool) {
        let status = r.status
        let noBody = status < 200 || status == 204 || status == 304
        let t = ctx.tables
        let dateLine = ctx.dateLine
        let minor = respondMinor
        // The head (and a body given as bytes) written into the cork buffer as one piece.
        ctx.corkWrite { b in
            b.append(t.statusLines[min(max(status, 100), 599)])
            b.append(dateLine)
            if let e = r.encodedHeaders { b.append(e.buffer) }
            for (n, v) in r.headers {
                b.append(n)
                b.append(": ")
                b.append(v)
                b.append(t.crlf)
            }
            if !noBody {
                b.append(t.contentLengthPrefix)
                b.append(decimal: r.body.length)
                b.append(t.crlf)
            }
            if !keepAlive {
                b.append(t.connectionClose)
            } else if minor == 0 {
                b.append(t.connectionKeepAlive)
            }
            b.append(t.crlf)
            if noBody || respondHead { return }
            if case .bytes(let body) = r.body { b.append(body) }
        }
        if noBody || respondHead { return }
        switch r.body {
        case .empty, .bytes: break
        case .shared(let s): ctx.corkAppend(shared: s)
        case .file(let f, let off, let n): ctx.corkAppend(file: f, offset: off, length: n)
        }
    }

    // MARK: writing

    /// Everything written: close if that was the last response, else read on.
    override func outputDrained() {
        // Keep-alive idleness counts from the end of the last response, not its start.
        if !awaiting { phaseStart = ctx.seconds }
        if ctx.shuttingDown && !awaiting && parser.isIdle && pendingIn == nil && ending == .open {
            ending = .closing
        }
        if ending != .open && !awaiting {
            if peerClosed { close(); return }
            startLingering()
        }
    }

    /// Half-close and read what the client still sends (a refused body) until it closes, so
    /// that the kernel does not answer it with RST and destroy our last response.
    func startLingering() {
        guard ending != .lingering else { return }
        ending = .lingering
        phaseStart = ctx.seconds
        pendingIn = nil
        shutdownOutput()
    }

    override func wantedEvents() -> UInt32 {
        var want: UInt32 = 0
        if out != nil { want |= Events.writable }
        if !peerClosed && (ending == .lingering || (!awaiting && out == nil && ending == .open)) {
            want |= Events.readable | Events.readHangup
        }
        // A held long-poll or a stream: learn at once when the client goes.
        switch exchange {
        case .held(_, let sawData), .streaming(_, let sawData):
            want |= Events.readHangup
            if !sawData && !peerClosed { want |= Events.readable }
        case .reading, .answering, .handingOff, .upgrading:
            break
        }
        return want
    }

    override func didClose() {
        pendingIn = nil
        partial = nil
        notifyHolders()
    }

    // MARK: deadlines (the loop's once-a-second sweep)

    // Times are whole monotonic seconds, so "more than N" means waiting N to N+1 seconds:
    // a deadline may fire up to a second late, never early.

    override func sweep(now: Int32) {
        let cfg = ctx.config
        if let t = tls, !t.handshakeDone, now - t.createdAt > Int32(cfg.tlsHandshakeTimeout) {
            Log.info("fd \(fd): TLS handshake timeout")
            close()
            return
        }
        if ending == .lingering {
            if now - phaseStart > 2 { close() }
            return
        }
        if out != nil {
            if now - lastIO > Int32(cfg.sendTimeout) { Log.info("fd \(fd): send timeout"); close() }
            return
        }
        if awaiting { return }
        if ctx.shuttingDown && parser.isIdle && pendingIn == nil { close(); return }
        if parser.isInBody {
            if now - lastIO > Int32(cfg.bodyTimeout) {
                ctx.count(.breachBodyTimeout)
                timeout("body")
            }
        } else if !parser.isIdle || pendingIn != nil {
            if now - phaseStart > Int32(cfg.headerTimeout) {
                ctx.count(.breachHeaderTimeout)
                timeout("header")
            }
        } else if now - phaseStart > Int32(cfg.keepAliveTimeout) {
            close()
        }
    }

    func timeout(_ what: String) {
        Log.info("fd \(fd): 408 \(what) timeout")
        serial &+= 1
        exchange = .answering
        respondHead = false
        respondKeepAlive = false
        pendingIn = nil
        partial = nil
        respond(.text(408, "Request Timeout\n"), serial: serial)
    }

    /// Graceful shutdown: an idle connection closes now; a busy one after its response.
    override func shutdownRequested() {
        // A stream or a held long-poll would last until the grace ends: cut it now, the
        // client reconnects (and resumes) elsewhere.
        if ending == .lingering || isHeld
            || (!awaiting && out == nil && parser.isIdle && pendingIn == nil)
        {
            close()
        } else {
            respondKeepAlive = false
        }
    }
}
