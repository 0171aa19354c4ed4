#if canImport(Glibc)
import Glibc
#endif
import HalleyCore
import HalleyLoop

/// What every client socket of a loop shares, whatever it speaks (HTTP, WebSocket): its
/// descriptor, its place in the loop's sweep list, its output queue and its close.
/// Loop-confined: only its loop's thread touches it.
public class Connection: EventHandler {
    let fd: Int32
    /// `unowned(unsafe)`: the loop context outlives every connection it owns, and a safe
    /// `unowned` costs an atomic retain check on every access of the hot path.
    unowned(unsafe) let ctx: LoopContext
    var sweepIndex = 0
    var closed = false
    var interest = Events.readable
    /// Bytes the socket did not take yet; nil when nothing is pending.
    var out: OutputQueue?
    /// Monotonic second of the last byte read or written.
    var lastIO: Int32
    /// Inside an event or a late response: the cork is flushed by whoever set this.
    var inEvent = false

    init(fd: Int32, context: LoopContext) {
        self.fd = fd
        self.ctx = context
        lastIO = context.seconds
    }

    public func handleEvent(_ events: UInt32) { preconditionFailure("abstract") }

    /// Called about once a second by the loop's sweep.
    func sweep(now: Int32) {}

    /// Graceful shutdown began.
    func shutdownRequested() { close() }

    /// Everything queued was written.
    func outputDrained() {}

    func queue(_ chunk: OutputQueue.Chunk) {
        if out == nil { out = OutputQueue() }
        out!.append(chunk)
    }

    var pendingOutputBytes: Int { out?.totalBytes ?? 0 }

    func drainOutput() {
        guard let q = out, !closed else { return }
        do {
            let n = try q.drain(fd)
            if n > 0 {
                ctx.counters.add(.bytesOut, n)
                lastIO = ctx.seconds
            }
        } catch {
            Log.debug("fd \(fd): \(error)")
            close()
            return
        }
        if q.isEmpty {
            out = nil
            outputDrained()
        }
        if !inEvent && !closed { updateInterest() }
    }

    /// The epoll events this connection wants now.
    func wantedEvents() -> UInt32 { out != nil ? Events.writable : Events.readable }

    func updateInterest() {
        guard !closed else { return }
        let want = wantedEvents()
        if want != interest {
            interest = want
            ctx.loop.modify(fd, events: want)
        }
    }

    func close() {
        guard !closed else { return }
        closed = true
        ctx.loop.unregister(fd)
        Sys.close(fd)
        out = nil
        didClose()
        ctx.closed(self)
    }

    /// Subclasses drop what they hold.
    func didClose() {}
}
