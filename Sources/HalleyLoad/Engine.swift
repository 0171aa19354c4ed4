#if canImport(Glibc)
import Glibc
#endif
import CHalleyLinux
import COpenSSL

enum Kind: UInt8 { case echo, ws, longpoll, xhr, publisher, handshake }
enum CState: UInt8 { case idle, connecting, tls, upgrading, open, closing, done }
enum PublishMode: UInt8 { case off, sync, rate, window }

/// One connection, in a table allocated once and indexed by connection number (the epoll
/// data): echo connections, handshake slots or subscribers 0..<n, publishers n..<total.
struct Conn {
    var fd: Int32 = -1
    var kind = Kind.echo
    var state = CState.idle
    /// Fanout protocol step: halley WebSocket 0 waiting for connection_established, 1 for
    /// subscription_succeeded, 2 live; halley long-poll 0 opening the session, 1 subscribing,
    /// 2 polling; xhr_streaming see Fanout.swift; nchan 2 from the start.
    var step: UInt8 = 0
    /// Bumped when the socket closes: a caller still working on its bytes drops the rest.
    var gen: UInt32 = 0
    var blocked = false
    /// A request (HTTP) or a message (echo) is in flight.
    var awaiting = false
    /// HTTP: the server said Connection: close; reopen after the current answer.
    var reopen = false
    var ready = false
    var gotClose = false
    var tlsWantsWrite = false
    /// Echo with permessage-deflate: 1 server_no_context_takeover, 2 context takeover.
    var deflate: UInt8 = 0
    /// The data message being read: its opcode (0: none), compressed, bytes so far, right so far.
    var msgOpcode: UInt8 = 0
    var msgCompressed = false
    var msgOk = true
    var msgLen = 0
    /// Echo: the pooled message in flight. Fanout: the lowest seq not received yet (-1 before
    /// the first) and, in `seen`, which of the 64 after it were.
    var expect: Int64 = -1
    var seen: UInt64 = 0
    var inRange = 0
    var cursor: Int64 = 0
    /// When the message (echo), the connect (handshakes) or the request (publisher) went out.
    var sentAt: Int64 = 0
    var streamBytes = 0
    var pend = ByteBuf()  // input not parsed yet
    var out = ByteBuf()  // output the socket has not taken yet
    var req = ByteBuf()  // HTTP: the request to send (again after a reconnect)
    var prefix = ByteBuf()  // halley poll: "GET /halley/poll?session=S&cursor="; xhr: the stream request
    var auth = ByteBuf()  // halley poll: "X-Halley-Token: T\r\n" (tokens stay out of URLs)
    var frag = ByteBuf()  // a fragmented message being gathered (fanout)
}

/// Counters touched on the hot path, in memory allocated once (a `var` of a class costs an
/// exclusivity check on every access).
struct Stats {
    var live = 0, connecting = 0, ready = 0, failed = 0, errors = 0
    var measuring = false, sending = false, windowCount = 0
    var pings = 0, resets = 0, eofWithoutClose = 0
    var sent = 0, echoes = 0, compressedEchoes = 0, nextPick = 0, outstanding = 0
    var handshakes = 0, completed = 0, resumed = 0, timeouts = 0
    var mode = PublishMode.off
    var nextSeq: Int64 = 0, oldest: Int64 = 0, target = 0
    var interval: Int64 = 0, nextDue: Int64 = 0, timerArmedFor: Int64 = -1
    var freeCount = 0, published = 0, pubLate = 0, pubBehindMax: Int64 = 0, stalls = 0
    var rangeFrom: Int64 = 0, rangeTo: Int64 = .max, rangeReceived = 0
    /// Open-loop echo: connections with no message in flight (a queue: `idleHead`, count), when
    /// the schedule started, the messages it has been through, those it found no free
    /// connection for, the milliseconds it has seen and those it woke too late for.
    var idleHead = 0, idleCount = 0, scheduleStart: Int64 = 0, scheduled = 0, missed = 0
    var lastTick: Int64 = -1, ticks = 0, lateTicks = 0
    var gotFirst = 0, dups = 0, skipped = 0, reordered = 0, foreign = 0, other = 0, reconnects = 0, rotations = 0
}

final class Load {
    static let ringSize = 1 << 16
    static let ringMask = Int64(ringSize - 1)
    static let timerId: UInt64 = 1 << 40
    static let rbufSize = 256 * 1024
    static let evIn = UInt32(EPOLLIN.rawValue), evOut = UInt32(EPOLLOUT.rawValue)
    static let evErrHup = UInt32(EPOLLERR.rawValue | EPOLLHUP.rawValue)
    /// Tickets (TLS 1.3 NewSessionTicket, TLS 1.2 sessions) the servers sent: counted, never kept.
    nonisolated(unsafe) static var tickets = 0

    let o: Options
    let n: Int
    let total: Int
    let conns: UnsafeMutablePointer<Conn>
    let st: UnsafeMutablePointer<Stats>
    let lat = Histogram()
    let epfd: Int32
    let timerfd: Int32
    let events: UnsafeMutableRawPointer
    let rbuf: UnsafeMutablePointer<UInt8>
    let zout: UnsafeMutablePointer<UInt8>  // inflated echoes
    /// Decoded chunked bodies and the publish request being built; [1]: its body.
    let scratch: UnsafeMutablePointer<ByteBuf>
    let ssls: UnsafeMutablePointer<OpaquePointer?>
    let sslCtx: OpaquePointer?
    let pool: EchoPool
    var inflaters: [StreamInflater?]
    /// Fanout, per message seq (mod ringSize): deliveries so far, and when it was published.
    let ringCount: UnsafeMutablePointer<Int32>
    let ringSent: UnsafeMutablePointer<Int64>
    /// Publisher connections with no request in flight.
    let freePubs: UnsafeMutablePointer<Int>
    /// Open-loop echo: the connections with no message in flight, oldest first (a ring of n
    /// from `Stats.idleHead`, `Stats.idleCount` long), so that every connection takes turns.
    let idle: UnsafeMutablePointer<Int>
    /// The servers connections go to: [0] --url's, then fanout's --sub-url ones (see `server`);
    /// each one's address and Host header.
    let servers: [(host: String, port: Int)]
    var addrs: [sockaddr_in] = []
    let hostHeaders: [[UInt8]]
    let subscribeJSON: [UInt8]
    /// The publish request up to the Content-Length value.
    let publishHead: [UInt8]

    var nextToOpen = 0
    var running = true
    var acceptValues: [Int: String] = [:]
    var xhrSendRequests: [Int: [UInt8]] = [:]
    var seenTLS: [String: Int] = [:]
    var seenExtensions: [String: Int] = [:]
    var errorSamples = 0
    var lastSweep: Int64 = 0
    var rng = SystemRandomNumberGenerator()
    let softirq = softirqThreads()

    init(_ o: Options) {
        self.o = o
        n = o.connections
        total = n + (o.mode == .fanout ? o.publishers : 0)
        conns = .allocate(capacity: total)
        conns.initialize(repeating: Conn(), count: total)
        let kind: Kind =
            o.mode == .echo
            ? .echo
            : o.mode == .handshakes ? .handshake : [.ws: .ws, .longpoll: .longpoll, .xhrStreaming: .xhr][o.transport]!
        for i in 0..<total { conns[i].kind = i >= n ? .publisher : kind }
        st = .allocate(capacity: 1)
        st.initialize(to: Stats())
        epfd = halley_epoll_create()
        timerfd = timerfd_create(CLOCK_MONOTONIC, Int32(TFD_NONBLOCK | TFD_CLOEXEC))
        precondition(epfd >= 0 && timerfd >= 0, "epoll_create1, timerfd_create: \(errnoString())")
        events = .allocate(byteCount: 1024 * halley_epoll_event_size(), alignment: 16)
        rbuf = .allocate(capacity: Self.rbufSize)
        zout = .allocate(capacity: 65536)
        scratch = .allocate(capacity: 2)
        scratch.initialize(repeating: ByteBuf(), count: 2)
        ssls = .allocate(capacity: total)
        ssls.initialize(repeating: nil, count: total)
        sslCtx = o.tls ? Self.tlsContext(readAhead: o.mode != .handshakes) : nil
        pool = EchoPool(o.mode == .echo ? o : nil)
        inflaters = Array(repeating: nil, count: o.deflate ? n : 0)
        ringCount = .allocate(capacity: Self.ringSize)
        ringCount.initialize(repeating: 0, count: Self.ringSize)
        ringSent = .allocate(capacity: Self.ringSize)
        ringSent.initialize(repeating: 0, count: Self.ringSize)
        freePubs = .allocate(capacity: max(1, o.publishers))
        idle = .allocate(capacity: o.openLoop ? n : 1)
        servers = [(o.host, o.port)] + o.subServers
        hostHeaders = servers.map { Array("Host: \($0.host):\($0.port)\r\n".utf8) }
        subscribeJSON = Array("{\"event\":\"pusher:subscribe\",\"data\":{\"channel\":\"\(o.channel)\"}}".utf8)
        let head =
            o.server == .halley
            ? "POST /publish HTTP/1.1\r\nAuthorization: Bearer \(o.token)\r\nContent-Type: application/json\r\n"
            : "POST /pub/\(o.channel) HTTP/1.1\r\nContent-Type: text/plain\r\nAccept: text/json\r\n"
        publishHead = Array("\(head)Host: \(o.host):\(o.port)\r\nContent-Length: ".utf8)
    }

    func run() -> Int32 {
        halley_ignore_sigpipe()
        var rl = rlimit()
        getrlimit(__rlimit_resource_t(RLIMIT_NOFILE.rawValue), &rl)
        rl.rlim_cur = rl.rlim_max
        setrlimit(__rlimit_resource_t(RLIMIT_NOFILE.rawValue), &rl)
        getrlimit(__rlimit_resource_t(RLIMIT_NOFILE.rawValue), &rl)
        guard Int(rl.rlim_cur) >= total + 16 else {
            warn("RLIMIT_NOFILE is \(rl.rlim_cur): too low for \(total) connections")
            return 1
        }
        for (host, port) in servers {
            var addr = sockaddr_in()
            addr.sin_family = sa_family_t(AF_INET)
            addr.sin_port = in_port_t(UInt16(port).bigEndian)
            guard inet_pton(AF_INET, host, &addr.sin_addr) == 1 else {
                warn("host '\(host)' is not an IPv4 address")
                return 2
            }
            addrs.append(addr)
        }
        _ = halley_epoll_ctl(epfd, EPOLL_CTL_ADD, timerfd, Self.evIn, Self.timerId)
        switch o.mode {
        case .echo: return runEcho()
        case .handshakes: return runHandshakes()
        default: return runFanout()
        }
    }

    /// The server of connection `i`: publishers (and every connection without --sub-url) --url's,
    /// subscribers the --sub-url ones in turn.
    @inline(__always)
    func server(_ i: Int) -> Int { i >= n || servers.count == 1 ? 0 : 1 + i % (servers.count - 1) }

    // MARK: errors and closing

    func error(_ i: Int, _ msg: String) {
        st.pointee.errors += 1
        errorSamples += 1
        if errorSamples <= 20 { warn("\(i < n ? "connection" : "publisher") \(i): \(msg)") }
    }

    /// Records an error and drops the connection.
    func fail(_ i: Int, _ msg: String) {
        error(i, msg)
        let c = conns + i
        let opening = i < n && !c.pointee.ready && c.pointee.state != .done && c.pointee.kind != .handshake
        if opening {
            st.pointee.connecting -= 1
            st.pointee.failed += 1
        }
        closeConn(i)
        if opening { openMore() }
    }

    /// Closes the socket (a handshake slot starts over while the run goes on).
    func closeConn(_ i: Int) {
        let c = conns + i
        guard c.pointee.fd >= 0 else { return }
        if let ssl = ssls[i] {
            if c.pointee.kind == .echo && SSL_is_init_finished(ssl) == 1 { _ = SSL_shutdown(ssl) }
            ERR_clear_error()
            SSL_free(ssl)
            ssls[i] = nil
        }
        Glibc.close(c.pointee.fd)
        c.pointee.fd = -1
        c.pointee.gen &+= 1
        c.pointee.state = .done
        c.pointee.blocked = false
        c.pointee.tlsWantsWrite = false
        // Cleared, not freed: a caller up the stack may still be reading `pend`.
        c.pointee.pend.clear()
        c.pointee.out.clear()
        c.pointee.frag.clear()
        c.pointee.msgOpcode = 0
        st.pointee.live -= 1
        if c.pointee.kind == .echo && c.pointee.awaiting {
            c.pointee.awaiting = false
            st.pointee.outstanding -= 1
        }
        if !inflaters.isEmpty { inflaters[i] = nil }
        if c.pointee.kind == .publisher, let k = (0..<st.pointee.freeCount).first(where: { freePubs[$0] == i }) {
            st.pointee.freeCount -= 1
            freePubs[k] = freePubs[st.pointee.freeCount]
        }
        if c.pointee.kind == .handshake && running { _ = startConnect(i) }
    }

    // MARK: the loop

    /// One epoll_wait and its events.
    @inline(__always)
    func pump(_ timeoutMs: Int32) {
        let evs = events.assumingMemoryBound(to: epoll_event.self)
        let got = epoll_wait(epfd, evs, 1024, timeoutMs)
        if got < 0 && errno != EINTR {
            warn("epoll_wait: \(errnoString())")
            exit(1)
        }
        for k in 0..<Int(max(0, got)) {
            let data = halley_epoll_event_data(evs, Int32(k))
            if data == Self.timerId {
                var v: UInt64 = 0
                _ = read(timerfd, &v, 8)
                st.pointee.timerArmedFor = -1
                continue
            }
            let i = Int(truncatingIfNeeded: data), ev = halley_epoll_event_events(evs, Int32(k))
            let c = conns + i
            switch c.pointee.state {
            case .idle, .done: continue  // closed earlier in this batch
            case .connecting: connected(i)
            case .tls: tlsStep(i)
            default:
                if ev & Self.evOut != 0 && c.pointee.blocked { flush(i) }
                if c.pointee.fd >= 0
                    && (ev & (Self.evIn | Self.evErrHup) != 0 || (c.pointee.tlsWantsWrite && ev & Self.evOut != 0))
                {
                    readable(i)
                }
            }
        }
    }

    /// Runs the loop until `deadline` or until `condition` is false.
    func runUntil(_ deadline: Int64, while condition: () -> Bool) {
        while true {
            let now = monotonicNanos()
            tick(now)
            if !condition() || now >= deadline { return }
            pump(Int32((min(deadline - now, 100_000_000) + 999_999) / 1_000_000))
        }
    }

    /// Timed work: the fanout publisher's schedule, the open-loop echo's; handshake slots that
    /// take too long.
    @inline(__always)
    func tick(_ now: Int64) {
        if st.pointee.mode != .off { publishTick(now) }
        if o.openLoop && st.pointee.sending { echoTick(now) }
        guard o.mode == .handshakes && now - lastSweep > 100_000_000 else { return }
        lastSweep = now
        for i in 0..<n where conns[i].fd >= 0 && now - conns[i].sentAt > 10_000_000_000 {
            st.pointee.timeouts += 1
            if st.pointee.timeouts <= 3 { warn("slot \(i): not closed within 10 s (\(conns[i].state))") }
            closeConn(i)
        }
    }

    func watch(_ i: Int, out: Bool) {
        _ = halley_epoll_ctl(epfd, EPOLL_CTL_MOD, conns[i].fd, Self.evIn | (out ? Self.evOut : 0), UInt64(i))
    }

    // MARK: reading

    func readable(_ i: Int) {
        let c = conns + i
        if c.pointee.tlsWantsWrite {
            c.pointee.tlsWantsWrite = false
            if !c.pointee.blocked { watch(i, out: false) }
        }
        var rounds = 0
        while c.pointee.fd >= 0 {
            var got: Int
            if let ssl = ssls[i] {
                // Until OpenSSL needs the socket again: epoll cannot see records read ahead.
                let r = SSL_read(ssl, rbuf, Int32(Self.rbufSize))
                got = Int(r)
                if r <= 0 {
                    let saved = errno, e = SSL_get_error(ssl, r)
                    if e == SSL_ERROR_WANT_READ { return }
                    if e == SSL_ERROR_WANT_WRITE {
                        c.pointee.tlsWantsWrite = true
                        watch(i, out: true)
                        return
                    }
                    if e == SSL_ERROR_ZERO_RETURN { return eof(i) }  // close_notify, or a FIN
                    return readError(i, "SSL_read: \(Self.tlsError(ssl, r, e, saved))")
                }
            } else {
                got = read(c.pointee.fd, rbuf, Self.rbufSize)
                if got == 0 { return eof(i) }
                if got < 0 {
                    let e = errno
                    if e == EAGAIN || e == EWOULDBLOCK || e == EINTR { return }
                    return readError(i, "read: \(errnoString(e))")
                }
            }
            feed(i, rbuf, got, monotonicNanos())
            rounds += 1
            if ssls[i] == nil && (got < Self.rbufSize || rounds == 4) { return }
        }
    }

    func readError(_ i: Int, _ msg: String) {
        ERR_clear_error()
        if conns[i].state == .closing {
            st.pointee.resets += 1
            if conns[i].kind == .handshake { st.pointee.completed += 1 }
            closeConn(i)
        } else {
            fail(i, msg)
        }
    }

    func eof(_ i: Int) {
        let c = conns + i
        if c.pointee.state == .closing {
            if c.pointee.kind == .handshake { st.pointee.completed += 1 }
            if c.pointee.kind == .echo && !c.pointee.gotClose { st.pointee.eofWithoutClose += 1 }
            return closeConn(i)
        }
        switch c.pointee.kind {
        case .echo, .ws, .handshake:
            fail(i, "the server closed the connection (\(c.pointee.state), step \(c.pointee.step))")
        case .xhr where c.pointee.step >= 2:
            fail(i, "the server ended the stream")
        default:
            if c.pointee.awaiting && (c.pointee.kind == .publisher || c.pointee.pend.count > 0) {
                fail(i, "the server closed the connection with a request in flight")
            } else {
                // A keep-alive connection closed between requests (or a poll the server dropped).
                st.pointee.reconnects += 1
                reopen(i)
            }
        }
    }

    /// Bytes from the socket, parsed after what was left over from the previous read.
    @inline(__always)
    func feed(_ i: Int, _ p: UnsafeMutablePointer<UInt8>, _ count: Int, _ now: Int64) {
        let c = conns + i
        let gen = c.pointee.gen
        if c.pointee.pend.count == 0 {
            let used = process(i, p, count, now)
            if c.pointee.gen == gen && used < count { c.pointee.pend.append(p + used, count - used) }
        } else {
            c.pointee.pend.append(p, count)
            let used = process(i, c.pointee.pend.base!, c.pointee.pend.count, now)
            if c.pointee.gen == gen { c.pointee.pend.removeFirst(used) }
        }
    }

    /// Parses what can be parsed; returns the bytes used.
    @inline(__always)
    func process(_ i: Int, _ p: UnsafeMutablePointer<UInt8>, _ count: Int, _ now: Int64) -> Int {
        let c = conns + i
        switch c.pointee.kind {
        case .echo, .ws:
            guard c.pointee.state == .upgrading else { return frames(i, p, count, now) }
            let he = findHeadEnd(p, count)
            if he < 0 {
                if count > 16384 { fail(i, "no end of the upgrade response in 16 KiB") }
                return 0
            }
            let gen = c.pointee.gen
            upgraded(i, String(decoding: UnsafeBufferPointer(start: p, count: he), as: UTF8.self))
            return c.pointee.gen != gen ? count : he + 4 + frames(i, p + he + 4, count - he - 4, now)
        case .longpoll, .publisher: return responses(i, p, count, now)
        case .xhr: return xhrProcess(i, p, count, now)
        case .handshake:
            fail(i, "\(count) bytes of data after close_notify")
            return count
        }
    }

    /// Whole WebSocket frames from `p`; returns the bytes used.
    @inline(__always)
    func frames(_ i: Int, _ p: UnsafeMutablePointer<UInt8>, _ count: Int, _ now: Int64) -> Int {
        let c = conns + i
        let gen = c.pointee.gen
        var off = 0
        while off < count {
            switch parseFrameHeader(p + off, count - off, deflate: c.pointee.deflate != 0) {
            case .incomplete: return off
            case .invalid(let why):
                fail(i, why)
                return count
            case .frame(let fin, let op, let rsv1, let h, let len):
                if count - off < h + len { return off }
                let payload = p + off + h
                off += h + len
                switch op {
                case 9:
                    st.pointee.pings += 1
                    if c.pointee.state == .open {
                        sendFrame(i, 10, Array(UnsafeBufferPointer(start: payload, count: len)))
                    }
                case 10: break
                case 8: closeFrame(i, payload, len)
                default:
                    if c.pointee.kind == .echo {
                        echoFrame(i, fin, op, rsv1, payload, len, now)
                    } else {
                        subscriberFrame(i, fin, op, payload, len, now)
                    }
                }
                if c.pointee.gen != gen { return count }
            }
        }
        return off
    }

    func closeFrame(_ i: Int, _ p: UnsafeMutablePointer<UInt8>, _ len: Int) {
        let code = len >= 2 ? Int(p[0]) << 8 | Int(p[1]) : -1
        if conns[i].state == .closing {
            conns[i].gotClose = true
            if code != 1000 && code != -1 { error(i, "close reply with code \(code)") }
            return  // the server closes the TCP connection next (RFC 6455 §7.1.1)
        }
        sendFrame(i, 8, len >= 2 ? [p[0], p[1]] : [])
        let reason = String(
            decoding: UnsafeBufferPointer(start: p + min(2, len), count: max(0, len - 2)), as: UTF8.self)
        fail(i, "the server closed the WebSocket: code \(code) '\(reason)'")
    }

    // MARK: writing

    /// Writes what the socket (or OpenSSL) takes now; nil after a failure.
    @inline(__always)
    func writeSome(_ i: Int, _ p: UnsafePointer<UInt8>, _ len: Int) -> Int? {
        if let ssl = ssls[i] {
            let w = SSL_write(ssl, p, Int32(len))
            if w > 0 { return Int(w) }
            let saved = errno, e = SSL_get_error(ssl, w)
            // After WANT_WRITE OpenSSL wants the same bytes again: the whole rest is queued
            // (SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER lets the queue move).
            if e == SSL_ERROR_WANT_WRITE || e == SSL_ERROR_WANT_READ { return 0 }
            ERR_clear_error()
            fail(i, "SSL_write: \(Self.tlsError(ssl, w, e, saved))")
            return nil
        }
        let w = write(conns[i].fd, p, len)
        if w >= 0 { return w }
        let e = errno
        if e == EAGAIN || e == EWOULDBLOCK || e == EINTR { return 0 }
        fail(i, "write: \(errnoString(e))")
        return nil
    }

    /// Writes now, or queues behind bytes the socket has not taken yet.
    @inline(__always)
    func send(_ i: Int, _ p: UnsafePointer<UInt8>, _ len: Int) {
        let c = conns + i
        if c.pointee.fd < 0 { return }
        if c.pointee.blocked { return c.pointee.out.append(p, len) }
        guard let w = writeSome(i, p, len), w < len else { return }
        c.pointee.out.append(p + w, len - w)
        c.pointee.blocked = true
        watch(i, out: true)
    }

    func send(_ i: Int, _ bytes: [UInt8]) { bytes.withUnsafeBufferPointer { send(i, $0.baseAddress!, $0.count) } }

    func sendFrame(_ i: Int, _ opcode: UInt8, _ payload: [UInt8]) {
        send(i, maskedFrame(opcode: opcode, payload: payload, key: rng.next()))
    }

    func flush(_ i: Int) {
        let c = conns + i
        guard let b = c.pointee.out.base, c.pointee.out.count > 0, let w = writeSome(i, b, c.pointee.out.count) else {
            return
        }
        c.pointee.out.removeFirst(w)
        if c.pointee.out.count == 0 {
            c.pointee.blocked = false
            watch(i, out: c.pointee.tlsWantsWrite)
        }
    }
}
