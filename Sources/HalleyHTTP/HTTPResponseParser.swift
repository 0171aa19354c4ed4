import HalleyCore

/// A response read by the hub's own HTTP client (webhooks).
public struct HTTPClientResponse: Sendable {
    public var status: Int
    public var reason: String
    /// 0 for HTTP/1.0, 1 for HTTP/1.1.
    public var minorVersion: Int
    public var headers: HTTPHeaders
    public var body: [UInt8]
}

/// Why a response could not be read. The client treats each as a failed request.
public enum HTTPResponseParseError: Error, Sendable, Equatable, CustomStringConvertible {
    /// Not HTTP/1.x, or a malformed status line, field, length or chunk.
    case malformed(String)
    /// The head (status line and fields) or a trailer section is longer than `maxHeadBytes`.
    case headTooLarge
    /// The body is longer than `maxBodyBytes`.
    case bodyTooLarge
    /// The connection ended before the response did.
    case truncated

    public var description: String {
        switch self {
        case .malformed(let why): return "malformed response: \(why)"
        case .headTooLarge: return "response head too large"
        case .bodyTooLarge: return "response body too large"
        case .truncated: return "connection closed before the response ended"
        }
    }
}

/// An incremental HTTP/1.1 response parser (RFC 9112): status line, fields, and a body framed
/// by Content-Length, chunked transfer coding, or the end of the connection. Bytes in,
/// one response out; no sockets. Interim 1xx responses (a `100 Continue`) are skipped.
/// Lines may end in CRLF or a bare LF (RFC 9112 §2.2 lets a recipient accept LF).
public struct HTTPResponseParser {
    public struct Limits: Sendable {
        /// Bytes of the status line and fields (and, separately, of a trailer section).
        /// Default 16 KiB.
        public var maxHeadBytes = 16 * 1024
        /// Bytes of the body kept. Default 1 MiB; longer: `bodyTooLarge`.
        public var maxBodyBytes = 1 << 20
        public init() {}
    }

    enum State {
        case statusLine
        case fields
        case body(remaining: Int)
        case chunkSize
        case chunkData(remaining: Int)
        case chunkDataEnd(sawCR: Bool)
        case trailers
        case untilClose
        case done
    }

    /// Longest chunk-size line (size, extensions). A peer that sends more is not serving us.
    static let maxChunkLine = 1024

    let limits: Limits
    /// A response to HEAD has no body whatever its fields say (RFC 9112 §6.3).
    let requestWasHead: Bool
    var state = State.statusLine
    var line: [UInt8] = []
    var sectionBytes = 0
    var status = 0
    var reason = ""
    var minor = 1
    var fields: [(String, String)] = []
    var body: [UInt8] = []

    public init(limits: Limits = Limits(), requestWasHead: Bool = false) {
        self.limits = limits
        self.requestWasHead = requestWasHead
    }

    public var isComplete: Bool {
        if case .done = state { return true }
        return false
    }

    var response: HTTPClientResponse {
        HTTPClientResponse(
            status: status, reason: reason, minorVersion: minor, headers: HTTPHeaders(fields), body: body)
    }

    /// Consumes `bytes`; returns the response once it is complete (and again on later calls,
    /// which ignore their bytes: with `Connection: close` nothing should follow).
    public mutating func feed(_ bytes: UnsafeRawBufferPointer) throws(HTTPResponseParseError) -> HTTPClientResponse? {
        var i = 0
        while i < bytes.count {
            switch state {
            case .done:
                return response
            case .statusLine, .fields, .trailers, .chunkSize:
                let limit: Int
                if case .chunkSize = state { limit = Self.maxChunkLine } else { limit = limits.maxHeadBytes }
                var end = i
                while end < bytes.count && bytes[end] != 10 { end += 1 }
                sectionBytes += end - i + (end < bytes.count ? 1 : 0)
                if sectionBytes > limit {
                    if case .chunkSize = state { throw .malformed("chunk size line too long") }
                    throw .headTooLarge
                }
                line.append(contentsOf: UnsafeRawBufferPointer(rebasing: bytes[i..<end]))
                if end == bytes.count { return nil }
                i = end + 1
                if line.last == 13 { line.removeLast() }
                let l = line
                line.removeAll(keepingCapacity: true)
                try endOfLine(l)
            case .body(let remaining):
                let n = min(remaining, bytes.count - i)
                try keep(UnsafeRawBufferPointer(rebasing: bytes[i..<(i + n)]))
                i += n
                state = remaining == n ? .done : .body(remaining: remaining - n)
            case .chunkData(let remaining):
                let n = min(remaining, bytes.count - i)
                try keep(UnsafeRawBufferPointer(rebasing: bytes[i..<(i + n)]))
                i += n
                state = remaining == n ? .chunkDataEnd(sawCR: false) : .chunkData(remaining: remaining - n)
            case .chunkDataEnd(let sawCR):
                // RFC 9112 §7.1: chunk-data is followed by CRLF.
                let c = bytes[i]
                i += 1
                if c == 10 {
                    state = .chunkSize
                    sectionBytes = 0
                } else if c == 13 && !sawCR {
                    state = .chunkDataEnd(sawCR: true)
                } else {
                    throw .malformed("chunk data not followed by CRLF")
                }
            case .untilClose:
                try keep(UnsafeRawBufferPointer(rebasing: bytes[i...]))
                i = bytes.count
            }
        }
        return isComplete ? response : nil
    }

    /// The status and fields, once the head is read (a relay streams the body after it).
    public var head: (status: Int, headers: HTTPHeaders)? {
        switch state {
        case .statusLine, .fields: return nil
        default: return (status, HTTPHeaders(fields))
        }
    }

    /// The body bytes read and not taken yet (chunk framing removed), taken: a relay passes
    /// them on as they come, so `maxBodyBytes` bounds what waits, not the whole body.
    public mutating func takeBody() -> [UInt8] {
        defer { body.removeAll(keepingCapacity: true) }
        return body
    }

    public mutating func feed(_ bytes: [UInt8]) throws(HTTPResponseParseError) -> HTTPClientResponse? {
        let r: Result<HTTPClientResponse?, HTTPResponseParseError> = bytes.withUnsafeBytes { b in
            do throws(HTTPResponseParseError) { return .success(try feed(b)) } catch { return .failure(error) }
        }
        return try r.get()
    }

    /// The peer closed the connection: completes a body delimited by the close (RFC 9112
    /// §6.3 item 8); anything else unfinished is `truncated`.
    public mutating func finish() throws(HTTPResponseParseError) -> HTTPClientResponse {
        switch state {
        case .untilClose, .done:
            state = .done
            return response
        default:
            throw .truncated
        }
    }

    mutating func keep(_ b: UnsafeRawBufferPointer) throws(HTTPResponseParseError) {
        guard body.count + b.count <= limits.maxBodyBytes else { throw .bodyTooLarge }
        body.append(contentsOf: b)
    }

    mutating func endOfLine(_ l: [UInt8]) throws(HTTPResponseParseError) {
        switch state {
        case .statusLine:
            try statusLine(l)
            state = .fields
        case .fields:
            if l.isEmpty { try endOfHead() } else { try field(l) }
        case .trailers:
            // Trailer fields are read and dropped; the empty line ends the message.
            if l.isEmpty { state = .done }
        case .chunkSize:
            try chunkSize(l)
        default:
            preconditionFailure("endOfLine in a body state")
        }
    }

    // RFC 9112 §4: status-line = HTTP-version SP status-code SP [ reason-phrase ]
    mutating func statusLine(_ l: [UInt8]) throws(HTTPResponseParseError) {
        let prefix = Array("HTTP/1.".utf8)
        guard l.count >= 12, Array(l[0..<7]) == prefix, l[8] == 32 else { throw .malformed("bad status line") }
        switch l[7] {
        case UInt8(ascii: "0"): minor = 0
        case UInt8(ascii: "1"): minor = 1
        default: throw .malformed("bad status line")
        }
        var code = 0
        for c in l[9..<12] {
            guard HTTPChars.isDigit(c) else { throw .malformed("bad status code") }
            code = code * 10 + Int(c - 48)
        }
        guard code >= 100 else { throw .malformed("bad status code") }
        if l.count > 12 {
            guard l[12] == 32 else { throw .malformed("bad status line") }
            guard l[13...].allSatisfy(HTTPChars.isFieldValue) else { throw .malformed("bad reason phrase") }
            reason = String(decoding: l[13...], as: UTF8.self)
        } else {
            reason = ""
        }
        status = code
    }

    // RFC 9112 §5: field-line = field-name ":" OWS field-value OWS
    mutating func field(_ l: [UInt8]) throws(HTTPResponseParseError) {
        // RFC 9112 §5.2: obs-fold (a line starting with whitespace) is refused.
        guard let colon = l.firstIndex(of: 58), colon > 0 else { throw .malformed("bad field line") }
        guard l[..<colon].allSatisfy(HTTPChars.isToken) else { throw .malformed("bad field name") }
        var s = colon + 1
        var e = l.count
        while s < e && (l[s] == 32 || l[s] == 9) { s += 1 }
        while e > s && (l[e - 1] == 32 || l[e - 1] == 9) { e -= 1 }
        guard l[s..<e].allSatisfy(HTTPChars.isFieldValue) else { throw .malformed("bad field value") }
        fields.append((String(decoding: l[..<colon], as: UTF8.self), String(decoding: l[s..<e], as: UTF8.self)))
    }

    /// Body framing of a response, RFC 9112 §6.3.
    mutating func endOfHead() throws(HTTPResponseParseError) {
        sectionBytes = 0
        if status < 200 && status != 101 {
            // An interim response: the real one follows.
            fields.removeAll()
            state = .statusLine
            return
        }
        if requestWasHead || status == 101 || status == 204 || status == 304 {
            state = .done
            return
        }
        let h = HTTPHeaders(fields)
        let codings = h.values("transfer-encoding").flatMap { $0.split(separator: ",") }
            .map { $0.trimmingSpaces().lowercased() }.filter { !$0.isEmpty }
        if !codings.isEmpty {
            // Chunked last: chunked framing. Any other final coding: the body runs to the close.
            state = codings.last == "chunked" ? .chunkSize : .untilClose
            return
        }
        let lengths = h.values("content-length").flatMap { $0.split(separator: ",") }
            .map { $0.trimmingSpaces() }
        if let first = lengths.first {
            guard lengths.allSatisfy({ $0 == first }),
                let n = Array(first.utf8).withUnsafeBytes({ HTTPChars.decimal($0) })
            else {
                throw .malformed("bad Content-Length")
            }
            guard n <= limits.maxBodyBytes else { throw .bodyTooLarge }
            state = n == 0 ? .done : .body(remaining: n)
            return
        }
        state = .untilClose
    }

    // RFC 9112 §7.1: chunk-size [ chunk-ext ] CRLF; chunk-size = 1*HEXDIG
    mutating func chunkSize(_ l: [UInt8]) throws(HTTPResponseParseError) {
        var size = 0
        var i = 0
        while i < l.count, let d = HTTPChars.hexValue(l[i]) {
            guard size < (1 << 40) else { throw .malformed("chunk size too large") }
            size = size << 4 | Int(d)
            i += 1
        }
        guard i > 0 else { throw .malformed("bad chunk size") }
        while i < l.count && (l[i] == 32 || l[i] == 9) { i += 1 }
        guard i == l.count || l[i] == UInt8(ascii: ";") else { throw .malformed("bad chunk size") }
        sectionBytes = 0
        if size == 0 {
            state = .trailers
        } else {
            guard body.count + size <= limits.maxBodyBytes else { throw .bodyTooLarge }
            state = .chunkData(remaining: size)
        }
    }
}
