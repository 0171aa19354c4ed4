/// The SockJS-dialect framing of pusher-js's HTTP transports (`xhr_streaming`, `xhr` polling,
/// `xhr_send`; pusher-js `src/core/http/http_socket.ts`, `http_request.ts`). I/O-free: bytes
/// in, values or bytes out.
///
/// The receive side is a sequence of lines, one frame each, every one ending with `\n`
/// (pusher-js splits `responseText` at `\n` and acts on the first character):
/// - `o` (optionally followed by a JSON object): the session is open;
/// - `a[...]`: a JSON array of JSON *strings*, each one a serialized Pusher message;
/// - `m...`: one JSON string, one message (understood by pusher-js; the hub sends `a`);
/// - `h...`: a heartbeat (pusher-js reads only the first character: the 2 KiB prelude of
///   `h`s is one heartbeat to it);
/// - `c[code,"reason"]`: the session is closed, with a Pusher close code.
///
/// The send side (`xhr_send`) is a JSON array of JSON strings (`[]` is pusher-js's ping).
public enum SockJS {
    public static let open: [UInt8] = [UInt8(ascii: "o"), 0x0A]
    public static let heartbeat: [UInt8] = [UInt8(ascii: "h"), 0x0A]
    /// `a[`: what comes before the elements of a message frame.
    public static let arrayHead: [UInt8] = [UInt8(ascii: "a"), UInt8(ascii: "[")]
    /// `]\n`: what ends a message frame.
    public static let arrayTail: [UInt8] = [UInt8(ascii: "]"), 0x0A]

    /// The streaming prelude: `count` `h` and a newline (SockJS writes 2048: "IE requires 2KB
    /// prefix"; it also pushes the stream through proxies that wait for a first kilobyte or
    /// two). pusher-js takes it for one heartbeat, ignored before `o`.
    public static func prelude(_ count: Int) -> [UInt8] {
        var out = [UInt8](repeating: UInt8(ascii: "h"), count: max(1, count))
        out.append(0x0A)
        return out
    }

    /// `c[code,"reason"]\n`.
    public static func close(code: UInt16, reason: String) -> [UInt8] {
        var out: [UInt8] = Array("c[\(code),".utf8)
        Array(reason.utf8).withUnsafeBytes { appendQuoted($0, to: &out) }
        out += arrayTail
        return out
    }

    /// `a[e1,e2,...]\n` from elements already quoted (`quoted`).
    public static func messages(_ quotedElements: [[UInt8]]) -> [UInt8] {
        var out = arrayHead
        for (k, e) in quotedElements.enumerated() {
            if k > 0 { out.append(UInt8(ascii: ",")) }
            out += e
        }
        out += arrayTail
        return out
    }

    /// `m"..."\n`: one message, quoted.
    public static func message(_ json: [UInt8]) -> [UInt8] {
        var out: [UInt8] = [UInt8(ascii: "m")]
        json.withUnsafeBytes { appendQuoted($0, to: &out) }
        out.append(0x0A)
        return out
    }

    // MARK: quoting

    /// `json` (UTF-8) as a JSON string literal in **ASCII only**: `"` `\` and control
    /// characters escaped (RFC 8259 §7), every other non-ASCII character as `\uXXXX` (a
    /// surrogate pair above U+FFFF), bytes that are not UTF-8 as `\ufffd`.
    ///
    /// Why ASCII: pusher-js ends a stream after `responseText.length` (UTF-16 code units)
    /// passes 256 KiB and opens the next one; with an ASCII body the hub's byte count is that
    /// length exactly, so it knows when the client rotates (and stops writing to a stream
    /// the client is about to abort: nothing is lost in the switch).
    public static func quoted(_ json: UnsafeRawBufferPointer) -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(json.count + json.count / 8 + 2)
        appendQuoted(json, to: &out)
        return out
    }

    public static func quoted(_ json: [UInt8]) -> [UInt8] { json.withUnsafeBytes { quoted($0) } }

    static let hex: [UInt8] = Array("0123456789abcdef".utf8)

    public static func appendQuoted(_ s: UnsafeRawBufferPointer, to out: inout [UInt8]) {
        out.append(UInt8(ascii: "\""))
        func u(_ v: UInt32) {
            out.append(UInt8(ascii: "\\")); out.append(UInt8(ascii: "u"))
            out.append(hex[Int(v >> 12 & 15)]); out.append(hex[Int(v >> 8 & 15)])
            out.append(hex[Int(v >> 4 & 15)]); out.append(hex[Int(v & 15)])
        }
        let n = s.count
        var i = 0
        while i < n {
            let c = s[i]
            if c < 0x80 {
                // Runs of plain ASCII are the common case (Pusher JSON is mostly ASCII).
                switch c {
                case UInt8(ascii: "\""), UInt8(ascii: "\\"): out.append(UInt8(ascii: "\\")); out.append(c)
                case 0x0A: out.append(UInt8(ascii: "\\")); out.append(UInt8(ascii: "n"))
                case 0x0D: out.append(UInt8(ascii: "\\")); out.append(UInt8(ascii: "r"))
                case 0x09: out.append(UInt8(ascii: "\\")); out.append(UInt8(ascii: "t"))
                case 0..<0x20, 0x7F: u(UInt32(c))
                default: out.append(c)
                }
                i += 1
                continue
            }
            // A UTF-8 sequence (RFC 3629 §4): its length from the lead byte, then checked.
            var len = 0
            var v: UInt32 = 0
            var minimum: UInt32 = 0
            switch c {
            case 0xC2...0xDF: len = 2; v = UInt32(c & 0x1F); minimum = 0x80
            case 0xE0...0xEF: len = 3; v = UInt32(c & 0x0F); minimum = 0x800
            case 0xF0...0xF4: len = 4; v = UInt32(c & 0x07); minimum = 0x10000
            default: len = 0
            }
            var ok = len > 0 && i + len <= n
            if ok {
                for k in 1..<len {
                    let b = s[i + k]
                    guard b & 0xC0 == 0x80 else { ok = false; break }
                    v = v << 6 | UInt32(b & 0x3F)
                }
                ok = ok && v >= minimum && v <= 0x10FFFF && !(0xD800...0xDFFF).contains(v)
            }
            guard ok else {
                u(0xFFFD)
                i += 1
                continue
            }
            if v >= 0x10000 {
                let w = v - 0x10000
                u(0xD800 | w >> 10)
                u(0xDC00 | w & 0x3FF)
            } else {
                u(v)
            }
            i += len
        }
        out.append(UInt8(ascii: "\""))
    }

    // MARK: the send side

    public enum SendBodyError: Error, Equatable, CustomStringConvertible {
        case empty
        case json(JSONError)
        /// Not an array, or an element that is not a string.
        case shape(String)

        public var description: String {
            switch self {
            case .empty: return "Payload expected."
            case .json(let e): return "Broken JSON encoding: \(e)"
            case .shape(let s): return s
            }
        }
    }

    /// The messages of an `xhr_send` body: a JSON array of JSON strings, each one a Pusher
    /// message (`["{\"event\":\"pusher:subscribe\",...}"]`). `[]` (pusher-js's ping) gives
    /// none.
    public static func parseSendBody(_ body: [UInt8]) throws(SendBodyError) -> [String] {
        guard body.contains(where: { $0 != 0x20 && $0 != 0x0A && $0 != 0x0D && $0 != 0x09 }) else { throw .empty }
        let v: JSONValue
        do {
            v = try JSONParser.parse(body)
        } catch {
            throw .json(error)
        }
        guard let a = v.array else { throw .shape("expected a JSON array of strings") }
        var out: [String] = []
        out.reserveCapacity(a.count)
        for e in a {
            guard let s = e.string else {
                throw .shape(
                    "expected a JSON array of strings, found \(String(decoding: e.serialized.prefix(40), as: UTF8.self))"
                )
            }
            out.append(s)
        }
        return out
    }
}

/// One frame of the receive side.
public enum SockJSFrame: Equatable, Sendable {
    /// `o`, with its optional JSON object (pusher-js uses only `hostname`).
    case open(JSONValue?)
    case heartbeat
    /// `a[...]` or `m...`: the messages (each a serialized Pusher message).
    case messages([String])
    case close(code: Int, reason: String)
}

/// Reads the receive side the way pusher-js does (`HTTPRequest.advanceBuffer`): frames are
/// lines; bytes after the last `\n` wait for the rest. For the tests and load tools that play
/// pusher-js; feed it any split of the stream.
public struct SockJSFrameReader {
    public enum ReadError: Error, Equatable {
        /// A line that is not a frame (empty, unknown type, or a payload that does not parse).
        case badFrame(String)
    }

    var pending: [UInt8] = []
    /// Every byte fed so far: pusher-js's `responseText.length` for an ASCII stream.
    public private(set) var totalBytes = 0

    public init() {}

    /// True when every byte fed is in a complete line (what pusher-js waits for before it
    /// rotates a long stream).
    public var atLineBoundary: Bool { pending.isEmpty }

    public mutating func feed(_ bytes: some Collection<UInt8>) throws(ReadError) -> [SockJSFrame] {
        totalBytes += bytes.count
        pending.append(contentsOf: bytes)
        var frames: [SockJSFrame] = []
        var start = 0
        while let nl = pending[start...].firstIndex(of: 0x0A) {
            let line = Array(pending[start..<nl])
            start = nl + 1
            frames.append(try Self.parse(line: line))
        }
        pending.removeFirst(start)
        return frames
    }

    /// One line without its `\n`.
    public static func parse(line: [UInt8]) throws(ReadError) -> SockJSFrame {
        guard let type = line.first else { throw .badFrame("empty line") }
        let rest = Array(line.dropFirst())
        func json() throws(ReadError) -> JSONValue {
            do { return try JSONParser.parse(rest) } catch {
                throw .badFrame("\(Character(Unicode.Scalar(type))): \(error)")
            }
        }
        switch type {
        case UInt8(ascii: "o"):
            return .open(rest.isEmpty ? nil : try json())
        case UInt8(ascii: "h"):
            return .heartbeat
        case UInt8(ascii: "a"):
            guard let a = try json().array else { throw .badFrame("a: not an array") }
            var out: [String] = []
            for e in a {
                guard let s = e.string else { throw .badFrame("a: an element that is not a string") }
                out.append(s)
            }
            return .messages(out)
        case UInt8(ascii: "m"):
            guard let s = try json().string else { throw .badFrame("m: not a string") }
            return .messages([s])
        case UInt8(ascii: "c"):
            // A close code is at most 4 digits; a larger number (found by fuzzing: it trapped
            // converting to Int) is a bad frame.
            guard let a = try json().array, a.count == 2, let code = a[0].uint64, code <= 65535,
                let reason = a[1].string
            else {
                throw .badFrame("c: expected [code, reason]")
            }
            return .close(code: Int(code), reason: reason)
        default:
            throw .badFrame("unknown frame type \(type)")
        }
    }
}
