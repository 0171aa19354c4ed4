import HalleyHTTP
import HalleyWebSocket

public typealias RouteHandler = @Sendable (HTTPRequest, Responder) -> Void

/// Maps a method and path to a handler: exact paths by one hash lookup, then patterns with
/// `{name}` segments (`/app/{key}`) in the order they were added, then the fallback (static
/// files). Filled before the loops start and only read after, from every loop.
public final class Router: @unchecked Sendable {
    // @unchecked Sendable: routes are added before the loops start, then only read.
    enum Segment {
        case literal(Substring)
        case parameter(String)
    }

    struct Route {
        let methods: [HTTPMethod]
        let segments: [Segment]
        let handler: RouteHandler
    }

    public enum Match {
        case handler(RouteHandler, parameters: [String: String])
        /// The path exists but not for this method; the allowed methods for `Allow`.
        case methodNotAllowed([HTTPMethod])
        case notFound
    }

    private var exact: [Substring: [Route]] = [:]
    private var patterns: [Route] = []
    public var fallback: RouteHandler?

    public init() {}

    /// Adds a route. `pattern` is a path whose segments may be `{name}` parameters; `methods`
    /// lists the methods it answers (GET implies HEAD unless HEAD is routed separately).
    public func add(_ methods: [HTTPMethod], _ pattern: String, _ handler: @escaping RouteHandler) {
        let segments: [Segment] = pattern.split(separator: "/", omittingEmptySubsequences: true).map { s in
            if s.hasPrefix("{") && s.hasSuffix("}") { return .parameter(String(s.dropFirst().dropLast())) }
            return .literal(s)
        }
        let route = Route(methods: methods, segments: segments, handler: handler)
        if segments.allSatisfy({ if case .literal = $0 { return true } else { return false } }) {
            exact[Substring(pattern), default: []].append(route)
        } else {
            patterns.append(route)
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
            // Split as bytes: a Substring's own split walks Characters (grapheme breaking).
            let parts = path.utf8.split(separator: UInt8(ascii: "/"), omittingEmptySubsequences: true)
            for r in patterns where r.segments.count == parts.count {
                // The literals first: a route that does not match makes no parameter strings.
                var ok = true
                for (seg, part) in zip(r.segments, parts) {
                    if case .literal(let l) = seg, !l.utf8.elementsEqual(part) {
                        ok = false
                        break
                    }
                }
                guard ok else { continue }
                guard Self.answers(r, method) else {
                    allowed.append(contentsOf: r.methods)
                    continue
                }
                var params: [String: String] = [:]
                for (seg, part) in zip(r.segments, parts) {
                    guard case .parameter(let name) = seg else { continue }
                    let text = String(Substring(part))
                    params[name] = part.contains(37) ? (text.removingPercentEncoding ?? text) : text
                }
                return .handler(r.handler, parameters: params)
            }
        }
        if !allowed.isEmpty {
            if allowed.contains(.get) && !allowed.contains(.head) { allowed.append(.head) }
            return .methodNotAllowed(allowed)
        }
        if let f = fallback { return .handler(f, parameters: [:]) }
        return .notFound
    }

    static func answers(_ r: Route, _ m: HTTPMethod) -> Bool {
        r.methods.contains(m) || (m == .head && r.methods.contains(.get))
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
