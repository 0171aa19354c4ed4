#if canImport(Glibc)
import Glibc
#endif

/// An incremental HTTP/1.1 request parser (RFC 9112). It does no I/O: the caller hands it the
/// bytes it has, it answers with what they hold.
///
/// A head is parsed only once it is complete, so until then the parser consumes nothing and
/// the caller keeps the bytes and presents them again with more appended; the parser remembers
/// how far it has already scanned, so a head that arrives byte by byte costs linear time.
/// Body bytes are handed back as ranges of the caller's buffer, never copied.
public struct HTTPRequestParser: Sendable {
    public enum Result: Sendable {
        /// `consumed` bytes were used up; present the rest again, with more, later.
        case needMore(consumed: Int)
        /// A complete head; `consumed` bytes (the head and any empty lines before it).
        case head(HTTPRequestHead, consumed: Int)
        /// Body bytes at `range` of the buffer given.
        case body(Range<Int>, consumed: Int)
        /// The message is complete.
        case end(consumed: Int)
        /// The request is refused; the parser stays failed.
        case error(HTTPParseError)
    }

    enum State: Sendable {
        case head
        case endPending
        case fixedBody(remaining: Int)
        case chunkSize
        case chunkSizeSpace
        case chunkExtension
        case chunkSizeLF
        case chunkData(remaining: Int)
        case chunkDataCR
        case chunkDataLF
        case trailerLineStart
        case trailerLine
        case trailerLineLF
        case trailerEndLF
        case failed(HTTPParseError)
    }

    public let limits: HTTPLimits
    var state: State = .head
    // Head scan progress, relative to the first byte of the pending head.
    var scanned = 0
    var requestLineEnd = -1
    // Chunked body progress.
    var chunkSize = 0
    var chunkDigits = 0
    var extensionBytes = 0
    var trailerBytes = 0
    var bodyBytes = 0

    public init(limits: HTTPLimits = HTTPLimits()) {
        self.limits = limits
    }

    /// True between messages with nothing of the next one seen yet.
    public var isIdle: Bool {
        if case .head = state { return scanned == 0 }
        return false
    }

    public var isInBody: Bool {
        switch state {
        case .head, .endPending, .failed: return false
        default: return true
        }
    }

    public mutating func parse(_ buffer: UnsafeRawBufferPointer) -> Result {
        switch state {
        case .failed(let e):
            return .error(e)
        case .head:
            return parseHead(buffer)
        case .endPending:
            state = .head
            return .end(consumed: 0)
        case .fixedBody(let remaining):
            guard buffer.count > 0 else { return .needMore(consumed: 0) }
            let n = min(remaining, buffer.count)
            if n == remaining { state = .endPending } else { state = .fixedBody(remaining: remaining - n) }
            return .body(0..<n, consumed: n)
        default:
            return parseChunked(buffer)
        }
    }

    mutating func fail(_ e: HTTPParseError) -> Result {
        state = .failed(e)
        return .error(e)
    }

    // MARK: head

    mutating func parseHead(_ buf: UnsafeRawBufferPointer) -> Result {
        // RFC 9112 §2.2: a server SHOULD ignore at least one empty line received before the
        // request line. Skip them (they are consumed) only before anything else was seen.
        var start = 0
        if scanned == 0 {
            while start + 1 < buf.count && buf[start] == 13 && buf[start + 1] == 10 { start += 2 }
            if start < buf.count && buf[start] == 10 { return fail(.badRequest("bare LF")) }
            if start + 1 == buf.count && buf[start] == 13 { return .needMore(consumed: start) }
        }
        let avail = buf.count - start
        var i = scanned
        while i < avail {
            // memchr to the next LF, short of the first byte a limit check below could refuse
            // (that one goes through the checks): the same answers as a byte-at-a-time scan.
            let cap =
                requestLineEnd < 0
                ? min(limits.maxHeaderBytes, limits.maxRequestLineBytes + 1) : limits.maxHeaderBytes
            let end = min(avail, cap)
            if i < end {
                let from = buf.baseAddress! + start + i
                guard let lf = memchr(from, 10, end - i) else {
                    i = end
                    continue
                }
                i += from.distance(to: UnsafeRawPointer(lf))
            }
            let c = buf[start + i]
            if c == 10 {
                if i == 0 || buf[start + i - 1] != 13 { return fail(.badRequest("bare LF")) }
                if requestLineEnd < 0 {
                    requestLineEnd = i - 1
                    if requestLineEnd > limits.maxRequestLineBytes { return fail(.uriTooLong) }
                    if requestLineEnd == 0 { return fail(.badRequest("empty request line")) }
                } else if i >= 3 && buf[start + i - 2] == 10 {
                    // "\r\n\r\n": the head ends here.
                    let headLength = i + 1
                    if headLength > limits.maxHeaderBytes { return fail(.headersTooLarge) }
                    let head = UnsafeRawBufferPointer(rebasing: buf[start..<(start + headLength)])
                    switch parseCompleteHead(head, requestLineEnd: requestLineEnd) {
                    case .failure(let e):
                        return fail(e)
                    case .success(let h):
                        scanned = 0
                        requestLineEnd = -1
                        if h.isChunked {
                            bodyBytes = 0
                            chunkSize = 0
                            chunkDigits = 0
                            extensionBytes = 0
                            state = .chunkSize
                        } else if let cl = h.contentLength, cl > 0 {
                            state = .fixedBody(remaining: cl)
                        } else {
                            state = .endPending
                        }
                        return .head(h, consumed: start + headLength)
                    }
                }
            }
            i += 1
            if requestLineEnd < 0 && i > limits.maxRequestLineBytes + 1 { return fail(.uriTooLong) }
            if i > limits.maxHeaderBytes { return fail(.headersTooLarge) }
        }
        scanned = i
        // Consume the skipped empty lines only while nothing else has been seen, so that the
        // scan offset stays relative to the head's first byte.
        if avail == 0 { return .needMore(consumed: start) }
        if start > 0 { scanned = 0; requestLineEnd = -1; return .needMore(consumed: start) }
        return .needMore(consumed: 0)
    }

    func parseCompleteHead(
        _ head: UnsafeRawBufferPointer, requestLineEnd: Int
    ) -> Swift.Result<HTTPRequestHead, HTTPParseError> {
        // Request line: method SP target SP version (RFC 9112 §3).
        var p = 0
        while p < requestLineEnd && HTTPChars.isToken(head[p]) { p += 1 }
        if p == 0 || p >= requestLineEnd || head[p] != 32 { return .failure(.badRequest("bad method")) }
        let method = HTTPMethod(bytes: UnsafeRawBufferPointer(rebasing: head[0..<p]))
        p += 1
        let targetStart = p
        // Eight bytes at a time while every one is visible ASCII (a signed API request's
        // target is about 200 bytes), then byte by byte.
        while p + 8 <= requestLineEnd,
            HTTPChars.wordIsTargetText(head.loadUnaligned(fromByteOffset: p, as: UInt64.self))
        {
            p += 8
        }
        while p < requestLineEnd && head[p] > 32 && head[p] < 127 { p += 1 }
        if p == targetStart || p >= requestLineEnd || head[p] != 32 {
            return .failure(.badRequest("bad request target"))
        }
        let targetBytes = UnsafeRawBufferPointer(rebasing: head[targetStart..<p])
        p += 1
        let version = UnsafeRawBufferPointer(rebasing: head[p..<requestLineEnd])
        guard let minor = versionOf(version) else { return .failure(.badRequest("bad HTTP version")) }
        if minor < 0 { return .failure(.versionNotSupported) }

        guard let target = normalizeTarget(targetBytes, method: method) else {
            return .failure(.badRequest("bad request target"))
        }

        // Header fields (RFC 9112 §5).
        let bytes = Array(head)
        var fields: [HTTPHeaders.Field] = []
        fields.reserveCapacity(min(limits.maxHeaderCount, 16))  // one allocation, not four as it grows
        var contentLength: Int? = nil
        var transferEncoding: [String] = []
        var sawTE = false
        var hostCount = 0
        var connectionClose = false
        var connectionKeepAlive = false
        var expectsContinue = false
        var line = requestLineEnd + 2
        let headEnd = head.count - 2  // the final empty line
        let headBase = head.baseAddress!
        while line < headEnd {
            // The scan guaranteed CRLF-terminated lines: memchr finds this one's CR.
            let e = headBase.distance(to: UnsafeRawPointer(memchr(headBase + line, 13, headEnd + 1 - line)!))
            if e + 1 >= head.count || head[e + 1] != 10 { return .failure(.badRequest("bare CR")) }
            if head[line] == 32 || head[line] == 9 { return .failure(.badRequest("obsolete line folding")) }
            var n = line
            while n < e && HTTPChars.isToken(head[n]) { n += 1 }
            if n == line || n >= e || head[n] != 58 { return .failure(.badRequest("bad header name")) }
            var vs = n + 1
            while vs < e && (head[vs] == 32 || head[vs] == 9) { vs += 1 }
            var ve = e
            while ve > vs && (head[ve - 1] == 32 || head[ve - 1] == 9) { ve -= 1 }
            var k = vs
            while k + 8 <= ve,
                HTTPChars.wordIsPlainFieldValue(headBase.loadUnaligned(fromByteOffset: k, as: UInt64.self))
            {
                k += 8
            }
            while k < ve {
                if !HTTPChars.isFieldValue(head[k]) { return .failure(.badRequest("bad character in header value")) }
                k += 1
            }
            if fields.count == limits.maxHeaderCount { return .failure(.headersTooLarge) }
            let field = HTTPHeaders.Field(
                nameStart: UInt32(line), nameCount: UInt32(n - line),
                valueStart: UInt32(vs), valueCount: UInt32(ve - vs))
            fields.append(field)
            let name = UnsafeRawBufferPointer(rebasing: head[line..<n])
            let value = UnsafeRawBufferPointer(rebasing: head[vs..<ve])
            switch n - line {
            case 4 where HTTPChars.equalsLower(name, "host"):
                hostCount += 1
            case 6 where HTTPChars.equalsLower(name, "expect"):
                if HTTPChars.equalsLower(value, "100-continue") {
                    expectsContinue = true
                } else {
                    return .failure(.expectationFailed)
                }
            case 10 where HTTPChars.equalsLower(name, "connection"):
                for token in HTTPChars.tokens(value) {
                    if token == "close" { connectionClose = true }
                    if token == "keep-alive" { connectionKeepAlive = true }
                }
            case 14 where HTTPChars.equalsLower(name, "content-length"):
                // RFC 9112 §6.3: duplicate or conflicting lengths are a smuggling vector.
                if contentLength != nil { return .failure(.badRequest("duplicate Content-Length")) }
                guard let v = HTTPChars.decimal(value) else { return .failure(.badRequest("bad Content-Length")) }
                contentLength = v
            case 17 where HTTPChars.equalsLower(name, "transfer-encoding"):
                sawTE = true
                transferEncoding.append(contentsOf: HTTPChars.tokens(value))
            default:
                break
            }
            line = e + 2
        }

        var chunked = false
        if sawTE {
            // RFC 9112 §6.1: TE with CL is a smuggling attempt; TE on 1.0 is faulty framing.
            if contentLength != nil { return .failure(.badRequest("Content-Length with Transfer-Encoding")) }
            if minor == 0 { return .failure(.badRequest("Transfer-Encoding in HTTP/1.0")) }
            if transferEncoding == ["chunked"] {
                chunked = true
            } else if let i = transferEncoding.firstIndex(of: "chunked"), i != transferEncoding.count - 1 {
                return .failure(.badRequest("chunked is not the final transfer coding"))
            } else if transferEncoding.isEmpty {
                return .failure(.badRequest("empty Transfer-Encoding"))
            } else {
                return .failure(.notImplemented("Transfer-Encoding \(transferEncoding.joined(separator: ", "))"))
            }
        }
        if let cl = contentLength, cl > limits.maxBodyBytes { return .failure(.contentTooLarge) }
        // RFC 9112 §3.2: a 1.1 request without exactly one Host gets 400.
        if minor == 1 && hostCount != 1 {
            return .failure(.badRequest(hostCount == 0 ? "missing Host" : "duplicate Host"))
        }
        if minor == 0 && hostCount > 1 { return .failure(.badRequest("duplicate Host")) }

        let keepAlive = minor == 1 ? !connectionClose : (connectionKeepAlive && !connectionClose)
        return .success(
            HTTPRequestHead(
                method: method, target: target, minorVersion: minor,
                headers: HTTPHeaders(bytes: bytes, fields: fields),
                contentLength: chunked ? nil : contentLength, isChunked: chunked,
                keepAlive: keepAlive,
                // RFC 9110 §10.1.1: a server MUST ignore 100-continue in an HTTP/1.0 request.
                expectsContinue: expectsContinue && minor == 1 && (chunked || (contentLength ?? 0) > 0)))
    }

    /// 1 or 0 for HTTP/1.1 and 1.0; -1 for another well-formed version (505); nil when the
    /// version is malformed (400).
    func versionOf(_ v: UnsafeRawBufferPointer) -> Int? {
        guard v.count == 8, v[0] == 72, v[1] == 84, v[2] == 84, v[3] == 80, v[4] == 47,
            HTTPChars.isDigit(v[5]), v[6] == 46, HTTPChars.isDigit(v[7])
        else { return nil }
        if v[5] == 49 && v[7] == 49 { return 1 }
        if v[5] == 49 && v[7] == 48 { return 0 }
        return -1
    }

    func normalizeTarget(_ t: UnsafeRawBufferPointer, method: HTTPMethod) -> String? {
        if t[0] == 47 { return String(decoding: t, as: UTF8.self) }  // origin-form
        if t.count == 1 && t[0] == 42 { return method == .options ? "*" : nil }  // asterisk-form
        // absolute-form (RFC 9112 §3.2.2): keep path and query.
        let s = String(decoding: t, as: UTF8.self)
        let lower = s.lowercased()
        guard lower.hasPrefix("http://") || lower.hasPrefix("https://") else { return nil }
        let afterScheme = s.index(s.startIndex, offsetBy: lower.hasPrefix("http://") ? 7 : 8)
        let rest = s[afterScheme...]
        guard let slash = rest.firstIndex(where: { $0 == "/" || $0 == "?" }) else { return "/" }
        let pathAndQuery = String(rest[slash...])
        return pathAndQuery.hasPrefix("?") ? "/" + pathAndQuery : pathAndQuery
    }
}
