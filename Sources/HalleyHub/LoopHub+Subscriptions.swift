import HalleyCore
import HalleyLoop
import HalleyProtocol

/// Subscribing and unsubscribing a session on its loop: the checks (names, auth, limits), the
/// hub's subscription, the answer (`pusher_internal:subscription_succeeded` with what was
/// recovered).
extension LoopHub {
    /// Answers a refused subscription: `pusher:subscription_error` with Pusher's type, text
    /// and HTTP-like status.
    static func refusal(_ s: Session, channel: String) -> (String, String, Int) -> Void {
        { type, text, status in
            var d = JSONObjectBuilder()
            d.string("type", type)
            d.string("error", text)
            d.int("status", UInt64(status))
            s.enqueue(OutMessage(prefix: Wire.protocolEvent("pusher:subscription_error", channel: channel, data: d)))
        }
    }

    // MARK: subscriptions

    func subscribe(
        _ s: Session, channel name: String, since: (String, UInt64)?, auth: String? = nil, channelData: String? = nil
    ) {
        loop.preconditionInLoop()
        let refuse = Self.refusal(s, channel: name)
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
        if pendingMeta[key]?.contains(where: { $0.session === s }) == true
            || pendingReads.contains(PendingRead(session: s.id, key: key))
        {
            return  // answered when it comes
        }
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

    /// Subscribes a checked session in the hub and answers it (`pusher_internal:subscription_succeeded`
    /// with what it recovered, a cached message).
    func subscribeChecked(
        _ s: Session, _ key: ChannelKey, _ name: String, since: (String, UInt64)?, member: PresenceMember?,
        meta: (epoch: String, offset: UInt64)?, older: [BrokerWire.Message]? = nil,
        cluster: (first: Bool, roster: [UInt8])? = nil, refuse: @escaping (String, String, Int) -> Void
    ) {
        if hub.clustered, let m = member, cluster == nil {
            // With Redis, the roster is the cluster's: the member joins it first (idempotent:
            // a retried step finds it there and announces nothing).
            let waiting = PendingRead(session: s.id, key: key)
            pendingReads.insert(waiting)
            hub.broker.join(key, session: s.id, member: m, max: hub.config.maxPresenceMembers, loop: index) {
                [self] result in
                guard pendingReads.remove(waiting) != nil, !s.ended else { return leaveCluster(key, s.id) }
                switch result {
                case .success(nil):
                    Log.info("session \(s.id): subscribe to \(name) refused: presence channel full")
                    refuse("LimitReached", "presence channel is full (\(hub.config.maxPresenceMembers) members)", 403)
                case .success(let joined?):
                    subscribeChecked(
                        s, key, name, since: since, member: member, meta: meta, older: older, cluster: joined,
                        refuse: refuse)
                case .failure(let e):
                    Log.info("session \(s.id): subscribe to \(name) refused: 503 \(e)")
                    refuse("ServiceUnavailable", "cannot subscribe now: \(e); retry", 503)
                }
            }
            return
        }
        if hub.clustered, older == nil, let sc = since,
            let range = hub.streamRange(key, since: (sc.0, sc.1), meta: meta)
        {
            // This node's history lacks the oldest of what the client asks for: the channel's
            // stream in Redis may have it. The subscription waits for it (one read).
            let waiting = PendingRead(session: s.id, key: key)
            pendingReads.insert(waiting)
            hub.broker.readStream(key, epoch: sc.0, from: range.from, to: range.to, loop: index) { [self] found in
                guard pendingReads.remove(waiting) != nil, !s.ended else {
                    if member != nil { leaveCluster(key, s.id) }
                    return
                }
                subscribeChecked(
                    s, key, name, since: since, member: member, meta: meta, older: found ?? [], cluster: cluster,
                    refuse: refuse)
            }
            return
        }
        let r: Hub.SubscribeResult
        switch hub.subscribe(
            key, session: s.id, loop: index, since: since.map { (epoch: $0.0, offset: $0.1) }, member: member,
            meta: meta, older: older ?? [], cluster: cluster)
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
                pendingMeta[key]!.append((s, since, member, cluster))
                return
            }
            pendingMeta[key] = [(s, since, member, cluster)]
            hub.broker.channelMeta(key, loop: index) { [self] result in metaArrived(key, result) }
            return
        }
        join(s, key, at: r.lastOffset)
        occupyCluster(key, 1)
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
        for w in waiting {
            if w.session.ended {
                if w.member != nil { leaveCluster(key, w.session.id) }
                continue
            }
            let s = w.session
            let refuse = Self.refusal(s, channel: key.name)
            switch result {
            case .success(let m):
                subscribeChecked(
                    s, key, key.name, since: w.since, member: w.member, meta: m, cluster: w.cluster, refuse: refuse)
            case .failure(let e):
                if w.member != nil { leaveCluster(key, s.id) }
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
        if pendingReads.remove(PendingRead(session: s.id, key: key)) != nil || pendingMeta[key] != nil {
            // A presence subscription still on its way may have joined the cluster's roster.
            if ChannelName.kind(name) == .presence { leaveCluster(key, s.id) }
        }
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
        if hub.unsubscribe(lc.key, session: s.id, loop: index) && hub.clustered { leaveCluster(lc.key, s.id) }
        occupyCluster(lc.key, -1)
    }

    /// With Redis: a subscription more or less of this node in the cluster's count (the hub's
    /// own user channels are not counted).
    func occupyCluster(_ key: ChannelKey, _ delta: Int) {
        guard hub.clustered, !key.name.hasPrefix(Self.userChannelPrefix) else { return }
        hub.broker.occupy(key, delta: delta, loop: index) { [hub] change in
            if let change { hub.clusterOccupancy(key, change) }
        }
    }

    /// With Redis: takes a presence member out of the cluster's roster (idempotent); the node
    /// that saw the user's last session leave sends the webhook.
    func leaveCluster(_ key: ChannelKey, _ session: SessionID) {
        hub.broker.leave(key, session: session, loop: index) { [hub] user in if let user { hub.memberLeft(key, user) } }
    }
}
