import HalleyCore
import HalleyHub
import HalleyProtocol
import HalleyServer

/// A session's Server-Sent Events stream (`GET /halley/sse`): server to client only (the
/// client sends by POST). Every message is an event whose id carries seq, session and token,
/// so a browser's EventSource that reconnects by itself resumes. Loop-confined.
final class SSETransport: Transport {
    var kind: TransportKind { .sse }
    unowned(unsafe) let loopHub: LoopHub  // outlives its transports
    let stream: HTTPStream
    var session: Session?
    var lastWrite: Int32
    /// `:SESSION:TOKEN\ndata: `, the part of every event id after the seq.
    let idSuffix: [UInt8]
    /// Body bytes before the first message (prelude, connection_established): not counted
    /// against the rotation budget, so every stream carries at least one message.
    var baseline = -1

    /// The configuration's limits, read once: `loopHub.hub.config` from this module copied the
    /// whole struct on every write.
    let streamMaxBytes: Int
    let sessionBufferBytes: Int
    let heartbeat: Int32

    init(loopHub: LoopHub, stream: HTTPStream, session: Session) {
        let cfg = loopHub.hub.config
        streamMaxBytes = cfg.streamMaxBytes
        sessionBufferBytes = cfg.sessionBufferBytes
        heartbeat = Int32(cfg.heartbeat)
        self.loopHub = loopHub
        self.stream = stream
        self.session = session
        self.lastWrite = loopHub.seconds
        idSuffix = Array(":\(session.id):\(session.token!.description)\ndata: ".utf8)
        stream.onClose = { [unowned self] in self.gone() }
    }

    var isOpen: Bool { stream.isOpen }

    func send(_ m: OutMessage, seq: UInt64, delivery: Delivery?) {
        guard stream.isOpen else { return }
        var head: (UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64) = (0, 0, 0, 0, 0, 0, 0, 0)
        withUnsafeMutableBytes(of: &head) { h in
            let p = h.baseAddress!
            p.copyMemory(from: Self.idField, byteCount: 4)
            let n = 4 + Wire.writeDecimal(seq, into: p + 4)
            let t = Wire.seqTail(seq, into: p + n)
            if baseline < 0 { baseline = stream.bodyBytes }
            stream.write([
                .raw(UnsafeRawBufferPointer(start: p, count: n)), .bytes(idSuffix), .shared(m.prefix),
                .raw(UnsafeRawBufferPointer(start: p + n, count: t)), .bytes(Wire.sseEventEnd),
            ])
        }
        wrote()
    }

    static let idField: [UInt8] = Array("id: ".utf8)

    func sendEstablished(_ json: [UInt8], lastSeen: UInt64) {
        stream.write([
            .bytes(Self.idField), .bytes(Array(String(lastSeen).utf8)), .bytes(idSuffix), .bytes(json),
            .bytes(Wire.sseEventEnd),
        ])
        wrote()
    }

    func sendControl(_ json: [UInt8]) {
        guard stream.isOpen else { return }
        stream.write([.bytes(Wire.sseDataHead), .bytes(json), .bytes(Wire.sseEventEnd)])
        wrote()
    }

    /// After a write: rotate the stream past its byte budget, end it when the client does not
    /// read (it reconnects and resumes).
    func wrote() {
        lastWrite = loopHub.seconds
        if baseline >= 0 && stream.bodyBytes - baseline >= streamMaxBytes {
            stream.write([.bytes(Wire.sseDataHead), .bytes(Wire.reconnect), .bytes(Wire.sseEventEnd)])
            finish()
        } else if stream.bufferedBytes > sessionBufferBytes {
            Log.info("sse: client not reading (\(stream.bufferedBytes) B pending): ending the stream")
            finish()
        }
    }

    func tick(now: Int32) {
        guard stream.isOpen else { return }
        if now - lastWrite >= heartbeat { sendControl(Wire.heartbeat) }
    }

    var bufferedBytes: Int { stream.bufferedBytes }

    /// Ends the response; the session lingers until the client reopens.
    func finish() {
        let s = session
        session = nil
        stream.end()
        s?.transportGone(self)
    }

    func detach(_ why: Detachment) {
        session = nil
        stream.end()
    }

    func gone() {
        if let s = session {
            session = nil
            s.transportGone(self)
        }
    }
}
