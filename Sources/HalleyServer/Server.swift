#if canImport(Glibc)
import Glibc
#endif
import HalleyCore
import HalleyHTTP
import HalleyLoop
import Synchronization

/// The HTTP server core: one event loop per thread, each with its own `SO_REUSEPORT`
/// listener, so the kernel spreads connections over the loops and a connection never leaves
/// the loop that accepted it.
///
/// `@unchecked Sendable`: configuration, router and loops are fixed once `start` returns;
/// `openConnections` is atomic; everything else lives in the loops' `LoopContext`s.
public final class Server: @unchecked Sendable {
    public let config: ServerConfig
    public let router: Router
    public let metrics = Metrics()
    /// Per-address limits, shared by every loop.
    public let clientLimits: ClientLimits
    /// Gives freed heap pages back after a load went (loop 0 checks every second).
    let memory = MemoryTrim()
    let metricsRouter = Router()
    let openConnections = Atomic<Int>(0)
    public private(set) var maxConnections = 0
    public private(set) var loops: [EventLoop] = []
    var contexts: [LoopContext] = []
    var threads: [pthread_t] = []
    /// The port the main listeners are bound to (the real one when configured as 0).
    public private(set) var port = 0
    public private(set) var metricsPort: Int?
    /// The TLS listeners' port (`tlsPort`, or `port` when the main listener speaks TLS).
    public private(set) var tlsPort: Int?
    /// The credentials new TLS connections use; replaced by `reloadTLS` (connections keep
    /// the context they started with).
    let tlsState = Locked<TLSContext?>(nil)
    var tlsContext: TLSContext? { tlsState.withLock { $0 } }

    public init(config: ServerConfig, router: Router = Router()) {
        self.config = config
        self.router = router
        clientLimits = ClientLimits(config: config.clientLimits)
        if config.publicRoot != nil && router.fallback == nil { router.fallback = StaticFiles.handler }
    }

    /// Loads the certificate and key of `config` (call before `start`); a clear error when
    /// a file is missing, unreadable, not PEM, or the key does not match.
    public func loadTLS() throws(TLSError) {
        guard let cert = config.tlsCertFile, let key = config.tlsKeyFile else {
            if config.tlsCertFile != nil || config.tlsKeyFile != nil || config.tlsPort != nil {
                throw TLSError(description: "TLS needs both --tls-cert and --tls-key")
            }
            return
        }
        let c = try TLSContext(certFile: cert, keyFile: key, ownRecords: config.tlsOwnRecords)
        tlsState.withLock { $0 = c }
    }

    /// Reads the certificate and key files again (SIGHUP): new connections use them, open
    /// ones go on with the old. On an error the old ones stay in use.
    public func reloadTLS() throws(TLSError) {
        guard let old = tlsContext else { throw TLSError(description: "TLS is not configured") }
        let c = try TLSContext(certFile: old.certFile, keyFile: old.keyFile, ownRecords: old.ownRecords)
        tlsState.withLock { $0 = c }
    }

    /// Binds every listener and starts the loop threads. Errors (a port in use) are thrown
    /// before any thread starts.
    public func start(beforeRunning: ([EventLoop]) -> Void = { _ in }) throws(IOError) {
        MemoryTrim.fixMmapThreshold()
        let fileLimit = Socket.raiseFileLimit()
        maxConnections = config.maxConnections > 0 ? config.maxConnections : max(16, fileLimit - 100)
        let threadCount = config.threads > 0 ? config.threads : Int(sysconf(Int32(_SC_NPROCESSORS_ONLN)))
        let metrics = self.metrics
        metrics.openConnections = { [unowned self] in self.connectionCount }
        let limits = clientLimits
        let memory = self.memory
        metrics.addSource { limits.metricsText() + memory.metricsText() }
        metricsRouter.add([.get], "/metrics") { _, responder in
            responder.respond(
                HTTPResponse(
                    status: 200, headers: [("Content-Type", "text/plain; version=0.0.4; charset=utf-8")],
                    body: .bytes(Array(metrics.render().utf8))))
        }

        var fds: [Int32] = []
        if config.port != 0 {
            // SO_REUSEPORT would let us share a port another process already listens on (the
            // kernel would split connections between us): make sure it is free first.
            Sys.close(try Socket.listen(host: config.host, port: config.port, reusePort: false))
        }
        let first = try Socket.listen(host: config.host, port: config.port, reusePort: true)
        fds.append(first)
        port = Socket.localPort(first)
        for _ in 1..<max(1, threadCount) {
            fds.append(try Socket.listen(host: config.host, port: port, reusePort: true))
        }
        let tlsOnMain = tlsContext != nil && config.tlsPort == nil
        if tlsOnMain { tlsPort = port }
        var tlsFds: [Int32] = []
        if tlsContext != nil, let tp = config.tlsPort {
            if tp != 0 { Sys.close(try Socket.listen(host: config.host, port: tp, reusePort: false)) }
            let f = try Socket.listen(host: config.host, port: tp, reusePort: true)
            tlsFds.append(f)
            tlsPort = Socket.localPort(f)
            for _ in 1..<fds.count {
                tlsFds.append(try Socket.listen(host: config.host, port: tlsPort!, reusePort: true))
            }
        }
        var metricsFd: Int32? = nil
        if let mp = config.metricsPort {
            let fd = try Socket.listen(host: config.metricsHost, port: mp, reusePort: false)
            metricsFd = fd
            metricsPort = Socket.localPort(fd)
        }

        for i in 0..<fds.count {
            let loop = try EventLoop(index: i, maxDescriptors: fileLimit + 16)
            let counters = LoopCounters()
            metrics.loops.append(counters)
            let ctx = LoopContext(loop: loop, server: self, counters: counters)
            ctx.listeners.append(
                try Listener(
                    fd: fds[i], loop: loop,
                    canAccept: { [unowned ctx] waiting in ctx.canAccept(someoneWaiting: waiting) },
                    onAccept: { [unowned ctx] fd, peer in
                        ctx.accept(fd, peer: peer, router: self.router, tls: tlsOnMain)
                    }))
            if i < tlsFds.count {
                ctx.listeners.append(
                    try Listener(
                        fd: tlsFds[i], loop: loop,
                        canAccept: { [unowned ctx] waiting in ctx.canAccept(someoneWaiting: waiting) },
                        onAccept: { [unowned ctx] fd, peer in ctx.accept(fd, peer: peer, router: self.router, tls: true)
                        }))
            }
            if i == 0, let mfd = metricsFd {
                let mr = metricsRouter
                ctx.listeners.append(
                    try Listener(
                        fd: mfd, loop: loop,
                        canAccept: { [unowned ctx] waiting in ctx.canAccept(someoneWaiting: waiting) },
                        onAccept: { [unowned ctx] fd, peer in ctx.accept(fd, peer: peer, router: mr, limited: false) }))
            }
            loops.append(loop)
            contexts.append(ctx)
        }
        // Later layers (the hub) attach their per-loop state here, before any thread runs.
        beforeRunning(loops)
        for loop in loops { threads.append(loop.startThread()) }
    }

    /// Graceful shutdown: every loop closes its listeners and idle connections at once,
    /// finishes the responses in flight, and stops when its last connection closes or
    /// `shutdownGrace` seconds pass. Safe from any thread; `wait` returns when all are done.
    /// `beforeClosing` runs first on each loop (the hub tells its clients to reconnect); what
    /// it writes is flushed before idle connections close.
    public func shutdown(beforeClosing: @escaping @Sendable (Int) -> Void = { _ in }) {
        let grace = Int64(config.shutdownGrace) * 1000
        for (loop, ctx) in zip(loops, contexts) {
            let box = UncheckedBox(ctx)
            loop.execute {
                let ctx = box.value
                beforeClosing(ctx.loop.index)
                ctx.flushCork()
                ctx.beginShutdown()
                ctx.loop.schedule(afterMillis: grace) { ctx.forceClose() }
            }
        }
    }

    /// Blocks until every loop thread has ended.
    public func wait() {
        for t in threads { pthread_join(t, nil) }
        threads.removeAll()
    }

    /// Open client connections across all loops.
    public var connectionCount: Int { openConnections.load(ordering: .relaxed) }
}

/// Carries values between loops through `execute`: a loop-confined object to its own loop,
/// or values handed over (the sender no longer touches them) or immutable.
public struct UncheckedBox<T>: @unchecked Sendable {
    public let value: T
    public init(_ v: T) { value = v }
}
