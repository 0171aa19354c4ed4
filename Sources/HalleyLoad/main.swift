#if canImport(Glibc)
import Glibc
#endif

// halley-load: the load generator of Scripts/bench (see `usage`). One thread, epoll,
// non-blocking sockets, no Foundation; only the system shims, none of the server's modules.

enum Mode: String { case echo, handshakes, fanout, selftest }
enum ServerKind: String { case halley, nchan }
enum Transport: String { case ws, longpoll, xhrStreaming = "xhr_streaming" }

struct Options {
    var mode = Mode.echo
    var tls = false
    var host = "127.0.0.1"
    var port = 0
    var path = "/"
    var connections = 100
    var size = -1
    var duration = 10.0
    var warmup = 1.0
    var binary = false
    var deflate = false
    var serverPids: [Int32] = []
    /// fanout --sub-url (repeatable): the servers subscribers connect to, in turn (none: --url's).
    var subServers: [(host: String, port: Int)] = []
    var server = ServerKind.halley
    var transport = Transport.ws
    var rate = 100.0
    /// echo --rate: open loop, --rate messages a second in all, sent in bursts every millisecond.
    var openLoop = false
    var window = 16
    var publishers = 4
    var phases = ["latency", "capacity"]
    let channel = "bench"
    let appKey = "app-key"
    let token = "benchtoken"

    static let usage = """
        usage: halley-load echo --url ws[s]://HOST:PORT/PATH [-c N] [--size B] [--binary] [--deflate] [--rate R]
               halley-load handshakes --url https://HOST:PORT/ [-c N]
               halley-load fanout --url http://HOST:PORT --server halley|nchan [--transport ws|longpoll|
                           xhr_streaming] [-n N] [--rate R] [--window W] [--publishers P] [--phases LIST]
                           [--sub-url http://HOST:PORT ...]
               halley-load selftest
        common: --duration S (10) --warmup S (1) --server-pid PID (repeatable) --tls
        echo        N connections (100) each send a message of --size bytes (32) and wait for its
                    echo, checked byte for byte (--deflate: permessage-deflate, inflated first).
                    --rate R: open loop instead, R messages a second in all, the same bursts
                    whatever the server: every millisecond the messages due by its end, each on
                    the connection free the longest (none free: counted as missed; a millisecond
                    the tool woke too late for: a late tick).
        handshakes  N (16) full TLS handshakes in flight: a new SSL, no session reuse, close_notify.
        fanout      N subscribers (1000) on channel bench and P publishers (4); each data string
                    starts with "#s<seq>t<send ns>#": every delivery is timed and checked. A sync,
                    then the phases: latency (--rate msg/s, open loop) and capacity (closed loop:
                    fewer than --window messages not yet everywhere; --warmup s, then counted).
                    halley: WebSocket /app/app-key, long-poll /halley/poll, pusher-js
                    xhr_streaming; POST /publish (Bearer benchtoken). nchan: /sub/bench, /pub/bench.
                    --sub-url (repeatable): subscribers go to these servers in turn (the nodes of
                    a cluster; TLS as --url's), publishers to --url.
        selftest    the parsers and the bookkeeping on hand-made bytes, cut at every position.
        One key=value line per window on stdout (server and tool CPU, core_busy_pct, flags=);
        progress on stderr. Exit status 0 when everything arrived right, 1 otherwise.
        """

    static func parse(_ args: [String]) -> Options {
        var o = Options()
        func fail(_ msg: String) -> Never {
            warn("\(msg)\n\(usage)")
            exit(2)
        }
        guard let first = args.first, let mode = Mode(rawValue: first) else {
            if args.first == "--help" || args.first == "-h" {
                print(usage)
                exit(0)
            }
            fail("the first argument is the mode: echo, handshakes, fanout or selftest")
        }
        o.mode = mode
        if mode == .handshakes { o.connections = 16 }
        if mode == .fanout { o.connections = 1000 }
        var url: String? = nil
        var subURLs: [String] = []
        var i = 1
        func value() -> String {
            i += 1
            guard i < args.count else { fail("\(args[i - 1]) needs a value") }
            return args[i]
        }
        func number(_ min: Double) -> Double {
            let name = args[i], v = value()
            guard let d = Double(v), d >= min, d.isFinite else {
                fail("\(name): expected a number >= \(min), got '\(v)'")
            }
            return d
        }
        func pick<T>(_ v: T?, _ msg: String) -> T {
            guard let v else { fail(msg) }
            return v
        }
        while i < args.count {
            switch args[i] {
            case "--url": url = value()
            case "--sub-url": subURLs.append(value())
            case "--connections", "--subscribers", "-c", "-n": o.connections = Int(number(1))
            case "--size", "-s": o.size = Int(number(0))
            case "--duration", "-d": o.duration = number(0.1)
            case "--warmup": o.warmup = number(0)
            case "--binary": o.binary = true
            case "--deflate": o.deflate = true
            case "--tls": o.tls = true
            case "--server-pid": o.serverPids.append(Int32(number(1)))
            case "--server": o.server = pick(ServerKind(rawValue: value()), "--server: halley or nchan")
            case "--transport":
                o.transport = pick(Transport(rawValue: value()), "--transport: ws, longpoll or xhr_streaming")
            case "--rate":
                o.rate = number(0.1)
                o.openLoop = mode == .echo
            case "--window": o.window = Int(number(1))
            case "--publishers": o.publishers = Int(number(1))
            case "--phases":
                o.phases = value().split(separator: ",").map(String.init)
                if o.phases.contains(where: { $0 != "latency" && $0 != "capacity" }) {
                    fail("--phases: latency,capacity")
                }
            case "--help", "-h":
                print(usage)
                exit(0)
            default: fail("unknown argument '\(args[i])'")
            }
            i += 1
        }
        if o.size < 0 { o.size = mode == .fanout ? 64 : 32 }
        if mode == .selftest { return o }
        /// SCHEME://HOST:PORT[/PATH] of `name`.
        func endpoint(_ u: String, _ name: String) -> (scheme: Substring, host: String, port: Int, path: String) {
            guard let colon0 = u.firstIndex(of: ":"), u[colon0...].hasPrefix("://") else {
                fail("\(name) SCHEME://HOST:PORT[/PATH] is required")
            }
            let scheme = u[..<colon0]
            let rest = u[u.index(colon0, offsetBy: 3)...]
            let slash = rest.firstIndex(of: "/") ?? rest.endIndex
            guard let colon = rest[..<slash].lastIndex(of: ":"),
                let port = Int(rest[rest.index(after: colon)..<slash]), port > 0 && port < 65536
            else { fail("\(name): expected \(scheme)://HOST:PORT/PATH with a port, got '\(u)'") }
            let host = rest[..<colon] == "localhost" ? "127.0.0.1" : String(rest[..<colon])
            return (scheme, host, port, slash < rest.endIndex ? String(rest[slash...]) : "/")
        }
        guard let u = url else { fail("--url SCHEME://HOST:PORT[/PATH] is required") }
        let e = endpoint(u, "--url")
        if e.scheme == "wss" || e.scheme == "https" || mode == .handshakes { o.tls = true }
        (o.host, o.port, o.path) = (e.host, e.port, e.path)
        o.subServers = subURLs.map { endpoint($0, "--sub-url") }.map { ($0.host, $0.port) }
        if !o.subServers.isEmpty && mode != .fanout { fail("--sub-url: fanout only") }
        if mode == .fanout {
            if o.transport == .xhrStreaming && o.server != .halley { fail("--transport xhr_streaming: halley only") }
            if o.window >= Load.ringSize / 2 { fail("--window: at most \(Load.ringSize / 2 - 1)") }
        }
        guard o.size <= 64 << 20 else { fail("--size: at most 64 MiB") }
        return o
    }
}

let options = Options.parse(Array(CommandLine.arguments.dropFirst()))
if options.mode == .selftest { exit(selfTest()) }
let load = Load(options)
exit(load.run())
