/// JSON text written into memory sized first: each string's escaped length is counted (a
/// word at a time), then every piece is copied once into memory of that size
/// (`[UInt8](writing:)`). For the message
/// made on every publish, where appending piece by piece to a growing array paid a capacity
/// and uniqueness check per piece (about a tenth of a publish's instructions).
/// Escapes are `JSONWriter`'s, byte for byte.
package enum SizedJSON {
    /// The bytes `b` takes inside a JSON string (quotes not counted), escaped as
    /// `JSONWriter.writeString` escapes.
    package static func escapedCount(_ b: UnsafeBufferPointer<UInt8>) -> Int {
        let raw = UnsafeRawBufferPointer(b)
        var n = b.count
        var i = 0
        while i < b.count {
            while i + 8 <= b.count && !JSONWriter.wordNeedsEscape(raw.loadUnaligned(fromByteOffset: i, as: UInt64.self))
            {
                i += 8
            }
            guard i < b.count else { break }
            n += extra(b[i])
            i += 1
        }
        return n
    }

    /// `escapedCount` of a string's UTF-8.
    package static func escapedCount(_ s: String) -> Int {
        var s = s  // `withUTF8` is mutating; a native string is not copied
        return s.withUTF8 { escapedCount($0) }
    }

    /// What escaping adds to byte `c`: one for `\"`, `\\`, `\n`, `\r`, `\t`; five for
    /// `\u00XX`; none for the rest.
    @inline(__always)
    static func extra(_ c: UInt8) -> Int {
        switch c {
        case UInt8(ascii: "\""), UInt8(ascii: "\\"), 0x0A, 0x0D, 0x09: return 1
        case 0..<0x20: return 5
        default: return 0
        }
    }

    /// Writes at `base`: the memory `[UInt8](writing:)` passes, of a size counted before;
    /// valid inside that closure only.
    package struct Writer {
        let base: UnsafeMutableRawPointer  // the memory `writing:` passes, inside its closure only
        package private(set) var count = 0

        package init(base: UnsafeMutableRawPointer) { self.base = base }

        package mutating func byte(_ c: UInt8) {
            base.storeBytes(of: c, toByteOffset: count, as: UInt8.self)
            count += 1
        }

        package mutating func text(_ s: StaticString) {
            (base + count).copyMemory(from: s.utf8Start, byteCount: s.utf8CodeUnitCount)
            count += s.utf8CodeUnitCount
        }

        package mutating func decimal(_ v: UInt64) { count += Wire.writeDecimal(v, into: base + count) }

        /// `"…"`: `b` escaped; `escaped` is its `escapedCount` (equal to its length when
        /// nothing needs an escape: one copy).
        package mutating func string(_ b: UnsafeBufferPointer<UInt8>, escaped: Int) {
            byte(UInt8(ascii: "\""))
            if escaped == b.count {
                if let p = b.baseAddress { (base + count).copyMemory(from: p, byteCount: b.count) }
                count += b.count
            } else {
                for c in b {
                    if c < 0x20 || c == UInt8(ascii: "\"") || c == UInt8(ascii: "\\") {
                        JSONWriter.writeEscape(c) { byte($0) }
                    } else {
                        byte(c)
                    }
                }
            }
            byte(UInt8(ascii: "\""))
        }

        /// Bytes as they are.
        package mutating func bytes(_ b: UnsafeRawBufferPointer) {
            if let p = b.baseAddress { (base + count).copyMemory(from: p, byteCount: b.count) }
            count += b.count
        }

        /// What `write` puts at the end (it returns how many bytes it wrote there).
        package mutating func append(_ write: (UnsafeMutableRawPointer) -> Int) { count += write(base + count) }

        /// The string's UTF-8 as it is (no quotes, no escapes).
        package mutating func raw(_ s: String) {
            var s = s  // `withUTF8` is mutating; a native string is not copied
            s.withUTF8 { b in
                if let p = b.baseAddress { (base + count).copyMemory(from: p, byteCount: b.count) }
                count += b.count
            }
        }

        /// `"…"`: the string escaped.
        package mutating func string(_ s: String) {
            var s = s  // `withUTF8` is mutating; a native string is not copied
            s.withUTF8 { string($0, escaped: SizedJSON.escapedCount($0)) }
        }
    }
}
