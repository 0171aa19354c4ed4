#if canImport(Glibc)
import Glibc
#endif
import HalleyCore
import HalleyLoop
import HalleyProtocol
import HalleyServer  // UncheckedBox

/// Where Redis is: `redis://[[user]:password@]host[:port][/db]` (`--redis`, `HALLEY_REDIS`).
/// `rediss://` (TLS) is refused: the hub's client has no TLS (say so at startup, not later).
public struct RedisURL: Equatable, Sendable, CustomStringConvertible {
    public var host: String
    public var port = 6379
    /// ACL user; nil: `default` when a password is given.
    public var user: String?
    public var password: String?
    public var db = 0

    public init(host: String, port: Int = 6379) {
        self.host = host
        self.port = port
    }

    public struct ParseError: Error, Equatable, CustomStringConvertible {
        public let description: String
    }

    public init(_ text: String) throws(ParseError) {
        func fail(_ why: String) -> ParseError {
            ParseError(description: "--redis: \(why) (expected redis://[user:password@]host:port[/db])")
        }
        if text.hasPrefix("rediss://") { throw fail("rediss:// (TLS) is not supported") }
        guard text.hasPrefix("redis://") else { throw fail("not a redis:// URL") }
        var rest = Substring(text.dropFirst("redis://".count))
        if let at = rest.lastIndex(of: "@") {
            let cred = rest[..<at]
            rest = rest[rest.index(after: at)...]
            if let colon = cred.firstIndex(of: ":") {
                let u = cred[..<colon]
                user = u.isEmpty ? nil : String(u)
                password = String(cred[cred.index(after: colon)...])
            } else {
                password = String(cred)  // redis://secret@host, as redis-cli reads it
            }
        }
        var hostPort = rest
        if let slash = rest.firstIndex(of: "/") {
            hostPort = rest[..<slash]
            let d = rest[rest.index(after: slash)...]
            if !d.isEmpty {
                guard let n = Int(d), n >= 0 else { throw fail("database '\(d)' is not a number") }
                db = n
            }
        }
        if hostPort.hasPrefix("[") {  // [::1]:6379
            guard let close = hostPort.firstIndex(of: "]") else { throw fail("unclosed [") }
            host = String(hostPort[hostPort.index(after: hostPort.startIndex)..<close])
            let after = hostPort[hostPort.index(after: close)...]
            if after.hasPrefix(":") {
                guard let p = Int(after.dropFirst()), (1...65535).contains(p) else { throw fail("bad port") }
                port = p
            } else if !after.isEmpty {
                throw fail("bad port")
            }
        } else if let colon = hostPort.lastIndex(of: ":") {
            host = String(hostPort[..<colon])
            guard let p = Int(hostPort[hostPort.index(after: colon)...]), (1...65535).contains(p) else {
                throw fail("bad port")
            }
            port = p
        } else {
            host = String(hostPort)
        }
        guard !host.isEmpty else { throw fail("no host") }
    }

    /// Without the password.
    public var description: String {
        "redis://\(password != nil ? "\(user ?? ""):***@" : "")\(host.contains(":") ? "[\(host)]" : host):\(port)/\(db)"
    }
}

/// Why a command got no reply.
public enum RedisError: Error, Equatable, Sendable, CustomStringConvertible {
    /// Not connected now (never queued: the caller answers 503 or retries).
    case unavailable(String)
    /// The connection went with the command in flight: it may or may not have run.
    case connectionLost(String)
    /// Redis answered with an error.
    case server(String)

    public var description: String {
        switch self {
        case .unavailable(let why): return "Redis unavailable: \(why)"
        case .connectionLost(let why): return "connection to Redis lost: \(why)"
        case .server(let e): return "Redis: \(e)"
        }
    }
}

/// One connection to Redis on an event loop, for its whole life: it connects, says `HELLO 3`
/// (with `AUTH` when the URL has a password) and `SELECT`s the database, then carries commands,
/// pipelined, their replies matched in order, and hands out-of-band pushes (RESP3 pub/sub
/// messages) to `onPush`. When the connection goes (or does not come), every command in flight
/// fails with `connectionLost`, it tries again after a back-off (100 ms, doubling to 5 s), and
/// `onStateChange` tells the owner, once each way (one log line each way). A command sent while
/// not ready fails at once with `unavailable`. A reply that takes longer than
/// `commandTimeoutMillis` counts as a lost connection. Loop-confined.
public final class RedisConnection: EventHandler {
    public enum State: Equatable, Sendable {
        case connecting
        case ready
        case down(String)
        case stopped
    }

    public struct Options: Sendable {
        public var connectTimeoutMillis: Int64 = 2000
        public var commandTimeoutMillis: Int64 = 5000
        public var minBackoffMillis: Int64 = 100
        public var maxBackoffMillis: Int64 = 5000
        public var limits = RESPParser.Limits()
        public init() {}
    }

    let loop: EventLoop
    public let url: RedisURL
    let options: Options
    public private(set) var state = State.connecting
    /// Called on the loop when the connection becomes ready (true) or goes (false, why).
    public var onStateChange: ((Bool, String) -> Void)?
    /// RESP3 pushes: pub/sub messages and subscription confirmations.
    public var onPush: ((RESPValue) -> Void)?

    var fd: Int32 = -1
    var connected = false
    var parser: RESPParser
    var out: [UInt8] = []
    var written = 0
    /// The socket is registered for writability (registered so until the connect completes).
    var watchingWrites = true
    /// Replies expected, in order: the handshake's are internal (nil callback); `push`: the
    /// answer is a push of that kind (`ssubscribe`), or an error.
    var pending: [(sent: Int64, reply: ((Result<RESPValue, RedisError>) -> Void)?, push: String?)] = []
    var pendingStart = 0
    var handshaking = 0
    var backoff: Int64
    var retryTimer: UInt64?
    var connectTimer: UInt64?
    var watchdog: UInt64?
    /// Bumped per attempt, so that a late name lookup of an older one is ignored.
    var attempt = 0
    var wasReady = false

    public init(loop: EventLoop, url: RedisURL, options: Options = Options()) {
        self.loop = loop
        self.url = url
        self.options = options
        parser = RESPParser(limits: options.limits)
        backoff = options.minBackoffMillis
    }

    /// Starts connecting. Call on the loop.
    public func start() {
        loop.preconditionInLoop()
        connect()
        scheduleWatchdog()
    }

    /// Closes for good: what is in flight fails.
    public func stop() {
        loop.preconditionInLoop()
        lost("stopped", retry: false)
        state = .stopped
        if let w = watchdog { loop.cancel(w); watchdog = nil }
    }

    /// Sends a command; `reply` is called once, on the loop.
    public func send(_ args: [[UInt8]], _ reply: @escaping (Result<RESPValue, RedisError>) -> Void) {
        loop.preconditionInLoop()
        guard state == .ready else {
            if case .down(let why) = state { return reply(.failure(.unavailable(why))) }
            return reply(.failure(.unavailable(state == .stopped ? "stopped" : "connecting")))
        }
        enqueue(args, reply)
    }

    public func send(_ args: String..., reply: @escaping (Result<RESPValue, RedisError>) -> Void) {
        send(args.map { Array($0.utf8) }, reply)
    }

    /// Sends a command of one channel whose answer comes as a RESP3 push of kind `push`
    /// (`SSUBSCRIBE`: `ssubscribe`), or as an error (`MOVED` when the channel's slot is
    /// another master's): `reply` gets the push or the error (the push goes to `onPush` too).
    /// Fails at once when not ready (the owner sends it again on `onStateChange(true)`).
    public func send(
        _ args: [[UInt8]], answeredBy push: String, _ reply: @escaping (Result<RESPValue, RedisError>) -> Void
    ) {
        loop.preconditionInLoop()
        guard state == .ready else { return reply(.failure(.unavailable("not connected"))) }
        RESP.appendCommand(args, to: &out)
        pending.append((loop.now, reply, push))
        if connected { flush() }
    }

    public var inFlight: Int { pending.count - pendingStart }

    // MARK: connecting

    func connect() {
        guard state != .stopped else { return }
        attempt += 1
        let a = attempt
        if case .down = state {} else { state = .connecting }
        let box = UncheckedBox(self)
        SocketAddress.resolve(host: url.host, port: url.port, on: loop) { r in box.value.resolved(r, attempt: a) }
    }

    func resolved(_ r: Result<SocketAddress, IOError>, attempt a: Int) {
        guard a == attempt, state != .stopped, fd < 0 else { return }
        switch r {
        case .failure(let e):
            lost("name lookup: \(e)", retry: true)
        case .success(let address):
            do throws(IOError) {
                let (s, now) = try Socket.connect(to: address)
                fd = s
                connected = now
                Socket.setNoDelay(s)
                try loop.register(s, events: Events.writable | Events.readable | Events.readHangup, handler: self)
            } catch {
                if fd >= 0 { Sys.close(fd); fd = -1 }
                lost("connect: \(error)", retry: true)
                return
            }
            if !connected {
                connectTimer = loop.schedule(afterMillis: options.connectTimeoutMillis) { [self] in
                    connectTimer = nil
                    lost("no connection within \(options.connectTimeoutMillis) ms", retry: true)
                }
            }
            handshake()
        }
    }

    /// `HELLO 3 [AUTH user password]` and `SELECT db`, queued before anything else.
    func handshake() {
        var hello: [[UInt8]] = [Array("HELLO".utf8), Array("3".utf8)]
        if let p = url.password {
            hello += [Array("AUTH".utf8), Array((url.user ?? "default").utf8), Array(p.utf8)]
        }
        handshaking = 1
        enqueue(hello, nil)
        if url.db != 0 {
            handshaking += 1
            enqueue([Array("SELECT".utf8), Array(String(url.db).utf8)], nil)
        }
    }

    func handshakeReply(_ v: RESPValue) {
        if case .error(let e) = v {
            // AUTH refused, HELLO unknown (Redis before 6), a bad database: not a network
            // fault, but retried the same way (the operator may fix it without a restart).
            lost("handshake refused: \(e)", retry: true)
            return
        }
        handshaking -= 1
        if handshaking == 0 {
            state = .ready
            backoff = options.minBackoffMillis
            Log.info(wasReady ? "redis: reconnected to \(url)" : "redis: connected to \(url)")
            wasReady = true
            onStateChange?(true, "")
        }
    }

    // MARK: I/O

    func enqueue(_ args: [[UInt8]], _ reply: ((Result<RESPValue, RedisError>) -> Void)?) {
        RESP.appendCommand(args, to: &out)
        pending.append((loop.now, reply, nil))
        if connected { flush() }
    }

    func flush() {
        guard fd >= 0, written < out.count else { return }
        let done: Bool
        do throws(IOError) { done = try Sys.writeAll(fd, out, from: &written) } catch {
            lost("write: \(error)", retry: true)
            return
        }
        if done {
            out.removeAll(keepingCapacity: out.count <= 64 * 1024)
            written = 0
        }
        // Writable interest only while bytes wait: no epoll_ctl per command.
        if done == watchingWrites {
            watchingWrites = !done
            loop.modify(fd, events: Events.readable | Events.readHangup | (done ? 0 : Events.writable))
        }
    }

    public func handleEvent(_ events: UInt32) {
        guard fd >= 0 else { return }
        if !connected {
            let e = Socket.connectError(fd)
            if e != 0 { return lost("connect: \(IOError(errno: e, function: "connect"))", retry: true) }
            if events & (Events.writable | Events.error | Events.hangup) == 0 { return }
            connected = true
            if let t = connectTimer { loop.cancel(t); connectTimer = nil }
        }
        if events & Events.writable != 0 { flush() }
        guard fd >= 0 else { return }
        if events & (Events.readable | Events.readHangup | Events.hangup | Events.error) != 0 { readAvailable() }
    }

    func readAvailable() {
        let buf = loop.readBuffer
        while fd >= 0 {
            let r: IOResult
            do throws(IOError) { r = try Sys.read(fd, buf) } catch { return lost("read: \(error)", retry: true) }
            switch r {
            case .wouldBlock:
                return
            case .done(0):
                return lost("closed by Redis", retry: true)
            case .done(let n):
                parser.append(UnsafeRawBufferPointer(rebasing: buf[0..<n]))
                do throws(RESPError) {
                    while fd >= 0, let v = try parser.next() { deliver(v) }
                } catch {
                    return lost("unreadable reply: \(error)", retry: true)
                }
            }
        }
    }

    func deliver(_ v: RESPValue) {
        if case .push(let a) = v {
            // The answer to the oldest command when it waits for a push of this kind (pushes
            // of other kinds, messages and unasked `sunsubscribe`, are not answers).
            if pendingStart < pending.count, let kind = pending[pendingStart].push, a.first?.string == kind {
                let reply = pending[pendingStart].reply
                advance()
                reply?(.success(v))
            }
            onPush?(v)
            return
        }
        guard pendingStart < pending.count else { return lost("a reply nobody asked for", retry: true) }
        let p = pending[pendingStart]
        if p.push != nil {
            guard case .error = v else { return lost("a reply where a push was expected", retry: true) }
        }
        advance()
        guard let reply = p.reply else { return handshakeReply(v) }
        if case .error(let e) = v { reply(.failure(.server(e))) } else { reply(.success(v)) }
    }

    func advance() {
        pendingStart += 1
        if pendingStart == pending.count {
            pending.removeAll(keepingCapacity: true)
            pendingStart = 0
        } else if pendingStart >= 1024 && pendingStart * 2 >= pending.count {
            pending.removeFirst(pendingStart)
            pendingStart = 0
        }
    }

    // MARK: faults

    /// The connection went (or never came): fail what is in flight, tell the owner once,
    /// and try again after the back-off.
    func lost(_ why: String, retry: Bool) {
        if let t = connectTimer { loop.cancel(t); connectTimer = nil }
        if fd >= 0 {
            loop.unregister(fd)
            Sys.close(fd)
            fd = -1
        }
        connected = false
        watchingWrites = true
        out.removeAll()
        written = 0
        parser = RESPParser(limits: options.limits)
        handshaking = 0
        let failed = pending[pendingStart...]
        pending.removeAll()
        pendingStart = 0
        let wasUp = state == .ready
        if state != .stopped { state = .down(why) }
        for p in failed { p.reply?(.failure(.connectionLost(why))) }
        if wasUp {
            Log.warning("redis: connection to \(url) lost: \(why); reconnecting")
            onStateChange?(false, why)
        } else if retry && backoff == options.minBackoffMillis {
            Log.warning("redis: cannot connect to \(url): \(why); retrying")
        }
        guard retry, state != .stopped, retryTimer == nil else { return }
        let wait = backoff
        backoff = min(backoff * 2, options.maxBackoffMillis)
        retryTimer = loop.schedule(afterMillis: wait) { [self] in
            retryTimer = nil
            connect()
        }
    }

    /// Once a second: a reply overdue past the command timeout means a dead link that TCP
    /// has not noticed.
    func scheduleWatchdog() {
        watchdog = loop.schedule(afterMillis: 1000) { [self] in
            watchdog = nil
            guard state != .stopped else { return }
            if pendingStart < pending.count, loop.now - pending[pendingStart].sent > options.commandTimeoutMillis {
                lost("no reply within \(options.commandTimeoutMillis) ms", retry: true)
            }
            scheduleWatchdog()
        }
    }
}
