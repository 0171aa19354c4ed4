import HalleyCore
import HalleyLoop
import HalleyProtocol
import HalleyServer

/// What a publish gave one channel: its offset and epoch, and (when the broker counted them
/// while posting, under the channel's lock) this node's sessions that get it. A struct, not a
/// tuple: arrays of tuples are destroyed through the runtime's generic tuple witnesses.
package struct Posted: Sendable {
    package let offset: UInt64
    package let epoch: String
    package let sessions: Int?
}

/// Where a channel's messages are ordered and how they reach every node that has subscribers:
/// the hub publishes through it. `MemoryBroker` is the single node (offsets decided under the
/// channel's lock, as they always were); `RedisBroker` joins nodes through Redis (offsets from
/// a Redis function, messages back to every node by pub/sub). One code path: the hub posts a
/// channel's messages to its loops the same way whichever broker ordered them.
package protocol Broker: AnyObject, Sendable {
    /// `memory` or `redis` (for `/metrics` and logs).
    var kind: String { get }
    /// Publishes can be accepted now.
    var isUp: Bool { get }
    /// Whether the node's own channel state decides offsets and epochs (the memory broker):
    /// when false, a channel the node holds no state of is asked of the broker first.
    var ordersLocally: Bool { get }
    /// Starts (connections on their loops); called by `Hub.attach`.
    func start(hub: Hub, loops: [EventLoop])
    /// Gives each message its channel's next offset and delivers it on every node (this one
    /// included); `then` runs on loop `loop` with each channel's offset and epoch, in order, or
    /// the reason nothing can be promised (answered 503).
    func publish(
        _ messages: [BrokerWire.Message], hub: Hub, loop: Int,
        then: @escaping (Result<[Posted], RedisError>) -> Void)
    /// The epoch and last offset of a channel (creating its epoch when it has none), for a
    /// subscription to a channel this node holds no state of. `then` runs on loop `loop`.
    func channelMeta(
        _ key: ChannelKey, loop: Int, then: @escaping (Result<(epoch: String, offset: UInt64), RedisError>) -> Void)
    /// Where node `n` is reached (`host:port`), nil when no live node has that number (its
    /// heartbeat expired). `then` runs on loop `loop`.
    func nodeAddress(_ n: Int, loop: Int, then: @escaping (String?) -> Void)
    /// The cluster's secret (created in Redis by the first node): a request forwarded by a node
    /// carries it, so the owner may take the client address the forwarding node saw. Nil on one
    /// node or before it is read.
    var forwardingSecret: String? { get }
    /// The node that owns a pusher-js HTTP session (by its URL path), for a request that landed
    /// elsewhere; `then(nil)`: none known. `then` runs on loop `loop`.
    func pusherSessionOwner(_ path: String, loop: Int, then: @escaping (Int?) -> Void)
    /// Records (`node` > 0) or forgets (0) the owner of a pusher-js HTTP session. On loop `loop`.
    func setPusherSessionOwner(_ path: String, node: Int, loop: Int)
    /// Offsets `from...to` of the channel's stream in `epoch` (what Redis still has of them, in
    /// order), nil when it cannot be read. `then` runs on loop `loop`.
    func readStream(
        _ key: ChannelKey, epoch: String, from: UInt64, to: UInt64, loop: Int,
        then: @escaping ([BrokerWire.Message]?) -> Void)
    /// With Redis: adds a presence member to the cluster's roster (`member_added` to every node
    /// when its user is new there); `then` with whether it was the user's first session in the
    /// cluster and the roster (`{"ids":…,"hash":…,"count":N}`), or nil when the channel is full.
    func join(
        _ key: ChannelKey, session: SessionID, member: PresenceMember, max: Int, loop: Int,
        then: @escaping (Result<(first: Bool, roster: [UInt8])?, RedisError>) -> Void)
    /// Takes a presence member out of the cluster's roster (`member_removed` to every node after
    /// the user's last session); `then` with the user when that was its last.
    func leave(_ key: ChannelKey, session: SessionID, loop: Int, then: @escaping (String?) -> Void)
    /// With Redis: the users on a presence channel in the cluster, sorted; nil when Redis
    /// cannot answer. `then` runs on loop `loop`.
    func presenceUsers(_ key: ChannelKey, loop: Int, then: @escaping ([String]?) -> Void)
    /// With Redis: `delta` subscriptions of this node on the channel; `then` with +1 / -1 when
    /// that made the channel occupied / vacated in the cluster (0 otherwise, nil: no answer).
    func occupy(_ key: ChannelKey, delta: Int, loop: Int, then: @escaping (Int?) -> Void)
    /// With Redis: the channel's subscriptions in the cluster.
    func subscriptions(_ key: ChannelKey, loop: Int, then: @escaping (Int?) -> Void)
    /// With Redis: the app's occupied channels in the cluster (prefix-filtered, sorted).
    func occupiedChannels(
        app: String, prefix: String, loop: Int,
        then: @escaping ([(name: String, subscriptions: Int, users: Int)]?) -> Void)
    /// `/metrics` lines.
    func metricsText() -> String
}

/// The single node: the hub's channel table orders every message.
package final class MemoryBroker: Broker {
    package init() {}
    package var kind: String { "memory" }
    package var isUp: Bool { true }
    package var ordersLocally: Bool { true }
    package func start(hub: Hub, loops: [EventLoop]) {}

    package func publish(
        _ messages: [BrokerWire.Message], hub: Hub, loop: Int,
        then: (Result<[Posted], RedisError>) -> Void
    ) {
        then(.success(hub.postLocally(messages)))
    }

    package func channelMeta(
        _ key: ChannelKey, loop: Int, then: (Result<(epoch: String, offset: UInt64), RedisError>) -> Void
    ) {
        then(.failure(.unavailable("the memory broker holds no channels of its own")))
    }

    package func nodeAddress(_ n: Int, loop: Int, then: (String?) -> Void) { then(nil) }
    package var forwardingSecret: String? { nil }
    package func pusherSessionOwner(_ path: String, loop: Int, then: (Int?) -> Void) { then(nil) }
    package func setPusherSessionOwner(_ path: String, node: Int, loop: Int) {}
    package func join(
        _ key: ChannelKey, session: SessionID, member: PresenceMember, max: Int, loop: Int,
        then: (Result<(first: Bool, roster: [UInt8])?, RedisError>) -> Void
    ) { then(.failure(.unavailable("one node: presence is the hub's own"))) }
    package func leave(_ key: ChannelKey, session: SessionID, loop: Int, then: (String?) -> Void) { then(nil) }
    package func presenceUsers(_ key: ChannelKey, loop: Int, then: ([String]?) -> Void) { then(nil) }
    package func occupy(_ key: ChannelKey, delta: Int, loop: Int, then: (Int?) -> Void) { then(0) }
    package func subscriptions(_ key: ChannelKey, loop: Int, then: (Int?) -> Void) { then(nil) }
    package func occupiedChannels(
        app: String, prefix: String, loop: Int, then: ([(name: String, subscriptions: Int, users: Int)]?) -> Void
    ) { then(nil) }
    package func readStream(
        _ key: ChannelKey, epoch: String, from: UInt64, to: UInt64, loop: Int, then: ([BrokerWire.Message]?) -> Void
    ) { then(nil) }

    package func metricsText() -> String { brokerMetrics(up: true, failures: 0, filled: 0, lost: 0) }
}

/// The broker's `/metrics` families (the same with either broker, so that dashboards need not
/// know which one runs).
func brokerMetrics(up: Bool, failures: Int, filled: Int, lost: Int, moved: Int = 0, ask: Int = 0) -> String {
    var out = Metrics.family(
        "halley_broker_up", "gauge",
        "1 when publishes can be accepted: always with one node; with Redis, every loop's connection ready and the pub/sub connection subscribed.",
        [("", up ? 1 : 0)])
    out += Metrics.family(
        "halley_broker_publish_failures_total", "counter",
        "Publishes answered 503 because Redis could not take them (unreachable or no answer in time).",
        [("", failures)])
    out += Metrics.family(
        "halley_broker_gap_messages_total", "counter",
        "Messages this node missed on Redis pub/sub (a reconnect) and read back from the channel's stream (filled), or found gone from it (lost).",
        [("{result=\"filled\"}", filled), ("{result=\"lost\"}", lost)])
    out += Metrics.family(
        "halley_broker_redirections_total", "counter",
        "Redis Cluster redirections followed: MOVED (a slot moved to another master: the map is read again) and ASK (a slot being moved).",
        [("{kind=\"moved\"}", moved), ("{kind=\"ask\"}", ask)])
    return out
}
