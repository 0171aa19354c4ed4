import HalleyCore
import HalleyCrypto
import HalleyLoop
import HalleyProtocol
import Synchronization

/// What carries a session now (`/stats` and `/metrics` count sessions by it).
package enum TransportKind: Int, CaseIterable {
    case websocket, sse, longPoll, xhrStreaming, xhrPolling

    var name: String {
        switch self {
        case .websocket: return "websocket"
        case .sse: return "sse"
        case .longPoll: return "long_poll"
        case .xhrStreaming: return "xhr_streaming"
        case .xhrPolling: return "xhr_polling"
        }
    }

    /// An HTTP transport: what a client uses when WebSocket does not get through.
    var isFallback: Bool { self != .websocket }
}

/// The counters of one app, written by every loop (relaxed atomic adds), read by `/stats` and
/// `/metrics`. Kept across reloads while the app id stays.
package enum AppCounter: Int, CaseIterable {
    /// Messages published into channels (a message to three channels counts three), client
    /// events included.
    case messagesIn
    /// Messages handed to subscribers' transports (one per subscriber).
    case messagesOut
    case sessionsOpened
    /// A client came back to its session on a new connection (WebSocket or SSE resume).
    case resumes
    /// Sessions that opened on, or moved to, an HTTP transport (SSE, long-poll, xhr).
    case fallbacks
    /// Messages a session missed: skipped for a slow consumer (policy `gap`), or a recovery
    /// that history could not cover.
    case gaps
    /// Sessions that hit their buffer bound (closed 4100, or skipping with policy `gap`).
    case slowConsumers

    var name: String {
        switch self {
        case .messagesIn: return "messages_in"
        case .messagesOut: return "messages_out"
        case .sessionsOpened: return "sessions_opened"
        case .resumes: return "resumes"
        case .fallbacks: return "fallbacks"
        case .gaps: return "gaps"
        case .slowConsumers: return "slow_consumers"
        }
    }
}

package final class AppStats: @unchecked Sendable {
    // @unchecked Sendable: atomics only, allocated once.
    private let values: UnsafeMutablePointer<Atomic<Int>>

    init() {
        values = .allocate(capacity: AppCounter.allCases.count)
        for i in 0..<AppCounter.allCases.count { (values + i).initialize(to: Atomic<Int>(0)) }
    }

    deinit {
        values.deinitialize(count: AppCounter.allCases.count)
        values.deallocate()
    }

    @inline(__always) package func add(_ c: AppCounter, _ n: Int = 1) {
        (values + c.rawValue).pointee.wrappingAdd(n, ordering: .relaxed)
    }

    func get(_ c: AppCounter) -> Int { (values + c.rawValue).pointee.load(ordering: .relaxed) }
}

/// One loop's sessions of one app, counted once a second by the loop (`LoopHub.tick`).
struct AppCensus: Sendable {
    var byTransport = [Int](repeating: 0, count: TransportKind.allCases.count)
    var live = 0
    var lingering = 0

    mutating func add(_ o: AppCensus) {
        for i in byTransport.indices { byTransport[i] += o.byTransport[i] }
        live += o.live
        lingering += o.lingering
    }
}

/// Per-second samples of the totals, for rates and the charts of the stats page: the last
/// five minutes, taken by loop 0.
struct StatsHistory {
    struct Sample {
        var at: Int64
        var messagesIn: Int
        var messagesOut: Int
        var sessions: Int
        var perApp: [String: (in: Int, out: Int)]
    }

    static let keep = 300
    var samples: [Sample] = []

    mutating func add(_ s: Sample) {
        samples.append(s)
        if samples.count > Self.keep + 60 { samples.removeFirst(samples.count - Self.keep) }
    }
}

extension LoopHub {
    /// Counts this loop's sessions by app and transport; published for `/stats` and
    /// `/metrics` (at most a second old there).
    func takeCensus() {
        var out: [String: AppCensus] = [:]
        for s in live {
            var c = out[s.app.id] ?? AppCensus()
            if let t = s.transport {
                c.byTransport[t.kind.rawValue] += 1
                c.live += 1
            } else {
                c.lingering += 1
            }
            out[s.app.id] = c
        }
        let i = index
        hub.census.withLock { $0[i] = out }
    }
}

extension Hub {
    package func stats(_ appID: String) -> AppStats? { apps.stats[appID] }

    /// Loop 0, once a second: a sample of the totals.
    func sampleStats() {
        let table = apps
        var perApp: [String: (in: Int, out: Int)] = [:]
        var tin = 0, tout = 0
        for (id, st) in table.stats {
            let i = st.get(.messagesIn), o = st.get(.messagesOut)
            perApp[id] = (i, o)
            tin += i
            tout += o
        }
        let s = StatsHistory.Sample(
            at: Clock.monotonicMillis(), messagesIn: tin, messagesOut: tout,
            sessions: sessionCount.load(ordering: .relaxed), perApp: perApp)
        history.withLock { $0.add(s) }
    }

    /// The census of every loop, summed per app.
    func censusByApp() -> [String: AppCensus] {
        // Summed under the lock: a copy taken out would share the array's storage, which the
        // next `takeCensus` then writes in place (ThreadSanitizer cannot see the reference count
        // that orders the two; the stress run caught it).
        census.withLock { perLoop in
            var out: [String: AppCensus] = [:]
            for l in perLoop {
                for (id, c) in l { out[id, default: AppCensus()].add(c) }
            }
            return out
        }
    }

    /// Channels with subscribers and subscriptions, per app.
    func channelTotalsByApp() -> [String: (channels: Int, subscriptions: Int)] {
        var out: [String: (channels: Int, subscriptions: Int)] = [:]
        for shard in shards {
            shard.withLock { st in
                for (k, ch) in st.channels where ch.subscribers > 0 && !k.name.hasPrefix(LoopHub.userChannelPrefix) {
                    let c = out[k.app] ?? (0, 0)
                    out[k.app] = (c.channels + 1, c.subscriptions + ch.subscribers)
                }
            }
        }
        return out
    }

    /// `GET /stats` (every app, `--admin-token`) and `GET /apps/{id}/stats` (one app, signed
    /// like the HTTP API): a JSON view of the node, documented in the README.
    package func statsJSON(only: String?, openConnections: Int?) -> [UInt8] {
        let table = apps
        let census = censusByApp()
        let channels = channelTotalsByApp()
        // A fresh array (`map`), not a copy that shares the storage `add` appends to in place.
        let samples = history.withLock { $0.samples.map { $0 } }
        let ids = only.map { [$0] } ?? table.apps.map(\.id)
        /// Per-second rates over the last 10 s (fewer right after the start).
        func rate(_ pick: (StatsHistory.Sample) -> Int) -> Double {
            guard let last = samples.last else { return 0 }
            let first = samples[max(0, samples.count - 11)]
            let dt = Double(last.at - first.at) / 1000
            return dt > 0 ? Double(pick(last) - pick(first)) / dt : 0
        }
        func rounded(_ v: Double) -> String {
            let r = (v * 10).rounded() / 10
            return r == r.rounded() ? String(Int(r)) : String(r)
        }
        func section(
            _ b: inout JSONObjectBuilder, census c: AppCensus, channels ch: (channels: Int, subscriptions: Int),
            counters: (AppCounter) -> Int, rateIn: Double, rateOut: Double
        ) {
            var conn = JSONObjectBuilder()
            for k in TransportKind.allCases { conn.int(k.name, UInt64(c.byTransport[k.rawValue])) }
            b.raw("connections", conn.closed)
            var sess = JSONObjectBuilder()
            sess.int("live", UInt64(c.live))
            sess.int("lingering", UInt64(c.lingering))
            b.raw("sessions", sess.closed)
            b.int("channels", UInt64(ch.channels))
            b.int("subscriptions", UInt64(ch.subscriptions))
            b.raw("messages_in_per_second", Array(rounded(rateIn).utf8))
            b.raw("messages_out_per_second", Array(rounded(rateOut).utf8))
            for k in AppCounter.allCases { b.int(k.name, UInt64(max(0, counters(k)))) }
        }
        var appsOut = JSONObjectBuilder()
        var totalCensus = AppCensus()
        var totalChannels = (channels: 0, subscriptions: 0)
        var totals = [Int](repeating: 0, count: AppCounter.allCases.count)
        var totalIn = 0.0, totalOut = 0.0
        for id in ids {
            guard let st = table.stats[id] else { continue }
            let c = census[id] ?? AppCensus()
            let ch = channels[id] ?? (0, 0)
            let rin = rate { $0.perApp[id]?.in ?? 0 }, rout = rate { $0.perApp[id]?.out ?? 0 }
            var a = JSONObjectBuilder()
            section(&a, census: c, channels: ch, counters: { st.get($0) }, rateIn: rin, rateOut: rout)
            appsOut.raw(id, a.closed)
            totalCensus.add(c)
            totalChannels = (totalChannels.channels + ch.channels, totalChannels.subscriptions + ch.subscriptions)
            for k in AppCounter.allCases { totals[k.rawValue] += st.get(k) }
            totalIn += rin
            totalOut += rout
        }
        var total = JSONObjectBuilder()
        section(
            &total, census: totalCensus, channels: totalChannels, counters: { totals[$0.rawValue] },
            rateIn: totalIn, rateOut: totalOut)
        if only == nil, let w = webhooks {
            let inbox = w.inbox.withLock { ($0.events.count, $0.bytes) }
            var wh = JSONObjectBuilder()
            wh.int("queued", UInt64(inbox.0 + webhookQueued.load(ordering: .relaxed)))
            wh.int("sent", UInt64(w.counters.get(\.sent)))
            wh.int("failed_requests", UInt64(w.counters.get(\.failed)))
            wh.int("retries", UInt64(w.counters.get(\.retried)))
            wh.int("dropped", UInt64(w.counters.get(\.droppedOverflow) + w.counters.get(\.droppedGaveUp)))
            total.raw("webhooks", wh.closed)
        }
        var out = JSONObjectBuilder()
        out.int("time", UInt64(Clock.wallSeconds()))
        out.int("uptime_seconds", UInt64(max(0, (Clock.monotonicMillis() - startedAt) / 1000)))
        if only == nil, let n = openConnections { out.int("open_connections", UInt64(n)) }
        out.raw("total", total.closed)
        out.raw("apps", appsOut.closed)
        // The last five minutes, one value per second (oldest first): the stats page draws them.
        if only == nil {
            var h = JSONObjectBuilder()
            let tail = samples.suffix(StatsHistory.keep + 1)
            func series(_ pick: (StatsHistory.Sample) -> Int, rate: Bool) -> [UInt8] {
                var parts: [String] = []
                var prev: StatsHistory.Sample?
                for s in tail {
                    if rate {
                        if let p = prev, s.at > p.at {
                            parts.append(rounded(Double(pick(s) - pick(p)) * 1000 / Double(s.at - p.at)))
                        }
                    } else {
                        parts.append(String(pick(s)))
                    }
                    prev = s
                }
                if !rate, !parts.isEmpty { parts.removeFirst() }
                return Array(("[" + parts.joined(separator: ",") + "]").utf8)
            }
            h.raw("messages_in_per_second", series({ $0.messagesIn }, rate: true))
            h.raw("messages_out_per_second", series({ $0.messagesOut }, rate: true))
            h.raw("sessions", series({ $0.sessions }, rate: false))
            out.raw("history", h.closed)
        }
        return out.closed
    }
}
