#if canImport(Glibc)
import Glibc
#endif
import CHalleyLinux
import COpenSSL

enum Phase: UInt8 {
    /// `tls`: the TLS handshake (wss), before the HTTP upgrade (`handshake`).
    case idle, connecting, tls, handshake, open, closeSent, done
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
    /// TLS: an SSL_read asked to write (WANT_WRITE): read again when the socket is writable.
    var tlsReadWantsWrite = false
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
    /// wss: every connection's SSL (OpenSSL on the socket), nil for ws.
    let tls: Bool
    let sslCtx: OpaquePointer?
    let ssls: UnsafeMutablePointer<OpaquePointer?>
    var tlsSeen: [String: Int] = [:]

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
        tls = o.tls
        sslCtx = o.tls ? TLSClient.makeContext(readAhead: true) : nil
        ssls = .allocate(capacity: n)
        ssls.initialize(repeating: nil, count: n)

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
        func build(
            _ bodies: [[UInt8]], rsv1: Bool, _ offsets: UnsafeMutablePointer<Int>,
            _ lengths: UnsafeMutablePointer<Int>
        ) -> UnsafeMutablePointer<UInt8> {
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
            for s in stride(from: 56, through: 0, by: -8) {
                f.append(UInt8(truncatingIfNeeded: UInt64(len) >> UInt64(s)))
            }
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
        let opening = conns[i].phase == .connecting || conns[i].phase == .tls || conns[i].phase == .handshake
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
        if let ssl = ssls[i] {
            // close_notify, best effort (the socket may be closed by the peer already).
            if SSL_is_init_finished(ssl) == 1 { _ = SSL_shutdown(ssl) }
            ERR_clear_error()
            SSL_free(ssl)
            ssls[i] = nil
        }
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
        case .tls:
            tlsHandshakeStep(i)
        default:
            if ev & Self.evOut != 0 && c.pointee.blocked { flushQueue(i) }
            if c.pointee.fd >= 0 && ev & (Self.evIn | Self.evErr | Self.evHup) != 0 {
                readable(i)
            } else if tls && c.pointee.tlsReadWantsWrite && ev & Self.evOut != 0 {
                readable(i)
            }
        }
    }

    func readable(_ i: Int) {
        if tls {
            readableTLS(i)
            return
        }
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
        if tls {
            sendBytesTLS(i, p, len)
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
        if tls {
            flushQueueTLS(i, &q)
            return
        }
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
        warn(
            "\(st.pointee.opened) of \(n) connections open in \(fixed(openSeconds, 2)) s (extensions: \(ext.isEmpty ? "-" : ext))"
        )
        if tls {
            warn("TLS: \(tlsSeen.map { "\($0.value) x \($0.key)" }.sorted().joined(separator: "; "))")
        }
        if st.pointee.opened < n {
            warn(
                "\(n - st.pointee.opened) connections did not open (\(st.pointee.failed) failed, \(st.pointee.connecting) still opening)"
            )
            return 1
        }
        if o.deflate && zframes != nil {
            let plainBytes = poolCount * size
            warn(
                "sending compressed messages where deflate was negotiated: \(plainBytes) B of payload deflate to \(deflatedSizes) B"
            )
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
        line +=
            " connections=\(n) size=\(size) type=\(o.binary ? "binary" : "text") deflate=\(o.deflate ? "offered" : "off")"
        line += " compressed_echoes=\(st.pointee.compressedEchoes) verified=\(st.pointee.verified)"
        line += " sent=\(st.pointee.totalSent) echoes=\(st.pointee.totalEchoes) warmup_echoes=\(warmupEchoes)"
        line +=
            " client_cpu_pct=\(fixed(100 * (cpuUser + cpuSys) / seconds, 1)) client_user_s=\(fixed(cpuUser, 3)) client_sys_s=\(fixed(cpuSys, 3))"
        line += " errors=\(st.pointee.errors) unanswered=\(unanswered) pings=\(st.pointee.pings)"
        line +=
            " closed=\(closing) close_replies=\(closeReplies) close_no_eof=\(stillOpen) close_resets=\(st.pointee.resets)"
        line += " eof_without_close=\(st.pointee.serverCloses)"
        if tls { line += " tls=1 tls_tickets=\(TLSClient.ticketsReceived)" }
        line += cpuFields(
            serverPids: o.serverPids, server0: server0, server1: server1, cores0: cores0, cores1: cores1,
            seconds: seconds, count: msgs, unit: "msgs")
        print(line)
        if st.pointee.errors > 0 {
            warn("\(st.pointee.errors) error(s); the first ones are above")
            return 1
        }
        return 0
    }
}
