import HalleyCore
import HalleyHTTP
import HalleyLoop

/// A response whose body is written a piece at a time for as long as it lasts (Server-Sent
/// Events, HTTP streaming). HTTP/1.1: chunked (RFC 9112 §7.1), so the connection can carry
/// more requests after `end`; HTTP/1.0: raw bytes, then close. Loop-confined: use it on the
/// loop of the connection (`Responder.loop`).
public final class HTTPStream {
    public enum Part {
        case bytes([UInt8])
        case shared(SharedBytes)
        /// Copied at once: valid only for the call.
        case raw(UnsafeRawBufferPointer)

        var count: Int {
            switch self {
            case .bytes(let b): return b.count
            case .shared(let s): return s.count
            case .raw(let r): return r.count
            }
        }
    }

    var connection: HTTPConnection?
    let chunked: Bool
    /// Called once if the connection closes (client gone, error, shutdown) before `end`.
    public var onClose: (() -> Void)?
    /// Body bytes written so far (without chunk framing).
    public private(set) var bodyBytes = 0

    init(connection: HTTPConnection, chunked: Bool) {
        self.connection = connection
        self.chunked = chunked
    }

    public var isOpen: Bool { connection != nil }

    /// Bytes written but not yet taken by the socket.
    public var bufferedBytes: Int {
        guard let c = connection else { return 0 }
        return c.pendingOutputBytes + (c.ctx.isCorkOwner(c) ? c.ctx.corkedBytes : 0)
    }

    /// Writes the parts as one piece of the body. Goes out with the loop's cork at the end
    /// of the turn (one writev per connection). False when the stream is closed.
    @discardableResult
    public func write(_ parts: [Part]) -> Bool {
        guard let c = connection, !c.closed else { return false }
        let ctx = c.ctx
        let n = parts.reduce(0) { $0 + $1.count }
        guard n > 0 else { return true }
        ctx.cork(for: c)
        if chunked { ctx.corkAppendHexLine(n) }
        for p in parts {
            switch p {
            case .bytes(let b): ctx.corkAppend(b)
            case .shared(let s): ctx.corkAppend(shared: s)
            case .raw(let r): ctx.corkAppend(r)
            }
        }
        if chunked { ctx.corkAppend(ServerTables.crlf) }
        bodyBytes += n
        if !c.inEvent && ctx.corkedBytes > 64 * 1024 { ctx.flushCork() }
        return true
    }

    /// Ends the response (the last chunk); the connection goes on with the next request.
    public func end() {
        guard let c = connection else { return }
        connection = nil
        onClose = nil
        c.endStream(self)
    }

    /// Closes the connection without ending the body: the client sees it cut short (a relay
    /// whose source failed must not make a truncated body look complete).
    public func abort() {
        guard let c = connection else { return }
        connection = nil
        onClose = nil
        if c.ctx.isCorkOwner(c) { c.ctx.flushCork() }
        c.close()
    }

    /// The connection closed under the stream.
    func connectionClosed() {
        guard connection != nil else { return }
        connection = nil
        let cb = onClose
        onClose = nil
        cb?()
    }
}

extension ByteBuffer {
    /// Appends `value` in lowercase hexadecimal (a chunk size, RFC 9112 §7.1).
    func append(hex value: Int) {
        let digits: StaticString = "0123456789abcdef"
        var v = value
        var tmp: (UInt64, UInt64) = (0, 0)
        let n = withUnsafeMutableBytes(of: &tmp) { t -> Int in
            var n = 0
            repeat {
                t[15 - n] = digits.utf8Start[v & 15]
                v >>= 4
                n += 1
            } while v > 0
            return n
        }
        withUnsafeBytes(of: &tmp) { append(UnsafeRawBufferPointer(rebasing: $0[(16 - n)...])) }
    }
}

extension HTTPConnection {
    /// Sends the head of a streaming response; the request stays "held" (no later request is
    /// read) until the stream ends.
    func startStream(serial s: UInt32, status: Int, headers: [(String, String)]) -> HTTPStream? {
        guard s == serial, answerable, !closed else { return nil }
        let chunked = respondMinor >= 1
        if !chunked { respondKeepAlive = false }
        ctx.cork(for: self)
        ctx.corkAppend(ServerTables.statusLines[min(max(status, 100), 599)])
        ctx.corkAppend(ctx.dateLine)
        for (n, v) in headers { ctx.corkAppend(Array("\(n): \(v)\r\n".utf8)) }
        if chunked { ctx.corkAppend(ServerTables.transferChunked) }
        if !respondKeepAlive { ctx.corkAppend(ServerTables.connectionClose) }
        ctx.corkAppend(ServerTables.crlf)
        ctx.count(Counter.forStatus(status))
        let st = HTTPStream(connection: self, chunked: chunked)
        var saw = false
        if case .held(_, let s) = exchange { saw = s }
        exchange = .streaming(st, sawData: saw)
        if !inEvent {
            ctx.flushCork()
            updateInterest()
        }
        return st
    }

    func endStream(_ st: HTTPStream) {
        guard case .streaming(let current, _) = exchange, current === st, !closed else { return }
        exchange = .reading
        if st.chunked {
            ctx.cork(for: self)
            ctx.corkAppend(ServerTables.lastChunk)
        }
        if !respondKeepAlive && ending == .open { ending = .closing }
        phaseStart = ctx.seconds
        // HTTP/1.0 (no last chunk): nothing is written to end the body, so no drain would
        // come to finish the close.
        if ending != .open && out == nil && !ctx.isCorkOwner(self) { outputDrained() }
        if !inEvent {
            inEvent = true
            defer { inEvent = false }
            ctx.flushCork()
            if canProcessPending { process(UnsafeRawBufferPointer(start: nil, count: 0)) }
            if closed || finishLeaving() { return }
            if ctx.isCorkOwner(self) { ctx.flushCork() }
            updateInterest()
        }
    }

    /// The connection is going: tell whoever waits on it.
    func notifyHolders() {
        switch exchange {
        case .streaming(let st, _):
            exchange = .answering
            st.connectionClosed()
        case .held(let w, _):
            exchange = .answering
            w()
        case .reading, .answering, .handingOff, .upgrading:
            break
        }
    }
}
