#if canImport(Glibc)
import Glibc
#endif

// Pure parsers over raw bytes (no sockets), checked by `halley-fanout --self-test`.

// MARK: WebSocket frames (RFC 6455 §5.2), server to client

enum FrameHeader {
    case incomplete
    case frame(fin: Bool, opcode: UInt8, headerLength: Int, payloadLength: Int)
    case invalid(String)
}

/// The header of the frame at `p` (`n` bytes available). A server frame must not be masked;
/// RSV bits must be clear (this client offers no extension).
@inline(__always)
func parseFrameHeader(_ p: UnsafePointer<UInt8>, _ n: Int) -> FrameHeader {
    if n < 2 { return .incomplete }
    let b0 = p[0], b1 = p[1]
    if b1 & 0x80 != 0 { return .invalid("masked frame from the server") }
    if b0 & 0x70 != 0 { return .invalid("RSV bits set (0x\(String(b0, radix: 16))) without an extension") }
    let op = b0 & 0x0F
    let fin = b0 & 0x80 != 0
    var len = Int(b1 & 0x7F)
    var h = 2
    if len == 126 {
        if n < 4 { return .incomplete }
        len = Int(p[2]) << 8 | Int(p[3])
        h = 4
        if len < 126 { return .invalid("16-bit length \(len) not minimal") }
    } else if len == 127 {
        if n < 10 { return .incomplete }
        var v: UInt64 = 0
        for j in 2..<10 { v = v << 8 | UInt64(p[j]) }
        if v >> 63 != 0 { return .invalid("64-bit length with the top bit set") }
        if v < 65536 { return .invalid("64-bit length \(v) not minimal") }
        if v > 64 << 20 { return .invalid("frame of \(v) bytes") }
        len = Int(v)
        h = 10
    }
    switch op {
    case 0, 1, 2: break
    case 8, 9, 10:
        if !fin || len > 125 { return .invalid("fragmented or long control frame (opcode \(op), \(len) B)") }
    default: return .invalid("reserved opcode \(op)")
    }
    return .frame(fin: fin, opcode: op, headerLength: h, payloadLength: len)
}

/// A masked client frame (RFC 6455 §5.3).
func maskedFrame(opcode: UInt8, payload: [UInt8], key: UInt32) -> [UInt8] {
    var f: [UInt8] = [0x80 | opcode]
    let len = payload.count
    if len < 126 {
        f.append(0x80 | UInt8(len))
    } else if len < 65536 {
        f += [0x80 | 126, UInt8(len >> 8), UInt8(len & 0xFF)]
    } else {
        f.append(0x80 | 127)
        for s in stride(from: 56, through: 0, by: -8) { f.append(UInt8(truncatingIfNeeded: UInt64(len) >> UInt64(s))) }
    }
    let k = [UInt8(key >> 24), UInt8((key >> 16) & 0xFF), UInt8((key >> 8) & 0xFF), UInt8(key & 0xFF)]
    f += k
    for (j, b) in payload.enumerated() { f.append(b ^ k[j & 3]) }
    return f
}

// MARK: HTTP/1.1 responses

/// Where the fields this client cares about are, as offsets into the parsed bytes.
struct ResponseHead {
    var status = 0
    var headEnd = 0  // offset just after "\r\n\r\n"
    var contentLength = -1
    var chunked = false
    var close = false
    var lastModified: Range<Int>? = nil
    var etag: Range<Int>? = nil
}

enum ResponseParse {
    case incomplete
    /// The whole response is `consumed` bytes; the body (chunked bodies decoded into the
    /// scratch buffer) is `body`/`bodyLength`.
    case response(ResponseHead, body: UnsafePointer<UInt8>, bodyLength: Int, consumed: Int)
    case invalid(String)
}

@inline(__always)
func lower(_ b: UInt8) -> UInt8 { b >= 65 && b <= 90 ? b | 0x20 : b }

/// Case-insensitive comparison of `n` bytes at `p` with the lowercase ASCII `name`.
@inline(__always)
func equalsLower(_ p: UnsafePointer<UInt8>, _ n: Int, _ name: StaticString) -> Bool {
    if n != name.utf8CodeUnitCount { return false }
    let q = name.utf8Start
    for j in 0..<n where lower(p[j]) != q[j] { return false }
    return true
}

/// Index of "\r\n\r\n" in `p[from..<n]`, or -1.
@inline(__always)
func findHeadEnd(_ p: UnsafePointer<UInt8>, _ n: Int, from: Int = 0) -> Int {
    var j = max(0, from)
    while j + 3 < n {
        // Jump between CRs.
        guard let cr = memchr(p + j, 13, n - j) else { return -1 }
        let k = UnsafePointer<UInt8>(cr.assumingMemoryBound(to: UInt8.self)) - p
        if k + 3 >= n { return -1 }
        if p[k + 1] == 10 && p[k + 2] == 13 && p[k + 3] == 10 { return k }
        j = k + 1
    }
    return -1
}

/// Parses one HTTP/1.1 response at `p` (`n` bytes). `scratch` receives decoded chunked
/// bodies (grown as needed). Responses to HEAD are not expected; 1xx, 204 and 304 have no
/// body. A response without Content-Length or chunked coding is refused (this client needs
/// keep-alive).
func parseResponse(_ p: UnsafePointer<UInt8>, _ n: Int, scratch: inout ByteBuf, maxHead: Int = 65536) -> ResponseParse {
    let he = findHeadEnd(p, n)
    if he < 0 {
        return n > maxHead ? .invalid("no end of the response head in \(maxHead) bytes") : .incomplete
    }
    var r = ResponseHead()
    r.headEnd = he + 4
    // Status line: HTTP/1.x SP DDD
    guard he >= 12, p[0] == 72, p[1] == 84, p[2] == 84, p[3] == 80, p[4] == 47, p[5] == 49, p[6] == 46,
        p[8] == 32
    else {
        return .invalid(
            "bad status line '\(String(decoding: UnsafeBufferPointer(start: p, count: min(he, 60)), as: UTF8.self))'")
    }
    var status = 0
    for j in 9..<12 {
        let d = p[j]
        guard d >= 48 && d <= 57 else { return .invalid("bad status code") }
        status = status * 10 + Int(d - 48)
    }
    r.status = status
    if p[7] == 48 { r.close = true }  // HTTP/1.0: closes unless keep-alive (not asked for)
    // Header lines.
    var j = 0
    while j < he && p[j] != 13 { j += 1 }
    j += 2
    while j < he + 2 {
        var e = j
        while e < he && p[e] != 13 { e += 1 }
        // [j, e) is one header line.
        var c = j
        while c < e && p[c] != 58 { c += 1 }
        if c < e {
            var vs = c + 1
            while vs < e && (p[vs] == 32 || p[vs] == 9) { vs += 1 }
            var ve = e
            while ve > vs && (p[ve - 1] == 32 || p[ve - 1] == 9) { ve -= 1 }
            let name = p + j, nameLen = c - j
            if equalsLower(name, nameLen, "content-length") {
                var v = 0
                if vs == ve { return .invalid("empty Content-Length") }
                for k in vs..<ve {
                    let d = p[k]
                    guard d >= 48 && d <= 57, v < 1 << 40 else { return .invalid("bad Content-Length") }
                    v = v * 10 + Int(d - 48)
                }
                r.contentLength = v
            } else if equalsLower(name, nameLen, "transfer-encoding") {
                r.chunked = equalsLower(p + vs, ve - vs, "chunked")
                if !r.chunked { return .invalid("Transfer-Encoding other than chunked") }
            } else if equalsLower(name, nameLen, "connection") {
                if equalsLower(p + vs, ve - vs, "close") { r.close = true }
                if equalsLower(p + vs, ve - vs, "keep-alive") { r.close = false }
            } else if equalsLower(name, nameLen, "last-modified") {
                r.lastModified = vs..<ve
            } else if equalsLower(name, nameLen, "etag") {
                r.etag = vs..<ve
            }
        }
        j = e + 2
    }
    let start = r.headEnd
    if (status >= 100 && status < 200) || status == 204 || status == 304 {
        return .response(r, body: p + start, bodyLength: 0, consumed: start)
    }
    if r.chunked {
        scratch.clear()
        var k = start
        while true {
            // chunk-size [; ext] CRLF
            var size = 0
            var digits = 0
            while k < n {
                let d = p[k]
                let v: Int
                if d >= 48 && d <= 57 {
                    v = Int(d - 48)
                } else if d >= 97 && d <= 102 {
                    v = Int(d - 87)
                } else if d >= 65 && d <= 70 {
                    v = Int(d - 55)
                } else {
                    break
                }
                size = size * 16 + v
                digits += 1
                if digits > 12 { return .invalid("chunk size too long") }
                k += 1
            }
            if k >= n { return .incomplete }
            if digits == 0 { return .invalid("bad chunk size") }
            while k < n && p[k] != 10 { k += 1 }  // extensions, then CRLF
            if k >= n { return .incomplete }
            k += 1
            if size == 0 {
                // trailers, then an empty line
                while true {
                    if k + 1 >= n { return .incomplete }
                    if p[k] == 13 && p[k + 1] == 10 {
                        let decoded = UnsafePointer(scratch.base ?? UnsafeMutablePointer(mutating: p))
                        return .response(r, body: decoded, bodyLength: scratch.count, consumed: k + 2)
                    }
                    while k < n && p[k] != 10 { k += 1 }
                    if k >= n { return .incomplete }
                    k += 1
                }
            }
            if n - k < size + 2 { return .incomplete }
            scratch.append(p + k, size)
            k += size
            guard p[k] == 13 && p[k + 1] == 10 else { return .invalid("chunk without CRLF") }
            k += 2
        }
    }
    guard r.contentLength >= 0 else { return .invalid("response \(status) without Content-Length or chunked coding") }
    if n - start < r.contentLength { return .incomplete }
    return .response(r, body: p + start, bodyLength: r.contentLength, consumed: start + r.contentLength)
}

// MARK: the payload marker

/// The published data starts with "#s<seq>t<nanoseconds>#" (then padding): ASCII that JSON
/// does not escape and that neither server's framing (WebSocket, JSON batches, multipart parts)
/// contains elsewhere.
/// Calls `found(seq, sentNanos)` for every marker in `p[0..<n]`; returns the count.
@inline(__always)
func scanMarkers(_ p: UnsafePointer<UInt8>, _ n: Int, _ found: (Int64, Int64) -> Void) -> Int {
    var j = 0
    var count = 0
    while j < n {
        guard let h = memchr(p + j, 35, n - j) else { break }  // '#'
        var k = UnsafePointer<UInt8>(h.assumingMemoryBound(to: UInt8.self)) - p + 1
        j = k
        guard k < n, p[k] == 115 else { continue }  // 's'
        k += 1
        var seq: Int64 = 0
        var d = 0
        while k < n, p[k] >= 48, p[k] <= 57, d < 18 { seq = seq * 10 + Int64(p[k] - 48); k += 1; d += 1 }
        guard d > 0, k < n, p[k] == 116 else { continue }  // 't'
        k += 1
        var ns: Int64 = 0
        d = 0
        while k < n, p[k] >= 48, p[k] <= 57, d < 19 { ns = ns * 10 + Int64(p[k] - 48); k += 1; d += 1 }
        guard d > 0, k < n, p[k] == 35 else { continue }
        found(seq, ns)
        count += 1
        j = k + 1
    }
    return count
}

/// Writes the data string for message `seq` sent at `ns`, `size` bytes (at least the marker).
func buildData(into b: inout ByteBuf, seq: Int64, ns: Int64, size: Int) {
    let start = b.count
    b.append([35, 115])  // "#s"
    b.appendDecimal(seq)
    b.append([116])  // "t"
    b.appendDecimal(ns)
    b.append([35])
    let pad = size - (b.count - start)
    if pad > 0 {
        b.reserve(b.count + pad)
        (b.base! + b.count).initialize(repeating: 112, count: pad)  // 'p'
        b.count += pad
    }
}

// MARK: tiny JSON lookups (the hub's own answers, not the hot path of deliveries)

/// Index just after `key` (bytes, e.g. "\"cursor\":") in p[0..<n], or -1.
func find(_ key: [UInt8], in p: UnsafePointer<UInt8>, _ n: Int, from: Int = 0) -> Int {
    guard !key.isEmpty, n - from >= key.count else { return -1 }
    let first = key[0]
    var j = from
    while j + key.count <= n {
        guard let h = memchr(p + j, Int32(first), n - j - key.count + 1) else { return -1 }
        let k = UnsafePointer<UInt8>(h.assumingMemoryBound(to: UInt8.self)) - p
        var ok = true
        for t in 1..<key.count where p[k + t] != key[t] { ok = false; break }
        if ok { return k + key.count }
        j = k + 1
    }
    return -1
}

/// The JSON string value after `"name":` (no escapes expected), or nil.
func jsonString(_ name: String, in p: UnsafePointer<UInt8>, _ n: Int) -> String? {
    var at = find(Array("\"\(name)\":".utf8), in: p, n)
    if at < 0 { return nil }
    while at < n && p[at] == 32 { at += 1 }
    guard at < n, p[at] == 34 else { return nil }
    var e = at + 1
    while e < n && p[e] != 34 {
        if p[e] == 92 { return nil }
        e += 1
    }
    guard e < n else { return nil }
    return String(decoding: UnsafeBufferPointer(start: p + at + 1, count: e - at - 1), as: UTF8.self)
}

/// The JSON integer after `key` (bytes of `"name":`), or nil.
@inline(__always)
func jsonInt(_ key: [UInt8], in p: UnsafePointer<UInt8>, _ n: Int) -> Int64? {
    var at = find(key, in: p, n)
    if at < 0 { return nil }
    while at < n && p[at] == 32 { at += 1 }
    var v: Int64 = 0
    var d = 0
    while at < n, p[at] >= 48, p[at] <= 57, d < 18 { v = v * 10 + Int64(p[at] - 48); at += 1; d += 1 }
    return d > 0 ? v : nil
}

func contains(_ s: String, in p: UnsafePointer<UInt8>, _ n: Int) -> Bool {
    find(Array(s.utf8), in: p, n) >= 0
}
