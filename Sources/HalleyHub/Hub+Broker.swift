import HalleyCore

/// Messages ordered by Redis, arriving on loop 0 from the broker's pub/sub connection (every
/// node's publishes, this node's included): posted to the loops as the memory broker posts,
/// in offset order per channel. A message after a gap is held until the missing ones are read
/// from the channel's stream.
extension Hub {
    /// Offsets `from...to` of `epoch` that this node must read from the channel's stream.
    package struct Gap: Equatable {
        package let epoch: String
        package let from: UInt64
        package let to: UInt64
    }

    /// Channels of this prefix carry commands to every node, not messages: `#terminate-<user>`.
    static let terminatePrefix = "#terminate-"

    /// Ends the sessions of a signed-in user on every node (`terminate_connections`): with
    /// Redis, a command through the broker that each node carries out on its own sessions
    /// (this one's included, when it comes back); `then` on loop `loop`.
    package func terminateEverywhere(_ user: UserKey, loop: Int, then: @escaping (Result<Void, RedisError>) -> Void) {
        guard clustered else {
            let n = terminate(user)
            Log.info("terminating \(n) connection(s) of user \(user.id.prefix(40)) of app \(user.app)")
            return then(.success(()))
        }
        let m = BrokerWire.Message(
            key: ChannelKey(app: user.app, name: Self.terminatePrefix + user.id), exclude: nil, prefix: [])
        broker.publish([m], hub: self, loop: loop) { r in then(r.map { _ in () }) }
    }

    /// One message from Redis (loop 0). A gap starts a fill (`RedisBroker.fill`).
    func receive(_ m: BrokerWire.Message) {
        if m.key.name.hasPrefix(Self.terminatePrefix) {
            let user = UserKey(app: m.key.app, id: String(m.key.name.dropFirst(Self.terminatePrefix.count)))
            let n = terminate(user)
            Log.info("terminating \(n) connection(s) of user \(user.id.prefix(40)) of app \(user.app) on this node")
            return
        }
        let loops = self.loops
        var out = Outbox(loops: loops.count)
        if m.offset == 0 {
            // A presence member event (Redis's join or leave function): live to this node's
            // subscribers of the moment, outside the channel's order.
            shard(m.key).withLock { st in
                guard let ch = st.channels[m.key], ch.subscribers > 0 else { return }
                _ = post(
                    ch, m.key, prefix: m.prefix, header: nil, binary: nil, exclude: m.exclude,
                    now: Clock.monotonicMillis(), keep: false, numbering: .none, into: &out)
                out.queue(to: loops)
            }
            out.wake(loops)
            return
        }
        let gap: Gap? = shard(m.key).withLock { st in
            let ch: ChannelState
            if let c = st.channels[m.key] {
                ch = c
            } else {
                // Nothing before this message is here (nobody on this node asked for it).
                ch = ChannelState(name: m.key.name, loops: loops.count, epoch: m.epoch, at: m.offset - 1)
                st.channels[m.key] = ch
            }
            let g = accept(ch, m, now: Clock.monotonicMillis(), into: &out)
            out.queue(to: loops)
            return g
        }
        out.wake(loops)
        if let g = gap, let rb = broker as? RedisBroker { rb.fill(m.key, g) }
    }

    /// Posts `m` in order, or holds it (a fill is running, or it starts one). Under the lock.
    func accept(_ ch: ChannelState, _ m: BrokerWire.Message, now: Int64, into out: inout Outbox) -> Gap? {
        if ch.filling {
            ch.held.append(m)
            return nil
        }
        if m.epoch != ch.epoch {
            // The channel's keys expired or Redis lost them: offsets start again from 1 (what
            // came before this one is read from the stream below when anyone here waits).
            Log.info("channel \(m.key.name) (app \(m.key.app)): new epoch \(m.epoch) in Redis (was \(ch.epoch))")
            ch.restart(epoch: m.epoch, at: 0)
        }
        if m.offset <= ch.lastOffset { return nil }  // delivered already, or from before this node joined
        // Events to a user are live only: no stream to read a gap from.
        let kept = !m.key.name.hasPrefix(LoopHub.userChannelPrefix)
        if m.offset > ch.lastOffset + 1 {
            if ch.subscribers > 0 && kept {
                ch.filling = true
                ch.held = [m]
                return Gap(epoch: ch.epoch, from: ch.lastOffset + 1, to: m.offset - 1)
            }
            ch.skip(to: m.offset - 1)  // nobody here waits for the missing ones
        }
        let restarts = ch.restartPending
        ch.restartPending = false
        _ = post(
            ch, m.key, prefix: m.prefix, header: m.binaryHeader, binary: m.binaryPayload, exclude: m.exclude, now: now,
            keep: kept, numbering: .given(m.offset, restarts: restarts),
            into: &out)
        return nil
    }

    /// What the stream gave for a gap (loop 0): delivered, then the held messages. Missing ones
    /// (trimmed from the stream, or the read failed) are skipped: the broker counts and logs them.
    func filled(_ key: ChannelKey, epoch: String, _ found: [BrokerWire.Message]) {
        let loops = self.loops
        var out = Outbox(loops: loops.count)
        shard(key).withLock { st in
            guard let ch = st.channels[key], ch.filling else { return }
            ch.filling = false
            let held = ch.held
            ch.held = []
            let now = Clock.monotonicMillis()
            if ch.epoch == epoch {
                for m in found.sorted(by: { $0.offset < $1.offset }) where m.offset > ch.lastOffset {
                    // The stream may have lost the oldest ones (trimmed): they are skipped.
                    if m.offset > ch.lastOffset + 1 { ch.skip(to: m.offset - 1) }
                    _ = accept(ch, m, now: now, into: &out)
                }
            }
            for m in held {
                if m.epoch == ch.epoch && m.offset > ch.lastOffset + 1 { ch.skip(to: m.offset - 1) }
                _ = accept(ch, m, now: now, into: &out)
            }
            out.queue(to: loops)
        }
        out.wake(loops)
    }

    /// After the pub/sub connection came back: Redis's last offset of a channel with
    /// subscribers here; what this node lacks is a gap to fill.
    func caughtUp(_ key: ChannelKey, epoch: String, offset: UInt64) -> Gap? {
        shard(key).withLock { st in
            guard let ch = st.channels[key], !ch.filling, ch.subscribers > 0 else { return nil }
            if ch.epoch != epoch {
                // Redis lost the channel while this node was away: a new epoch from 1.
                Log.info("channel \(key.name) (app \(key.app)): new epoch \(epoch) in Redis (was \(ch.epoch))")
                ch.restart(epoch: epoch, at: 0)
            }
            guard offset > ch.lastOffset else { return nil }
            ch.filling = true
            ch.held = []
            return Gap(epoch: epoch, from: ch.lastOffset + 1, to: offset)
        }
    }

    /// Channels with subscribers on this node.
    func channelsWithSubscribers() -> [ChannelKey] {
        var keys: [ChannelKey] = []
        for s in shards {
            s.withLock { st in
                // Not the hub's own user channels: nothing of them is kept to catch up from.
                for (k, ch) in st.channels where ch.subscribers > 0 && !k.name.hasPrefix("#") { keys.append(k) }
            }
        }
        return keys
    }
}
