import HalleyCore
import HalleyHub
import HalleyLoop
import HalleyServer
import HalleyWebSocket

/// Command-line flags and `HALLEY_*` environment variables. A flag wins over the variable of
/// the same name (`--max-body-bytes` ⇔ `HALLEY_MAX_BODY_BYTES`).
struct Options {
    struct Spec: Sendable {
        let flag: String
        let value: String  // placeholder for --help; "" for a switch
        let help: String
        let apply: @Sendable (inout ServerConfig, inout Options, String) throws(OptionError) -> Void
    }

    struct OptionError: Error, CustomStringConvertible {
        let description: String
    }

    var logLevel = LogLevel.info
    var logFormat = LogFormat.text
    var showHelp = false
    var hub = HubConfig()
    /// The `--app-*` flags given (flag or variable): an error together with `--config`.
    var appFlags: [String] = []
    /// `--config FILE`: its apps replace the single app of the `--app-*` flags.
    var configPath: String?

    /// A whole number in `min...max` (at most 2^30: seconds and bytes both fit every counter).
    static func int(_ flag: String, _ s: String, min: Int = 0, max: Int = 1 << 30) throws(OptionError) -> Int {
        guard let v = Int(s), v >= min, v <= max else {
            throw OptionError(description: "\(flag): expected a whole number from \(min) to \(max), got '\(s)'")
        }
        return v
    }

    static let specs: [Spec] = [
        Spec(flag: "host", value: "ADDR", help: "address to listen on (default 127.0.0.1; 0.0.0.0 for all)") {
            c, _, v in c.host = v
        },
        Spec(flag: "port", value: "N", help: "port to listen on (default 8080; 0 picks a free one)") {
            c, _, v throws(OptionError) in c.port = try int("--port", v)
        },
        Spec(flag: "public", value: "DIR", help: "static files root (default ./public)") { c, _, v in c.publicRoot = v
        },
        Spec(flag: "threads", value: "N", help: "event loops, one thread each (default: number of cores)") {
            c, _, v throws(OptionError) in c.threads = try int("--threads", v, min: 1)
        },
        Spec(flag: "log-level", value: "LEVEL", help: "debug, info, warning or error (default info)") {
            _, o, v throws(OptionError) in
            guard let l = LogLevel(name: v) else {
                throw OptionError(description: "--log-level: expected debug, info, warning or error, got '\(v)'")
            }
            o.logLevel = l
        },
        Spec(
            flag: "tls-cert", value: "FILE", help: "PEM certificate (then its chain): serve https and wss (default off)"
        ) { c, _, v in c.tlsCertFile = v },
        Spec(flag: "tls-key", value: "FILE", help: "PEM private key of --tls-cert") { c, _, v in c.tlsKeyFile = v },
        Spec(
            flag: "tls-port", value: "N",
            help: "serve TLS on this port beside plain HTTP on --port (default: TLS on --port itself)"
        ) { c, _, v throws(OptionError) in c.tlsPort = try int("--tls-port", v, max: 65535) },
        Spec(
            flag: "tls-handshake-timeout", value: "SECONDS",
            help: "close a connection whose TLS handshake takes longer (default 10)"
        ) { c, _, v throws(OptionError) in c.tlsHandshakeTimeout = try int("--tls-handshake-timeout", v, min: 1) },
        Spec(
            flag: "tls-records", value: "own|openssl",
            help: "TLS 1.3 records after the handshake: Halley's own record layer or OpenSSL's (default own)"
        ) { c, _, v throws(OptionError) in
            switch v {
            case "own": c.tlsOwnRecords = true
            case "openssl": c.tlsOwnRecords = false
            default: throw OptionError(description: "--tls-records: expected own or openssl, got '\(v)'")
            }
        },
        Spec(flag: "metrics-port", value: "N", help: "serve GET /metrics (Prometheus) on this port (default off)") {
            c, _, v throws(OptionError) in c.metricsPort = try int("--metrics-port", v)
        },
        Spec(flag: "max-connections", value: "N", help: "most open connections (default: open-file limit - 100)") {
            c, _, v throws(OptionError) in c.maxConnections = try int("--max-connections", v, min: 1)
        },
        Spec(flag: "max-request-line", value: "BYTES", help: "longest request line, else 414 (default 8192)") {
            c, _, v throws(OptionError) in c.http.maxRequestLineBytes = try int("--max-request-line", v, min: 16)
        },
        Spec(flag: "max-header-bytes", value: "BYTES", help: "longest request head, else 431 (default 16384)") {
            c, _, v throws(OptionError) in c.http.maxHeaderBytes = try int("--max-header-bytes", v, min: 64)
        },
        Spec(flag: "max-headers", value: "N", help: "most header fields, else 431 (default 100)") {
            c, _, v throws(OptionError) in c.http.maxHeaderCount = try int("--max-headers", v, min: 1)
        },
        Spec(flag: "max-body-bytes", value: "BYTES", help: "largest request body, else 413 (default 1048576)") {
            c, _, v throws(OptionError) in c.http.maxBodyBytes = try int("--max-body-bytes", v)
        },
        Spec(
            flag: "header-timeout", value: "SECONDS",
            help: "from a request's first byte to its full head, else 408 (default 10)"
        ) { c, _, v throws(OptionError) in c.headerTimeout = try int("--header-timeout", v, min: 1) },
        Spec(flag: "body-timeout", value: "SECONDS", help: "a request body may stall this long, else 408 (default 30)")
        { c, _, v throws(OptionError) in c.bodyTimeout = try int("--body-timeout", v, min: 1) },
        Spec(
            flag: "keepalive-timeout", value: "SECONDS",
            help: "idle keep-alive connections are closed after (default 60)"
        ) { c, _, v throws(OptionError) in c.keepAliveTimeout = try int("--keepalive-timeout", v, min: 1) },
        Spec(
            flag: "send-timeout", value: "SECONDS", help: "a blocked write may make no progress this long (default 60)"
        ) { c, _, v throws(OptionError) in c.sendTimeout = try int("--send-timeout", v, min: 1) },
        Spec(
            flag: "log-format", value: "text|json",
            help: "log lines as text or one JSON object each (time, level, msg) (default text)"
        ) { _, o, v throws(OptionError) in
            guard let f = ["text": LogFormat.text, "json": .json][v] else {
                throw OptionError(description: "--log-format: expected text or json, got '\(v)'")
            }
            o.logFormat = f
        },
        Spec(
            flag: "shutdown-grace", value: "SECONDS",
            help:
                "on SIGINT/SIGTERM, clients are told to reconnect elsewhere and responses in flight get this long (default 10)"
        ) { c, _, v throws(OptionError) in c.shutdownGrace = try int("--shutdown-grace", v) },
        Spec(flag: "static-cache-control", value: "VALUE", help: "Cache-Control of static files (default no-cache)") {
            c, _, v in c.staticCacheControl = v
        },
        Spec(
            flag: "ws-max-message", value: "BYTES", help: "largest WebSocket message, else close 1009 (default 1048576)"
        ) { c, _, v throws(OptionError) in c.webSocket.maxMessageBytes = try int("--ws-max-message", v, min: 125) },
        Spec(flag: "ws-ping-interval", value: "SECONDS", help: "ping a WebSocket silent this long (default 25)") {
            c, _, v throws(OptionError) in c.webSocket.pingInterval = try int("--ws-ping-interval", v, min: 1)
        },
        Spec(
            flag: "ws-pong-timeout", value: "SECONDS",
            help: "close a WebSocket that stays silent this long after a ping (default 20)"
        ) { c, _, v throws(OptionError) in c.webSocket.pongTimeout = try int("--ws-pong-timeout", v, min: 1) },
        Spec(
            flag: "ws-idle-timeout", value: "SECONDS",
            help: "close a WebSocket without a message this long; 0: off (default 0)"
        ) { c, _, v throws(OptionError) in c.webSocket.idleTimeout = try int("--ws-idle-timeout", v) },
        Spec(flag: "ws-max-buffered", value: "BYTES", help: "send buffer bound per WebSocket (default 1048576)") {
            c, _, v throws(OptionError) in c.webSocket.maxBufferedBytes = try int("--ws-max-buffered", v, min: 1024)
        },
        Spec(
            flag: "ws-backpressure", value: "POLICY",
            help: "when the send buffer is full: close (1008) or drop (default close)"
        ) { c, _, v throws(OptionError) in
            guard let p = BackpressurePolicy(rawValue: v) else {
                throw OptionError(description: "--ws-backpressure: expected close or drop, got '\(v)'")
            }
            c.webSocket.backpressure = p
        },
        Spec(flag: "ws-compression", value: "on|off", help: "accept permessage-deflate (default on)") {
            c, _, v throws(OptionError) in
            guard v == "on" || v == "off" else {
                throw OptionError(description: "--ws-compression: expected on or off, got '\(v)'")
            }
            c.webSocket.compression = v == "on"
        },
        Spec(
            flag: "ws-client-context-takeover", value: "on|off",
            help: "let clients keep their compression context (about 40 KB each on the hub; default off)"
        ) { c, _, v throws(OptionError) in
            guard v == "on" || v == "off" else {
                throw OptionError(description: "--ws-client-context-takeover: expected on or off, got '\(v)'")
            }
            c.webSocket.clientContextTakeover = v == "on"
        },
        Spec(flag: "ws-compression-threshold", value: "BYTES", help: "send shorter messages uncompressed (default 128)")
        { c, _, v throws(OptionError) in c.webSocket.compressionThreshold = try int("--ws-compression-threshold", v) },
        Spec(flag: "app-id", value: "DIGITS", help: "the app's id (default 1; digits: Pusher SDKs refuse others)") {
            _, o, v throws(OptionError) in
            guard !v.isEmpty, v.utf8.allSatisfy({ $0 >= 48 && $0 <= 57 }) else {
                throw OptionError(description: "--app-id: expected digits, got '\(v)'")
            }
            o.hub.apps[0].id = v
            o.appFlags.append("--app-id")
        },
        Spec(flag: "app-key", value: "KEY", help: "the app's public key (default app-key)") {
            _, o, v throws(OptionError) in
            guard !v.isEmpty, !v.contains("/") else {
                throw OptionError(description: "--app-key: expected a non-empty key without '/'")
            }
            o.hub.apps[0].key = v
            o.appFlags.append("--app-key")
        },
        Spec(flag: "app-secret", value: "SECRET", help: "the app's secret (default app-secret)") {
            _, o, v throws(OptionError) in
            guard !v.isEmpty else { throw OptionError(description: "--app-secret: expected a non-empty secret") }
            o.hub.apps[0].secret = v
            o.appFlags.append("--app-secret")
        },
        Spec(
            flag: "app-token", value: "TOKEN",
            help: "bearer token for POST /publish (default none: signed requests only)"
        ) { _, o, v in
            o.hub.apps[0].token = v.isEmpty ? nil : v
            o.appFlags.append("--app-token")
        },
        Spec(
            flag: "config", value: "FILE",
            help: "JSON file of apps (ids, keys, secrets, limits, origins, webhooks); replaces the --app-* flags"
        ) { _, o, v throws(OptionError) in
            guard !v.isEmpty else { throw OptionError(description: "--config: expected a file name") }
            o.configPath = v
        },
        Spec(
            flag: "origins", value: "LIST",
            help:
                "origins allowed on WebSocket and HTTP transports, comma-separated; *.example.com wildcards (default *)"
        ) { _, o, v in
            o.hub.origins = OriginPolicy(
                v.split(separator: ",").map { String($0).trimmingSpaces() }.filter { !$0.isEmpty })
        },
        Spec(
            flag: "admin-token", value: "TOKEN",
            help: "bearer token of GET /stats, the live view of every app (default none: off)"
        ) { _, o, v throws(OptionError) in
            guard !v.isEmpty else { throw OptionError(description: "--admin-token: empty") }
            o.hub.adminToken = v
        },
        Spec(
            flag: "redis", value: "URL",
            help:
                "redis://[user:password@]host:port[/db]: join the other nodes on this Redis 7 (default none: one node)"
        ) { _, o, v throws(OptionError) in
            do throws(RedisURL.ParseError) { o.hub.redis = try RedisURL(v) } catch {
                throw OptionError(description: error.description)
            }
        },
        Spec(
            flag: "cluster-address", value: "HOST:PORT",
            help:
                "with --redis: where the other nodes reach this one to forward HTTP session requests (default: --host:--port)"
        ) { _, o, v throws(OptionError) in
            guard let colon = v.lastIndex(of: ":"), !v[..<colon].isEmpty, let p = Int(v[v.index(after: colon)...]),
                (1...65535).contains(p)
            else { throw OptionError(description: "--cluster-address: expected host:port, got '\(v)'") }
            o.hub.clusterAddress = v
        },
        Spec(
            flag: "node-id", value: "NAME",
            help: "this node's name among the nodes, in logs and /metrics (default: generated at start)"
        ) { _, o, v throws(OptionError) in
            guard !v.isEmpty, v.utf8.count <= 64, v.allSatisfy({ $0.isLetter || $0.isNumber || $0 == "-" || $0 == "_" })
            else { throw OptionError(description: "--node-id: 1 to 64 letters, digits, - or _, got '\(v)'") }
            o.hub.nodeID = v
        },
        Spec(
            flag: "secret-overlap", value: "SECONDS",
            help:
                "after a reload (SIGHUP) changes an app's secret, the old one is still accepted this long (default 600)"
        ) { _, o, v throws(OptionError) in o.hub.secretOverlap = try int("--secret-overlap", v) },
        Spec(
            flag: "session-linger", value: "SECONDS",
            help: "a resumable session outlives its transport this long (default 30)"
        ) { _, o, v throws(OptionError) in o.hub.sessionLinger = try int("--session-linger", v) },
        Spec(
            flag: "session-linger-unconfirmed", value: "SECONDS",
            help: "a session whose client never came back after opening it lingers this long (default 5)"
        ) { _, o, v throws(OptionError) in o.hub.sessionLingerUnconfirmed = try int("--session-linger-unconfirmed", v)
        },
        Spec(
            flag: "max-connections-per-address", value: "N",
            help: "open connections from one client address, else 429; 0: off (default 1000)"
        ) { c, _, v throws(OptionError) in
            c.clientLimits.maxConnectionsPerAddress = try int("--max-connections-per-address", v)
        },
        Spec(
            flag: "session-opens-per-second", value: "N",
            help: "new sessions per second from one client address, else 429 / 4100; 0: off (default 20)"
        ) { c, _, v throws(OptionError) in
            c.clientLimits.sessionOpensPerSecond = try int("--session-opens-per-second", v)
        },
        Spec(
            flag: "session-open-burst", value: "N",
            help: "new sessions one client address may open at once (default 100)"
        ) { c, _, v throws(OptionError) in c.clientLimits.sessionOpenBurst = try int("--session-open-burst", v, min: 1)
        },
        Spec(
            flag: "max-lingering-per-address", value: "N",
            help:
                "sessions without a transport from one client address, else new ones get 429 / 4100; 0: off (default 500)"
        ) { c, _, v throws(OptionError) in
            c.clientLimits.maxLingeringPerAddress = try int("--max-lingering-per-address", v)
        },
        Spec(
            flag: "client-address-header", value: "NAME",
            help:
                "the header trusted proxies write the client into: X-Forwarded-For, Forwarded or one holding one address (default X-Forwarded-For)"
        ) { c, _, v throws(OptionError) in
            guard !v.isEmpty, v.utf8.allSatisfy({ $0 > 32 && $0 < 127 && $0 != UInt8(ascii: ":") }) else {
                throw OptionError(description: "--client-address-header: expected a header name, got '\(v)'")
            }
            c.clientLimits.clientAddressHeader = v
        },
        Spec(
            flag: "trusted-proxies", value: "LIST",
            help:
                "proxies (addresses or CIDRs, comma-separated) whose --client-address-header names the client (default none)"
        ) { c, _, v throws(OptionError) in
            var nets: [IPNetwork] = []
            for part in v.split(separator: ",") {
                let t = part.trimmingSpaces()
                guard !t.isEmpty else { continue }
                guard let n = IPNetwork(Substring(t)) else {
                    throw OptionError(description: "--trusted-proxies: '\(t)' is not an address or CIDR range")
                }
                nets.append(n)
            }
            c.clientLimits.trustedProxies = nets
        },
        Spec(
            flag: "allow-tokens-in-urls", value: "",
            help: "accept session tokens in URLs (old halley.js; they end up in access logs) (default off)"
        ) { _, o, _ in o.hub.allowTokensInURLs = true },
        Spec(
            flag: "session-buffer-bytes", value: "BYTES",
            help: "unacknowledged bytes a session keeps, then --slow-consumer (default 1048576)"
        ) { _, o, v throws(OptionError) in o.hub.sessionBufferBytes = try int("--session-buffer-bytes", v, min: 1024) },
        Spec(
            flag: "slow-consumer", value: "POLICY",
            help: "when a session's buffer is full: close (4100) or gap (skip, then halley:gap) (default close)"
        ) { _, o, v throws(OptionError) in
            guard let p = SlowConsumerPolicy(rawValue: v) else {
                throw OptionError(description: "--slow-consumer: expected close or gap, got '\(v)'")
            }
            o.hub.slowConsumer = p
        },
        Spec(flag: "max-sessions", value: "N", help: "most sessions, live and lingering (default 100000)") {
            _, o, v throws(OptionError) in o.hub.maxSessions = try int("--max-sessions", v, min: 1)
        },
        Spec(flag: "max-subscriptions", value: "N", help: "most channels per session (default 100)") {
            _, o, v throws(OptionError) in o.hub.maxSubscriptionsPerSession = try int("--max-subscriptions", v, min: 1)
        },
        Spec(flag: "history-size", value: "N", help: "messages kept per channel for recovery (default 100)") {
            _, o, v throws(OptionError) in o.hub.historySize = try int("--history-size", v)
        },
        Spec(flag: "history-seconds", value: "SECONDS", help: "how long a message stays in history (default 300)") {
            _, o, v throws(OptionError) in o.hub.historySeconds = try int("--history-seconds", v)
        },
        Spec(
            flag: "cache-seconds", value: "SECONDS",
            help: "how long a cache- channel keeps its last message (default 1800)"
        ) { _, o, v throws(OptionError) in o.hub.cacheSeconds = try int("--cache-seconds", v) },
        Spec(flag: "poll-timeout", value: "SECONDS", help: "a long-poll waits this long for messages (default 25)") {
            _, o, v throws(OptionError) in o.hub.pollTimeout = try int("--poll-timeout", v, min: 1)
        },
        Spec(flag: "heartbeat", value: "SECONDS", help: "SSE heartbeat after this much silence (default 25)") {
            _, o, v throws(OptionError) in o.hub.heartbeat = try int("--heartbeat", v, min: 1)
        },
        Spec(
            flag: "stream-max-bytes", value: "BYTES",
            help: "an SSE stream ends (client reopens) after this many bytes (default 524288)"
        ) { _, o, v throws(OptionError) in o.hub.streamMaxBytes = try int("--stream-max-bytes", v, min: 1024) },
        Spec(flag: "max-event-bytes", value: "BYTES", help: "largest published data, else 413 (default 10240)") {
            _, o, v throws(OptionError) in o.hub.maxEventBytes = try int("--max-event-bytes", v, min: 1)
        },
        Spec(flag: "max-presence-members", value: "N", help: "most users in one presence channel (default 100)") {
            _, o, v throws(OptionError) in o.hub.maxPresenceMembers = try int("--max-presence-members", v, min: 1)
        },
        Spec(
            flag: "max-batch-events", value: "N", help: "most events in one batch_events request, else 400 (default 10)"
        ) { _, o, v throws(OptionError) in o.hub.maxBatchEvents = try int("--max-batch-events", v, min: 1) },
        Spec(flag: "max-channels-per-publish", value: "N", help: "most channels in one publish, else 400 (default 100)")
        { _, o, v throws(OptionError) in o.hub.maxChannelsPerPublish = try int("--max-channels-per-publish", v, min: 1)
        },
        Spec(flag: "help", value: "", help: "print this help") { _, o, _ in o.showHelp = true },
    ]

    static func envName(_ flag: String) -> String {
        "HALLEY_" + flag.uppercased().replacingHyphens()
    }

    /// Environment first, then flags over it.
    static func parse(_ args: [String], env: [String: String]) throws(OptionError) -> (ServerConfig, Options) {
        var config = ServerConfig()
        var options = Options()
        for spec in specs where !spec.value.isEmpty {
            if let v = env[envName(spec.flag)] { try spec.apply(&config, &options, v) }
        }
        var i = 0
        while i < args.count {
            let a = args[i]
            guard a.hasPrefix("--") else { throw OptionError(description: "unexpected argument '\(a)' (see --help)") }
            var name = String(a.dropFirst(2))
            var value: String? = nil
            if let eq = name.firstIndex(of: "=") {
                value = String(name[name.index(after: eq)...])
                name = String(name[..<eq])
            }
            guard let spec = specs.first(where: { $0.flag == name }) else {
                throw OptionError(description: "unknown option --\(name) (see --help)")
            }
            if spec.value.isEmpty {
                try spec.apply(&config, &options, "")
            } else {
                if value == nil {
                    i += 1
                    guard i < args.count else { throw OptionError(description: "--\(name) needs a value") }
                    value = args[i]
                }
                try spec.apply(&config, &options, value!)
            }
            i += 1
        }
        if let path = options.configPath {
            if let flag = options.appFlags.first {
                throw OptionError(
                    description: "--config: cannot be combined with \(flag) (the file's apps replace the single app)")
            }
            do throws(AppsFile.ParseError) {
                options.hub.apps = try AppsFile.load(path)
            } catch {
                throw OptionError(description: "--config: \(error)")
            }
        }
        return (config, options)
    }

    /// Start-up warnings, one per app that uses the development key or secret (both are
    /// public: with the secret anyone can sign API requests and subscription signatures),
    /// whatever set them: the defaults, a flag or variable that repeats them, or an apps file.
    static func developmentWarnings(_ apps: [App], configPath: String?) -> [String] {
        let dev = App.development
        var out: [String] = []
        for a in apps {
            var what: [String] = []
            var fix: [String] = []
            if a.key == dev.key {
                what.append("key '\(dev.key)'")
                fix.append("--app-key")
            }
            if a.secret == dev.secret {
                what.append("secret '\(dev.secret)'")
                fix.append("--app-secret")
            }
            guard !what.isEmpty else { continue }
            let how =
                configPath.map { "change \(what.count == 1 ? "it" : "them") in \($0)" }
                ?? "set \(fix.joined(separator: " and "))"
            out.append(
                "app \(a.id) uses the development \(what.joined(separator: " and ")): \(how) for anything but local development"
            )
        }
        return out
    }

    static var help: String {
        var s = """
            halley — a realtime messaging hub

            Usage: halley [options]

            Every option can also be set by an environment variable: --max-body-bytes is
            HALLEY_MAX_BODY_BYTES. Flags win over variables.

            Options:

            """
        for spec in specs {
            let left = spec.value.isEmpty ? "--\(spec.flag)" : "--\(spec.flag) \(spec.value)"
            let pad = String(repeating: " ", count: max(1, 30 - left.count))
            s += "  \(left)\(pad)\(spec.help)\n"
        }
        return s
    }
}

extension String {
    func replacingHyphens() -> String { String(map { $0 == "-" ? "_" : $0 }) }
}
