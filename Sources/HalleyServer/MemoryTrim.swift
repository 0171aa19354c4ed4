#if canImport(Glibc)
import Glibc
#endif
import CHalleyLinux
import HalleyCore
import Synchronization

/// Gives memory back to the system after a load has gone. glibc keeps freed heap pages in its
/// arenas (one per thread that allocates: each loop has its own) for reuse: after 10,000
/// sessions with 50,000 subscriptions closed, the hub stayed at 35 MB where it started at
/// 15 MB, and a second identical round ended at the same 35 MB (retention, not a leak:
/// `Scripts/bench/memory_rounds.py`). `malloc_trim(0)` returns the free pages of every arena.
///
/// When: checked every second by loop 0; when the open connections have fallen by at least
/// 1,000 and by half from their peak since the last trim, trim 5 s later (the closing is
/// usually a wave), and once more 40 s after that (sessions that outlived their connections
/// by the linger time have ended by then).
///
/// And under a steady load, once every `steadySeconds` (60) when the allocator holds at least
/// `steadyFreeBytes` (1 MiB) free: churn frees chunks all over the heap, and the pages of those
/// free chunks stay resident as they are reused and freed again, so RSS crept up towards the
/// heap's size (in use + free) while the bytes in use stayed flat (the 30-minute soak: +0.15 to
/// 0.35 MB a minute at 10,000 clients with churn, in use flat at 44–46 MB). A trim walks the
/// heap: a few milliseconds on loop 0 for tens of megabytes (`halley_memory_trim_milliseconds_total`).
final class MemoryTrim: Sendable {
    static let steadySeconds: Int32 = 60
    static let steadyFreeBytes = 1 << 20

    struct State {
        var peak = 0
        var first: Int32?
        var again: Int32?
        var lastTrim: Int32 = 0
        var trims = 0
        var millis = 0
    }
    let state = Locked(State())
    /// `malloc_trim(0)`; a test counts the calls instead.
    let trimmer: @Sendable () -> Int32
    /// The heap's bytes in use and free; a test gives its own.
    let heap: @Sendable () -> (inUse: Int, free: Int)

    init(trimmer: @escaping @Sendable () -> Int32 = { halley_malloc_trim() },
         heap: @escaping @Sendable () -> (inUse: Int, free: Int) = { MemoryTrim.heapBytes() }) {
        self.trimmer = trimmer
        self.heap = heap
    }

    /// Called by loop 0 every second with the connection count and the loop's second.
    func check(connections: Int, now: Int32) {
        let trim = state.withLock { s -> Bool in
            s.peak = max(s.peak, connections)
            if s.peak - connections >= max(1000, s.peak / 2) {
                s.peak = connections
                s.first = now + 5
            }
            if let f = s.first, now >= f {
                s.first = nil
                s.again = now + 40
                return true
            }
            if let a = s.again, now >= a {
                s.again = nil
                return true
            }
            return false
        }
        var why = "after a drop to \(connections) connections"
        if !trim {
            guard state.withLock({ now - $0.lastTrim >= Self.steadySeconds }) else { return }
            let free = heap().free
            guard free >= Self.steadyFreeBytes else {
                state.withLock { $0.lastTrim = now }
                return
            }
            why = "steady, \(free / 1024) KiB free in the heap"
        }
        let start = Clock.monotonicMillis()
        let released = trimmer()
        let took = Int(Clock.monotonicMillis() - start)
        state.withLock {
            $0.trims += 1
            $0.millis += took
            $0.lastTrim = now
        }
        Log.debug("memory: malloc_trim \(why) (\(took) ms, released: \(released != 0))")
    }

    var trims: Int { state.withLock { $0.trims } }

    /// The heap's bytes in use by the hub and held free by the allocator (glibc's `mallinfo2`,
    /// every arena): beside RSS, it tells a leak (in use grows) from fragmentation (free grows).
    static func heapBytes() -> (inUse: Int, free: Int) {
        var inUse = 0, free = 0
        halley_heap_bytes(&inUse, &free)
        return (inUse, free)
    }

    func metricsText() -> String {
        let heap = Self.heapBytes()
        let (trims, millis) = state.withLock { ($0.trims, $0.millis) }
        return Metrics.family("halley_memory_trims_total", "counter",
                              "Times freed heap memory was given back to the system (after a load went, or once a minute).", [("", trims)])
            + Metrics.family("halley_memory_trim_milliseconds_total", "counter", "Time loop 0 spent giving freed heap memory back.", [("", millis)])
            + Metrics.family("halley_heap_bytes", "gauge", "Heap bytes in use and held free by the allocator (every arena).",
                             [("{state=\"in_use\"}", heap.inUse), ("{state=\"free\"}", heap.free)])
    }
}
