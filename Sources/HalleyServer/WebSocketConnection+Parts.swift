import HalleyCore
import HalleyLoop
import HalleyWebSocket

/// A message body shared by many connections that each end it with their own few bytes
/// (the hub's `,"halley:seq":N}`). Framed per connection, but the shared bytes are never
/// copied into a new buffer, and with permessage-deflate they are compressed once per window
/// size: the compressed prefix keeps its sync-flush marker (so it ends byte-aligned) and each
/// connection's tail follows as a stored block (RFC 1951 §3.2.4), then one zero byte that
/// begins the empty stored block the receiver completes with 00 00 FF FF. Loop-confined.
public final class PreparedPrefix {
    public let prefix: SharedBytes
    var deflated: [Int: SharedBytes] = [:]

    public init(_ prefix: SharedBytes) { self.prefix = prefix }

    func compressed(_ ws: WebSocketConnection, windowBits: Int) -> SharedBytes {
        if let d = deflated[windowBits] { return d }
        let z = ws.ctx.deflater(windowBits: windowBits).compress(prefix.buffer)
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

extension WebSocketConnection {
    /// Bytes this connection holds that the socket has not taken (queued and corked).
    public var bufferedBytes: Int {
        pendingOutputBytes + (ctx.isCorkOwner(self) ? ctx.corkedBytes : 0)
    }

    public var isOpen: Bool { state == .open && !closed }

    /// Sends a text message made of shared bytes and a tail of at most 64 bytes.
    @discardableResult
    public func send(text prefix: PreparedPrefix, tail: UnsafeRawBufferPointer) -> SendResult {
        guard state == .open, !closed else { return .dropped }
        let length = prefix.prefix.count + tail.count
        guard admit(length + WebSocketFrameEncoder.maxHeaderBytes) else { return .dropped }
        var header: (UInt64, UInt64) = (0, 0)
        if let d = deflate, length >= ctx.config.webSocket.compressionThreshold {
            let z = prefix.compressed(self, windowBits: d.serverMaxWindowBits)
            var block: (UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64) = (0, 0, 0, 0, 0, 0, 0, 0, 0)
            // Without the trailing zero byte the receiver's 00 00 FF FF would be read as a block
            // header and lengths: a client that keeps its inflater between messages (allowed)
            // or appends a final block (Go) would fail.
            let blockLength = withUnsafeMutableBytes(of: &block) { PerMessageDeflate.storedTail(tail, into: $0.baseAddress!) }
            ctx.cork(for: self)
            withUnsafeMutableBytes(of: &header) { h in
                let n = WebSocketFrameEncoder.writeHeader(into: h.baseAddress!, opcode: WebSocketOpcode.text, rsv1: true, length: z.count + blockLength)
                ctx.corkAppend(UnsafeRawBufferPointer(rebasing: h[0..<n]))
            }
            ctx.corkAppend(shared: z)
            withUnsafeBytes(of: &block) { ctx.corkAppend(UnsafeRawBufferPointer(rebasing: $0[0..<blockLength])) }
        } else {
            ctx.cork(for: self)
            withUnsafeMutableBytes(of: &header) { h in
                let n = WebSocketFrameEncoder.writeHeader(into: h.baseAddress!, opcode: WebSocketOpcode.text, rsv1: false, length: length)
                ctx.corkAppend(UnsafeRawBufferPointer(rebasing: h[0..<n]))
            }
            ctx.corkAppend(shared: prefix.prefix)
            ctx.corkAppend(tail)
        }
        ctx.count(.wsMessagesOut)
        return out == nil ? .written : .buffered
    }

    /// Sends one uncompressed message whose payload is the concatenation of `parts`.
    @discardableResult
    public func send(binaryParts parts: [UnsafeRawBufferPointer]) -> SendResult {
        guard state == .open, !closed else { return .dropped }
        let length = parts.reduce(0) { $0 + $1.count }
        guard admit(length + WebSocketFrameEncoder.maxHeaderBytes) else { return .dropped }
        ctx.cork(for: self)
        var header: (UInt64, UInt64) = (0, 0)
        withUnsafeMutableBytes(of: &header) { h in
            let n = WebSocketFrameEncoder.writeHeader(into: h.baseAddress!, opcode: WebSocketOpcode.binary, rsv1: false, length: length)
            ctx.corkAppend(UnsafeRawBufferPointer(rebasing: h[0..<n]))
        }
        for p in parts where p.count > 0 { ctx.corkAppend(p) }
        ctx.count(.wsMessagesOut)
        return out == nil ? .written : .buffered
    }
}
