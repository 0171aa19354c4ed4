import HalleyCore
import HalleyHub
import HalleyLoop
import HalleyProtocol
import HalleyServer
import HalleyWebSocket

/// A session's WebSocket (`/app/{key}`): duplex, binary-capable. The delegate of its
/// connection: client messages go to the session, session messages become frames.
/// Loop-confined.
final class WebSocketTransport: WebSocketDelegate, Transport {
    var kind: TransportKind { .websocket }
    unowned(unsafe) let endpoints: LoopEndpoints  // outlives its transports
    /// Set when the connection opens and cleared when it reports its close: the loop's
    /// connection table keeps it alive in between, so the reference needs no count. Not `weak`:
    /// a weak reference gives the connection a side table, and every retain and release of it
    /// then takes the slow path (60% of the server's CPU in a fan-out profile); not strong: each
    /// read of a strong reference is a retain and a release, once per delivery. Unmanaged:
    /// `bufferedBytes`, which only reads, borrows it with no count
    /// (`_withUnsafeGuaranteedRef`). Everything else, `send` included, takes a counted
    /// reference (`ws`): a send can close the connection (a failed write while it flushes),
    /// which drops it from the loop's table, and it must outlive that call.
    private var wsRef: Unmanaged<WebSocketConnection>?  // the loop's table keeps it alive (above)

    /// The connection as a counted reference, alive as long as the caller holds it.
    var ws: WebSocketConnection? { wsRef?.takeUnretainedValue() }
    var session: Session?

    enum Opening {
        /// Pusher errors that end the connection at once (unknown app, bad protocol).
        case refuse(UInt16, String)
        case new(App, resumable: Bool, reason: SessionEnd?)
        case resume(Session, lastSeen: UInt64)
        /// `?session=…&last_seq=…` without a token: it comes in the first message,
        /// `{"event":"halley:resume","data":{"token":"…"}}` (tokens stay out of URLs, which
        /// access logs keep).
        case awaitResume(App, SessionID, lastSeen: UInt64)
    }

    /// Seconds a resuming client has to send `halley:resume` after the upgrade.
    static let resumeMessageTimeout: Int64 = 10

    /// How the connection opens and the client's address (per-address limits), until it has
    /// opened: then nil, except while the first message of a resume is awaited. In a box: one
    /// word of the transport for the rest of its life (memory per session, issue 16).
    final class Pending {
        let opening: Opening
        let client: IPAddress

        init(_ opening: Opening, _ client: IPAddress) {
            self.opening = opening
            self.client = client
        }
    }
    var pending: Pending?

    init(endpoints: LoopEndpoints, opening: Opening, client: IPAddress) {
        self.endpoints = endpoints
        self.pending = Pending(opening, client)
    }

    /// Whether the first message of a resume is awaited.
    var awaitingResume: Bool {
        if let p = pending, case .awaitResume = p.opening { return true }
        return false
    }

    func webSocketDidOpen(_ ws: WebSocketConnection) {
        wsRef = Unmanaged.passUnretained(ws)
        guard let p = pending else { return }
        if !awaitingResume { pending = nil }
        switch p.opening {
        case .refuse(let code, let message):
            Log.info("websocket refused: \(code) \(message)")
            ws.send(text: String(decoding: Wire.error(code: code, message: message), as: UTF8.self))
            ws.close(code: code, reason: message)
        case .new(let app, let resumable, let reason):
            startFresh(app, client: p.client, resumable: resumable, reason: reason)
        case .awaitResume:
            endpoints.loop.schedule(afterMillis: Self.resumeMessageTimeout * 1000) { [weak self] in
                guard let self, self.awaitingResume, let ws = self.ws else { return }
                self.pending = nil
                Log.info("websocket: no halley:resume within \(Self.resumeMessageTimeout) s")
                ws.close(code: WebSocketCloseCode.policyViolation, reason: "expected halley:resume")
            }
        case .resume(let s, let last):
            start(resuming: s, lastSeen: last, client: p.client)
        }
    }

    /// Attaches to `s` (found by id and token), or to a fresh session if it ended meanwhile
    /// (another loop turn passed since the lookup).
    func start(resuming s: Session, lastSeen last: UInt64, client: IPAddress) {
        guard !s.ended else { return startFresh(s.app, client: client, reason: .expired) }
        session = s
        endpoints.hub.stats(s.app.id)?.add(.resumes)
        sendControl(s.established(resumed: true, reason: nil))
        s.attach(self, lastSeen: last)
    }

    /// A new session (`reason`: why a resume failed), or the refusal (limits).
    func startFresh(_ app: App, client: IPAddress, resumable: Bool = true, reason: SessionEnd?) {
        guard let ws = ws else { return }
        guard let s = endpoints.loopHub.newSession(app: app, resumable: resumable, client: client) else {
            let (code, message) = endpoints.loopHub.refusal
            ws.send(text: String(decoding: Wire.error(code: code, message: message), as: UTF8.self))
            ws.close(code: code, reason: message)
            return
        }
        session = s
        sendControl(s.established(resumed: false, reason: reason))
        s.attach(self, lastSeen: nil)
    }

    func webSocket(_ ws: WebSocketConnection, text: UnsafeRawBufferPointer) {
        if let p = pending, case .awaitResume(let app, let id, let lastSeen) = p.opening {
            pending = nil
            guard let m = try? ClientMessage.decode(text), m.event == "halley:resume",
                let token = m.data?.object?["token"]?.string
            else {
                Log.info("websocket: expected halley:resume as the first message")
                ws.close(code: WebSocketCloseCode.policyViolation, reason: "expected halley:resume")
                return
            }
            switch endpoints.resume(app, id, token: token, lastSeen: lastSeen) {
            case .resume(let s, let last): start(resuming: s, lastSeen: last, client: p.client)
            case .new(let app, _, let reason): startFresh(app, client: p.client, reason: reason ?? .expired)
            default: ws.close(code: WebSocketCloseCode.internalError, reason: "unexpected resume outcome")
            }
            return
        }
        session?.handle(text: text)
    }

    func webSocket(_ ws: WebSocketConnection, binary: UnsafeRawBufferPointer) {
        if awaitingResume {
            pending = nil
            Log.info("websocket: expected halley:resume as the first message")
            ws.close(code: WebSocketCloseCode.policyViolation, reason: "expected halley:resume")
            return
        }
        sendControl(Wire.error(code: nil, message: "binary messages from clients are not supported"))
    }

    /// Pusher: the server pings a silent client with `pusher:ping` (answered `pusher:pong`);
    /// the protocol ping frame goes too (browsers answer it without the page).
    func webSocketWillPing(_ ws: WebSocketConnection) {
        sendControl(Wire.ping)
    }

    /// Pusher: "4201 Pong reply not received" (pusher-js reconnects at once), told as a
    /// `pusher:error` too.
    func webSocketPingTimedOut(_ ws: WebSocketConnection) -> (code: UInt16, reason: String) {
        let e = SessionEnd.pingTimeout.pusherError!
        sendControl(Wire.error(code: e.code, message: e.message))
        return (e.code, e.message)
    }

    func webSocketDidClose(_ ws: WebSocketConnection, code: UInt16?) {
        wsRef = nil
        if let s = session {
            session = nil
            s.transportGone(self)
        }
    }

    // MARK: Transport

    func send(_ m: OutMessage, seq: UInt64, delivery: Delivery?) {
        // Counted, not borrowed: the send may close the connection (see `wsRef`).
        guard let ws = ws else { return }
        if seq == 0 {
            checked(ws.send(delivery?.prepared ?? Delivery(m).prepared))
            return
        }
        var tail: (UInt64, UInt64, UInt64, UInt64, UInt64) = (0, 0, 0, 0, 0)
        let r = withUnsafeMutableBytes(of: &tail) { t -> SendResult in
            let n = Wire.seqTail(seq, into: t.baseAddress!)
            let tb = UnsafeRawBufferPointer(rebasing: t[0..<n])
            if let h = m.binaryHeader, let payload = m.binaryPayload {
                // Binary frame: 4-byte big-endian header length, header JSON, payload.
                var len = UInt32(h.count + n).bigEndian
                return withUnsafeBytes(of: &len) { l in
                    ws.send(binaryParts: [l, h.buffer, tb, payload.buffer])
                }
            }
            return ws.send(text: delivery?.preparedPrefix ?? PreparedPrefix(m.prefix), tail: tb)
        }
        checked(r)
    }

    /// A frame the connection refused (its own send-buffer bound, policy `drop`) must not
    /// vanish: the transport goes, and a resumable session replays it on the next one.
    func checked(_ r: SendResult) {
        guard r == .dropped, let ws = ws, ws.isOpen else { return }
        Log.info("session \(session?.id.description ?? "-"): websocket send buffer full: closing")
        ws.close(code: WebSocketCloseCode.policyViolation, reason: "send buffer full")
    }

    func sendControl(_ json: [UInt8]) {
        json.withUnsafeBytes { _ = ws?.send(text: $0) }
    }

    /// Borrowed: reading the count cannot close the connection.
    var bufferedBytes: Int { wsRef?._withUnsafeGuaranteedRef { $0.bufferedBytes } ?? 0 }

    func detach(_ why: Detachment) {
        session = nil
        let (code, reason) = why.close
        ws?.close(code: code, reason: reason)
    }
}
