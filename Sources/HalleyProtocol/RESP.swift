/// RESP, the Redis serialization protocol: RESP2 and the RESP3 types Redis 7 sends after
/// `HELLO 3`. I/O-free: bytes in, values out (`RESPParser`); values in, bytes out (`RESP`).
/// The Redis client of the multi-node work (issue 14) reads its replies and pushes with it.

/// One RESP value.
public indirect enum RESPValue: Equatable, Sendable {
    /// `+OK`: a short string without CR or LF.
    case simple(String)
    /// `-ERR …` (and RESP3's bulk error `!`): the message, its first word the error's kind.
    case error(String)
    /// `:42`.
    case integer(Int64)
    /// `$3\r\nfoo`: binary-safe.
    case bulk([UInt8])
    /// RESP2's null bulk string (`$-1`) and null array (`*-1`), RESP3's `_`.
    case null
    /// `*2…`.
    case array([RESPValue])
    /// RESP3 `#t` / `#f`.
    case boolean(Bool)
    /// RESP3 `,1.5` (also `inf`, `-inf`, `nan`).
    case double(Double)
    /// RESP3 `(1234…`: the decimal digits as they came.
    case bigNumber(String)
    /// RESP3 `=15\r\ntxt:Some string`: the three-letter format and the text.
    case verbatim(format: String, text: [UInt8])
    /// RESP3 `%`: keys and values in turn (key, value, key, value…), in the order sent.
    case map([RESPValue])
    /// RESP3 `~`.
    case set([RESPValue])
    /// RESP3 `>`: out of band (pub/sub messages, invalidations).
    case push([RESPValue])

    /// The text of a bulk, simple or verbatim string (UTF-8, invalid bytes replaced).
    public var string: String? {
        switch self {
        case .simple(let s): return s
        case .bulk(let b): return String(decoding: b, as: UTF8.self)
        case .verbatim(_, let t): return String(decoding: t, as: UTF8.self)
        default: return nil
        }
    }

    /// The elements of an array, set or push (a RESP2 pub/sub message is an array, a RESP3
    /// one a push).
    public var elements: [RESPValue]? {
        switch self {
        case .array(let a), .set(let a), .push(let a): return a
        default: return nil
        }
    }
}

/// Why a byte stream is not RESP, or breaks a limit. The connection that sent it cannot be
/// read further: there is no way to find the next value.
public enum RESPError: Error, Equatable, Sendable {
    /// A value begins with a byte that is no RESP type.
    case unknownType(UInt8)
    /// A line is not ended by CR LF, or a bulk's data not followed by CR LF.
    case badLineEnd
    /// A length or an integer that is not a decimal number in range.
    case badNumber
    /// A negative length where only -1 (null) is allowed, or -1 where none is.
    case badLength
    /// `#` followed by other than `t` or `f`, a double that is no number, a verbatim string
    /// without its `xxx:` format.
    case badValue
    /// A line, a bulk or an aggregate larger than the limits.
    case tooLarge
    /// Aggregates nested deeper than the limit.
    case tooDeep
}

/// Reads RESP values from bytes as they arrive. Append what the socket gave, then take
/// values with `next()` until it returns nil (the rest has not arrived yet). A value is taken
/// whole or not at all; bytes split anywhere give the same values.
public struct RESPParser: Sendable {
    public struct Limits: Sendable {
        /// A simple string, error, number or header line. Default 64 KiB.
        public var maxLineBytes = 64 * 1024
        /// One bulk string. Default 64 MiB (Redis allows 512 MiB; the hub's values are
        /// channel messages of at most a few hundred KiB).
        public var maxBulkBytes = 64 << 20
        /// Elements of one aggregate (a map's pairs count twice). Default 1,048,576.
        public var maxElements = 1 << 20
        /// Nesting of aggregates (an attribute counts as a level). Default 32.
        public var maxDepth = 32
        /// Bytes held for a value that has not all arrived. Default 128 MiB.
        public var maxBufferedBytes = 128 << 20
        public init() {}
    }

    public let limits: Limits
    var buffer: [UInt8] = []
    var start = 0

    public init(limits: Limits = Limits()) { self.limits = limits }

    /// Bytes appended and not yet taken as values.
    public var pendingBytes: Int { buffer.count - start }

    public mutating func append(_ bytes: UnsafeRawBufferPointer) {
        if start > 0 && start == buffer.count {
            buffer.removeAll(keepingCapacity: buffer.capacity <= 1 << 20)  // a huge reply's buffer goes
            start = 0
        } else if start >= 4096 {
            buffer.removeFirst(start)
            start = 0
        }
        buffer.append(contentsOf: bytes)
    }

    public mutating func append(_ bytes: [UInt8]) { bytes.withUnsafeBytes { append($0) } }

    /// The next whole value, or nil when it has not all arrived. After an error the parser
    /// is unusable. A value is first scanned (nothing allocated) and built only once it is
    /// all there: a large reply arriving in many reads is not built again and again.
    public mutating func next() throws(RESPError) -> RESPValue? {
        guard start < buffer.count else { return nil }
        var at = start
        let v = try buffer.withUnsafeBufferPointer { b throws(RESPError) -> RESPValue? in
            let reader = Reader(bytes: b, limits: limits)
            var scan = at
            guard try reader.value(at: &scan, depth: 0, build: false) != nil else { return nil }
            return try reader.value(at: &at, depth: 0, build: true)
        }
        guard let v else {
            if buffer.count - start > limits.maxBufferedBytes { throw .tooLarge }
            return nil
        }
        start = at
        return v
    }

    /// Parses from `bytes` at `at`, moving `at` past what it took; nil: incomplete.
    struct Reader {
        let bytes: UnsafeBufferPointer<UInt8>
        let limits: Limits

        static let cr: UInt8 = 13, lf: UInt8 = 10

        /// The line starting at `at` (without CR LF) as a range; nil: incomplete.
        func line(at: Int) throws(RESPError) -> Range<Int>? {
            var i = at
            // The CR of a line at the limit is at `at + maxLineBytes`.
            let end = min(bytes.count, at + limits.maxLineBytes + 1)
            while i < end {
                if bytes[i] == Self.cr {
                    guard i + 1 < bytes.count else { return nil }
                    guard bytes[i + 1] == Self.lf else { throw .badLineEnd }
                    return at..<i
                }
                if bytes[i] == Self.lf { throw .badLineEnd }
                i += 1
            }
            if bytes.count - at > limits.maxLineBytes { throw .tooLarge }
            return nil
        }

        func number(_ r: Range<Int>) throws(RESPError) -> Int64 {
            var i = r.lowerBound
            var negative = false
            if i < r.upperBound && (bytes[i] == UInt8(ascii: "-") || bytes[i] == UInt8(ascii: "+")) {
                negative = bytes[i] == UInt8(ascii: "-")
                i += 1
            }
            guard i < r.upperBound else { throw .badNumber }
            var v: Int64 = 0
            while i < r.upperBound {
                let d = bytes[i] &- UInt8(ascii: "0")
                guard d < 10 else { throw .badNumber }
                // Accumulated negative: Int64.min has no positive counterpart.
                let (m, o1) = v.multipliedReportingOverflow(by: 10)
                let (s, o2) = m.subtractingReportingOverflow(Int64(d))
                guard !o1 && !o2 else { throw .badNumber }
                v = s
                i += 1
            }
            if negative { return v }
            guard v != Int64.min else { throw .badNumber }
            return -v
        }

        func text(_ r: Range<Int>) -> String {
            String(decoding: UnsafeBufferPointer(rebasing: bytes[r]), as: UTF8.self)
        }

        /// A length header: -1 only where `nullable`.
        func length(_ r: Range<Int>, nullable: Bool, max: Int) throws(RESPError) -> Int? {
            let n = try number(r)
            if n == -1 && nullable { return nil }
            guard n >= 0 else { throw .badLength }
            guard n <= Int64(max) else { throw .tooLarge }
            return Int(n)
        }

        /// `n` bytes of data at `at` and their CR LF; nil: incomplete.
        func data(at: Int, count n: Int) throws(RESPError) -> Range<Int>? {
            guard bytes.count - at >= n + 2 else { return nil }
            guard bytes[at + n] == Self.cr && bytes[at + n + 1] == Self.lf else { throw .badLineEnd }
            return at..<(at + n)
        }

        static let types: Set<UInt8> = Set("+-:_#,($!=*%~>|".utf8)

        /// The value at `at`, moving `at` past it; nil: incomplete. `build` false: checked
        /// and skipped only (the value returned is a placeholder).
        func value(at: inout Int, depth: Int, build: Bool) throws(RESPError) -> RESPValue? {
            guard at < bytes.count else { return nil }
            let type = bytes[at]
            guard Self.types.contains(type) else { throw .unknownType(type) }
            guard let header = try line(at: at + 1) else { return nil }
            var next = header.upperBound + 2
            let v: RESPValue
            switch type {
            case UInt8(ascii: "+"): v = build ? .simple(text(header)) : .null
            case UInt8(ascii: "-"): v = build ? .error(text(header)) : .null
            case UInt8(ascii: ":"): v = .integer(try number(header))
            case UInt8(ascii: "_"):
                guard header.isEmpty else { throw .badValue }
                v = .null
            case UInt8(ascii: "#"):
                guard header.count == 1,
                    bytes[header.lowerBound] == UInt8(ascii: "t") || bytes[header.lowerBound] == UInt8(ascii: "f")
                else {
                    throw .badValue
                }
                v = .boolean(bytes[header.lowerBound] == UInt8(ascii: "t"))
            case UInt8(ascii: ","):
                let t = text(header)
                switch t {
                case "inf": v = .double(.infinity)
                case "-inf": v = .double(-.infinity)
                case "nan": v = .double(.nan)
                default:
                    // Digits, sign, point, exponent only: Double("0x1p3") or " 1" must not pass.
                    guard !t.isEmpty,
                        t.utf8.allSatisfy({
                            ($0 >= 48 && $0 <= 57) || $0 == 43 || $0 == 45 || $0 == 46 || $0 == 69 || $0 == 101
                        }),
                        let d = Double(t)
                    else { throw .badValue }
                    v = .double(d)
                }
            case UInt8(ascii: "("):
                let t = text(header)
                var digits = Substring(t)
                if digits.first == "-" || digits.first == "+" { digits = digits.dropFirst() }
                guard !digits.isEmpty, digits.utf8.allSatisfy({ $0 >= 48 && $0 <= 57 }) else { throw .badValue }
                v = .bigNumber(t)
            case UInt8(ascii: "$"), UInt8(ascii: "!"), UInt8(ascii: "="):
                guard let n = try length(header, nullable: type == UInt8(ascii: "$"), max: limits.maxBulkBytes) else {
                    v = .null
                    break
                }
                guard let d = try data(at: next, count: n) else { return nil }
                next = d.upperBound + 2
                if type == UInt8(ascii: "="),
                    n < 4 || bytes[d.lowerBound + 3] != UInt8(ascii: ":")
                        || !bytes[d.lowerBound..<(d.lowerBound + 3)].allSatisfy({ $0 > 32 && $0 < 127 })
                {
                    throw .badValue  // the format is three printable ASCII bytes (`txt`, `mkd`), then `:`
                }
                guard build else {
                    v = .null
                    break
                }
                let payload = Array(UnsafeBufferPointer(rebasing: bytes[d]))
                if type == UInt8(ascii: "$") {
                    v = .bulk(payload)
                } else if type == UInt8(ascii: "!") {
                    v = .error(String(decoding: payload, as: UTF8.self))
                } else {
                    v = .verbatim(format: String(decoding: payload[0..<3], as: UTF8.self), text: Array(payload[4...]))
                }
            case UInt8(ascii: "*"), UInt8(ascii: "%"), UInt8(ascii: "~"), UInt8(ascii: ">"), UInt8(ascii: "|"):
                guard depth < limits.maxDepth else { throw .tooDeep }
                let pairs = type == UInt8(ascii: "%") || type == UInt8(ascii: "|")
                guard
                    let n = try length(
                        header, nullable: type == UInt8(ascii: "*"),
                        max: pairs ? limits.maxElements / 2 : limits.maxElements)
                else {
                    v = .null
                    break
                }
                let count = pairs ? 2 * n : n
                var items: [RESPValue] = []
                if build { items.reserveCapacity(Swift.min(count, 1024)) }
                for _ in 0..<count {
                    guard let item = try value(at: &next, depth: depth + 1, build: build) else { return nil }
                    if build { items.append(item) }
                }
                switch type {
                case UInt8(ascii: "*"): v = .array(items)
                case UInt8(ascii: "%"): v = .map(items)
                case UInt8(ascii: "~"): v = .set(items)
                case UInt8(ascii: ">"): v = .push(items)
                default:
                    // `|`: attributes describe the value that follows (CLIENT TRACKING and the
                    // like); nothing the hub asks for has them: skipped, the value returned.
                    guard let described = try value(at: &next, depth: depth + 1, build: build) else { return nil }
                    v = described
                }
            default:
                throw .unknownType(type)
            }
            at = next
            return v
        }
    }
}

/// Values and commands as RESP bytes.
public enum RESP {
    /// A command as Redis reads it: an array of bulk strings.
    public static func command(_ args: [[UInt8]]) -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(16 + args.reduce(0) { $0 + $1.count + 16 })
        appendCommand(args, to: &out)
        return out
    }

    public static func command(_ args: String...) -> [UInt8] { command(args.map { Array($0.utf8) }) }

    /// Appends a command to `out` (a pipeline is commands one after another).
    public static func appendCommand(_ args: [[UInt8]], to out: inout [UInt8]) {
        header(UInt8(ascii: "*"), args.count, into: &out)
        for a in args {
            header(UInt8(ascii: "$"), a.count, into: &out)
            out += a
            out += [13, 10]
        }
    }

    static func header(_ type: UInt8, _ n: Int, into out: inout [UInt8]) {
        out.append(type)
        out += Array(String(n).utf8)
        out += [13, 10]
    }

    /// `v` as RESP (RESP3 types as RESP3; `.null` as `_`). For tests and for a server's side;
    /// a client sends only commands.
    public static func encode(_ v: RESPValue, into out: inout [UInt8]) {
        func line(_ type: UInt8, _ text: String) {
            out.append(type)
            out += Array(text.utf8)
            out += [13, 10]
        }
        func aggregate(_ type: UInt8, _ items: [RESPValue], count: Int) {
            header(type, count, into: &out)
            for i in items { encode(i, into: &out) }
        }
        switch v {
        case .simple(let s): line(UInt8(ascii: "+"), s)
        case .error(let s):
            if s.utf8.contains(where: { $0 == 13 || $0 == 10 }) {  // only a bulk error holds these
                header(UInt8(ascii: "!"), s.utf8.count, into: &out)
                out += Array(s.utf8)
                out += [13, 10]
            } else {
                line(UInt8(ascii: "-"), s)
            }
        case .integer(let n): line(UInt8(ascii: ":"), String(n))
        case .bulk(let b):
            header(UInt8(ascii: "$"), b.count, into: &out)
            out += b
            out += [13, 10]
        case .null: line(UInt8(ascii: "_"), "")
        case .array(let a): aggregate(UInt8(ascii: "*"), a, count: a.count)
        case .boolean(let b): line(UInt8(ascii: "#"), b ? "t" : "f")
        case .double(let d):
            line(UInt8(ascii: ","), d.isNaN ? "nan" : d == .infinity ? "inf" : d == -.infinity ? "-inf" : "\(d)")
        case .bigNumber(let s): line(UInt8(ascii: "("), s)
        case .verbatim(let f, let t):
            header(UInt8(ascii: "="), t.count + 4, into: &out)
            out += Array(f.utf8.prefix(3))
            out.append(UInt8(ascii: ":"))
            out += t
            out += [13, 10]
        case .map(let a): aggregate(UInt8(ascii: "%"), a, count: a.count / 2)
        case .set(let a): aggregate(UInt8(ascii: "~"), a, count: a.count)
        case .push(let a): aggregate(UInt8(ascii: ">"), a, count: a.count)
        }
    }

    public static func encode(_ v: RESPValue) -> [UInt8] {
        var out: [UInt8] = []
        encode(v, into: &out)
        return out
    }
}
