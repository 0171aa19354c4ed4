import HalleyCore

/// A message framed once for every connection it goes to ("prepare once, send many"), and
/// compressed once per window size for the connections that negotiated permessage-deflate.
/// I/O-free: the caller decides whether a connection gets it compressed and passes the
/// deflater (no context takeover: each message compressed on its own). Loop-confined.
public final class PreparedMessage {
    public let opcode: UInt8
    public let payload: SharedBytes
    var plain: SharedBytes?
    var deflated: [Int: SharedBytes] = [:]

    public init(text: [UInt8]) {
        opcode = WebSocketOpcode.text
        payload = SharedBytes(text)
    }

    public init(binary: [UInt8]) {
        opcode = WebSocketOpcode.binary
        payload = SharedBytes(binary)
    }

    /// The whole frame, uncompressed (built on first use, then shared).
    public func frame() -> SharedBytes {
        if let p = plain { return p }
        let f = Self.build(opcode, payload.buffer, rsv1: false)
        plain = f
        return f
    }

    /// The whole frame, its payload compressed by `deflater` (of `windowBits`), RSV1 set.
    public func frame(deflater: Deflater, windowBits: Int) -> SharedBytes {
        if let f = deflated[windowBits] { return f }
        let f = Self.build(opcode, deflater.compress(payload.buffer), rsv1: true)
        deflated[windowBits] = f
        return f
    }

    static func build(_ opcode: UInt8, _ body: UnsafeRawBufferPointer, rsv1: Bool) -> SharedBytes {
        let p = UnsafeMutableRawPointer.allocate(
            byteCount: body.count + WebSocketFrameEncoder.maxHeaderBytes, alignment: 16)
        let h = WebSocketFrameEncoder.writeHeader(into: p, opcode: opcode, rsv1: rsv1, length: body.count)
        if body.count > 0 { (p + h).copyMemory(from: body.baseAddress!, byteCount: body.count) }
        return SharedBytes(adopting: p, count: h + body.count)
    }
}

/// A message body shared by many connections that each end it with their own few bytes
/// (the hub's `,"halley:seq":N}`). Framed per connection, but the shared bytes are never
/// copied into a new buffer, and with permessage-deflate they are compressed once per window
/// size: the compressed prefix keeps its sync-flush marker (so it ends byte-aligned) and each
/// connection's tail follows as a stored block (RFC 1951 §3.2.4, `PerMessageDeflate.storedTail`),
/// then one zero byte that begins the empty stored block the receiver completes with
/// 00 00 FF FF. Loop-confined.
public final class PreparedPrefix {
    public let prefix: SharedBytes
    var deflated: [Int: SharedBytes] = [:]

    public init(_ prefix: SharedBytes) { self.prefix = prefix }

    /// The prefix compressed by `deflater` (of `windowBits`), ending in 00 00 FF FF.
    public func compressed(deflater: Deflater, windowBits: Int) -> SharedBytes {
        if let d = deflated[windowBits] { return d }
        let z = deflater.compress(prefix.buffer)
        let p = UnsafeMutableRawPointer.allocate(byteCount: z.count + 4, alignment: 8)
        if z.count > 0 { p.copyMemory(from: z.baseAddress!, byteCount: z.count) }
        // RFC 7692 §7.2.1: compress() stripped 00 00 FF FF; here it stays, as an empty
        // stored block between the shared bytes and the tail.
        (p + z.count).storeBytes(of: UInt32(0xFFFF_0000).littleEndian, as: UInt32.self)
        let d = SharedBytes(adopting: p, count: z.count + 4)
        deflated[windowBits] = d
        return d
    }
}
