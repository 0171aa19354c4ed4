/// `application/x-www-form-urlencoded` query strings (URL Standard §5): `&`-separated
/// `name=value`, `+` is a space, `%XX` escapes.
public enum Query {
    /// The pairs in order; a malformed escape keeps the text as it came.
    public static func parse(_ query: Substring?) -> [(String, String)] {
        guard let q = query, !q.isEmpty else { return [] }
        var out: [(String, String)] = []
        for part in q.split(separator: "&", omittingEmptySubsequences: true) {
            if let eq = part.firstIndex(of: "=") {
                out.append((decode(part[..<eq]), decode(part[part.index(after: eq)...])))
            } else {
                out.append((decode(part), ""))
            }
        }
        return out
    }

    public static func decode(_ s: Substring) -> String {
        var bytes: [UInt8] = []
        bytes.reserveCapacity(s.utf8.count)
        var u = s.utf8[...]
        while let c = u.first {
            u = u.dropFirst()
            if c == UInt8(ascii: "+") {
                bytes.append(0x20)
            } else if c == UInt8(ascii: "%"), u.count >= 2, let h = hex(u[u.startIndex]), let l = hex(u[u.index(after: u.startIndex)]) {
                bytes.append(h << 4 | l)
                u = u.dropFirst(2)
            } else {
                bytes.append(c)
            }
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
