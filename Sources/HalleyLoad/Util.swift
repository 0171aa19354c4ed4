#if canImport(Glibc)
import Glibc
#endif
import COpenSSL

// Helpers with no Foundation: time, CPU accounting (getrusage, /proc), output, number
// formatting, SHA-1 and base64 for the WebSocket accept value, a growable byte buffer in raw
// memory and a latency histogram.

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

/// The fields of /proc/PID/stat after the command name (which may hold spaces): [0] is the
/// state (field 3), [11] utime, [12] stime, [36] the core it last ran on.
func procStat(_ pid: Int32) -> [Substring]? {
    guard let text = readSmallFile("/proc/\(pid)/stat"), let close = text.lastIndex(of: ")") else { return nil }
    let f = text[text.index(after: close)...].split(separator: " ")
    return f.count > 36 ? f : nil
}

/// utime + stime of the processes, in seconds; nil when one cannot be read.
func processesCPUSeconds(_ pids: [Int32]) -> Double? {
    var total = 0.0
    for p in pids {
        guard let f = procStat(p), let u = Double(f[11]), let s = Double(f[12]) else { return nil }
        total += (u + s) / Double(sysconf(Int32(_SC_CLK_TCK)))
    }
    return total
}

/// (total, idle) jiffies of every core, from /proc/stat ("cpuN" lines; idle includes iowait).
func coreTimes() -> [(Int, Int)] {
    guard let text = readSmallFile("/proc/stat") else { return [] }
    var out: [(Int, Int)] = []
    for line in text.split(separator: "\n") where line.hasPrefix("cpu") && !line.hasPrefix("cpu ") {
        let v = line.split(separator: " ").dropFirst().compactMap { Int($0) }
        if v.count >= 5 { out.append((v.reduce(0, +), v[3] + v[4])) }
    }
    return out
}

/// The kernel's per-core softirq threads (ksoftirqd/N) by core: loopback work under load is
/// charged to them, not to the server or this tool.
func softirqThreads() -> [Int: Int32] {
    var out: [Int: Int32] = [:]
    guard let dir = opendir("/proc") else { return out }
    defer { closedir(dir) }
    while let e = readdir(dir) {
        let name = withUnsafeBytes(of: e.pointee.d_name) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
        guard let pid = Int32(name), let comm = readSmallFile("/proc/\(pid)/comm"), comm.hasPrefix("ksoftirqd/"),
            let core = Int(comm.dropFirst(10).prefix { $0 != "\n" })
        else { continue }
        out[core] = pid
    }
    return out
}

/// `x` with `decimals` digits after the point.
func fixed(_ x: Double, _ decimals: Int) -> String {
    guard x.isFinite else { return "\(x)" }
    var scale = 1.0
    for _ in 0..<decimals { scale *= 10 }
    let v = (abs(x) * scale).rounded()
    let whole = Int64(v / scale)
    var frac = String(Int64(v - Double(whole) * scale))
    while frac.count < decimals { frac = "0" + frac }
    return (x < 0 && v != 0 ? "-" : "") + String(whole) + (decimals > 0 ? "." + frac : "")
}

/// Unbuffered, so that result lines and messages reach a pipe at once and in order.
func writeFD(_ fd: Int32, _ s: String) {
    var t = s
    t.withUTF8 { b in
        var off = 0
        while off < b.count {
            let w = write(fd, b.baseAddress! + off, b.count - off)
            if w <= 0 { return }
            off += w
        }
    }
}

func warn(_ s: String) { writeFD(2, "halley-load: \(s)\n") }

func errnoString(_ e: Int32 = errno) -> String { String(cString: strerror(e)) }

func sha1(_ bytes: [UInt8]) -> [UInt8] {
    var md = [UInt8](repeating: 0, count: 20)
    var len: UInt32 = 0
    let ok = bytes.withUnsafeBytes { b in
        md.withUnsafeMutableBufferPointer { EVP_Digest(b.baseAddress, b.count, $0.baseAddress, &len, EVP_sha1(), nil) }
    }
    precondition(ok == 1 && len == 20, "EVP_Digest(sha1) failed")
    return md
}

/// RFC 4648 base64, padded; written here so that the tool checks the server's handshake
/// with code of its own.
func base64(_ bytes: [UInt8]) -> String {
    let alphabet = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/".utf8)
    var out: [UInt8] = []
    var i = 0
    while i < bytes.count {
        let n = min(3, bytes.count - i)
        var v: UInt32 = 0
        for k in 0..<3 { v = v << 8 | (k < n ? UInt32(bytes[i + k]) : 0) }
        for k in 0..<4 { out.append(k <= n ? alphabet[Int(v >> UInt32(18 - 6 * k)) & 63] : UInt8(ascii: "=")) }
        i += 3
    }
    return String(decoding: out, as: UTF8.self)
}

/// Bytes in malloc'd memory (input remainders, queued output, requests): a plain struct kept
/// in the connection table, so no reference counting and no exclusivity checks.
struct ByteBuf {
    var base: UnsafeMutablePointer<UInt8>? = nil
    var count = 0
    var capacity = 0

    mutating func reserve(_ n: Int) {
        if n <= capacity { return }
        var c = max(capacity, 64)
        while c < n { c *= 2 }
        base = realloc(base, c)!.assumingMemoryBound(to: UInt8.self)
        capacity = c
    }

    @inline(__always)
    mutating func append(_ p: UnsafePointer<UInt8>, _ n: Int) {
        if n == 0 { return }
        reserve(count + n)
        (base! + count).update(from: p, count: n)
        count += n
    }

    mutating func append(_ bytes: [UInt8]) {
        bytes.withUnsafeBufferPointer { if let b = $0.baseAddress { append(b, $0.count) } }
    }

    mutating func append(_ s: String) { append(Array(s.utf8)) }

    mutating func append(_ other: ByteBuf) { if let b = other.base { append(b, other.count) } }

    /// The decimal digits of a non-negative number.
    mutating func appendDecimal(_ v: Int64) {
        var digits: (UInt64, UInt64, UInt64) = (0, 0, 0)  // 24 bytes of stack
        withUnsafeMutableBytes(of: &digits) { d in
            var x = UInt64(max(0, v))
            var k = 24
            repeat {
                k -= 1
                d[k] = UInt8(48 + x % 10)
                x /= 10
            } while x > 0
            append(d.baseAddress!.assumingMemoryBound(to: UInt8.self) + k, 24 - k)
        }
    }

    mutating func removeFirst(_ n: Int) {
        if n < count { memmove(base!, base! + n, count - n) }
        count = max(0, count - n)
    }

    @inline(__always)
    mutating func clear() { count = 0 }

    mutating func free() {
        Glibc.free(base)
        self = ByteBuf()
    }

    var bytes: [UInt8] { base.map { Array(UnsafeBufferPointer(start: $0, count: count)) } ?? [] }
}

/// Latency histogram: 1 µs buckets below 65,536 µs, then 1,024 µs buckets (to 67 s).
struct Histogram {
    static let buckets = 131_072
    let counts: UnsafeMutablePointer<UInt32>
    let sums: UnsafeMutablePointer<Int64>  // count, sum of ns, max ns

    init() {
        counts = .allocate(capacity: Self.buckets)
        sums = .allocate(capacity: 3)
        reset()
    }

    func reset() {
        counts.initialize(repeating: 0, count: Self.buckets)
        sums.initialize(repeating: 0, count: 3)
    }

    @inline(__always)
    func add(_ ns: Int64) {
        let us = Int(max(0, ns) / 1000)
        counts[us < 65536 ? us : 65536 + min((us - 65536) >> 10, 65535)] += 1
        sums[0] += 1
        sums[1] += ns
        if ns > sums[2] { sums[2] = ns }
    }

    var count: Int { Int(sums[0]) }

    /// The q-quantile in µs.
    func percentile(_ q: Double) -> Int {
        guard count > 0 else { return 0 }
        let rank = max(1, Int((q * Double(count)).rounded(.up)))
        var seen = 0
        for b in 0..<Self.buckets {
            seen += Int(counts[b])
            if seen >= rank { return b < 65536 ? b : 65536 + (b - 65536) << 10 }
        }
        return 0
    }

    /// "p50_us=… p90_us=… p99_us=… p999_us=… max_us=… mean_us=…"
    var fields: String {
        let mean = count > 0 ? Double(sums[1]) / Double(count) / 1000 : 0
        return "p50_us=\(percentile(0.5)) p90_us=\(percentile(0.9)) p99_us=\(percentile(0.99))"
            + " p999_us=\(percentile(0.999)) max_us=\(sums[2] / 1000) mean_us=\(fixed(mean, 1))"
    }
}
