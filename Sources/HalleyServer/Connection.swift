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
    /// Set on connections accepted on a TLS listener: every byte in and out goes through it.
    var tls: TLSSession?
    /// The socket's peer (a proxy's address behind a reverse proxy).
    public internal(set) var peer = IPAddress.unspecified
    /// Counted against `peer`'s connection limit: uncounted when it closes.
    var countedPeer = false

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
            let n = try tls.map { t throws(IOError) in try q.drain(fd, tls: t, scratch: ctx.tlsScratch) } ?? q.drain(fd)
            if n > 0 {
                ctx.count(.bytesOut, n)
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
        // Plaintext OpenSSL already holds makes the socket look idle to epoll: read it at
        // the end of this turn instead.
        if let t = tls, t.hasBufferedInput, readsNow { ctx.readLater(self) }
    }

    /// Whether the connection would read if bytes were there (TLS: see `updateInterest`).
    var readsNow: Bool { false }

    // MARK: reading and writing through TLS or not

    /// Reads what arrived: `.done(n)` with n > 0 bytes, `.done(0)` at the end of the stream,
    /// `.wouldBlock` when nothing (more) is there. Over TLS the bytes are plaintext: the
    /// handshake runs as records arrive, and what OpenSSL answers (handshake messages,
    /// tickets, alerts) is queued and written.
    func readSome(_ buf: UnsafeMutableRawBufferPointer) throws(IOError) -> IOResult {
        guard let t = tls else { return try Sys.recv(fd, buf) }
        if t.closeReceived { return .done(0) }  // close_notify came behind data handed over before
        var filled = 0
        var readSocket = false
        var eof = false
        loop: while filled < buf.count {
            switch t.decrypt(into: UnsafeMutableRawBufferPointer(rebasing: buf[filled...])) {
            case .data(let n):
                filled += n
            case .needInput:
                if readSocket { break loop }
                readSocket = true
                let scratch = ctx.tlsScratch
                switch try Sys.recv(fd, scratch) {
                case .wouldBlock:
                    break loop
                case .done(0):
                    eof = true
                    break loop
                case .done(let n):
                    if !t.sawFirstByte {
                        t.sawFirstByte = true
                        // A TLS connection opens with a handshake record (22); a letter is
                        // plain HTTP sent to the TLS port.
                        let b = scratch[0]
                        if (b >= 65 && b <= 90) || (b >= 97 && b <= 122) {
                            Log.info("fd \(fd): plain HTTP on the TLS port: 400")
                            plainHTTPOnTLSPort()
                            throw IOError(errno: EPROTO, function: "TLS: plain HTTP")
                        }
                    }
                    t.feed(UnsafeRawBufferPointer(rebasing: scratch[0..<n]))
                }
            case .closed:
                eof = true
                break loop
            case .failed(let why):
                Log.info("fd \(fd): TLS \(t.handshakeDone ? "error" : "handshake failed"): \(why)")
                flushRecords(t)  // the alert that tells the client why
                throw IOError(errno: EPROTO, function: "TLS")
            }
        }
        if t.checkEstablished(now: ctx.seconds) { Log.debug("fd \(fd): TLS \(t.summary)") }
        if t.hasOutput { flushRecords(t) }
        if filled == 0 { t.shrinkIfIdle() }
        if filled > 0 { return .done(filled) }
        return eof ? .done(0) : .wouldBlock
    }

    /// Writes the records OpenSSL produced while reading (handshake messages, tickets,
    /// alerts). Behind queued output they just join the queue (the socket's writability
    /// writes them); otherwise they go now, and what the socket does not take is queued.
    func flushRecords(_ t: TLSSession) {
        guard !closed else { return }
        if let q = out {
            q.takeRecords(from: t)
            return
        }
        let b = ctx.tlsRecords
        b.clear()
        t.takeOutput(into: b)
        var w = 0
        if case .done(let n)? = try? Sys.send(fd, b.readable) { w = n }
        if w < b.readableBytes {
            let q = OutputQueue()
            let c = q.cipherBuffer()
            c.append(UnsafeRawBufferPointer(rebasing: b.readable[w...]))
            q.totalBytes = c.readableBytes
            out = q
            if !inEvent { updateInterest() }
        }
        b.clear()
    }

    /// The nginx courtesy: a plain-text 400 for a plain HTTP request on the TLS port.
    func plainHTTPOnTLSPort() {
        let body = "This port speaks HTTPS: use https:// (plain HTTP was sent to the TLS port).\n"
        let text =
            "HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain\r\nContent-Length: \(body.utf8.count)\r\nConnection: close\r\n\r\n"
            + body
        var bytes = Array(text.utf8)
        _ = try? bytes.withUnsafeMutableBytes { b throws(IOError) in try Sys.write(fd, UnsafeRawBufferPointer(b)) }
    }

    /// Ends our side of the stream (lingering close): TLS close_notify first, then FIN.
    func shutdownOutput() {
        sendCloseNotify()
        Socket.shutdownWrite(fd)
    }

    /// TLS: close_notify, written at once (best effort: called only when nothing else is
    /// waiting to go, so it is the last record).
    func sendCloseNotify() {
        guard let t = tls, t.handshakeDone, out == nil else { return }
        t.shutdown()
        guard t.hasOutput else { return }
        let b = ctx.tlsRecords
        b.clear()
        t.takeOutput(into: b)
        _ = try? Sys.send(fd, b.readable)
        b.clear()
    }

    func close() {
        guard !closed else { return }
        sendCloseNotify()
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
