import HalleyCrypto
import HalleyProtocol

/// One event the hub reports to an app's webhooks (Pusher "Webhooks").
public enum WebhookEvent: Sendable, Equatable {
    /// A channel got its first subscriber.
    case channelOccupied(channel: String)
    /// A channel lost its last subscriber (debounced: see `WebhookPolicy.debounceMillis`).
    case channelVacated(channel: String)
    /// A user's first connection joined a presence channel.
    case memberAdded(channel: String, userID: String)
    /// A user's last connection left a presence channel (debounced).
    case memberRemoved(channel: String, userID: String)
    /// A client sent a `client-` event on a private or presence channel; `userID` on presence
    /// channels only.
    case clientEvent(channel: String, event: String, data: String, socketID: String, userID: String?)

    /// The names an app's `webhooks[].events` may list.
    public static let names: Set<String> = [
        "channel_occupied", "channel_vacated", "member_added", "member_removed", "client_event",
    ]

    /// What the event costs while it waits in a queue: its strings and about 64 bytes of
    /// bookkeeping (an estimate, for the byte bound; the body it becomes is a little larger).
    var queuedBytes: Int {
        switch self {
        case .channelOccupied(let c), .channelVacated(let c): return 64 + c.utf8.count
        case .memberAdded(let c, let u), .memberRemoved(let c, let u): return 64 + c.utf8.count + u.utf8.count
        case .clientEvent(let c, let e, let d, let s, let u):
            return 64 + c.utf8.count + e.utf8.count + d.utf8.count + s.utf8.count + (u?.utf8.count ?? 0)
        }
    }

    public var name: String {
        switch self {
        case .channelOccupied: return "channel_occupied"
        case .channelVacated: return "channel_vacated"
        case .memberAdded: return "member_added"
        case .memberRemoved: return "member_removed"
        case .clientEvent: return "client_event"
        }
    }

    /// The event's object in a webhook body, fields in Pusher's order.
    func write(into out: inout JSONObjectBuilder) {
        out.string("name", name)
        switch self {
        case .channelOccupied(let c), .channelVacated(let c):
            out.string("channel", c)
        case .memberAdded(let c, let u), .memberRemoved(let c, let u):
            out.string("channel", c)
            out.string("user_id", u)
        case .clientEvent(let c, let e, let d, let s, let u):
            out.string("channel", c)
            out.string("event", e)
            out.string("data", d)
            out.string("socket_id", s)
            if let u { out.string("user_id", u) }
        }
    }

    /// A webhook request body: `{"time_ms":…,"events":[…]}`.
    static func body(_ events: [WebhookEvent], timeMillis: Int64) -> [UInt8] {
        var out = Array("{\"time_ms\":\(timeMillis),\"events\":[".utf8)
        for (i, e) in events.enumerated() {
            if i > 0 { out.append(UInt8(ascii: ",")) }
            var o = JSONObjectBuilder()
            e.write(into: &o)
            out.append(contentsOf: o.closed)
        }
        out.append(contentsOf: "]}".utf8)
        return out
    }

    /// `X-Pusher-Signature`: hex HMAC-SHA256 of the body with the app's secret.
    static func signature(body: [UInt8], secret: String) -> String {
        Digest.hex(Digest.hmacSHA256(key: secret, data: body))
    }
}
