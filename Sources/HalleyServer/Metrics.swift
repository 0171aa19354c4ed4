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

    func sum(_ c: Counter) -> Int { loops.reduce(0) { $0 + $1.get(c) } }

    public func render() -> String {
        var out = ""
        func family(_ name: String, _ type: String, _ help: String, _ samples: [(String, Int)]) {
            out += "# HELP \(name) \(help)\n# TYPE \(name) \(type)\n"
            for (labels, v) in samples { out += "\(name)\(labels) \(v)\n" }
        }
        let accepted = sum(.connectionsAccepted)
        family("halley_connections_open", "gauge", "Client connections open now (HTTP and WebSocket).", [("", openConnections())])
        family("halley_connections_accepted_total", "counter", "HTTP connections accepted.", [("", accepted)])
        family("halley_http_requests_total", "counter", "HTTP responses sent, by status class.", [
            ("{class=\"1xx\"}", sum(.requests1xx)), ("{class=\"2xx\"}", sum(.requests2xx)),
            ("{class=\"3xx\"}", sum(.requests3xx)), ("{class=\"4xx\"}", sum(.requests4xx)),
            ("{class=\"5xx\"}", sum(.requests5xx)),
        ])
        family("halley_bytes_in_total", "counter", "Bytes read from clients.", [("", sum(.bytesIn))])
        family("halley_bytes_out_total", "counter", "Bytes written to clients.", [("", sum(.bytesOut))])
        family("halley_limit_breaches_total", "counter", "Requests or connections refused for breaking a limit, by kind.", [
            ("{kind=\"request_line\"}", sum(.breachRequestLine)), ("{kind=\"headers\"}", sum(.breachHeaders)),
            ("{kind=\"body\"}", sum(.breachBody)), ("{kind=\"header_timeout\"}", sum(.breachHeaderTimeout)),
            ("{kind=\"body_timeout\"}", sum(.breachBodyTimeout)), ("{kind=\"connections\"}", sum(.breachConnections)),
        ])
        family("halley_http_bad_requests_total", "counter", "Requests refused as malformed (400, 501, 505, 417).", [("", sum(.badRequests))])
        family("halley_websocket_upgrades_total", "counter", "WebSocket handshakes accepted.", [("", sum(.wsUpgrades))])
        family("halley_websocket_messages_total", "counter", "WebSocket messages, by direction.", [
            ("{direction=\"in\"}", sum(.wsMessagesIn)), ("{direction=\"out\"}", sum(.wsMessagesOut)),
        ])
        family("halley_websocket_protocol_errors_total", "counter", "WebSocket connections closed for breaking the protocol or a limit.", [("", sum(.wsProtocolErrors))])
        family("halley_websocket_backpressure_total", "counter", "Messages that found a full send buffer.", [("", sum(.wsBackpressure))])
        family("halley_connection_handoffs_total", "counter", "Connections moved to the loop that owns their session.", [("", sum(.handOffs))])
        for s in sources { out += s() }
        return out
    }
}
