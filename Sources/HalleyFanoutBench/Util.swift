#if canImport(Glibc)
import Glibc
#endif

// Small helpers with no Foundation: time, CPU accounting, stderr, formatting, SHA-1, base64,
// and a growable byte buffer in raw memory.

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

/// utime + stime of a process in seconds, from /proc/PID/stat; nil when it cannot be read.
func processCPUSeconds(_ pid: Int32) -> Double? {
    guard let text = readSmallFile("/proc/\(pid)/stat") else { return nil }
    guard let close = text.lastIndex(of: ")") else { return nil }
    let fields = text[text.index(after: close)...].split(separator: " ")
    guard fields.count > 12, let u = Double(fields[11]), let s = Double(fields[12]) else { return nil }
    return (u + s) / Double(sysconf(Int32(_SC_CLK_TCK)))
}

/// utime + stime of the processes in `pids`, summed; nil when one cannot be read.
func processesCPUSeconds(_ pids: [Int32]) -> Double? {
    var total = 0.0
    for p in pids {
        guard let s = processCPUSeconds(p) else { return nil }
        total += s
    }
    return total
}

/// The kernel's per-core softirq threads, "ksoftirqd/N": (core, pid). Softirq work they do
/// (loopback packets under load) is charged to them, not to the server or the tool.
func softirqThreads() -> [(Int, Int32)] {
    var out: [(Int, Int32)] = []
    guard let dir = opendir("/proc") else { return out }
    defer { closedir(dir) }
    while let e = readdir(dir) {
        let name = withUnsafeBytes(of: e.pointee.d_name) { raw in
            String(decoding: raw.prefix(while: { $0 != 0 }), as: UTF8.self)
        }
        guard let pid = Int32(name) else { continue }
        guard let comm = readSmallFile("/proc/\(pid)/comm"), comm.hasPrefix("ksoftirqd/") else { continue }
        if let core = Int(comm.dropFirst(10).prefix(while: { $0 != "\n" })) { out.append((core, pid)) }
    }
    return out.sorted { $0.0 < $1.0 }
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

func coreBusy(_ a: [(Int, Int)], _ b: [(Int, Int)]) -> String {
    guard a.count == b.count, !a.isEmpty else { return "?" }
    return zip(a, b).enumerated().map { (k, p) -> String in
        let total = p.1.0 - p.0.0, idle = p.1.1 - p.0.1
        return "\(k):\(total > 0 ? 100 * (total - idle) / total : 0)"
    }.joined(separator: ",")
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

func writeStderr(_ s: String) { writeFD(2, s) }

/// Unbuffered: result lines reach a pipe at once, in order with stderr.
func writeStdout(_ s: String) { writeFD(1, s) }

func warn(_ s: String) {
    writeStderr("halley-fanout: \(s)\n")
}

func errnoString(_ e: Int32 = errno) -> String {
    String(cString: strerror(e))
}

// MARK: SHA-1 (RFC 3174), for Sec-WebSocket-Accept; the tool depends on no crypto library.

func sha1(_ message: [UInt8]) -> [UInt8] {
    var h: (UInt32, UInt32, UInt32, UInt32, UInt32) = (0x6745_2301, 0xEFCD_AB89, 0x98BA_DCFE, 0x1032_5476, 0xC3D2_E1F0)
    var m = message
    let bitLength = UInt64(message.count) * 8
    m.append(0x80)
    while m.count % 64 != 56 { m.append(0) }
    for s in stride(from: 56, through: 0, by: -8) { m.append(UInt8(truncatingIfNeeded: bitLength >> UInt64(s))) }
    var w = [UInt32](repeating: 0, count: 80)
    for chunk in stride(from: 0, to: m.count, by: 64) {
        for t in 0..<16 {
            let j = chunk + 4 * t
            w[t] = UInt32(m[j]) << 24 | UInt32(m[j + 1]) << 16 | UInt32(m[j + 2]) << 8 | UInt32(m[j + 3])
        }
        for t in 16..<80 {
            let x = w[t - 3] ^ w[t - 8] ^ w[t - 14] ^ w[t - 16]
            w[t] = x << 1 | x >> 31
        }
        var (a, b, c, d, e) = h
        for t in 0..<80 {
            let f: UInt32, k: UInt32
            switch t {
            case 0..<20: f = (b & c) | (~b & d); k = 0x5A82_7999
            case 20..<40: f = b ^ c ^ d; k = 0x6ED9_EBA1
            case 40..<60: f = (b & c) | (b & d) | (c & d); k = 0x8F1B_BCDC
            default: f = b ^ c ^ d; k = 0xCA62_C1D6
            }
            let temp = (a << 5 | a >> 27) &+ f &+ e &+ k &+ w[t]
            e = d; d = c; c = b << 30 | b >> 2; b = a; a = temp
        }
        h = (h.0 &+ a, h.1 &+ b, h.2 &+ c, h.3 &+ d, h.4 &+ e)
    }
    var out: [UInt8] = []
    for v in [h.0, h.1, h.2, h.3, h.4] {
        out += [UInt8(v >> 24), UInt8((v >> 16) & 0xFF), UInt8((v >> 8) & 0xFF), UInt8(v & 0xFF)]
    }
    return out
}

private let base64Alphabet = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/".utf8)

/// RFC 4648 base64, padded.
func base64(_ bytes: [UInt8]) -> String {
    var out: [UInt8] = []
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

// MARK: raw growable buffer

/// Bytes in malloc'd memory, for per-connection input remainders, queued output and requests.
/// A plain struct kept inside the connection table: no reference counting, no exclusivity
/// checks. `free()` it when the connection goes.
struct ByteBuf {
    var base: UnsafeMutablePointer<UInt8>? = nil
    var count = 0
    var capacity = 0

    @inline(__always)
    var isEmpty: Bool { count == 0 }

    mutating func reserve(_ n: Int) {
        if n <= capacity { return }
        var c = max(capacity, 64)
        while c < n { c *= 2 }
        let p = realloc(base, c)!.assumingMemoryBound(to: UInt8.self)
        base = p
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

    mutating func append(_ s: String) {
        var t = s
        t.withUTF8 { if let b = $0.baseAddress { append(b, $0.count) } }
    }

    /// Appends the decimal digits of a non-negative number.
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

    /// Drops the first `n` bytes.
    mutating func removeFirst(_ n: Int) {
        if n >= count {
            count = 0
            return
        }
        memmove(base!, base! + n, count - n)
        count -= n
    }

    @inline(__always)
    mutating func clear() { count = 0 }

    mutating func free() {
        if let b = base { Glibc.free(b) }
        base = nil
        count = 0
        capacity = 0
    }
}
