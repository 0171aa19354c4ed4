import HalleyProtocol

/// A channel's order and memory, kept by the `Hub` under its shard's lock: the next offset, the
/// history (bounded by count and age) and how many sessions each loop has subscribed.
final class ChannelState {
    let name: String
    let kind: ChannelName.Kind
    /// Names this channel's history; a channel created again gets a new one, so a client
    /// holding offsets of the old history learns they are not comparable. With Redis, the
    /// channel's epoch in Redis (a new one there restarts the channel here: `restart`).
    var epoch: String
    var lastOffset: UInt64 = 0
    /// Oldest first; `historyStart` skips trimmed entries without shifting the array on
    /// every publish.
    var history: [Publication] = []
    var historyStart = 0
    /// The highest offset of a kept message that left the history (evicted by count or age):
    /// a client that saw at least this one can recover from the history. Messages that are
    /// never kept (presence member events) do not count.
    var droppedThrough: UInt64 = 0
    /// For `cache-` channels: the last message, kept `cacheSeconds`.
    var cached: Publication?
    var perLoop: [Int]
    /// Sessions subscribed on this node (a publish answers how many it reached, less the
    /// excluded one).
    var members = Set<SessionID>()
    var subscribers: Int { members.count }

    /// Presence channels: the users present, each with how many of its sessions are
    /// subscribed (a user is added on its first and removed after its last), and the user of
    /// each subscribed session.
    var users: [String: PresenceUser] = [:]
    var userOf: [SessionID: String] = [:]
    /// With Redis: messages that came after a gap, held while the missing ones are read from the
    /// channel's stream (`filling`), then delivered in order.
    var filling = false
    var held: [BrokerWire.Message] = []
    /// The next message posted is the first this node delivers of a new epoch (`restart`).
    var restartPending = false

    struct PresenceUser {
        var sessions: Int
        var info: [UInt8]
    }

    init(name: String, loops: Int) {
        self.name = name
        self.kind = ChannelName.kind(name)
        self.epoch = Self.newEpoch()
        self.perLoop = Array(repeating: 0, count: loops)
    }

    /// A channel that starts at `offset` of `epoch` (ordered by Redis): nothing before it is here.
    init(name: String, loops: Int, epoch: String, at offset: UInt64) {
        self.name = name
        self.kind = ChannelName.kind(name)
        self.epoch = epoch
        self.perLoop = Array(repeating: 0, count: loops)
        lastOffset = offset
        droppedThrough = offset
    }

    static func newEpoch() -> String {
        String(UInt32.random(in: 0...UInt32.max), radix: 36) + String(UInt16.random(in: 0...UInt16.max), radix: 36)
    }

    /// Redis started the channel again (its keys expired or were lost): a new epoch from
    /// `offset`, the old history gone.
    func restart(epoch e: String, at offset: UInt64) {
        epoch = e
        restartPending = true
        history.removeAll()
        historyStart = 0
        cached = nil
        lastOffset = offset
        droppedThrough = offset
    }

    /// Messages up to `offset` will never come (published before this node held the channel, or
    /// gone from the stream): recovery from before it is refused.
    func skip(to offset: UInt64) {
        lastOffset = offset
        droppedThrough = offset
    }

    var historyCount: Int { history.count - historyStart }

    func append(_ p: Publication, keep: Int) {
        history.append(p)
        if historyCount > keep {
            droppedThrough = history[historyStart].offset
            historyStart += 1
        }
        compact()
    }

    /// Drops entries older than `cutoff` (monotonic ms).
    func trim(olderThan cutoff: Int64) {
        while historyStart < history.count && history[historyStart].time < cutoff {
            droppedThrough = history[historyStart].offset
            historyStart += 1
        }
        compact()
    }

    /// Lets go of evicted entries once they are as many as the live ones: at most one more
    /// dead than live entry is held, and each compaction moves no more entries than it frees.
    /// (With a fixed floor of 64, a quiet channel whose history is trimmed by age held 64 dead
    /// messages for many minutes: with hundreds of such channels the heap grew for ten
    /// minutes of steady load.)
    func compact() {
        if historyStart > 0 && historyStart * 2 >= history.count {
            history.removeFirst(historyStart)
            historyStart = 0
        }
    }

    enum Recovery {
        case none
        case recovered([Publication])
        case notRecovered(RecoveryFailure)
    }

    /// The messages after `offset` in `epoch`, when the history still has all of them.
    /// `older`: with Redis, what the channel's stream gave from `offset + 1` on (for what this
    /// node's history no longer has, or never had), in order.
    func recover(epoch e: String, after offset: UInt64, older: [Publication] = []) -> Recovery {
        guard e == epoch else { return .notRecovered(.epochChanged) }
        if offset >= lastOffset { return .recovered([]) }
        var from = offset
        if let first = older.first, first.offset == offset + 1, let last = older.last,
            last.offset - first.offset + 1 == UInt64(older.count), last.offset >= droppedThrough
        {
            from = last.offset
        }
        guard from >= droppedThrough else { return .notRecovered(.historyExpired) }
        let kept = history[historyStart...].filter { $0.offset > from }
        return .recovered(from == offset ? kept : older.filter { $0.offset <= lastOffset } + kept)
    }

    /// True when nothing refers to the channel any more: it can be forgotten.
    var isIdle: Bool { subscribers == 0 && historyCount == 0 && cached == nil && !filling }
}

package struct ChannelKey: Hashable, Sendable {
    package let app: String
    package let name: String

    package init(app: String, name: String) {
        self.app = app
        self.name = name
    }
}

package struct UserKey: Hashable, Sendable {
    package let app: String
    package let id: String

    package init(app: String, id: String) {
        self.app = app
        self.id = id
    }
}
