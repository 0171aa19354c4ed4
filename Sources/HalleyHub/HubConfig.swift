import HalleyWebSocket

/// A webhook target of an app: where to POST, and which events (empty: all of
/// `channel_occupied`, `channel_vacated`, `member_added`, `member_removed`, `client_event`).
public struct Webhook: Sendable, Equatable {
    public var url: String
    public var events: Set<String>

    public init(url: String, events: Set<String> = []) {
        self.url = url
        self.events = events
    }

    public func wants(_ event: String) -> Bool { events.isEmpty || events.contains(event) }
}

/// One application: its id (digits: the Pusher SDKs refuse others), its public key, its
/// secret (signs API requests and private channels), and an optional bearer token for
/// `POST /publish`; with its own switches and limits (a configuration file sets them per app).
@dynamicMemberLookup
public struct App: Sendable, Equatable {
    /// What an app is: read and written as `app.id`, `app.secret`, … (dynamic members).
    public struct Settings: Sendable, Equatable {
        public var id: String
        public var key: String
        public var secret: String
        public var token: String?
        /// A disabled app refuses connections (`pusher:error` 4003) and API requests (403).
        public var enabled = true
        /// Whether clients may send `client-` events on private and presence channels. Default
        /// on (Laravel Echo's whisper needs them); Pusher's dashboard default is off.
        public var clientEvents = true
        /// Client events one connection may send per second. Default 10 (Pusher's limit); past
        /// it: `pusher:error` 4301.
        public var clientEventsPerSecond = 10
        /// Most connections (sessions) of this app on this node; 0: no limit but the node's.
        /// Past it: `pusher:error` 4004.
        public var maxConnections = 0
        /// Largest event `data`, bytes; nil: the hub's `maxEventBytes`.
        public var maxEventBytes: Int?
        /// Origins allowed for this app's clients; nil: the hub's `--origins`.
        public var origins: OriginPolicy?
        public var webhooks: [Webhook] = []
        /// The secret a reload replaced, still accepted until `previousSecretUntil` (wall-clock
        /// seconds): backends and auth endpoints move to the new secret without a window of
        /// refused signatures. Set by `Hub.reload`, never by the apps file.
        public var previousSecret: String?
        public var previousSecretUntil = 0

        public init(id: String, key: String, secret: String, token: String?) {
            self.id = id
            self.key = key
            self.secret = secret
            self.token = token
        }
    }

    /// The settings, shared by every copy of the app until one is changed (copy on write): a
    /// session holds its app as one reference, not the settings' 144 bytes (issue 16: memory
    /// per session), and passing an app along retains one object, not each string.
    @usableFromInline
    final class Box: @unchecked Sendable {
        // @unchecked Sendable: a box shared by two copies is never written (the setter copies it first).
        @usableFromInline var settings: Settings

        @usableFromInline init(_ settings: Settings) { self.settings = settings }
    }
    @usableFromInline var box: Box

    /// Inlinable: a constant key path then reads or writes the field directly.
    @inlinable
    public subscript<T>(dynamicMember field: WritableKeyPath<Settings, T>) -> T {
        get { box.settings[keyPath: field] }
        set {
            if !isKnownUniquelyReferenced(&box) { box = Box(box.settings) }
            box.settings[keyPath: field] = newValue
        }
    }

    public static func == (a: App, b: App) -> Bool { a.box === b.box || a.box.settings == b.box.settings }

    public init(id: String, key: String, secret: String, token: String? = nil) {
        box = Box(Settings(id: id, key: key, secret: secret, token: token))
    }

    /// The secrets a signature may use at `now`: the current one, and the previous one
    /// during a rotation's overlap.
    public func secrets(now: Int) -> [String] {
        let s = box  // (the settings read in place, not copied)
        if let p = s.settings.previousSecret, now < s.settings.previousSecretUntil { return [s.settings.secret, p] }
        return [s.settings.secret]
    }

    /// Equal but for a rotation's bookkeeping (what a reload compares).
    func sameConfiguration(as o: App) -> Bool {
        var a = self, b = o
        a.previousSecret = nil
        a.previousSecretUntil = 0
        b.previousSecret = nil
        b.previousSecretUntil = 0
        return a == b
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
    /// Seconds a session lingers when its client never came back after opening it (no second
    /// request, no acknowledgement, no message): anyone holding the public key can open
    /// sessions, and each costs a slot until it expires. Default 5 (a client that reconnects
    /// at once is back well within it).
    public var sessionLingerUnconfirmed = 5
    /// Accept a session's token in URLs (`?token=`, `?last_event_id=`, the WebSocket URL), the
    /// form halley.js used before 2026-12. Default off: URLs are written to access logs, and a
    /// logged token lets its reader resume the session. Tokens go in the `X-Halley-Token`
    /// header, the `Last-Event-ID` header, or a WebSocket's first message.
    public var allowTokensInURLs = false
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

    /// Most users in one presence channel. Default 100 (Pusher's); a new user past it gets
    /// `pusher:subscription_error` (status 403). Sessions of users already present still join.
    public var maxPresenceMembers = 100
    /// Largest `user_info` of a presence member, bytes. Default 1024 (Pusher: 1 KB); larger:
    /// `pusher:subscription_error` (status 400).
    public var maxPresenceUserInfoBytes = 1024

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
    /// Most events in one `POST /apps/{id}/batch_events`. Default 10 (Pusher's); more: 400.
    public var maxBatchEvents = 10
    /// Longest event name. Default 200 (Pusher: 200); longer: 400.
    public var maxEventNameLength = 200
    /// `activity_timeout` announced to Pusher clients, seconds. Default 120.
    public var activityTimeout = 120

    /// Seconds an app's previous secret is still accepted after a reload changed it. Default
    /// 600; 0: the new secret alone, at once.
    public var secretOverlap = 600

    /// Bearer token of `GET /stats` (every app); nil: that endpoint is off (each app can still
    /// read its own with a signed `GET /apps/{id}/stats`).
    public var adminToken: String?

    /// Origins allowed on WebSocket and the HTTP transports (CORS). Default: any.
    public var origins = OriginPolicy()
    /// `--redis`: nodes joined through this Redis (nil: one node, the memory broker).
    public var redis: RedisURL?
    /// `--cluster-address`: where the other nodes reach this one (`host:port`) to forward an
    /// HTTP session's request; default: the listening address, when it is not a wildcard.
    public var clusterAddress: String?
    /// `--node-id`: this node's name among the nodes (default: generated at start).
    public var nodeID = "n" + String(UInt32.random(in: 0...UInt32.max), radix: 36)

    public init() {}
}
