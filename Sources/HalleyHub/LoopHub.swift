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
        s.unacked.removeAll()
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

    // MARK: subscriptions

    func subscribe(
        _ s: Session, channel name: String, since: (String, UInt64)?, auth: String? = nil, channelData: String? = nil
    ) {
        loop.preconditionInLoop()
        func refuse(_ type: String, _ text: String, _ status: Int) {
            var d = JSONObjectBuilder()
            d.string("type", type)
            d.string("error", text)
            d.int("status", UInt64(status))
            s.enqueue(OutMessage(prefix: Wire.protocolEvent("pusher:subscription_error", channel: name, data: d)))
        }
        if name.hasPrefix(Self.userChannelPrefix) {
            // pusher-js subscribes to its user's channel after `pusher:signin_success`; the
            // session joined it at sign-in.
            guard let u = s.userID, name == Self.userChannelPrefix + u else {
                refuse("AuthError", "\(name) is the channel of a signed-in user: sign in first (pusher:signin)", 403)
                return
            }
            s.enqueue(
                OutMessage(
                    prefix: succeeded(
                        name, epoch: hub.peek(ChannelKey(app: s.app.id, name: name)).epoch, offset: 0, recovered: nil,
                        roster: nil)))
            return
        }
        if let p = ChannelName.problem(name) {
            Log.info("session \(s.id): subscribe refused: \(p)")
            refuse("InvalidChannel", p, 400)
            return
        }
        let kind = ChannelName.kind(name)
        var member: PresenceMember? = nil
        if kind == .private || kind == .presence {
            // Pusher "Authorizing subscriptions": the app's backend signed this socket and
            // channel (and, for presence, the member's data) with the app secret.
            guard let a = auth else {
                Log.info("session \(s.id): subscribe to \(name) refused: no auth")
                refuse("AuthError", "\(name) needs auth: subscribe with data.auth from your auth endpoint", 401)
                return
            }
            if kind == .presence {
                if let cd = channelData {
                    do {
                        member = try PresenceMember.parse(cd)
                    } catch {
                        Log.info("session \(s.id): subscribe to \(name) refused: \(error)")
                        refuse("AuthError", error.description, 400)
                        return
                    }
                } else if let u = s.userID {
                    // pusher-js ≥ 8 leaves channel_data out on a signed-in connection: the
                    // member is the signed-in user (the auth then signs socket_id:channel).
                    member = PresenceMember(userID: u, info: Array("null".utf8))
                } else {
                    refuse("AuthError", "presence channels need data.channel_data (or pusher:signin first)", 400)
                    return
                }
                if member!.info.count > hub.config.maxPresenceUserInfoBytes {
                    refuse("LimitReached", "user_info is larger than \(hub.config.maxPresenceUserInfoBytes) bytes", 400)
                    return
                }
            }
            let text = PusherAuth.channelString(
                socketID: s.id.description, channel: name, channelData: kind == .presence ? channelData : nil)
            do {
                try PusherAuth.verify(
                    auth: a, key: s.app.key, secrets: s.app.secrets(now: Clock.wallSeconds()), text: text)
            } catch {
                Log.info("session \(s.id): subscribe to \(name) refused: \(error)")
                refuse("AuthError", "Invalid signature: expected HMAC SHA256 hex digest of '\(text)' (\(error))", 401)
                return
            }
        }
        let key = ChannelKey(app: s.app.id, name: name)
        let already = s.subscriptions.contains { $0.channel.key == key }
        if !already && s.subscriptions.count >= hub.config.maxSubscriptionsPerSession {
            refuse(
                "LimitReached", "a session may subscribe to at most \(hub.config.maxSubscriptionsPerSession) channels",
                400)
            return
        }
        if pendingMeta[key]?.contains(where: { $0.session === s }) == true { return }  // answered when it comes
        if already {
            // Pusher answers a repeated subscribe again; the subscription stays as it was.
            let r = hub.peek(key)
            s.enqueue(
                OutMessage(
                    prefix: succeeded(name, epoch: r.epoch, offset: r.lastOffset, recovered: nil, roster: r.roster)))
            return
        }
        subscribeChecked(s, key, name, since: since, member: member, meta: nil, refuse: refuse)
    }

    /// Subscriptions waiting for a channel's epoch and offset from Redis, by channel.
    var pendingMeta: [ChannelKey: [(session: Session, since: (String, UInt64)?, member: PresenceMember?)]] = [:]

    /// Subscribes a checked session in the hub and answers it (`pusher_internal:subscription_succeeded`
    /// with what it recovered, a cached message).
    func subscribeChecked(
        _ s: Session, _ key: ChannelKey, _ name: String, since: (String, UInt64)?, member: PresenceMember?,
        meta: (epoch: String, offset: UInt64)?, refuse: (String, String, Int) -> Void
    ) {
        let r: Hub.SubscribeResult
        switch hub.subscribe(
            key, session: s.id, loop: index, since: since.map { (epoch: $0.0, offset: $0.1) }, member: member,
            meta: meta)
        {
        case .success(let ok): r = ok
        case .failure(.presenceFull(let n)):
            Log.info("session \(s.id): subscribe to \(name) refused: presence channel full")
            refuse("LimitReached", "presence channel is full (\(n) members)", 403)
            return
        case .failure(.unknownChannel):
            // With Redis: the channel's epoch and offset first (one request for every
            // subscription waiting on this loop).
            if pendingMeta[key] != nil {
                pendingMeta[key]!.append((s, since, member))
                return
            }
            pendingMeta[key] = [(s, since, member)]
            hub.broker.channelMeta(key, loop: index) { [self] result in metaArrived(key, result) }
            return
        }
        join(s, key, at: r.lastOffset)
        switch r.recovery {
        case .none:
            s.enqueue(
                OutMessage(
                    prefix: succeeded(name, epoch: r.epoch, offset: r.lastOffset, recovered: nil, roster: r.roster)))
        case .recovered(let pubs):
            s.enqueue(
                OutMessage(
                    prefix: succeeded(
                        name, epoch: r.epoch, offset: r.lastOffset, recovered: (true, nil), roster: r.roster)))
            for p in pubs where p.exclude != s.id { s.enqueue(p.message) }
        case .notRecovered(let why):
            Log.debug("session \(s.id): \(name) not recovered: \(why)")
            hub.stats(s.app.id)?.add(.gaps)
            s.enqueue(
                OutMessage(
                    prefix: succeeded(
                        name, epoch: r.epoch, offset: r.lastOffset, recovered: (false, why), roster: r.roster)))
        }
        if ChannelName.kind(name) == .cache {
            if let c = r.cached {
                if case .recovered(let pubs) = r.recovery, pubs.contains(where: { $0 === c }) { return }
                if let since = since, since.0 == r.epoch, since.1 >= c.offset { return }  // the client has it
                if let x = c.exclude, x == s.id { return }
                s.enqueue(c.message)
            } else {
                s.enqueue(OutMessage(prefix: Wire.protocolEvent("pusher:cache_miss", channel: name)))
            }
        }
    }

    /// Adds `s` to this loop's subscribers of `key` (subscribed at offset `at` in the hub).
    func join(_ s: Session, _ key: ChannelKey, at offset: UInt64) {
        let lc =
            channels[key]
            ?? {
                let c = LocalChannel(key: key, stats: hub.stats(key.app))
                channels[key] = c
                return c
            }()
        s.subscriptions.append(Session.Subscription(channel: lc, slot: lc.sessions.count))
        lc.sessions.append(s)
        lc.joined.append(offset)
    }

    /// Redis answered a channel's epoch and offset: the waiting subscriptions go on (those of
    /// sessions that ended or unsubscribed meanwhile were dropped), or are refused with 503.
    func metaArrived(_ key: ChannelKey, _ result: Result<(epoch: String, offset: UInt64), RedisError>) {
        guard let waiting = pendingMeta.removeValue(forKey: key) else { return }
        for w in waiting where !w.session.ended {
            let s = w.session
            func refuse(_ type: String, _ text: String, _ status: Int) {
                var d = JSONObjectBuilder()
                d.string("type", type)
                d.string("error", text)
                d.int("status", UInt64(status))
                s.enqueue(
                    OutMessage(prefix: Wire.protocolEvent("pusher:subscription_error", channel: key.name, data: d)))
            }
            switch result {
            case .success(let m):
                subscribeChecked(s, key, key.name, since: w.since, member: w.member, meta: m, refuse: refuse)
            case .failure(let e):
                Log.info("session \(s.id): subscribe to \(key.name) refused: 503 \(e)")
                refuse("ServiceUnavailable", "cannot subscribe now: \(e); retry", 503)
            }
        }
    }

    func succeeded(
        _ name: String, epoch: String, offset: UInt64, recovered: (Bool, RecoveryFailure?)?, roster: [UInt8]?
    ) -> [UInt8] {
        // Presence: the roster is the data (pusher-js reads `data.presence`).
        var d = JSONObjectBuilder()
        if let r = roster { d.raw("presence", r) }
        return Wire.protocolEvent("pusher_internal:subscription_succeeded", channel: name, data: d) { b in
            b.string("halley:epoch", epoch)
            b.int("halley:offset", offset)
            if let (ok, why) = recovered {
                b.bool("halley:recovered", ok)
                if let w = why { b.string("halley:reason", w.rawValue) }
            }
        }
    }

    func unsubscribe(_ s: Session, channel name: String) {
        loop.preconditionInLoop()
        // The user's channel belongs to the sign-in: it lasts as long as the session.
        if name.hasPrefix(Self.userChannelPrefix) { return }
        let key = ChannelKey(app: s.app.id, name: name)
        pendingMeta[key]?.removeAll { $0.session === s }
        guard let i = s.subscriptions.firstIndex(where: { $0.channel.key == key }) else { return }
        removeFromChannel(s, s.subscriptions[i])
        s.subscriptions.remove(at: i)
    }

    /// Takes `s` out of a local channel (swap-remove) and tells the hub.
    func removeFromChannel(_ s: Session, _ sub: Session.Subscription) {
        let lc = sub.channel
        let i = sub.slot
        let last = lc.sessions.count - 1
        if i != last {
            let moved = lc.sessions[last]
            lc.sessions[i] = moved
            lc.joined[i] = lc.joined[last]
            if let k = moved.subscriptions.firstIndex(where: { $0.channel === lc }) { moved.subscriptions[k].slot = i }
        }
        lc.sessions.removeLast()
        lc.joined.removeLast()
        if lc.sessions.isEmpty { channels[lc.key] = nil }
        hub.unsubscribe(lc.key, session: s.id, loop: index)
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
            if k != runKey {
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
        if pubs[0].restarts || (pubs.count > 1 && pubs.contains { $0.restarts }) {
            // Redis started the channel again: its offsets begin anew for everyone here.
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
