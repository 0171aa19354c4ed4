import HalleyCore
import HalleyLoop
import HalleyWebSocket

extension WebSocketConnection {
    /// `m`'s frame for this connection: compressed (once per window size, for every
    /// connection) when it negotiated permessage-deflate and `m` is large enough.
    func frame(of m: PreparedMessage) -> SharedBytes {
        if let d = deflate, m.payload.count >= ctx.config.webSocket.compressionThreshold {
            return m.frame(deflater: ctx.deflater(windowBits: d.serverMaxWindowBits), windowBits: d.serverMaxWindowBits)
        }
        return m.frame()
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
            let z = prefix.compressed(
                deflater: ctx.deflater(windowBits: d.serverMaxWindowBits), windowBits: d.serverMaxWindowBits)
            var block: (UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64) = (
                0, 0, 0, 0, 0, 0, 0, 0, 0
            )
            // Without the trailing zero byte the receiver's 00 00 FF FF would be read as a block
            // header and lengths: a client that keeps its inflater between messages (allowed)
            // or appends a final block (Go) would fail.
            let blockLength = withUnsafeMutableBytes(of: &block) {
                PerMessageDeflate.storedTail(tail, into: $0.baseAddress!)
            }
            ctx.cork(for: self)
            withUnsafeMutableBytes(of: &header) { h in
                let n = WebSocketFrameEncoder.writeHeader(
                    into: h.baseAddress!, opcode: WebSocketOpcode.text, rsv1: true, length: z.count + blockLength)
                ctx.corkAppend(UnsafeRawBufferPointer(rebasing: h[0..<n]))
            }
            ctx.corkAppend(shared: z)
            withUnsafeBytes(of: &block) { ctx.corkAppend(UnsafeRawBufferPointer(rebasing: $0[0..<blockLength])) }
        } else {
            ctx.cork(for: self)
            withUnsafeMutableBytes(of: &header) { h in
                let n = WebSocketFrameEncoder.writeHeader(
                    into: h.baseAddress!, opcode: WebSocketOpcode.text, rsv1: false, length: length)
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
            let n = WebSocketFrameEncoder.writeHeader(
                into: h.baseAddress!, opcode: WebSocketOpcode.binary, rsv1: false, length: length)
            ctx.corkAppend(UnsafeRawBufferPointer(rebasing: h[0..<n]))
        }
        for p in parts where p.count > 0 { ctx.corkAppend(p) }
        ctx.count(.wsMessagesOut)
        return out == nil ? .written : .buffered
    }
}
