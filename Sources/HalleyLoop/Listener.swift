#if canImport(Glibc)
import Glibc
#endif
import HalleyCore

/// A listening socket registered with one loop. New connections go to `onAccept`; when the
/// owner says the hub is full, the listener pauses (stays open, stops accepting: new
/// connections wait in the kernel's backlog) and resumes when told.
public final class Listener: EventHandler {
    public let fd: Int32
    unowned let loop: EventLoop
    let onAccept: (Int32, IPAddress) -> Void
    /// Asked before each accept; the argument says whether a connection is known to be
    /// waiting (the listener's readiness), so that reaching the limit with nobody waiting is
    /// not counted as a breach.
    let canAccept: (_ someoneWaiting: Bool) -> Bool
    public private(set) var paused = false
    public private(set) var closed = false

    public init(
        fd: Int32, loop: EventLoop, canAccept: @escaping (_ someoneWaiting: Bool) -> Bool,
        onAccept: @escaping (Int32, IPAddress) -> Void
    ) throws(IOError) {
        self.fd = fd
        self.loop = loop
        self.onAccept = onAccept
        self.canAccept = canAccept
        try loop.register(fd, events: Events.readable, handler: self)
    }

    public func handleEvent(_ events: UInt32) {
        // Bounded so one busy listener cannot starve the loop's connections.
        for i in 0..<128 {
            if !canAccept(i == 0) { pause(); return }
            do {
                guard let (conn, peer) = try Socket.accept(fd) else { return }
                onAccept(conn, peer)
            } catch {
                // EMFILE / ENFILE / ENOBUFS: out of descriptors or memory. Pause; the tick
                // resumes it. ECONNABORTED and friends: the peer left; try the next.
                if error.errno == EMFILE || error.errno == ENFILE || error.errno == ENOBUFS || error.errno == ENOMEM {
                    Log.error("accept: \(error); pausing the listener")
                    pause()
                    return
                }
            }
        }
    }

    /// Whether connections wait in the kernel's backlog (checked while paused).
    public func hasPendingConnections() -> Bool {
        var p = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
        return poll(&p, 1, 0) == 1 && p.revents & Int16(POLLIN) != 0
    }

    public func pause() {
        guard !paused && !closed else { return }
        paused = true
        loop.modify(fd, events: 0)
    }

    public func resume() {
        guard paused && !closed else { return }
        paused = false
        loop.modify(fd, events: Events.readable)
    }

    /// Stops listening for good (graceful shutdown): the port is released.
    public func close() {
        guard !closed else { return }
        closed = true
        loop.unregister(fd)
        Sys.close(fd)
    }
}
