/// A resumable session's numbered messages not yet acknowledged, oldest first: the one place
/// that knows which seq a message has. `append` numbers a message; `ack` lets go of what the
/// client has seen; `after(_:)` walks what it has not. Part of its session
/// (loop-confined).
struct UnackedRing {
    /// The seq of the last message appended (0: none yet).
    private(set) var last: UInt64 = 0
    private var messages: [OutMessage] = []
    /// `messages[start]` has seq `last - count + 1`; the ones before it are acknowledged.
    private var start = 0
    /// Bytes of the messages held (the session's buffer bound counts these).
    private(set) var bytes = 0

    var count: Int { messages.count - start }

    /// Numbers `m` (the next seq) and keeps it until acknowledged.
    mutating func append(_ m: OutMessage) -> UInt64 {
        last += 1
        messages.append(m)
        bytes += m.size
        return last
    }

    /// The client has seen everything up to `upTo`.
    mutating func ack(upTo: UInt64) {
        guard count > 0 else { return }
        let first = last - UInt64(count) + 1
        guard upTo >= first else { return }
        let n = Int(min(upTo, last) - first + 1)
        for k in start..<(start + n) { bytes -= messages[k].size }
        start += n
        if start == messages.count {
            messages.removeAll(keepingCapacity: messages.count <= 64)
            start = 0
        } else if start * 2 >= messages.count {  // as `ChannelState.compact`
            messages.removeFirst(start)
            start = 0
        }
    }

    /// The messages after seq `after`, with their seq, oldest first. A snapshot: the ring may
    /// change while it is walked (a transport's send can end its session).
    func after(_ after: UInt64) -> Pending {
        let first = last - UInt64(count) + 1
        let skip = after >= first ? Int(min(after - first + 1, UInt64(count))) : 0
        return Pending(messages: messages, index: start + skip, seq: first + UInt64(skip))
    }

    struct Pending: Sequence, IteratorProtocol {
        let messages: [OutMessage]
        var index: Int
        var seq: UInt64

        mutating func next() -> (seq: UInt64, message: OutMessage)? {
            guard index < messages.count else { return nil }
            defer {
                index += 1
                seq += 1
            }
            return (seq, messages[index])
        }
    }

    /// Lets go of every message (the session ended); the numbering stays.
    mutating func removeAll() {
        messages.removeAll()
        start = 0
        bytes = 0
    }
}
