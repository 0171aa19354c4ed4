#if canImport(Glibc)
import Glibc
#endif

enum ServerKind: String { case halley, nchan }
enum Transport: String { case ws, longpoll, xhrStreaming = "xhr_streaming" }

/// Command line of halley-fanout. No Foundation: parsed by hand.
struct Options {
    var server = ServerKind.halley
    var transport = Transport.ws
    var host = "127.0.0.1"
    var port = 0
    var subscribers = 1000
    var channel = "bench"
    var appKey = "app-key"
    var token = "benchtoken"
    var size = 64
    var rate = 100.0
    var duration = 10.0
    var warmup = 1.0
    var window = 16
    var publishers = 4
    var phases: [String] = ["latency", "capacity"]
    var connectInflight = 256
    var connectTimeout = 60.0
    var syncTimeout = 30.0
    var drainTimeout = 5.0
    var lossTimeout = 15.0
    var readIntervalUs = 0
    var busyPoll = false
    var serverPids: [Int32] = []
    var selfTest = false

    static let usage = """
        usage: halley-fanout --server halley|nchan --transport ws|longpoll|xhr_streaming --port PORT [options]
               halley-fanout --self-test

        Fan-out load generator: N subscribers on one channel (WebSocket or long-polling, against
        halley or Nchan) and a publisher, all in this one thread (epoll, non-blocking sockets). Each
        published data string starts with "#s<seq>t<CLOCK_MONOTONIC ns>#" (then padding to
        --size), so subscribers compute delivery latency and check that every message arrived once
        and in order.

        Steps: open every subscriber (and subscribe: halley answers subscription_succeeded); sync
        (publish a message every 50 ms until every subscriber has received one); then the phases:
          latency   publish at --rate msg/s for --duration s (open loop, on a schedule); wait up to
                    --drain-timeout s for the last deliveries; latency over every delivery of those
                    messages; every subscriber must get every message (missing= counts the others)
          capacity  closed loop: publish while fewer than --window messages are not yet delivered
                    to every subscriber (and a publisher connection is free); after --warmup s,
                    count deliveries for --duration s
        One line per phase on stdout ("phase=NAME key=value ..."); progress and errors on stderr.
        Exit status 0 when everything arrived and nothing failed, 1 otherwise, 2 on bad usage.

        Halley: WebSocket /app/KEY?protocol=7&client=bench&version=1, pusher:subscribe; long-poll
        /halley/poll?key=KEY, POST /halley/send (pusher:subscribe), /halley/poll?session&token&cursor;
        publish POST /publish {"channel","event":"tick","data"} with Authorization: Bearer TOKEN.
        pusher-js xhr_streaming (halley): POST /pusher/app/KEY/S/ID/xhr (the session's `o`), POST
        .../xhr_send ["{pusher:subscribe}"], then POST .../xhr_streaming on the same keep-alive
        connection, read as chunks of `a[...]` lines; past 256 KiB of stream, at a line boundary,
        the subscriber closes the connection and opens the next stream for the same session, as
        pusher-js does (rotations= counts them).
        Nchan: WebSocket and long-poll GET /sub/CHANNEL (If-Modified-Since / If-None-Match from the
        previous answer); publish POST /pub/CHANNEL with the data as body.

        options:
          --server halley|nchan     (default halley)
          --transport ws|longpoll|xhr_streaming  (default ws; xhr_streaming: halley only)
          --host H --port P         server address (default host 127.0.0.1)
          --subscribers N           (default 1000)
          --channel NAME            (default bench)
          --app-key KEY             halley app key (default app-key)
          --token TOKEN             halley bearer token for POST /publish (default benchtoken)
          --size BYTES              data string size (default 64; at least the marker)
          --rate R                  latency phase publish rate, messages/s (default 100)
          --duration S              seconds per phase (default 10)
          --warmup S                capacity phase: load before counting (default 1)
          --window W                capacity phase: messages not yet delivered everywhere (default 16)
          --publishers P            publisher connections, one request in flight each (default 4)
          --phases LIST             comma-separated: latency,capacity (default both)
          --connect-inflight N      subscribers being opened at once (default 256)
          --connect-timeout S       to open and subscribe every subscriber (default 60)
          --sync-timeout S          for every subscriber to receive a first message (default 30)
          --drain-timeout S         after a phase, for the last deliveries (default 5)
          --read-interval-us N      capacity phase: look for socket events at most once per N µs
                                    (sleeping in between), so that each read takes several messages
                                    and the client sends fewer ACKs (default 0: as soon as they come)
          --busy-poll               capacity phase: never sleep in epoll_wait (no wake-ups; the
                                    tool's CPU share is then 100%: see client_wait_pct)
          --loss-timeout S          a message not delivered everywhere after S s no longer holds
                                    the capacity window (stalls=; counted missing at the end unless
                                    it arrives in the drain) (default 15)
          --server-pid PID          add the CPU time of this process over each phase (repeatable)
          --self-test               check the frame, HTTP and marker parsers and exit
        """

    static func parse(_ args: [String]) -> Options {
        var o = Options()
        var i = 0
        func fail(_ msg: String) -> Never {
            writeStderr("halley-fanout: \(msg)\n\(usage)\n")
            exit(2)
        }
        func value() -> String {
            i += 1
            guard i < args.count else { fail("\(args[i - 1]) needs a value") }
            return args[i]
        }
        func int(_ min: Int) -> Int {
            let name = args[i]
            let v = value()
            guard let n = Int(v), n >= min else { fail("\(name): expected an integer >= \(min), got '\(v)'") }
            return n
        }
        func double(_ min: Double) -> Double {
            let name = args[i]
            let v = value()
            guard let d = Double(v), d >= min, d.isFinite else {
                fail("\(name): expected a number >= \(min), got '\(v)'")
            }
            return d
        }
        while i < args.count {
            switch args[i] {
            case "--server":
                let v = value()
                guard let s = ServerKind(rawValue: v) else { fail("--server: halley or nchan, got '\(v)'") }
                o.server = s
            case "--transport":
                let v = value()
                guard let t = Transport(rawValue: v) else {
                    fail("--transport: ws, longpoll or xhr_streaming, got '\(v)'")
                }
                o.transport = t
            case "--host": o.host = value()
            case "--port": o.port = int(1)
            case "--subscribers", "-n": o.subscribers = int(1)
            case "--channel": o.channel = value()
            case "--app-key": o.appKey = value()
            case "--token": o.token = value()
            case "--size": o.size = int(1)
            case "--rate": o.rate = double(0.1)
            case "--duration", "-d": o.duration = double(0.1)
            case "--warmup": o.warmup = double(0)
            case "--window": o.window = int(1)
            case "--publishers": o.publishers = int(1)
            case "--phases":
                o.phases = value().split(separator: ",").map(String.init)
                for p in o.phases where p != "latency" && p != "capacity" { fail("--phases: unknown phase '\(p)'") }
            case "--connect-inflight": o.connectInflight = int(1)
            case "--connect-timeout": o.connectTimeout = double(1)
            case "--sync-timeout": o.syncTimeout = double(1)
            case "--drain-timeout": o.drainTimeout = double(0.1)
            case "--loss-timeout": o.lossTimeout = double(0.1)
            case "--read-interval-us": o.readIntervalUs = int(0)
            case "--busy-poll": o.busyPoll = true
            case "--server-pid": o.serverPids.append(Int32(int(1)))
            case "--self-test": o.selfTest = true
            case "--help", "-h":
                print(usage)
                exit(0)
            default: fail("unknown argument '\(args[i])'")
            }
            i += 1
        }
        if o.selfTest { return o }
        guard o.port > 0 && o.port < 65536 else { fail("--port is required") }
        if o.host == "localhost" { o.host = "127.0.0.1" }
        if o.transport == .xhrStreaming && o.server != .halley { fail("--transport xhr_streaming: halley only") }
        guard o.window < Bench.ringSize / 2 else { fail("--window: at most \(Bench.ringSize / 2 - 1)") }
        guard o.size <= 1 << 20 else { fail("--size: at most 1 MiB") }
        guard
            o.channel.utf8.allSatisfy({
                ($0 >= 48 && $0 <= 57) || ($0 >= 65 && $0 <= 90) || ($0 >= 97 && $0 <= 122) || $0 == 45 || $0 == 95
            })
        else {
            fail("--channel: letters, digits, - and _ only")
        }
        return o
    }
}
