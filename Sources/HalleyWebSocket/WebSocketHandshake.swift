import HalleyCore
import HalleyCrypto

/// Which origins may open a connection: `*`, exact origins (`https://app.example.com`), and
/// wildcards for subdomains (`*.example.com`, `https://*.example.com`).
public struct OriginPolicy: Sendable, Equatable {
    public var allowed: [String]

    public init(_ allowed: [String] = ["*"]) { self.allowed = allowed }

    /// A request without `Origin` (not a browser) is allowed: the policy protects browsers'
    /// users from other sites, it is not authentication.
    public func allows(_ origin: String?) -> Bool {
        guard let origin = origin?.lowercased() else { return true }
        let (scheme, hostPort) = Self.split(origin)
        var host = hostPort
        if let colon = host.lastIndex(of: ":"), !host.hasSuffix("]") { host = String(host[..<colon]) }
        for a in allowed.map({ $0.lowercased() }) {
            if a == "*" || a == origin { return true }
            let (pScheme, pHost) = Self.split(a)
            guard pHost.hasPrefix("*.") else { continue }
            if !pScheme.isEmpty && pScheme != scheme { continue }
            let suffix = pHost.dropFirst()  // ".example.com"
            if host.hasSuffix(suffix) && host.count > suffix.count { return true }
        }
        return false
    }
}

extension OriginPolicy {
    /// ("https", "host:port") from "https://host:port"; ("", s) when there is no scheme.
    static func split(_ s: String) -> (String, String) {
        let u = Array(s.utf8)
        var i = 0
        while i + 2 < u.count {
            if u[i] == 58 && u[i + 1] == 47 && u[i + 2] == 47 {
                return (String(decoding: u[..<i], as: UTF8.self), String(decoding: u[(i + 3)...], as: UTF8.self))
            }
            i += 1
        }
        return ("", s)
    }
}

/// The opening handshake (RFC 6455 §4.2), as a pure function of the request.
public enum WebSocketHandshake {
    public struct Endpoint: Sendable {
        /// Subprotocols this endpoint speaks; the first one the client offers wins.
        public var subprotocols: [String] = []
        public var origins = OriginPolicy()
        /// Offer to accept permessage-deflate.
        public var compression = true
        /// Let clients keep their compression context between messages (see
        /// `PerMessageDeflate`); off: they are asked for `client_no_context_takeover`.
        public var clientContextTakeover = false
        public init() {}
    }

    public enum Outcome {
        case accept(headers: [(String, String)], deflate: DeflateParameters?, subprotocol: String?)
        case refuse(status: Int, headers: [(String, String)], reason: String)
    }

    static let guid = Array("258EAFA5-E914-47DA-95CA-C5AB0DC85B11".utf8)

    public static func acceptValue(forKey key: String) -> String {
        Base64.encode(Digest.sha1(Array(key.utf8) + guid))
    }

    /// `values(name)` returns every value of a header, in order.
    public static func evaluate(
        isGet: Bool, minorVersion: Int, values: (String) -> [String], endpoint: Endpoint
    ) -> Outcome {
        func tokens(_ name: String) -> [String] {
            values(name).flatMap { $0.split(separator: ",") }.map { $0.trimmingSpaces().lowercased() }
        }
        let upgradeHeaders: [(String, String)] = [("Upgrade", "websocket"), ("Connection", "Upgrade")]
        guard tokens("upgrade").contains("websocket") else {
            return .refuse(
                status: 426, headers: upgradeHeaders + [("Sec-WebSocket-Version", "13")],
                reason: "not a WebSocket upgrade")
        }
        guard isGet && minorVersion >= 1 else {
            return .refuse(status: 400, headers: [], reason: "upgrade needs GET over HTTP/1.1")
        }
        guard tokens("connection").contains("upgrade") else {
            return .refuse(status: 400, headers: [], reason: "Connection does not list upgrade")
        }
        let versions = values("sec-websocket-version")
        guard versions.count == 1, versions[0].trimmingSpaces() == "13" else {
            return .refuse(
                status: 426, headers: [("Sec-WebSocket-Version", "13")], reason: "unsupported WebSocket version")
        }
        let keys = values("sec-websocket-key")
        guard keys.count == 1, let raw = Base64.decode(keys[0].trimmingSpaces()), raw.count == 16 else {
            return .refuse(status: 400, headers: [], reason: "bad Sec-WebSocket-Key")
        }
        let origins = values("origin")
        guard origins.count <= 1, endpoint.origins.allows(origins.first) else {
            return .refuse(status: 403, headers: [], reason: "origin \(origins.first ?? "") not allowed")
        }
        var headers = upgradeHeaders
        headers.append(("Sec-WebSocket-Accept", acceptValue(forKey: keys[0].trimmingSpaces())))
        var chosen: String? = nil
        let offered = values("sec-websocket-protocol").flatMap { $0.split(separator: ",") }.map { $0.trimmingSpaces() }
        if let p = offered.first(where: { endpoint.subprotocols.contains($0) }) {
            chosen = p
            headers.append(("Sec-WebSocket-Protocol", p))
        }
        var deflate: DeflateParameters? = nil
        if endpoint.compression,
            let d = PerMessageDeflate.negotiate(
                values("sec-websocket-extensions"), clientContextTakeover: endpoint.clientContextTakeover)
        {
            deflate = d
            headers.append(("Sec-WebSocket-Extensions", d.responseHeader))
        }
        return .accept(headers: headers, deflate: deflate, subprotocol: chosen)
    }
}
