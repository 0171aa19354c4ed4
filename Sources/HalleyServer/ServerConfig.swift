import HalleyHTTP

/// Everything the HTTP server core can be told, with its default. The executable fills it
/// from flags and `HALLEY_*` variables.
public struct ServerConfig: Sendable {
    public var host = "127.0.0.1"
    /// 0 picks a free port (tests).
    public var port = 8080
    /// Event loops, one thread each. Default: the number of cores.
    public var threads = 0
    /// Root of the static files; nil serves none.
    public var publicRoot: String? = "public"
    /// `GET /metrics` on its own listener at this port; nil: off.
    public var metricsPort: Int? = nil
    public var metricsHost = "127.0.0.1"

    public var http = HTTPLimits()
    /// Seconds from a request's first byte to its complete head. Default 10; slower: 408 and
    /// close (slowloris).
    public var headerTimeout = 10
    /// Seconds a request body may stall without a byte. Default 30; then 408 and close.
    public var bodyTimeout = 30
    /// Seconds an idle keep-alive connection is kept. Default 60; then closed quietly.
    public var keepAliveTimeout = 60
    /// Seconds a blocked write may make no progress. Default 60; then the connection closes.
    public var sendTimeout = 60
    /// Most open client connections. Default: the open-file limit less 100 for listeners,
    /// files and logs. At the limit the listeners pause; the kernel backlog holds newcomers.
    public var maxConnections = 0
    /// Seconds a graceful shutdown waits for responses in flight. Default 10.
    public var shutdownGrace = 10
    /// Files up to this size are kept in memory (revalidated once a second); larger ones are
    /// sent with sendfile. Default 1 MiB.
    public var staticCacheMaxFileBytes = 1024 * 1024
    /// `Cache-Control` for static files. Default `no-cache`: browsers revalidate with the
    /// ETag every time, so a new halley.js is picked up at once, for the cost of a 304.
    public var staticCacheControl = "no-cache"

    public var webSocket = WebSocketConfig()
    /// Per client address: connections, session opens, lingering sessions; trusted proxies.
    public var clientLimits = ClientLimitConfig()

    /// TLS: PEM certificate (with its chain) and key. Set both to serve https and wss: on
    /// `tlsPort` beside plain HTTP on `port`, or, without `tlsPort`, on `port` itself.
    public var tlsCertFile: String?
    public var tlsKeyFile: String?
    public var tlsPort: Int?
    /// Seconds from accept to a finished TLS handshake, else the connection is closed.
    /// Default 10.
    public var tlsHandshakeTimeout = 10
    /// TLS 1.3 with an AEAD suite: after OpenSSL's handshake, records are sealed and opened
    /// by Halley's own record layer (`TLS13Records`) rather than `SSL_read`/`SSL_write`.
    /// Default on; off (`--tls-records openssl`): OpenSSL throughout.
    public var tlsOwnRecords = true

    public init() {}
}

/// WebSocket limits and timers, each with its default.
public struct WebSocketConfig: Sendable {
    /// Largest message, after inflation. Default 1 MiB; larger: close 1009.
    public var maxMessageBytes = 1 << 20
    /// Seconds without a byte from the client before the hub pings. Default 25.
    public var pingInterval = 25
    /// Seconds a ping may go unanswered (no byte at all) before the connection is closed
    /// (1001). Default 20.
    public var pongTimeout = 20
    /// Seconds without a data message from the client before closing (1001). Default 0: off
    /// (live clients answer pings; an app that wants idle clients gone sets it).
    public var idleTimeout = 0
    /// Bytes a connection may have waiting to be written. Default 1 MiB (uWebSockets uses
    /// 64 KiB; a browser on a slow link catching up on a burst needs more). Past it the
    /// `backpressure` policy applies.
    public var maxBufferedBytes = 1 << 20
    public var backpressure = BackpressurePolicy.close
    /// Accept permessage-deflate offers. Default on.
    public var compression = true
    /// Let clients keep their compression context between messages: better compression of
    /// what they send, and a decompressor of their own (about 40 KB each) on the hub. Default
    /// off: clients are asked for `client_no_context_takeover` and one stream per loop
    /// inflates them all.
    public var clientContextTakeover = false
    /// Messages shorter than this are sent uncompressed even when deflate was negotiated:
    /// below it compression costs more CPU than it saves bytes. Default 128 B.
    public var compressionThreshold = 128
    /// Seconds to wait for the client's close frame after sending ours. Default 5.
    public var closeTimeout = 5

    public init() {}
}

/// What happens when a connection's send buffer is full.
public enum BackpressurePolicy: String, Sendable {
    /// Close the connection with 1008 ("send buffer full"): the client reconnects and resumes.
    case close
    /// Drop the message and report `.dropped` to the sender.
    case drop
}
