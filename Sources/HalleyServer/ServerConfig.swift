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

    public init() {}
}
