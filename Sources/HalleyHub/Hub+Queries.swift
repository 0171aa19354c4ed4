import HalleyCore

/// What the HTTP API asks of the channel table: this node's answers. With several nodes
/// (issue 14, docs/MULTINODE.md) these are the calls that answer for the cluster.
extension Hub {
    package struct ChannelCounts: Sendable {
        /// Subscriptions (sessions subscribed) on the channel.
        package let subscriptions: Int
        /// Distinct users of a presence channel.
        package let users: Int
    }

    package func occupancy(_ key: ChannelKey) -> ChannelCounts {
        shard(key).withLock { st in
            guard let ch = st.channels[key] else { return ChannelCounts(subscriptions: 0, users: 0) }
            return ChannelCounts(subscriptions: ch.subscribers, users: ch.users.count)
        }
    }

    /// The app's channels with at least one subscriber whose names start with `prefix`, by
    /// name; the hub's own user channels (`pusher:signin`) are not listed.
    package func occupiedChannels(app: String, prefix: String) -> [(name: String, counts: ChannelCounts)] {
        var list: [(name: String, counts: ChannelCounts)] = []
        for shard in shards {
            shard.withLock { st in
                for (k, ch) in st.channels
                where k.app == app && ch.subscribers > 0 && k.name.hasPrefix(prefix)
                    && !k.name.hasPrefix(LoopHub.userChannelPrefix)
                {
                    list.append((k.name, ChannelCounts(subscriptions: ch.subscribers, users: ch.users.count)))
                }
            }
        }
        return list.sorted { $0.name < $1.name }
    }

    /// A channel's counts and, for a cache channel, its cached message with the seconds it
    /// has left (`--cache-seconds`).
    package func occupancyAndCache(_ key: ChannelKey) -> (counts: ChannelCounts, cached: (OutMessage, ttl: Int)?) {
        let nowMillis = Clock.monotonicMillis()
        return shard(key).withLock { st in
            guard let ch = st.channels[key] else { return (ChannelCounts(subscriptions: 0, users: 0), nil) }
            var c: (OutMessage, ttl: Int)? = nil
            if let p = ch.cached {
                let ttl = Int64(config.cacheSeconds) - (nowMillis - p.time) / 1000
                if ttl > 0 { c = (p.message, Int(ttl)) }
            }
            return (ChannelCounts(subscriptions: ch.subscribers, users: ch.users.count), c)
        }
    }

    /// The user ids on a presence channel, sorted.
    package func presenceUserIDs(_ key: ChannelKey) -> [String] {
        shard(key).withLock { $0.channels[key].map { Array($0.users.keys) } ?? [] }.sorted()
    }
}
