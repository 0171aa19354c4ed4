#if canImport(Glibc)
import Glibc
#endif
import CHalleyLinux
import HalleyCore
import HalleyEndpoints
import HalleyHub
import HalleyLoop
import HalleyServer
import HalleyWebSocket

// Signals: blocked in every thread (the loops inherit the mask) and taken by this one with
// sigwait, so no handler ever runs on a loop.
halley_ignore_sigpipe()
_ = halley_block_signals()

var env: [String: String] = [:]
var e = environ
while let p = e.pointee {
    let kv = String(cString: p)
    if let eq = kv.firstIndex(of: "=") { env[String(kv[..<eq])] = String(kv[kv.index(after: eq)...]) }
    e += 1
}

let config: ServerConfig
let options: Options
do {
    (config, options) = try Options.parse(Array(CommandLine.arguments.dropFirst()), env: env)
} catch {
    Log.error("\(error)")
    exit(2)
}
if options.showHelp {
    print(Options.help, terminator: "")
    exit(0)
}
Log.level = options.logLevel
Log.format = options.logFormat

var cfg = config
if let root = cfg.publicRoot {
    var st = stat()
    if stat(root, &st) != 0 || (st.st_mode & S_IFMT) != S_IFDIR {
        Log.warning("public root '\(root)' is not a directory: static files are off")
        cfg.publicRoot = nil
    }
}

let hub = Hub(config: options.hub)
if options.hub.redis != nil && options.hub.clusterAddress == nil && ["0.0.0.0", "::", ""].contains(cfg.host) {
    Log.error(
        "--redis with --host \(cfg.host): set --cluster-address host:port, where the other nodes reach this one")
    exit(2)
}

/// Where the other nodes reach this one: `--cluster-address`, or the address it listens on.
let listenHost = cfg.host
let givenClusterAddress = options.hub.clusterAddress
func clusterAddress(_ port: Int) -> String {
    if let a = givenClusterAddress { return a }
    return listenHost.contains(":") ? "[\(listenHost)]:\(port)" : "\(listenHost):\(port)"
}
var wsEndpoint = WebSocketHandshake.Endpoint()
wsEndpoint.origins = options.hub.origins
let router = Router()
router.addWebSocket("/echo", endpoint: wsEndpoint) { _ in EchoDelegate.shared }
let endpoints = HubEndpoints(hub: hub)
endpoints.install(on: router, endpoint: wsEndpoint)
let server = Server(config: cfg, router: router)
hub.addMetrics(to: server.metrics)
do throws(TLSError) {
    try server.loadTLS()
} catch {
    Log.error("start failed: \(error)")
    exit(1)
}
do {
    try server.start { loops in
        hub.attach(loops: loops, clientLimits: server.clientLimits, address: clusterAddress(server.port))
        endpoints.attach()
    }
} catch {
    Log.error("start failed: \(error)")
    exit(1)
}
if options.hub.redis != nil && server.tlsPort == server.port {
    // The other nodes forward HTTP sessions' requests over plain HTTP.
    Log.error(
        "--redis with TLS on the main port: serve TLS on --tls-port so that the main port stays plain HTTP for the other nodes"
    )
    exit(2)
}
let loopsText = server.loops.count == 1 ? "1 loop" : "\(server.loops.count) loops"
let mainScheme = server.tlsPort == server.port ? "https" : "http"
var startLine =
    "halley listening on \(mainScheme)://\(cfg.host):\(server.port) (\(loopsText), max \(server.maxConnections) connections"
if let root = cfg.publicRoot { startLine += ", public root \(root)" }
if let tp = server.tlsPort, tp != server.port { startLine += ", https on https://\(cfg.host):\(tp)" }
if let mp = server.metricsPort { startLine += ", metrics on http://\(cfg.metricsHost):\(mp)/metrics" }
Log.lifecycle(startLine + ")")
if let r = options.hub.redis {
    Log.lifecycle(
        "node \(options.hub.nodeID): joining the nodes on \(r) (publishes are answered 503 until it is reachable)")
}
if options.hub.streamMaxBytes >= options.hub.sessionBufferBytes {
    Log.warning(
        "--stream-max-bytes (\(options.hub.streamMaxBytes)) is not below --session-buffer-bytes (\(options.hub.sessionBufferBytes)): an SSE client that never acknowledges by POST overflows its session before its stream rotates"
    )
}
let app = options.hub.apps[0]
if let path = options.configPath {
    // Never the secrets or tokens.
    let apps = options.hub.apps
    let hooks = apps.reduce(0) { $0 + $1.webhooks.count }
    Log.lifecycle(
        "\(apps.count) app\(apps.count == 1 ? "" : "s") loaded from \(path) (ids \(apps.map(\.id).joined(separator: ", ")); \(apps.filter { !$0.enabled }.count) disabled; \(hooks) webhook URL\(hooks == 1 ? "" : "s"))"
    )
    for w in Options.developmentWarnings(apps, configPath: path) { Log.warning(w) }
} else if app.id == App.development.id && app.key == App.development.key && app.secret == App.development.secret {
    Log.warning(
        "using the development app (id \(app.id), key \(app.key), secret \(app.secret)): set --app-id, --app-key and --app-secret for anything but local development"
    )
} else {
    Log.lifecycle("app id \(app.id), key \(app.key)\(app.token != nil ? ", bearer token set" : "")")
    for w in Options.developmentWarnings([app], configPath: nil) { Log.warning(w) }
}

/// SIGHUP: the TLS certificate and key, and the apps file, read again. What fails to load is
/// logged and the running configuration kept.
@MainActor func reload() {
    var what: [String] = []
    if cfg.tlsCertFile != nil {
        what.append("TLS")
        do throws(TLSError) {
            try server.reloadTLS()
            Log.lifecycle("SIGHUP: TLS certificate and key reloaded; new connections use them")
        } catch {
            Log.error("SIGHUP: TLS reload failed, keeping the old certificate: \(error)")
        }
    }
    if let path = options.configPath {
        what.append("apps")
        do throws(AppsFile.ParseError) {
            let apps = try AppsFile.load(path)
            let r = hub.reload(apps: apps)
            Log.lifecycle(
                "SIGHUP: \(apps.count) app\(apps.count == 1 ? "" : "s") reloaded from \(path): \(r.description)")
            for w in Options.developmentWarnings(apps, configPath: path) { Log.warning(w) }
        } catch {
            Log.error("SIGHUP: apps file not reloaded, keeping the running apps: \(error)")
        }
    }
    if what.isEmpty { Log.info("SIGHUP: nothing to reload (no TLS, no --config)") }
}

while true {
    let sig = halley_wait_signal()
    if sig == SIGHUP {
        reload()
        continue
    }
    if sig == SIGINT || sig == SIGTERM {
        Log.lifecycle(
            "\(sig == SIGINT ? "SIGINT" : "SIGTERM"): stopping (grace \(cfg.shutdownGrace) s, \(server.connectionCount) connections open)"
        )
        break
    }
}
// Clients are told to reconnect (elsewhere) before the listeners close and idle connections go.
server.shutdown(beforeClosing: { loop in hub.drain(loop: loop) })
startSecondSignalWatcher()
server.wait()
Log.lifecycle("halley stopped")
exit(0)
