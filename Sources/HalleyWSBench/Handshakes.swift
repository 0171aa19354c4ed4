#if canImport(Glibc)
import Glibc
#endif
import CHalleyLinux
import COpenSSL

/// `--handshakes`: full TLS handshakes per second with `--connections` of them in flight.
/// Each slot connects, runs a full client handshake (a new SSL every time: no session, no
/// resumption), then either sends close_notify and waits for the server to close, or (with
/// `--http-request`) sends one `GET` with `Connection: close` and reads the response to its
/// end; then it closes and the slot starts over. The server closes first in both cases, so
/// TIME_WAIT stays on the server's side and the client's ephemeral ports are not used up.
final class HandshakeBench {
    enum Step: UInt8 { case idle, connecting, tls, request, closing }

    struct Slot {
        var fd: Int32 = -1
        var ssl: OpaquePointer? = nil
        var step = Step.idle
        var startedAt: Int64 = 0
        var responseBytes = 0
        var statusOk = false
    }

    let o: Options
    let k: Int
    let slots: UnsafeMutablePointer<Slot>
    let epfd: Int32
    let events: UnsafeMutableRawPointer
    let rbuf: UnsafeMutablePointer<UInt8>
    static let rbufSize = 64 * 1024
    let ctx: OpaquePointer
    var addr = sockaddr_in()
    let request: [UInt8]
    /// Time a slot may take from connect to close.
    let slotTimeoutNs: Int64

    var running = true
    var measuring = false
    var handshakes = 0
    var windowHandshakes = 0
    var windowLatencyUs: [Int32] = []
    var completed = 0
    var responses = 0
    var badResponses = 0
    var failures = 0
    var timeouts = 0
    var resets = 0
    var resumed = 0
    var inFlight = 0
    var summaries: [String: Int] = [:]
    var errorSamples: [String] = []

    init(_ o: Options) {
        self.o = o
        k = o.connections
        slots = .allocate(capacity: k)
        slots.initialize(repeating: Slot(), count: k)
        epfd = halley_epoll_create()
        precondition(epfd >= 0, "epoll_create1: \(errnoString())")
        events = .allocate(byteCount: 1024 * halley_epoll_event_size(), alignment: 16)
        rbuf = .allocate(capacity: Self.rbufSize)
        // No read ahead: a handshake is a few records, and close_notify must be seen.
        ctx = TLSClient.makeContext(readAhead: false)
        request = Array("GET \(o.path) HTTP/1.1\r\nHost: \(o.host):\(o.port)\r\nConnection: close\r\n\r\n".utf8)
        slotTimeoutNs = Int64(min(o.connectTimeout, 10) * 1e9)
    }

    func error(_ msg: String) {
        failures += 1
        if errorSamples.count < 10 {
            errorSamples.append(msg)
            warn(msg)
        }
    }

    // MARK: one slot

    func start(_ i: Int) {
        let s = slots + i
        let fd = socket(
            AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_NONBLOCK.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        if fd < 0 {
            error("socket: \(errnoString())")
            return
        }
        var one: Int32 = 1
        setsockopt(fd, Int32(IPPROTO_TCP), TCP_NODELAY, &one, socklen_t(MemoryLayout<Int32>.size))
        let rc = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
            }
        }
        if rc != 0 && errno != EINPROGRESS {
            error("connect: \(errnoString())")
            Glibc.close(fd)
            return
        }
        s.pointee = Slot(fd: fd, ssl: nil, step: .connecting, startedAt: monotonicNanos())
        inFlight += 1
        _ = halley_epoll_ctl(epfd, EPOLL_CTL_ADD, fd, Bench.evIn | Bench.evOut, UInt64(i))
    }

    /// Closes the slot's connection; starts the next one while the run goes on.
    func finish(_ i: Int, clean: Bool) {
        let s = slots + i
        guard s.pointee.fd >= 0 else { return }
        if let ssl = s.pointee.ssl { SSL_free(ssl) }
        ERR_clear_error()
        Glibc.close(s.pointee.fd)  // also leaves the epoll set
        s.pointee = Slot()
        inFlight -= 1
        if clean { completed += 1 }
        if running { start(i) }
    }

    func event(_ i: Int) {
        let s = slots + i
        switch s.pointee.step {
        case .idle:
            return
        case .connecting:
            var err: Int32 = 0
            var len = socklen_t(MemoryLayout<Int32>.size)
            getsockopt(s.pointee.fd, SOL_SOCKET, SO_ERROR, &err, &len)
            if err != 0 {
                error("connect: \(errnoString(err))")
                finish(i, clean: false)
                return
            }
            guard let ssl = TLSClient.newSession(ctx, fd: s.pointee.fd) else {
                error("SSL_new: \(TLSClient.lastError())")
                finish(i, clean: false)
                return
            }
            s.pointee.ssl = ssl
            s.pointee.step = .tls
            handshakeStep(i)
        case .tls:
            handshakeStep(i)
        case .request, .closing:
            readSome(i)
        }
    }

    func handshakeStep(_ i: Int) {
        let s = slots + i
        guard let ssl = s.pointee.ssl else { return }
        let r = SSL_do_handshake(ssl)
        if r != 1 {
            let saved = errno
            let e = SSL_get_error(ssl, r)
            switch e {
            case SSL_ERROR_WANT_READ:
                _ = halley_epoll_ctl(epfd, EPOLL_CTL_MOD, s.pointee.fd, Bench.evIn, UInt64(i))
            case SSL_ERROR_WANT_WRITE:
                _ = halley_epoll_ctl(epfd, EPOLL_CTL_MOD, s.pointee.fd, Bench.evIn | Bench.evOut, UInt64(i))
            default:
                error("TLS handshake: \(TLSClient.describe(ssl, r, e, savedErrno: saved))")
                finish(i, clean: false)
            }
            return
        }
        // A full handshake is done (the client sent its Finished).
        handshakes += 1
        if SSL_session_reused(ssl) == 1 { resumed += 1 }
        if handshakes <= 8 || handshakes & 1023 == 0 { summaries[TLSClient.summary(ssl), default: 0] += 1 }
        if measuring {
            windowHandshakes += 1
            windowLatencyUs.append(Int32(clamping: (monotonicNanos() - s.pointee.startedAt) / 1000))
        }
        if o.httpRequest {
            s.pointee.step = .request
            let w = request.withUnsafeBytes { SSL_write(ssl, $0.baseAddress, Int32($0.count)) }
            if Int(w) != request.count {
                // A few dozen bytes into an empty socket buffer: anything else is an error.
                error("SSL_write of the request: \(w)")
                finish(i, clean: false)
                return
            }
        } else {
            s.pointee.step = .closing
            ERR_clear_error()
            _ = SSL_shutdown(ssl)  // close_notify; the server answers by closing
        }
        _ = halley_epoll_ctl(epfd, EPOLL_CTL_MOD, s.pointee.fd, Bench.evIn, UInt64(i))
        readSome(i)
    }

    /// Reads what the server sends after the handshake (tickets, the response, its
    /// close_notify) until it closes.
    func readSome(_ i: Int) {
        let s = slots + i
        while true {
            guard s.pointee.fd >= 0, let ssl = s.pointee.ssl else { return }
            let got = SSL_read(ssl, rbuf, Int32(Self.rbufSize))
            if got > 0 {
                if s.pointee.step == .closing {
                    error("\(got) bytes of data from the server after close_notify")
                    finish(i, clean: false)
                    return
                }
                if s.pointee.responseBytes == 0 {
                    let head = String(
                        decoding: UnsafeBufferPointer(start: rbuf, count: min(Int(got), 12)), as: UTF8.self)
                    s.pointee.statusOk = head == "HTTP/1.1 200"
                }
                s.pointee.responseBytes += Int(got)
                continue
            }
            let saved = errno
            let e = SSL_get_error(ssl, got)
            switch e {
            case SSL_ERROR_WANT_READ:
                return
            case SSL_ERROR_WANT_WRITE:
                _ = halley_epoll_ctl(epfd, EPOLL_CTL_MOD, s.pointee.fd, Bench.evIn | Bench.evOut, UInt64(i))
                return
            case SSL_ERROR_ZERO_RETURN:
                endOfStream(i)
                return
            default:
                if s.pointee.step == .closing && (saved == ECONNRESET || saved == EPIPE) {
                    ERR_clear_error()
                    resets += 1
                    finish(i, clean: true)
                } else {
                    error("SSL_read: \(TLSClient.describe(ssl, got, e, savedErrno: saved)) (\(s.pointee.step))")
                    finish(i, clean: false)
                }
                return
            }
        }
    }

    func endOfStream(_ i: Int) {
        let s = slots + i
        if s.pointee.step == .request {
            if s.pointee.responseBytes > 0 && s.pointee.statusOk {
                responses += 1
            } else {
                badResponses += 1
                if badResponses <= 3 { warn("a response that is not 'HTTP/1.1 200' (\(s.pointee.responseBytes) B)") }
            }
        }
        finish(i, clean: true)
    }

    // MARK: the loop

    func pump(_ timeoutMs: Int32) {
        let got = epoll_wait(epfd, events.assumingMemoryBound(to: epoll_event.self), 1024, timeoutMs)
        if got < 0 {
            if errno != EINTR { warn("epoll_wait: \(errnoString())"); exit(1) }
            return
        }
        let evs = events.assumingMemoryBound(to: epoll_event.self)
        for j in 0..<Int(got) {
            event(Int(truncatingIfNeeded: halley_epoll_event_data(evs, Int32(j))))
        }
    }

    var lastSweep: Int64 = 0

    /// Closes slots older than the slot timeout (every 100 ms).
    func sweep(_ now: Int64) {
        guard now - lastSweep > 100_000_000 else { return }
        lastSweep = now
        for i in 0..<k where slots[i].fd >= 0 && now - slots[i].startedAt > slotTimeoutNs {
            timeouts += 1
            if timeouts <= 3 {
                warn("slot \(i): no close within \(slotTimeoutNs / 1_000_000_000) s (\(slots[i].step))")
            }
            finish(i, clean: false)
        }
    }

    func waitUntil(_ deadline: Int64, while condition: () -> Bool) {
        while condition() {
            let now = monotonicNanos()
            let left = deadline - now
            if left <= 0 { return }
            sweep(now)
            pump(Int32(min(100, (left + 999_999) / 1_000_000)))
        }
    }

    func run() -> Int32 {
        halley_ignore_sigpipe()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_port = in_port_t(UInt16(o.port).bigEndian)
        guard inet_pton(AF_INET, o.host, &addr.sin_addr) == 1 else {
            warn("--url: host '\(o.host)' is not an IPv4 address")
            return 2
        }
        let tStart = monotonicNanos()
        for i in 0..<k { start(i) }
        waitUntil(tStart + Int64(o.warmup * 1e9)) { true }
        let server0 = o.serverPids.map(processCPUSeconds)
        let cores0 = coreTimes()
        let cpu0 = cpuSeconds()
        let t0 = monotonicNanos()
        measuring = true
        waitUntil(t0 + Int64(o.duration * 1e9)) { true }
        measuring = false
        let t1 = monotonicNanos()
        let cpu1 = cpuSeconds()
        let cores1 = coreTimes()
        let server1 = o.serverPids.map(processCPUSeconds)
        running = false
        waitUntil(t1 + Int64(o.drainTimeout * 1e9)) { inFlight > 0 }
        let unfinished = inFlight
        for i in 0..<k { finish(i, clean: false) }

        let seconds = Double(t1 - t0) / 1e9
        let h = windowHandshakes
        windowLatencyUs.sort()
        func pct(_ q: Double) -> Int32 {
            windowLatencyUs.isEmpty
                ? 0 : windowLatencyUs[min(windowLatencyUs.count - 1, Int(q * Double(windowLatencyUs.count)))]
        }
        let cpuUser = cpu1.user - cpu0.user
        let cpuSys = cpu1.system - cpu0.system
        var line = "handshakes=\(h) seconds=\(fixed(seconds, 3)) handshakes_per_sec=\(fixed(Double(h) / seconds, 1))"
        line +=
            " p50_us=\(pct(0.5)) p99_us=\(pct(0.99)) connections=\(k) after=\(o.httpRequest ? "http_request" : "close_notify")"
        line +=
            " total_handshakes=\(handshakes) completed=\(completed) responses=\(responses) bad_responses=\(badResponses)"
        line += " resumed=\(resumed) tickets_received=\(TLSClient.ticketsReceived) resets=\(resets)"
        line += " failures=\(failures) timeouts=\(timeouts) unfinished=\(unfinished)"
        line +=
            " client_cpu_pct=\(fixed(100 * (cpuUser + cpuSys) / seconds, 1)) client_user_s=\(fixed(cpuUser, 3)) client_sys_s=\(fixed(cpuSys, 3))"
        line += cpuFields(
            serverPids: o.serverPids, server0: server0, server1: server1, cores0: cores0, cores1: cores1,
            seconds: seconds, count: h, unit: "handshakes")
        let tls = summaries.keys.sorted().map { $0.replacingOccurrences(" ", "_") }.joined(separator: ",")
        line += " tls=\(tls.isEmpty ? "-" : tls)"
        print(line)
        if failures > 0 || timeouts > 0 || resumed > 0 || badResponses > 0 || h == 0 {
            warn("\(failures) failure(s), \(timeouts) timeout(s), \(resumed) resumed, \(badResponses) bad response(s)")
            return 1
        }
        return 0
    }
}

extension String {
    /// `replacingOccurrences` without Foundation (single characters).
    func replacingOccurrences(_ a: Character, _ b: Character) -> String {
        String(map { $0 == a ? b : $0 })
    }
}

/// The server-CPU and core-busy fields of a result line: `server_cpu_s`, `server_cpu_pct`,
/// `<unit>_per_server_cpu_s` (from /proc/PID/stat samples before and after the window) and
/// `core_busy_pct` (from /proc/stat samples).
func cpuFields(
    serverPids: [Int32], server0: [Double?], server1: [Double?], cores0: [(Int, Int)], cores1: [(Int, Int)],
    seconds: Double, count: Int, unit: String
) -> String {
    var line = ""
    if !serverPids.isEmpty {
        var serverCPU = 0.0
        var readable = true
        for (a, b) in zip(server0, server1) {
            if let a = a, let b = b { serverCPU += b - a } else { readable = false }
        }
        if readable {
            line += " server_cpu_s=\(fixed(serverCPU, 2)) server_cpu_pct=\(fixed(100 * serverCPU / seconds, 1))"
            line += " \(unit)_per_server_cpu_s=\(serverCPU > 0 ? fixed(Double(count) / serverCPU, 0) : "inf")"
        } else {
            warn("could not read /proc/PID/stat of \(serverPids)")
            line += " server_cpu_s=? server_cpu_pct=? \(unit)_per_server_cpu_s=?"
        }
    }
    if cores0.count == cores1.count && !cores0.isEmpty {
        let busy = zip(cores0, cores1).enumerated().map { (k, p) -> String in
            let total = p.1.0 - p.0.0, idle = p.1.1 - p.0.1
            return "\(k):\(total > 0 ? 100 * (total - idle) / total : 0)"
        }
        line += " core_busy_pct=\(busy.joined(separator: ","))"
    }
    return line
}
