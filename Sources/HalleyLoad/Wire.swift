#if canImport(Glibc)
import Glibc
#endif
import CZlib

// Pure parsers and encoders over raw bytes, no sockets (checked by `halley-load selftest`):
// WebSocket frames, HTTP/1.1 responses, the data marker of published messages, a few JSON
// lookups, permessage-deflate.

// MARK: WebSocket frames (RFC 6455 §5.2, RFC 7692 §6)

enum FrameHeader {
    case incomplete
    case frame(fin: Bool, opcode: UInt8, rsv1: Bool, headerLength: Int, payloadLength: Int)
    case invalid(String)
}

/// The header of the server frame at `p` (`n` bytes there). Unmasked; RSV1 only on the first
/// frame of a data message and only when permessage-deflate was agreed (`deflate`).
@inline(__always)
func parseFrameHeader(_ p: UnsafePointer<UInt8>, _ n: Int, deflate: Bool = false) -> FrameHeader {
    if n < 2 { return .incomplete }
    let b0 = p[0], b1 = p[1]
    let op = b0 & 0x0F, fin = b0 & 0x80 != 0, rsv1 = b0 & 0x40 != 0
    if b1 & 0x80 != 0 { return .invalid("masked frame from the server") }
    if b0 & 0x30 != 0 || (rsv1 && (!deflate || op == 0 || op >= 8)) {
        return .invalid("RSV bits 0x\(String(b0 & 0x70, radix: 16)) on opcode \(op)")
    }
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
        if v < 65536 || v > 1 << 27 { return .invalid("64-bit length \(v)") }
        len = Int(v)
        h = 10
    }
    switch op {
    case 0, 1, 2: break
    case 8, 9, 10:
        if !fin || len > 125 { return .invalid("fragmented or long control frame (opcode \(op), \(len) B)") }
    default: return .invalid("reserved opcode \(op)")
    }
    return .frame(fin: fin, opcode: op, rsv1: rsv1, headerLength: h, payloadLength: len)
}

/// A masked client frame (RFC 6455 §5.3).
func maskedFrame(opcode: UInt8, payload: [UInt8], key: UInt32, rsv1: Bool = false) -> [UInt8] {
    var f: [UInt8] = [0x80 | (rsv1 ? 0x40 : 0) | opcode]
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

/// The fields this client needs, as offsets into the parsed bytes.
struct ResponseHead {
    var status = 0
    var contentLength = -1
    var chunked = false
    var close = false
    var lastModified: Range<Int>? = nil
    var etag: Range<Int>? = nil
}

enum ResponseParse {
    case incomplete
    /// The whole response is `consumed` bytes; chunked bodies are decoded into the scratch.
    case response(ResponseHead, body: UnsafePointer<UInt8>, bodyLength: Int, consumed: Int)
    case invalid(String)
}

/// Case-insensitive comparison of `n` bytes at `p` with the lowercase ASCII `name`.
@inline(__always)
func equalsLower(_ p: UnsafePointer<UInt8>, _ n: Int, _ name: StaticString) -> Bool {
    if n != name.utf8CodeUnitCount { return false }
    for j in 0..<n where (p[j] >= 65 && p[j] <= 90 ? p[j] | 0x20 : p[j]) != name.utf8Start[j] { return false }
    return true
}

/// Index of "\r\n\r\n" in `p[0..<n]`, or -1.
@inline(__always)
func findHeadEnd(_ p: UnsafePointer<UInt8>, _ n: Int) -> Int {
    var j = 0
    while j + 3 < n {
        guard let cr = memchr(p + j, 13, n - j) else { return -1 }
        let k = UnsafePointer<UInt8>(cr.assumingMemoryBound(to: UInt8.self)) - p
        if k + 3 >= n { return -1 }
        if p[k + 1] == 10 && p[k + 2] == 13 && p[k + 3] == 10 { return k }
        j = k + 1
    }
    return -1
}

/// Hex digits at `p[k...]` (at most `max`): (value, index after them).
@inline(__always)
func hexNumber(_ p: UnsafePointer<UInt8>, _ k0: Int, _ n: Int, max: Int) -> (Int, Int)? {
    var k = k0, v = 0
    while k < n {
        let d = p[k] | 0x20
        guard (d >= 48 && d <= 57) || (d >= 97 && d <= 102) else { break }
        v = v << 4 | Int(d >= 97 ? d - 87 : d - 48)
        k += 1
        if k - k0 > max { return nil }
    }
    return (v, k)
}

/// One HTTP/1.1 response at `p` (`n` bytes). A response needs Content-Length or chunked coding
/// (this client keeps connections alive); 1xx, 204 and 304 have no body.
func parseResponse(_ p: UnsafePointer<UInt8>, _ n: Int, scratch: inout ByteBuf) -> ResponseParse {
    let he = findHeadEnd(p, n)
    if he < 0 { return n > 65536 ? .invalid("no end of the response head in 64 KiB") : .incomplete }
    guard he >= 12, equalsLower(p, 5, "http/"), p[5] == 49, p[6] == 46, p[8] == 32 else {
        return .invalid(
            "bad status line '\(String(decoding: UnsafeBufferPointer(start: p, count: min(he, 60)), as: UTF8.self))'")
    }
    var r = ResponseHead()
    for j in 9..<12 {
        guard p[j] >= 48 && p[j] <= 57 else { return .invalid("bad status code") }
        r.status = r.status * 10 + Int(p[j] - 48)
    }
    r.close = p[7] == 48  // HTTP/1.0
    var j = 0
    while p[j] != 13 { j += 1 }
    j += 2
    while j < he + 2 {
        var e = j
        while e < he && p[e] != 13 { e += 1 }
        var c = j
        while c < e && p[c] != 58 { c += 1 }
        if c < e {
            var vs = c + 1
            while vs < e && (p[vs] == 32 || p[vs] == 9) { vs += 1 }
            var ve = e
            while ve > vs && (p[ve - 1] == 32 || p[ve - 1] == 9) { ve -= 1 }
            let name = p + j, len = c - j, value = p + vs, vlen = ve - vs
            if equalsLower(name, len, "content-length") {
                var v = 0
                for k in vs..<ve {
                    guard p[k] >= 48 && p[k] <= 57, v < 1 << 40 else { return .invalid("bad Content-Length") }
                    v = v * 10 + Int(p[k] - 48)
                }
                r.contentLength = vs < ve ? v : -1
            } else if equalsLower(name, len, "transfer-encoding") {
                guard equalsLower(value, vlen, "chunked") else {
                    return .invalid("Transfer-Encoding other than chunked")
                }
                r.chunked = true
            } else if equalsLower(name, len, "connection") {
                if equalsLower(value, vlen, "close") { r.close = true }
                if equalsLower(value, vlen, "keep-alive") { r.close = false }
            } else if equalsLower(name, len, "last-modified") {
                r.lastModified = vs..<ve
            } else if equalsLower(name, len, "etag") {
                r.etag = vs..<ve
            }
        }
        j = e + 2
    }
    let start = he + 4
    if r.status < 200 || r.status == 204 || r.status == 304 {
        return .response(r, body: p + start, bodyLength: 0, consumed: start)
    }
    if !r.chunked {
        guard r.contentLength >= 0 else { return .invalid("response \(r.status) without a length") }
        if n - start < r.contentLength { return .incomplete }
        return .response(r, body: p + start, bodyLength: r.contentLength, consumed: start + r.contentLength)
    }
    scratch.clear()
    var k = start
    while true {
        guard let (size, after) = hexNumber(p, k, n, max: 12) else { return .invalid("chunk size too long") }
        if after >= n { return .incomplete }
        if after == k { return .invalid("bad chunk size") }
        k = after
        while k < n && p[k] != 10 { k += 1 }  // extensions, CRLF
        if k >= n { return .incomplete }
        k += 1
        if size == 0 {
            while true {  // trailers, then an empty line
                if k + 1 >= n { return .incomplete }
                if p[k] == 13 && p[k + 1] == 10 {
                    return .response(
                        r, body: UnsafePointer(scratch.base ?? .init(mutating: p)), bodyLength: scratch.count,
                        consumed: k + 2)
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

// MARK: the data marker

/// Published data starts with "#s<seq>t<CLOCK_MONOTONIC ns>#", then padding: ASCII that JSON
/// does not escape and no server's framing holds elsewhere. Calls `found` for every marker.
@inline(__always)
func scanMarkers(_ p: UnsafePointer<UInt8>, _ n: Int, _ found: (Int64, Int64) -> Void) -> Int {
    var j = 0
    var count = 0
    while j < n {
        guard let h = memchr(p + j, 35, n - j) else { break }  // '#'
        var k = UnsafePointer<UInt8>(h.assumingMemoryBound(to: UInt8.self)) - p + 1
        j = k
        guard k < n, p[k] == 115 else { continue }  // 's'
        var v: (Int64, Int64) = (0, 0)
        var ok = true
        for part in 0..<2 {
            k += 1  // past 's', then 't'
            var x: Int64 = 0
            var d = 0
            while k < n, p[k] >= 48, p[k] <= 57, d < 19 {
                x = x * 10 + Int64(p[k] - 48)
                k += 1
                d += 1
            }
            if part == 0 { v.0 = x } else { v.1 = x }
            if d == 0 || k >= n || p[k] != (part == 0 ? 116 : 35) { ok = false; break }  // 't', '#'
        }
        guard ok else { continue }
        found(v.0, v.1)
        count += 1
        j = k + 1
    }
    return count
}

/// The data string of message `seq` sent at `ns`: the marker, then padding to `size` bytes.
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

// MARK: JSON lookups in the hub's own answers (not the deliveries' hot path)

/// Index just after `key` in `p[0..<n]`, or -1.
func find(_ key: [UInt8], in p: UnsafePointer<UInt8>, _ n: Int) -> Int {
    guard !key.isEmpty else { return -1 }
    var j = 0
    while j + key.count <= n {
        guard let h = memchr(p + j, Int32(key[0]), n - j - key.count + 1) else { return -1 }
        let k = UnsafePointer<UInt8>(h.assumingMemoryBound(to: UInt8.self)) - p
        if memcmp(p + k, key, key.count) == 0 { return k + key.count }
        j = k + 1
    }
    return -1
}

func contains(_ s: String, in p: UnsafePointer<UInt8>, _ n: Int) -> Bool { find(Array(s.utf8), in: p, n) >= 0 }

/// Where the value after `key` (the bytes of `"name":`) is: a string without escapes (inside
/// its quotes) or digits.
func jsonValue(_ key: [UInt8], in p: UnsafePointer<UInt8>, _ n: Int) -> Range<Int>? {
    var at = find(key, in: p, n)
    if at < 0 { return nil }
    while at < n && p[at] == 32 { at += 1 }
    let quoted = at < n && p[at] == 34
    let s = quoted ? at + 1 : at
    var e = s
    while e < n && (quoted ? p[e] != 34 : p[e] >= 48 && p[e] <= 57) {
        if p[e] == 92 { return nil }
        e += 1
    }
    return (quoted ? e < n : e > s) ? s..<e : nil
}

func jsonString(_ name: String, in p: UnsafePointer<UInt8>, _ n: Int) -> String? {
    jsonValue(Array("\"\(name)\":".utf8), in: p, n).map {
        String(decoding: UnsafeBufferPointer(start: p + $0.lowerBound, count: $0.count), as: UTF8.self)
    }
}

@inline(__always)
func jsonInt(_ key: [UInt8], in p: UnsafePointer<UInt8>, _ n: Int) -> Int64? {
    guard let r = jsonValue(key, in: p, n), r.count < 19, p[r.lowerBound] >= 48, p[r.lowerBound] <= 57 else {
        return nil
    }
    return r.reduce(0) { $0 * 10 + Int64(p[$1] - 48) }
}

// MARK: permessage-deflate

/// A raw-deflate stream that inflates a message frame by frame (RFC 7692 §7.2.2), handing the
/// output to `sink` in chunks.
final class StreamInflater {
    let z: UnsafeMutablePointer<z_stream>
    static let tail: [UInt8] = [0x00, 0x00, 0xFF, 0xFF]

    init() {
        z = .allocate(capacity: 1)
        z.initialize(to: z_stream())
        precondition(halley_inflateInit2(z, -15) == Z_OK, "inflateInit2 failed")
    }

    deinit {
        inflateEnd(z)
        z.deallocate()
    }

    func reset() { inflateReset(z) }

    /// False when the input is not valid deflate.
    func feed(
        _ input: UnsafePointer<UInt8>, _ count: Int, _ out: UnsafeMutablePointer<UInt8>, _ outSize: Int,
        _ sink: (UnsafePointer<UInt8>, Int) -> Void
    ) -> Bool {
        z.pointee.next_in = UnsafeMutablePointer(mutating: input)
        z.pointee.avail_in = UInt32(count)
        while true {
            z.pointee.next_out = out
            z.pointee.avail_out = UInt32(outSize)
            let rc = inflate(z, Z_SYNC_FLUSH)
            if outSize > Int(z.pointee.avail_out) { sink(out, outSize - Int(z.pointee.avail_out)) }
            switch rc {
            case Z_STREAM_END:
                // A final block ends the stream: what follows (our 00 00 FF FF) starts a new one.
                inflateReset(z)
                if z.pointee.avail_in == 0 { return true }
            case Z_OK:
                if z.pointee.avail_in == 0 && z.pointee.avail_out > 0 { return true }
            case Z_BUF_ERROR:
                return z.pointee.avail_in == 0
            default:
                return false
            }
        }
    }
}

/// One message compressed alone (raw deflate, window 15) without the final 00 00 FF FF
/// (RFC 7692 §7.2.1). At start only, never on the hot path.
func deflateMessage(_ input: [UInt8]) -> [UInt8] {
    var z = z_stream()
    precondition(halley_deflateInit2(&z, 6, Z_DEFLATED, -15, 8, Z_DEFAULT_STRATEGY) == Z_OK, "deflateInit2 failed")
    defer { deflateEnd(&z) }
    var out = [UInt8](repeating: 0, count: Int(deflateBound(&z, UInt(input.count))) + 64)
    var input = input
    let written = input.withUnsafeMutableBufferPointer { i in
        out.withUnsafeMutableBufferPointer { o in
            z.next_in = i.baseAddress
            z.avail_in = UInt32(i.count)
            z.next_out = o.baseAddress
            z.avail_out = UInt32(o.count)
            precondition(deflate(&z, Z_SYNC_FLUSH) == Z_OK && z.avail_in == 0, "deflate failed")
            return o.count - Int(z.avail_out)
        }
    }
    precondition(written >= 4 && Array(out[(written - 4)..<written]) == StreamInflater.tail, "no sync-flush tail")
    return Array(out[0..<(written - 4)])
}
