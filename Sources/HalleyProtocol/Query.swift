/// `application/x-www-form-urlencoded` query strings (URL Standard §5): `&`-separated
/// `name=value`, `+` is a space, `%XX` escapes.
public enum Query {
    /// The pairs in order; a malformed escape keeps the text as it came. Works on the UTF-8
    /// bytes (no Character segmentation: this runs for every poll).
    public static func parse(_ query: Substring?) -> [(String, String)] {
        guard let q = query, !q.isEmpty else { return [] }
        if let r = q.utf8.withContiguousStorageIfAvailable({ parse(bytes: UnsafeRawBufferPointer($0)) }) { return r }
        var copy = String(q)
        return copy.withUTF8 { parse(bytes: UnsafeRawBufferPointer($0)) }
    }

    static func parse(bytes: UnsafeRawBufferPointer) -> [(String, String)] {
        var out: [(String, String)] = []
        out.reserveCapacity(bytes.reduce(1) { $1 == UInt8(ascii: "&") ? $0 + 1 : $0 })  // one allocation
        var start = 0
        let n = bytes.count
        while start <= n {
            var end = start
            while end < n && bytes[end] != UInt8(ascii: "&") { end += 1 }
            if end > start {
                var eq = start
                while eq < end && bytes[eq] != UInt8(ascii: "=") { eq += 1 }
                let name = decode(UnsafeRawBufferPointer(rebasing: bytes[start..<eq]))
                let value = eq < end ? decode(UnsafeRawBufferPointer(rebasing: bytes[(eq + 1)..<end])) : ""
                out.append((name, value))
            }
            start = end + 1
        }
        return out
    }

    public static func decode(_ s: Substring) -> String {
        var copy = String(s)
        return copy.withUTF8 { decode(UnsafeRawBufferPointer($0)) }
    }

    static func decode(_ b: UnsafeRawBufferPointer) -> String {
        if !b.contains(where: { $0 == UInt8(ascii: "%") || $0 == UInt8(ascii: "+") }) {
            return String(decoding: b, as: UTF8.self)
        }
        var bytes: [UInt8] = []
        bytes.reserveCapacity(b.count)
        var i = 0
        while i < b.count {
            let c = b[i]
            if c == UInt8(ascii: "+") {
                bytes.append(0x20)
            } else if c == UInt8(ascii: "%"), i + 2 < b.count, let h = hex(b[i + 1]), let l = hex(b[i + 2]) {
                bytes.append(h << 4 | l)
                i += 2
            } else {
                bytes.append(c)
            }
            i += 1
        }
        return String(decoding: bytes, as: UTF8.self)
    }

    static func hex(_ c: UInt8) -> UInt8? {
        switch c {
        case 48...57: return c - 48
        case 97...102: return c - 87
        case 65...70: return c - 55
        default: return nil
        }
    }

    /// The first value of `name`.
    public static func value(_ pairs: [(String, String)], _ name: String) -> String? {
        pairs.first { $0.0 == name }?.1
    }
}
