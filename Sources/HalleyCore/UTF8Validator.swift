/// Incremental UTF-8 validation (RFC 3629): fed a message in pieces, it fails on the first
/// piece whose bytes can no longer begin valid UTF-8, not only at the end (RFC 6455 §8.1:
/// fail fast, close 1007). ASCII runs are checked 32 bytes at a time.
public struct UTF8Validator: Sendable {
    /// Continuation bytes still expected for the current code point.
    var remaining: UInt8 = 0
    /// Allowed range of the next continuation byte (narrowed after E0, ED, F0 and F4).
    var lower: UInt8 = 0x80
    var upper: UInt8 = 0xBF

    public init() {}

    /// True when no code point is left unfinished.
    public var isComplete: Bool { remaining == 0 }

    public mutating func reset() { self = UTF8Validator() }

    /// Checks the next piece; false as soon as the bytes so far cannot be valid UTF-8.
    public mutating func validate(_ bytes: UnsafeRawBufferPointer) -> Bool {
        guard let base = bytes.baseAddress else { return true }
        let n = bytes.count
        var i = 0
        while i < n {
            if remaining == 0 {
                // ASCII fast path: a word at a time, and once a word is ASCII, 32 bytes at a
                // time (four words OR-ed, one test); text of other scripts pays one load per
                // character, as before.
                while i + 8 <= n
                    && (base.loadUnaligned(fromByteOffset: i, as: UInt64.self) & 0x8080_8080_8080_8080) == 0
                {
                    i += 8
                    while i + 32 <= n {
                        let w =
                            base.loadUnaligned(fromByteOffset: i, as: UInt64.self)
                            | base.loadUnaligned(fromByteOffset: i + 8, as: UInt64.self)
                            | base.loadUnaligned(fromByteOffset: i + 16, as: UInt64.self)
                            | base.loadUnaligned(fromByteOffset: i + 24, as: UInt64.self)
                        if w & 0x8080_8080_8080_8080 != 0 { break }
                        i += 32
                    }
                }
                if i >= n { break }
                let c = base.load(fromByteOffset: i, as: UInt8.self)
                i += 1
                switch c {
                case 0x00...0x7F: continue
                case 0xC2...0xDF: remaining = 1; lower = 0x80; upper = 0xBF
                case 0xE0: remaining = 2; lower = 0xA0; upper = 0xBF
                case 0xE1...0xEC, 0xEE...0xEF: remaining = 2; lower = 0x80; upper = 0xBF
                case 0xED: remaining = 2; lower = 0x80; upper = 0x9F  // no UTF-16 surrogates
                case 0xF0: remaining = 3; lower = 0x90; upper = 0xBF
                case 0xF1...0xF3: remaining = 3; lower = 0x80; upper = 0xBF
                case 0xF4: remaining = 3; lower = 0x80; upper = 0x8F  // nothing above U+10FFFF
                default: return false  // 80–C1 (stray continuation, overlong) and F5–FF
                }
            } else {
                let c = base.load(fromByteOffset: i, as: UInt8.self)
                i += 1
                guard c >= lower && c <= upper else { return false }
                remaining -= 1
                lower = 0x80
                upper = 0xBF
            }
        }
        return true
    }
}
