import HalleyCore
import HalleyHTTP
import HalleyLoop
import Synchronization

/// Limits per client address, each with its default; 0 turns one off. They keep one client
/// from taking what every client shares (connection slots, session slots): the hub's global
/// limits (`--max-connections`, `--max-sessions`) still bound the total.
public struct ClientLimitConfig: Sendable {
    /// Open connections from one address. Default 1,000 (a browser holds one to six; an
    /// office behind one NAT address holds more). Past it, the connection's first request is
    /// answered **429** and the connection closed. Counted by the socket's peer; a trusted
    /// proxy's own connections are not counted (the proxy is where to limit them).
    public var maxConnectionsPerAddress = 1000
    /// Sessions one address may open per second, sustained (a token bucket), and at once
    /// (`sessionOpenBurst`). Defaults 20 and 100. Past it: **429** over HTTP, `pusher:error`
    /// 4100 and close 4100 on WebSocket (Pusher clients reconnect after a back-off).
    public var sessionOpensPerSecond = 20
    public var sessionOpenBurst = 100
    /// Sessions of one address that linger without a transport (resumable sessions between
    /// requests, pusher-js HTTP sessions between polls). Default 500; past it, new sessions
    /// of that address are refused as above until some attach again or expire.
    public var maxLingeringPerAddress = 500
    /// Peers whose `clientAddressHeader` names the client (the reverse proxies in front of the
    /// hub). Default none: every request is its socket's peer.
    public var trustedProxies: [IPNetwork] = []
    /// The one header a trusted proxy writes the client into: `X-Forwarded-For` (default:
    /// nginx's `$proxy_add_x_forwarded_for`, HAProxy's `option forwardfor`), `Forwarded`
    /// (RFC 7239 `for=`), or a header holding one address (`X-Real-IP`). Only that header is
    /// read: a proxy passes the others through as the client wrote them.
    public var clientAddressHeader = "X-Forwarded-For"

    public init() {}
}

/// Why a client was refused, for the answer, the log line and `/metrics`.
public enum ClientLimitKind: String, Sendable, CaseIterable {
    case connections
    case sessionOpens = "session_opens"
    case lingeringSessions = "lingering_sessions"
}

/// The per-address counters, shared by every loop. Striped: an address always maps to the
/// same stripe, so two loops contend only when their clients hash alike. IPv6 addresses count
/// by their /64 (one subscriber's allocation: an attacker rotates through it for free).
public final class ClientLimits: @unchecked Sendable {
    // @unchecked Sendable: `config` is immutable; every entry is behind its stripe's lock.
    public let config: ClientLimitConfig
    struct Entry {
        var connections: Int32 = 0
        var lingering: Int32 = 0
        /// Session-open tokens at `refilled` (monotonic ms).
        var tokens: Double
        var refilled: Int64
    }
    let stripes: [Locked<[IPAddress: Entry]>]

    /// Refusals of one kind, for `/metrics`, and when it was last logged: a warning at most
    /// every 10 s per kind, with the count, however hard a client pushes.
    final class Tally: Sendable {
        let refused = Atomic<Int>(0)
        let lastLog = Atomic<Int64>(Int64.min / 2)
    }
    let tallies: [Tally]
    /// A forwarding header seen with no trusted proxy configured: warned once.
    let warnedUntrustedForward = Atomic<Bool>(false)

    public init(config: ClientLimitConfig) {
        self.config = config
        stripes = (0..<64).map { _ in Locked([:]) }
        tallies = ClientLimitKind.allCases.map { _ in Tally() }
    }

    @inline(__always) static func key(_ a: IPAddress) -> IPAddress {
        a.isV4 ? a : IPAddress(hi: a.hi, lo: 0)
    }

    /// Whether two addresses are one client for the limits (the same IPv4 address, or the same
    /// IPv6 /64: privacy addresses rotate within it).
    public static func sameClient(_ a: IPAddress, _ b: IPAddress) -> Bool { key(a) == key(b) }

    @inline(__always) func stripe(_ k: IPAddress) -> Locked<[IPAddress: Entry]> {
        stripes[Int(truncatingIfNeeded: (k.hi ^ k.lo ^ (k.lo >> 29)) & 63)]
    }

    func newEntry(now: Int64) -> Entry { Entry(tokens: Double(config.sessionOpenBurst), refilled: now) }

    // MARK: connections

    /// Whether a peer's connection counts against it (not a trusted proxy's, not when off).
    public func countsConnections(of peer: IPAddress) -> Bool {
        config.maxConnectionsPerAddress > 0 && !isTrustedProxy(peer)
    }

    /// A new connection of `peer`: false when the address is at its limit (the connection is
    /// then not counted, and is answered 429).
    public func connectionOpened(_ peer: IPAddress, now: Int64) -> Bool {
        let k = Self.key(peer)
        let limit = Int32(clamping: config.maxConnectionsPerAddress)
        let ok = stripe(k).withLock { t -> Bool in
            var e = t[k] ?? newEntry(now: now)
            guard e.connections < limit else { return false }
            e.connections += 1
            t[k] = e
            return true
        }
        if !ok { noteRefusal(.connections, peer, now: now) }
        return ok
    }

    public func connectionClosed(_ peer: IPAddress) {
        let k = Self.key(peer)
        stripe(k).withLock { t in
            guard var e = t[k] else { return }
            e.connections -= 1
            t[k] = e
        }
    }

    // MARK: sessions

    /// A session to be opened for `client`: nil when allowed (a token taken), else the limit
    /// that refuses it.
    public func sessionOpen(_ client: IPAddress, now: Int64) -> ClientLimitKind? {
        guard config.sessionOpensPerSecond > 0 || config.maxLingeringPerAddress > 0 else { return nil }
        let k = Self.key(client)
        let rate = Double(config.sessionOpensPerSecond), burst = Double(config.sessionOpenBurst)
        let lingerLimit = Int32(clamping: config.maxLingeringPerAddress)
        let r = stripe(k).withLock { t -> ClientLimitKind? in
            var e = t[k] ?? newEntry(now: now)
            if lingerLimit > 0 && e.lingering >= lingerLimit { return .lingeringSessions }
            if rate > 0 {
                e.tokens = min(burst, e.tokens + Double(now - e.refilled) * rate / 1000)
                e.refilled = now
                guard e.tokens >= 1 else {
                    t[k] = e
                    return .sessionOpens
                }
                e.tokens -= 1
            }
            t[k] = e
            return nil
        }
        if let kind = r { noteRefusal(kind, client, now: now) }
        return r
    }

    /// A session of `client` began (+1) or stopped (-1) lingering without a transport.
    public func lingering(_ client: IPAddress, _ delta: Int32, now: Int64) {
        guard config.maxLingeringPerAddress > 0 else { return }
        let k = Self.key(client)
        let fresh = newEntry(now: now)
        stripe(k).withLock { t in t[k, default: fresh].lingering += delta }  // one lookup, in place
    }

    /// The sessions of `client` lingering now (what `lingering` counted).
    public func lingeringCount(of client: IPAddress) -> Int {
        let k = Self.key(client)
        return Int(stripe(k).withLock { $0[k]?.lingering ?? 0 })
    }

    /// Forgets addresses with nothing counted and a full bucket (called every few seconds).
    public func sweep(now: Int64) {
        let rate = Double(config.sessionOpensPerSecond), burst = Double(config.sessionOpenBurst)
        for s in stripes {
            s.withLock { t in
                t = t.filter { _, e in
                    e.connections > 0 || e.lingering > 0
                        || (rate > 0 && e.tokens + Double(now - e.refilled) * rate / 1000 < burst)
                }
            }
        }
    }

    /// Addresses tracked now (for tests and `/metrics`).
    public var trackedAddresses: Int { stripes.reduce(0) { n, s in n + s.withLock { $0.count } } }

    // MARK: client address

    public func isTrustedProxy(_ a: IPAddress) -> Bool {
        config.trustedProxies.contains { $0.contains(a) }
    }

    /// The client a request comes from: its socket's peer, unless that peer is a trusted
    /// proxy; then the last address of `clientAddressHeader` (every line of it: RFC 9110 §5.3,
    /// and HAProxy adds a line of its own after the client's) that is not itself a trusted
    /// proxy, read from the right (the end a proxy appends to: what the client wrote on the
    /// left is not believed).
    public func clientAddress(peer: IPAddress, headers: HTTPHeaders) -> IPAddress {
        guard !config.trustedProxies.isEmpty, isTrustedProxy(peer) else {
            if config.trustedProxies.isEmpty && !warnedUntrustedForward.load(ordering: .relaxed)
                && headers.contains(config.clientAddressHeader)
                && !warnedUntrustedForward.exchange(true, ordering: .relaxed)
            {
                Log.warning(
                    "requests carry \(config.clientAddressHeader) but --trusted-proxies is empty: each client counts as its socket's peer (a proxy in front counts as one client for the per-address limits)"
                )
            }
            return peer
        }
        let lines = headers.values(config.clientAddressHeader)
        guard !lines.isEmpty else { return peer }
        var hops: [Substring] = []
        if config.clientAddressHeader.lowercased() == "forwarded" {
            for element in lines.joined(separator: ",").split(separator: ",") {
                var found: Substring? = nil
                for pair in element.split(separator: ";") {
                    let kv = pair.split(separator: "=", maxSplits: 1)
                    guard kv.count == 2, kv[0].trimmingSpaces().lowercased() == "for" else { continue }
                    var v = Substring(kv[1].trimmingSpaces())
                    if v.first == "\"" && v.last == "\"" && v.count >= 2 { v = v.dropFirst().dropLast() }
                    found = Self.stripPort(v)
                }
                // An element without for= names no node: nothing to believe past it.
                hops.append(found ?? "unknown")
            }
        } else {
            hops = lines.joined(separator: ",").split(separator: ",").map {
                Self.stripPort(Substring($0.trimmingSpaces()))
            }
        }
        for h in hops.reversed() {
            guard let a = IPAddress(h) else { return peer }  // "unknown", an obfuscated id: stop
            if !isTrustedProxy(a) { return a }
        }
        return hops.isEmpty ? peer : (IPAddress(hops[0]) ?? peer)
    }

    /// `1.2.3.4:5678` → `1.2.3.4`; `[::1]:80` → `[::1]`; bare IPv6 stays.
    static func stripPort(_ s: Substring) -> Substring {
        if s.first == "[" { return s.firstIndex(of: "]").map { s[...$0] } ?? s }
        if s.filter({ $0 == ":" }).count == 1, let c = s.firstIndex(of: ":") { return s[..<c] }
        return s
    }

    // MARK: accounting

    func noteRefusal(_ kind: ClientLimitKind, _ who: IPAddress, now: Int64) {
        let t = tallies[ClientLimitKind.allCases.firstIndex(of: kind)!]
        let n = t.refused.add(1, ordering: .relaxed).newValue
        let last = t.lastLog.load(ordering: .relaxed)
        if now - last >= 10_000, t.lastLog.compareExchange(expected: last, desired: now, ordering: .relaxed).exchanged {
            Log.warning(
                "client \(who): over the per-address \(kind.rawValue.replacingUnderscores()) limit: refused (\(n) refusals of this kind so far; next report in 10 s at the earliest)"
            )
        }
    }

    public func metricsText() -> String {
        var s = "# TYPE halley_client_limit_refusals_total counter\n"
        for (i, k) in ClientLimitKind.allCases.enumerated() {
            s +=
                "halley_client_limit_refusals_total{limit=\"\(k.rawValue)\"} \(tallies[i].refused.load(ordering: .relaxed))\n"
        }
        s += "# TYPE halley_client_addresses gauge\nhalley_client_addresses \(trackedAddresses)\n"
        return s
    }
}

extension String {
    func replacingUnderscores() -> String { String(map { $0 == "_" ? " " : $0 }) }
}
