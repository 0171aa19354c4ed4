#if canImport(Glibc)
import Glibc
#endif
import HalleyCore
import HalleyLoop
import HalleyProtocol
import HalleyServer
import Synchronization

/// The node's channels: one offset sequence per channel, decided under one lock, and the
/// per-loop `LoopHub`s that hold the sessions. A publish assigns offsets and posts the
/// message to every loop with subscribers *while holding the lock*, so each loop's inbox gets
/// a channel's messages in offset order whatever thread published them.
public final class Hub: Sendable {
    public let config: HubConfig
    let appsByKey: [String: App]
    let appsByID: [String: App]
    let state = Mutex<State>(State())
    let sessionCount = Atomic<Int>(0)
    // Set once by `attach(to:)` before the loops run, read-only after.
    nonisolated(unsafe) var loops: [LoopHub] = []

    struct State: ~Copyable {
        var channels: [ChannelKey: ChannelState] = [:]
    }

    public init(config: HubConfig) {
        self.config = config
        var k: [String: App] = [:]
        var i: [String: App] = [:]
        for a in config.apps {
            k[a.key] = a
            i[a.id] = a
        }
        appsByKey = k
        appsByID = i
    }

    public func app(key: String) -> App? { appsByKey[key] }
    public func app(id: String) -> App? { appsByID[id] }

    /// Creates one `LoopHub` per server loop and routes the hub's endpoints. Call after
    /// `server.start()` made the loops, before any request can arrive — i.e. use
    /// `Server.onLoopsReady`.
    public func attach(loops serverLoops: [EventLoop]) {
        loops = serverLoops.map { LoopHub(hub: self, loop: $0, loopCount: serverLoops.count) }
    }

    var loopCount: Int { loops.count }

    // MARK: publishing

    public struct PublishResult: Sendable {
        public var channels: [(name: String, offset: UInt64, epoch: String)] = []
        public var sessions = 0
    }

    /// Publishes one event to `channels` (validated by the caller).
    func publish(app: App, channels: [String], event: String, data: String?, binary: [UInt8]?, exclude: SessionID?) -> PublishResult {
        // Encode outside the lock: the bytes before the offset are the same for every
        // channel but the channel name.
        let dataText = binary.map { Base64.encode($0) } ?? data ?? ""
        var prepared: [(ChannelKey, [UInt8], [UInt8]?)] = []
        for c in channels {
            let p = Wire.eventPrefix(event: event, channel: c, data: dataText, binary: binary != nil)
            let h = binary.map { _ in Wire.binaryHeaderPrefix(event: event, channel: c, offset: 0) }
            prepared.append((ChannelKey(app: app.id, name: c), p, h))
        }
        let now = Clock.monotonicMillis()
        var result = PublishResult()
        let loops = self.loops
        // Per loop, what it must deliver; queued under the lock (so every loop's inbox has a
        // channel's messages in offset order), woken after it (no syscall under the lock).
        var perLoop = [[(ChannelKey, Publication)]](repeating: [], count: loops.count)
        var wake = [Bool](repeating: false, count: loops.count)
        state.withLock { st in
            for (key, prefix, header) in prepared {
                let ch = st.channels[key] ?? {
                    let c = ChannelState(name: key.name, loops: loops.count)
                    st.channels[key] = c
                    return c
                }()
                ch.lastOffset += 1
                let off = ch.lastOffset
                var p = prefix
                p.append(contentsOf: offsetField(off))
                var h = header
                if h != nil { h!.append(contentsOf: offsetField(off)) }
                let m = OutMessage(prefix: p, channel: key.name, offset: off, binaryHeader: h, binaryPayload: binary)
                let pub = Publication(message: m, offset: off, time: now, exclude: exclude)
                if config.historySize > 0 { ch.append(pub, keep: config.historySize) }
                if ch.kind == .cache { ch.cached = pub }
                result.channels.append((key.name, off, ch.epoch))
                result.sessions += ch.subscribers
                if let x = exclude, ch.members.contains(x) { result.sessions -= 1 }
                for (i, n) in ch.perLoop.enumerated() where n > 0 { perLoop[i].append((key, pub)) }
            }
            for (i, items) in perLoop.enumerated() where !items.isEmpty {
                let lh = loops[i]
                let box = UncheckedBox(items)
                wake[i] = lh.loop.enqueue { for (k, p) in box.value { lh.fanOutLater(k, p) } }
            }
        }
        for (i, w) in wake.enumerated() where w { loops[i].loop.wake() }
        return result
    }

    func offsetField(_ off: UInt64) -> [UInt8] {
        Array(",\"halley:offset\":\(off)".utf8)
    }

    // MARK: subscriptions (called by a LoopHub on its loop)

    struct SubscribeResult {
        let epoch: String
        let lastOffset: UInt64
        let recovery: ChannelState.Recovery
        let cached: Publication?
    }

    func subscribe(_ key: ChannelKey, session: SessionID, loop: Int, since: (epoch: String, offset: UInt64)?) -> SubscribeResult {
        let cacheCutoff = Clock.monotonicMillis() - Int64(config.cacheSeconds) * 1000
        let historyCutoff = Clock.monotonicMillis() - Int64(config.historySeconds) * 1000
        let loopCount = loops.count
        return state.withLock { st in
            let ch = st.channels[key] ?? {
                let c = ChannelState(name: key.name, loops: loopCount)
                st.channels[key] = c
                return c
            }()
            ch.perLoop[loop] += 1
            ch.members.insert(session)
            ch.trim(olderThan: historyCutoff)
            var recovery = ChannelState.Recovery.none
            if let s = since { recovery = ch.recover(epoch: s.epoch, after: s.offset) }
            var cached: Publication? = nil
            if ch.kind == .cache, let c = ch.cached, c.time >= cacheCutoff { cached = c }
            return SubscribeResult(epoch: ch.epoch, lastOffset: ch.lastOffset, recovery: recovery, cached: cached)
        }
    }

    /// The channel's epoch and last offset, without subscribing.
    func peek(_ key: ChannelKey) -> (epoch: String, lastOffset: UInt64) {
        state.withLock { st in
            guard let ch = st.channels[key] else { return ("", 0) }
            return (ch.epoch, ch.lastOffset)
        }
    }

    func unsubscribe(_ key: ChannelKey, session: SessionID, loop: Int) {
        state.withLock { st in
            guard let ch = st.channels[key] else { return }
            ch.perLoop[loop] -= 1
            ch.members.remove(session)
            if ch.isIdle { st.channels[key] = nil }
        }
    }

    /// Trims histories by age and forgets idle channels. Called once a second by loop 0.
    func sweepChannels() {
        let now = Clock.monotonicMillis()
        let historyCutoff = now - Int64(config.historySeconds) * 1000
        let cacheCutoff = now - Int64(config.cacheSeconds) * 1000
        state.withLock { st in
            var idle: [ChannelKey] = []
            for (k, ch) in st.channels {
                ch.trim(olderThan: historyCutoff)
                if let c = ch.cached, c.time < cacheCutoff { ch.cached = nil }
                if ch.isIdle { idle.append(k) }
            }
            for k in idle { st.channels[k] = nil }
        }
    }

    /// Adds the hub's gauges to `/metrics`.
    public func addMetrics(to metrics: Metrics) {
        metrics.addSource { [self] in
            "# TYPE halley_sessions gauge\nhalley_sessions \(sessionCount.load(ordering: .relaxed))\n" +
            "# TYPE halley_channels gauge\nhalley_channels \(channelCount)\n"
        }
    }

    /// Channels known to the node (for metrics and tests).
    public var channelCount: Int { state.withLock { $0.channels.count } }
}
