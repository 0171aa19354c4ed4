import CZlib
import HalleyCore

/// Inflates permessage-deflate messages (RFC 7692 §7.2.2). One per connection when the client
/// keeps its context between messages; one per loop, reset after each message, when it does
/// not. Not thread-safe: owned by one loop.
public final class Inflater {
    public enum Result {
        /// Valid until the next call.
        case ok(UnsafeRawBufferPointer)
        case tooBig
        case corrupt
    }

    /// zlib keeps a pointer back to its z_stream and checks it on every call: the stream lives
    /// at a fixed address of its own, not in a Swift property that could be moved. Made by the
    /// first message: zlib's state (about 7 KB, and its 32 KiB window once it inflates) is
    /// never allocated for a connection that sends nothing compressed, as most subscribers do
    /// (browsers offer permessage-deflate, then only receive).
    private var started: UnsafeMutablePointer<z_stream>?
    let windowBits: Int32
    let resetAfterMessage: Bool
    let output: ByteBuffer
    static let tail: [UInt8] = [0x00, 0x00, 0xFF, 0xFF]

    /// `windowBits` 15 inflates anything a client may send, whatever window it was told.
    /// `output` may be shared by every inflater of a loop (what `inflate` returns is used
    /// before the next call), which saves each connection a buffer of its own.
    public init(resetAfterMessage: Bool, windowBits: Int32 = 15, output: ByteBuffer = ByteBuffer(capacity: 4096)) {
        self.resetAfterMessage = resetAfterMessage
        self.windowBits = windowBits
        self.output = output
    }

    deinit {
        if let s = started {
            inflateEnd(s)
            s.deallocate()
        }
    }

    /// True once a message made zlib's state (see `started`).
    public var hasState: Bool { started != nil }

    private var stream: UnsafeMutablePointer<z_stream> {
        if let s = started { return s }
        let s = UnsafeMutablePointer<z_stream>.allocate(capacity: 1)
        s.initialize(to: z_stream())
        let rc = halley_inflateInit2(s, -windowBits)
        precondition(rc == Z_OK, "inflateInit2 failed: \(rc)")
        started = s
        return s
    }

    /// Inflates one whole message, giving up past `limit` bytes of output (a small frame must
    /// not expand into gigabytes: a deflate bomb gets 1009).
    public func inflate(_ input: UnsafeRawBufferPointer, limit: Int) -> Result {
        output.clear()
        let stream = self.stream
        defer { if resetAfterMessage { inflateReset(stream) } }
        var step = run(stream, input, limit: limit)
        if step == .ok { step = Self.tail.withUnsafeBytes { run(stream, $0, limit: limit) } }
        switch step {
        case .ok: return .ok(output.readable)
        case .tooBig: inflateReset(stream); return .tooBig
        case .corrupt: inflateReset(stream); return .corrupt
        }
    }

    private enum Step { case ok, tooBig, corrupt }

    private func run(_ stream: UnsafeMutablePointer<z_stream>, _ input: UnsafeRawBufferPointer, limit: Int) -> Step {
        guard input.count > 0 else { return .ok }
        stream.pointee.next_in = UnsafeMutablePointer(mutating: input.baseAddress!.assumingMemoryBound(to: UInt8.self))
        stream.pointee.avail_in = UInt32(input.count)
        while true {
            output.reserve(4096)
            // Never let zlib write more than one byte past the limit.
            let room = min(output.capacity - output.writerIndex, limit + 1 - output.readableBytes)
            stream.pointee.next_out = (output.base + output.writerIndex).assumingMemoryBound(to: UInt8.self)
            stream.pointee.avail_out = UInt32(room)
            let rc = CZlib.inflate(stream, Z_SYNC_FLUSH)
            output.didWrite(room - Int(stream.pointee.avail_out))
            if output.readableBytes > limit { return .tooBig }
            switch rc {
            case Z_STREAM_END:
                // A final block (BFINAL) ends the stream; the next message starts a new one.
                inflateReset(stream)
                return .ok
            case Z_OK, Z_BUF_ERROR:
                if stream.pointee.avail_in == 0 && stream.pointee.avail_out > 0 { return .ok }
                if rc == Z_BUF_ERROR && stream.pointee.avail_out > 0 { return .corrupt }
            default:
                return .corrupt
            }
        }
    }
}

/// Compresses messages for permessage-deflate with no context takeover: every message alone,
/// so one compressed copy serves every recipient. One per loop and window size.
public final class Deflater {
    /// At a fixed address, as zlib requires (see Inflater).
    let stream = UnsafeMutablePointer<z_stream>.allocate(capacity: 1)
    let output = ByteBuffer(capacity: 4096)

    public init(windowBits: Int32 = 15, level: Int32 = 6, memLevel: Int32 = 8) {
        stream.initialize(to: z_stream())
        let rc = halley_deflateInit2(stream, level, Z_DEFLATED, -windowBits, memLevel, Z_DEFAULT_STRATEGY)
        precondition(rc == Z_OK, "deflateInit2 failed: \(rc)")
    }

    deinit {
        deflateEnd(stream)
        stream.deallocate()
    }

    /// The compressed message without its final 00 00 FF FF (RFC 7692 §7.2.1); valid until
    /// the next call.
    public func compress(_ input: UnsafeRawBufferPointer) -> UnsafeRawBufferPointer {
        output.clear()
        defer { deflateReset(stream) }
        stream.pointee.next_in = input.baseAddress.map {
            UnsafeMutablePointer(mutating: $0.assumingMemoryBound(to: UInt8.self))
        }
        stream.pointee.avail_in = UInt32(input.count)
        repeat {
            output.reserve(Int(deflateBound(stream, UInt(input.count))) + 16)
            let room = output.capacity - output.writerIndex
            stream.pointee.next_out = (output.base + output.writerIndex).assumingMemoryBound(to: UInt8.self)
            stream.pointee.avail_out = UInt32(room)
            let rc = deflate(stream, Z_SYNC_FLUSH)
            precondition(rc == Z_OK || rc == Z_BUF_ERROR, "deflate failed: \(rc)")
            output.didWrite(room - Int(stream.pointee.avail_out))
        } while stream.pointee.avail_out == 0
        var n = output.readableBytes
        if n >= 4 && output.readable[n - 4] == 0 && output.readable[n - 3] == 0 && output.readable[n - 2] == 0xFF
            && output.readable[n - 1] == 0xFF
        {
            n -= 4
        }
        return UnsafeRawBufferPointer(start: output.base, count: n)
    }
}
