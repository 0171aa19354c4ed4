#if canImport(Glibc)
import Glibc
#endif

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
        guard let base = bytes.baseAddress else { return [] }
        let n = bytes.count
        // `&`, `=`, `%` and `+` found with memchr: a byte-at-a-time scan with bounds checks cost
        // about 2,500 instructions for a signed API request's query.
        func find(_ c: UInt8, _ from: Int, _ to: Int) -> Int {
            guard from < to, let p = memchr(base + from, Int32(c), to - from) else { return to }
            return base.distance(to: UnsafeRawPointer(p))
        }
        var pairs = 1
        var k = find(UInt8(ascii: "&"), 0, n)
        while k < n {
            pairs += 1
            k = find(UInt8(ascii: "&"), k + 1, n)
        }
        var out: [(String, String)] = []
        out.reserveCapacity(pairs)  // one allocation
        var start = 0
        while start <= n {
            let end = find(UInt8(ascii: "&"), start, n)
            if end > start {
                let eq = find(UInt8(ascii: "="), start, end)
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
        if let p = b.baseAddress, memchr(p, 0x25, b.count) == nil, memchr(p, 0x2B, b.count) == nil {  // no % or +
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
