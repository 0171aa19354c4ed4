#if canImport(Glibc)
import Glibc
#endif
import HalleyCore
import HalleyLoop
import HalleyWebSocket

/// The application side of a WebSocket. Called on the connection's loop.
public protocol WebSocketDelegate: AnyObject {
    func webSocketDidOpen(_ ws: WebSocketConnection)
    func webSocket(_ ws: WebSocketConnection, text: UnsafeRawBufferPointer)
    func webSocket(_ ws: WebSocketConnection, binary: UnsafeRawBufferPointer)
    func webSocketDidClose(_ ws: WebSocketConnection, code: UInt16?)
    /// The connection is about to send a ping (RFC 6455) after `pingInterval` of silence: a
    /// subprotocol may send its own too (Pusher's `pusher:ping`). Any answer counts.
    func webSocketWillPing(_ ws: WebSocketConnection)
    /// The peer answered no ping within `pongTimeout`: the close code and reason to send
    /// (a subprotocol may have its own, as Pusher's 4201). Default 1001 "ping timeout".
    func webSocketPingTimedOut(_ ws: WebSocketConnection) -> (code: UInt16, reason: String)
}

public extension WebSocketDelegate {
    func webSocketDidOpen(_ ws: WebSocketConnection) {}
    func webSocketDidClose(_ ws: WebSocketConnection, code: UInt16?) {}
    func webSocketWillPing(_ ws: WebSocketConnection) {}
    func webSocketPingTimedOut(_ ws: WebSocketConnection) -> (code: UInt16, reason: String) {
        (WebSocketCloseCode.goingAway, "ping timeout")
    }
}

/// What `send` did with a message.
public enum SendResult: Equatable {
    /// Handed to the kernel (or to the loop's cork, written at the end of this turn).
    case written
    /// Queued behind earlier bytes the socket has not taken yet.
    case buffered
    /// The send buffer was full; the backpressure policy dropped it or closed the connection.
    case dropped
}

/// One WebSocket connection (RFC 6455), after the HTTP upgrade. Owned by one loop for its
/// whole life. Holds no buffer while idle; zlib state only when permessage-deflate was
/// negotiated and the client keeps its context between messages.
public final class WebSocketConnection: Connection {
    enum State { case open, closeSent, closing }

    // The small fields first: they fill the end of `Connection`'s last word (memory per idle
    // connection, issue 16).
    var state = State.open
    var pingSent = false
    var lingering = false
    var closeReported = false
    var stateSince: Int32
    var lastRead: Int32
    var lastMessage: Int32
    var reader: WebSocketReader
    let delegate: WebSocketDelegate
    public let subprotocol: String?
    let deflate: DeflateParameters?

    init(upgrading http: HTTPConnection, delegate: WebSocketDelegate, deflate: DeflateParameters?, subprotocol: String?)
    {
        let ctx = http.ctx
        var limits = WebSocketReader.Limits()
        limits.maxMessageBytes = ctx.config.webSocket.maxMessageBytes
        var inflater: Inflater? = nil
        if let d = deflate {
            inflater =
                d.clientNoContextTakeover
                ? ctx.sharedInflater : Inflater(resetAfterMessage: false, output: ctx.inflateOutput)
        }
        reader = WebSocketReader(limits: limits, inflater: inflater)
        self.delegate = delegate
        self.deflate = deflate
        self.subprotocol = subprotocol
        stateSince = ctx.seconds
        lastRead = ctx.seconds
        lastMessage = ctx.seconds
        super.init(fd: http.fd, context: ctx)
        peer = http.peer
        interest = http.interest
        out = http.out
        tls = http.tls
    }

    // MARK: reading

    public override func handleEvent(_ events: UInt32) {
        inEvent = true
        defer { inEvent = false }
        if events & Events.writable != 0 && out != nil { drainOutput() }
        if !closed && events & (Events.readable | Events.hangup | Events.error) != 0 { readable() }
        if closed { return }
        if ctx.isCorkOwner(self) { ctx.flushCork() }
        updateInterest()
    }

    override var readsNow: Bool { !closed && (out == nil || lingering) }

    func readable() {
        let buf = ctx.loop.readBuffer
        for _ in 0..<4 {
            guard !closed, out == nil || lingering else { return }
            let n: Int
            do {
                guard case .done(let r) = try readSome(buf) else { return }
                n = r
            } catch {
                close()
                return
            }
            if n == 0 {
                if state == .open { delegateClose(code: nil) }
                close()
                return
            }
            ctx.count(.bytesIn, n)
            lastRead = ctx.seconds
            pingSent = false
            if lingering || reader.finished { continue }
            receive(UnsafeMutableRawBufferPointer(start: buf.baseAddress, count: n))
            if n < buf.count { return }
        }
    }

    /// Feeds bytes to the reader (also the bytes that came with the upgrade request).
    func receive(_ bytes: UnsafeMutableRawBufferPointer) {
        reader.read(bytes) { event in
            // A write failure while handling an earlier event may have closed us.
            if closed { return }
            switch event {
            case .text(let b):
                lastMessage = ctx.seconds
                ctx.count(.wsMessagesIn)
                if state == .open { delegate.webSocket(self, text: b) }
            case .binary(let b):
                lastMessage = ctx.seconds
                ctx.count(.wsMessagesIn)
                if state == .open { delegate.webSocket(self, binary: b) }
            case .ping(let b):
                if state == .open { sendFrame(WebSocketOpcode.pong, b, compressible: false) }
            case .pong:
                break
            case .close(let code, _):
                // RFC 6455 §5.5.1: answer with a close echoing the code, then the server
                // closes the TCP connection first.
                if state == .open {
                    sendClose(code ?? WebSocketCloseCode.normal, reason: "", payload: code != nil)
                    delegateClose(code: code)
                }
                finishClosing()
            case .fail(let code, let reason):
                Log.info("fd \(fd): websocket close \(code): \(reason)")
                ctx.count(.wsProtocolErrors)
                if state == .open {
                    sendClose(code, reason: reason, payload: true)
                    delegateClose(code: code)
                }
                finishClosing()
            }
        }
    }

    // MARK: sending

    /// Sends a text message (`bytes` must be UTF-8).
    @discardableResult
    public func send(text bytes: UnsafeRawBufferPointer) -> SendResult { sendMessage(WebSocketOpcode.text, bytes) }

    @discardableResult
    public func send(binary bytes: UnsafeRawBufferPointer) -> SendResult { sendMessage(WebSocketOpcode.binary, bytes) }

    @discardableResult
    public func send(text: String) -> SendResult {
        var s = text
        return s.withUTF8 { sendMessage(WebSocketOpcode.text, UnsafeRawBufferPointer($0)) }
    }

    /// Sends a message framed (and compressed) once for many connections.
    @discardableResult
    public func send(_ message: PreparedMessage) -> SendResult {
        guard state == .open, !closed else { return .dropped }
        let frame = self.frame(of: message)
        guard admit(frame.count) else { return .dropped }
        ctx.cork(for: self)
        ctx.corkAppend(shared: frame)
        ctx.count(.wsMessagesOut)
        return out == nil ? .written : .buffered
    }

    func sendMessage(_ opcode: UInt8, _ payload: UnsafeRawBufferPointer) -> SendResult {
        guard state == .open, !closed else { return .dropped }
        guard admit(payload.count + WebSocketFrameEncoder.maxHeaderBytes) else { return .dropped }
        sendFrame(opcode, payload, compressible: true)
        ctx.count(.wsMessagesOut)
        return out == nil ? .written : .buffered
    }

    /// Applies the send-buffer bound; false when the message must not be sent.
    func admit(_ bytes: Int) -> Bool {
        let cfg = ctx.config.webSocket
        // Many messages to one connection in one turn gather in the cork; past 64 KiB write
        // them, so the bound below sees what the socket really took.
        if ctx.isCorkOwner(self) && ctx.corkedBytes + bytes > 64 * 1024 { ctx.flushCork() }
        guard out != nil, pendingOutputBytes + bytes > cfg.maxBufferedBytes else { return true }
        ctx.count(.wsBackpressure)
        switch cfg.backpressure {
        case .drop:
            return false
        case .close:
            // The close frame goes behind what is queued (a frame may be half written); a client
            // that never reads is cut off by the send timeout.
            Log.info("fd \(fd): websocket send buffer full (\(pendingOutputBytes) B): closing 1008")
            sendClose(WebSocketCloseCode.policyViolation, reason: "send buffer full", payload: true)
            delegateClose(code: WebSocketCloseCode.policyViolation)
            return false
        }
    }

    func sendFrame(_ opcode: UInt8, _ payload: UnsafeRawBufferPointer, compressible: Bool) {
        var body = payload
        var rsv1 = false
        if compressible, let d = deflate, payload.count >= ctx.config.webSocket.compressionThreshold {
            body = ctx.deflater(windowBits: d.serverMaxWindowBits).compress(payload)
            rsv1 = true
        }
        ctx.cork(for: self)
        var header: (UInt64, UInt64) = (0, 0)
        withUnsafeMutableBytes(of: &header) { h in
            let n = WebSocketFrameEncoder.writeHeader(
                into: h.baseAddress!, opcode: opcode, rsv1: rsv1, length: body.count)
            ctx.corkAppend(UnsafeRawBufferPointer(rebasing: h[0..<n]))
        }
        ctx.corkAppend(body)
        // Outside our own event (a fan-out, a ping from the sweep) the loop flushes the cork
        // at the end of the turn: one writev for everything sent to us in the turn.
    }

    // MARK: closing

    /// Starts the closing handshake (RFC 6455 §7.1.2).
    public func close(code: UInt16 = WebSocketCloseCode.normal, reason: String = "") {
        guard state == .open, !closed else { return }
        sendClose(code, reason: reason, payload: true)
        delegateClose(code: code)
    }

    func sendClose(_ code: UInt16, reason: String, payload: Bool) {
        state = .closeSent
        stateSince = ctx.seconds
        let p = payload ? WebSocketFrameEncoder.closePayload(code: code, reason: reason) : []
        p.withUnsafeBytes { sendFrame(WebSocketOpcode.close, $0, compressible: false) }
    }

    /// Both close frames are out (or the peer broke the protocol): close the TCP connection
    /// once our bytes are written.
    func finishClosing() {
        state = .closing
        stateSince = ctx.seconds
        if ctx.isCorkOwner(self) { ctx.flushCork() }
        if out == nil { startLingering() }
    }

    override func outputDrained() {
        if state == .closing { startLingering() }
    }

    func startLingering() {
        guard !lingering, !closed else { return }
        lingering = true
        stateSince = ctx.seconds
        shutdownOutput()
    }

    func delegateClose(code: UInt16?) {
        guard !closeReported else { return }
        closeReported = true
        delegate.webSocketDidClose(self, code: code)
    }

    override func didClose() {
        if !closeReported { delegateClose(code: nil) }
    }

    override func wantedEvents() -> UInt32 {
        var want: UInt32 = 0
        if out != nil { want |= Events.writable }
        // Stop reading while our writes are blocked: a client that sends faster than it reads
        // is held back by TCP instead of by our memory.
        if out == nil || lingering { want |= Events.readable }
        return want
    }

    // MARK: timers (the loop's once-a-second sweep)

    override func sweep(now: Int32) {
        let cfg = ctx.config.webSocket
        if lingering {
            if now - stateSince > 2 { close() }
            return
        }
        switch state {
        case .closeSent, .closing:
            if now - stateSince > Int32(cfg.closeTimeout) { close() }
            return
        case .open:
            break
        }
        if out != nil && now - lastIO > Int32(ctx.config.sendTimeout) {
            Log.info("fd \(fd): websocket send timeout")
            close()
            return
        }
        if cfg.idleTimeout > 0 && now - lastMessage > Int32(cfg.idleTimeout) {
            close(code: WebSocketCloseCode.goingAway, reason: "idle timeout")
            return
        }
        if pingSent {
            if now - lastRead > Int32(cfg.pingInterval + cfg.pongTimeout) {
                // The peer is gone or stuck: send the close frame for form's sake and do not
                // wait for an answer that will not come.
                Log.info("fd \(fd): websocket ping timeout")
                let (code, reason) = delegate.webSocketPingTimedOut(self)
                close(code: code, reason: reason)
                finishClosing()
            }
        } else if now - lastRead > Int32(cfg.pingInterval) {
            pingSent = true
            delegate.webSocketWillPing(self)
            sendFrame(WebSocketOpcode.ping, UnsafeRawBufferPointer(start: nil, count: 0), compressible: false)
        }
    }

    override func shutdownRequested() {
        if state == .open {
            close(code: WebSocketCloseCode.goingAway, reason: "server shutting down")
        } else if lingering {
            close()
        }
    }
}
