import HalleyCore
import HalleyProtocol

/// One message as the hub sends it, encoded once and shared by every session (and loop) it
/// goes to. Immutable, hence Sendable.
public final class OutMessage: @unchecked Sendable {
    /// The JSON object without its closing brace (see `Wire`).
    package let prefix: SharedBytes
    /// For a binary payload: the header JSON (open) and the raw bytes, for sessions that take
    /// binary WebSocket frames. `prefix` then carries the payload in base64.
    package let binaryHeader: SharedBytes?
    package let binaryPayload: SharedBytes?
    /// The channel and offset of a published message; nil / 0 for session messages.
    let channel: String?
    let offset: UInt64
    /// `channel != nil`, read without touching the string (a check per delivery).
    let isChannelMessage: Bool
    /// Bytes this message counts for in a session's buffer.
    let size: Int

    convenience init(
        prefix: [UInt8], channel: String? = nil, offset: UInt64 = 0, binaryHeader: [UInt8]? = nil,
        binaryPayload: [UInt8]? = nil
    ) {
        self.init(
            prefix: SharedBytes(prefix), channel: channel, offset: offset,
            binaryHeader: binaryHeader.map { SharedBytes($0) },
            binaryPayload: binaryPayload.map { SharedBytes($0) })
    }

    /// A published message: `prefix` and `binaryHeader` (when there is one) each followed by
    /// `,"halley:offset":N`, written straight into the shared buffers (appending to the arrays
    /// first copied them: the broker's message holds them too).
    convenience init(
        publishedPrefix prefix: [UInt8], channel: String, offset: UInt64, binaryHeader: [UInt8]?,
        binaryPayload: [UInt8]?
    ) {
        let field = { (p: UnsafeMutableRawPointer) in Wire.offsetField(offset, into: p) }
        self.init(
            prefix: SharedBytes(prefix, maxTail: Wire.offsetFieldMax, tail: field), channel: channel, offset: offset,
            binaryHeader: binaryHeader.map { SharedBytes($0, maxTail: Wire.offsetFieldMax, tail: field) },
            binaryPayload: binaryPayload.map { SharedBytes($0) })
    }

    private init(
        prefix: SharedBytes, channel: String?, offset: UInt64, binaryHeader: SharedBytes?, binaryPayload: SharedBytes?
    ) {
        self.prefix = prefix
        self.channel = channel
        self.isChannelMessage = channel != nil
        self.offset = offset
        self.size = prefix.count + 24
        self.binaryHeader = binaryHeader
        self.binaryPayload = binaryPayload
    }
}

/// A message published to a channel.
final class Publication: @unchecked Sendable {
    // Sendable: immutable.
    let message: OutMessage
    let offset: UInt64
    /// Monotonic milliseconds of publishing (history age).
    let time: Int64
    /// A session that must not get it (the publisher's own, `socket_id`).
    let exclude: SessionID?
    /// Monotonic nanoseconds of publishing (the delivery-latency histogram).
    let publishedNanos = Clock.monotonicNanos()
    /// The first message of a new epoch (Redis restarted the channel): loops forget the
    /// offsets their subscribers joined at.
    let restarts: Bool

    init(message: OutMessage, offset: UInt64, time: Int64, exclude: SessionID?, restarts: Bool = false) {
        self.message = message
        self.offset = offset
        self.time = time
        self.exclude = exclude
        self.restarts = restarts
    }
}

/// A session id: Pusher's `socket_id` is two numbers joined by a dot. The first one also
/// names the loop that owns the session (`first % loops`).
public struct SessionID: Hashable, Sendable, CustomStringConvertible {
    public let a: UInt32
    public let b: UInt32

    public init(a: UInt32, b: UInt32) {
        self.a = a
        self.b = b
    }

    /// Parses `digits.digits` from the bytes (runs for every HTTP request of a session: over
    /// the string's own bytes, where walking its UTF-8 view cost about 2% of a long-poll).
    public init?(_ s: String) {
        var s = s  // `withUTF8` is mutating; a native string is not copied
        guard let (a, b) = s.withUTF8({ Self.parse($0) }) else { return nil }
        self.a = a
        self.b = b
    }

    static func parse(_ bytes: UnsafeBufferPointer<UInt8>) -> (UInt32, UInt32)? {
        var a: UInt64 = 0, b: UInt64 = 0
        var digitsA = 0, digitsB = 0
        var second = false
        for c in bytes {
            if c == UInt8(ascii: ".") {
                if second { return nil }
                second = true
                continue
            }
            guard c >= 48 && c <= 57 else { return nil }
            if second {
                b = b * 10 + UInt64(c - 48)
                digitsB += 1
            } else {
                a = a * 10 + UInt64(c - 48)
                digitsA += 1
            }
            if digitsA > 10 || digitsB > 10 { return nil }
        }
        guard second, digitsA > 0, digitsB > 0, a <= UInt64(UInt32.max), b <= UInt64(UInt32.max) else { return nil }
        return (UInt32(a), UInt32(b))
    }

    public var description: String { "\(a).\(b)" }

    package func owner(loops: Int) -> Int { Int(a) % loops }

    /// With Redis: the number of the node that owns the session (the millions of the second
    /// part; 0: a session opened before its node had a number, served where it lands).
    package var node: Int { Int(b / 1_000_000) }

    /// The highest node number (`node` must fit the second part: 4,293,999,999 < 2^32).
    package static let maxNode = 4293

    /// `node`: nil on a single node (the second part all random); with Redis, the node's number.
    static func random(loop: Int, loops: Int, node: Int? = nil) -> SessionID {
        let n = UInt32(loops)
        let base = UInt32.random(in: 1...(UInt32.max / n - 1))
        let b: UInt32
        if let node {
            b = UInt32(node) * 1_000_000 + UInt32.random(in: (node == 0 ? 1 : 0)..<1_000_000)
        } else {
            b = UInt32.random(in: 1...999_999_999)
        }
        return SessionID(a: base * n + UInt32(loop), b: b)
    }
}

/// 128 random bits that let a client resume its session.
package struct SessionToken: Equatable {
    let hi: UInt64
    let lo: UInt64

    static func random() -> SessionToken {
        SessionToken(hi: .random(in: 0...UInt64.max), lo: .random(in: 0...UInt64.max))
    }

    init(hi: UInt64, lo: UInt64) {
        self.hi = hi
        self.lo = lo
    }

    /// 32 hex digits, read from the string's own bytes (every request of a session).
    init?(_ s: String) {
        var s = s  // `withUTF8` is mutating; a native string is not copied
        guard let (h, l) = s.withUTF8({ Self.parse($0) }) else { return nil }
        hi = h
        lo = l
    }

    static func parse(_ bytes: UnsafeBufferPointer<UInt8>) -> (UInt64, UInt64)? {
        guard bytes.count == 32 else { return nil }
        var h: UInt64 = 0, l: UInt64 = 0
        for i in 0..<32 {
            let c = bytes[i]
            let d: UInt64
            switch c {
            case 48...57: d = UInt64(c - 48)
            case 97...102: d = UInt64(c - 87)
            case 65...70: d = UInt64(c - 55)
            default: return nil
            }
            if i < 16 { h = h << 4 | d } else { l = l << 4 | d }
        }
        return (h, l)
    }

    package var description: String {
        func hex(_ v: UInt64) -> String {
            let s = String(v, radix: 16)
            return String(repeating: "0", count: 16 - s.count) + s
        }
        return hex(hi) + hex(lo)
    }
}
