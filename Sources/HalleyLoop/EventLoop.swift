#if canImport(Glibc)
import Glibc
#endif
import CHalleyLinux
import HalleyCore
import Synchronization

/// Something registered with a loop's epoll set. Called on the loop's thread only.
public protocol EventHandler: AnyObject {
    func handleEvent(_ events: UInt32)
}

public enum Events {
    public static let readable = UInt32(EPOLLIN.rawValue)
    public static let writable = UInt32(EPOLLOUT.rawValue)
    public static let error = UInt32(EPOLLERR.rawValue)
    public static let hangup = UInt32(EPOLLHUP.rawValue)
    public static let readHangup = UInt32(EPOLLRDHUP.rawValue)
}

/// One thread, one epoll set. Everything registered with a loop is touched by that loop's
/// thread only, so it needs no lock; other threads reach it through `execute`, an MPSC inbox
/// woken by an eventfd.
///
/// `@unchecked Sendable`: only `execute` and `stop` may be called from another thread; every
/// other member is confined to the loop's own thread.
public final class EventLoop: @unchecked Sendable {
    public let index: Int
    let epfd: Int32
    let wakeFd: Int32
    let inbox = Locked<[@Sendable () -> Void]>([])
    let stopRequested = Atomic<Bool>(false)

    /// Handlers indexed by file descriptor. Zeroed memory from calloc is all `nil`, and only
    /// the pages of descriptors in use become resident: about 16 B per connection.
    let handlers: UnsafeMutablePointer<EventHandler?>
    let handlerCapacity: Int

    let events: UnsafeMutableRawPointer
    static let maxEvents: Int32 = 512

    /// One read buffer for every connection of this loop (a fresh buffer per read cost
    /// about 900 ns per message, measured on this project's 2-core machine).
    public let readBuffer: UnsafeMutableRawBufferPointer

    /// Monotonic milliseconds, refreshed once per loop turn.
    public private(set) var now: Int64
    var timers = TimerHeap()
    var tickHandlers: [() -> Void] = []
    var nextTick: Int64
    var turnEndHandlers: [() -> Void] = []
    /// The thread running `run`, for `preconditionInLoop`; nil before the loop runs.
    var thread: pthread_t?

    public init(index: Int, maxDescriptors: Int, readBufferSize: Int = 64 * 1024) throws(IOError) {
        self.index = index
        epfd = halley_epoll_create()
        if epfd < 0 { throw IOError(errno: errno, function: "epoll_create1") }
        wakeFd = halley_eventfd()
        if wakeFd < 0 { throw IOError(errno: errno, function: "eventfd") }
        handlerCapacity = maxDescriptors
        handlers = calloc(maxDescriptors, MemoryLayout<EventHandler?>.stride)!
            .bindMemory(to: EventHandler?.self, capacity: maxDescriptors)
        events = UnsafeMutableRawPointer.allocate(
            byteCount: Int(Self.maxEvents) * halley_epoll_event_size(), alignment: 16)
        readBuffer = UnsafeMutableRawBufferPointer.allocate(byteCount: readBufferSize, alignment: 16)
        now = Clock.monotonicMillis()
        nextTick = now + 1000
        if halley_epoll_ctl(epfd, EPOLL_CTL_ADD, wakeFd, Events.readable, UInt64(wakeFd)) != 0 {
            throw IOError(errno: errno, function: "epoll_ctl(eventfd)")
        }
    }

    deinit {
        Sys.close(epfd)
        Sys.close(wakeFd)
        free(handlers)
        events.deallocate()
        readBuffer.deallocate()
    }

    // MARK: confinement

    /// Traps when called off this loop's thread once the loop runs: everything a loop owns is
    /// touched by its thread only (swift-nio's `preconditionInEventLoop`). Checked in debug
    /// builds and in the sanitizer builds (`-D HALLEY_LOOP_CHECKS`); free in release builds.
    @inline(__always)
    public func preconditionInLoop(file: StaticString = #fileID, line: UInt = #line) {
        #if DEBUG || HALLEY_LOOP_CHECKS
        if let t = thread, pthread_equal(t, pthread_self()) == 0 {
            preconditionFailure("loop \(index): called from another thread", file: file, line: line)
        }
        #endif
    }

    // MARK: registration (loop thread)

    public func register(_ fd: Int32, events: UInt32, handler: EventHandler) throws(IOError) {
        preconditionInLoop()
        precondition(Int(fd) < handlerCapacity, "descriptor above the open-file limit")
        if halley_epoll_ctl(epfd, EPOLL_CTL_ADD, fd, events, UInt64(fd)) != 0 {
            throw IOError(errno: errno, function: "epoll_ctl(ADD)")
        }
        handlers[Int(fd)] = handler
    }

    public func modify(_ fd: Int32, events: UInt32) {
        preconditionInLoop()
        _ = halley_epoll_ctl(epfd, EPOLL_CTL_MOD, fd, events, UInt64(fd))
    }

    /// Hands `fd`'s events to another handler (a connection upgraded to another protocol).
    public func replaceHandler(_ fd: Int32, with handler: EventHandler) {
        preconditionInLoop()
        handlers[Int(fd)] = handler
    }

    /// Forgets `fd`; call before closing it.
    public func unregister(_ fd: Int32) {
        preconditionInLoop()
        _ = halley_epoll_ctl(epfd, EPOLL_CTL_DEL, fd, 0, 0)
        handlers[Int(fd)] = nil
    }

    // MARK: work from other threads

    /// Runs `work` on this loop's thread, soon. Safe from any thread.
    public func execute(_ work: @escaping @Sendable () -> Void) {
        if enqueue(work) { wake() }
    }

    /// Queues `work` like `execute` but leaves the wake-up to the caller (`wake()`), so that
    /// work can be queued under a lock and the syscall made after it. True when a wake-up
    /// is needed.
    public func enqueue(_ work: @escaping @Sendable () -> Void) -> Bool {
        inbox.withLock { q -> Bool in
            q.append(work)
            return q.count == 1
        }
    }

    public func wake() {
        var one: UInt64 = 1
        _ = Glibc.write(wakeFd, &one, 8)
    }

    /// Asks the loop to return from `run` after its current turn. Safe from any thread.
    public func stop() {
        stopRequested.store(true, ordering: .releasing)
        wake()
    }

    // MARK: timers (loop thread)

    /// Calls `body` once, after `millis`. Returns an id for `cancel`.
    @discardableResult
    public func schedule(afterMillis millis: Int64, _ body: @escaping () -> Void) -> UInt64 {
        preconditionInLoop()
        return timers.push(deadline: now + millis, body)
    }

    public func cancel(_ timer: UInt64) {
        preconditionInLoop()
        timers.cancel(timer)
    }

    /// Calls `body` about once a second: the coarse sweep for per-connection deadlines, so
    /// that no connection needs a timer object of its own.
    public func onTick(_ body: @escaping () -> Void) { tickHandlers.append(body) }

    /// Calls `body` at the end of every loop turn (after all events of the turn). `first`
    /// puts it before the handlers already registered (work that writes must run before the
    /// server's cork is flushed).
    public func onTurnEnd(first: Bool = false, _ body: @escaping () -> Void) {
        if first { turnEndHandlers.insert(body, at: 0) } else { turnEndHandlers.append(body) }
    }

    // MARK: the loop

    public func run() {
        thread = pthread_self()
        while !stopRequested.load(ordering: .acquiring) {
            var timeout = nextTick - now
            if let d = timers.nextDeadline { timeout = min(timeout, d - now) }
            timeout = max(0, min(timeout, 1000))
            let n = epoll_wait(epfd, events.assumingMemoryBound(to: epoll_event.self), Self.maxEvents, Int32(timeout))
            now = Clock.monotonicMillis()
            if n > 0 {
                let evs = events.assumingMemoryBound(to: epoll_event.self)
                for i in 0..<Int(n) {
                    let fd = Int32(truncatingIfNeeded: halley_epoll_event_data(evs, Int32(i)))
                    let ev = halley_epoll_event_events(evs, Int32(i))
                    if fd == wakeFd {
                        drainInbox()
                    } else if let h = handlers[Int(fd)] {
                        h.handleEvent(ev)
                    }
                }
            } else if n < 0 && errno != EINTR {
                Log.error("loop \(index): epoll_wait: \(String(cString: strerror(errno)))")
            }
            finishTurn()
        }
        drainInbox()
    }

    /// The end of every turn: due timers, the second's tick when due, the turn-end work.
    func finishTurn() {
        runTimers()
        if now >= nextTick {
            nextTick = now + 1000
            for t in tickHandlers { t() }
        }
        for h in turnEndHandlers { h() }
    }

    /// One turn by hand, at monotonic millisecond `now`, without waiting for descriptors:
    /// the inbox, then `finishTurn`. For tests that drive a loop that never `run`s (the hub
    /// without sockets; swift-nio's EmbeddedEventLoop is the model), on the test's thread.
    public func step(at now: Int64) {
        precondition(thread == nil, "step drives a loop that does not run")
        self.now = now
        drainInbox()
        finishTurn()
    }

    func drainInbox() {
        var counter: UInt64 = 0
        _ = Glibc.read(wakeFd, &counter, 8)
        while true {
            let work = inbox.withLock { q -> [@Sendable () -> Void] in
                let w = q
                q.removeAll()
                return w
            }
            if work.isEmpty { return }
            for w in work { w() }
        }
    }

    func runTimers() {
        while let d = timers.nextDeadline, d <= now {
            if let body = timers.pop() { body() }
        }
    }

    /// Starts `run` on a new thread named `halley-loop-N`.
    public func startThread() -> pthread_t {
        // Unmanaged: one +1 reference carried through pthread_create's void*, taken back by the thread.
        let box = Unmanaged.passRetained(self)
        var tid = pthread_t()
        let rc = pthread_create(
            &tid, nil,
            { arg in
                let loop = Unmanaged<EventLoop>.fromOpaque(arg!).takeRetainedValue()
                halley_set_thread_name("halley-loop-\(loop.index)")
                loop.run()
                return nil
            }, box.toOpaque())
        precondition(rc == 0, "pthread_create failed: \(rc)")
        return tid
    }
}
