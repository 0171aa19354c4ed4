import HalleyCore
import HalleyLoop
import HalleyProtocol
import HalleyServer
import Synchronization

/// Nodes joined through Redis (`--redis`), a single server or a Redis Cluster (`RedisRoute`:
/// each command goes to the master of its key's slot). Each loop publishes on its own route with
/// `FCALL halley_publish` (Redis orders the channel: offset, epoch, stream entry and the
/// message to every node in one atomic call); one pub/sub route on loop 0 (a connection per master) takes every
/// node's messages (`SSUBSCRIBE` to the `BrokerWire.shardCount` shard channels) and hands them
/// to `Hub.receive`, which posts them to the loops as a local publish is posted. A message that
/// arrives after a gap (the pub/sub connection was down) is held until the missing ones are
/// read from the channel's stream. docs/MULTINODE.md has the whole design.
package final class RedisBroker: Broker, @unchecked Sendable {
    // @unchecked Sendable: each link is touched only on its own loop (`links[i]` on loop i, `pubsub`
    // on loop 0), set up by `start` before the loops take requests; the counters are atomics.
    package let url: RedisURL
    package let nodeID: String
    let historySize: Int
    /// A channel's keys live this long after its last publish (then its next one starts a new epoch).
    let keyTTLMillis = 24 * 3600 * 1000
    /// The hub owns the broker (`unowned(unsafe)`: no reference-count traffic per message).
    unowned(unsafe) var hub: Hub?
    var links: [Link] = []
    var pubsub: Link?
    /// Shard subscriptions confirmed on the pub/sub route since it (re)connected, and how many
    /// times it (re)connected.
    var confirmed = 0
    var subscribeRound = 0
    /// Per shard: subscribed in this round (loop 0).
    var subscribed = Array(repeating: false, count: BrokerWire.shardCount)
    let readyLinks = Atomic<Int>(0)
    let pubsubReady = Atomic<Bool>(false)
    let publishFailures = Atomic<Int>(0)
    let gapsFilled = Atomic<Int>(0)
    let gapsLost = Atomic<Int>(0)
    let redirections = RedisRoute.Redirections()

    /// One loop's route to Redis; the other nodes' addresses
    /// it looked up (by number: address and when, loop ms). Loop-confined.
    final class Link {
        let route: RedisRoute
        var addresses: [Int: (address: String?, at: Int64)] = [:]
        init(_ r: RedisRoute) { route = r }
        /// Every connection up, the functions loaded on each.
        var ready: Bool { route.ready }
    }

    /// A node's key lives this long without a heartbeat (one every `heartbeatMillis`).
    let nodeTTLMillis = 15_000
    let heartbeatMillis: Int64 = 5000
    /// A claim is in flight (loop 0).
    var claiming = false
    let secret = Locked<String?>(nil)
    /// Presence leaves that found Redis away, sent again by the next sweep (any loop adds).
    let pendingLeaves = Locked<[(ChannelKey, SessionID)]>([])
    /// Occupancy changes that found Redis away (channel, delta, node number).
    let pendingOccupancy = Locked<[(ChannelKey, Int, Int)]>([])
    package var forwardingSecret: String? { secret.withLock { $0 } }
    /// A pusher-js session's key lives this long (forgotten when the session ends).
    let pusherSessionTTLMillis = 24 * 3600 * 1000

    package init(url: RedisURL, nodeID: String, historySize: Int) {
        self.url = url
        self.nodeID = nodeID
        self.historySize = historySize
    }

    package var kind: String { "redis" }
    package var ordersLocally: Bool { false }
    package var isUp: Bool {
        readyLinks.load(ordering: .relaxed) == links.count && pubsubReady.load(ordering: .relaxed)
    }

    package func start(hub: Hub, loops: [EventLoop]) {
        self.hub = hub
        let load = ["FUNCTION", "LOAD", "REPLACE", BrokerWire.library].map { Array($0.utf8) }
        links = loops.map { Link(RedisRoute(loop: $0, url: url, prepare: load, redirections: redirections)) }
        let ps = Link(RedisRoute(loop: loops[0], url: url, prepare: nil, redirections: redirections))
        pubsub = ps
        for (i, link) in links.enumerated() {
            let box = UncheckedBox((self, link))
            loops[i].execute {
                let (broker, link) = box.value
                link.route.onStateChange = { [unowned broker, unowned link] up in broker.commandLink(link, up: up) }
                link.route.start()
            }
        }
        let box = UncheckedBox((self, ps))
        loops[0].execute {
            let (broker, ps) = box.value
            broker.scheduleHeartbeat()
            ps.route.onStateChange = { [unowned broker] up in broker.pubsubChanged(up: up) }
            ps.route.onPush = { [unowned broker] v in broker.push(v) }
            ps.route.start()
        }
    }

    /// A command route came (the functions loaded on each of its connections: Redis may have
    /// restarted without them) or went.
    func commandLink(_ link: Link, up: Bool) {
        guard up else {
            readyLinks.subtract(1, ordering: .relaxed)
            return
        }
        readyLinks.add(1, ordering: .relaxed)
        if link === links[0] {
            if link.route.masters > 1 { Log.info("redis: loop 0 reaches the cluster's \(link.route.masters) masters") }
            heartbeat()
            readSecret()
        }
    }

    func pubsubChanged(up: Bool) {
        subscribeRound += 1
        subscribed = Array(repeating: false, count: BrokerWire.shardCount)
        confirmed = 0
        pubsubReady.store(false, ordering: .relaxed)
        guard up else { return }
        for n in 0..<BrokerWire.shardCount { subscribeShard(n, round: subscribeRound) }
    }

    /// `SSUBSCRIBE` of shard `n`'s channel (on the master of its slot); when every shard is
    /// subscribed, the node is ready again and catches up. A refusal is tried again in a second
    /// while the pub/sub route stays up (`round`: the route went and came since).
    func subscribeShard(_ n: Int, round: Int) {
        guard let ps = pubsub, round == subscribeRound else { return }
        ps.route.subscribe(BrokerWire.pubsubChannel(n)) { [self] ok in
            guard round == subscribeRound, !subscribed[n] else { return }
            guard ok else {
                _ = ps.route.loop.schedule(afterMillis: 1000) { [self] in subscribeShard(n, round: round) }
                return
            }
            subscribed[n] = true
            confirmed += 1
            guard confirmed == BrokerWire.shardCount else { return }
            pubsubReady.store(true, ordering: .relaxed)
            // Messages published while a shard was not subscribed are in the streams: every
            // channel with subscribers here catches up.
            for c in hub?.channelsWithSubscribers() ?? [] { catchUp(c) }
        }
    }

    /// A RESP3 push on the pub/sub route: a message, or a shard channel gone.
    func push(_ v: RESPValue) {
        guard let a = v.elements, a.count == 3, let kind = a[0].string else { return }
        switch kind {
        case "smessage":
            guard case .bulk(let payload) = a[2] else { return }
            do throws(BrokerWire.DecodeError) {
                hub?.receive(try BrokerWire.decode(payload))
            } catch {
                Log.warning("redis: a message on \(a[1].string ?? "?") is unreadable: \(error)")
            }
        case "sunsubscribe":
            // Not asked for (the hub never unsubscribes): the shard's slot moved to another
            // master of a Redis Cluster. Until the map is read again and the shard subscribed
            // where it is now, its messages wait in the streams: the catch-up after the
            // subscription reads them.
            guard let ps = pubsub, let name = a[1].string, let n = BrokerWire.shardOfPubsubChannel(name),
                subscribed[n]
            else { return }
            Log.info("redis: \(name) moved to another master; subscribing there")
            subscribed[n] = false
            confirmed -= 1
            pubsubReady.store(false, ordering: .relaxed)
            let round = subscribeRound
            ps.route.refresh { [self] in subscribeShard(n, round: round) }
        default:
            break
        }
    }

    /// Asks the channel's last offset; what this node lacks is read from the stream.
    func catchUp(_ key: ChannelKey) {
        channelMeta(key, loop: 0) { [self] r in
            guard case .success(let m) = r, let hub else { return }
            if let gap = hub.caughtUp(key, epoch: m.epoch, offset: m.offset) { fill(key, gap) }
        }
    }

    // MARK: the node's number

    /// Every `heartbeatMillis` on loop 0: refreshes the node's key, or claims a number.
    func scheduleHeartbeat() {
        guard let loop = links.first?.route.loop else { return }
        _ = loop.schedule(afterMillis: heartbeatMillis) { [self] in
            heartbeat()
            sweepPresence()
            scheduleHeartbeat()
        }
    }

    func command(_ args: [String], _ reply: @escaping (Result<RESPValue, RedisError>) -> Void) {
        let link = links[0]
        link.route.send(args.map { Array($0.utf8) }, reply)
    }

    /// `h:node:<n>` = this node's address, `PX nodeTTLMillis`, kept by `halley_beat` (which
    /// never takes another node's key): refreshed while it is this node's, taken again when it
    /// expired (Redis restarted, or an outage outlived it); when another node took it meanwhile,
    /// a new number (the sessions opened under the old one can no longer be reached through
    /// other nodes: logged).
    func heartbeat() {
        guard let hub else { return }
        // The pub/sub connection gets no replies of its own: a PING makes the connection's
        // watchdog see a link that died without TCP noticing (no answer in 5 s: reconnect).
        pubsub?.route.ping()
        let n = hub.nodeNumber.load(ordering: .relaxed)
        guard n > 0 else { return claim() }
        beat(n) { [self] ok in
            guard ok == false else { return }
            Log.error(
                "node \(nodeID): its number \(n) was taken by another node while this one was away from Redis: its open HTTP sessions can no longer be reached through other nodes; taking a new number"
            )
            hub.previousNodeNumbers.withLock { $0.append(n) }
            hub.nodeNumber.store(0, ordering: .relaxed)
            claim()
        }
    }

    /// `then(true)`: the key is this node's; false: another node's; nil: no answer.
    func beat(_ n: Int, then: @escaping (Bool?) -> Void) {
        guard let hub else { return }
        command(["FCALL", "halley_beat", "1", "h:node:\(n)", hub.advertisedAddress, String(nodeTTLMillis)]) { r in
            guard case .success(.integer(let v)) = r else { return then(nil) }
            then(v == 1)
        }
    }

    /// `INCR h:node-seq` for a number (wrapping at `SessionID.maxNode`), free or taken: the next.
    func claim() {
        guard let hub, !claiming else { return }
        claiming = true
        command(["INCR", "h:node-seq"]) { [self] r in
            guard case .success(.integer(let v)) = r else { return claiming = false }
            let n = Int((v - 1) % Int64(SessionID.maxNode)) + 1
            beat(n) { [self] ok in
                claiming = false
                guard let ok else { return }
                guard ok else { return claim() }
                hub.nodeNumber.store(n, ordering: .relaxed)
                command(["SADD", "h:nodes", String(n)]) { _ in }
                Log.lifecycle("node \(nodeID): number \(n) among the nodes, reached at \(hub.advertisedAddress)")
            }
        }
    }

    /// `h:cluster-secret`: made by the first node that finds none (`SET NX`), then read.
    func readSecret() {
        let candidate = SessionToken.random().description
        command(["SET", "h:cluster-secret", candidate, "NX"]) { [self] _ in
            command(["GET", "h:cluster-secret"]) { [self] r in
                if case .success(.bulk(let b)) = r { secret.withLock { $0 = String(decoding: b, as: UTF8.self) } }
            }
        }
    }

    static func pusherKey(_ path: String) -> [UInt8] { Array("h:pjs:\(path)".utf8) }

    package func pusherSessionOwner(_ path: String, loop: Int, then: @escaping (Int?) -> Void) {
        let link = links[loop]
        guard link.ready else { return then(nil) }
        link.route.send([Array("GET".utf8), Self.pusherKey(path)]) { r in
            guard case .success(.bulk(let b)) = r, let n = Int(String(decoding: b, as: UTF8.self)) else {
                return then(nil)
            }
            then(n)
        }
    }

    package func setPusherSessionOwner(_ path: String, node: Int, loop: Int) {
        let link = links[loop]
        guard link.ready else { return }
        let args =
            node > 0
            ? [
                Array("SET".utf8), Self.pusherKey(path), Array(String(node).utf8), Array("PX".utf8),
                Array(String(pusherSessionTTLMillis).utf8),
            ]
            : [Array("DEL".utf8), Self.pusherKey(path)]
        link.route.send(args) { _ in }
    }

    package func nodeAddress(_ n: Int, loop: Int, then: @escaping (String?) -> Void) {
        let link = links[loop]
        let now = link.route.loop.now
        // Looked up at most once a second per number and loop.
        if let c = link.addresses[n], now - c.at < 1000 { return then(c.address) }
        guard link.ready else { return then(nil) }
        link.route.send([Array("GET".utf8), Array("h:node:\(n)".utf8)]) { [unowned link] r in
            var address: String? = nil
            if case .success(.bulk(let b)) = r { address = String(decoding: b, as: UTF8.self) }
            link.addresses[n] = (address, link.route.loop.now)
            then(address)
        }
    }

    // MARK: publishing

    package func publish(
        _ messages: [BrokerWire.Message], hub: Hub, loop: Int,
        then: @escaping (Result<[Posted], RedisError>) -> Void
    ) {
        let link = links[loop]
        guard link.ready else {
            publishFailures.add(1, ordering: .relaxed)
            return then(.failure(.unavailable(link.route.why)))
        }
        let gather = Gather(count: messages.count) { [self] r in
            if case .failure = r { publishFailures.add(1, ordering: .relaxed) }
            then(r)
        }
        let candidate = Array(ChannelState.newEpoch().utf8)
        let ttl = Array(String(keyTTLMillis).utf8)
        let history = Array(String(historySize).utf8)
        for (i, m) in messages.enumerated() {
            let k = BrokerWire.keys(m.key)
            let keep = !m.key.name.hasPrefix("#")  // events to a user, commands: never kept
            link.route.send(
                [
                    Array("FCALL".utf8), Array("halley_publish".utf8), Array("2".utf8), k.meta, k.stream, candidate,
                    keep ? history : Array("0".utf8), ttl, BrokerWire.body(m), k.pubsub,
                ]
            ) { r in
                switch r {
                case .success(let v):
                    if let a = v.elements, a.count == 2, case .integer(let off) = a[0], off > 0, let e = a[1].string {
                        gather.done(i, Posted(offset: UInt64(off), epoch: e, sessions: nil))
                    } else {
                        gather.failed(.server("unexpected answer to halley_publish: \(v)"))
                    }
                case .failure(let e):
                    gather.failed(e)
                }
            }
        }
    }

    /// Waits for one answer per channel. Loop-confined.
    final class Gather {
        var results: [Posted]
        var left: Int
        var failure: RedisError?
        let then: (Result<[Posted], RedisError>) -> Void

        init(count: Int, then: @escaping (Result<[Posted], RedisError>) -> Void) {
            results = Array(repeating: Posted(offset: 0, epoch: "", sessions: nil), count: count)
            left = count
            self.then = then
        }

        func done(_ i: Int, _ r: Posted) {
            results[i] = r
            finish()
        }

        func failed(_ e: RedisError) {
            if failure == nil { failure = e }
            finish()
        }

        func finish() {
            left -= 1
            guard left == 0 else { return }
            if let f = failure { then(.failure(f)) } else { then(.success(results)) }
        }
    }

    package func channelMeta(
        _ key: ChannelKey, loop: Int, then: @escaping (Result<(epoch: String, offset: UInt64), RedisError>) -> Void
    ) {
        let link = links[loop]
        guard link.ready else {
            return then(.failure(.unavailable("not connected")))
        }
        let k = BrokerWire.keys(key)
        link.route.send(
            [
                Array("FCALL".utf8), Array("halley_meta".utf8), Array("2".utf8), k.meta, k.stream,
                Array(ChannelState.newEpoch().utf8), Array(String(keyTTLMillis).utf8),
            ]
        ) { r in
            switch r {
            case .success(let v):
                if let a = v.elements, a.count == 2, let e = a[0].string, case .integer(let off) = a[1], off >= 0 {
                    then(.success((e, UInt64(off))))
                } else {
                    then(.failure(.server("unexpected answer to halley_meta: \(v)")))
                }
            case .failure(let e): then(.failure(e))
            }
        }
    }

    // MARK: gaps

    /// Reads offsets `gap.from...gap.to` of the channel's stream (on loop 0) and hands them to
    /// the hub, which delivers them before the messages it held meanwhile.
    func fill(_ key: ChannelKey, _ gap: Hub.Gap, attempt: Int = 0) {
        readStream(key, epoch: gap.epoch, from: gap.from, to: gap.to, loop: 0) { [self] found in
            if found == nil && attempt < 20 {
                // Not read (the connection is away): the stream still has them; again in 500 ms
                // (10 s in all), the channel's later messages held meanwhile.
                _ = links[0].route.loop.schedule(afterMillis: 500) { [self] in fill(key, gap, attempt: attempt + 1)
                }
                return
            }
            let found = found ?? []
            let missing = Int(gap.to - gap.from + 1) - found.count
            gapsFilled.add(found.count, ordering: .relaxed)
            if missing > 0 {
                gapsLost.add(missing, ordering: .relaxed)
                Log.warning(
                    "redis: \(missing) message(s) of \(key.name) (app \(key.app)) are no longer in the stream: subscribers here miss them"
                )
            }
            hub?.filled(key, epoch: gap.epoch, found)
        }
    }

    package func readStream(
        _ key: ChannelKey, epoch: String, from: UInt64, to: UInt64, loop: Int,
        then: @escaping ([BrokerWire.Message]?) -> Void
    ) {
        let link = links[loop]
        guard link.ready else { return then(nil) }
        link.route.send(
            [Array("XRANGE".utf8), BrokerWire.keys(key).stream, Array("\(from)-0".utf8), Array("\(to)-1".utf8)]
        ) { r in
            guard case .success(let v) = r, let entries = v.elements else { return then(nil) }
            var found: [BrokerWire.Message] = []
            for e in entries {
                guard let pair = e.elements, pair.count == 2, let id = pair[0].string,
                    let off = UInt64(id.split(separator: "-").first ?? ""), let fields = pair[1].elements,
                    fields.count == 2, case .bulk(let body) = fields[1],
                    let m = try? BrokerWire.decodeBody(body, epoch: epoch, offset: off)
                else { continue }
                found.append(m)
            }
            then(found)
        }
    }

    package func metricsText() -> String {
        brokerMetrics(
            up: isUp, failures: publishFailures.load(ordering: .relaxed), filled: gapsFilled.load(ordering: .relaxed),
            lost: gapsLost.load(ordering: .relaxed), moved: redirections.moved.load(ordering: .relaxed),
            ask: redirections.ask.load(ordering: .relaxed))
    }
}
