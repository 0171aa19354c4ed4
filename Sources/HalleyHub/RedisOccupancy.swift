import HalleyCore
import HalleyProtocol

/// Occupancy across nodes (`halley_occupy` / `halley_evict`): each channel's subscriptions per
/// node in Redis, and per app and shard the set of occupied channels; the node whose change
/// took the cluster's count from 0 (or to 0) sends `channel_occupied` (`channel_vacated`): once
/// per cluster. A dead node's counts are taken out by the sweep (`sweepNode`).
extension RedisBroker {
    /// Adds `delta` subscriptions of this node to the channel; `then` with +1 when the channel
    /// became occupied in the cluster, -1 when vacated, 0 otherwise (nil: Redis did not answer).
    package func occupy(_ key: ChannelKey, delta: Int, loop: Int, then: @escaping (Int?) -> Void) {
        let link = links[loop]
        let node = hub?.nodeNumber.load(ordering: .relaxed) ?? 0
        guard link.ready else {
            pendingOccupancy.withLock { $0.append((key, delta, node)) }
            return then(nil)
        }
        occupy(key, delta: delta, node: node, on: link.route, then: then)
    }

    func occupy(_ key: ChannelKey, delta: Int, node: Int, on c: RedisRoute, then: @escaping (Int?) -> Void) {
        let k = BrokerWire.occupancyKeys(key)
        c.send(
            [
                Array("FCALL".utf8), Array("halley_occupy".utf8), Array("2".utf8), k.counts, k.occupied,
                Array(String(node).utf8), Array(String(delta).utf8), Array(key.name.utf8),
            ]
        ) { r in
            guard case .success(.integer(let v)) = r else { return then(nil) }
            then(Int(v))
        }
    }

    /// The sum of a channel's per-node counts (`HVALS`).
    static func total(_ values: [RESPValue]) -> Int {
        values.reduce(0) { $0 + max(0, Int($1.string ?? "") ?? 0) }
    }

    /// The channel's subscriptions in the cluster (nil: Redis did not answer).
    package func subscriptions(_ key: ChannelKey, loop: Int, then: @escaping (Int?) -> Void) {
        let link = links[loop]
        guard link.ready else { return then(nil) }
        link.route.send([Array("HVALS".utf8), BrokerWire.occupancyKeys(key).counts]) { r in
            guard case .success(let v) = r, let values = v.elements else { return then(nil) }
            then(Self.total(values))
        }
    }

    /// The app's occupied channels in the cluster whose names start with `prefix`, with their
    /// subscriptions and (presence channels) users, by name; nil when Redis did not answer.
    package func occupiedChannels(
        app: String, prefix: String, loop: Int,
        then: @escaping ([(name: String, subscriptions: Int, users: Int)]?) -> Void
    ) {
        let link = links[loop]
        guard link.ready else { return then(nil) }
        var names: [String] = []
        var left = BrokerWire.shardCount
        var failed = false
        for n in 0..<BrokerWire.shardCount {
            link.route.send([Array("SMEMBERS".utf8), BrokerWire.occupiedKey(app: app, shard: n)]) { [self] r in
                if case .success(let v) = r, let members = v.elements {
                    names += members.compactMap(\.string).filter { $0.hasPrefix(prefix) }
                } else {
                    failed = true
                }
                left -= 1
                guard left == 0 else { return }
                if failed { return then(nil) }
                counts(app: app, names.sorted(), on: link.route, then: then)
            }
        }
    }

    func counts(
        app: String, _ names: [String], on c: RedisRoute,
        then: @escaping ([(name: String, subscriptions: Int, users: Int)]?) -> Void
    ) {
        var out = names.map { (name: $0, subscriptions: 0, users: 0) }
        var left = names.count
        var failed = false
        if left == 0 { return then([]) }
        func done() {
            left -= 1
            if left == 0 { then(failed ? nil : out.filter { $0.subscriptions > 0 || $0.users > 0 }) }
        }
        for (i, name) in names.enumerated() {
            let key = ChannelKey(app: app, name: name)
            let presence = ChannelName.kind(name) == .presence
            if presence { left += 1 }
            c.send([Array("HVALS".utf8), BrokerWire.occupancyKeys(key).counts]) { r in
                if case .success(let v) = r, let values = v.elements {
                    out[i].subscriptions = Self.total(values)
                } else {
                    failed = true
                }
                done()
            }
            if presence {
                c.send([Array("HLEN".utf8), BrokerWire.presenceKeys(key).users]) { r in
                    if case .success(.integer(let u)) = r { out[i].users = Int(u) } else { failed = true }
                    done()
                }
            }
        }
    }

    /// A dead node's subscriptions out of every occupied channel of every app (`channel_vacated`
    /// where that empties one). Loop 0.
    func evictOccupancy(node n: Int) {
        guard let hub else { return }
        let c = links[0].route
        for app in hub.apps.apps.map(\.id) {
            for shard in 0..<BrokerWire.shardCount {
                c.send([Array("SMEMBERS".utf8), BrokerWire.occupiedKey(app: app, shard: shard)]) { r in
                    guard case .success(let v) = r, let members = v.elements else { return }
                    for name in members.compactMap(\.string) {
                        let key = ChannelKey(app: app, name: name)
                        let k = BrokerWire.occupancyKeys(key)
                        c.send(
                            [
                                Array("FCALL".utf8), Array("halley_evict".utf8), Array("2".utf8), k.counts, k.occupied,
                                Array(String(n).utf8), Array(name.utf8),
                            ]
                        ) { r in
                            if case .success(.integer(-1)) = r { hub.clusterOccupancy(key, -1) }
                        }
                    }
                }
            }
        }
    }

    /// Occupancy changes that found Redis away, sent by the next sweep (on loop 0).
    func retryOccupancy() {
        let retry = pendingOccupancy.withLock { p in
            defer { p.removeAll() }
            return p
        }
        for (key, delta, node) in retry {
            occupy(key, delta: delta, node: node, on: links[0].route) { [hub] v in
                if let v { hub?.clusterOccupancy(key, v) }
            }
        }
    }
}
