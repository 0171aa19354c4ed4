#if canImport(Glibc)
import Glibc
#endif

// `halley-fanout --self-test`: the parsers against hand-made bytes, whole and split at every
// position (the way reads cut them), so the load tool's own mistakes do not pass for the
// servers'.

private final class Checker {
    var failures = 0
    var checks = 0

    func expect(_ ok: Bool, _ what: @autoclosure () -> String) {
        checks += 1
        if !ok {
            failures += 1
            if failures <= 30 { writeStderr("self-test: FAILED: \(what())\n") }
        }
    }
}

/// An unmasked server frame.
private func serverFrame(_ op: UInt8, _ payload: [UInt8], fin: Bool = true) -> [UInt8] {
    var f: [UInt8] = [(fin ? 0x80 : 0) | op]
    let n = payload.count
    if n < 126 {
        f.append(UInt8(n))
    } else if n < 65536 {
        f += [126, UInt8(n >> 8), UInt8(n & 0xFF)]
    } else {
        f.append(127)
        for s in stride(from: 56, through: 0, by: -8) { f.append(UInt8(truncatingIfNeeded: UInt64(n) >> UInt64(s))) }
    }
    return f + payload
}

/// Frames parsed from a stream fed in two pieces cut at `cut`, the way `Bench.feed` does:
/// whole frames in place, the rest kept for the next read.
private func framesSplit(_ stream: [UInt8], cut: Int) -> [(UInt8, Bool, [UInt8])]? {
    var out: [(UInt8, Bool, [UInt8])] = []
    var pend: [UInt8] = []
    for piece in [Array(stream[..<cut]), Array(stream[cut...])] {
        pend += piece
        var off = 0
        let ok = pend.withUnsafeBufferPointer { b -> Bool in
            guard let base = b.baseAddress else { return true }
            while off < b.count {
                switch parseFrameHeader(base + off, b.count - off) {
                case .incomplete: return true
                case .invalid: return false
                case .frame(let fin, let op, let h, let len):
                    if b.count - off < h + len { return true }
                    out.append((op, fin, Array(b[(off + h)..<(off + h + len)])))
                    off += h + len
                }
            }
            return true
        }
        if !ok { return nil }
        pend.removeFirst(off)
    }
    return pend.isEmpty ? out : nil
}

/// Responses parsed from a stream cut at `cut`: (status, body, close, lastModified, etag).
private func responsesSplit(_ stream: [UInt8], cut: Int) -> [(Int, [UInt8], Bool, String?, String?)]? {
    var out: [(Int, [UInt8], Bool, String?, String?)] = []
    var pend: [UInt8] = []
    var scratch = ByteBuf()
    defer { scratch.free() }
    for piece in [Array(stream[..<cut]), Array(stream[cut...])] {
        pend += piece
        var off = 0
        let ok = pend.withUnsafeBufferPointer { b -> Bool in
            guard let base = b.baseAddress else { return true }
            while off < b.count {
                switch parseResponse(base + off, b.count - off, scratch: &scratch) {
                case .incomplete: return true
                case .invalid: return false
                case .response(let head, let body, let len, let consumed):
                    let s = base + off
                    func text(_ r: Range<Int>?) -> String? {
                        r.map {
                            String(
                                decoding: UnsafeBufferPointer(start: s + $0.lowerBound, count: $0.count), as: UTF8.self)
                        }
                    }
                    out.append(
                        (
                            head.status, Array(UnsafeBufferPointer(start: body, count: len)), head.close,
                            text(head.lastModified), text(head.etag)
                        ))
                    off += consumed
                }
            }
            return true
        }
        if !ok { return nil }
        pend.removeFirst(off)
    }
    return pend.isEmpty ? out : nil
}

private func markers(_ bytes: [UInt8]) -> [(Int64, Int64)] {
    var found: [(Int64, Int64)] = []
    bytes.withUnsafeBufferPointer { b in
        _ = scanMarkers(b.baseAddress!, b.count) { found.append(($0, $1)) }
    }
    return found
}

func selfTest() -> Int32 {
    let t = Checker()

    // SHA-1 and the WebSocket accept value (RFC 6455 §1.3's example).
    let hex = sha1(Array("abc".utf8)).map { String($0, radix: 16) }.map { $0.count == 1 ? "0" + $0 : $0 }.joined()
    t.expect(hex == "a9993e364706816aba3e25717850c26c9cd0d89d", "sha1(abc) = \(hex)")
    let accept = base64(sha1(Array("dGhlIHNhbXBsZSBub25jZQ==258EAFA5-E914-47DA-95CA-C5AB0DC85B11".utf8)))
    t.expect(accept == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=", "accept value \(accept)")
    t.expect(sha1([UInt8](repeating: 97, count: 1_000)).count == 20, "sha1 of 1000 bytes")

    // Frames: small, 16-bit and 64-bit lengths, control frames, fragments, split anywhere.
    let small = Array(
        "{\"event\":\"tick\",\"channel\":\"bench\",\"data\":\"#s17t123456789#pppp\",\"halley:offset\":18}".utf8)
    let mid = [UInt8](repeating: 120, count: 300)
    let big = [UInt8](repeating: 121, count: 70_000)
    let stream =
        serverFrame(1, small) + serverFrame(9, [1, 2, 3]) + serverFrame(1, mid)
        + serverFrame(1, Array("frag".utf8), fin: false) + serverFrame(0, Array("ment".utf8)) + serverFrame(1, big)
        + serverFrame(8, [0x03, 0xE8])
    var allCuts = true
    for cut in 0...stream.count {
        // Every cut for the first 600 bytes and near the end; a sample elsewhere (speed).
        if cut > 600 && cut < stream.count - 20 && cut % 997 != 0 { continue }
        guard let f = framesSplit(stream, cut: cut) else {
            allCuts = false; t.expect(false, "frames cut at \(cut): parse error"); continue
        }
        let ok =
            f.count == 7 && f[0].0 == 1 && f[0].2 == small && f[1].0 == 9 && f[1].2 == [1, 2, 3]
            && f[2].2 == mid && f[3].0 == 1 && !f[3].1 && f[4].0 == 0 && f[4].1 && f[5].2 == big && f[6].0 == 8
        if !ok { allCuts = false }
        t.expect(ok, "frames cut at \(cut)")
    }
    t.expect(allCuts, "frames: every cut")
    func invalid(_ bytes: [UInt8]) -> Bool {
        bytes.withUnsafeBufferPointer { b in
            if case .invalid = parseFrameHeader(b.baseAddress!, b.count) { return true }
            return false
        }
    }
    t.expect(invalid([0x81, 0x85, 1, 2, 3, 4, 0, 0, 0, 0, 0]), "masked server frame refused")
    t.expect(invalid([0xC1, 0x01, 0x41]), "RSV1 refused")
    t.expect(invalid([0x83, 0x00]), "reserved opcode refused")
    t.expect(invalid([0x09, 0x00]), "fragmented ping refused")
    t.expect(invalid([0x81, 126, 0, 100] + [UInt8](repeating: 0, count: 100)), "non-minimal 16-bit length refused")
    let m = maskedFrame(opcode: 1, payload: Array("hi".utf8), key: 0x0102_0304)
    t.expect(m == [0x81, 0x82, 1, 2, 3, 4, 0x68 ^ 1, 0x69 ^ 2], "masked client frame \(m)")

    // Markers.
    let mk = markers(small)
    t.expect(mk.count == 1 && mk[0].0 == 17 && mk[0].1 == 123_456_789, "marker in a halley message: \(mk)")
    let batch = Array(
        "{\"cursor\":9,\"messages\":[{\"data\":\"#s1t5#pp\"},{\"data\":\"#s2t6#\"},{\"data\":\"#x#s3t7#p\"}]}".utf8)
    let mb = markers(batch)
    t.expect(mb.count == 3 && mb[0] == (1, 5) && mb[1] == (2, 6) && mb[2] == (3, 7), "markers in a batch: \(mb)")
    t.expect(
        markers(Array("#s12t#".utf8)).isEmpty && markers(Array("#s1t2".utf8)).isEmpty
            && markers(Array("#st2#".utf8)).isEmpty,
        "incomplete markers ignored")
    var data = ByteBuf()
    buildData(into: &data, seq: 42, ns: 1_234_567_890_123, size: 64)
    let built = Array(UnsafeBufferPointer(start: data.base!, count: data.count))
    t.expect(
        built.count == 64 && String(decoding: built.prefix(20), as: UTF8.self) == "#s42t1234567890123#p",
        "data string \(String(decoding: built, as: UTF8.self))")
    t.expect(markers(built).count == 1 && markers(built)[0] == (42, 1_234_567_890_123), "data string marker")
    data.clear()
    buildData(into: &data, seq: 123_456, ns: 9_999_999_999_999, size: 8)
    t.expect(data.count == 23, "data string longer than --size keeps the whole marker (\(data.count))")
    data.free()

    // HTTP responses: Content-Length, chunked (extensions, trailers), 304 without body,
    // Connection: close, Nchan's multipart, headers in any case; split anywhere.
    let multipartBody =
        "--B\r\nContent-Type: text/plain\r\n\r\n#s5t50#p\r\n--B\r\nContent-Type: text/plain\r\n\r\n#s6t60#p\r\n--B--\r\n"
    let r1 = "HTTP/1.1 201 Created\r\nContent-Type: application/json\r\ncontent-length: 11\r\n\r\n{\"ok\":true}"
    let r2 =
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\nA\r\n, world!!!\r\n0\r\nX-Trailer: 1\r\n\r\n"
    let r3 = "HTTP/1.1 304 Not Modified\r\nEtag: 7\r\n\r\n"
    let r4 =
        "HTTP/1.1 200 OK\r\nContent-Type: multipart/mixed; boundary=B\r\nLast-Modified: Wed, 25 Nov 2026 13:38:21 GMT\r\nEtag: 12\r\n"
        + "Content-Length: \(multipartBody.utf8.count)\r\n\r\n" + multipartBody
    let r5 = "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
    let rs = Array((r1 + r2 + r3 + r4 + r5).utf8)
    var allResponseCuts = true
    for cut in 0...rs.count {
        guard let r = responsesSplit(rs, cut: cut) else {
            allResponseCuts = false; t.expect(false, "responses cut at \(cut): parse error"); continue
        }
        let ok =
            r.count == 5 && r[0].0 == 201 && r[0].1 == Array("{\"ok\":true}".utf8) && !r[0].2
            && r[1].0 == 200 && r[1].1 == Array("hello, world!!!".utf8)
            && r[2].0 == 304 && r[2].1.isEmpty && r[2].4 == "7"
            && r[3].0 == 200 && markers(r[3].1).count == 2 && r[3].3 == "Wed, 25 Nov 2026 13:38:21 GMT"
            && r[3].4 == "12"
            && r[4].0 == 200 && r[4].2
        if !ok { allResponseCuts = false }
        t.expect(ok, "responses cut at \(cut): \(r.map { ($0.0, $0.1.count, $0.2) })")
    }
    t.expect(allResponseCuts, "responses: every cut")
    func badResponse(_ s: String) -> Bool {
        var scratch = ByteBuf()
        defer { scratch.free() }
        return Array(s.utf8).withUnsafeBufferPointer { b in
            if case .invalid = parseResponse(b.baseAddress!, b.count, scratch: &scratch) { return true }
            return false
        }
    }
    t.expect(badResponse("HTTP/1.1 200 OK\r\n\r\nabc"), "a body without length refused")
    t.expect(badResponse("HTTP/1.1 2x0 OK\r\nContent-Length: 0\r\n\r\n"), "bad status refused")
    t.expect(badResponse("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n"), "unknown coding refused")
    t.expect(badResponse("HTTP/1.1 200 OK\r\nContent-Length: 1x\r\n\r\n"), "bad Content-Length refused")

    // JSON lookups on a halley poll answer.
    let poll = Array("{\"session\":\"1234.5678\",\"token\":\"9f0c\",\"cursor\":44,\"messages\":[]}".utf8)
    poll.withUnsafeBufferPointer { b in
        t.expect(jsonString("session", in: b.baseAddress!, b.count) == "1234.5678", "session")
        t.expect(jsonString("token", in: b.baseAddress!, b.count) == "9f0c", "token")
        t.expect(jsonInt(Bench.kCursor, in: b.baseAddress!, b.count) == 44, "cursor")
        t.expect(jsonString("nothing", in: b.baseAddress!, b.count) == nil, "missing key")
    }

    // ByteBuf.
    var bb = ByteBuf()
    bb.appendDecimal(0)
    bb.append(" ")
    bb.appendDecimal(9_223_372_036_854_775_807)
    t.expect(
        String(decoding: UnsafeBufferPointer(start: bb.base!, count: bb.count), as: UTF8.self)
            == "0 9223372036854775807", "appendDecimal")
    bb.removeFirst(2)
    t.expect(bb.count == 19 && bb.base![0] == 57, "removeFirst")
    bb.free()

    // Histogram.
    let h = Histogram()
    for us in 1...1000 { h.add(Int64(us) * 1000) }
    t.expect(h.percentile(0.5, total: 1000) == 500 && h.percentile(0.99, total: 1000) == 990, "histogram percentiles")
    h.reset()
    h.add(100_000_000)
    t.expect(
        abs(h.percentile(0.5, total: 1) - 100_000) <= 1024, "histogram above 65 ms: \(h.percentile(0.5, total: 1))")

    // Per-subscriber bookkeeping: reordering within 64, duplicates, giving up on a loss.
    var o = Options()
    o.subscribers = 1
    o.publishers = 1
    o.port = 1
    let b = Bench(o)
    b.st.pointee.nextSeq = 1000
    b.st.pointee.rangeFrom = 0
    b.st.pointee.rangeTo = 1000
    let c = b.conns
    for seq: Int64 in [0, 2, 1, 3, 5, 4, 4, 6, 8] { b.deliver(c, seq, 0, 1000) }
    t.expect(
        c.pointee.expect == 7 && c.pointee.seen == 1 && b.st.pointee.dups == 1 && b.st.pointee.reordered == 3
            && c.pointee.inRange == 8 && b.st.pointee.skipped == 0,
        "reorder: expect \(c.pointee.expect) seen \(c.pointee.seen) dups \(b.st.pointee.dups) reordered \(b.st.pointee.reordered) inRange \(c.pointee.inRange)"
    )
    // 7 never comes: 72 arrives (more than 64 after 7), so 7 is given up; 8 was received.
    b.deliver(c, 72, 0, 1000)
    t.expect(
        c.pointee.expect == 9 && b.st.pointee.skipped == 1 && c.pointee.inRange == 9,
        "loss: expect \(c.pointee.expect) skipped \(b.st.pointee.skipped)")
    for seq: Int64 in 9..<72 { b.deliver(c, seq, 0, 1000) }
    t.expect(
        c.pointee.expect == 73 && c.pointee.seen == 0 && c.pointee.inRange == 72,
        "catch up: expect \(c.pointee.expect) inRange \(c.pointee.inRange)")
    b.deliver(c, 7, 0, 1000)
    t.expect(b.st.pointee.dups == 2, "late message after giving up counts as a duplicate")

    writeStderr("self-test: \(t.checks - t.failures) of \(t.checks) checks passed\n")
    return t.failures == 0 ? 0 : 1
}
