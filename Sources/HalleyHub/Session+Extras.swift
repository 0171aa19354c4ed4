/// The fields of a session that many sessions never use, in an object made on first use (a
/// resumable session: when it is made), so that an idle subscribed session costs less memory
/// (issue 16: about 90 bytes per session). Reads of a session without it give the defaults;
/// writes make it.
final class SessionExtras {
    /// Set for resumable sessions (the secret a client shows to resume); fixed when made.
    let token: SessionToken?
    /// Resumable sessions: the numbered messages not yet acknowledged.
    var unacked = UnackedRing()
    /// Channels with skipped messages (policy `gap`), announced when room comes back.
    var gaps: [(channel: String, from: UInt64, to: UInt64)] = []
    /// The user signed in with `pusher:signin`, if any.
    var userID: String?
    /// Client events sent in the current second (`clientEventSecond`): the rate limit.
    var clientEvents = 0
    var clientEventSecond: Int32 = 0
    /// Replies to the client's own messages are being skipped (policy `gap`, buffer full):
    /// logged once per episode.
    var skippingReplies = false

    init(token: SessionToken? = nil) { self.token = token }
}

extension Session {
    /// The extras, made now if the session has none.
    var more: SessionExtras {
        if let e = extras { return e }
        let e = SessionExtras()
        extras = e
        return e
    }

    /// Resumable sessions: the numbered messages not yet acknowledged.
    var unacked: UnackedRing {
        get { extras?.unacked ?? UnackedRing() }
        // In place: a ring changed through a copy would copy its messages on every append.
        _modify { yield &more.unacked }
    }

    /// Channels with skipped messages (policy `gap`), announced when room comes back.
    var gaps: [(channel: String, from: UInt64, to: UInt64)] {
        get { extras?.gaps ?? [] }
        _modify { yield &more.gaps }
    }

    /// The user signed in with `pusher:signin`, if any.
    var userID: String? {
        get { extras?.userID }
        set { if newValue != nil || extras != nil { more.userID = newValue } }
    }

    /// Client events sent in the current second (`clientEventSecond`): the rate limit.
    var clientEvents: Int {
        get { extras?.clientEvents ?? 0 }
        set { more.clientEvents = newValue }
    }

    var clientEventSecond: Int32 {
        get { extras?.clientEventSecond ?? 0 }
        set { more.clientEventSecond = newValue }
    }

    /// Replies to the client's own messages are being skipped (policy `gap`, buffer full):
    /// logged once per episode.
    package var skippingReplies: Bool {
        get { extras?.skippingReplies ?? false }
        set { if newValue || extras != nil { more.skippingReplies = newValue } }
    }
}

/// A session's subscriptions in the order made: the first inline, the others in an array. Most
/// sessions have one channel, which then costs no allocation (memory per session, issue 16).
struct SubscriptionList: RandomAccessCollection, MutableCollection {
    /// nil only when there is none (`rest` is then empty too).
    private var first: Session.Subscription?
    private var rest: ContiguousArray<Session.Subscription> = []

    var startIndex: Int { 0 }
    var endIndex: Int { first == nil ? 0 : 1 + rest.count }

    subscript(i: Int) -> Session.Subscription {
        get { i == 0 ? first! : rest[i - 1] }
        set {
            if i == 0 { first = newValue } else { rest[i - 1] = newValue }
        }
    }

    mutating func append(_ s: Session.Subscription) {
        if first == nil { first = s } else { rest.append(s) }
    }

    /// Removes the one at `i`; the order of the others stays.
    mutating func remove(at i: Int) {
        precondition(i >= 0 && i < endIndex, "subscription index out of range")
        if i > 0 { rest.remove(at: i - 1) } else { first = rest.isEmpty ? nil : rest.removeFirst() }
    }

    mutating func removeAll() {
        first = nil
        rest.removeAll()
    }
}
