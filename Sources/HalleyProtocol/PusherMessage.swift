/// A message from a client (Pusher protocol v7: `{"event":…,"data":…,"channel":…}`).
/// `data` is kept as parsed: pusher-js sends an object for `pusher:subscribe`, client events
/// may carry anything.
public struct ClientMessage: Equatable, Sendable {
    public var event: String
    public var channel: String?
    public var data: JSONValue?
    /// `"halley:binary": true`: `data` is base64 of a binary payload (a client event that
    /// halley.js sends from an `ArrayBuffer`, typed array or `Blob`).
    public var binary: Bool

    public init(event: String, channel: String? = nil, data: JSONValue? = nil, binary: Bool = false) {
        self.event = event
        self.channel = channel
        self.data = data
        self.binary = binary
    }

    public enum DecodeError: Error, Equatable {
        case json(JSONError)
        case notAnObject
        case noEvent
    }

    public static func decode(_ bytes: UnsafeRawBufferPointer) throws(DecodeError) -> ClientMessage {
        let v: JSONValue
        do { v = try JSONParser.parse(bytes) } catch { throw .json(error) }
        return try decode(v)
    }

    public static func decode(_ v: JSONValue) throws(DecodeError) -> ClientMessage {
        guard case .object(let o) = v else { throw .notAnObject }
        guard let e = o["event"]?.string, !e.isEmpty else { throw .noEvent }
        var data = o["data"]
        // Some clients send data as a JSON string even for protocol events: unwrap it.
        if e.hasPrefix("pusher:") || e.hasPrefix("halley:"), case .string(let s)? = data,
            let inner = try? JSONParser.parse(Array(s.utf8)), inner.object != nil
        {
            data = inner
        }
        return ClientMessage(
            event: e, channel: o["channel"]?.string, data: data, binary: o["halley:binary"] == .bool(true))
    }
}

/// Pusher close and error codes (Pusher Channels protocol, "Error Codes"), plus Halley's.
public enum PusherErrorCode {
    /// 4000–4099: the client must not reconnect as is.
    public static let applicationOnlyAcceptsSSL: UInt16 = 4000
    public static let applicationDoesNotExist: UInt16 = 4001
    public static let applicationDisabled: UInt16 = 4003
    public static let overConnectionQuota: UInt16 = 4004
    public static let pathNotFound: UInt16 = 4005
    public static let invalidVersion: UInt16 = 4006
    public static let unsupportedProtocolVersion: UInt16 = 4007
    public static let noProtocolVersion: UInt16 = 4008
    public static let connectionUnauthorized: UInt16 = 4009
    /// Halley: a session token in the WebSocket URL, refused without `--allow-tokens-in-urls`
    /// (the token goes in the first message, `halley:resume`).
    public static let tokenInURL: UInt16 = 4010
    /// 4100–4199: reconnect after a back-off. Halley closes a slow consumer's session with
    /// it (policy `close`): its buffer overflowed and it must recover from history.
    public static let overCapacity: UInt16 = 4100
    /// 4200–4299: reconnect at once.
    public static let genericReconnect: UInt16 = 4200
    public static let pongNotReceived: UInt16 = 4201
    public static let closedAfterInactivity: UInt16 = 4202
    /// 4300+: other errors.
    public static let clientEventRejected: UInt16 = 4301
}

/// Channel names and kinds (Pusher: "Channel naming conventions").
public enum ChannelName {
    /// Longest name. Pusher's limit: 164 characters.
    public static let maxLength = 164

    public enum Kind: Equatable, Sendable {
        case `public`
        /// `cache-…`: the last event is replayed to new subscribers.
        case cache
        case `private`
        case presence
    }

    /// Why a name is refused, or nil when it is valid.
    public static func problem(_ name: String) -> String? {
        let u = name.utf8
        if u.isEmpty { return "channel name is empty" }
        if u.count > maxLength { return "channel name is longer than \(maxLength) characters" }
        for c in u where !allowed(c) {
            return "channel name has a character outside A-Z a-z 0-9 - _ = @ , . ;"
        }
        return nil
    }

    @inline(__always) static func allowed(_ c: UInt8) -> Bool {
        switch c {
        case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"),
            UInt8(ascii: "0")...UInt8(ascii: "9"):
            return true
        case UInt8(ascii: "-"), UInt8(ascii: "_"), UInt8(ascii: "="), UInt8(ascii: "@"), UInt8(ascii: ","),
            UInt8(ascii: "."), UInt8(ascii: ";"):
            return true
        default:
            return false
        }
    }

    public static func kind(_ name: String) -> Kind {
        if name.hasPrefix("presence-") { return .presence }
        if name.hasPrefix("private-") { return .private }
        if name.hasPrefix("cache-") { return .cache }
        return .public
    }
}
