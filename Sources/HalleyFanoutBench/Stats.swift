#if canImport(Glibc)
import Glibc
#endif

/// Counters touched on the hot path, in memory allocated once.
struct Stats {
    var live = 0
    var connecting = 0
    var ready = 0
    var failed = 0
    var errors = 0
    var gotFirst = 0
    // Publishing.
    var mode = PublishMode.off
    var nextSeq: Int64 = 0
    var oldest: Int64 = 0
    var target = 0
    var window = 16
    var interval: Int64 = 0
    var nextDue: Int64 = 0
    var timerArmedFor: Int64 = -1
    var freeCount = 0
    var published = 0
    var pubAnswers = 0
    var pub202 = 0
    var pubBehindMax: Int64 = 0
    var pubLate = 0
    var stalls = 0
    // Deliveries.
    var rangeFrom: Int64 = 0
    var rangeTo: Int64 = .max
    /// Deliveries of messages in [rangeFrom, rangeTo), duplicates not counted.
    var rangeReceived = 0
    var deliveries = 0
    var measuring = false
    var windowDeliveries = 0
    var dups = 0
    var skipped = 0
    var reordered = 0
    var foreign = 0
    var other = 0
    var pings = 0
    var reconnects = 0
    /// xhr_streaming: streams closed past 256 KiB and opened again (pusher-js rotation).
    var rotations = 0
    var latCount = 0
    var latSum: Int64 = 0
    var latMax: Int64 = 0
    var pubCount = 0
    var pubSum: Int64 = 0
    var pubMax: Int64 = 0
    var idleNs: Int64 = 0
}

/// Latency histogram: 1 µs buckets below 65,536 µs, then 1,024 µs buckets.
struct Histogram {
    static let buckets = 131_072
    let counts: UnsafeMutablePointer<UInt32>

    init() {
        counts = .allocate(capacity: Self.buckets)
        counts.initialize(repeating: 0, count: Self.buckets)
    }

    func reset() { counts.update(repeating: 0, count: Self.buckets) }

    @inline(__always)
    func add(_ ns: Int64) {
        let us = Int(max(0, ns) / 1000)
        counts[us < 65536 ? us : 65536 + min((us - 65536) >> 10, 65535)] += 1
    }

    /// The q-quantile in µs of `total` samples.
    func percentile(_ q: Double, total: Int) -> Int {
        guard total > 0 else { return 0 }
        let rank = max(1, Int((q * Double(total)).rounded(.up)))
        var seen = 0
        for b in 0..<Self.buckets {
            seen += Int(counts[b])
            if seen >= rank { return b < 65536 ? b : 65536 + (b - 65536) << 10 }
        }
        return 0
    }
}
