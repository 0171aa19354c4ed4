import Testing
import HalleyCore
@testable import HalleyServer

/// When the hub gives freed heap back (issue 18): 5 s after the connections fell by half and by
/// at least 1,000 from their peak, and once more 40 s later; never for small swings.
@Suite struct MemoryTrimTests {
    @Test func trimsAfterALoadWentAndOnceMoreLater() {
        let calls = Locked(0)
        let m = MemoryTrim(trimmer: {
            calls.withLock { $0 += 1 }; return 1
        })
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
}
