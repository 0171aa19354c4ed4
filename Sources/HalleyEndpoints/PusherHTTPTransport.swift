import HalleyCore
import HalleyHub
import HalleyLoop
import HalleyProtocol
import HalleyServer

/// pusher-js's HTTP fallbacks (`/pusher/app/{key}/{server}/{session}/xhr_streaming`, `xhr`,
/// `xhr_send`): the SockJS-dialect framing in `SockJS`, the defaults here.
enum PusherHTTP {
    /// Seconds a session lives without a receive request (a stream or a poll) attached; then
    /// it ends and its subscriptions with it. Default 5, SockJS's `disconnect_delay`: pusher-js
    /// opens the next poll, or the next stream when it rotates, at once, so a longer gap means
    /// the client is gone (it closes without telling the server).
    static let lingerSeconds: Int32 = 5
    /// pusher-js's `MAX_BUFFER_LENGTH` (`http_request.ts`): past this many UTF-16 code units of
    /// `responseText`, at a line boundary, the client aborts the stream and opens a new one
    /// for the same session. The hub's frames are ASCII, so that is its byte count.
    /// A stream past this is held: nothing more is written to it (pusher-js aborts it once it
    /// has *read* that far, however long that takes on a slow link, and what was written after
    /// would be lost), and what follows waits for the client's next stream. There is no time
    /// limit on the hold: what waits counts against `--session-buffer-bytes` (the slow-consumer
    /// policy), and the silence limit ends a client that neither rotates nor sends.
    static let clientRotationBytes = 256 * 1024
    /// `h` bytes of the streaming prelude. Default 2048 (SockJS's; pushes the response
    /// through proxies that buffer the first kilobytes).
    static let preludeBytes = 2048
    /// pusher-js's `httpPath` default. Another `httpPath` is not served.
    static let pathPrefix = "/pusher"
    /// Seconds a streaming session may go without a request from its client (an `xhr_send`,
    /// a new stream) before it ends with 4201 "Pong reply not received": 3 × `heartbeat` + 5
    /// (80 by default). pusher-js answers every `h` with an `xhr_send` of `[]`, and the hub
    /// sends an `h` to a client silent for a `heartbeat`, so a live client is heard at least
    /// once per `heartbeat` plus a round trip; this allows two answers lost and a slow third.
    /// Polling sessions need no such bound: they ask again at once, and the linger ends them.
    static func silenceSeconds(heartbeat: Int) -> Int32 { Int32(3 * heartbeat + 5) }

    static let prelude = SockJS.prelude(preludeBytes)
    static let openBytes = SharedBytes(SockJS.open)
    static let arrayHead = SockJS.arrayHead
    static let arrayTail = SockJS.arrayTail
}

/// One pusher-js session over HTTP, for its whole life: the session's transport, whatever
/// receive request (a stream, a poll, or none between two) is attached at the moment. What the
/// session sends while no request can take it waits here (counted in `bufferedBytes`, so the
/// session's buffer bound and slow-consumer policy apply to it). Loop-confined.
final class PusherHTTPTransport: Transport {
    unowned(unsafe) let endpoints: LoopEndpoints  // outlives its transports
    /// `key/server/session` of the URL: the session's only name.
    let path: String

    /// The session's life, as this transport sees it.
    enum Life {
        /// The session lives and sends through this transport.
        case live(Session)
        /// The session ended at monotonic second `at`: receive requests get `closeFrame`
        /// (`c[code,reason]`) for `PusherHTTP.lingerSeconds`, then the transport goes.
        case ended(closeFrame: [UInt8], at: Int32)
        /// No receive request came back within the linger: the session ends with nobody to
        /// tell, and the transport leaves the table.
        case expired
    }

    var life: Life {
        didSet { countLingering() }
    }

    /// The receive request attached at the moment (pusher-js has at most one per session).
    enum Receiver {
        /// None since monotonic second `since` (the linger runs from then).
        case none(since: Int32)
        /// `xhr_streaming`: the response never ends while the session lives. `held`: it
        /// passed `clientRotationBytes`, nothing more goes on it, what follows waits for the
        /// client's next stream.
        case stream(HTTPStream, held: Bool)
        /// `xhr`: answered with what is waiting, or `h` after `pollTimeout`.
        case poll(Responder, since: Int32, origin: String?)
    }

    /// xhr_streaming or xhr (pusher-js keeps one kind per session).
    var kind = TransportKind.xhrStreaming

    var receiver: Receiver {
        didSet { countLingering() }
    }
    /// What this transport added to the client's lingering sessions (`ClientLimits.lingering`),
    /// so that it takes back exactly that: a live session with no receive request attached
    /// (between polls, between streams) counts, as a resumable session without a transport does.
    private(set) var lingerCounted = false

    func countLingering() {
        var want = false
        if case .live = life, case .none = receiver { want = true }
        guard want != lingerCounted else { return }
        lingerCounted = want
        endpoints.hub.clientLimits.lingering(client, want ? 1 : -1, now: endpoints.loop.now)
    }

    /// The session, while it lives.
    var session: Session? {
        if case .live(let s) = life { return s }
        return nil
    }

    /// The bytes the client is told the session ended with, once it has.
    var closeFrame: [UInt8]? {
        if case .ended(let c, _) = life { return c }
        return nil
    }
    /// Bumped per attached request, so a late hang-up of an older one is ignored.
    var generation = 0
    /// Messages waiting for a receive request: each its own frame `a["…"]\n` (a batch
    /// takes the element out of each).
    var queue: [SharedBytes] = []
    var queuedBytes = 0
    var lastWrite: Int32
    /// Monotonic second of the client's last request of any kind (`heard`).
    var lastHeard: Int32
    /// Monotonic second of the last `h` written.
    var lastHeartbeat: Int32 = 0
    /// In the table's ready list (a poll to answer at the end of the turn).
    var readyQueued = false

    /// The address that opened the session. pusher-js names its session in the URL (SockJS):
    /// an access log that records it would let anyone take the session over, so requests
    /// from another address are answered as for an unknown session.
    let client: IPAddress

    init(endpoints: LoopEndpoints, path: String, client: IPAddress, session: Session) {
        self.endpoints = endpoints
        self.path = path
        self.client = client
        life = .live(session)
        receiver = .none(since: endpoints.seconds)
        lastWrite = endpoints.seconds
        lastHeard = endpoints.seconds
        countLingering()  // live, no receive request yet (`didSet` does not run in `init`)
    }

    /// A request of the session arrived (receive or `xhr_send`): the client is alive.
    func heard() {
        lastHeard = endpoints.seconds
    }

    var table: PusherHTTPSessions { endpoints.pusherHTTP }
    var config: HubConfig { endpoints.endpoints.config }

    // MARK: Transport

    func send(_ m: OutMessage, seq: UInt64, delivery: Delivery?) {
        deliver(table.frame(m))
    }

    /// Replies to the client's own messages (pongs, `pusher:error`, `signin_success`) count
    /// against the session's buffer bound like channel messages: `xhr_send` arrives on other
    /// connections, so nothing else slows a client that sends without reading its stream.
    /// Past the bound, `slowConsumer`: `close` ends the session (4100), `gap` skips the reply.
    /// The session's last words (`LoopHub.end`'s `pusher:error`) always go.
    func sendControl(_ json: [UInt8]) {
        guard closeFrame == nil else { return }
        let f = SharedBytes(SockJS.messages([SockJS.quoted(json)]))
        if let s = session, !s.ended, bufferedBytes + f.count > config.sessionBufferBytes {
            s.overflow(nil)
            return
        }
        session?.skippingReplies = false
        deliver(f)
    }

    var bufferedBytes: Int {
        if case .stream(let st, _) = receiver { return queuedBytes + st.bufferedBytes }
        return queuedBytes
    }

    /// The session ended (`LoopHub.end`): the client learns it from `c[code,reason]` now, or
    /// on its next receive request.
    func detach(_ why: Detachment) {
        guard case .live = life else { return }  // expired: `tick` removes it
        let (code, reason) = why.close
        let c = SockJS.close(code: code, reason: reason.isEmpty ? "Session closed" : reason)
        life = .ended(closeFrame: c, at: endpoints.seconds)
        switch receiver {
        case .stream(let st, _):
            // Even on a held stream: pusher-js reads a `c` that comes with the bytes that make
            // it rotate before it rotates; when it rotates first, its next stream within the
            // linger gets the `c` again.
            writeQueue(st)
            st.write([.bytes(c)])
            release()
        case .poll(let r, _, let origin):
            respond(r, origin: origin, closing: true)
        case .none:
            break  // the next receive request gets what waits, then `c`
        }
    }

    // MARK: sending

    /// One message (its frame) for the client: on the stream now, or queued for the next
    /// request.
    func deliver(_ q: SharedBytes) {
        switch receiver {
        case .stream(let st, held: false) where queue.isEmpty:
            st.write([.shared(q)])
            wrote(st)
        case .poll:
            enqueue(q)
            table.ready(self)
        default:
            enqueue(q)
        }
    }

    func enqueue(_ q: SharedBytes) {
        queue.append(q)
        queuedBytes += q.count
    }

    /// Writes what waits as one `a[...]` frame.
    func writeQueue(_ st: HTTPStream) {
        guard !queue.isEmpty else { return }
        if queue.count == 1 {
            st.write([.shared(queue[0])])
        } else {
            st.write([.bytes(batch())])
        }
        queue.removeAll()
        queuedBytes = 0
        wrote(st)
    }

    /// The queued frames as one: `a[e1,e2,…]\n` (each frame is `a[` element `]\n`).
    func batch() -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(queuedBytes)
        out += PusherHTTP.arrayHead
        for (k, q) in queue.enumerated() {
            if k > 0 { out.append(UInt8(ascii: ",")) }
            out.append(contentsOf: UnsafeRawBufferPointer(rebasing: q.buffer[2..<(q.count - 2)]))
        }
        out += PusherHTTP.arrayTail
        return out
    }

    func wrote(_ st: HTTPStream) {
        lastWrite = endpoints.seconds
        if case .stream(let attached, held: false) = receiver, attached === st,
            st.bodyBytes > PusherHTTP.clientRotationBytes
        {
            // pusher-js aborts this stream once it has read this far: what comes next goes on
            // its next stream.
            receiver = .stream(st, held: true)
        }
    }

    // MARK: receive requests

    /// Ends the attached receive request, if any, without a frame of its own: a new one
    /// replaces it (the client has given up on the old one).
    func letGoOfReceiver() {
        switch receiver {
        case .stream:
            release()
        case .poll(let r, _, let origin):
            respondFrame(r, origin: origin, SockJS.heartbeat)
        case .none:
            break
        }
    }

    /// Ends the stream; the session waits for the next receive request.
    func release() {
        guard case .stream(let st, _) = receiver else { return }
        receiver = .none(since: endpoints.seconds)
        st.end()
    }

    /// A stream (`xhr_streaming`). `open`: the session's first request (`o` follows the prelude).
    func attach(stream st: HTTPStream, open: Bool) {
        letGoOfReceiver()
        heard()
        generation += 1
        let g = generation
        kind = .xhrStreaming
        receiver = .stream(st, held: false)
        st.onClose = { [unowned self] in self.receiverGone(g) }
        st.write([.bytes(PusherHTTP.prelude)])
        if open { st.write([.shared(PusherHTTP.openBytes)]) }
        writeQueue(st)
        wrote(st)
        if let c = closeFrame {
            st.write([.bytes(c)])
            release()
        }
    }

    /// A poll (`xhr`): answered now when something waits, else held.
    func attach(poll r: Responder, origin: String?) {
        letGoOfReceiver()
        heard()
        generation += 1
        if !queue.isEmpty || closeFrame != nil {
            respond(r, origin: origin, closing: closeFrame != nil)
            return
        }
        let g = generation
        kind = .xhrPolling
        receiver = .poll(r, since: endpoints.seconds, origin: origin)
        r.onDisconnect { [unowned self] in self.receiverGone(g) }
    }

    /// The client went away from receive request `g` (aborted, or the connection closed).
    func receiverGone(_ g: Int) {
        guard g == generation else { return }
        if case .none = receiver { return }
        receiver = .none(since: endpoints.seconds)
    }

    /// Answers a poll with what waits (and `c` when closing); the session waits for the
    /// next one.
    func respond(_ r: Responder, origin: String?, closing: Bool) {
        var body: [UInt8] = []
        if !queue.isEmpty {
            body = batch()
            queue.removeAll()
            queuedBytes = 0
        }
        if closing, let c = closeFrame { body += c }
        if body.isEmpty { body = SockJS.heartbeat }
        lastWrite = endpoints.seconds
        respondFrame(r, origin: origin, body)
    }

    /// Answers a receive request (a poll, or the first one's `o`); the session waits for the
    /// next one from now.
    func respondFrame(_ r: Responder, origin: String?, _ body: [UInt8]) {
        receiver = .none(since: endpoints.seconds)
        r.respond(HubHTTP.pusherHTTPResponse(200, body, origin: origin))
    }

    /// At the end of the turn (the table's ready list): a held poll gets what arrived.
    func answerPoll() {
        readyQueued = false
        guard case .poll(let r, _, let origin) = receiver, !queue.isEmpty else { return }
        respond(r, origin: origin, closing: false)
    }

    // MARK: once a second

    /// Heartbeats, liveness, poll timeouts, the linger. False when it is
    /// done (remove it from the table).
    func tick(now: Int32) -> Bool {
        let s: Session
        switch life {
        case .expired:
            return false
        case .ended(let c, let endedAt):
            // Ended: kept a linger time for the client to learn the code on its next request.
            switch receiver {
            case .none: return now - endedAt < PusherHTTP.lingerSeconds
            case .stream(let st, _):  // `detach` and `attach` release it: not expected here
                st.write([.bytes(c)])
                release()
            case .poll: break
            }
            return true
        case .live(let live):
            s = live
        }
        switch receiver {
        case .none(let since):
            if now - since >= PusherHTTP.lingerSeconds {
                Log.debug("pusher-js session \(path): no receive request for \(PusherHTTP.lingerSeconds) s: ending")
                life = .expired
                s.transportGone(self)
                return false
            }
        case .stream(let st, let held):
            let heartbeat = Int32(config.heartbeat)
            if now - lastHeard >= PusherHTTP.silenceSeconds(heartbeat: config.heartbeat) {
                // A stream's client that vanished (no FIN: a laptop closed, a network gone)
                // would otherwise keep the session, and its presence, until TCP gives up.
                Log.info(
                    "pusher-js session \(path): nothing from the client for \(now - lastHeard) s: closing \(PusherErrorCode.pongNotReceived)"
                )
                endpoints.loopHub.end(s, .pingTimeout)
                return true  // ended: the branch above from now on
            }
            if held {
                // Waiting for the client's next stream: nothing goes on this one.
            } else if now - lastWrite >= heartbeat || (now - lastHeard >= heartbeat && now - lastHeartbeat >= heartbeat)
            {
                // After a heartbeat of silence either way: pusher-js answers `h` with an
                // `xhr_send` of `[]`, which is how a busy stream's client is heard.
                st.write([.bytes(SockJS.heartbeat)])
                lastHeartbeat = now
                wrote(st)  // an `h` that crosses the rotation point starts the hold
            }
        case .poll(let r, let since, let origin):
            if now - since >= Int32(config.pollTimeout) {
                respond(r, origin: origin, closing: false)
            }
        }
        return true
    }
}

/// A loop's pusher-js HTTP sessions, by URL path. Loop-confined (`LoopEndpoints.pusherHTTP`).
final class PusherHTTPSessions {
    var byPath: [String: PusherHTTPTransport] = [:]
    /// Polls with messages to answer at the end of the turn (a burst goes in one answer).
    var readyList: [PusherHTTPTransport] = []
    /// Messages as frames (`a["…"]\n`), shared by every session of the loop that gets them
    /// (encoded once per transport shape: docs/ARCHITECTURE.md, "The path of a message"). Holds the message, so its identity is not
    /// reused.
    var frameCache: [ObjectIdentifier: (OutMessage, SharedBytes)] = [:]

    var isEmpty: Bool { byPath.isEmpty }

    /// The last one looked up: a fan-out asks for the same message subscriber after subscriber.
    var lastMessage: OutMessage?
    var lastFrame: SharedBytes?

    func frame(_ m: OutMessage) -> SharedBytes {
        if lastMessage === m, let f = lastFrame { return f }
        let f = frameSlow(m)
        lastMessage = m
        lastFrame = f
        return f
    }

    func frameSlow(_ m: OutMessage) -> SharedBytes {
        let id = ObjectIdentifier(m)
        if let (_, f) = frameCache[id] { return f }
        // The prefix and its closing brace (a plain Pusher message), as one JSON string.
        var json = [UInt8](m.prefix.buffer)
        json.append(UInt8(ascii: "}"))
        var out = SockJS.arrayHead
        out.reserveCapacity(json.count + json.count / 4 + 8)
        json.withUnsafeBytes { SockJS.appendQuoted($0, to: &out) }
        out += SockJS.arrayTail
        let f = SharedBytes(out)
        if frameCache.count >= 256 { frameCache.removeAll(keepingCapacity: true) }
        frameCache[id] = (m, f)
        return f
    }

    func ready(_ t: PusherHTTPTransport) {
        guard !t.readyQueued else { return }
        t.readyQueued = true
        readyList.append(t)
    }

    /// Answers the polls that got messages this turn (`LoopEndpoints.turnEnded`).
    func answerReady() {
        while !readyList.isEmpty {
            let ready = readyList
            readyList.removeAll(keepingCapacity: true)
            for t in ready { t.answerPoll() }
        }
    }

    /// With Redis: told the path of a session that ended (its owner record is dropped).
    var onRemove: ((String) -> Void)?

    func remove(_ t: PusherHTTPTransport) {
        guard byPath[t.path] === t else { return }
        byPath[t.path] = nil
        onRemove?(t.path)
    }

    func tick(now: Int32) {
        frameCache.removeAll(keepingCapacity: true)
        lastMessage = nil
        lastFrame = nil
        var done: [PusherHTTPTransport] = []
        for t in byPath.values where !t.tick(now: now) { done.append(t) }
        for t in done { remove(t) }
    }
}
