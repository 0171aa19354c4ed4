/// An `http://host[:port][/path][?query]` URL, as the hub's own HTTP client needs it
/// (webhooks). The host is an IPv4 address, a bracketed IPv6 address, or a name.
/// `https` is refused: there is no TLS client yet.
public struct HTTPURL: Sendable, Equatable, CustomStringConvertible {
    /// Without brackets for IPv6.
    public let host: String
    public let port: Int
    /// Path and query, at least "/".
    public let target: String
    /// The `Host` field: the host as written (brackets kept), and the port unless 80.
    public let hostField: String

    public var description: String { "http://\(hostField)\(target)" }

    public struct ParseError: Error, Equatable, Sendable, CustomStringConvertible {
        public let description: String
    }

    public init(_ s: String) throws(ParseError) {
        func fail(_ why: String) -> ParseError { ParseError(description: why) }
        let b = Array(s.utf8)
        guard b.allSatisfy({ $0 > 32 && $0 < 127 }) else {
            throw fail("expected a URL without spaces or control characters")
        }
        let lower = s.lowercased()
        if lower.hasPrefix("https://") { throw fail("https is not supported yet (no TLS client): use http://") }
        guard lower.hasPrefix("http://") else { throw fail("expected http://host[:port]/path") }
        var rest = b[7...]
        if rest.contains(UInt8(ascii: "#")) { throw fail("a URL with a #fragment") }
        let authorityEnd =
            rest.firstIndex(where: { $0 == UInt8(ascii: "/") || $0 == UInt8(ascii: "?") }) ?? rest.endIndex
        let authority = rest[..<authorityEnd]
        rest = rest[authorityEnd...]
        if authority.contains(UInt8(ascii: "@")) { throw fail("user information in a URL is not supported") }
        var host: ArraySlice<UInt8>
        var portText: ArraySlice<UInt8>?
        if authority.first == UInt8(ascii: "[") {
            guard let close = authority.firstIndex(of: UInt8(ascii: "]")) else { throw fail("unclosed [ in the host") }
            host = authority[(authority.startIndex + 1)..<close]
            let after = authority[(close + 1)...]
            if !after.isEmpty {
                guard after.first == UInt8(ascii: ":") else { throw fail("expected :port after ]") }
                portText = after.dropFirst()
            }
            guard host.contains(UInt8(ascii: ":")) else { throw fail("expected an IPv6 address in brackets") }
        } else {
            if let colon = authority.firstIndex(of: UInt8(ascii: ":")) {
                host = authority[..<colon]
                portText = authority[(colon + 1)...]
            } else {
                host = authority
            }
            guard host.allSatisfy({ HTTPChars.isToken($0) && $0 != UInt8(ascii: "%") }) else { throw fail("bad host") }
        }
        guard !host.isEmpty else { throw fail("expected a host") }
        var port = 80
        if let p = portText {
            guard !p.isEmpty, p.count <= 5, p.allSatisfy(HTTPChars.isDigit),
                let v = Int(String(decoding: p, as: UTF8.self)),
                v >= 1, v <= 65535
            else { throw fail("expected a port from 1 to 65535") }
            port = v
        }
        self.host = String(decoding: host, as: UTF8.self)
        self.port = port
        let t = String(decoding: rest, as: UTF8.self)
        target = t.isEmpty ? "/" : (t.hasPrefix("?") ? "/" + t : t)
        let written = authority.first == UInt8(ascii: "[") ? "[\(self.host)]" : self.host
        hostField = port == 80 ? written : "\(written):\(port)"
    }

    /// The bytes of one request to this URL with `Content-Length` and `Connection: close`
    /// (one request per connection: webhooks send about one a second per URL).
    public func request(method: String, fields: [(String, String)], body: [UInt8]) -> [UInt8] {
        var head = "\(method) \(target) HTTP/1.1\r\nHost: \(hostField)\r\n"
        for (n, v) in fields { head += "\(n): \(v)\r\n" }
        head += "Content-Length: \(body.count)\r\nConnection: close\r\n\r\n"
        return Array(head.utf8) + body
    }
}
