import HalleyCore
import HalleyHTTP
import HalleyLoop

/// Moving a connection to another loop (docs/ARCHITECTURE.md, "Ownership": a session is owned by one loop; a request
/// for it that lands on another loop is handed to the owner — the connection moves, not the
/// messages). The descriptor stays open; the old loop forgets it and the new one adopts it
/// with everything pending (unwritten answers, pipelined requests).
struct HandOff {
    let target: LoopContext
    let request: HTTPRequest
    let then: @Sendable (HTTPRequest, Responder) -> Void
}

/// What a moved connection carries to its new loop.
struct MovedConnection {
    let fd: Int32
    let router: Router
    let out: OutputQueue?
    let tls: TLSSession?
    let pendingIn: ByteBuffer?
    let serial: UInt32
    let respondHead: Bool
    let respondMinor: UInt8
    let respondKeepAlive: Bool
    let peerClosed: Bool
    let peer: IPAddress
    let countedPeer: Bool
}

extension HTTPConnection {
    func handOff(
        _ request: HTTPRequest, serial s: UInt32, toLoop index: Int,
        then: @escaping @Sendable (HTTPRequest, Responder) -> Void
    ) {
        guard s == serial, answerable, !closed else { return }
        let contexts = ctx.server.contexts
        guard index >= 0 && index < contexts.count && contexts[index] !== ctx else {
            then(request, Responder(connection: self, serial: s))
            return
        }
        let h = HandOff(target: contexts[index], request: request, then: then)
        exchange = .handingOff(h)
        // Inside our event the hand-over waits until the bytes read with the request are in
        // `pendingIn`; a late call (outside any event) moves at once.
        if !inEvent { finishHandOff(h) }
    }

    func finishHandOff(_ h: HandOff) {
        exchange = .answering
        if ctx.isCorkOwner(self) { ctx.flushCork() }
        guard !closed else { return }
        let moved = MovedConnection(
            fd: fd, router: router, out: out, tls: tls, pendingIn: pendingIn, serial: serial,
            respondHead: respondHead, respondMinor: respondMinor,
            respondKeepAlive: respondKeepAlive, peerClosed: peerClosed,
            peer: peer, countedPeer: countedPeer)
        countedPeer = false
        // This object is done: nothing it does from now on may touch the descriptor.
        closed = true
        out = nil
        tls = nil
        pendingIn = nil
        ctx.loop.unregister(fd)
        ctx.detach(self)
        ctx.count(.handOffs)
        let box = UncheckedBox((moved, h))
        h.target.loop.execute {
            let (m, h) = box.value
            h.target.adopt(m, request: h.request, then: h.then)
        }
    }
}

extension LoopContext {
    /// Forgets a connection that moves to another loop (its descriptor stays open).
    func detach(_ c: Connection) {
        let i = c.sweepIndex
        let last = connections.count - 1
        if i != last {
            connections[i] = connections[last]
            connections[i].sweepIndex = i
        }
        connections.removeLast()
        if isCorkOwner(c) {
            corkOwner = nil; cork.clear(); segments.removeAll(keepingCapacity: true); referencedBytesReset()
        }
        if shuttingDown && connections.isEmpty { loop.stop() }
    }

    /// Takes over a connection another loop handed over, then lets `then` answer its request.
    func adopt(_ m: MovedConnection, request: HTTPRequest, then: (HTTPRequest, Responder) -> Void) {
        let c = HTTPConnection(fd: m.fd, context: self, router: m.router)
        c.out = m.out
        c.tls = m.tls
        c.pendingIn = m.pendingIn
        c.serial = m.serial
        c.exchange = .answering
        c.respondHead = m.respondHead
        c.respondMinor = m.respondMinor
        c.respondKeepAlive = m.respondKeepAlive && !shuttingDown
        c.peerClosed = m.peerClosed
        c.peer = m.peer
        c.countedPeer = m.countedPeer
        c.interest = c.wantedEvents()
        do {
            try loop.register(m.fd, events: c.interest, handler: c)
        } catch {
            Log.error("adopt connection: \(error)")
            if m.countedPeer { server.clientLimits.connectionClosed(m.peer) }
            Sys.close(m.fd)
            server.openConnections.subtract(1, ordering: .relaxed)
            return
        }
        c.sweepIndex = connections.count
        connections.append(c)
        then(request, Responder(connection: c, serial: m.serial))
        if shuttingDown && !c.closed {
            c.shutdownRequested()  // a stream or poll that began during shutdown: cut it
        }
        if !c.closed && c.out != nil { c.updateInterest() }
    }
}
