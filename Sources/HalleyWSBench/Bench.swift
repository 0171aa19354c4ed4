#if canImport(Glibc)
import Glibc
#endif
import CHalleyLinux

enum Phase: UInt8 {
    case idle, connecting, handshake, open, closeSent, done
}

/// One connection's state, in a table allocated once and indexed by connection number (the
/// epoll data). Hot fields only; rare things (handshake bytes, blocked output, control frame
/// payloads, inflaters) live in side tables.
struct Conn {
    var fd: Int32 = -1
    var phase = Phase.idle
    /// Output is queued in `queues` behind bytes the socket did not take.
    var blocked = false
    /// A message was sent and its echo has not fully arrived.
    var outstanding = false
    // The frame being read.
    var inFrame = false
    var frameFin = false
    var frameOpcode: UInt8 = 0
    var frameRemaining = 0
    var hdrCount = 0
    var hdr: (UInt64, UInt64) = (0, 0)
    // The message being read.
    var msgOpcode: UInt8 = 0
    var msgCompressed = false
    var msgVerify = false
    var msgOk = true
    var msgLen = 0
    // The message in flight: which pooled message, sent when.
    var expect = 0
    var sentAt: Int64 = 0
    /// permessage-deflate: 0 not negotiated; 1 with server_no_context_takeover (the
    /// inflater is reset after each message); 2 with context takeover.
    var deflate: UInt8 = 0
    var gotClose = false
}

/// Counters touched on the hot path, in memory allocated once (a `var` property of a class
/// costs a runtime exclusivity check on every access).
struct Stats {
    var measuring = false
    var sending = false
    var windowMessages = 0
    var windowLatencySumNs: Int64 = 0
    var windowMaxNs: Int64 = 0
    var totalSent = 0
    var totalEchoes = 0
    var compressedEchoes = 0
    var verified = 0
    var verifyCounter = 0
    var nextPick = 0
    var outstanding = 0
    var live = 0
    var opened = 0
    var connecting = 0
    var failed = 0
    var errors = 0
    var resets = 0
    var serverCloses = 0
    var pings = 0
}

final class Bench {
    let o: Options
    let n: Int
    let size: Int
    let opcode: UInt8
    let conns: UnsafeMutablePointer<Conn>
    let st: UnsafeMutablePointer<Stats>
    let epfd: Int32
    let events: UnsafeMutableRawPointer
    static let maxEvents: Int32 = 1024
    let rbuf: UnsafeMutablePointer<UInt8>
    static let rbufSize = 256 * 1024
    let scratch: UnsafeMutablePointer<UInt8>
    static let scratchSize = 64 * 1024

    // The message pool: `poolCount` payloads of `size` bytes, each with a masked frame
    // (random key per frame) built once; a connection sends them in turn.
    let poolCount: Int
    let plain: UnsafeMutablePointer<UInt8>
    let frames: UnsafeMutablePointer<UInt8>
    let frameOffset: UnsafeMutablePointer<Int>
    let frameLength: UnsafeMutablePointer<Int>
    // The same payloads compressed (RSV1), for connections that negotiated deflate.
    let zframes: UnsafeMutablePointer<UInt8>?
    let zframeOffset: UnsafeMutablePointer<Int>
    let zframeLength: UnsafeMutablePointer<Int>
    var deflatedSizes = 0

    // Latency histogram: 1 µs buckets below 65,536 µs, then 1,024 µs buckets.
    let hist: UnsafeMutablePointer<UInt32>
    static let histBuckets = 131_072

    // Side tables, off the hot path.
    var queues: [Int: [UInt8]] = [:]
    var handshakes: [Int: [UInt8]] = [:]
    var acceptValues: [Int: String] = [:]
    var control: [Int: [UInt8]] = [:]
    var inflaters: [StreamInflater?]
    var errorSamples: [String] = []
    var extensionsSeen: [String: Int] = [:]
    var nextToOpen = 0
    var rng = SystemRandomNumberGenerator()
    var addr = sockaddr_in()

    init(_ o: Options) {
        self.o = o
        n = o.connections
        size = o.size
        opcode = o.binary ? 2 : 1
        conns = .allocate(capacity: n)
        conns.initialize(repeating: Conn(), count: n)
        st = .allocate(capacity: 1)
        st.initialize(to: Stats())
        epfd = halley_epoll_create()
        precondition(epfd >= 0, "epoll_create1: \(errnoString())")
        events = .allocate(byteCount: Int(Self.maxEvents) * halley_epoll_event_size(), alignment: 16)
        rbuf = .allocate(capacity: Self.rbufSize)
        scratch = .allocate(capacity: Self.scratchSize)
        hist = .allocate(capacity: Self.histBuckets)
        hist.initialize(repeating: 0, count: Self.histBuckets)
        inflaters = Array(repeating: nil, count: n)

        poolCount = max(1, min(64, (16 << 20) / max(size, 1)))
        plain = .allocate(capacity: max(1, poolCount * size))
        frameOffset = .allocate(capacity: poolCount)
        frameLength = .allocate(capacity: poolCount)
        zframeOffset = .allocate(capacity: poolCount)
        zframeLength = .allocate(capacity: poolCount)
        var lcg: UInt64 = 0x9E37_79B9_7F4A_7C15 ^ UInt64(size)
        let alphabet = Array("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 ,.:{}\"".utf8)
        var payloads: [[UInt8]] = []
        for k in 0..<poolCount {
            var p = [UInt8](repeating: 0, count: size)
            for j in 0..<size {
                lcg = lcg &* 6364136223846793005 &+ 1442695040888963407
                let r = UInt8(truncatingIfNeeded: lcg >> 33)
                p[j] = o.binary ? r : alphabet[Int(r) % alphabet.count]
            }
            if size >= 8 && !o.binary {
                // Pooled messages differ in their first bytes too: a stale echo is caught.
                let tag = Array("#\(k)#".utf8)
                for (j, b) in tag.prefix(size).enumerated() { p[j] = b }
            }
            (plain + k * size).update(from: p, count: size)
            payloads.append(p)
        }
        var rng = SystemRandomNumberGenerator()
        func build(_ bodies: [[UInt8]], rsv1: Bool, _ offsets: UnsafeMutablePointer<Int>,
                   _ lengths: UnsafeMutablePointer<Int>) -> UnsafeMutablePointer<UInt8> {
            var all: [UInt8] = []
            for (k, body) in bodies.enumerated() {
                offsets[k] = all.count
                let f = Bench.maskedFrame(opcode: o.binary ? 2 : 1, rsv1: rsv1, payload: body, key: rng.next())
                lengths[k] = f.count
                all += f
            }
            let p = UnsafeMutablePointer<UInt8>.allocate(capacity: max(1, all.count))
            p.update(from: all, count: all.count)
            return p
        }
        frames = build(payloads, rsv1: false, frameOffset, frameLength)
        if o.deflate {
            let z = payloads.map(deflateMessage)
            deflatedSizes = z.reduce(0) { $0 + $1.count }
            zframes = build(z, rsv1: true, zframeOffset, zframeLength)
        } else {
            zframes = nil
        }
    }

    /// A masked client frame (RFC 6455 §5.2, §5.3).
    static func maskedFrame(opcode: UInt8, rsv1: Bool, payload: [UInt8], key: UInt32) -> [UInt8] {
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

    // MARK: errors

    func error(_ i: Int, _ msg: String) {
        st.pointee.errors += 1
        if errorSamples.count < 20 {
            let line = "connection \(i): \(msg)"
            errorSamples.append(line)
            warn(line)
        }
    }

    /// Records an error and drops the connection.
    func fail(_ i: Int, _ msg: String) {
        error(i, msg)
        let opening = conns[i].phase == .connecting || conns[i].phase == .handshake
        if opening {
            st.pointee.connecting -= 1
            st.pointee.failed += 1
        }
        closeConn(i)
        if opening { openMore() }
    }

    func closeConn(_ i: Int) {
        let c = conns + i
        guard c.pointee.fd >= 0 else { return }
        Glibc.close(c.pointee.fd)
        c.pointee.fd = -1
        c.pointee.phase = .done
        st.pointee.live -= 1
        if c.pointee.outstanding {
            c.pointee.outstanding = false
            st.pointee.outstanding -= 1
        }
        if c.pointee.blocked {
            c.pointee.blocked = false
            queues[i] = nil
        }
        inflaters[i] = nil
        control[i] = nil
        handshakes[i] = nil
    }

    // MARK: the loop

    /// One epoll_wait and its events.
    @inline(__always)
    func pump(_ timeoutMs: Int32) {
        let got = epoll_wait(epfd, events.assumingMemoryBound(to: epoll_event.self), Self.maxEvents, timeoutMs)
        if got < 0 {
            if errno != EINTR { warn("epoll_wait: \(errnoString())"); exit(1) }
            return
        }
        let evs = events.assumingMemoryBound(to: epoll_event.self)
        for k in 0..<Int(got) {
            let i = Int(truncatingIfNeeded: halley_epoll_event_data(evs, Int32(k)))
            let ev = halley_epoll_event_events(evs, Int32(k))
            dispatch(i, ev)
        }
    }

    static let evIn = UInt32(EPOLLIN.rawValue)
    static let evOut = UInt32(EPOLLOUT.rawValue)
    static let evErr = UInt32(EPOLLERR.rawValue)
    static let evHup = UInt32(EPOLLHUP.rawValue)

    @inline(__always)
    func dispatch(_ i: Int, _ ev: UInt32) {
        let c = conns + i
        switch c.pointee.phase {
        case .idle, .done:
            return  // an event for a connection closed earlier in this batch
        case .connecting:
            connected(i)
        default:
            if ev & Self.evOut != 0 && c.pointee.blocked { flushQueue(i) }
            if c.pointee.fd >= 0 && ev & (Self.evIn | Self.evErr | Self.evHup) != 0 { readable(i) }
        }
    }

    func readable(_ i: Int) {
        let c = conns + i
        for _ in 0..<4 {
            let fd = c.pointee.fd
            if fd < 0 { return }
            let got = Glibc.read(fd, rbuf, Self.rbufSize)
            if got > 0 {
                if c.pointee.phase == .handshake {
                    handshakeBytes(i, got)
                } else {
                    parse(i, rbuf, got)
                }
                if got < Self.rbufSize { return }
                continue
            }
            if got == 0 {
                eof(i)
                return
            }
            let e = errno
            if e == EAGAIN || e == EWOULDBLOCK || e == EINTR { return }
            if c.pointee.phase == .closeSent {
                st.pointee.resets += 1
                closeConn(i)
            } else {
                fail(i, "read: \(errnoString(e)) (phase \(c.pointee.phase))")
            }
            return
        }
    }

    func eof(_ i: Int) {
        let c = conns + i
        switch c.pointee.phase {
        case .closeSent:
            if !c.pointee.gotClose { st.pointee.serverCloses += 1 }  // EOF without a close frame
            closeConn(i)
        case .handshake:
            fail(i, "the server closed the connection during the handshake")
        default:
            fail(i, "the server closed the TCP connection (outstanding echo: \(c.pointee.outstanding))")
        }
    }

    // MARK: writing

    /// Writes now, or queues behind bytes the socket has not taken yet.
    @inline(__always)
    func sendBytes(_ i: Int, _ p: UnsafePointer<UInt8>, _ len: Int) {
        let c = conns + i
        if c.pointee.blocked {
            queues[i, default: []].append(contentsOf: UnsafeBufferPointer(start: p, count: len))
            return
        }
        var w = Glibc.write(c.pointee.fd, p, len)
        if w == len { return }
        if w < 0 {
            let e = errno
            guard e == EAGAIN || e == EWOULDBLOCK || e == EINTR else {
                fail(i, "write: \(errnoString(e))")
                return
            }
            w = 0
        }
        queues[i] = Array(UnsafeBufferPointer(start: p + w, count: len - w))
        c.pointee.blocked = true
        _ = halley_epoll_ctl(epfd, EPOLL_CTL_MOD, c.pointee.fd, Self.evIn | Self.evOut, UInt64(i))
    }

    func flushQueue(_ i: Int) {
        let c = conns + i
        guard var q = queues[i], !q.isEmpty else { return }
        let w = q.withUnsafeBytes { Glibc.write(c.pointee.fd, $0.baseAddress, $0.count) }
        if w < 0 {
            let e = errno
            if e == EAGAIN || e == EWOULDBLOCK || e == EINTR { return }
            fail(i, "write: \(errnoString(e))")
            return
        }
        if w < q.count {
            q.removeFirst(w)
            queues[i] = q
            return
        }
        queues[i] = nil
        c.pointee.blocked = false
        _ = halley_epoll_ctl(epfd, EPOLL_CTL_MOD, c.pointee.fd, Self.evIn, UInt64(i))
    }

    @inline(__always)
    func sendNext(_ i: Int, _ now: Int64) {
        let c = conns + i
        let k = st.pointee.nextPick
        st.pointee.nextPick = k + 1 == poolCount ? 0 : k + 1
        c.pointee.expect = k
        c.pointee.sentAt = now
        c.pointee.outstanding = true
        st.pointee.outstanding += 1
        st.pointee.totalSent += 1
        if c.pointee.deflate != 0, let z = zframes {
            sendBytes(i, z + zframeOffset[k], zframeLength[k])
        } else {
            sendBytes(i, frames + frameOffset[k], frameLength[k])
        }
    }

    func sendControl(_ i: Int, opcode: UInt8, payload: [UInt8]) {
        let f = Self.maskedFrame(opcode: opcode, rsv1: false, payload: payload, key: rng.next())
        f.withUnsafeBufferPointer { sendBytes(i, $0.baseAddress!, $0.count) }
    }

    // MARK: frames from the server

    /// Reads frames in place from `count` bytes at `start`; a header split across reads is
    /// gathered in the connection's 16 bytes, payloads are consumed as they come.
    @inline(__always)
    func parse(_ i: Int, _ start: UnsafeMutablePointer<UInt8>, _ count: Int) {
        let c = conns + i
        var p = start
        let end = start + count
        while p < end || (c.pointee.inFrame && c.pointee.frameRemaining == 0) {
            if !c.pointee.inFrame {
                if c.pointee.hdrCount == 0 && end - p >= 2 {
                    let need = Self.headerLength(p[1])
                    if end - p >= need {
                        if !beginFrame(i, p) { return }
                        p += need
                    } else if !gatherHeader(i, &p, end) {
                        return
                    }
                } else if !gatherHeader(i, &p, end) {
                    return
                }
            }
            let k = min(c.pointee.frameRemaining, end - p)
            if k > 0 {
                payload(i, p, k)
                p += k
                c.pointee.frameRemaining -= k
                if c.pointee.fd < 0 { return }
            }
            if c.pointee.frameRemaining == 0 {
                endFrame(i)
                if c.pointee.fd < 0 { return }
            }
        }
    }

    @inline(__always)
    static func headerLength(_ b1: UInt8) -> Int {
        let l7 = b1 & 0x7F
        return 2 + (l7 == 126 ? 2 : l7 == 127 ? 8 : 0) + (b1 & 0x80 != 0 ? 4 : 0)
    }

    /// Copies header bytes into the connection until the header is whole; true when it is
    /// (and the frame has begun), false when the bytes ran out or the frame was refused.
    func gatherHeader(_ i: Int, _ p: inout UnsafeMutablePointer<UInt8>, _ end: UnsafeMutablePointer<UInt8>) -> Bool {
        let c = conns + i
        return withUnsafeMutableBytes(of: &c.pointee.hdr) { h -> Bool in
            while p < end {
                h[c.pointee.hdrCount] = p.pointee
                c.pointee.hdrCount += 1
                p += 1
                if c.pointee.hdrCount >= 2 && c.pointee.hdrCount == Self.headerLength(h[1]) {
                    c.pointee.hdrCount = 0
                    return beginFrame(i, h.baseAddress!.assumingMemoryBound(to: UInt8.self))
                }
            }
            return false
        }
    }

    /// Checks a whole frame header (RFC 6455 §5.2, RFC 7692 §6) and starts the frame.
    @inline(__always)
    func beginFrame(_ i: Int, _ h: UnsafePointer<UInt8>) -> Bool {
        let c = conns + i
        let b0 = h[0], b1 = h[1]
        if b1 & 0x80 != 0 { fail(i, "masked frame from the server"); return false }
        if b0 & 0x30 != 0 { fail(i, "RSV2/RSV3 set"); return false }
        var len = Int(b1 & 0x7F)
        if len == 126 {
            len = Int(h[2]) << 8 | Int(h[3])
            if len < 126 { fail(i, "16-bit length \(len) not minimal"); return false }
        } else if len == 127 {
            var v: UInt64 = 0
            for j in 2..<10 { v = v << 8 | UInt64(h[j]) }
            if v >> 63 != 0 { fail(i, "64-bit length with the top bit set"); return false }
            if v < 65536 { fail(i, "64-bit length \(v) not minimal"); return false }
            if v > UInt64(Int32.max) { fail(i, "frame of \(v) bytes"); return false }
            len = Int(v)
        }
        let op = b0 & 0x0F
        let fin = b0 & 0x80 != 0
        let rsv1 = b0 & 0x40 != 0
        if op >= 8 {
            if op > 10 { fail(i, "reserved control opcode \(op)"); return false }
            if !fin || len > 125 { fail(i, "fragmented or long control frame (opcode \(op), \(len) B)"); return false }
            if rsv1 { fail(i, "RSV1 on a control frame"); return false }
        } else if op == 0 {
            if c.pointee.msgOpcode == 0 { fail(i, "continuation frame outside a message"); return false }
            if rsv1 { fail(i, "RSV1 on a continuation frame"); return false }
        } else if op <= 2 {
            if c.pointee.msgOpcode != 0 { fail(i, "new data frame inside a fragmented message"); return false }
            if rsv1 && c.pointee.deflate == 0 { fail(i, "RSV1 without permessage-deflate"); return false }
            if !c.pointee.outstanding {
                fail(i, "a message the client did not ask for (opcode \(op), \(len) B, phase \(c.pointee.phase))")
                return false
            }
            c.pointee.msgOpcode = op
            c.pointee.msgCompressed = rsv1
            c.pointee.msgLen = 0
            c.pointee.msgOk = true
            var verify = false
            if o.verifyEvery > 0 {
                st.pointee.verifyCounter += 1
                if st.pointee.verifyCounter >= o.verifyEvery {
                    st.pointee.verifyCounter = 0
                    verify = true
                }
            }
            c.pointee.msgVerify = verify
        } else {
            fail(i, "reserved data opcode \(op)")
            return false
        }
        c.pointee.frameOpcode = op
        c.pointee.frameFin = fin
        c.pointee.frameRemaining = len
        c.pointee.inFrame = true
        return true
    }

    @inline(__always)
    func payload(_ i: Int, _ p: UnsafeMutablePointer<UInt8>, _ k: Int) {
        let c = conns + i
        if c.pointee.frameOpcode >= 8 {
            control[i, default: []].append(contentsOf: UnsafeBufferPointer(start: p, count: k))
            return
        }
        if c.pointee.msgCompressed {
            guard let z = inflaters[i] else { fail(i, "compressed frame without an inflater"); return }
            let ok = z.feed(p, k, scratch: scratch, scratchSize: Self.scratchSize) { out, m in check(c, out, m) }
            if !ok { fail(i, "corrupt compressed message") }
            return
        }
        check(c, p, k)
    }

    /// Compares `k` echoed bytes with the sent message at the current offset.
    @inline(__always)
    func check(_ c: UnsafeMutablePointer<Conn>, _ p: UnsafePointer<UInt8>, _ k: Int) {
        let at = c.pointee.msgLen
        c.pointee.msgLen = at + k
        if at + k > size {
            c.pointee.msgOk = false
        } else if c.pointee.msgVerify && memcmp(plain + c.pointee.expect * size + at, p, k) != 0 {
            c.pointee.msgOk = false
        }
    }

    @inline(__always)
    func endFrame(_ i: Int) {
        let c = conns + i
        c.pointee.inFrame = false
        let op = c.pointee.frameOpcode
        if op >= 8 {
            controlFrame(i, op)
            return
        }
        guard c.pointee.frameFin else { return }
        if c.pointee.msgCompressed {
            guard let z = inflaters[i] else { fail(i, "compressed frame without an inflater"); return }
            let ok = StreamInflater.tail.withUnsafeBufferPointer { t in
                z.feed(t.baseAddress!, 4, scratch: scratch, scratchSize: Self.scratchSize) { out, m in check(c, out, m) }
            }
            if !ok { fail(i, "corrupt compressed message"); return }
            if c.pointee.deflate == 1 { z.reset() }
            st.pointee.compressedEchoes += 1
        }
        let mop = c.pointee.msgOpcode
        c.pointee.msgOpcode = 0
        if mop != opcode || c.pointee.msgLen != size || !c.pointee.msgOk {
            let what = mop != opcode ? "opcode \(mop), expected \(opcode)"
                : c.pointee.msgLen != size ? "\(c.pointee.msgLen) bytes, expected \(size)"
                : "content differs from message #\(c.pointee.expect) that was sent"
            fail(i, "wrong echo: \(what)\(c.pointee.msgCompressed ? " (compressed)" : "")")
            return
        }
        if c.pointee.msgVerify { st.pointee.verified += 1 }
        // The echo is whole: count it, and send the next message (closed loop).
        let now = monotonicNanos()
        c.pointee.outstanding = false
        st.pointee.outstanding -= 1
        st.pointee.totalEchoes += 1
        if st.pointee.measuring {
            let ns = now - c.pointee.sentAt
            st.pointee.windowMessages += 1
            st.pointee.windowLatencySumNs += ns
            if ns > st.pointee.windowMaxNs { st.pointee.windowMaxNs = ns }
            let us = Int(ns / 1000)
            hist[us < 65536 ? us : 65536 + min((us - 65536) >> 10, 65535)] += 1
        }
        if st.pointee.sending && c.pointee.phase == .open { sendNext(i, now) }
    }

    func controlFrame(_ i: Int, _ op: UInt8) {
        let c = conns + i
        let body = control[i] ?? []
        control[i] = nil
        switch op {
        case 9:  // ping: pong with the same payload
            st.pointee.pings += 1
            if c.pointee.phase == .open { sendControl(i, opcode: 10, payload: body) }
        case 10:
            break
        default:  // close
            if body.count == 1 { fail(i, "close frame with a 1-byte payload"); return }
            let code = body.count >= 2 ? Int(body[0]) << 8 | Int(body[1]) : -1
            if c.pointee.phase == .closeSent {
                c.pointee.gotClose = true
                if code != 1000 && code != -1 { error(i, "close reply with code \(code)") }
                // Wait for the server to close the TCP connection (RFC 6455 §7.1.1).
                return
            }
            let reason = String(decoding: body.dropFirst(2), as: UTF8.self)
            sendControl(i, opcode: 8, payload: Array(body.prefix(2)))
            fail(i, "the server closed the WebSocket: code \(code) '\(reason)'")
        }
    }

    // MARK: connecting

    func openMore() {
        while st.pointee.connecting < o.connectInflight && nextToOpen < n {
            let i = nextToOpen
            nextToOpen += 1
            startConnect(i)
        }
    }

    func startConnect(_ i: Int) {
        let c = conns + i
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_NONBLOCK.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        if fd < 0 {
            error(i, "socket: \(errnoString())")
            st.pointee.failed += 1
            return
        }
        var one: Int32 = 1
        setsockopt(fd, Int32(IPPROTO_TCP), TCP_NODELAY, &one, socklen_t(MemoryLayout<Int32>.size))
        let rc = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        if rc != 0 && errno != EINPROGRESS {
            error(i, "connect: \(errnoString())")
            Glibc.close(fd)
            st.pointee.failed += 1
            return
        }
        c.pointee.fd = fd
        c.pointee.phase = .connecting
        st.pointee.live += 1
        st.pointee.connecting += 1
        if halley_epoll_ctl(epfd, EPOLL_CTL_ADD, fd, Self.evIn | Self.evOut, UInt64(i)) != 0 {
            fail(i, "epoll_ctl: \(errnoString())")
        }
    }

    func connected(_ i: Int) {
        let c = conns + i
        var err: Int32 = 0
        var len = socklen_t(MemoryLayout<Int32>.size)
        getsockopt(c.pointee.fd, SOL_SOCKET, SO_ERROR, &err, &len)
        if err != 0 {
            fail(i, "connect: \(errnoString(err))")
            return
        }
        var key = [UInt8](repeating: 0, count: 16)
        for j in 0..<16 { key[j] = UInt8.random(in: 0...255, using: &rng) }
        let keyText = base64(key)
        acceptValues[i] = base64(sha1(Array((keyText + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").utf8)))
        var req = "GET \(o.path) HTTP/1.1\r\nHost: \(o.host):\(o.port)\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        req += "Sec-WebSocket-Key: \(keyText)\r\nSec-WebSocket-Version: 13\r\n"
        if o.deflate { req += "Sec-WebSocket-Extensions: permessage-deflate; client_no_context_takeover\r\n" }
        req += "\r\n"
        c.pointee.phase = .handshake
        _ = halley_epoll_ctl(epfd, EPOLL_CTL_MOD, c.pointee.fd, Self.evIn, UInt64(i))
        let bytes = Array(req.utf8)
        bytes.withUnsafeBufferPointer { sendBytes(i, $0.baseAddress!, $0.count) }
    }

    func handshakeBytes(_ i: Int, _ got: Int) {
        let c = conns + i
        var buf = handshakes[i] ?? []
        buf.append(contentsOf: UnsafeBufferPointer(start: rbuf, count: got))
        guard let end = Self.headEnd(buf) else {
            if buf.count > 16384 { fail(i, "no end of the response head in 16 KiB") } else { handshakes[i] = buf }
            return
        }
        handshakes[i] = nil
        let head = String(decoding: buf[..<end], as: UTF8.self)
        let lines = head.split(separator: "\r\n", omittingEmptySubsequences: false)
        guard let status = lines.first, status.hasPrefix("HTTP/1.1 101") else {
            fail(i, "handshake refused: '\(lines.first ?? "")'")
            return
        }
        var headers: [String: [String]] = [:]
        for l in lines.dropFirst() {
            guard let colon = l.firstIndex(of: ":") else { continue }
            headers[l[..<colon].lowercased(), default: []].append(Self.trim(l[l.index(after: colon)...]))
        }
        guard headers["upgrade"]?.first?.lowercased() == "websocket" else { fail(i, "101 without Upgrade: websocket"); return }
        guard headers["connection"]?.first?.lowercased().contains("upgrade") == true else { fail(i, "101 without Connection: upgrade"); return }
        guard let accept = headers["sec-websocket-accept"], accept.count == 1, accept[0] == acceptValues[i] else {
            fail(i, "Sec-WebSocket-Accept \(headers["sec-websocket-accept"] ?? []) != \(acceptValues[i] ?? "?")")
            return
        }
        acceptValues[i] = nil
        if let ext = headers["sec-websocket-extensions"] {
            let value = ext.joined(separator: ", ")
            guard o.deflate else { fail(i, "extension '\(value)' the client did not offer"); return }
            let params = value.split(separator: ";").map { Self.trim($0).lowercased() }
            guard params.first == "permessage-deflate", !value.contains(",") else { fail(i, "unexpected extensions '\(value)'"); return }
            for p in params.dropFirst() {
                let name = p.split(separator: "=").first.map(String.init) ?? p
                guard ["server_no_context_takeover", "client_no_context_takeover", "server_max_window_bits"].contains(name) else {
                    fail(i, "permessage-deflate parameter '\(p)' not acceptable to this client")
                    return
                }
            }
            extensionsSeen[value, default: 0] += 1
            c.pointee.deflate = params.contains("server_no_context_takeover") ? 1 : 2
            inflaters[i] = StreamInflater()
        } else {
            extensionsSeen["(none)", default: 0] += 1
        }
        c.pointee.phase = .open
        st.pointee.connecting -= 1
        st.pointee.opened += 1
        openMore()
        if end + 4 < buf.count {
            var rest = Array(buf[(end + 4)...])
            rest.withUnsafeMutableBufferPointer { parse(i, $0.baseAddress!, $0.count) }
        }
    }

    /// Index of "\r\n\r\n" in `b`.
    static func headEnd(_ b: [UInt8]) -> Int? {
        guard b.count >= 4 else { return nil }
        for j in 0...(b.count - 4) where b[j] == 13 && b[j + 1] == 10 && b[j + 2] == 13 && b[j + 3] == 10 { return j }
        return nil
    }

    static func trim(_ s: Substring) -> String {
        var t = s
        while let f = t.first, f == " " || f == "\t" { t = t.dropFirst() }
        while let l = t.last, l == " " || l == "\t" { t = t.dropLast() }
        return String(t)
    }

    // MARK: the run

    func waitUntil(_ deadline: Int64, while condition: () -> Bool) {
        while condition() {
            let left = deadline - monotonicNanos()
            if left <= 0 { return }
            pump(Int32(min(1000, (left + 999_999) / 1_000_000)))
        }
    }

    func percentile(_ q: Double) -> Int {
        let total = st.pointee.windowMessages
        guard total > 0 else { return 0 }
        let rank = max(1, Int((q * Double(total)).rounded(.up)))
        var seen = 0
        for b in 0..<Self.histBuckets {
            seen += Int(hist[b])
            if seen >= rank { return b < 65536 ? b : 65536 + (b - 65536) << 10 }
        }
        return Int(st.pointee.windowMaxNs / 1000)
    }

    func run() -> Int32 {
        halley_ignore_sigpipe()
        var rl = rlimit()
        getrlimit(__rlimit_resource_t(RLIMIT_NOFILE.rawValue), &rl)
        if rl.rlim_cur < rl.rlim_max {
            rl.rlim_cur = rl.rlim_max
            setrlimit(__rlimit_resource_t(RLIMIT_NOFILE.rawValue), &rl)
            getrlimit(__rlimit_resource_t(RLIMIT_NOFILE.rawValue), &rl)
        }
        if Int(rl.rlim_cur) < n + 16 {
            warn("RLIMIT_NOFILE is \(rl.rlim_cur): too low for \(n) connections")
            return 1
        }
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_port = in_port_t(UInt16(o.port).bigEndian)
        guard inet_pton(AF_INET, o.host, &addr.sin_addr) == 1 else {
            warn("--url: host '\(o.host)' is not an IPv4 address")
            return 2
        }

        // 1. Open every connection.
        let tOpen = monotonicNanos()
        openMore()
        waitUntil(tOpen + Int64(o.connectTimeout * 1e9)) { st.pointee.opened + st.pointee.failed < n }
        let openSeconds = Double(monotonicNanos() - tOpen) / 1e9
        let ext = extensionsSeen.map { "\($0.value) x \($0.key)" }.sorted().joined(separator: "; ")
        warn("\(st.pointee.opened) of \(n) connections open in \(fixed(openSeconds, 2)) s (extensions: \(ext.isEmpty ? "-" : ext))")
        if st.pointee.opened < n {
            warn("\(n - st.pointee.opened) connections did not open (\(st.pointee.failed) failed, \(st.pointee.connecting) still opening)")
            return 1
        }
        if o.deflate && zframes != nil {
            let plainBytes = poolCount * size
            warn("sending compressed messages where deflate was negotiated: \(plainBytes) B of payload deflate to \(deflatedSizes) B")
        }

        // 2. Warm up, then the measured window.
        let start = monotonicNanos()
        st.pointee.sending = true
        for i in 0..<n where conns[i].phase == .open { sendNext(i, start) }
        let warmEnd = start + Int64(o.warmup * 1e9)
        waitUntil(warmEnd) { true }
        let server0 = o.serverPids.map(processCPUSeconds)
        let cores0 = coreTimes()
        let t0 = monotonicNanos()
        let cpu0 = cpuSeconds()
        let echoes0 = st.pointee.totalEchoes
        st.pointee.measuring = true
        waitUntil(t0 + Int64(o.duration * 1e9)) { true }
        st.pointee.measuring = false
        st.pointee.sending = false
        let t1 = monotonicNanos()
        let cpu1 = cpuSeconds()
        let cores1 = coreTimes()
        let server1 = o.serverPids.map(processCPUSeconds)
        let warmupEchoes = echoes0

        // 3. Wait for the echoes still in flight, then close every connection properly.
        waitUntil(t1 + Int64(o.drainTimeout * 1e9)) { st.pointee.outstanding > 0 }
        let unanswered = st.pointee.outstanding
        if unanswered > 0 {
            st.pointee.errors += 1
            warn("\(unanswered) echoes did not arrive within \(o.drainTimeout) s after the window")
        }
        let closing = st.pointee.live
        for i in 0..<n where conns[i].phase == .open {
            sendControl(i, opcode: 8, payload: [0x03, 0xE8])  // 1000
            if conns[i].fd >= 0 { conns[i].phase = .closeSent }
        }
        let tc = monotonicNanos()
        waitUntil(tc + Int64(o.drainTimeout * 1e9)) { st.pointee.live > 0 }
        var closeReplies = 0
        for i in 0..<n where conns[i].gotClose { closeReplies += 1 }
        let stillOpen = st.pointee.live
        for i in 0..<n { closeConn(i) }

        // 4. Report.
        let seconds = Double(t1 - t0) / 1e9
        let msgs = st.pointee.windowMessages
        let cpuUser = cpu1.user - cpu0.user
        let cpuSys = cpu1.system - cpu0.system
        let mean = msgs > 0 ? Double(st.pointee.windowLatencySumNs) / Double(msgs) / 1000 : 0
        var line = "messages=\(msgs) seconds=\(fixed(seconds, 3)) msgs_per_sec=\(fixed(Double(msgs) / seconds, 1))"
        line += " p50_us=\(percentile(0.50)) p99_us=\(percentile(0.99)) p999_us=\(percentile(0.999))"
        line += " max_us=\(st.pointee.windowMaxNs / 1000) mean_us=\(fixed(mean, 1))"
        line += " connections=\(n) size=\(size) type=\(o.binary ? "binary" : "text") deflate=\(o.deflate ? "offered" : "off")"
        line += " compressed_echoes=\(st.pointee.compressedEchoes) verified=\(st.pointee.verified)"
        line += " sent=\(st.pointee.totalSent) echoes=\(st.pointee.totalEchoes) warmup_echoes=\(warmupEchoes)"
        line += " client_cpu_pct=\(fixed(100 * (cpuUser + cpuSys) / seconds, 1)) client_user_s=\(fixed(cpuUser, 3)) client_sys_s=\(fixed(cpuSys, 3))"
        line += " errors=\(st.pointee.errors) unanswered=\(unanswered) pings=\(st.pointee.pings)"
        line += " closed=\(closing) close_replies=\(closeReplies) close_no_eof=\(stillOpen) close_resets=\(st.pointee.resets)"
        line += " eof_without_close=\(st.pointee.serverCloses)"
        if !o.serverPids.isEmpty {
            var serverCPU = 0.0
            var readable = true
            for (a, b) in zip(server0, server1) {
                if let a = a, let b = b { serverCPU += b - a } else { readable = false }
            }
            if readable {
                line += " server_cpu_s=\(fixed(serverCPU, 2)) server_cpu_pct=\(fixed(100 * serverCPU / seconds, 1))"
                line += " msgs_per_server_cpu_s=\(serverCPU > 0 ? fixed(Double(msgs) / serverCPU, 0) : "inf")"
            } else {
                warn("could not read /proc/PID/stat of \(o.serverPids)")
                line += " server_cpu_s=? server_cpu_pct=? msgs_per_server_cpu_s=?"
            }
        }
        if cores0.count == cores1.count && !cores0.isEmpty {
            let busy = zip(cores0, cores1).enumerated().map { (k, p) -> String in
                let total = p.1.0 - p.0.0, idle = p.1.1 - p.0.1
                return "\(k):\(total > 0 ? 100 * (total - idle) / total : 0)"
            }
            line += " core_busy_pct=\(busy.joined(separator: ","))"
        }
        print(line)
        if st.pointee.errors > 0 {
            warn("\(st.pointee.errors) error(s); the first ones are above")
            return 1
        }
        return 0
    }
}
