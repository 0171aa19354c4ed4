import Testing
import HalleyCore
@testable import HalleyServer

/// When the hub gives freed heap back (issue 18): 5 s after the connections fell by half and by
/// at least 1,000 from their peak, and once more 40 s later; never for small swings.
@Suite struct MemoryTrimTests {
    @Test func trimsAfterALoadWentAndOnceMoreLater() {
        let calls = Locked(0)
        let m = MemoryTrim(trimmer: { calls.withLock { $0 += 1 }; return 1 }, heap: { (inUse: 40 << 20, free: 0) })
        var t: Int32 = 0
        func tick(_ connections: Int, seconds: Int32 = 1) {
            for _ in 0..<seconds { t += 1; m.check(connections: connections, now: t) }
        }
        tick(200, seconds: 10)
        tick(120, seconds: 10)  // small: under 1,000
        #expect(calls.withLock { $0 } == 0)
        tick(5000, seconds: 5)
        tick(3000, seconds: 10)  // 2,000 down but not half
        #expect(calls.withLock { $0 } == 0)
        tick(100, seconds: 4)
        #expect(calls.withLock { $0 } == 0)  // waits 5 s for the wave to finish
        tick(100, seconds: 2)
        #expect(calls.withLock { $0 } == 1)
        tick(100, seconds: 38)
        #expect(calls.withLock { $0 } == 1)
        tick(100, seconds: 2)
        #expect(calls.withLock { $0 } == 2)  // 40 s later: the sessions that lingered are gone
        tick(100, seconds: 100)
        #expect(calls.withLock { $0 } == 2 && m.trims == 2)
    }

    /// Under a steady load: once a minute when the allocator holds 1 MiB or more free, and a
    /// trim after a drop restarts that minute.
    @Test func trimsOnceAMinuteWhenTheHeapHoldsFreeMemory() {
        let calls = Locked(0)
        let free = Locked(0)
        let m = MemoryTrim(trimmer: { calls.withLock { $0 += 1 }; return 1 }, heap: { (inUse: 40 << 20, free: free.withLock { $0 }) })
        var t: Int32 = 0
        func tick(_ seconds: Int32, connections: Int = 5000) {
            for _ in 0..<seconds { t += 1; m.check(connections: connections, now: t) }
        }
        free.withLock { $0 = (1 << 20) - 1 }
        tick(200)
        #expect(calls.withLock { $0 } == 0)  // under 1 MiB free: nothing to give back
        free.withLock { $0 = 1 << 20 }
        tick(39)  // the heap was last looked at in second 180
        #expect(calls.withLock { $0 } == 0)
        tick(1)
        #expect(calls.withLock { $0 } == 1)
        tick(59)
        #expect(calls.withLock { $0 } == 1)
        tick(1)
        #expect(calls.withLock { $0 } == 2)
        tick(30)
        tick(6, connections: 100)  // a drop: trimmed 5 s after it
        #expect(calls.withLock { $0 } == 3)
        tick(40, connections: 100)  // and again 40 s later
        #expect(calls.withLock { $0 } == 4)
        tick(59, connections: 100)
        #expect(calls.withLock { $0 } == 4)  // the minute counts from the last trim
        tick(1, connections: 100)
        #expect(calls.withLock { $0 } == 5 && m.trims == 5)
    }
}
