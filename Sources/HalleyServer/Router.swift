import HalleyHTTP
import HalleyWebSocket

public typealias RouteHandler = @Sendable (HTTPRequest, Responder) -> Void

/// Maps a method and path to a handler: exact paths by one hash lookup, then patterns with
/// `{name}` segments (`/app/{key}`) in the order they were added, then the fallback (static
/// files). Filled before the loops start and only read after, from every loop.
public final class Router: @unchecked Sendable {
    // @unchecked Sendable: routes are added before the loops start, then only read.
    enum Segment {
        /// A literal segment's bytes.
        case literal([UInt8])
        case parameter(String)
    }

    struct Route {
        let methods: [HTTPMethod]
        let segments: [Segment]
        let handler: RouteHandler
    }

    public enum Match {
        case handler(RouteHandler, parameters: RouteParameters)
        /// The path exists but not for this method; the allowed methods for `Allow`.
        case methodNotAllowed([HTTPMethod])
        case notFound
    }

    private var exact: [Substring: [Route]] = [:]
    private var patterns: [Route] = []
    /// The most segments of a pattern: a path with more matches none.
    private var maxSegments = 0
    public var fallback: RouteHandler?

    public init() {}

    /// Adds a route. `pattern` is a path whose segments may be `{name}` parameters; `methods`
    /// lists the methods it answers (GET implies HEAD unless HEAD is routed separately).
    public func add(_ methods: [HTTPMethod], _ pattern: String, _ handler: @escaping RouteHandler) {
        let segments: [Segment] = pattern.split(separator: "/", omittingEmptySubsequences: true).map { s in
            if s.hasPrefix("{") && s.hasSuffix("}") { return .parameter(String(s.dropFirst().dropLast())) }
            return .literal(Array(s.utf8))
        }
        let route = Route(methods: methods, segments: segments, handler: handler)
        if segments.allSatisfy({ if case .literal = $0 { return true } else { return false } }) {
            exact[Substring(pattern), default: []].append(route)
        } else {
            patterns.append(route)
            maxSegments = max(maxSegments, segments.count)
        }
    }

    /// Adds a WebSocket endpoint: GET `pattern` upgrades (RFC 6455 §4.2) and `makeDelegate`
    /// gives the new connection its application side.
    public func addWebSocket(
        _ pattern: String, endpoint: WebSocketHandshake.Endpoint = .init(),
        _ makeDelegate: @escaping @Sendable (HTTPRequest) -> WebSocketDelegate?
    ) {
        add([.get], pattern) { request, responder in
            responder.upgrade(request, endpoint: endpoint, makeDelegate)
        }
    }

    public func match(_ method: HTTPMethod, _ path: Substring) -> Match {
        var allowed: [HTTPMethod] = []
        if let routes = exact[path] {
            for r in routes {
                if Self.answers(r, method) { return .handler(r.handler, parameters: [:]) }
                allowed.append(contentsOf: r.methods)
            }
        }
        if !patterns.isEmpty {
            var p = path  // `withUTF8` is mutating; the path's own bytes, not copied
            if let m = p.withUTF8({ matchPattern(method, $0, &allowed) }) { return m }
        }
        if !allowed.isEmpty {
            if allowed.contains(.get) && !allowed.contains(.head) { allowed.append(.head) }
            return .methodNotAllowed(allowed)
        }
        if let f = fallback { return .handler(f, parameters: [:]) }
        return .notFound
    }

    /// The first pattern route that matches the path's bytes and answers `method`; the methods
    /// of the ones that match but do not answer it are added to `allowed`. The path is split at
    /// its slashes (empty segments dropped) into ranges on the stack, and literals are compared
    /// as bytes: the collection algorithms (`split`, `elementsEqual` over UTF-8 views) cost
    /// about 3,000 instructions a request.
    private func matchPattern(
        _ method: HTTPMethod, _ b: UnsafeBufferPointer<UInt8>, _ allowed: inout [HTTPMethod]
    ) -> Match? {
        withUnsafeTemporaryAllocation(of: Range<Int>.self, capacity: maxSegments) { parts -> Match? in
            var count = 0
            var i = 0
            while i < b.count {
                if b[i] == UInt8(ascii: "/") {
                    i += 1
                    continue
                }
                let start = i
                while i < b.count && b[i] != UInt8(ascii: "/") { i += 1 }
                guard count < maxSegments else { return nil }  // more segments than any pattern
                parts.initializeElement(at: count, to: start..<i)
                count += 1
            }
            for r in patterns where r.segments.count == count {
                // The literals first: a route that does not match makes no parameter strings.
                var ok = true
                for k in 0..<count {
                    guard case .literal(let l) = r.segments[k] else { continue }
                    let part = parts[k]
                    if l.count != part.count
                        || !l.withUnsafeBufferPointer({ lb in
                            var j = 0
                            while j < lb.count && lb[j] == b[part.lowerBound + j] { j += 1 }
                            return j == lb.count
                        })
                    {
                        ok = false
                        break
                    }
                }
                guard ok else { continue }
                guard Self.answers(r, method) else {
                    allowed.append(contentsOf: r.methods)
                    continue
                }
                var params = RouteParameters()
                for k in 0..<count {
                    guard case .parameter(let name) = r.segments[k] else { continue }
                    let part = UnsafeBufferPointer(rebasing: b[parts[k]])
                    let text = String(decoding: part, as: UTF8.self)
                    params.set(name, part.contains(37) ? (text.removingPercentEncoding ?? text) : text)
                }
                return .handler(r.handler, parameters: params)
            }
            return nil
        }
    }

    static func answers(_ r: Route, _ m: HTTPMethod) -> Bool {
        r.methods.contains(m) || (m == .head && r.methods.contains(.get))
    }
}

/// A matched route's path parameters by name. A list, not a dictionary: a route has one or
/// two, and a dictionary cost about 1,000 instructions per request to make and read.
public struct RouteParameters: Equatable, ExpressibleByDictionaryLiteral, Sendable {
    struct Pair: Equatable, Sendable {
        let name: String
        var value: String
    }
    private var pairs: [Pair] = []

    public init() {}

    public init(dictionaryLiteral elements: (String, String)...) {
        for (n, v) in elements { set(n, v) }
    }

    public subscript(_ name: String) -> String? {
        for p in pairs where p.name == name { return p.value }
        return nil
    }

    public var isEmpty: Bool { pairs.isEmpty }

    /// `name`'s value; a name set again takes the new one (as a dictionary would).
    mutating func set(_ name: String, _ value: String) {
        if let i = pairs.firstIndex(where: { $0.name == name }) {
            pairs[i].value = value
        } else {
            pairs.append(Pair(name: name, value: value))
        }
    }

    /// Equal when they hold the same names with the same values, in any order.
    public static func == (a: Self, b: Self) -> Bool {
        a.pairs.count == b.pairs.count && a.pairs.allSatisfy { b[$0.name] == $0.value }
    }
}

extension String {
    /// Percent-decoding without Foundation; nil for a malformed escape.
    var removingPercentEncoding: String? {
        guard let bytes = PercentDecoding.decode(Substring(self)) else { return nil }
        return String(decoding: bytes, as: UTF8.self)
    }
}

enum PercentDecoding {
    static func decode(_ s: Substring) -> [UInt8]? {
        var out: [UInt8] = []
        out.reserveCapacity(s.utf8.count)
        var it = s.utf8.makeIterator()
        while let c = it.next() {
            if c == 37 {
                guard let h = it.next(), let l = it.next(), let hv = hex(h), let lv = hex(l) else { return nil }
                out.append(hv << 4 | lv)
            } else {
                out.append(c)
            }
        }
        return out
    }

    static func hex(_ c: UInt8) -> UInt8? {
        switch c {
        case 48...57: return c - 48
        case 97...102: return c - 87
        case 65...70: return c - 55
        default: return nil
        }
    }
}
