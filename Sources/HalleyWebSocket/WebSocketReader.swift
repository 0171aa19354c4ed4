import HalleyCore

/// What a reader found in the bytes it was given. Buffers are valid only during the call.
public enum WebSocketReadEvent {
    case text(UnsafeRawBufferPointer)
    case binary(UnsafeRawBufferPointer)
    case ping(UnsafeRawBufferPointer)
    case pong(UnsafeRawBufferPointer)
    /// A well-formed close frame; `code` is nil when it had no payload.
    case close(code: UInt16?, reason: UnsafeRawBufferPointer)
    /// The peer broke the protocol: close with `code`. Nothing more is read.
    case fail(code: UInt16, reason: String)
}

/// Decodes client frames and assembles messages (RFC 6455 §5, RFC 7692 §6). It does no I/O:
/// `read` takes the bytes that arrived, unmasks them in place, and reports events.
///
/// Frame payloads are consumed as they arrive, so only a partial header (at most 14 bytes) is
/// ever kept from one read to the next. A message that fits in one frame within one read is
/// handed over straight from the caller's buffer, uncopied; a fragmented or split one is
/// gathered in a buffer that exists only while the message does.
public struct WebSocketReader {
    public struct Limits: Sendable {
        /// Largest message, after inflation. Default 1 MiB; larger: close 1009.
        public var maxMessageBytes = 1 << 20
        public init() {}
    }

    public let limits: Limits
    /// Set when permessage-deflate was negotiated.
    public var inflater: Inflater?

    // (Words first, then the small fields together: every idle connection holds a reader,
    // 80 bytes laid out so; issue 16, memory per connection.)
    // Partial frame header (RFC 6455 §5.2: at most 2 + 8 + 4 bytes).
    var header: (UInt64, UInt64) = (0, 0)
    // The frame being read: payload bytes still to come.
    var remaining = 0
    var control: [UInt8] = []
    // The message being assembled.
    var message: ByteBuffer?
    var messageBytes = 0
    var maskKey: UInt32 = 0
    /// Bytes of `header` so far (0…14).
    var headerCount: UInt8 = 0
    /// Where in the masking key the next payload byte is (0…3).
    var maskPhase: UInt8 = 0
    var inFrame = false
    var opcode: UInt8 = 0
    var fin = false
    var messageOpcode: UInt8 = 0
    var compressed = false
    public private(set) var finished = false
    var utf8 = UTF8Validator()

    public init(limits: Limits = Limits(), inflater: Inflater? = nil) {
        self.limits = limits
        self.inflater = inflater
    }

    /// True when no frame or message is part-way through (nothing held).
    public var isIdle: Bool { !inFrame && headerCount == 0 && messageOpcode == 0 }

    public mutating func read(_ buf: UnsafeMutableRawBufferPointer, _ sink: (WebSocketReadEvent) -> Void) {
        guard let base = buf.baseAddress else { return }
        let n = buf.count
        var i = 0
        while !finished && (i < n || (inFrame && remaining == 0)) {
            if !inFrame {
                if headerCount == 0, let total = Self.headerLength(base + i, n - i), total <= n - i {
                    // The whole header is in the buffer: parse it where it is.
                    if !startFrame(UnsafeRawPointer(base + i), sink) { return }
                    i += total
                    continue
                }
                // A header split across reads: keep its bytes (at most 14) until it is whole.
                var complete = false
                withUnsafeMutableBytes(of: &header) { hb in
                    while i < n {
                        hb[Int(headerCount)] = base.load(fromByteOffset: i, as: UInt8.self)
                        headerCount += 1
                        i += 1
                        if let t = Self.headerLength(hb.baseAddress!, Int(headerCount)), t == Int(headerCount) {
                            complete = true
                            break
                        }
                    }
                }
                guard complete else { return }
                headerCount = 0
                var h = header
                let ok = withUnsafeBytes(of: &h) { hb in startFrame(hb.baseAddress!, sink) }
                if !ok { return }
                continue
            }
            // Payload.
            let take = min(remaining, n - i)
            let p = base + i
            if take > 0 { WebSocketFrameEncoder.unmask(p, count: take, key: maskKey, phase: Int(maskPhase)) }
            maskPhase = UInt8(truncatingIfNeeded: (Int(maskPhase) + take) & 3)
            remaining -= take
            i += take
            let chunk = UnsafeRawBufferPointer(start: p, count: take)
            if opcode >= 8 {
                if remaining == 0 && control.isEmpty {
                    inFrame = false
                    control(opcode, chunk, sink)
                } else {
                    control.append(contentsOf: chunk)
                    if remaining == 0 {
                        inFrame = false
                        let payload = control
                        control = []
                        payload.withUnsafeBytes { control(opcode, $0, sink) }
                    }
                }
                continue
            }
            if remaining == 0 && fin && message == nil {
                // Fast path: the whole message is this frame, all in this buffer.
                inFrame = false
                deliver(chunk, validated: false, sink)
                continue
            }
            if messageOpcode == WebSocketOpcode.text && !compressed && !utf8.validate(chunk) {
                fail(WebSocketCloseCode.invalidPayload, "invalid UTF-8 in text message", sink)
                return
            }
            if message == nil { message = ByteBuffer(capacity: max(1024, take + remaining)) }
            message!.append(chunk)
            if remaining == 0 {
                inFrame = false
                if fin {
                    let m = message!
                    message = nil
                    deliver(m.readable, validated: true, sink)
                }
            }
        }
    }

    /// Header length from its first bytes, or nil when fewer than 2 bytes are there.
    static func headerLength(_ h: UnsafeRawPointer, _ avail: Int) -> Int? {
        guard avail >= 2 else { return nil }
        let b1 = h.load(fromByteOffset: 1, as: UInt8.self)
        let mask = b1 & 0x80 != 0 ? 4 : 0
        switch b1 & 0x7F {
        case 126: return 4 + mask
        case 127: return 10 + mask
        default: return 2 + mask
        }
    }

    /// Validates a complete header and enters the frame. False when the frame was refused.
    mutating func startFrame(_ h: UnsafeRawPointer, _ sink: (WebSocketReadEvent) -> Void) -> Bool {
        let b0 = h.load(as: UInt8.self)
        let b1 = h.load(fromByteOffset: 1, as: UInt8.self)
        let op = b0 & 0x0F
        let isFin = b0 & 0x80 != 0
        let rsv1 = b0 & 0x40 != 0
        if b0 & 0x30 != 0 { fail(WebSocketCloseCode.protocolError, "reserved bits set", sink); return false }
        guard b1 & 0x80 != 0 else {
            fail(WebSocketCloseCode.protocolError, "unmasked client frame", sink); return false
        }
        var length = Int(b1 & 0x7F)
        var off = 2
        if length == 126 {
            length = Int(UInt16(bigEndian: h.loadUnaligned(fromByteOffset: 2, as: UInt16.self)))
            off = 4
        } else if length == 127 {
            let l = UInt64(bigEndian: h.loadUnaligned(fromByteOffset: 2, as: UInt64.self))
            if l >> 63 != 0 {
                fail(WebSocketCloseCode.protocolError, "64-bit length with the top bit set", sink); return false
            }
            length = l > UInt64(Int.max / 2) ? Int.max / 2 : Int(l)
            off = 10
        }
        switch op {
        case WebSocketOpcode.close, WebSocketOpcode.ping, WebSocketOpcode.pong:
            // RFC 6455 §5.5: control frames are never fragmented and carry at most 125 bytes.
            if !isFin { fail(WebSocketCloseCode.protocolError, "fragmented control frame", sink); return false }
            if length > 125 {
                fail(WebSocketCloseCode.protocolError, "control frame over 125 bytes", sink); return false
            }
            if rsv1 { fail(WebSocketCloseCode.protocolError, "RSV1 on a control frame", sink); return false }
        case WebSocketOpcode.text, WebSocketOpcode.binary:
            if messageOpcode != 0 {
                fail(WebSocketCloseCode.protocolError, "new message before the last one ended", sink); return false
            }
            if rsv1 && inflater == nil {
                fail(WebSocketCloseCode.protocolError, "RSV1 without permessage-deflate", sink); return false
            }
            messageOpcode = op
            compressed = rsv1
            messageBytes = 0
            utf8.reset()
        case WebSocketOpcode.continuation:
            if messageOpcode == 0 {
                fail(WebSocketCloseCode.protocolError, "continuation without a message", sink); return false
            }
            if rsv1 { fail(WebSocketCloseCode.protocolError, "RSV1 on a continuation frame", sink); return false }
        default:
            fail(WebSocketCloseCode.protocolError, "unknown opcode \(op)", sink)
            return false
        }
        if op < 8 {
            messageBytes += length
            if messageBytes > limits.maxMessageBytes {
                fail(WebSocketCloseCode.messageTooBig, "message over \(limits.maxMessageBytes) bytes", sink)
                return false
            }
        }
        maskKey = h.loadUnaligned(fromByteOffset: off, as: UInt32.self)
        maskPhase = 0
        opcode = op
        fin = isFin
        remaining = length
        inFrame = true
        return true
    }

    /// A complete message. `validated`: its UTF-8 was checked piece by piece as it arrived.
    mutating func deliver(_ payload: UnsafeRawBufferPointer, validated: Bool, _ sink: (WebSocketReadEvent) -> Void) {
        let op = messageOpcode
        messageOpcode = 0
        if compressed {
            guard let inf = inflater else {
                fail(WebSocketCloseCode.protocolError, "compressed without deflate", sink); return
            }
            switch inf.inflate(payload, limit: limits.maxMessageBytes) {
            case .tooBig:
                fail(WebSocketCloseCode.messageTooBig, "inflated message over \(limits.maxMessageBytes) bytes", sink)
            case .corrupt:
                fail(WebSocketCloseCode.invalidPayload, "bad deflate data", sink)
            case .ok(let out):
                if op == WebSocketOpcode.text {
                    var v = UTF8Validator()
                    guard v.validate(out), v.isComplete else {
                        fail(WebSocketCloseCode.invalidPayload, "invalid UTF-8 in text message", sink)
                        return
                    }
                    sink(.text(out))
                } else {
                    sink(.binary(out))
                }
            }
            return
        }
        if op == WebSocketOpcode.text {
            if !validated {
                var v = UTF8Validator()
                guard v.validate(payload), v.isComplete else {
                    fail(WebSocketCloseCode.invalidPayload, "invalid UTF-8 in text message", sink)
                    return
                }
            } else if !utf8.isComplete {
                fail(WebSocketCloseCode.invalidPayload, "text message ends inside a code point", sink)
                return
            }
            sink(.text(payload))
        } else {
            sink(.binary(payload))
        }
    }

    mutating func control(_ op: UInt8, _ payload: UnsafeRawBufferPointer, _ sink: (WebSocketReadEvent) -> Void) {
        switch op {
        case WebSocketOpcode.ping: sink(.ping(payload))
        case WebSocketOpcode.pong: sink(.pong(payload))
        default:
            // RFC 6455 §5.5.1: empty, or a 2-byte code and a UTF-8 reason.
            if payload.count == 0 {
                finished = true
                sink(.close(code: nil, reason: payload))
                return
            }
            if payload.count == 1 { fail(WebSocketCloseCode.protocolError, "close payload of 1 byte", sink); return }
            let code = UInt16(payload[0]) << 8 | UInt16(payload[1])
            if !WebSocketCloseCode.isValidOnWire(code) {
                fail(WebSocketCloseCode.protocolError, "invalid close code \(code)", sink); return
            }
            let reason = UnsafeRawBufferPointer(rebasing: payload[2...])
            var v = UTF8Validator()
            guard v.validate(reason), v.isComplete else {
                fail(WebSocketCloseCode.invalidPayload, "invalid UTF-8 in close reason", sink); return
            }
            finished = true
            sink(.close(code: code, reason: reason))
        }
    }

    mutating func fail(_ code: UInt16, _ reason: String, _ sink: (WebSocketReadEvent) -> Void) {
        finished = true
        message = nil
        control = []
        sink(.fail(code: code, reason: reason))
    }
}
