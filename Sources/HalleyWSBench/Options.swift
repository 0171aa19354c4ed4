#if canImport(Glibc)
import Glibc
#endif

/// Command line of halley-wsbench. No Foundation: parsed by hand.
struct Options {
    var host = "127.0.0.1"
    var port = 0
    var path = "/echo"
    var connections = 100
    var size = 32
    var duration = 10.0
    var warmup = 1.0
    var binary = false
    var deflate = false
    /// Compare the echoed bytes with the sent ones for every Nth echo (0: never). The length
    /// of every echo is always checked.
    var verifyEvery = 1
    /// Connections being opened (TCP connect + upgrade) at once.
    var connectInflight = 256
    var connectTimeout = 30.0
    /// After the measured window: how long to wait for the echoes still in flight, and then
    /// for the closing handshakes.
    var drainTimeout = 5.0
    /// Processes whose CPU time (utime + stime from /proc/PID/stat) is read at the start and
    /// the end of the measured window.
    var serverPids: [Int32] = []
    /// wss:// (or --tls): TLS before the upgrade.
    var tls = false
    /// --handshakes: the TLS handshake rate instead of echoes (see usage).
    var handshakes = false
    /// --handshakes: after each handshake send `GET path` (Connection: close) and read the
    /// response, instead of closing right away.
    var httpRequest = false

    static let usage = """
        usage: halley-wsbench --url ws://HOST:PORT/PATH [options]
               halley-wsbench --url wss://HOST:PORT/PATH [options]
               halley-wsbench --handshakes --url https://HOST:PORT/PATH [options]

        A closed-loop WebSocket echo load generator: N connections each send one masked message
        of SIZE bytes and wait for its echo before sending the next. One thread, epoll,
        non-blocking sockets. After --warmup seconds it counts echoes for --duration seconds and
        prints one line on stdout:
          messages=M seconds=S msgs_per_sec=R p50_us=A p99_us=B [more key=value fields]
        Progress and errors go to stderr. Exit status 0 when every connection opened and every
        echo was right, 1 otherwise (2: bad usage).

        options:
          --url URL               ws://HOST:PORT/PATH (HOST: IPv4 literal or localhost);
                                  wss:// (or https://) for TLS
          --tls                   TLS even with a ws:// URL. OpenSSL client on the socket: no
                                  certificate verification, no SNI, no ALPN, no session reuse
          --connections N         connections (default 100)
          --size BYTES            message size (default 32)
          --duration SECONDS      measured window (default 10)
          --warmup SECONDS        load before the window, not counted (default 1)
          --binary                send binary messages (default text: ASCII payloads)
          --deflate               offer "permessage-deflate; client_no_context_takeover" and,
                                  when accepted, send compressed messages (RSV1); compressed
                                  echoes are inflated and checked like plain ones
          --verify-every N        compare echoed content for every Nth echo (default 1; 0: never;
                                  the length is always checked)
          --connect-inflight N    connections opened at once (default 256)
          --connect-timeout S     time allowed to open every connection (default 30)
          --drain-timeout S       wait for late echoes, then for close replies (default 5 each)
          --server-pid PID        read this process's CPU time (/proc/PID/stat) at the start and
                                  end of the window: adds server_cpu_s, server_cpu_pct and
                                  msgs_per_server_cpu_s (repeatable: the times are summed)

        --handshakes: full TLS handshakes per second instead of echoes. --connections N
        handshakes are kept in flight: each one connects, runs a full handshake (a new SSL,
        no session cache, no resumption, no TLS 1.2 ticket), then sends close_notify and waits
        for the server to close (or, with --http-request, sends GET PATH with Connection: close
        and reads the response to the end), closes, and a new one starts. The line then reads
          handshakes=H seconds=S handshakes_per_sec=R [handshakes_per_server_cpu_s=...] ...
          --http-request          one GET per connection after the handshake (see above)

        The line also has client_cpu_pct (this process, getrusage) and core_busy_pct (every
        core's busy share over the window, from /proc/stat).
        """

    static func parse(_ args: [String]) -> Options {
        var o = Options()
        var url: String? = nil
        var i = 0
        func fail(_ msg: String) -> Never {
            writeStderr("halley-wsbench: \(msg)\n\(usage)\n")
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
            case "--url": url = value()
            case "--connections", "-c": o.connections = int(1)
            case "--size", "-s": o.size = int(0)
            case "--duration", "-d": o.duration = double(0.1)
            case "--warmup": o.warmup = double(0)
            case "--binary": o.binary = true
            case "--deflate": o.deflate = true
            case "--verify-every": o.verifyEvery = int(0)
            case "--connect-inflight": o.connectInflight = int(1)
            case "--connect-timeout": o.connectTimeout = double(1)
            case "--drain-timeout": o.drainTimeout = double(0.1)
            case "--server-pid": o.serverPids.append(Int32(int(1)))
            case "--tls": o.tls = true
            case "--handshakes": o.handshakes = true
            case "--http-request": o.httpRequest = true
            case "--help", "-h":
                print(usage)
                exit(0)
            default: fail("unknown argument '\(args[i])'")
            }
            i += 1
        }
        guard let u = url else { fail("--url is required") }
        let schemes = ["ws://", "wss://", "https://", "http://"]
        guard let scheme = schemes.first(where: { u.hasPrefix($0) }) else {
            fail("--url: only ws://, wss:// (and https:// for --handshakes) URLs are supported, got '\(u)'")
        }
        if scheme == "wss://" || scheme == "https://" { o.tls = true }
        if o.handshakes { o.tls = true }
        if !o.handshakes && scheme.hasPrefix("http") { fail("--url: http(s):// only with --handshakes") }
        let rest = u.dropFirst(scheme.count)
        let hostPort: Substring
        if let slash = rest.firstIndex(of: "/") {
            hostPort = rest[..<slash]
            o.path = String(rest[slash...])
        } else {
            hostPort = rest
            o.path = "/"
        }
        guard let colon = hostPort.lastIndex(of: ":"), let p = Int(hostPort[hostPort.index(after: colon)...]),
            p > 0, p < 65536
        else { fail("--url: expected \(scheme)HOST:PORT/PATH with a port, got '\(u)'") }
        o.port = p
        o.host = String(hostPort[..<colon])
        if o.host == "localhost" { o.host = "127.0.0.1" }
        // An arbitrary cap: the message pool and the reassembly checks assume sane sizes.
        guard o.size <= 64 << 20 else { fail("--size: at most 64 MiB") }
        return o
    }
}

// MARK: small helpers (no Foundation)

/// `x` with `decimals` digits after the point.
func fixed(_ x: Double, _ decimals: Int) -> String {
    guard x.isFinite else { return "\(x)" }
    var scale = 1.0
    for _ in 0..<decimals { scale *= 10 }
    let negative = x < 0
    let v = (abs(x) * scale).rounded()
    let whole = Int64(v / scale)
    var frac = String(Int64(v - Double(whole) * scale))
    while frac.count < decimals { frac = "0" + frac }
    return (negative && v != 0 ? "-" : "") + String(whole) + (decimals > 0 ? "." + frac : "")
}

func warn(_ s: String) {
    writeStderr("halley-wsbench: \(s)\n")
}

func writeStderr(_ s: String) {
    var t = s
    t.withUTF8 { b in
        var off = 0
        while off < b.count {
            let w = write(2, b.baseAddress! + off, b.count - off)
            if w <= 0 { return }
            off += w
        }
    }
}

func errnoString(_ e: Int32 = errno) -> String {
    String(cString: strerror(e))
}

@inline(__always)
func monotonicNanos() -> Int64 {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return Int64(ts.tv_sec) &* 1_000_000_000 &+ Int64(ts.tv_nsec)
}

/// User and system CPU seconds of this process.
func cpuSeconds() -> (user: Double, system: Double) {
    var ru = rusage()
    getrusage(RUSAGE_SELF.rawValue, &ru)
    return (
        Double(ru.ru_utime.tv_sec) + Double(ru.ru_utime.tv_usec) / 1e6,
        Double(ru.ru_stime.tv_sec) + Double(ru.ru_stime.tv_usec) / 1e6
    )
}

private let base64Alphabet = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/".utf8)

/// RFC 4648 base64, padded. Written here rather than taken from the server's modules so that
/// the load tool checks the server's handshake independently.
func base64(_ bytes: [UInt8]) -> String {
    var out: [UInt8] = []
    out.reserveCapacity((bytes.count + 2) / 3 * 4)
    var i = 0
    while i + 3 <= bytes.count {
        let v = UInt32(bytes[i]) << 16 | UInt32(bytes[i + 1]) << 8 | UInt32(bytes[i + 2])
        for s in [18, 12, 6, 0] { out.append(base64Alphabet[Int(v >> UInt32(s)) & 63]) }
        i += 3
    }
    let rest = bytes.count - i
    if rest > 0 {
        let v = UInt32(bytes[i]) << 16 | (rest == 2 ? UInt32(bytes[i + 1]) << 8 : 0)
        out.append(base64Alphabet[Int(v >> 18) & 63])
        out.append(base64Alphabet[Int(v >> 12) & 63])
        out.append(rest == 2 ? base64Alphabet[Int(v >> 6) & 63] : UInt8(ascii: "="))
        out.append(UInt8(ascii: "="))
    }
    return String(decoding: out, as: UTF8.self)
}

/// utime + stime of a process in seconds, from /proc/PID/stat; nil when it cannot be read.
func processCPUSeconds(_ pid: Int32) -> Double? {
    guard let text = readSmallFile("/proc/\(pid)/stat") else { return nil }
    // The command name (field 2) may hold spaces and parentheses: fields after the last ')'.
    guard let close = text.lastIndex(of: ")") else { return nil }
    let fields = text[text.index(after: close)...].split(separator: " ")
    // fields[0] is the state (field 3): utime is field 14, stime field 15.
    guard fields.count > 12, let u = Double(fields[11]), let s = Double(fields[12]) else { return nil }
    return (u + s) / Double(sysconf(Int32(_SC_CLK_TCK)))
}

/// (total, idle) jiffies of every core, from /proc/stat ("cpuN" lines; idle includes iowait).
func coreTimes() -> [(Int, Int)] {
    guard let text = readSmallFile("/proc/stat") else { return [] }
    var out: [(Int, Int)] = []
    for line in text.split(separator: "\n") where line.hasPrefix("cpu") && !line.hasPrefix("cpu ") {
        let v = line.split(separator: " ").dropFirst().compactMap { Int($0) }
        guard v.count >= 5 else { continue }
        out.append((v.reduce(0, +), v[3] + v[4]))
    }
    return out
}

func readSmallFile(_ path: String) -> String? {
    let fd = open(path, O_RDONLY | O_CLOEXEC)
    if fd < 0 { return nil }
    defer { close(fd) }
    var bytes: [UInt8] = []
    var chunk = [UInt8](repeating: 0, count: 16384)
    while true {
        let n = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
        if n <= 0 { break }
        bytes += chunk[0..<n]
    }
    return String(decoding: bytes, as: UTF8.self)
}
