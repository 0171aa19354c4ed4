import HalleyWebSocket

/// One application: its id (digits: the Pusher SDKs refuse others), its public key, its
/// secret (signs API requests and private channels), and an optional bearer token for
/// `POST /publish`.
public struct App: Sendable, Equatable {
    public var id: String
    public var key: String
    public var secret: String
    public var token: String?

    public init(id: String, key: String, secret: String, token: String? = nil) {
        self.id = id
        self.key = key
        self.secret = secret
        self.token = token
    }

    /// The development app used when none is configured.
    public static let development = App(id: "1", key: "app-key", secret: "app-secret")
}

/// What a session does when its buffer bound is hit.
public enum SlowConsumerPolicy: String, Sendable {
    /// End the session: WebSocket close 4100; HTTP transports learn it on their next request.
    case close
    /// Skip messages while the buffer is full; then send `halley:gap` with the offsets lost.
    case gap
}

/// The hub's limits and timers, each with its default.
public struct HubConfig: Sendable {
    public var apps: [App] = [.development]

    /// Seconds a resumable session outlives its transport. Default 30.
    public var sessionLinger = 30
    /// Bytes of unacknowledged messages a resumable session keeps (and bytes a plain
    /// WebSocket session may have unwritten). Default 1 MiB: a few seconds of a busy channel
    /// for a client on a slow link. Past it: `slowConsumer`.
    public var sessionBufferBytes = 1 << 20
    public var slowConsumer = SlowConsumerPolicy.close
    /// Most sessions (live and lingering) on this node. Default 100,000; past it new
    /// sessions are refused (WebSocket: `pusher:error` 4100; HTTP: 503).
    public var maxSessions = 100_000
    /// Most channels one session may subscribe to. Default 100.
    public var maxSubscriptionsPerSession = 100

    /// Messages kept per channel for recovery. Default 100.
    public var historySize = 100
    /// Seconds a message stays in its channel's history. Default 300.
    public var historySeconds = 300
    /// Seconds a `cache-` channel keeps its last message. Default 1800 (Pusher: 30 min).
    public var cacheSeconds = 1800

    /// Seconds a long-poll waits for messages. Default 25 (under the 30 s many proxies allow).
    public var pollTimeout = 25
    /// Seconds of silence on an SSE stream before a heartbeat. Default 25.
    public var heartbeat = 25
    /// Bytes one SSE stream carries before the hub ends it and the client reopens it (so
    /// proxies that buffer whole responses pass it on, and the client acknowledges).
    /// Default 512 KiB.
    public var streamMaxBytes = 512 * 1024
    /// Bytes of the comment that opens an SSE stream. Default 2048 (enough for the proxies
    /// and old browsers that wait for a first kilobyte or two).
    public var ssePadding = 2048
    /// `retry:` of SSE streams, milliseconds. Default 1000.
    public var sseRetryMillis = 1000

    /// Largest `data` of one published message, bytes (after base64 decoding). Default
    /// 10 KiB, Pusher's limit; larger: 413.
    public var maxEventBytes = 10 * 1024
    /// Most channels in one publish. Default 100 (Pusher: 100); more: 400.
    public var maxChannelsPerPublish = 100
    /// Longest event name. Default 200 (Pusher: 200); longer: 400.
    public var maxEventNameLength = 200
    /// `activity_timeout` announced to Pusher clients, seconds. Default 120.
    public var activityTimeout = 120

    /// Origins allowed on WebSocket and the HTTP transports (CORS). Default: any.
    public var origins = OriginPolicy()

    public init() {}
}
