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
/// by the linger time have ended by then). A trim walks the heap: a few milliseconds on loop
/// 0 for tens of megabytes, once per load.
final class MemoryTrim: Sendable {
    /// Blocks of 128 KiB and more get pages of their own (mmap), given back when freed.
    /// glibc starts there too, but when it frees an mmapped block larger than the bar (and
    /// at most 32 MiB) it raises the bar to that size (and the trim threshold to twice it),
    /// after which a dictionary or array that grows past 128 KiB (sessions by id, the
    /// ended-session records, a slow consumer's queue) is carved out of the heap, and the
    /// hole it leaves when it moves or goes stays resident: in the soak, RSS stepped up by
    /// MBs long after the warm-up while the bytes in use stayed flat (README, "Soak"). A
    /// fixed bar also keeps the trim threshold at 128 KiB. Process-wide (a program that
    /// embeds the server gets it too); skipped when the operator set the threshold
    /// (`glibc.malloc.mmap_threshold` in `GLIBC_TUNABLES`, or `MALLOC_MMAP_THRESHOLD_`).
    static func fixMmapThreshold() {
        if let t = getenv("GLIBC_TUNABLES"), String(cString: t).contains("mmap_threshold") { return }
        if getenv("MALLOC_MMAP_THRESHOLD_") != nil { return }
        _ = halley_fixed_mmap_threshold(128 * 1024)
    }

    struct State {
        var peak = 0
        var first: Int32?
        var again: Int32?
        var trims = 0
    }
    let state = Locked(State())
    /// `malloc_trim(0)`; a test counts the calls instead.
    let trimmer: @Sendable () -> Int32

    init(trimmer: @escaping @Sendable () -> Int32 = { halley_malloc_trim() }) {
        self.trimmer = trimmer
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
        guard trim else { return }
        let start = Clock.monotonicMillis()
        let released = trimmer()
        let took = Clock.monotonicMillis() - start
        state.withLock { $0.trims += 1 }
        Log.debug(
            "memory: malloc_trim after a drop to \(connections) connections (\(took) ms, released: \(released != 0))")
    }

    var trims: Int { state.withLock { $0.trims } }

    /// The heap's bytes in use by the hub and held free by the allocator (glibc's `mallinfo2`,
    /// every arena): beside RSS, it tells a leak (in use grows) from the allocator's keep (free
    /// grows) and from pages written late (RSS grows, neither does: README, "Soak"). A
    /// `malloc_trim(0)` once a minute under the soak's load gave nothing back (the free chunks
    /// are small and scattered between live ones): only the trims after a load went are kept.
    static func heapBytes() -> (inUse: Int, free: Int) {
        var inUse = 0, free = 0
        halley_heap_bytes(&inUse, &free)
        return (inUse, free)
    }

    func metricsText() -> String {
        let heap = Self.heapBytes()
        return Metrics.family(
            "halley_memory_trims_total", "counter",
            "Times freed heap memory was given back to the system after a load went.", [("", trims)])
            + Metrics.family(
                "halley_heap_bytes", "gauge", "Heap bytes in use and held free by the allocator (every arena).",
                [("{state=\"in_use\"}", heap.inUse), ("{state=\"free\"}", heap.free)])
    }
}
