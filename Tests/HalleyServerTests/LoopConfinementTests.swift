#if canImport(Glibc)
import Glibc
#endif
import Testing
import HalleyCore
import HalleyLoop

/// Loop confinement (issue 12): what a loop owns is touched by its thread only, and debug
/// builds trap when another thread tries (swift-nio's `preconditionInEventLoop`).
@Suite struct LoopConfinementTests {
    /// Starts a loop on its own thread and returns once `run` is under way.
    static func runningLoop() -> EventLoop {
        let loop = try! EventLoop(index: 0, maxDescriptors: 64)
        let started = Locked(false)
        loop.execute { started.withLock { $0 = true } }
        _ = loop.startThread()
        while !started.withLock({ $0 }) { usleep(1000) }
        return loop
    }

    @Test func workOnTheLoopsOwnThreadPasses() {
        let loop = Self.runningLoop()
        let done = Locked(0)
        loop.execute {
            loop.schedule(afterMillis: 0) { done.withLock { $0 += 1 } }
            done.withLock { $0 += 1 }
        }
        var spins = 0
        while done.withLock({ $0 }) < 2 && spins < 5000 { usleep(1000); spins += 1 }
        #expect(done.withLock { $0 } == 2)
        loop.stop()
    }

    #if DEBUG
    @Test func schedulingFromAnotherThreadTraps() async {
        let r = await #expect(processExitsWith: .failure, observing: [\.standardErrorContent]) {
            let loop = LoopConfinementTests.runningLoop()
            loop.schedule(afterMillis: 10) {}  // this test's thread, not the loop's
        }
        let stderr = r.map { String(decoding: $0.standardErrorContent, as: UTF8.self) } ?? ""
        #expect(stderr.contains("loop 0: called from another thread"))
    }

    @Test func registeringFromAnotherThreadTraps() async {
        let r = await #expect(processExitsWith: .failure, observing: [\.standardErrorContent]) {
            let loop = LoopConfinementTests.runningLoop()
            loop.unregister(0)
        }
        let stderr = r.map { String(decoding: $0.standardErrorContent, as: UTF8.self) } ?? ""
        #expect(stderr.contains("loop 0: called from another thread"))
    }
    #endif
}
