import HalleyCore

/// A JSON value (RFC 8259), as small as the hub needs: client messages and publish bodies.
/// Numbers keep their text so that 64-bit offsets and sequence numbers round-trip exactly.
public enum JSONValue: Equatable, Sendable {
    case null
    case bool(Bool)
    case number(String)
    case string(String)
    case array([JSONValue])
    case object([String: JSONValue])

    public subscript(key: String) -> JSONValue? {
        if case .object(let o) = self { return o[key] }
        return nil
    }

    public var string: String? {
        if case .string(let s) = self { return s }
        return nil
    }

    public var array: [JSONValue]? {
        if case .array(let a) = self { return a }
        return nil
    }

    public var object: [String: JSONValue]? {
        if case .object(let o) = self { return o }
        return nil
    }

    /// The value as a non-negative integer: a JSON number without fraction or exponent, or a
    /// string of digits (clients that fear 2^53 send offsets as strings).
    public var uint64: UInt64? {
        switch self {
        case .number(let s), .string(let s): return UInt64(s)
        default: return nil
        }
    }

    /// Compact JSON text of the value.
    public var serialized: [UInt8] {
        var out: [UInt8] = []
        JSONWriter.write(self, into: &out)
        return out
    }
}

/// Reading an object's members by key: a dictionary (`JSONValue.object`) or `JSONFields`.
public protocol JSONMembers {
    subscript(_ key: String) -> JSONValue? { get }
}

extension Dictionary: JSONMembers where Key == String, Value == JSONValue {}

/// An object's members in order (`JSONParser.parseFields`); a lookup is a scan from the end,
/// so that the last of a repeated key counts. Meant for the few members of a request body.
/// A key of plain ASCII (no escape, the common case) is not made a string: it is compared
/// with the text's own bytes.
public struct JSONFields: JSONMembers, Sendable {
    /// A member's key: its bytes in `text`, or decoded (an escape or a byte from 0x80 in it).
    enum Key: Sendable {
        case raw(start: Int, count: Int)
        case decoded(String)
    }

    /// A member (a struct, not a tuple: an array of tuples was destroyed through the runtime's
    /// generic tuple witnesses).
    struct Member: Sendable {
        let key: Key
        let value: JSONValue
    }

    /// The parsed text (shared, not copied).
    let text: [UInt8]
    var members: [Member] = []

    init(text: [UInt8]) { self.text = text }

    /// The keys in order, as strings.
    public var keys: [String] {
        members.map { m in
            switch m.key {
            case .raw(let s, let n): return String(decoding: text[s..<(s + n)], as: UTF8.self)
            case .decoded(let k): return k
            }
        }
    }

    public subscript(_ key: String) -> JSONValue? {
        var k = key  // `withUTF8` is mutating; a native string is not copied
        return k.withUTF8 { kb -> JSONValue? in
            text.withUnsafeBufferPointer { t -> JSONValue? in
                // A key with bytes from 0x80 may equal another spelling as a string (canonical
                // equivalence): compared as strings, as a dictionary would.
                var ascii = true
                for c in kb where c >= 0x80 {
                    ascii = false
                    break
                }
                var i = members.count
                while i > 0 {
                    i -= 1
                    switch members[i].key {
                    case .raw(let s, let n):
                        if ascii {
                            guard n == kb.count else { continue }
                            var j = 0
                            while j < n && t[s + j] == kb[j] { j += 1 }
                            if j == n { return members[i].value }
                        } else if String(decoding: UnsafeBufferPointer(rebasing: t[s..<(s + n)]), as: UTF8.self) == key
                        {
                            return members[i].value
                        }
                    case .decoded(let d):
                        if d == key { return members[i].value }
                    }
                }
                return nil
            }
        }
    }
}

public struct JSONError: Error, Equatable, CustomStringConvertible {
    public let offset: Int
    public let reason: String
    public var description: String { "invalid JSON at byte \(offset): \(reason)" }
}

/// A recursive-descent JSON parser over bytes. Depth is bounded so hostile input cannot
/// exhaust the stack.
public struct JSONParser {
    /// Deepest nesting accepted. Default 32: Pusher messages nest two or three levels.
    public static let maxDepth = 32

    public static func parse(_ bytes: [UInt8]) throws(JSONError) -> JSONValue {
        let r: Result<JSONValue, JSONError> = bytes.withUnsafeBytes { b in
            do throws(JSONError) { return .success(try parse(b)) } catch { return .failure(error) }
        }
        return try r.get()
    }

    public static func parse(_ bytes: UnsafeRawBufferPointer) throws(JSONError) -> JSONValue {
        try whole(bytes) { p throws(JSONError) in try p.value(depth: 0) }
    }

    /// `read` over the whole text: spaces around it, nothing after it.
    static func whole<T>(
        _ bytes: UnsafeRawBufferPointer, _ read: (inout JSONParser) throws(JSONError) -> T
    ) throws(JSONError) -> T {
        var p = JSONParser(bytes: bytes)
        p.skipSpace()
        let v = try read(&p)
        p.skipSpace()
        guard p.i == bytes.count else { throw p.fail("trailing bytes") }
        return v
    }

    /// A top-level object as its members in order, without a dictionary (nil when the text is
    /// valid JSON but not an object). For request bodies read once by a few keys (a publish):
    /// no hashing, no dictionary storage. A key given twice: the last one counts, as in
    /// `parse`.
    public static func parseFields(_ bytes: [UInt8]) throws(JSONError) -> JSONFields? {
        let r: Result<JSONFields?, JSONError> = bytes.withUnsafeBytes { b in
            do throws(JSONError) {
                return .success(
                    try whole(b) { p throws(JSONError) -> JSONFields? in
                        guard p.peek == UInt8(ascii: "{") else {
                            _ = try p.value(depth: 0)
                            return nil
                        }
                        var f = JSONFields(text: bytes)
                        f.members.reserveCapacity(8)  // a publish has 3 to 5: one allocation
                        try p.members(depth: 0, key: { p throws(JSONError) in try p.fieldKey() }) {
                            f.members.append(JSONFields.Member(key: $0, value: $1))
                        }
                        return f
                    })
            } catch { return .failure(error) }
        }
        return try r.get()
    }

    /// A top-level object read in one pass, for a body read by a few fixed keys (a publish):
    /// each member whose key is `keys[k]` goes to `member` with `k`, in order (a key given
    /// twice goes twice, the last one last); other members are parsed (so checked) and
    /// dropped. Keys compare as `JSONFields` compares them: plain ASCII keys by their bytes,
    /// an escaped or non-ASCII one (in the text or asked for) as a string. No member list, no
    /// lookups. False when the text is valid JSON but not an object. When it throws, `member`
    /// may already have had the members before the error. `keys` must differ as strings (a
    /// member goes to the first key it equals).
    public static func readObject(
        _ bytes: [UInt8], keys: [StaticString], _ member: (Int, JSONValue) -> Void
    ) throws(JSONError) -> Bool {
        let r: Result<Bool, JSONError> = bytes.withUnsafeBytes { b in
            do throws(JSONError) {
                return .success(
                    try whole(b) { p throws(JSONError) -> Bool in
                        guard p.peek == UInt8(ascii: "{") else {
                            _ = try p.value(depth: 0)
                            return false
                        }
                        try p.members(depth: 0, key: { p throws(JSONError) in try p.fieldKey() }) { k, v in
                            if let n = keyIndex(k, keys, b) { member(n, v) }
                        }
                        return true
                    })
            } catch { return .failure(error) }
        }
        return try r.get()
    }

    /// Which of `keys` a member's key is (`text`: the parsed text, where a raw key lies).
    static func keyIndex(_ key: JSONFields.Key, _ keys: [StaticString], _ text: UnsafeRawBufferPointer) -> Int? {
        switch key {
        case .raw(let start, let count):
            for (n, k) in keys.enumerated() {
                if !k.isASCII {
                    // A key asked for with bytes from 0x80 may equal a plain one as a string
                    // (U+212A KELVIN SIGN is "K"): compared as strings, as `JSONFields` does.
                    let raw = UnsafeRawBufferPointer(rebasing: text[start..<(start + count)])
                    if String(decoding: raw, as: UTF8.self) == k.description { return n }
                    continue
                }
                guard k.utf8CodeUnitCount == count else { continue }
                var j = 0
                while j < count && text[start + j] == k.utf8Start[j] { j += 1 }
                if j == count { return n }
            }
        case .decoded(let d):
            for (n, k) in keys.enumerated() where d == k.description { return n }
        }
        return nil
    }

    /// The members of the object at `i` (at its `{`, nested `depth` deep), in order, each to
    /// `add`.
    @inline(__always)
    mutating func members(depth: Int, _ add: (String, JSONValue) -> Void) throws(JSONError) {
        try members(depth: depth, key: { p throws(JSONError) in try p.string() }, add)
    }

    /// `members`, each key read by `key` (at its opening quote).
    @inline(__always)
    mutating func members<K>(
        depth: Int, key: (inout JSONParser) throws(JSONError) -> K, _ add: (K, JSONValue) -> Void
    ) throws(JSONError) {
        guard depth < Self.maxDepth else { throw fail("nested too deeply") }
        i += 1
        skipSpace()
        if peek == UInt8(ascii: "}") { i += 1; return }
        while true {
            skipSpace()
            guard peek == UInt8(ascii: "\"") else { throw fail("expected a key") }
            let k = try key(&self)
            skipSpace()
            guard peek == UInt8(ascii: ":") else { throw fail("expected ':'") }
            i += 1
            skipSpace()
            add(k, try value(depth: depth + 1))
            skipSpace()
            guard let d = peek else { throw fail("unexpected end") }
            i += 1
            if d == UInt8(ascii: "}") { return }
            guard d == UInt8(ascii: ",") else { i -= 1; throw fail("expected ',' or '}'") }
        }
    }

    let bytes: UnsafeRawBufferPointer
    var i = 0

    init(bytes: UnsafeRawBufferPointer) { self.bytes = bytes }

    func fail(_ reason: String) -> JSONError { JSONError(offset: i, reason: reason) }

    var peek: UInt8? { i < bytes.count ? bytes[i] : nil }

    mutating func skipSpace() {
        while i < bytes.count {
            switch bytes[i] {
            case 0x20, 0x09, 0x0A, 0x0D: i += 1
            default: return
            }
        }
    }

    mutating func literal(_ word: StaticString, _ v: JSONValue) throws(JSONError) -> JSONValue {
        let n = word.utf8CodeUnitCount
        guard i + n <= bytes.count else { throw fail("truncated literal") }
        for k in 0..<n where bytes[i + k] != word.utf8Start[k] { throw fail("bad literal") }
        i += n
        return v
    }

    mutating func value(depth: Int) throws(JSONError) -> JSONValue {
        guard let c = peek else { throw fail("unexpected end") }
        switch c {
        case UInt8(ascii: "{"):
            var o: [String: JSONValue] = [:]
            try members(depth: depth) { o[$0] = $1 }
            return .object(o)
        case UInt8(ascii: "["):
            guard depth < Self.maxDepth else { throw fail("nested too deeply") }
            i += 1
            var a: [JSONValue] = []
            skipSpace()
            if peek == UInt8(ascii: "]") { i += 1; return .array(a) }
            while true {
                skipSpace()
                a.append(try value(depth: depth + 1))
                skipSpace()
                guard let d = peek else { throw fail("unexpected end") }
                i += 1
                if d == UInt8(ascii: "]") { return .array(a) }
                guard d == UInt8(ascii: ",") else { i -= 1; throw fail("expected ',' or ']'") }
            }
        case UInt8(ascii: "\""):
            return .string(try string())
        case UInt8(ascii: "t"): return try literal("true", .bool(true))
        case UInt8(ascii: "f"): return try literal("false", .bool(false))
        case UInt8(ascii: "n"): return try literal("null", .null)
        case UInt8(ascii: "-"), UInt8(ascii: "0")...UInt8(ascii: "9"):
            return try number()
        default:
            throw fail("unexpected byte")
        }
    }

    mutating func digits() -> Int {
        let s = i
        while let c = peek, c >= 0x30, c <= 0x39 { i += 1 }
        return i - s
    }

    // RFC 8259 §6: -? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)?
    mutating func number() throws(JSONError) -> JSONValue {
        let start = i
        if peek == UInt8(ascii: "-") { i += 1 }
        if peek == UInt8(ascii: "0") {
            i += 1
        } else {
            guard digits() > 0 else { throw fail("bad number") }
        }
        if peek == UInt8(ascii: ".") {
            i += 1
            guard digits() > 0 else { throw fail("bad fraction") }
        }
        if peek == UInt8(ascii: "e") || peek == UInt8(ascii: "E") {
            i += 1
            if peek == UInt8(ascii: "+") || peek == UInt8(ascii: "-") { i += 1 }
            guard digits() > 0 else { throw fail("bad exponent") }
        }
        return .number(String(decoding: UnsafeRawBufferPointer(rebasing: bytes[start..<i]), as: UTF8.self))
    }

    mutating func hex4() throws(JSONError) -> UInt32 {
        guard i + 4 <= bytes.count else { throw fail("truncated \\u escape") }
        var v: UInt32 = 0
        for _ in 0..<4 {
            let c = bytes[i]
            let d: UInt32
            switch c {
            case 0x30...0x39: d = UInt32(c - 0x30)
            case 0x61...0x66: d = UInt32(c - 0x57)
            case 0x41...0x46: d = UInt32(c - 0x37)
            default: throw fail("bad \\u escape")
            }
            v = v << 4 | d
            i += 1
        }
        return v
    }

    /// A key of `parseFields` at `i` (at its opening quote): its place in the text when it is
    /// plain ASCII, else decoded by `string` (which also reports what is wrong with it).
    mutating func fieldKey() throws(JSONError) -> JSONFields.Key {
        let start = i + 1
        var j = start
        while j < bytes.count {
            let c = bytes[j]
            if c == UInt8(ascii: "\"") {
                i = j + 1
                return .raw(start: start, count: j - start)
            }
            if c < 0x20 || c >= 0x80 || c == UInt8(ascii: "\\") { break }
            j += 1
        }
        return .decoded(try string())
    }

    /// A string at `i` (which is at the opening quote). Bytes must be UTF-8 (checked by
    /// decoding: invalid sequences are an error, not replaced).
    mutating func string() throws(JSONError) -> String {
        i += 1
        var out: [UInt8] = []
        var runStart = i
        while true {
            // Eight bytes at a time while none is a quote, a backslash or a control character.
            while i + 8 <= bytes.count,
                !JSONWriter.wordNeedsEscape(bytes.loadUnaligned(fromByteOffset: i, as: UInt64.self))
            {
                i += 8
            }
            guard i < bytes.count else { throw fail("unterminated string") }
            let c = bytes[i]
            if c == UInt8(ascii: "\"") { break }
            if c < 0x20 { throw fail("control character in string") }
            if c != UInt8(ascii: "\\") { i += 1; continue }
            out.append(contentsOf: UnsafeRawBufferPointer(rebasing: bytes[runStart..<i]))
            i += 1
            guard i < bytes.count else { throw fail("unterminated escape") }
            let e = bytes[i]
            i += 1
            switch e {
            case UInt8(ascii: "\""), UInt8(ascii: "\\"), UInt8(ascii: "/"): out.append(e)
            case UInt8(ascii: "b"): out.append(0x08)
            case UInt8(ascii: "f"): out.append(0x0C)
            case UInt8(ascii: "n"): out.append(0x0A)
            case UInt8(ascii: "r"): out.append(0x0D)
            case UInt8(ascii: "t"): out.append(0x09)
            case UInt8(ascii: "u"):
                var scalar = try hex4()
                if scalar >= 0xD800 && scalar < 0xDC00 {
                    // RFC 8259 §7: a character outside the BMP is a surrogate pair.
                    guard i + 2 <= bytes.count, bytes[i] == UInt8(ascii: "\\"), bytes[i + 1] == UInt8(ascii: "u") else {
                        throw fail("lone surrogate")
                    }
                    i += 2
                    let low = try hex4()
                    guard low >= 0xDC00 && low < 0xE000 else { throw fail("bad surrogate pair") }
                    scalar = 0x10000 + ((scalar - 0xD800) << 10) + (low - 0xDC00)
                } else if scalar >= 0xDC00 && scalar < 0xE000 {
                    throw fail("lone surrogate")
                }
                appendUTF8(scalar, to: &out)
            default:
                throw fail("bad escape")
            }
            runStart = i
        }
        if out.isEmpty {
            // No escape (the common case): the string straight from the input, no copy first.
            let raw = UnsafeRawBufferPointer(rebasing: bytes[runStart..<i])
            i += 1
            guard let s = Self.utf8String(raw) else { throw fail("invalid UTF-8 in string") }
            return s
        }
        out.append(contentsOf: UnsafeRawBufferPointer(rebasing: bytes[runStart..<i]))
        i += 1
        guard let s = out.withUnsafeBytes({ Self.utf8String($0) }) else { throw fail("invalid UTF-8 in string") }
        return s
    }

    /// The string of `raw` when it is valid UTF-8. UTF8Validator and `String(decoding:)` (both
    /// specialized here) where `String(validating:as:)` ran generic, looking up type metadata
    /// on every call: 4 % of a publish request's CPU.
    static func utf8String(_ raw: UnsafeRawBufferPointer) -> String? {
        var v = UTF8Validator()
        guard v.validate(raw), v.isComplete else { return nil }
        return String(decoding: raw, as: UTF8.self)
    }

    func appendUTF8(_ v: UInt32, to out: inout [UInt8]) {
        switch v {
        case 0..<0x80: out.append(UInt8(v))
        case 0x80..<0x800:
            out.append(UInt8(0xC0 | v >> 6)); out.append(UInt8(0x80 | v & 0x3F))
        case 0x800..<0x10000:
            out.append(UInt8(0xE0 | v >> 12)); out.append(UInt8(0x80 | v >> 6 & 0x3F));
            out.append(UInt8(0x80 | v & 0x3F))
        default:
            out.append(UInt8(0xF0 | v >> 18)); out.append(UInt8(0x80 | v >> 12 & 0x3F))
            out.append(UInt8(0x80 | v >> 6 & 0x3F)); out.append(UInt8(0x80 | v & 0x3F))
        }
    }
}

/// Compact JSON output. Object keys are written sorted so equal values give equal bytes.
public enum JSONWriter {
    static let hexDigits: [UInt8] = Array("0123456789abcdef".utf8)

    public static func write(_ v: JSONValue, into out: inout [UInt8]) {
        switch v {
        case .null: out.append(contentsOf: "null".utf8)
        case .bool(let b): out.append(contentsOf: (b ? "true" : "false").utf8)
        case .number(let s): out.append(contentsOf: s.utf8)
        case .string(let s): writeString(s, into: &out)
        case .array(let a):
            out.append(UInt8(ascii: "["))
            for (k, e) in a.enumerated() {
                if k > 0 { out.append(UInt8(ascii: ",")) }
                write(e, into: &out)
            }
            out.append(UInt8(ascii: "]"))
        case .object(let o):
            out.append(UInt8(ascii: "{"))
            for (k, key) in o.keys.sorted().enumerated() {
                if k > 0 { out.append(UInt8(ascii: ",")) }
                writeString(key, into: &out)
                out.append(UInt8(ascii: ":"))
                write(o[key]!, into: &out)
            }
            out.append(UInt8(ascii: "}"))
        }
    }

    /// A JSON string literal: quotes, backslashes and control characters escaped (RFC 8259
    /// §7); everything else as UTF-8.
    public static func writeString(_ s: String, into out: inout [UInt8]) {
        var s = s
        // The string's own UTF-8 bytes (no copy for a native string), only inside the closure.
        s.withUTF8 { writeString(bytes: $0, into: &out) }
    }

    /// Runs of bytes that need no escape are appended whole (plain text is one run); runs
    /// shorter than 16 bytes (JSON text carried as a string: a quote every few bytes) byte by
    /// byte, which costs less than a bulk append's call.
    static func writeString(bytes b: UnsafeBufferPointer<UInt8>, into out: inout [UInt8]) {
        out.append(UInt8(ascii: "\""))
        let raw = UnsafeRawBufferPointer(b)
        var start = 0
        var i = 0
        let n = b.count
        while i < n {
            // Eight bytes at a time while none needs an escape.
            while i + 8 <= n && !wordNeedsEscape(raw.loadUnaligned(fromByteOffset: i, as: UInt64.self)) { i += 8 }
            if i >= n { break }
            let c = b[i]
            i += 1
            guard c < 0x20 || c == UInt8(ascii: "\"") || c == UInt8(ascii: "\\") else { continue }
            appendRun(b, start, i - 1, into: &out)
            start = i
            writeEscape(c) { out.append($0) }
        }
        appendRun(b, start, b.count, into: &out)
        out.append(UInt8(ascii: "\""))
    }

    /// The escape of `c` (a quote, a backslash or a control character), byte by byte to
    /// `put`: `\"`, `\\`, `\n`, `\r`, `\t`, else `\u00XX` (the one table of escapes, shared
    /// with `SizedJSON`, whose `extra` counts these lengths).
    @inline(__always)
    static func writeEscape(_ c: UInt8, _ put: (UInt8) -> Void) {
        put(UInt8(ascii: "\\"))
        switch c {
        case UInt8(ascii: "\""), UInt8(ascii: "\\"): put(c)
        case 0x0A: put(UInt8(ascii: "n"))
        case 0x0D: put(UInt8(ascii: "r"))
        case 0x09: put(UInt8(ascii: "t"))
        default:
            put(UInt8(ascii: "u"))
            put(UInt8(ascii: "0"))
            put(UInt8(ascii: "0"))
            put(hexDigits[Int(c >> 4)])
            put(hexDigits[Int(c & 15)])
        }
    }

    /// True when one of the eight bytes of `w` is a control character, a quote or a
    /// backslash (bytes from 0x80 never are).
    @inline(__always)
    static func wordNeedsEscape(_ w: UInt64) -> Bool {
        Word.hasByte(w, below: 0x20) || Word.hasByte(w, equalTo: UInt8(ascii: "\""))
            || Word.hasByte(w, equalTo: UInt8(ascii: "\\"))
    }

    @inline(__always)
    static func appendRun(_ b: UnsafeBufferPointer<UInt8>, _ from: Int, _ to: Int, into out: inout [UInt8]) {
        if to - from >= 16 || (from == 0 && to == b.count) {  // long, or the whole string (no escape)
            out.append(contentsOf: UnsafeBufferPointer(rebasing: b[from..<to]))
        } else {
            for k in from..<to { out.append(b[k]) }
        }
    }

    /// `v` in decimal digits (`Wire.writeDecimal`'s, through a buffer on the stack).
    public static func writeDecimal(_ v: UInt64, into out: inout [UInt8]) {
        var digits: (UInt64, UInt64, UInt64) = (0, 0, 0)  // 24 bytes: UInt64.max has 20 digits
        withUnsafeMutableBytes(of: &digits) { d in  // used only inside the closure
            let n = Wire.writeDecimal(v, into: d.baseAddress!)
            out.append(contentsOf: UnsafeRawBufferPointer(rebasing: d[0..<n]))
        }
    }

    public static func string(_ s: String) -> [UInt8] {
        var out: [UInt8] = []
        writeString(s, into: &out)
        return out
    }
}
