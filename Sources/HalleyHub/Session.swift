import HalleyCore
import HalleyLoop
import HalleyProtocol

/// What a session needs from the connection it is attached to (a small adapter per
/// transport; the session knows only these: docs/ARCHITECTURE.md, "Sessions and transports"). Loop-confined.
package protocol Transport: AnyObject {
    /// What it is, for `/stats` and `/metrics`.
    var kind: TransportKind { get }
    /// Sends a message of the session's order (`seq` 0: a plain Pusher session, no seq).
    func send(_ m: OutMessage, seq: UInt64, delivery: Delivery?)
    /// Sends a message outside the order (connection_established, pong, errors): a closed
    /// JSON object.
    func sendControl(_ json: [UInt8])
    /// Bytes written to the transport that its socket has not taken.
    var bufferedBytes: Int { get }
    /// The session lets go of the transport (another one took over, or the session ended).
    func detach(_ why: Detachment)
}

/// One client's session (docs/ARCHITECTURE.md, "Sessions and transports"): an id, the loop that owns it,
/// its subscriptions and, when resumable, a sequence number per outbound message and the
/// messages not yet acknowledged. It outlives its transport by `sessionLinger` seconds.
/// Loop-confined: only its loop touches it.
package final class Session {
    package let id: SessionID
    /// Its app as configured now (a reload that changes the app replaces it).
    package internal(set) var app: App
    /// Its index in the loop's `live` list.
    var liveSlot = -1
    /// The client came back after opening it (a second request, an ack, any message): until
    /// then the session lingers only `sessionLingerUnconfirmed` (issue 18: anyone can open
    /// sessions with the public key and walk away).
    var confirmed = false
    /// In the loop's `detached` list (at most once; bookkeeping of the list, not a phase).
    var inDetachedList = false
    /// Counted in its app's `fallbacks` (it opened on or moved to an HTTP transport).
    var fellBack = false
    /// Transports attached so far (the second one confirms the session).
    var attaches = 0
    /// Outlives its sessions (`unowned(unsafe)`: no reference-count check per access).
    unowned(unsafe) let loopHub: LoopHub

    /// Where the session is in its life: one value, so that an ended session with a
    /// transport, or a lingering one nobody counts, cannot be written.
    package enum Phase {
        /// Made, no transport attached yet (the request that opened it attaches one next).
        case opened
        /// A transport is attached.
        case attached(Transport)
        /// Its transport went at monotonic second `since`: a resumable session waits for its
        /// client (the linger), counted in the client's lingering sessions.
        case lingering(since: Int32)
        /// Over (`LoopHub.end`); what a resume is told.
        case ended(SessionEnd)
    }
    package private(set) var phase = Phase.opened

    package var transport: Transport? {
        if case .attached(let t) = phase { return t }
        return nil
    }
    package var ended: Bool {
        if case .ended = phase { return true }
        return false
    }
    /// The client's address (a trusted proxy's client), for the per-address limits.
    let client: IPAddress

    /// What many sessions never use (the resume ring, gaps, sign-in, client-event counts), made
    /// on first use: Session+Extras.swift.
    var extras: SessionExtras?

    var subscriptions = SubscriptionList()

    struct Subscription {
        let channel: LocalChannel
        var slot: Int
    }

    init(id: SessionID, app: App, resumable: Bool, client: IPAddress, loopHub: LoopHub) {
        self.id = id
        self.app = app
        self.client = client
        if resumable { extras = SessionExtras(token: SessionToken.random()) }
        self.loopHub = loopHub
    }

    /// Set for resumable sessions (the secret a client shows to resume).
    package var token: SessionToken? { extras?.token }
    var resumable: Bool { extras?.token != nil }
    var config: HubConfig { loopHub.hub.config }

    // MARK: sending

    /// Sends a message in the session's order (resumable: numbered and kept until acked).
    func enqueue(_ m: OutMessage, delivery: Delivery? = nil) {
        loopHub.loop.preconditionInLoop()
        guard !ended else { return }
        let t = transport  // read once: each read of the property is a retain
        let full = bufferedBytes(t) + m.size > config.sessionBufferBytes
        // Under `gap`, a session message (a subscription answer) is never skipped: only
        // channel messages can be named in a gap notice. It may overrun the bound a little.
        if (full && (m.isChannelMessage || config.slowConsumer == .close))
            || (!gaps.isEmpty && m.isChannelMessage && !announceGaps())
        {
            overflow(m)
            return
        }
        send(m, on: t, delivery: delivery)
    }

    /// What counts against the session's buffer bound: the unacknowledged messages of a
    /// resumable session, what the transport holds unsent for a plain one.
    func bufferedBytes(_ t: Transport?) -> Int {
        resumable ? unacked.bytes : (t?.bufferedBytes ?? 0)
    }

    /// The one way a message of the session's order goes out: numbered and kept until
    /// acknowledged (resumable), then to the transport, if one is attached.
    @inline(__always)
    func send(_ m: OutMessage, on t: Transport?, delivery: Delivery?) {
        let seq = resumable ? unacked.append(m) : 0
        t?.send(m, seq: seq, delivery: delivery)
    }

    /// The buffer bound was hit while sending `m` (nil: a reply to the client's own message,
    /// outside the order, which `gap` skips without a notice).
    package func overflow(_ m: OutMessage?) {
        loopHub.hub.stats(app.id)?.add(.slowConsumers)
        switch config.slowConsumer {
        case .close:
            Log.info(
                "session \(id): buffer full (\(bufferedBytes(transport)) B)\(m == nil ? " with replies to the client's messages" : ""): closing \(PusherErrorCode.overCapacity)"
            )
            loopHub.end(self, .bufferOverflow)
        case .gap:
            guard let m else {  // a reply to the client's own message
                if !skippingReplies {
                    Log.info("session \(id): buffer full: skipping replies to the client's messages")
                }
                skippingReplies = true
                return
            }
            guard let c = m.channel else { return }  // a session message: dropped with its channel's gap
            if let i = gaps.firstIndex(where: { $0.channel == c }) {
                gaps[i].to = m.offset
            } else {
                if gaps.isEmpty { Log.info("session \(id): buffer full: skipping messages (gap)") }
                gaps.append((c, m.offset, m.offset))
            }
        }
    }

    /// Sends the pending gap notices if there is room; false if there still is none.
    @discardableResult
    func announceGaps() -> Bool {
        while let g = gaps.first {
            var d = JSONObjectBuilder()
            d.int("from", g.from)
            d.int("to", g.to)
            let m = OutMessage(prefix: Wire.protocolEvent("halley:gap", channel: g.channel, data: d))
            guard bufferedBytes(transport) + m.size <= config.sessionBufferBytes else { return false }
            gaps.removeFirst()
            loopHub.hub.stats(app.id)?.add(.gaps)
            send(m, on: transport, delivery: nil)
        }
        return true
    }

    /// The client has processed everything up to `upTo`; room made announces pending gaps
    /// (`announce`: not while a transport is attached and not yet sent what waits).
    func ack(_ upTo: UInt64, announce: Bool = true) {
        if upTo > 0 { confirmed = true }
        guard resumable else { return }
        unacked.ack(upTo: upTo)
        if announce && !gaps.isEmpty { announceGaps() }
    }

    // MARK: transports

    /// The session is over (`LoopHub.end`, its only caller): returns the phase it was in.
    func markEnded(_ reason: SessionEnd) -> Phase {
        let was = phase
        phase = .ended(reason)
        return was
    }

    /// Attaches `t`, replacing any other, and resends what the client has not seen.
    package func attach(_ t: Transport, lastSeen: UInt64?) {
        loopHub.loop.preconditionInLoop()
        guard !ended else { return }
        if !fellBack && t.kind.isFallback {
            fellBack = true
            loopHub.hub.stats(app.id)?.add(.fallbacks)
        }
        // The new transport is in place before the old one is let go: ending the old one
        // (an SSE response, a poll answer) can run a pipelined request for this session.
        let was = phase
        let old = transport
        phase = .attached(t)
        attaches += 1
        if attaches > 1 { confirmed = true }
        if case .lingering = was { loopHub.hub.clientLimits.lingering(client, -1, now: loopHub.loop.now) }
        if let o = old, o !== t { o.detach(.replaced) }
        guard transport === t, !ended else { return }
        if let last = lastSeen { ack(last, announce: false) }
        for (seq, m) in unacked.after(lastSeen ?? 0) { t.send(m, seq: seq, delivery: nil) }
        // After what waited: a gap notice numbered now must not overtake it.
        if !gaps.isEmpty && transport === t { announceGaps() }
    }

    /// The transport went (closed, timed out, a poll answered).
    package func transportGone(_ t: Transport) {
        guard transport === t else { return }
        if resumable {
            phase = .lingering(since: loopHub.seconds)
            loopHub.noteDetached(self)
            loopHub.hub.clientLimits.lingering(client, 1, now: loopHub.loop.now)
        } else {
            loopHub.end(self, .closed)
        }
    }

    // MARK: messages from the client

    package func handle(_ msg: ClientMessage) {
        loopHub.loop.preconditionInLoop()
        confirmed = true
        switch msg.event {
        case "pusher:ping":
            transport?.sendControl(Wire.pong)
        case "pusher:subscribe":
            guard let ch = msg.data?["channel"]?.string else {
                transport?.sendControl(Wire.error(code: nil, message: "pusher:subscribe needs data.channel"))
                return
            }
            var since: (String, UInt64)? = nil
            if let s = msg.data?["halley:since"], let e = s["epoch"]?.string, let o = s["offset"]?.uint64 {
                since = (e, o)
            }
            loopHub.subscribe(
                self, channel: ch, since: since, auth: msg.data?["auth"]?.string,
                channelData: msg.data?["channel_data"]?.string)
        case "pusher:unsubscribe":
            if let ch = msg.data?["channel"]?.string { loopHub.unsubscribe(self, channel: ch) }
        case "pusher:pong":
            break  // the transport noted the activity
        case "pusher:signin":
            signIn(msg)
        case "halley:ack":
            if let s = msg.data?["seq"]?.uint64 { ack(s) }
        default:
            if msg.event.hasPrefix("client-") {
                clientEvent(msg)
            } else {
                Log.debug("session \(id): ignoring event \(msg.event)")
            }
        }
    }

    /// A `client-` event (Pusher "Client events"): on a private or presence channel this
    /// session is subscribed to, when the app allows them, within the rate limit; relayed to
    /// the channel's other subscribers (with `user_id` on presence channels).
    func clientEvent(_ msg: ClientMessage) {
        // Pusher documents one code here, 4301, for the rate limit; other refusals carry none.
        func reject(_ text: String, code: UInt16? = nil) {
            Log.info("session \(id): client event \(msg.event) rejected: \(text)")
            transport?.sendControl(Wire.error(code: code, message: text))
        }
        guard app.clientEvents else { return reject("client events are not enabled for this app") }
        guard let ch = msg.channel else { return reject("client event without a channel") }
        let kind = ChannelName.kind(ch)
        guard kind == .private || kind == .presence else {
            return reject("client events are only allowed on private and presence channels")
        }
        guard !ch.hasPrefix("private-encrypted-") else {
            return reject("client events are not allowed on encrypted channels")
        }
        let key = ChannelKey(app: app.id, name: ch)
        guard subscriptions.contains(where: { $0.channel.key == key }) else {
            return reject("not subscribed to \(ch)")
        }
        // The name first: a refused name uses none of the second's budget.
        if let p = config.eventProblem(app: app, name: msg.event, dataBytes: 0) { return reject(p.text) }
        let now = loopHub.seconds
        if now != clientEventSecond {
            clientEventSecond = now
            clientEvents = 0
        }
        clientEvents += 1
        guard clientEvents <= app.clientEventsPerSecond else {
            return reject(
                "Client event rejected - rate limit exceeded (\(app.clientEventsPerSecond) per second)",
                code: PusherErrorCode.clientEventRejected)
        }
        let data: String
        switch msg.data {
        case .string(let t)?: data = t
        case let v?: data = String(decoding: v.serialized, as: UTF8.self)
        case nil: data = ""
        }
        var binary: [UInt8]? = nil
        if msg.binary {
            // halley.js: a binary client event, relayed as binary (a binary frame to resumable
            // WebSocket sessions, `halley:binary` base64 to the others). The message's own size
            // limit bounds what is decoded here.
            guard let bytes = Base64.decode(data) else { return reject("halley:binary data is not base64") }
            binary = bytes
        }
        if let p = config.eventProblem(app: app, name: msg.event, dataBytes: binary?.count ?? data.utf8.count) {
            return reject(p.text)
        }
        let user = kind == .presence ? loopHub.hub.presenceUser(key, session: id) : nil
        let event = msg.event
        loopHub.hub.publish(
            app: app, channels: [ch], event: event, data: data, binary: binary, exclude: id, userID: user,
            loop: loopHub.index
        ) { [self] r in
            switch r {
            case .success:
                loopHub.hub.clientEventHook(app, channel: ch, event: event, data: data, socketID: id, userID: user)
            case .failure(let e):
                // Pusher's 4201 family: the client may send it again.
                Log.info("session \(id): client event \(event) not published: \(e)")
                transport?.sendControl(
                    Wire.error(code: PusherErrorCode.clientEventRejected, message: "Client event not published: \(e)"))
            }
        }
    }

    /// `pusher:signin` (Pusher "User authentication"): `data.auth` signs
    /// `socket_id::user::user_data`; the session then gets the events sent to its user.
    func signIn(_ msg: ClientMessage) {
        func fail(_ text: String) {
            Log.info("session \(id): signin refused: \(text)")
            transport?.sendControl(Wire.error(code: PusherErrorCode.connectionUnauthorized, message: text))
        }
        guard let auth = msg.data?["auth"]?.string, let userData = msg.data?["user_data"]?.string else {
            return fail("pusher:signin needs data.auth and data.user_data")
        }
        guard let u = try? JSONParser.parse(Array(userData.utf8)), let uid = u["id"]?.string, !uid.isEmpty else {
            return fail("user_data must be a JSON object with a non-empty string id")
        }
        guard uid.utf8.count <= PresenceMember.maxUserIDLength else {
            return fail("user id is longer than \(PresenceMember.maxUserIDLength) characters")
        }
        do {
            try PusherAuth.verify(
                auth: auth, key: app.key, secrets: app.secrets(now: Clock.wallSeconds()),
                text: PusherAuth.userString(socketID: id.description, userData: userData))
        } catch {
            return fail("Invalid signature for pusher:signin (\(error))")
        }
        if let old = userID {
            guard old == uid else { return fail("already signed in as another user") }
        } else {
            userID = uid
            loopHub.signIn(self, user: uid)
        }
        var d = JSONObjectBuilder()
        d.string("user_data", userData)
        transport?.sendControl(Wire.protocolEvent("pusher:signin_success", data: d) + Wire.plainTail)
    }

    package func handle(text bytes: UnsafeRawBufferPointer) {
        do {
            handle(try ClientMessage.decode(bytes))
        } catch {
            Log.info("session \(id): bad message: \(error)")
            transport?.sendControl(
                Wire.error(code: nil, message: "invalid message: expected a JSON object with an event"))
        }
    }

    // MARK: encodings

    /// `pusher:connection_established` for this session.
    package func established(resumed: Bool, reason: SessionEnd?) -> [UInt8] {
        var d = JSONObjectBuilder()
        d.string("socket_id", id.description)
        d.int("activity_timeout", UInt64(config.activityTimeout))
        if let t = token {
            d.string("halley:token", t.description)
            d.bool("halley:resumed", resumed)
            if let r = reason { d.string("halley:reason", r.rawValue) }
        }
        return Wire.protocolEvent("pusher:connection_established", data: d) + Wire.plainTail
    }
}
