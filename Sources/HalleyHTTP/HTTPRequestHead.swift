/// A parsed request line and header block, with the framing facts the server needs already
/// worked out by the parser.
public struct HTTPRequestHead: Sendable {
    public var method: HTTPMethod
    /// The request target as sent (origin-form, or `*`); an absolute-form target is reduced to
    /// its path and query.
    public var target: String
    /// 0 for HTTP/1.0, 1 for HTTP/1.1.
    public var minorVersion: Int
    public var headers: HTTPHeaders
    /// Body length from Content-Length; nil when chunked or absent.
    public var contentLength: Int?
    public var isChunked: Bool
    /// Whether the connection may carry another request after this one (RFC 9112 §9.3).
    public var keepAlive: Bool
    /// `Expect: 100-continue` was sent.
    public var expectsContinue: Bool

    /// The path part of the target, still percent-encoded.
    public var path: Substring {
        if let q = queryMark { return target[..<q] }
        return target[...]
    }

    /// The query part after `?`, without it; nil when there is none.
    public var query: Substring? {
        guard let q = queryMark else { return nil }
        return target[target.utf8.index(after: q)...]
    }

    /// Where the `?` is: found in the target's own bytes (every request reads its path, many
    /// their query; the collection algorithm over the UTF-8 view cost ten times more).
    var queryMark: String.Index? {
        var t = target  // `withUTF8` is mutating; a native string is not copied
        let offset = t.withUTF8 { b -> Int? in
            for i in b.indices where b[i] == UInt8(ascii: "?") { return i }
            return nil
        }
        return offset.map { target.utf8.index(target.utf8.startIndex, offsetBy: $0) }
    }

    /// An empty head (no target, no header): what a connection holds between requests. An
    /// optional head was destroyed through generic value witnesses, twice per request.
    public static var placeholder: HTTPRequestHead {
        HTTPRequestHead(
            method: .get, target: "", minorVersion: 1, headers: HTTPHeaders(bytes: [], fields: []), contentLength: nil,
            isChunked: false, keepAlive: false, expectsContinue: false)
    }

    /// Whether the request has a body to read.
    public var hasBody: Bool { isChunked || (contentLength ?? 0) > 0 }
}
