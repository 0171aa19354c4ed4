import Testing
import HalleyCore
@testable import HalleyWebSocket

/// "Prepare once, send many", bytes out: a prepared message's frames (plain and compressed)
/// and a prepared prefix with per-connection tails, across the frame-length boundaries.
@Suite struct PreparedMessageTests {
    static let sizes = [0, 1, 125, 126, 1024, 65535, 65536, 70000]

    /// A server frame's first byte and payload, checking that the length is in its shortest form.
    func split(_ f: [UInt8]) -> (UInt8, [UInt8]) {
        #expect(f[1] & 0x80 == 0, "a server frame is not masked")
        var length = Int(f[1] & 0x7F), at = 2
        if length == 126 {
            length = Int(f[2]) << 8 | Int(f[3])
            at = 4
            #expect(length >= 126)
        } else if length == 127 {
            length = f[2..<10].reduce(0) { $0 << 8 | Int($1) }
            at = 10
            #expect(length > 0xFFFF)
        }
        #expect(f.count == at + length)
        return (f[0], Array(f[at...]))
    }

    func text(_ n: Int) -> [UInt8] { (0..<n).map { UInt8(ascii: "a") + UInt8(($0 * 7 + $0 / 97) % 26) } }

    @Test func plainFramesCarryThePayloadByteForByte() {
        for n in Self.sizes {
            let m = PreparedMessage(text: text(n))
            let f = m.frame()
            let (b0, payload) = split(Array(f.buffer))
            #expect(b0 == 0x81 && payload == text(n), "n=\(n)")
            #expect(m.frame() === f)  // built once
            let b = PreparedMessage(binary: text(n))
            #expect(split(Array(b.frame().buffer)).0 == 0x82)
        }
    }

    @Test func compressedFramesInflateToThePayload() {
        for bits in [9, 15] {
            let d = Deflater(windowBits: Int32(bits))
            for n in Self.sizes {
                let m = PreparedMessage(text: text(n))
                let f = m.frame(deflater: d, windowBits: bits)
                let (b0, z) = split(Array(f.buffer))
                #expect(b0 == 0xC1, "n=\(n)")  // FIN, RSV1, text
                #expect(m.frame(deflater: d, windowBits: bits) === f)  // compressed once per window size
                let got = read(
                    [clientFrame(1, z, rsv1: true)],
                    inflater: Inflater(resetAfterMessage: true, windowBits: Int32(bits)))
                #expect(got == [.text(text(n))], "n=\(n) bits=\(bits)")
            }
        }
    }

    /// The shared compressed prefix, then each connection's own stored tail: the receiver reads
    /// prefix + tail, whichever tail, and the prefix is compressed once.
    @Test func aPrefixWithEachConnectionsTail() {
        let d = Deflater()
        for n in Self.sizes {
            let p = PreparedPrefix(SharedBytes(text(n)))
            let z = p.compressed(deflater: d, windowBits: 15)
            #expect(p.compressed(deflater: d, windowBits: 15) === z)
            #expect(Array(z.buffer).suffix(4) == [0x00, 0x00, 0xFF, 0xFF])
            for seq in [0, 7, 123_456_789] {
                let tail = Array(#","halley:seq":\#(seq)}"#.utf8)
                var block = [UInt8](repeating: 0, count: tail.count + 6)
                let k = tail.withUnsafeBytes { t in
                    block.withUnsafeMutableBytes { PerMessageDeflate.storedTail(t, into: $0.baseAddress!) }
                }
                let payload = Array(z.buffer) + block[0..<k]
                let got = read(
                    [clientFrame(1, payload, rsv1: true)],
                    inflater: Inflater(resetAfterMessage: false))
                #expect(got == [.text(text(n) + tail)], "n=\(n) seq=\(seq)")
            }
        }
    }
}
