#if canImport(Glibc)
import Glibc
#endif
import HalleyCore
import HalleyLoop
import HalleyProtocol
import HalleyServer
import Synchronization

/// The node's channels: one offset sequence per channel, decided under its shard's lock, and
/// the per-loop `LoopHub`s that hold the sessions. A publish assigns offsets and posts the
/// message to every loop with subscribers *while holding the channel's lock*, so each loop's
/// inbox gets a channel's messages in offset order whatever thread published them.
public final class Hub: Sendable {
    public let config: HubConfig
    /// The apps: replaced whole by `reload` (SIGHUP re-reads the apps file). Taken alone or
    /// inside a shard's lock (webhook events are emitted under it), never the other way round.
    let appTable: Locked<AppTable>
    /// The channel table in `shardCount` shards, each behind its own lock: a channel lives in
    /// the shard its key hashes to, so publishes and subscriptions to different channels from
    /// different loops do not wait for each other. No code holds two shard locks at once.
    let shards: [Locked<Shard>]
    /// Signed-in users' sessions on this node (`pusher:signin`), for events to a user and
    /// `terminate_connections`. Taken alone.
    let userSessions = Locked<[UserKey: Set<SessionID>]>([:])
    let sessionCount = Atomic<Int>(0)
    /// Each loop's sessions per app, counted once a second (`LoopHub.takeCensus`).
    let census = Locked<[[String: AppCensus]]>([])
    /// Per-second totals of the last minutes (loop 0 samples them).
    let history = Locked(StatsHistory())
    /// Webhook events waiting in the sending loop's queues (it stores the count each second).
    let webhookQueued = Atomic<Int>(0)
    let startedAt = Clock.monotonicMillis()
    /// Latency histograms (made by `attach`, one writer per loop).
    nonisolated(unsafe) var deliveryLatency = LatencyHistogram(loops: 1)
    package internal(set) nonisolated(unsafe) var publishHandling = LatencyHistogram(loops: 1)
    /// The server's metrics (set by `addMetrics` before the loops run): `/stats` reads its
    /// open-connection gauge.
    package internal(set) nonisolated(unsafe) var serverMetrics: Metrics?

    /// One configuration of apps, immutable; a reload makes a new one.
    package final class AppTable: Sendable {
        package let apps: [App]
        let byKey: [String: App]
        let byID: [String: App]
        /// Sessions per app id (for the apps' connection quotas); kept across reloads.
        let sessions: [String: Counter]
        /// Counters per app id for `/stats` and `/metrics`; kept across reloads.
        let stats: [String: AppStats]

        init(_ apps: [App], counters old: [String: Counter] = [:], stats oldStats: [String: AppStats] = [:]) {
            self.apps = apps
            var k: [String: App] = [:]
            var i: [String: App] = [:]
            for a in apps {
                k[a.key] = a
                i[a.id] = a
            }
            byKey = k
            byID = i
            sessions = Dictionary(uniqueKeysWithValues: apps.map { ($0.id, old[$0.id] ?? Counter()) })
            stats = Dictionary(uniqueKeysWithValues: apps.map { ($0.id, oldStats[$0.id] ?? AppStats()) })
        }
    }

    final class Counter: Sendable {
        let value = Atomic<Int>(0)
        /// The count after adding `n` (relaxed: a quota, not a synchronization point).
        @discardableResult
        func add(_ n: Int) -> Int { value.add(n, ordering: .relaxed).newValue }
    }
    // Set once by `attach(to:)` before the loops run, read-only after.
    package internal(set) nonisolated(unsafe) var loops: [LoopHub] = []
    /// Set by `attach`, read-only after; sends from loop 0.
    nonisolated(unsafe) var webhooks: Webhooks?
    /// The server's per-address limits; set by `attach` before the loops run, read-only after.
    package internal(set) nonisolated(unsafe) var clientLimits = ClientLimits(config: ClientLimitConfig())

    struct Shard: ~Copyable {
        var channels: [ChannelKey: ChannelState] = [:]

        mutating func channel(_ key: ChannelKey, loops: Int) -> ChannelState {
            if let c = channels[key] { return c }
            let c = ChannelState(name: key.name, loops: loops)
            channels[key] = c
            return c
        }
    }

    /// A power of two, well above the loops a machine runs (one per core), so that two loops
    /// rarely publish into the same shard at once.
    static let shardCount = 64

    /// Orders channels and joins nodes: `MemoryBroker`, or `RedisBroker` with `--redis`.
    package let broker: any Broker
    /// The broker is Redis: a channel's offsets and epoch are Redis's (`broker.ordersLocally`
    /// read once).
    package let clustered: Bool
    /// With Redis: this node's number among the nodes (in its sessions' ids), 0 until claimed.
    package let nodeNumber = Atomic<Int>(0)
    /// With Redis: numbers this node had before (another node took one while this one was away
    /// from Redis): its sessions that carry them are still served here.
    package let previousNodeNumbers = Locked<[Int]>([])
    /// With Redis: requests of other nodes' HTTP sessions this node relayed to them.
    package let forwardedRequests = Atomic<Int>(0)
    /// Where the other nodes reach this one (`host:port`), set by `attach`.
    package internal(set) nonisolated(unsafe) var advertisedAddress = ""
    /// Presence member events: numbered as the channel's messages on one node, unnumbered
    /// with Redis (which numbers only what is published through it).
    var memberNumbering: Numbering { clustered ? .none : .next }

    public init(config: HubConfig) {
        self.config = config
        appTable = Locked(AppTable(config.apps))
        shards = (0..<Self.shardCount).map { _ in Locked(Shard()) }
        if let url = config.redis {
            broker = RedisBroker(url: url, nodeID: config.nodeID, historySize: config.historySize)
        } else {
            broker = MemoryBroker()
        }
        clustered = !broker.ordersLocally
    }

    /// The shard that holds `key`'s channel.
    @inline(__always) func shard(_ key: ChannelKey) -> Locked<Shard> {
        shards[key.hashValue & (Self.shardCount - 1)]
    }

    package var apps: AppTable { appTable.withLock { $0 } }
    public func app(key: String) -> App? { apps.byKey[key] }
    public func app(id: String) -> App? { apps.byID[id] }

    /// Creates one `LoopHub` per server loop and routes the hub's endpoints. Call after
    /// `server.start()` made the loops, before any request can arrive: in
    /// `Server.start(beforeRunning:)`.
    public func attach(
        loops serverLoops: [EventLoop], clientLimits: ClientLimits = ClientLimits(config: ClientLimitConfig()),
        address: String = ""
    ) {
        self.clientLimits = clientLimits
        advertisedAddress = address
        census.withLock { $0 = Array(repeating: [:], count: serverLoops.count) }
        deliveryLatency = LatencyHistogram(loops: serverLoops.count)
        publishHandling = LatencyHistogram(loops: serverLoops.count)
        loops = serverLoops.map { LoopHub(hub: self, loop: $0, loopCount: serverLoops.count) }
        // Always: a reload may give an app webhooks (an app without any costs one check).
        webhooks = Webhooks(loop: serverLoops[0])
        broker.start(hub: self, loops: serverLoops)
    }

    var loopCount: Int { loops.count }

    // MARK: publishing

    public struct PublishResult: Sendable {
        public var channels: [Channel] = []
        public var sessions = 0

        /// A struct, not a tuple: an array of tuples is destroyed through the runtime's generic
        /// tuple witnesses (several hundred instructions per publish).
        public struct Channel: Sendable {
            public var name: String
            public var offset: UInt64
            public var epoch: String

            public init(_ name: String, _ offset: UInt64, _ epoch: String) {
                self.name = name
                self.offset = offset
                self.epoch = epoch
            }
        }
    }

    /// Publishes one event to `channels` (validated by the caller) through the broker. `then`
    /// runs on loop `loop` once the broker ordered every channel's message (with the memory
    /// broker: before this returns), or with why it could not (Redis: answered 503, nothing of
    /// it is delivered by this node; a channel of several may have been published).
    package func publish(
        app: App, channels: [String], event: String, data: String?, binary: [UInt8]?, exclude: SessionID?,
        userID: String? = nil, loop: Int, then: @escaping (Result<PublishResult, RedisError>) -> Void
    ) {
        // The memory broker's publish, called here: no closure made for it.
        if let r = publishNow(
            app: app, channels: channels, event: event, data: data, binary: binary, exclude: exclude, userID: userID)
        {
            return then(.success(r))
        }
        let messages = Self.messages(
            app: app, channels: channels, event: event, data: data, binary: binary, exclude: exclude, userID: userID)
        broker.publish(messages, hub: self, loop: loop) { [self] r in
            then(r.map { result($0, app: app, channels: channels, messages, exclude) })
        }
    }

    /// `publish` with the memory broker, which orders messages at once: the result, returned
    /// (the caller makes no closure for it on every publish). Nil, and nothing published, when
    /// the broker is Redis: `publish(…then:)` is the way there.
    package func publishNow(
        app: App, channels: [String], event: String, data: String?, binary: [UInt8]?, exclude: SessionID?,
        userID: String? = nil
    ) -> PublishResult? {
        guard !clustered else { return nil }
        if channels.count == 1 {
            // One channel (the common case): no array of messages, none of offsets.
            let m = Self.message(
                app: app, channel: channels[0], dataText: binary.map { Base64.encode($0) } ?? data ?? "",
                event: event, binary: binary, exclude: exclude, userID: userID)
            let loops = self.loops
            var out = Outbox(loops: loops.count)
            let p = postOne(m, now: Clock.monotonicMillis(), loops: loops, into: &out)
            out.wake(loops)
            stats(app.id)?.add(.messagesIn, 1)
            var result = PublishResult()
            result.channels = [PublishResult.Channel(channels[0], p.offset, p.epoch)]
            result.sessions = p.sessions ?? localSubscribers(m.key, excluding: exclude)
            return result
        }
        let messages = Self.messages(
            app: app, channels: channels, event: event, data: data, binary: binary, exclude: exclude, userID: userID)
        return result(postLocally(messages), app: app, channels: channels, messages, exclude)
    }

    /// A publish's message per channel, encoded before any lock: the bytes before the offset
    /// are the same for every channel but the channel name.
    private static func messages(
        app: App, channels: [String], event: String, data: String?, binary: [UInt8]?, exclude: SessionID?,
        userID: String?
    ) -> [BrokerWire.Message] {
        let dataText = binary.map { Base64.encode($0) } ?? data ?? ""
        var messages: [BrokerWire.Message] = []
        messages.reserveCapacity(channels.count)
        for c in channels {
            messages.append(
                message(
                    app: app, channel: c, dataText: dataText, event: event, binary: binary, exclude: exclude,
                    userID: userID))
        }
        return messages
    }

    /// The message of one channel (`dataText`: the data, or the binary payload in base64).
    private static func message(
        app: App, channel c: String, dataText: String, event: String, binary: [UInt8]?, exclude: SessionID?,
        userID: String?
    ) -> BrokerWire.Message {
        BrokerWire.Message(
            key: ChannelKey(app: app.id, name: c), exclude: exclude,
            prefix: Wire.eventPrefix(event: event, channel: c, data: dataText, binary: binary != nil, userID: userID),
            binaryHeader: binary.map { _ in Wire.binaryHeaderPrefix(event: event, channel: c, offset: 0) },
            binaryPayload: binary)
    }

    /// What a publish answers once its messages were posted.
    private func result(
        _ posted: [Posted], app: App, channels: [String], _ messages: [BrokerWire.Message], _ exclude: SessionID?
    ) -> PublishResult {
        stats(app.id)?.add(.messagesIn, channels.count)
        var result = PublishResult()
        result.channels.reserveCapacity(posted.count)
        for (i, p) in posted.enumerated() {
            result.channels.append(PublishResult.Channel(channels[i], p.offset, p.epoch))
            result.sessions += p.sessions ?? localSubscribers(messages[i].key, excluding: exclude)
        }
        return result
    }

    /// Sessions of this node subscribed to `key`, less `excluding`.
    func localSubscribers(_ key: ChannelKey, excluding: SessionID?) -> Int {
        shard(key).withLock { st in
            guard let ch = st.channels[key] else { return 0 }
            if let x = excluding, ch.members.contains(x) { return ch.subscribers - 1 }
            return ch.subscribers
        }
    }

    /// The memory broker's publish: each channel's next offset, decided under its shard's lock
    /// (no order is promised across channels), the message posted to the loops under it.
    func postLocally(_ messages: [BrokerWire.Message]) -> [Posted] {
        let now = Clock.monotonicMillis()
        let loops = self.loops
        var out = Outbox(loops: loops.count)
        var posted: [Posted] = []
        posted.reserveCapacity(messages.count)
        for m in messages { posted.append(postOne(m, now: now, loops: loops, into: &out)) }
        out.wake(loops)
        return posted
    }

    /// `postLocally` of one message; the caller wakes the loops.
    private func postOne(_ m: BrokerWire.Message, now: Int64, loops: [LoopHub], into out: inout Outbox) -> Posted {
        shard(m.key).withLock { st in
            let ch = st.channel(m.key, loops: loops.count)
            // Events to a user are live only: nothing replays a user channel's history.
            let keep = !m.key.name.hasPrefix(LoopHub.userChannelPrefix)
            let off = post(
                ch, m.key, prefix: m.prefix, header: m.binaryHeader, binary: m.binaryPayload, exclude: m.exclude,
                now: now, keep: keep, into: &out)
            var sessions = ch.subscribers
            if let x = m.exclude, ch.members.contains(x) { sessions -= 1 }
            out.queue(to: loops)
            return Posted(offset: off, epoch: ch.epoch, sessions: sessions)
        }
    }

    /// Where a posted message's offset comes from.
    enum Numbering {
        /// The channel's next one (the memory broker).
        case next
        /// Redis's (`restarts`: the first of a new epoch).
        case given(UInt64, restarts: Bool)
        /// None: a presence member event with Redis, whose offsets number only published
        /// messages. Delivered to every subscriber of the moment, never kept.
        case none
    }

    /// Gives a message its offset and adds it to the outbox of every loop with subscribers
    /// (and, when `keep`, to the history and the cache). Under the lock.
    func post(
        _ ch: ChannelState, _ key: ChannelKey, prefix: [UInt8], header: [UInt8]?, binary: [UInt8]?,
        exclude: SessionID?, now: Int64, keep: Bool, numbering: Numbering = .next, into out: inout Outbox
    ) -> UInt64 {
        let off: UInt64
        var restarts = false
        switch numbering {
        case .next:
            ch.lastOffset += 1
            off = ch.lastOffset
        case .given(let o, let r):
            ch.lastOffset = o
            off = o
            restarts = r
        case .none:
            off = .max
        }
        let pub = publication(
            key, prefix: prefix, header: header, binary: binary, exclude: exclude, offset: off, now: now,
            restarts: restarts)
        guard off != .max else {
            for (i, n) in ch.perLoop.enumerated() where n > 0 { out.add(i, key, pub) }
            return 0
        }
        if keep {
            if config.historySize > 0 { ch.append(pub, keep: config.historySize) } else { ch.droppedThrough = off }
            if ch.kind == .cache { ch.cached = pub }
        }
        for (i, n) in ch.perLoop.enumerated() where n > 0 { out.add(i, key, pub) }
        return off
    }

    /// A message as subscribers get it: its offset field added (none for `.max`, unnumbered).
    func publication(
        _ key: ChannelKey, prefix: [UInt8], header: [UInt8]?, binary: [UInt8]?, exclude: SessionID?, offset off: UInt64,
        now: Int64, restarts: Bool = false
    ) -> Publication {
        let m =
            off == .max
            ? OutMessage(prefix: prefix, channel: key.name, offset: 0, binaryHeader: header, binaryPayload: binary)
            : OutMessage(
                publishedPrefix: prefix, channel: key.name, offset: off, binaryHeader: header, binaryPayload: binary)
        return Publication(message: m, offset: off, time: now, exclude: exclude, restarts: restarts)
    }

    /// With Redis: the offsets a recovery from `since` needs that this node's history lacks
    /// (they may be in the channel's stream), nil when it has them or the epoch differs.
    /// `meta`: Redis's epoch and offset for a channel this node holds no state of yet.
    func streamRange(
        _ key: ChannelKey, since: (epoch: String, offset: UInt64), meta: (epoch: String, offset: UInt64)?
    ) -> (from: UInt64, to: UInt64)? {
        shard(key).withLock { st in
            let (epoch, dropped) = st.channels[key].map { ($0.epoch, $0.droppedThrough) } ?? meta ?? ("", 0)
            guard epoch == since.epoch, since.offset < dropped else { return nil }
            return (since.offset + 1, dropped)
        }
    }

    // MARK: subscriptions (called by a LoopHub on its loop)

    struct SubscribeResult {
        let epoch: String
        let lastOffset: UInt64
        let recovery: ChannelState.Recovery
        let cached: Publication?
        /// Presence channels: `{"ids":[…],"hash":{…},"count":N}` as the subscriber joined.
        let roster: [UInt8]?
    }

    enum SubscribeRefusal: Error {
        case presenceFull(Int)
        /// With Redis: the node holds no state of the channel; ask the broker its epoch and
        /// offset and subscribe again with `meta`.
        case unknownChannel
    }

    /// Subscribes a session (a presence member when `member` is set: the first session of a
    /// user announces it with `pusher_internal:member_added` to the others).
    func subscribe(
        _ key: ChannelKey, session: SessionID, loop: Int, since: (epoch: String, offset: UInt64)?,
        member: PresenceMember? = nil, meta: (epoch: String, offset: UInt64)? = nil, older: [BrokerWire.Message] = [],
        cluster: (first: Bool, roster: [UInt8])? = nil
    ) -> Result<SubscribeResult, SubscribeRefusal> {
        let now = Clock.monotonicMillis()
        let cacheCutoff = now - Int64(config.cacheSeconds) * 1000
        let historyCutoff = now - Int64(config.historySeconds) * 1000
        let loops = self.loops
        var out = Outbox(loops: loops.count)
        let r: Result<SubscribeResult, SubscribeRefusal> = shard(key).withLock { st in
            if clustered && st.channels[key] == nil && !key.name.hasPrefix(LoopHub.userChannelPrefix) {
                // Redis holds the channel's epoch and offset: this node starts there.
                guard let m = meta else { return .failure(.unknownChannel) }
                st.channels[key] = ChannelState(name: key.name, loops: loops.count, epoch: m.epoch, at: m.offset)
            }
            let ch = st.channel(key, loops: loops.count)
            var roster: [UInt8]? = nil
            let wasEmpty = ch.members.isEmpty
            if let m = member, let c = cluster {
                // With Redis: the cluster's roster, its member_added sent by Redis; this node
                // keeps its own members (for unsubscribing), and the webhook is sent once, here
                // when this was the user's first session in the cluster.
                if wasEmpty { occupied(key) }
                ch.userOf[session] = m.userID
                ch.users[m.userID, default: .init(sessions: 0, info: m.info)].sessions += 1
                if c.first { webhook(key, .memberAdded(channel: key.name, userID: m.userID)) }
                roster = c.roster
            } else if let m = member {
                if ch.users[m.userID] == nil && ch.users.count >= config.maxPresenceMembers {
                    if ch.isIdle { st.channels[key] = nil }
                    return .failure(.presenceFull(config.maxPresenceMembers))
                }
                if wasEmpty { occupied(key) }
                ch.userOf[session] = m.userID
                if var u = ch.users[m.userID] {
                    u.sessions += 1
                    ch.users[m.userID] = u
                } else {
                    ch.users[m.userID] = .init(sessions: 1, info: m.info)
                    var d = JSONObjectBuilder()
                    d.string("user_id", m.userID)
                    d.raw("user_info", m.info)
                    let prefix = Wire.protocolEvent("pusher_internal:member_added", channel: key.name, data: d)
                    _ = post(
                        ch, key, prefix: prefix, header: nil, binary: nil, exclude: session, now: now, keep: false,
                        numbering: memberNumbering, into: &out)
                    webhook(key, .memberAdded(channel: key.name, userID: m.userID))
                }
                roster = presenceRoster(ch)
            } else if wasEmpty {
                occupied(key)
            }
            ch.perLoop[loop] += 1
            ch.members.insert(session)
            ch.trim(olderThan: historyCutoff)
            var recovery = ChannelState.Recovery.none
            if let s = since {
                let pubs = older.map { m in
                    publication(
                        key, prefix: m.prefix, header: m.binaryHeader, binary: m.binaryPayload, exclude: m.exclude,
                        offset: m.offset, now: now)
                }
                recovery = ch.recover(epoch: s.epoch, after: s.offset, older: pubs)
            }
            var cached: Publication? = nil
            if ch.kind == .cache, let c = ch.cached, c.time >= cacheCutoff { cached = c }
            out.queue(to: loops)
            // A client ahead of this node (with Redis: this node's pub/sub is behind) joins at
            // what it has: the messages up to there that reach this node later are not its.
            var joinAt = ch.lastOffset
            if let s = since, s.epoch == ch.epoch, s.offset > joinAt { joinAt = s.offset }
            return .success(
                SubscribeResult(
                    epoch: ch.epoch, lastOffset: joinAt, recovery: recovery, cached: cached, roster: roster))
        }
        out.wake(loops)
        return r
    }

    /// `{"ids":[…],"hash":{id: user_info},"count":N}`.
    func presenceRoster(_ ch: ChannelState) -> [UInt8] {
        Self.presenceRoster(ch.users.lazy.map { ($0.key, $0.value.info) })
    }

    /// `{"ids":[…],"hash":{id: user_info},"count":N}` of distinct users (this node's, or with
    /// Redis the cluster's).
    static func presenceRoster<S: Sequence>(_ users: S) -> [UInt8] where S.Element == (String, [UInt8]) {
        var ids: [UInt8] = [UInt8(ascii: "[")]
        var hash = JSONObjectBuilder()
        var count: UInt64 = 0
        for (id, info) in users {
            if count > 0 { ids.append(UInt8(ascii: ",")) }
            count += 1
            JSONWriter.writeString(id, into: &ids)
            hash.raw(id, info)
        }
        ids.append(UInt8(ascii: "]"))
        var b = JSONObjectBuilder()
        b.raw("ids", ids)
        b.raw("hash", hash.closed)
        b.int("count", count)
        return b.closed
    }

    /// The channel's epoch and last offset, without subscribing.
    func peek(_ key: ChannelKey) -> (epoch: String, lastOffset: UInt64, roster: [UInt8]?) {
        shard(key).withLock { st in
            guard let ch = st.channels[key] else { return ("", 0, nil) }
            return (ch.epoch, ch.lastOffset, ch.kind == .presence ? presenceRoster(ch) : nil)
        }
    }

    /// True when the session was a presence member (with Redis, the caller takes it out of the
    /// cluster's roster).
    @discardableResult
    func unsubscribe(_ key: ChannelKey, session: SessionID, loop: Int) -> Bool {
        let loops = self.loops
        var out = Outbox(loops: loops.count)
        var wasMember = false
        shard(key).withLock { st in
            guard let ch = st.channels[key] else { return }
            ch.perLoop[loop] -= 1
            ch.members.remove(session)
            if let uid = ch.userOf.removeValue(forKey: session), var u = ch.users[uid] {
                wasMember = true
                u.sessions -= 1
                if u.sessions > 0 {
                    ch.users[uid] = u
                } else if clustered {
                    ch.users[uid] = nil  // member_removed: from Redis, after the user's last session anywhere
                } else {
                    ch.users[uid] = nil
                    var d = JSONObjectBuilder()
                    d.string("user_id", uid)
                    let prefix = Wire.protocolEvent("pusher_internal:member_removed", channel: key.name, data: d)
                    _ = post(
                        ch, key, prefix: prefix, header: nil, binary: nil, exclude: session,
                        now: Clock.monotonicMillis(), keep: false, numbering: memberNumbering, into: &out)
                    webhook(key, .memberRemoved(channel: key.name, userID: uid))
                }
            }
            if ch.members.isEmpty { vacated(key) }
            if ch.isIdle { st.channels[key] = nil }
            out.queue(to: loops)
        }
        out.wake(loops)
        return wasMember
    }

    /// With Redis: a user's last session left a presence channel (this node took it out).
    func memberLeft(_ key: ChannelKey, _ user: String) {
        webhook(key, .memberRemoved(channel: key.name, userID: user))
    }

    /// Trims histories by age and forgets idle channels. Called once a second by loop 0.
    func sweepChannels() {
        let now = Clock.monotonicMillis()
        let historyCutoff = now - Int64(config.historySeconds) * 1000
        let cacheCutoff = now - Int64(config.cacheSeconds) * 1000
        for shard in shards {
            shard.withLock { st in
                var idle: [ChannelKey] = []
                for (k, ch) in st.channels {
                    ch.trim(olderThan: historyCutoff)
                    if let c = ch.cached, c.time < cacheCutoff { ch.cached = nil }
                    if ch.isIdle { idle.append(k) }
                }
                for k in idle { st.channels[k] = nil }
            }
        }
    }

}
