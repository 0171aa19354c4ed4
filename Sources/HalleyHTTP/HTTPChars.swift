import HalleyCore

/// Character classes of RFC 9110 §5.6 and small byte helpers shared by the parser.
enum HTTPChars {
    /// tchar: "!#$%&'*+-.^_`|~", digits and letters: bit c of these masks (bytes 0-63, 64-127),
    /// constants where a table was a global array read through its lazy initializer.
    static let tokenMaskLow: UInt64 = 0x03ff_6cfa_0000_0000
    static let tokenMaskHigh: UInt64 = 0x57ff_ffff_c7ff_fffe

    @inline(__always) static func isToken(_ c: UInt8) -> Bool {
        let mask = c < 64 ? tokenMaskLow : (c < 128 ? tokenMaskHigh : 0)
        return (mask >> UInt64(c & 63)) & 1 != 0
    }

    /// True when none of the eight bytes of `w` is a control character other than HTAB, or
    /// DEL (a word that has one, or an HTAB, goes byte by byte).
    @inline(__always) static func wordIsPlainFieldValue(_ w: UInt64) -> Bool {
        !Word.hasByte(w, below: 0x20) && !Word.hasByte(w, equalTo: 0x7F)
    }

    /// True when each of the eight bytes of `w` is visible ASCII (0x21–0x7E), what a request
    /// target is made of.
    @inline(__always) static func wordIsTargetText(_ w: UInt64) -> Bool {
        w & 0x8080_8080_8080_8080 == 0 && !Word.hasByte(w, below: 0x21) && !Word.hasByte(w, equalTo: 0x7F)
    }

    /// field-vchar, SP, HTAB and obs-text; no other control characters, no DEL.
    @inline(__always) static func isFieldValue(_ c: UInt8) -> Bool {
        c == 9 || (c >= 32 && c != 127)
    }

    @inline(__always) static func isDigit(_ c: UInt8) -> Bool { c >= 48 && c <= 57 }

    @inline(__always) static func hexValue(_ c: UInt8) -> UInt8? {
        switch c {
        case 48...57: return c - 48
        case 97...102: return c - 87
        case 65...70: return c - 55
        default: return nil
        }
    }

    static func equalsLower(_ b: UnsafeRawBufferPointer, _ lower: StaticString) -> Bool {
        guard b.count == lower.utf8CodeUnitCount else { return false }
        let s = lower.utf8Start
        for i in 0..<b.count where asciiLower(b[i]) != s[i] { return false }
        return true
    }

    /// A non-negative decimal of at most 18 digits (no sign, no spaces), else nil.
    static func decimal(_ b: UnsafeRawBufferPointer) -> Int? {
        guard b.count > 0 && b.count <= 18 else { return nil }
        var v = 0
        for c in b {
            guard isDigit(c) else { return nil }
            v = v * 10 + Int(c - 48)
        }
        return v
    }

    /// The lowercased, trimmed, non-empty elements of a comma-separated list.
    static func tokens(_ b: UnsafeRawBufferPointer) -> [String] {
        var out: [String] = []
        var i = 0
        while i < b.count {
            while i < b.count && (b[i] == 32 || b[i] == 9 || b[i] == 44) { i += 1 }
            let s = i
            while i < b.count && b[i] != 44 { i += 1 }
            var e = i
            while e > s && (b[e - 1] == 32 || b[e - 1] == 9) { e -= 1 }
            if e > s {
                out.append(String(decoding: UnsafeRawBufferPointer(rebasing: b[s..<e]).map(asciiLower), as: UTF8.self))
            }
        }
        return out
    }
}
