#if canImport(Glibc)
import Glibc
#endif
import HalleyCore
import HalleyHTTP
import HalleyLoop
import HalleyWebSocket
import Synchronization

/// What one event loop owns on the HTTP side: its connections, its output cork, its file
/// cache, its counters and the cached `Date` line. Touched by its loop's thread only.
final class LoopContext {
    let loop: EventLoop
    unowned let server: Server
    let counters: LoopCounters
    /// The counters' storage: `count` adds to it without retaining `counters` per call.
    private let counterValues: UnsafeMutablePointer<Atomic<Int>>
    let config: ServerConfig
    let files: FileCache?
    var listeners: [Listener] = []
    /// Every open connection, for the once-a-second deadline sweep (no timer per connection).
    var connections: [Connection] = []
    var shuttingDown = false
    /// Monotonic whole seconds, refreshed every loop turn.
    var seconds: Int32 = 0
    let startMillis: Int64

    // The cork: responses produced while handling one connection's events are gathered here
    // and written with one writev at the end (one write per socket per loop turn:
    // docs/ARCHITECTURE.md, "The path of a message").
    let cork = ByteBuffer(capacity: 64 * 1024)
    var segments: [Segment] = []
    var corkOwner: Connection? {
        didSet { corkOwnerID = corkOwner.map(ObjectIdentifier.init) }
    }
    /// The owner's identity: comparing it takes no retain of the owner (a fan-out asks
    /// "is this connection corked?" once or twice per delivery).
    private(set) var corkOwnerID: ObjectIdentifier?
    @inline(__always) func isCorkOwner(_ c: Connection) -> Bool { corkOwnerID == ObjectIdentifier(c) }
    /// Bytes gathered for the owner (cork bytes and referenced segments).
    var corkedBytes: Int { cork.readableBytes + referencedBytes }
    private var referencedBytes = 0
    func referencedBytesReset() { referencedBytes = 0 }

    enum Segment {
        case cork(start: Int, end: Int)
        case shared(SharedBytes, start: Int, end: Int)
        case file(FileRef, offset: Int, end: Int)
    }

    /// Compressors by window size, shared by every connection of the loop: the hub never
    /// keeps compression context between messages, so one stream serves them all.
    private var deflaters: [Int: Deflater] = [:]

    func deflater(windowBits: Int) -> Deflater {
        if let d = deflaters[windowBits] { return d }
        let d = Deflater(windowBits: Int32(windowBits))
        deflaters[windowBits] = d
        return d
    }

    /// Where every inflater of the loop writes (a message is consumed before the next one).
    let inflateOutput = ByteBuffer(capacity: 16 * 1024)

    /// Inflates for every connection whose client resets its context after each message.
    lazy var sharedInflater = Inflater(resetAfterMessage: true, output: inflateOutput)

    let tables = ResponseTables()

    /// "Date: ...\r\n", rebuilt when the wall-clock second changes.
    /// Points into `dateStorage`: a `[UInt8]` here cost a retain and a release per response.
    private(set) var dateLine = UnsafeRawBufferPointer(start: nil, count: 0)
    private let dateStorage = UnsafeMutableRawBufferPointer.allocate(byteCount: 64, alignment: 1)
    private var dateSecond = -1

    /// TLS: ciphertext read from a socket, and file bytes on their way to encryption.
    lazy var tlsScratch = UnsafeMutableRawBufferPointer.allocate(byteCount: 64 * 1024, alignment: 16)
    /// TLS: records made while reading, on their way to the socket.
    lazy var tlsRecords = ByteBuffer(capacity: 4096)
    /// TLS connections with plaintext inside OpenSSL that epoll cannot see: read at turn end.
    var pendingReads: [Connection] = []

    func readLater(_ c: Connection) {
        if pendingReads.isEmpty { loop.wake() }  // the turn ends; the next one must not sleep
        if !pendingReads.contains(where: { $0 === c }) { pendingReads.append(c) }
    }

    /// Reads what OpenSSL holds for the connections that asked (as if their socket were
    /// readable).
    func runPendingReads() {
        guard !pendingReads.isEmpty else { return }
        let list = pendingReads
        pendingReads.removeAll()
        for c in list where !c.closed { c.handleEvent(Events.readable) }
    }

    /// Bodies up to this size are copied into the cork; larger ones are written in place.
    static let copyThreshold = 16 * 1024

    @inline(__always) func count(_ c: Counter, _ n: Int = 1) {
        let v = counterValues + c.rawValue
        v.pointee.store(v.pointee.load(ordering: .relaxed) &+ n, ordering: .relaxed)
    }

    deinit { dateStorage.deallocate() }

    init(loop: EventLoop, server: Server, counters: LoopCounters) {
        self.loop = loop
        self.server = server
        self.counters = counters
        self.counterValues = counters.values
        self.config = server.config
        self.files = server.config.publicRoot.map { FileCache(root: $0, config: server.config) }
        self.startMillis = loop.now
        refreshDate()
        loop.onTick { [unowned self] in self.tick() }
        loop.onTurnEnd { [unowned self] in
            self.seconds = Int32((self.loop.now - self.startMillis) / 1000)
            self.flushCork()
            self.runPendingReads()
            self.flushCork()
        }
    }

    func refreshDate() {
        let now = Clock.wallSeconds()
        if now != dateSecond {
            dateSecond = now
            let line = Array("Date: \(HTTPDate.format(now))\r\n".utf8)
            let n = min(line.count, dateStorage.count)
            dateStorage.copyBytes(from: line[0..<n])
            dateLine = UnsafeRawBufferPointer(rebasing: dateStorage[0..<n])
        }
    }

    // MARK: connections

    /// `limited`: counted against the peer's connection limit (not on the metrics port).
    func accept(_ fd: Int32, peer: IPAddress, router: Router, tls: Bool = false, limited: Bool = true) {
        loop.preconditionInLoop()
        let limits = server.clientLimits
        var counted = false, over = false
        if limited && limits.countsConnections(of: peer) {
            if limits.connectionOpened(peer, now: loop.now) {
                counted = true
            } else if tls {
                // No answer is possible before a handshake: closed at once.
                Sys.close(fd)
                return
            } else {
                over = true
            }
        }
        Socket.setNoDelay(fd)
        let c = HTTPConnection(fd: fd, context: self, router: router)
        c.peer = peer
        c.countedPeer = counted
        func giveUp() {
            if counted { limits.connectionClosed(peer) }
            Sys.close(fd)
        }
        if tls {
            guard let t = server.tlsContext.map({ TLSSession($0) }) ?? nil else {
                Log.error("TLS session could not be created: \(TLSContext.lastError())")
                giveUp()
                return
            }
            t.createdAt = seconds
            c.tls = t
        }
        do {
            try loop.register(fd, events: c.interest, handler: c)
        } catch {
            Log.error("register connection: \(error)")
            giveUp()
            return
        }
        c.sweepIndex = connections.count
        connections.append(c)
        server.openConnections.add(1, ordering: .relaxed)
        counters.add(.connectionsAccepted)
        if over { c.refuseOverLimit() }
    }

    func closed(_ c: Connection) {
        loop.preconditionInLoop()
        if c.countedPeer {
            c.countedPeer = false
            server.clientLimits.connectionClosed(c.peer)
        }
        let i = c.sweepIndex
        let last = connections.count - 1
        if i != last {
            connections[i] = connections[last]
            connections[i].sweepIndex = i
        }
        connections.removeLast()
        server.openConnections.subtract(1, ordering: .relaxed)
        if isCorkOwner(c) {
            corkOwner = nil; cork.clear(); segments.removeAll(keepingCapacity: true); referencedBytes = 0
        }
        for l in listeners where l.paused {
            noteWaiting(l)
            l.resume()
        }
        if shuttingDown && connections.isEmpty { loop.stop() }
    }

    /// Logged once each time the limit is reached, not once per paused accept.
    var atLimitLogged = false

    /// The limit was reached with nobody waiting; count the breach if somebody waits now.
    func noteWaiting(_ l: Listener) {
        if !atLimitLogged && l.hasPendingConnections() {
            counters.add(.breachConnections)
            atLimitLogged = true
            Log.warning("connection limit \(server.maxConnections) reached: accept paused on loop \(loop.index)")
        }
    }

    func canAccept(someoneWaiting: Bool) -> Bool {
        if server.openConnections.load(ordering: .relaxed) < server.maxConnections {
            atLimitLogged = false
            return true
        }
        guard someoneWaiting else { return false }
        counters.add(.breachConnections)
        if !atLimitLogged {
            atLimitLogged = true
            Log.warning("connection limit \(server.maxConnections) reached: accept paused on loop \(loop.index)")
        }
        return false
    }

    func tick() {
        seconds = Int32((loop.now - startMillis) / 1000)
        refreshDate()
        // Iterate backwards: a sweep may close (and swap-remove) the connection it looks at.
        var i = connections.count - 1
        while i >= 0 {
            if i < connections.count { connections[i].sweep(now: seconds) }
            i -= 1
        }
        // Addresses with nothing counted are forgotten every 10 s (by one loop).
        if loop.index == 0 {
            if seconds % 10 == 0 { server.clientLimits.sweep(now: loop.now) }
            server.memory.check(connections: server.connectionCount, now: seconds)
        }
        if !shuttingDown {
            for l in listeners where l.paused {
                if server.openConnections.load(ordering: .relaxed) < server.maxConnections {
                    l.resume()
                } else {
                    noteWaiting(l)
                }
            }
        }
    }

    // MARK: graceful shutdown

    func beginShutdown() {
        shuttingDown = true
        for l in listeners { l.close() }
        var i = connections.count - 1
        while i >= 0 {
            if i < connections.count { connections[i].shutdownRequested() }
            i -= 1
        }
        if connections.isEmpty { loop.stop() }
    }

    /// Puts `new` in `old`'s place (an upgrade): same descriptor, same sweep slot.
    func replace(_ old: Connection, with new: Connection) {
        new.sweepIndex = old.sweepIndex
        connections[old.sweepIndex] = new
        loop.replaceHandler(old.fd, with: new)
    }

    func forceClose() {
        while let c = connections.last { c.close() }
        loop.stop()
    }

    // MARK: the cork

    /// Makes `c` the cork's owner, flushing another owner's bytes first so that every
    /// connection's bytes stay in order.
    @inline(__always) func cork(for c: Connection) {
        loop.preconditionInLoop()
        if !isCorkOwner(c) {
            flushCork()
            corkOwner = c
        }
    }

    func corkAppend(_ bytes: UnsafeRawBufferPointer) {
        let start = cork.writerIndex
        cork.append(bytes)
        noteCork(from: start)
    }

    /// Appends `value` in decimal and CRLF (a Content-Length value) without allocating.
    func corkAppendDecimalLine(_ value: Int) {
        let start = cork.writerIndex
        cork.append(decimal: value)
        cork.append("\r\n")
        noteCork(from: start)
    }

    /// Appends `value` in hex and CRLF (a chunk-size line).
    func corkAppendHexLine(_ value: Int) {
        let start = cork.writerIndex
        cork.append(hex: value)
        cork.append("\r\n")
        noteCork(from: start)
    }

    private func noteCork(from start: Int) {
        if case .cork(let s, let e)? = segments.last, e == start {
            segments[segments.count - 1] = .cork(start: s, end: cork.writerIndex)
        } else {
            segments.append(.cork(start: start, end: cork.writerIndex))
        }
    }

    func corkAppend(_ bytes: [UInt8]) { bytes.withUnsafeBytes { corkAppend($0) } }

    /// What `write` appends to the cork buffer, as one piece (a response head: one note of
    /// it where a call per line noted each).
    func corkWrite(_ write: (ByteBuffer) -> Void) {
        let start = cork.writerIndex
        write(cork)
        noteCork(from: start)
    }

    func corkAppend(shared s: SharedBytes) {
        if s.count <= Self.copyThreshold { corkAppend(s.buffer); return }
        segments.append(.shared(s, start: 0, end: s.count))
        referencedBytes += s.count
    }

    func corkAppend(file f: FileRef, offset: Int, length: Int) {
        segments.append(.file(f, offset: offset, end: offset + length))
        referencedBytes += length
    }

    /// TLS, nothing queued, no file in the cork: encrypts the cork into `tlsRecords` and writes
    /// the records with one write; what the socket does not take is queued as records. False
    /// when the general path must run (a file segment).
    private func flushCorkTLS(_ c: Connection, _ t: TLSSession) -> Bool {
        for s in segments { if case .file = s { return false } }
        let r = tlsRecords
        r.clear()
        for s in segments {
            let ok: Bool
            switch s {
            case .cork(let a, let b):
                ok = t.encrypt(UnsafeRawBufferPointer(start: cork.base + a, count: b - a), into: r)
            case .shared(let sh, let a, let b):
                ok = t.encrypt(UnsafeRawBufferPointer(start: sh.base + a, count: b - a), into: r)
            case .file: ok = false
            }
            if !ok {
                r.clear()
                c.close()
                return true
            }
        }
        t.takeOutput(into: r)
        var w = 0
        do {
            if case .done(let n) = try Sys.send(c.fd, r.readable) { w = n }
        } catch {
            r.clear()
            c.close()
            return true
        }
        counters.add(.bytesOut, w)
        if w > 0 { c.lastIO = seconds }
        if w < r.readableBytes {
            let q = OutputQueue()
            let cb = q.cipherBuffer()
            cb.append(UnsafeRawBufferPointer(rebasing: r.readable[w...]))
            q.totalBytes = cb.readableBytes
            c.out = q
            c.updateInterest()
        } else {
            t.shrinkIfIdle()
            c.outputDrained()
        }
        r.clear()
        return true
    }

    /// Writes the cork to its owner: one writev in the common case; what the socket does not
    /// take goes to the connection's own output queue.
    func flushCork() {
        guard let c = corkOwner else { return }
        corkOwner = nil
        defer {
            cork.clear()
            segments.removeAll(keepingCapacity: true)
            referencedBytes = 0
        }
        guard !segments.isEmpty, !c.closed else { return }
        if let t = c.tls, c.out == nil, flushCorkTLS(c, t) { return }
        var written = 0
        // Whether the socket took all we offered: only then is trying it again worth a call.
        var socketTookAll = c.tls != nil  // TLS: everything is queued, then encrypted and written
        if c.out == nil && c.tls == nil {
            // Fast path: everything up to the first file in one writev.
            var iov = (iovec(), iovec(), iovec(), iovec(), iovec(), iovec(), iovec(), iovec())
            let n = withUnsafeMutableBytes(of: &iov) { raw -> Int in
                let v = raw.bindMemory(to: iovec.self)
                var n = 0
                for s in segments {
                    guard n < 8 else { break }
                    switch s {
                    case .cork(let a, let b): v[n] = iovec(iov_base: cork.base + a, iov_len: b - a)
                    case .shared(let sh, let a, let b):
                        v[n] = iovec(iov_base: UnsafeMutableRawPointer(mutating: sh.base + a), iov_len: b - a)
                    case .file: return n
                    }
                    n += 1
                }
                return n
            }
            if n > 0 {
                do {
                    let r = try withUnsafeBytes(of: &iov) { raw throws(IOError) in
                        let v = raw.bindMemory(to: iovec.self)
                        // One buffer (a response, a WebSocket frame): send, not writev.
                        if n == 1 {
                            return try Sys.send(c.fd, UnsafeRawBufferPointer(start: v[0].iov_base, count: v[0].iov_len))
                        }
                        return try Sys.writev(c.fd, v.baseAddress!, n)
                    }
                    if case .done(let w) = r { written = w }
                    let offered = withUnsafeBytes(of: &iov) { raw in
                        raw.bindMemory(to: iovec.self).prefix(n).reduce(0) { $0 + $1.iov_len }
                    }
                    socketTookAll = written == offered
                } catch {
                    c.close()
                    return
                }
                counters.add(.bytesOut, written)
                if written > 0 { c.lastIO = seconds }
            } else {
                socketTookAll = true  // a file comes first: sendfile it now
            }
        }
        // Whatever is left goes to the connection's queue.
        var skip = written
        for s in segments {
            switch s {
            case .cork(let a, let b):
                if skip >= b - a { skip -= b - a; continue }
                let buf = ByteBuffer(capacity: b - a - skip)
                buf.append(UnsafeRawBufferPointer(start: cork.base + a + skip, count: b - a - skip))
                skip = 0
                c.queue(.bytes(buf))
            case .shared(let sh, let a, let b):
                if skip >= b - a { skip -= b - a; continue }
                c.queue(.shared(sh, start: a + skip, end: b))
                skip = 0
            case .file(let f, let o, let e):
                c.queue(.file(f, offset: o, end: e))
            }
        }
        if c.out == nil {
            c.outputDrained()
        } else if socketTookAll {
            c.drainOutput()  // a file, or more segments than one writev carries
        } else {
            c.updateInterest()  // the socket is full: wait for EPOLLOUT
        }
    }
}
