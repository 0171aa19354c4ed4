import CZlib
import COpenSSL

/// A raw-deflate stream that inflates a message as its frames arrive (RFC 7692 §7.2.2),
/// handing the output to the caller in chunks, so no message is ever gathered. The stream
/// lives in memory allocated once: no Swift exclusivity checks on the hot path.
final class StreamInflater {
    let z: UnsafeMutablePointer<z_stream>

    init() {
        z = .allocate(capacity: 1)
        z.initialize(to: z_stream())
        let rc = halley_inflateInit2(z, -15)
        precondition(rc == Z_OK, "inflateInit2 failed: \(rc)")
    }

    deinit {
        inflateEnd(z)
        z.deinitialize(count: 1)
        z.deallocate()
    }

    func reset() { inflateReset(z) }

    /// Inflates `count` bytes at `input` into `scratch`, calling `sink` with every chunk of
    /// output. False when the data is not valid deflate.
    @inline(__always)
    func feed(
        _ input: UnsafePointer<UInt8>, _ count: Int, scratch: UnsafeMutablePointer<UInt8>, scratchSize: Int,
        _ sink: (UnsafePointer<UInt8>, Int) -> Void
    ) -> Bool {
        z.pointee.next_in = UnsafeMutablePointer(mutating: input)
        z.pointee.avail_in = UInt32(count)
        while true {
            z.pointee.next_out = scratch
            z.pointee.avail_out = UInt32(scratchSize)
            let rc = inflate(z, Z_SYNC_FLUSH)
            let produced = scratchSize - Int(z.pointee.avail_out)
            if produced > 0 { sink(scratch, produced) }
            switch rc {
            case Z_STREAM_END:
                // A final block ends the stream: the rest of the message (our 00 00 FF FF tail)
                // starts a new one.
                inflateReset(z)
                if z.pointee.avail_in == 0 { return true }
            case Z_OK:
                if z.pointee.avail_in == 0 && z.pointee.avail_out > 0 { return true }
            case Z_BUF_ERROR:
                // No progress possible: all input used (fine) or a corrupt stream.
                return z.pointee.avail_in == 0
            default:
                return false
            }
        }
    }

    static let tail: [UInt8] = [0x00, 0x00, 0xFF, 0xFF]
}

/// One message compressed alone with raw deflate (window 15), without the final
/// 00 00 FF FF (RFC 7692 §7.2.1). Used once per pooled message at start, never on the hot path.
func deflateMessage(_ input: [UInt8]) -> [UInt8] {
    var z = z_stream()
    var rc = halley_deflateInit2(&z, 6, Z_DEFLATED, -15, 8, Z_DEFAULT_STRATEGY)
    precondition(rc == Z_OK, "deflateInit2 failed: \(rc)")
    defer { deflateEnd(&z) }
    var out = [UInt8](repeating: 0, count: Int(deflateBound(&z, UInt(input.count))) + 64)
    var input = input
    let written: Int = input.withUnsafeMutableBufferPointer { inp in
        out.withUnsafeMutableBufferPointer { o in
            z.next_in = inp.baseAddress
            z.avail_in = UInt32(inp.count)
            z.next_out = o.baseAddress
            z.avail_out = UInt32(o.count)
            rc = deflate(&z, Z_SYNC_FLUSH)
            precondition(rc == Z_OK && z.avail_in == 0 && z.avail_out > 0, "deflate failed: \(rc)")
            return o.count - Int(z.avail_out)
        }
    }
    out.removeLast(out.count - written)
    precondition(out.suffix(4) == [0x00, 0x00, 0xFF, 0xFF], "deflate: no sync-flush tail")
    out.removeLast(4)
    return out
}

/// SHA-1 through OpenSSL's EVP interface.
func sha1(_ bytes: [UInt8]) -> [UInt8] {
    var md = [UInt8](repeating: 0, count: 20)
    var len: UInt32 = 0
    let ok = bytes.withUnsafeBytes { b in
        md.withUnsafeMutableBufferPointer { EVP_Digest(b.baseAddress, b.count, $0.baseAddress, &len, EVP_sha1(), nil) }
    }
    precondition(ok == 1 && len == 20, "EVP_Digest(sha1) failed")
    return md
}
