import HalleyCore

/// The header fields of one request, kept as one copy of the head's bytes plus the offsets of
/// each name and value: two allocations per request, however many fields it has. Names are
/// matched without regard to case (RFC 9110 §5.1).
public struct HTTPHeaders: Sendable, Sequence {
    struct Field: Sendable {
        var nameStart: UInt32
        var nameCount: UInt32
        var valueStart: UInt32
        var valueCount: UInt32
    }

    let bytes: [UInt8]
    let fields: [Field]

    init(bytes: [UInt8], fields: [Field]) {
        self.bytes = bytes
        self.fields = fields
    }

    /// Headers built from pairs, for tests and for requests the hub makes itself.
    public init(_ pairs: [(String, String)]) {
        var b: [UInt8] = []
        var f: [Field] = []
        for (n, v) in pairs {
            let ns = b.count
            b.append(contentsOf: n.utf8)
            let vs = b.count
            b.append(contentsOf: v.utf8)
            f.append(
                Field(
                    nameStart: UInt32(ns), nameCount: UInt32(n.utf8.count),
                    valueStart: UInt32(vs), valueCount: UInt32(v.utf8.count)))
        }
        bytes = b
        fields = f
    }

    public var count: Int { fields.count }

    /// The value of the first field named `name` (case-insensitive), or nil.
    public subscript(name: String) -> String? {
        guard let i = index(of: name) else { return nil }
        return value(at: i)
    }

    /// The bytes of the first field named `name` (case-insensitive), or nil: no string made.
    public func valueBytes(_ name: String) -> ArraySlice<UInt8>? {
        guard let i = index(of: name) else { return nil }
        let f = fields[i]
        return bytes[Int(f.valueStart)..<Int(f.valueStart + f.valueCount)]
    }

    /// Every value of the fields named `name`, in order.
    public func values(_ name: String) -> [String] {
        var out: [String] = []
        var i = index(of: name)
        while let k = i {
            out.append(value(at: k))
            i = index(of: name, from: k + 1)
        }
        return out
    }

    public func contains(_ name: String) -> Bool { index(of: name) != nil }

    /// True when a comma-separated field named `name` lists `token` (case-insensitive).
    public func containsToken(_ name: String, _ token: String) -> Bool {
        var i = index(of: name)
        while let k = i {
            if HTTPHeaders.tokenList(value(at: k), contains: token) { return true }
            i = index(of: name, from: k + 1)
        }
        return false
    }

    public func name(at i: Int) -> String {
        let f = fields[i]
        return String(decoding: bytes[Int(f.nameStart)..<Int(f.nameStart + f.nameCount)], as: UTF8.self)
    }

    public func value(at i: Int) -> String {
        let f = fields[i]
        return String(decoding: bytes[Int(f.valueStart)..<Int(f.valueStart + f.valueCount)], as: UTF8.self)
    }

    public func makeIterator() -> AnyIterator<(name: String, value: String)> {
        var i = 0
        return AnyIterator {
            guard i < self.fields.count else { return nil }
            defer { i += 1 }
            return (self.name(at: i), self.value(at: i))
        }
    }

    /// The first field at or after `start` named `name` (ASCII letters in any case). The
    /// name's bytes and the head's are each reached once (walking the name's UTF-8 view field
    /// by field cost about 200 instructions a field).
    func index(of name: String, from start: Int = 0) -> Int? {
        var n = name  // `withUTF8` is mutating; a native string is not copied
        return n.withUTF8 { nb in
            bytes.withUnsafeBufferPointer { hb in
                for i in start..<fields.count {
                    let f = fields[i]
                    guard Int(f.nameCount) == nb.count else { continue }
                    let s = Int(f.nameStart)
                    var same = true
                    for j in 0..<nb.count where asciiLower(hb[s + j]) != asciiLower(nb[j]) {
                        same = false
                        break
                    }
                    if same { return i }
                }
                return nil
            }
        }
    }

    static func tokenList(_ value: String, contains token: String) -> Bool {
        for part in value.split(separator: ",") {
            let t = part.trimmingSpaces()
            if t.count == token.count && t.lowercased() == token.lowercased() { return true }
        }
        return false
    }
}

@inline(__always) func asciiLower(_ c: UInt8) -> UInt8 {
    (c >= 65 && c <= 90) ? c | 0x20 : c
}
