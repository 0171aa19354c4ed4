import HalleyCore
import HalleyLoop
import HalleyProtocol
import HalleyWebSocket

/// Subscribers of one channel on one loop. `joined[i]` is the channel offset that was
/// current when `sessions[i]` subscribed: a message already in the loop's inbox then (offset
/// not above it) is not delivered again (the client got it from history, or it predates the
/// subscription).
final class LocalChannel {
    let key: ChannelKey
    var sessions: [Session] = []
    var joined: [UInt64] = []

    /// Its app's counters (messages out).
    let stats: AppStats?

    init(key: ChannelKey, stats: AppStats?) {
        self.key = key
        self.stats = stats
    }
}

/// A message on its way through one loop: the encodings shared by the loop's subscribers,
/// made on first use.
package final class Delivery {
    let message: OutMessage
    private var _prepared: PreparedMessage?
    private var _prefix: PreparedPrefix?

    package init(_ m: OutMessage) { message = m }

    /// The whole frame of a plain Pusher session (`prefix` + `}`), framed and compressed once.
    package var prepared: PreparedMessage {
        if let p = _prepared { return p }
        var b = Array(message.prefix.buffer)
        b.append(UInt8(ascii: "}"))
        let p = PreparedMessage(text: b)
        _prepared = p
        return p
    }

    package var preparedPrefix: PreparedPrefix {
        if let p = _prefix { return p }
        let p = PreparedPrefix(message.prefix)
        _prefix = p
        return p
    }
}

/// Per-loop state of a layer above the domain (`HalleyEndpoints`' streams, polls and pusher-js
/// sessions). Loop-confined: its loop hub calls it.
package protocol LoopExtension: AnyObject {
    /// The end of the loop's turn, after the turn's fan-out, before the server flushes its cork.
    func turnEnded()
    /// Once a second (monotonic seconds), after the hub's own expiries.
    func tick(now: Int32)
}

/// The hub's part on one loop: the sessions it owns, who is subscribed to what, fan-out,
/// session expiry once a second; the layers above keep their per-loop state in `extensions`.
/// Loop-confined.
package final class LoopHub: @unchecked Sendable {
    // Sendable: only its loop touches it; other threads reach it through `loop.execute`.
    /// The hub outlives its loops (`unowned(unsafe)`: no reference-count check per access).
    package unowned(unsafe) let hub: Hub
    package let loop: EventLoop
    let index: Int
    let loopCount: Int

    /// Resumable sessions by id (for resume and HTTP requests).
    var sessions: [SessionID: Session] = [:]
    /// Every session of this loop not ended, resumable or not (for a reload and the drain).
    var live: ContiguousArray<Session> = []
    /// A graceful shutdown began: no new sessions.
    var draining = false
    /// Sessions signed in as a user (`pusher:signin`), by id (for `terminate_connections`).
    var signedIn: [SessionID: Session] = [:]
    var channels: [ChannelKey: LocalChannel] = [:]
    /// Sessions without a transport (expire after the linger time); may hold stale entries.
    var detached: [Session] = []
    /// Subscriptions waiting for the oldest of their recovery from a Redis stream.
    var pendingReads = Set<PendingRead>()

    struct PendingRead: Hashable {
        let session: SessionID
        let key: ChannelKey
    }
    /// Subscriptions waiting for a channel's epoch and offset from Redis, by channel.
    var pendingMeta:
        [ChannelKey: [(
            session: Session, since: (String, UInt64)?, member: PresenceMember?,
            cluster: (first: Bool, roster: [UInt8])?
        )]] = [:]

    /// The layers above the domain that keep state on this loop (the HTTP endpoints' streams,
    /// polls and pusher-js sessions): run at the end of every turn and once a second.
    package private(set) var extensions: [LoopExtension] = []

    /// Adds a layer's per-loop state; before the loop runs (`HubEndpoints.attach`).
    package func add(_ e: LoopExtension) { extensions.append(e) }
    /// Why recently ended resumable sessions ended (`expired`, `buffer_overflow`), for the
    /// answer to a client that tries to resume one; forgotten after 10 minutes.
    /// The token is kept so that the reason is told only to the session's own client: anyone
    /// else gets `expired`, as for an id that never existed.
    var endedReasons: [SessionID: (reason: SessionEnd, at: Int32, token: SessionToken?)] = [:]
    package var seconds: Int32 { Int32(loop.now / 1000) }

    init(hub: Hub, loop: EventLoop, loopCount: Int) {
        self.hub = hub
        self.loop = loop
        self.index = loop.index
        self.loopCount = loopCount
        loop.onTick { [unowned self] in self.tick() }
        // Before the server flushes its cork: what the hub writes this turn goes out in it.
        loop.onTurnEnd(first: true) { [unowned self] in
            self.flushFanOut()
            for e in self.extensions { e.turnEnded() }
        }
    }

    // MARK: sessions

    /// Why the last `newSession` returned nil: `pusher:error` code and message.
    package internal(set) var refusal: (code: UInt16, message: String) = (PusherErrorCode.overCapacity, "Over capacity")
    /// The last refusal was a per-address limit (HTTP answers it 429, not 503).
    package internal(set) var refusedByClientLimit = false

    /// A new session owned by this loop, or nil at the node's session limit (4100) or the
    /// app's connection quota (4004); `refusal` says which.
    package func newSession(app: App, resumable: Bool, client: IPAddress) -> Session? {
        loop.preconditionInLoop()
        if draining {
            refusal = (PusherErrorCode.genericReconnect, "Server shutting down: reconnect")
            refusedByClientLimit = false
            return nil
        }
        if let kind = hub.clientLimits.sessionOpen(client, now: loop.now) {
            refusal = (
                PusherErrorCode.overCapacity,
                kind == .sessionOpens
                    ? "Too many new sessions from your address: retry later"
                    : "Too many idle sessions from your address: retry later"
            )
            refusedByClientLimit = true
            return nil
        }
        refusedByClientLimit = false
        let n = hub.sessionCount.add(1, ordering: .relaxed).newValue
        if n > hub.config.maxSessions {
            hub.sessionCount.subtract(1, ordering: .relaxed)
            Log.warning("session limit \(hub.config.maxSessions) reached: refusing a new session")
            refusal = (PusherErrorCode.overCapacity, "Over capacity")
            return nil
        }
        // Every app's sessions are counted (not only those with a quota): a reload may set one.
        if let c = hub.apps.sessions[app.id] {
            if c.add(1) > app.maxConnections && app.maxConnections > 0 {
                c.add(-1)
                hub.sessionCount.subtract(1, ordering: .relaxed)
                Log.info("app \(app.id): connection quota \(app.maxConnections) reached: refusing a new session")
                refusal = (PusherErrorCode.overConnectionQuota, "Application is over connection quota")
                return nil
            }
        }
        let node = hub.clustered ? hub.nodeNumber.load(ordering: .relaxed) : nil
        var id = SessionID.random(loop: index, loops: loopCount, node: node)
        while sessions[id] != nil { id = SessionID.random(loop: index, loops: loopCount, node: node) }
        let s = Session(id: id, app: app, resumable: resumable, client: client, loopHub: self)
        if resumable { sessions[id] = s }
        s.liveSlot = live.count
        live.append(s)
        hub.stats(app.id)?.add(.sessionsOpened)
        return s
    }

    /// Looks up a resumable session for a client that shows its id and token.
    package enum Lookup {
        case found(Session)
        case gone(SessionEnd)
    }

    package func lookup(_ id: SessionID, token: String) -> Lookup {
        loop.preconditionInLoop()
        // A wrong token is answered as an id that does not exist: the answer must not tell
        // whether a session id is live (or how it ended).
        let shown = SessionToken(token)
        if let s = sessions[id], !s.ended {
            if let t = shown, t == s.token { return .found(s) }
            return .gone(.expired)
        }
        if let e = endedReasons[id], let t = shown, t == e.token { return .gone(e.reason) }
        return .gone(.expired)
    }

    package func end(_ s: Session, _ reason: SessionEnd) {
        loop.preconditionInLoop()
        guard !s.ended else { return }
        let was = s.markEnded(reason)
        let last = live.count - 1
        if s.liveSlot != last {
            live[s.liveSlot] = live[last]
            live[s.liveSlot].liveSlot = s.liveSlot
        }
        live.removeLast()
        if let u = s.userID {
            signedIn[s.id] = nil
            hub.signOut(UserKey(app: s.app.id, id: u), session: s.id)
        }
        for sub in s.subscriptions { removeFromChannel(s, sub) }
        s.subscriptions.removeAll()
        if s.resumable {
            sessions[s.id] = nil
            // "expired" is what a lookup answers for an unknown id anyway: not kept (it is
            // what most sessions end with, and each record stays 10 minutes).
            if reason != .expired { endedReasons[s.id] = (reason, seconds, s.token) }
        }
        s.extras?.unacked.removeAll()  // (a session without extras holds none: none made here)
        if case .lingering = was { hub.clientLimits.lingering(s.client, -1, now: loop.now) }
        hub.sessionCount.subtract(1, ordering: .relaxed)
        hub.apps.sessions[s.app.id]?.add(-1)
        if case .attached(let t) = was {
            let e = reason.pusherError
            if let e { t.sendControl(Wire.error(code: e.code, message: e.message)) }
            t.detach(.ended(reason))
        }
    }

    /// A session signed in as `user`: it joins the user's channel (`#server-to-user-ID`, where
    /// the HTTP API sends events to the user) and can be terminated by the app.
    func signIn(_ s: Session, user: String) {
        signedIn[s.id] = s
        hub.signIn(UserKey(app: s.app.id, id: user), session: s.id)
        let key = ChannelKey(app: s.app.id, name: Self.userChannelPrefix + user)
        guard case .success(let r) = hub.subscribe(key, session: s.id, loop: index, since: nil) else { return }
        join(s, key, at: r.lastOffset)
    }

    package static let userChannelPrefix = "#server-to-user-"

    /// `terminate_connections`: the session ends (Pusher closes with 4009).
    func terminate(_ id: SessionID) {
        loop.preconditionInLoop()
        guard let s = signedIn[id], !s.ended else { return }
        Log.info("session \(id): terminated by the app")
        end(s, .terminated)
    }

    func noteDetached(_ s: Session) {
        if !s.inDetachedList {
            s.inDetachedList = true
            detached.append(s)
        }
    }

    // MARK: fan-out

    /// Publications that came through the inbox this turn, in offset order per channel.
    var pendingFanOut: [(ChannelKey, Publication)] = []

    /// Called from the inbox: the delivery happens at the end of the turn, with everything
    /// else published meanwhile, so each subscriber gets all of it in one write.
    func fanOutLater(_ key: ChannelKey, _ p: Publication) {
        loop.preconditionInLoop()
        pendingFanOut.append((key, p))
    }

    func flushFanOut() {
        while !pendingFanOut.isEmpty { flushFanOutOnce() }
    }

    func flushFanOutOnce() {
        let items = pendingFanOut
        pendingFanOut.removeAll(keepingCapacity: true)
        if items.count == 1 {
            fanOut(items[0].0, [items[0].1])
            return
        }
        // Runs of the same channel go together (a burst on one channel: one write per
        // subscriber); the runs stay in publish order, so a client subscribed to two channels
        // sees their messages in the order they were accepted.
        var run: [Publication] = []
        var runKey = items[0].0
        for (k, p) in items {
            if !run.isEmpty && (k != runKey || p.restarts) {  // a new epoch starts a run of its own
                fanOut(runKey, run)
                run.removeAll(keepingCapacity: true)
                runKey = k
            }
            run.append(p)
        }
        fanOut(runKey, run)
    }

    /// Delivers publications of one channel to this loop's subscribers: subscriber by
    /// subscriber, so the server's cork gathers one subscriber's messages into one write.
    func fanOut(_ key: ChannelKey, _ pubs: [Publication]) {
        loop.preconditionInLoop()
        guard let lc = channels[key] else { return }
        if pubs[0].restarts {
            // Redis started the channel again (runs begin at such a message): its offsets begin
            // anew for everyone here. (A session that joined within this turn, after the
            // restart was posted, may get a few new-epoch messages from before its join.)
            for i in lc.joined.indices { lc.joined[i] = 0 }
        }
        let sessions = lc.sessions
        let joined = lc.joined
        // The per-delivery loop reads only locals: each read of an array element or a property
        // of a class is a retain and a release, and this loop runs once per subscriber.
        if pubs.count == 1 {
            let p = pubs[0]
            let m = p.message, d = Delivery(m), offset = p.offset, exclude = p.exclude
            for i in 0..<sessions.count where offset > joined[i] {
                let s = sessions[i]
                if let x = exclude, x == s.id { continue }
                s.enqueue(m, delivery: d)
            }
        } else {
            let messages = pubs.map { $0.message }
            let deliveries = messages.map { Delivery($0) }
            let offsets = pubs.map { $0.offset }
            let excludes = pubs.map { $0.exclude }
            for i in 0..<sessions.count {
                let s = sessions[i]
                for j in 0..<pubs.count where offsets[j] > joined[i] {
                    if let x = excludes[j], x == s.id { continue }
                    s.enqueue(messages[j], delivery: deliveries[j])
                }
            }
        }
        lc.stats?.add(.messagesOut, sessions.count * pubs.count)
        let now = Clock.monotonicNanos()
        for p in pubs { hub.deliveryLatency.observe(nanos: now - p.publishedNanos, loop: index) }
    }

    // MARK: once a second

    func tick() {
        loop.preconditionInLoop()
        let now = seconds
        let linger = Int32(hub.config.sessionLinger)
        let briefLinger = min(linger, Int32(hub.config.sessionLingerUnconfirmed))
        if !detached.isEmpty {
            var keep: [Session] = []
            for s in detached {
                s.inDetachedList = false
                guard case .lingering(let since) = s.phase else { continue }
                if now - since >= (s.confirmed ? linger : briefLinger) {
                    Log.debug("session \(s.id): expired")
                    end(s, .expired)
                } else {
                    s.inDetachedList = true
                    keep.append(s)
                }
            }
            detached = keep
        }
        if now % 60 == 0 && !endedReasons.isEmpty {
            endedReasons = endedReasons.filter { now - $0.value.at < 600 }
        }
        for e in extensions { e.tick(now: now) }
        takeCensus()
        if index == 0 {
            hub.sweepChannels()
            hub.sampleStats()
            if let w = hub.webhooks { hub.webhookQueued.store(w.driver.value.queuedEvents, ordering: .relaxed) }
        }
    }
}
