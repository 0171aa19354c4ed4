import Synchronization

/// The hub's counters. Each loop owns one `LoopCounters` and is its only writer, so an
/// increment is a relaxed load and store (no locked instruction); `/metrics` reads every
/// loop's counters from whichever loop serves it.
public enum Counter: Int, CaseIterable, Sendable {
    case connectionsAccepted
    case requests1xx, requests2xx, requests3xx, requests4xx, requests5xx
    case bytesIn, bytesOut
    case breachRequestLine, breachHeaders, breachBody, breachHeaderTimeout, breachBodyTimeout
    case breachConnections, badRequests
    case wsUpgrades, wsMessagesIn, wsMessagesOut, wsProtocolErrors, wsBackpressure
    case handOffs

    static func forStatus(_ status: Int) -> Counter {
        switch status {
        case ..<200: return .requests1xx
        case ..<300: return .requests2xx
        case ..<400: return .requests3xx
        case ..<500: return .requests4xx
        default: return .requests5xx
        }
    }
}

/// Counters of one loop. `@unchecked Sendable`: written only by the loop that owns it; read
/// by others through relaxed atomic loads.
public final class LoopCounters: @unchecked Sendable {
    let values: UnsafeMutablePointer<Atomic<Int>>
    let count = Counter.allCases.count

    init() {
        values = .allocate(capacity: count)
        for i in 0..<count { (values + i).initialize(to: Atomic<Int>(0)) }
    }

    deinit {
        values.deinitialize(count: count)
        values.deallocate()
    }

    @inline(__always) public func add(_ c: Counter, _ n: Int = 1) {
        let v = values + c.rawValue
        v.pointee.store(v.pointee.load(ordering: .relaxed) &+ n, ordering: .relaxed)
    }

    public func get(_ c: Counter) -> Int { (values + c.rawValue).pointee.load(ordering: .relaxed) }
}

/// Renders every loop's counters in the Prometheus text format (version 0.0.4). Later parts
/// of the hub add their own lines with `addSource`.
public final class Metrics: @unchecked Sendable {
    // Sendable: `loops` and `sources` are filled before the loops start and never changed.
    var loops: [LoopCounters] = []
    var sources: [@Sendable () -> String] = []
    /// The server's own count (one atomic): accepted − closed summed over the loops could be
    /// read half-updated.
    var openConnections: @Sendable () -> Int = { 0 }

    public init() {}

    public func addSource(_ render: @escaping @Sendable () -> String) { sources.append(render) }

    /// Client connections open now (HTTP and WebSocket).
    public var openConnectionCount: Int { openConnections() }

    func sum(_ c: Counter) -> Int { loops.reduce(0) { $0 + $1.get(c) } }

    /// One family in the text format: HELP, TYPE, then a sample per label set.
    public static func family(_ name: String, _ type: String, _ help: String, _ samples: [(String, Int)]) -> String {
        var out = "# HELP \(name) \(help)\n# TYPE \(name) \(type)\n"
        for (labels, v) in samples { out += "\(name)\(labels) \(v)\n" }
        return out
    }

    public func render() -> String {
        var out = ""
        func family(_ name: String, _ type: String, _ help: String, _ samples: [(String, Int)]) {
            out += Self.family(name, type, help, samples)
        }
        let accepted = sum(.connectionsAccepted)
        family(
            "halley_connections_open", "gauge", "Client connections open now (HTTP and WebSocket).",
            [("", openConnections())])
        family("halley_connections_accepted_total", "counter", "HTTP connections accepted.", [("", accepted)])
        family(
            "halley_http_requests_total", "counter", "HTTP responses sent, by status class.",
            [
                ("{class=\"1xx\"}", sum(.requests1xx)), ("{class=\"2xx\"}", sum(.requests2xx)),
                ("{class=\"3xx\"}", sum(.requests3xx)), ("{class=\"4xx\"}", sum(.requests4xx)),
                ("{class=\"5xx\"}", sum(.requests5xx)),
            ])
        family("halley_bytes_in_total", "counter", "Bytes read from clients.", [("", sum(.bytesIn))])
        family("halley_bytes_out_total", "counter", "Bytes written to clients.", [("", sum(.bytesOut))])
        family(
            "halley_limit_breaches_total", "counter", "Requests or connections refused for breaking a limit, by kind.",
            [
                ("{kind=\"request_line\"}", sum(.breachRequestLine)), ("{kind=\"headers\"}", sum(.breachHeaders)),
                ("{kind=\"body\"}", sum(.breachBody)), ("{kind=\"header_timeout\"}", sum(.breachHeaderTimeout)),
                ("{kind=\"body_timeout\"}", sum(.breachBodyTimeout)),
                ("{kind=\"connections\"}", sum(.breachConnections)),
            ])
        family(
            "halley_http_bad_requests_total", "counter", "Requests refused as malformed (400, 501, 505, 417).",
            [("", sum(.badRequests))])
        family("halley_websocket_upgrades_total", "counter", "WebSocket handshakes accepted.", [("", sum(.wsUpgrades))])
        family(
            "halley_websocket_messages_total", "counter", "WebSocket messages, by direction.",
            [
                ("{direction=\"in\"}", sum(.wsMessagesIn)), ("{direction=\"out\"}", sum(.wsMessagesOut)),
            ])
        family(
            "halley_websocket_protocol_errors_total", "counter",
            "WebSocket connections closed for breaking the protocol or a limit.", [("", sum(.wsProtocolErrors))])
        family(
            "halley_websocket_backpressure_total", "counter", "Messages that found a full send buffer.",
            [("", sum(.wsBackpressure))])
        family(
            "halley_connection_handoffs_total", "counter", "Connections moved to the loop that owns their session.",
            [("", sum(.handOffs))])
        for s in sources { out += s() }
        return out
    }
}

/// A Prometheus histogram of durations with one writer per loop (relaxed load and store per
/// slot, as `LoopCounters`), rendered summed over the loops.
public final class LatencyHistogram: @unchecked Sendable {
    // @unchecked Sendable: atomics only, allocated once; each loop writes its own slots.
    /// Upper bounds in seconds: 100 µs to 2.5 s.
    public static let bounds: [Double] = [
        0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5,
    ]
    let boundsNanos: [Int64] = LatencyHistogram.bounds.map { Int64($0 * 1e9) }
    let loops: Int
    /// Per loop: one count per bucket, the +Inf bucket, the sum (ns) and the count.
    let stride = LatencyHistogram.bounds.count + 3
    let values: UnsafeMutablePointer<Atomic<Int>>

    public init(loops: Int) {
        self.loops = max(1, loops)
        values = .allocate(capacity: self.loops * stride)
        for i in 0..<(self.loops * stride) { (values + i).initialize(to: Atomic<Int>(0)) }
    }

    deinit {
        values.deinitialize(count: loops * stride)
        values.deallocate()
    }

    @inline(__always) func bump(_ i: Int, _ n: Int) {
        let v = values + i
        v.pointee.store(v.pointee.load(ordering: .relaxed) &+ n, ordering: .relaxed)
    }

    /// On loop `loop` only (its slots have one writer).
    @inline(__always) public func observe(nanos: Int64, loop: Int) {
        guard loop < loops else { return }
        let ns = max(0, nanos)
        var b = 0
        while b < boundsNanos.count && ns > boundsNanos[b] { b += 1 }
        let base = loop * stride
        bump(base + b, 1)
        bump(base + boundsNanos.count + 1, Int(ns))
        bump(base + boundsNanos.count + 2, 1)
    }

    func total(_ slot: Int) -> Int {
        (0..<loops).reduce(0) { $0 + (values + $1 * stride + slot).pointee.load(ordering: .relaxed) }
    }

    /// The `_bucket` (cumulative), `_sum` (seconds) and `_count` lines.
    public func render(name: String, help: String) -> String {
        var out = "# HELP \(name) \(help)\n# TYPE \(name) histogram\n"
        var cumulative = 0
        for (i, le) in Self.bounds.enumerated() {
            cumulative += total(i)
            out += "\(name)_bucket{le=\"\(le)\"} \(cumulative)\n"
        }
        cumulative += total(Self.bounds.count)
        let count = total(Self.bounds.count + 2)
        out += "\(name)_bucket{le=\"+Inf\"} \(cumulative)\n"
        out += "\(name)_sum \(Double(total(Self.bounds.count + 1)) / 1e9)\n"
        out += "\(name)_count \(count)\n"
        return out
    }
}
