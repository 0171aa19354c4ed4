#if canImport(Glibc)
import Glibc
#endif
import CHalleyLinux

enum Kind: UInt8 { case ws, longpoll, publisher, xhr }
enum CState: UInt8 { case idle, connecting, upgrading, open, closing, done }
enum PublishMode: UInt8 { case off, sync, rate, window }

/// One connection, in a table allocated once and indexed by connection number (the epoll
/// data). Subscribers are 0..<N, publishers N..<N+P.
struct Conn {
    var fd: Int32 = -1
    var kind = Kind.ws
    var state = CState.idle
    /// Protocol step. WebSocket (halley): 0 waiting for connection_established, 1 waiting for
    /// subscription_succeeded, 2 live. Long-poll (halley): 0 opening the session, 1 subscribing,
    /// 2 polling. Nchan: 2 from the start.
    var step: UInt8 = 0
    /// Bumped when the socket is closed: a handler that closed or reopened the connection
    /// makes the caller drop the rest of the bytes it was working on.
    var gen: UInt32 = 0
    var blocked = false
    /// HTTP: a request is in flight.
    var awaiting = false
    /// HTTP: the server said Connection: close; reopen after the current answer.
    var reopen = false
    /// Subscribed (counted in Stats.ready).
    var ready = false
    var gotClose = false
    var fragOpcode: UInt8 = 0
    /// The lowest message seq this subscriber has not received (-1 before its first message),
    /// and which of the 64 after it it has.
    var expect: Int64 = -1
    var seen: UInt64 = 0
    /// Deliveries of messages in the current phase's range (no duplicates).
    var inRange = 0
    /// Long-poll (halley): the cursor of the last answer.
    var cursor: Int64 = 0
    /// Publisher: when its request went out.
    var sentAt: Int64 = 0
    /// Input not yet parsed (a partial frame or response).
    var pend = ByteBuf()
    /// Output the socket has not taken yet.
    var out = ByteBuf()
    /// Long-poll: the request to send (or to send again after a reconnect).
    var req = ByteBuf()
    /// Long-poll (halley): "GET /halley/poll?session=S&cursor=".
    var prefix = ByteBuf()
    /// Long-poll (halley): "X-Halley-Token: T\r\n" (tokens stay out of URLs).
    var auth = ByteBuf()
    /// WebSocket: a fragmented message being gathered.
    var frag = ByteBuf()
    /// xhr_streaming: body bytes of the current stream (pusher-js's responseText.length).
    var streamBytes = 0
}

final class Bench {
    static let ringSize = 1 << 16
    static let ringMask: Int64 = Int64(ringSize - 1)
    static let timerId: UInt64 = 1 << 40

    let o: Options
    let n: Int
    let total: Int
    let conns: UnsafeMutablePointer<Conn>
    let st: UnsafeMutablePointer<Stats>
    let lat = Histogram()
    let pubLat = Histogram()
    /// Per message seq (mod ringSize): deliveries so far, and when it was published.
    let ringCount: UnsafeMutablePointer<Int32>
    let ringSent: UnsafeMutablePointer<Int64>
    /// Publisher connections that have no request in flight.
    let freePubs: UnsafeMutablePointer<Int>
    let epfd: Int32
    let timerfd: Int32
    let events: UnsafeMutableRawPointer
    static let maxEvents: Int32 = 1024
    let rbuf: UnsafeMutablePointer<UInt8>
    static let rbufSize = 256 * 1024
    /// Decoded chunked bodies; the publish request being built.
    let scratch: UnsafeMutablePointer<ByteBuf>
    let pubBuf: UnsafeMutablePointer<ByteBuf>
    let bodyBuf: UnsafeMutablePointer<ByteBuf>

    // Off the hot path.
    var addr = sockaddr_in()
    var nextToOpen = 0
    var acceptValues: [Int: String] = [:]
    /// xhr_streaming: each subscriber's subscribe request (xhr_send), until it is sent.
    var xhrSendRequests: [Int: [UInt8]] = [:]
    var errorSamples = 0
    var rng = SystemRandomNumberGenerator()
    let softirqPids = softirqThreads()
    let hostHeader: [UInt8]
    let subscribeJSON: [UInt8]
    let channelBytes: [UInt8]
    /// The publish request up to the Content-Length value.
    let publishHead: [UInt8]

    static let kCursor = Array("\"cursor\":".utf8)

    init(_ o: Options) {
        self.o = o
        n = o.subscribers
        total = o.subscribers + o.publishers
        conns = .allocate(capacity: total)
        conns.initialize(repeating: Conn(), count: total)
        for i in 0..<total {
            conns[i].kind = i >= n ? .publisher : o.transport == .ws ? .ws : o.transport == .longpoll ? .longpoll : .xhr
        }
        st = .allocate(capacity: 1)
        st.initialize(to: Stats())
        st.pointee.window = o.window
        ringCount = .allocate(capacity: Self.ringSize)
        ringCount.initialize(repeating: 0, count: Self.ringSize)
        ringSent = .allocate(capacity: Self.ringSize)
        ringSent.initialize(repeating: 0, count: Self.ringSize)
        freePubs = .allocate(capacity: o.publishers)
        epfd = halley_epoll_create()
        precondition(epfd >= 0, "epoll_create1: \(errnoString())")
        timerfd = timerfd_create(CLOCK_MONOTONIC, Int32(TFD_NONBLOCK | TFD_CLOEXEC))
        precondition(timerfd >= 0, "timerfd_create: \(errnoString())")
        events = .allocate(byteCount: Int(Self.maxEvents) * halley_epoll_event_size(), alignment: 16)
        rbuf = .allocate(capacity: Self.rbufSize)
        scratch = .allocate(capacity: 1)
        scratch.initialize(to: ByteBuf())
        pubBuf = .allocate(capacity: 1)
        pubBuf.initialize(to: ByteBuf())
        bodyBuf = .allocate(capacity: 1)
        bodyBuf.initialize(to: ByteBuf())
        hostHeader = Array("Host: \(o.host):\(o.port)\r\n".utf8)
        subscribeJSON = Array("{\"event\":\"pusher:subscribe\",\"data\":{\"channel\":\"\(o.channel)\"}}".utf8)
        channelBytes = Array(o.channel.utf8)
        if o.server == .halley {
            publishHead = Array(
                ("POST /publish HTTP/1.1\r\nHost: \(o.host):\(o.port)\r\nAuthorization: Bearer \(o.token)\r\n"
                    + "Content-Type: application/json\r\nContent-Length: ").utf8)
        } else {
            publishHead = Array(
                ("POST /pub/\(o.channel) HTTP/1.1\r\nHost: \(o.host):\(o.port)\r\n"
                    + "Content-Type: text/plain\r\nAccept: text/json\r\nContent-Length: ").utf8)
        }
    }

    // MARK: errors

    func error(_ i: Int, _ msg: String) {
        st.pointee.errors += 1
        errorSamples += 1
        if errorSamples <= 20 {
            let what = i < n ? "subscriber \(i)" : i < total ? "publisher \(i - n)" : "-"
            warn("\(what): \(msg)")
        }
    }

    /// Records an error and drops the connection.
    func fail(_ i: Int, _ msg: String) {
        error(i, msg)
        let c = conns + i
        let opening = i < n && !c.pointee.ready && c.pointee.state != .done
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
        c.pointee.gen &+= 1
        c.pointee.state = .done
        c.pointee.blocked = false
        // Cleared, not freed: a caller up the stack may still be reading `pend`.
        c.pointee.pend.clear()
        c.pointee.out.clear()
        c.pointee.frag.clear()
        c.pointee.fragOpcode = 0
        st.pointee.live -= 1
        if i >= n {
            // A publisher that goes leaves the free list.
            var k = 0
            while k < st.pointee.freeCount {
                if freePubs[k] == i {
                    freePubs[k] = freePubs[st.pointee.freeCount - 1]
                    st.pointee.freeCount -= 1
                    break
                }
                k += 1
            }
        }
    }

    // MARK: the loop

    static let evIn = UInt32(EPOLLIN.rawValue)
    static let evOut = UInt32(EPOLLOUT.rawValue)
    static let evErr = UInt32(EPOLLERR.rawValue)
    static let evHup = UInt32(EPOLLHUP.rawValue)

    /// One epoll_wait and its events; false when there were none.
    @inline(__always)
    @discardableResult
    func pump(_ timeoutMs: Int32) -> Bool {
        let got = epoll_wait(epfd, events.assumingMemoryBound(to: epoll_event.self), Self.maxEvents, timeoutMs)
        if got <= 0 {
            if got < 0 && errno != EINTR { warn("epoll_wait: \(errnoString())"); exit(1) }
            return false
        }
        let evs = events.assumingMemoryBound(to: epoll_event.self)
        for k in 0..<Int(got) {
            let data = halley_epoll_event_data(evs, Int32(k))
            let ev = halley_epoll_event_events(evs, Int32(k))
            if data == Self.timerId {
                var v: UInt64 = 0
                _ = read(timerfd, &v, 8)
                st.pointee.timerArmedFor = -1
                continue
            }
            dispatch(Int(truncatingIfNeeded: data), ev)
        }
        return true
    }

    @inline(__always)
    func dispatch(_ i: Int, _ ev: UInt32) {
        let c = conns + i
        switch c.pointee.state {
        case .idle, .done:
            return
        case .connecting:
            connected(i)
        default:
            if ev & Self.evOut != 0 && c.pointee.blocked { flush(i) }
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
                feed(i, rbuf, got, monotonicNanos())
                if got < Self.rbufSize { return }
                continue
            }
            if got == 0 {
                eof(i)
                return
            }
            let e = errno
            if e == EAGAIN || e == EWOULDBLOCK || e == EINTR { return }
            if c.pointee.state == .closing {
                closeConn(i)
            } else {
                fail(i, "read: \(errnoString(e))")
            }
            return
        }
    }

    func eof(_ i: Int) {
        let c = conns + i
        switch c.pointee.kind {
        case .ws:
            if c.pointee.state == .closing {
                closeConn(i)
            } else {
                fail(i, "the server closed the TCP connection (state \(c.pointee.state), step \(c.pointee.step))")
            }
        case .xhr where c.pointee.step >= 2:
            if c.pointee.state == .closing {
                closeConn(i)
            } else {
                fail(i, "the server ended the stream (step \(c.pointee.step))")
            }
        case .longpoll, .publisher, .xhr:
            if c.pointee.state == .closing {
                closeConn(i)
            } else if c.pointee.awaiting && c.pointee.kind == .publisher {
                fail(i, "the server closed the connection with a publish request in flight")
            } else if c.pointee.awaiting && c.pointee.pend.count > 0 {
                fail(i, "the server closed the connection in the middle of an answer")
            } else {
                // A keep-alive connection closed between requests (or a poll the server
                // dropped): open it again and repeat the request.
                st.pointee.reconnects += 1
                reopen(i)
            }
        }
    }

    /// Bytes from the socket: parsed with what was left over from the previous read.
    @inline(__always)
    func feed(_ i: Int, _ p: UnsafeMutablePointer<UInt8>, _ count: Int, _ now: Int64) {
        let c = conns + i
        let gen = c.pointee.gen
        if c.pointee.pend.count == 0 {
            let used = process(i, p, count, now)
            if c.pointee.gen != gen { return }
            if used < count { c.pointee.pend.append(p + used, count - used) }
        } else {
            c.pointee.pend.append(p, count)
            let used = process(i, c.pointee.pend.base!, c.pointee.pend.count, now)
            if c.pointee.gen != gen { return }
            c.pointee.pend.removeFirst(used)
        }
    }

    /// Parses what can be parsed; returns the bytes used.
    @inline(__always)
    func process(_ i: Int, _ p: UnsafeMutablePointer<UInt8>, _ count: Int, _ now: Int64) -> Int {
        let c = conns + i
        switch c.pointee.kind {
        case .ws:
            if c.pointee.state == .upgrading {
                let he = findHeadEnd(p, count)
                if he < 0 {
                    if count > 16384 { fail(i, "no end of the upgrade response in 16 KiB") }
                    return 0
                }
                let gen = c.pointee.gen
                upgraded(i, p, he)
                if c.pointee.gen != gen { return count }
                return he + 4 + frames(i, p + he + 4, count - he - 4, now)
            }
            return frames(i, p, count, now)
        case .longpoll, .publisher:
            return responses(i, p, count, now)
        case .xhr:
            return xhrProcess(i, p, count, now)
        }
    }

    // MARK: writing

    @inline(__always)
    func send(_ i: Int, _ p: UnsafePointer<UInt8>, _ len: Int) {
        let c = conns + i
        if c.pointee.fd < 0 { return }
        if c.pointee.blocked {
            c.pointee.out.append(p, len)
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
        c.pointee.out.append(p + w, len - w)
        c.pointee.blocked = true
        _ = halley_epoll_ctl(epfd, EPOLL_CTL_MOD, c.pointee.fd, Self.evIn | Self.evOut, UInt64(i))
    }

    func send(_ i: Int, _ bytes: [UInt8]) {
        bytes.withUnsafeBufferPointer { send(i, $0.baseAddress!, $0.count) }
    }

    func flush(_ i: Int) {
        let c = conns + i
        guard let b = c.pointee.out.base, c.pointee.out.count > 0 else { return }
        let w = Glibc.write(c.pointee.fd, b, c.pointee.out.count)
        if w < 0 {
            let e = errno
            if e == EAGAIN || e == EWOULDBLOCK || e == EINTR { return }
            fail(i, "write: \(errnoString(e))")
            return
        }
        c.pointee.out.removeFirst(w)
        if c.pointee.out.count == 0 {
            c.pointee.blocked = false
            _ = halley_epoll_ctl(epfd, EPOLL_CTL_MOD, c.pointee.fd, Self.evIn, UInt64(i))
        }
    }

    // MARK: connecting

    /// Opens subscribers while fewer than --connect-inflight are being opened.
    func openMore() {
        while st.pointee.connecting < o.connectInflight && nextToOpen < n {
            let i = nextToOpen
            nextToOpen += 1
            st.pointee.connecting += 1
            prepareFirstRequest(i)
            if !startConnect(i) {
                st.pointee.connecting -= 1
                st.pointee.failed += 1
            }
        }
    }

    func startConnect(_ i: Int) -> Bool {
        let c = conns + i
        let fd = socket(
            AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_NONBLOCK.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        if fd < 0 {
            error(i, "socket: \(errnoString())")
            return false
        }
        var one: Int32 = 1
        setsockopt(fd, Int32(IPPROTO_TCP), TCP_NODELAY, &one, socklen_t(MemoryLayout<Int32>.size))
        let rc = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
            }
        }
        if rc != 0 && errno != EINPROGRESS {
            error(i, "connect: \(errnoString())")
            Glibc.close(fd)
            return false
        }
        c.pointee.fd = fd
        c.pointee.state = .connecting
        c.pointee.blocked = false
        st.pointee.live += 1
        if halley_epoll_ctl(epfd, EPOLL_CTL_ADD, fd, Self.evIn | Self.evOut, UInt64(i)) != 0 {
            error(i, "epoll_ctl: \(errnoString())")
            closeConn(i)
            return false
        }
        return true
    }

    /// Closes and opens the connection again (HTTP keep-alive connections only).
    func reopen(_ i: Int) {
        let c = conns + i
        c.pointee.reopen = false
        closeConn(i)
        if !startConnect(i) {
            fail(i, "could not reconnect")
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
        _ = halley_epoll_ctl(epfd, EPOLL_CTL_MOD, c.pointee.fd, Self.evIn, UInt64(i))
        switch c.pointee.kind {
        case .ws:
            var key = [UInt8](repeating: 0, count: 16)
            for j in 0..<16 { key[j] = UInt8.random(in: 0...255, using: &rng) }
            let keyText = base64(key)
            acceptValues[i] = base64(sha1(Array((keyText + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").utf8)))
            let path = o.server == .halley ? "/app/\(o.appKey)?protocol=7&client=bench&version=1" : "/sub/\(o.channel)"
            var req =
                "GET \(path) HTTP/1.1\r\nHost: \(o.host):\(o.port)\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            req += "Sec-WebSocket-Key: \(keyText)\r\nSec-WebSocket-Version: 13\r\n\r\n"
            c.pointee.state = .upgrading
            send(i, Array(req.utf8))
        case .longpoll, .xhr:
            c.pointee.state = .open
            sendRequest(i)
            if o.server == .nchan && !c.pointee.ready {
                // Nchan subscribes the long-poll request as it arrives; the sync phase checks.
                markReady(i)
            }
        case .publisher:
            c.pointee.state = .open
            if c.pointee.awaiting {
                fail(i, "reconnected with a publish request in flight")
            } else {
                freePubs[st.pointee.freeCount] = i
                st.pointee.freeCount += 1
            }
        }
    }

    func upgraded(_ i: Int, _ p: UnsafeMutablePointer<UInt8>, _ he: Int) {
        let c = conns + i
        let head = String(decoding: UnsafeBufferPointer(start: p, count: he), as: UTF8.self)
        let lines = head.split(separator: "\r\n", omittingEmptySubsequences: false)
        guard let status = lines.first, status.hasPrefix("HTTP/1.1 101") else {
            fail(i, "WebSocket handshake refused: '\(lines.first ?? "")'")
            return
        }
        var headers: [String: [String]] = [:]
        for l in lines.dropFirst() {
            guard let colon = l.firstIndex(of: ":") else { continue }
            var v = l[l.index(after: colon)...]
            while v.first == " " || v.first == "\t" { v = v.dropFirst() }
            while v.last == " " || v.last == "\t" { v = v.dropLast() }
            headers[l[..<colon].lowercased(), default: []].append(String(v))
        }
        guard headers["upgrade"]?.first?.lowercased() == "websocket" else {
            fail(i, "101 without Upgrade: websocket"); return
        }
        guard let accept = headers["sec-websocket-accept"], accept.count == 1, accept[0] == acceptValues[i] else {
            fail(i, "Sec-WebSocket-Accept \(headers["sec-websocket-accept"] ?? []) != \(acceptValues[i] ?? "?")")
            return
        }
        if let ext = headers["sec-websocket-extensions"] {
            fail(i, "extension '\(ext.joined(separator: ", "))' the client did not offer")
            return
        }
        acceptValues[i] = nil
        c.pointee.state = .open
        if o.server == .nchan {
            c.pointee.step = 2
            markReady(i)
        } else {
            c.pointee.step = 0
        }
    }

    func markReady(_ i: Int) {
        let c = conns + i
        guard !c.pointee.ready else { return }
        c.pointee.ready = true
        st.pointee.ready += 1
        st.pointee.connecting -= 1
        openMore()
    }
}
