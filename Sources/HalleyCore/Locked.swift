#if canImport(Glibc)
import Glibc
#endif

/// A value guarded by a `pthread_mutex_t`, for the little state that several loops share (the
/// loops' inboxes, the hub's channel table, webhook queues).
///
/// Not `Synchronization.Mutex`: ThreadSanitizer on Linux does not see that type's futex, so
/// every access it guards is reported as a race (32 false reports in a 2-minute
/// load, measured with `Scripts/sanitizers/stress.py`), which would hide a real one. TSan intercepts `pthread_mutex_*`; uncontended, both
/// cost about the same (one atomic each way).
public final class Locked<Value: ~Copyable>: @unchecked Sendable {
    // @unchecked Sendable: `value` is only touched between lock and unlock.
    private let mutex: UnsafeMutablePointer<pthread_mutex_t>
    private var value: Value

    public init(_ value: consuming Value) {
        self.value = value
        mutex = .allocate(capacity: 1)
        mutex.initialize(to: pthread_mutex_t())
        let rc = pthread_mutex_init(mutex, nil)
        precondition(rc == 0, "pthread_mutex_init: \(rc)")
    }

    deinit {
        pthread_mutex_destroy(mutex)
        mutex.deallocate()
    }

    /// Runs `body` with the value while holding the lock. Never call back into the same lock
    /// from `body` (it is not recursive).
    @inline(__always)
    public func withLock<R, E: Error>(_ body: (inout Value) throws(E) -> R) throws(E) -> R {
        pthread_mutex_lock(mutex)
        defer { pthread_mutex_unlock(mutex) }
        return try body(&value)
    }
}
