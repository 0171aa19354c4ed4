#if canImport(Glibc)
import Glibc
#endif

// `halley-load selftest`: the parsers, the echo check and the delivery bookkeeping against
// hand-made bytes, whole and cut at every position (the way reads cut them), so that the
// tool's own mistakes do not pass for the servers'.

private nonisolated(unsafe) var checks = 0
private nonisolated(unsafe) var failures = 0

private func expect(_ ok: Bool, _ what: @autoclosure () -> String) {
    checks += 1
    if !ok {
        failures += 1
        if failures <= 30 { writeFD(2, "selftest: FAILED: \(what())\n") }
    }
}

/// An unmasked server frame.
private func serverFrame(_ op: UInt8, _ payload: [UInt8], fin: Bool = true, rsv1: Bool = false) -> [UInt8] {
    let f = maskedFrame(opcode: op, payload: payload, key: 0, rsv1: rsv1)
    let h = f.count - payload.count - 4
    return [f[0] & (fin ? 0xFF : 0x7F), f[1] & 0x7F] + f[2..<h] + payload
}

/// The stream in two pieces cut at `cut`, each handed to `feed` as a read would.
private func split(_ stream: [UInt8], _ cut: Int, _ feed: (UnsafeMutablePointer<UInt8>, Int) -> Void) {
    for var piece in [Array(stream[..<cut]), Array(stream[cut...])] where !piece.isEmpty {
        piece.withUnsafeMutableBufferPointer { feed($0.baseAddress!, $0.count) }
    }
}

/// Cuts to try: every one near the ends, a sample in between.
private func cuts(_ count: Int) -> [Int] { (0...count).filter { $0 < 700 || $0 > count - 30 || $0 % 997 == 0 } }

private func bytes(_ s: String) -> [UInt8] { Array(s.utf8) }

private func markers(_ b: [UInt8]) -> [[Int64]] {
    var found: [[Int64]] = []
    _ = b.withUnsafeBufferPointer { scanMarkers($0.baseAddress!, $0.count) { found.append([$0, $1]) } }
    return found
}

func selfTest() -> Int32 {
    let accept = base64(sha1(bytes("dGhlIHNhbXBsZSBub25jZQ==258EAFA5-E914-47DA-95CA-C5AB0DC85B11")))
    expect(accept == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=", "accept value (RFC 6455 §1.3) \(accept)")
    expect(base64(bytes("ab")) == "YWI=" && base64(bytes("a")) == "YQ==", "base64 padding")

    // Frames: 7-, 16- and 64-bit lengths, a ping, fragments, a close; split anywhere.
    let small = bytes("{\"event\":\"tick\",\"channel\":\"bench\",\"data\":\"#s17t123456789#pp\"}")
    let mid = [UInt8](repeating: 120, count: 300), big = [UInt8](repeating: 121, count: 70_000)
    let stream =
        serverFrame(1, small) + serverFrame(9, [1, 2, 3]) + serverFrame(1, mid)
        + serverFrame(1, bytes("frag"), fin: false)
        + serverFrame(0, bytes("ment")) + serverFrame(1, big) + serverFrame(8, [0x03, 0xE8])
    for cut in cuts(stream.count) {
        var got: [(UInt8, Bool, [UInt8])] = []
        var pend: [UInt8] = []
        var bad = false
        split(stream, cut) { p, n in
            pend += UnsafeBufferPointer(start: p, count: n)
            while case .frame(let fin, let op, _, let h, let len) = parseFrameHeader(pend, pend.count),
                pend.count >= h + len
            {
                got.append((op, fin, Array(pend[h..<(h + len)])))
                pend.removeFirst(h + len)
            }
            if case .invalid = parseFrameHeader(pend, pend.count) { bad = true }
        }
        expect(
            !bad && got.count == 7 && got[0].2 == small && got[1].0 == 9 && got[2].2 == mid && !got[3].1
                && got[4].0 == 0 && got[5].2 == big && got[6].0 == 8, "frames cut at \(cut)")
    }
    for (frame, deflate, why) in [
        ([0x81, 0x85, 1, 2, 3, 4, 0], false, "masked"), ([0xC1, 0x01, 0x41], false, "RSV1 without deflate"),
        ([0xC9, 0x00], true, "RSV1 on a ping"), ([0x83, 0x00], false, "reserved opcode"),
        ([0x09, 0x00], false, "fragmented ping"), ([0x81, 126, 0, 100], false, "non-minimal length"),
    ] as [([UInt8], Bool, String)] {
        guard case .invalid = parseFrameHeader(frame, frame.count, deflate: deflate) else {
            expect(false, "\(why) refused")
            continue
        }
    }
    let m = maskedFrame(opcode: 1, payload: bytes("hi"), key: 0x0102_0304)
    expect(m == [0x81, 0x82, 1, 2, 3, 4, 0x68 ^ 1, 0x69 ^ 2], "masked client frame \(m)")

    // Markers.
    expect(markers(small) == [[17, 123_456_789]], "marker in a halley message \(markers(small))")
    let batch = bytes("{\"messages\":[{\"data\":\"#s1t5#pp\"},{\"data\":\"#s2t6#\"},{\"data\":\"#x#s3t7#p\"}]}")
    expect(markers(batch) == [[1, 5], [2, 6], [3, 7]], "markers in a batch \(markers(batch))")
    expect(markers(bytes("#s12t# #s1t2 #st2#")).isEmpty, "incomplete markers ignored")
    var data = ByteBuf()
    buildData(into: &data, seq: 42, ns: 1_234_567_890_123, size: 64)
    expect(data.count == 64 && markers(data.bytes) == [[42, 1_234_567_890_123]], "data string")
    data.clear()
    buildData(into: &data, seq: 123_456, ns: 9_999_999_999_999, size: 8)
    expect(data.count == 23, "data longer than --size keeps the whole marker")

    // HTTP responses: Content-Length, chunked (extensions, trailers), 304, Connection: close,
    // Nchan's multipart, headers in any case; split anywhere.
    let multipart = "--B\r\n\r\n#s5t50#p\r\n--B\r\n\r\n#s6t60#p\r\n--B--\r\n"
    let responses =
        "HTTP/1.1 201 Created\r\ncontent-length: 11\r\n\r\n{\"ok\":true}"
        + "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;x=1\r\nhello\r\nA\r\n, world!!!\r\n0\r\nX-T: 1\r\n\r\n"
        + "HTTP/1.1 304 Not Modified\r\nEtag: 7\r\n\r\n"
        + "HTTP/1.1 200 OK\r\nLast-Modified: Wed, 25 Nov 2026 13:38:21 GMT\r\nETAG: 12\r\nContent-Length: \(multipart.utf8.count)\r\n\r\n"
        + multipart + "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
    let rs = bytes(responses)
    var scratch = ByteBuf()
    for cut in cuts(rs.count) {
        var got: [(Int, [UInt8], Bool, String)] = []
        var pend: [UInt8] = []
        split(rs, cut) { p, n in
            pend += UnsafeBufferPointer(start: p, count: n)
            while let (r, used) = pend.withUnsafeBufferPointer({ b -> ((Int, [UInt8], Bool, String), Int)? in
                guard
                    case .response(let h, let body, let len, let used) = parseResponse(
                        b.baseAddress!, b.count, scratch: &scratch)
                else { return nil }
                let text = { (r: Range<Int>?) in r.map { String(decoding: b[$0], as: UTF8.self) } ?? "" }
                return (
                    (
                        h.status, Array(UnsafeBufferPointer(start: body, count: len)), h.close,
                        text(h.etag) + text(h.lastModified)
                    ), used
                )
            }) {
                got.append(r)
                pend.removeFirst(used)
            }
        }
        expect(
            got.count == 5 && got[0].0 == 201 && got[0].1 == bytes("{\"ok\":true}")
                && got[1].1 == bytes("hello, world!!!")
                && got[2].0 == 304 && got[2].3 == "7" && markers(got[3].1).count == 2
                && got[3].3 == "12Wed, 25 Nov 2026 13:38:21 GMT" && !got[3].2 && got[4].2,
            "responses cut at \(cut): \(got.map { ($0.0, $0.1.count, $0.2) })")
    }
    for bad in [
        "HTTP/1.1 200 OK\r\n\r\nabc", "HTTP/1.1 2x0 OK\r\nContent-Length: 0\r\n\r\n",
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n", "HTTP/1.1 200 OK\r\nContent-Length: 1x\r\n\r\n",
    ] {
        guard case .invalid = parseResponse(bytes(bad), bad.utf8.count, scratch: &scratch) else {
            expect(false, "refused: \(bad)")
            continue
        }
    }

    // JSON lookups in a halley poll answer; ByteBuf; the histogram.
    let poll = bytes("{\"session\":\"1234.5678\",\"token\":\"9f0c\",\"cursor\":44,\"messages\":[]}")
    expect(jsonString("session", in: poll, poll.count) == "1234.5678", "session")
    expect(jsonString("token", in: poll, poll.count) == "9f0c", "token")
    expect(jsonInt(Load.kCursor, in: poll, poll.count) == 44, "cursor")
    expect(jsonString("nothing", in: poll, poll.count) == nil, "a missing key")
    var bb = ByteBuf()
    bb.appendDecimal(0)
    bb.append(" ")
    bb.appendDecimal(Int64.max)
    bb.removeFirst(2)
    expect(bb.bytes == bytes("9223372036854775807"), "appendDecimal, removeFirst")
    let h = Histogram()
    for us in 1...1000 { h.add(Int64(us) * 1000) }
    expect(h.percentile(0.5) == 500 && h.percentile(0.99) == 990, "histogram percentiles")
    h.reset()
    h.add(100_000_000)
    expect(abs(h.percentile(0.5) - 100_000) <= 1024, "histogram above 65 ms")

    echoChecks()
    deliveryChecks()
    serverChecks()
    writeFD(2, "selftest: \(checks - failures) of \(checks) checks passed\n")
    return failures == 0 ? 0 : 1
}

/// The echo check in process (no socket: writes go nowhere): right echoes, whole, in
/// fragments with pings between and compressed, count once; a changed byte, a wrong length
/// or a stale message fails.
private func echoChecks() {
    var o = Options()
    o.connections = 1
    o.size = 300
    o.deflate = true
    let load = Load(o)
    load.nextToOpen = 1
    load.errorSamples = 1000  // the failures below are expected: no warnings
    let sent = Array(UnsafeBufferPointer(start: load.pool.plain!, count: 300))
    let stale = Array(UnsafeBufferPointer(start: load.pool.plain! + 300, count: 300))
    var changed = sent
    changed[150] ^= 1
    let z = deflateMessage(sent)
    let cases: [(String, [UInt8], UInt8, Bool)] = [
        ("plain", serverFrame(1, sent), 0, true),
        (
            "fragments and pings",
            serverFrame(1, Array(sent[..<7]), fin: false) + serverFrame(9, [7])
                + serverFrame(0, Array(sent[7..<200]), fin: false)
                + serverFrame(10, []) + serverFrame(0, Array(sent[200...])), 0, true
        ),
        ("compressed", serverFrame(1, z, rsv1: true), 1, true),
        (
            "compressed in fragments",
            serverFrame(1, Array(z[..<5]), fin: false, rsv1: true) + serverFrame(0, Array(z[5...])), 2, true
        ),
        ("a changed byte", serverFrame(1, changed), 0, false), ("one byte more", serverFrame(1, sent + [65]), 0, false),
        ("a stale message", serverFrame(1, stale), 0, false), ("binary", serverFrame(2, sent), 0, false),
        ("corrupt compressed", serverFrame(1, z.map { $0 ^ 0x55 }, rsv1: true), 1, false),
        ("RSV1 without deflate", serverFrame(1, z, rsv1: true), 0, false),
    ]
    for (name, stream, deflate, good) in cases {
        for cut in cuts(stream.count) {
            load.st.pointee = Stats()
            load.st.pointee.outstanding = 1
            load.conns[0] = Conn()
            load.conns[0].state = .open
            load.conns[0].ready = true
            load.conns[0].awaiting = true
            load.conns[0].expect = 0
            load.conns[0].deflate = deflate
            load.inflaters[0] = deflate != 0 ? StreamInflater() : nil
            split(stream, cut) { load.feed(0, $0, $1, 0) }
            let s = load.st.pointee
            expect(
                good ? s.echoes == 1 && s.errors == 0 && s.compressedEchoes == (deflate != 0 ? 1 : 0) : s.errors > 0,
                "echo \(name) cut at \(cut): echoes \(s.echoes), errors \(s.errors)")
        }
    }
}

/// Per-subscriber bookkeeping: reordering within 64, duplicates, giving up on a loss.
private func deliveryChecks() {
    var o = Options()
    o.mode = .fanout
    o.connections = 1
    o.publishers = 1
    let b = Load(o)
    b.st.pointee.nextSeq = 1000
    b.st.pointee.rangeFrom = 0
    b.st.pointee.rangeTo = 1000
    let c = b.conns
    for seq: Int64 in [0, 2, 1, 3, 5, 4, 4, 6, 8] { b.deliver(c, seq, 0, 1000) }
    let s = { b.st.pointee }
    expect(
        c.pointee.expect == 7 && c.pointee.seen == 1 && s().dups == 1 && s().reordered == 3 && c.pointee.inRange == 8,
        "reorder: expect \(c.pointee.expect) seen \(c.pointee.seen) dups \(s().dups) reordered \(s().reordered)")
    b.deliver(c, 72, 0, 1000)  // 7 never comes: 72 is more than 64 after it, so 7 is given up
    expect(c.pointee.expect == 9 && s().skipped == 1 && c.pointee.inRange == 9, "loss: expect \(c.pointee.expect)")
    for seq: Int64 in 9..<72 { b.deliver(c, seq, 0, 1000) }
    expect(c.pointee.expect == 73 && c.pointee.seen == 0 && c.pointee.inRange == 72, "catch up: \(c.pointee.expect)")
    b.deliver(c, 7, 0, 1000)
    expect(s().dups == 2, "a late message after giving up counts as a duplicate")
}

/// --sub-url: subscribers on the --sub-url servers in turn, publishers on --url's.
private func serverChecks() {
    let o = Options.parse([
        "fanout", "--url", "http://127.0.0.1:1", "--sub-url", "http://127.0.0.1:2", "--sub-url", "http://localhost:3",
        "-n", "5", "--publishers", "2",
    ])
    let b = Load(o)
    let ports = (0..<b.total).map { b.servers[b.server($0)].port }
    expect(ports == [2, 3, 2, 3, 2, 1, 1], "servers of subscribers and publishers: \(ports)")
    let one = Load(Options.parse(["fanout", "--url", "http://127.0.0.1:1", "-n", "2", "--publishers", "1"]))
    expect((0..<one.total).allSatisfy { one.server($0) == 0 }, "without --sub-url: every connection on --url")
}
