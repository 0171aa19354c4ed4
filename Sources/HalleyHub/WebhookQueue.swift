/// Timing and bounds of webhook delivery, each with its default. Pusher's own: a batch
/// window of about a second, retries with back-off for five minutes.
public struct WebhookPolicy: Sendable {
    /// Events are gathered this long (from the oldest one's emission) into one request.
    /// Default 1000 ms.
    public var batchMillis: Int64 = 1000
    /// Most events in one request; a full batch goes at once. Default 100.
    public var maxBatch = 100
    /// `channel_vacated` and `member_removed` are held this long, and dropped together with a
    /// `channel_occupied` (same channel) or `member_added` (same channel and user) that follows
    /// within it, so a page reload does not flap. Default 3000 ms.
    public var debounceMillis: Int64 = 3000
    /// Events waiting per URL (held and queued; not the batch in flight). Default 10,000;
    /// past it the oldest is dropped (one log line per episode, and a counter).
    public var maxQueued = 10_000
    /// Bytes of the events waiting per URL (held and queued; `WebhookEvent.queuedBytes`).
    /// Default 8 MiB: 10,000 client events of 10 KiB would otherwise hold about 100 MB per
    /// URL against a receiver that never answers. Past it the oldest are dropped, as above.
    public var maxQueuedBytes = 8 << 20
    /// First retry after this long; doubled after every failed attempt up to
    /// `maxBackoffMillis`. Defaults 1000 and 60,000 ms.
    public var firstBackoffMillis: Int64 = 1000
    public var maxBackoffMillis: Int64 = 60_000
    /// A batch is given up (one log line) when its next attempt would start more than this
    /// long after its first: with the defaults and quick failures, after 10 attempts. Default 300,000 ms, Pusher's
    /// five minutes.
    public var giveUpMillis: Int64 = 300_000

    public init() {}
}

/// The I/O-free delivery state of one webhook URL of one app: held (debounced) events,
/// queued events, the batch in flight or waiting for its retry. Driven by `Webhooks` on its
/// loop with the loop's clock; tests drive it with their own.
struct WebhookQueue {
    struct Entry {
        var event: WebhookEvent
        /// Monotonic ms when the hub emitted it.
        var at: Int64
    }

    /// A request's events. A retry sends the same events with the same `timeMillis`, so the
    /// same body bytes and signature.
    struct Batch: Equatable {
        var events: [WebhookEvent]
        /// Wall-clock ms of the first attempt: the body's `time_ms`.
        var timeMillis: Int64
        var firstAttempt: Int64
        var attempts = 0
        var notBefore: Int64 = 0
    }

    enum Added: Equatable {
        case queued
        /// Dropped together with the held event it cancels.
        case cancelled
        /// Queued, and `dropped` older events had to go; `firstOfEpisode` asks for a log line.
        case overflow(dropped: Int, firstOfEpisode: Bool)
    }

    enum Outcome: Equatable {
        case delivered(events: Int)
        case retry(inMillis: Int64, attempt: Int)
        case gaveUp(events: Int, attempts: Int, afterMillis: Int64)
    }

    let policy: WebhookPolicy
    /// Debounced events in emission order; nil where one was cancelled.
    var held: [Entry?] = []
    var heldHead = 0
    /// The index in `held` of the live held event for a debounce key.
    var heldIndex: [String: Int] = [:]
    var queued: [Entry] = []
    var queuedHead = 0
    /// Events waiting: held (debouncing), queued, in a batch in flight or to retry.
    var waiting: Int {
        held[heldHead...].reduce(0) { $0 + ($1 == nil ? 0 : 1) } + (queued.count - queuedHead)
            + (inFlight?.events.count ?? 0) + (retry?.events.count ?? 0)
    }
    /// Emission time of the oldest queued event (the batch window starts there).
    var queuedSince: Int64?
    /// A batch sent and not answered yet.
    var inFlight: Batch?
    /// A failed batch waiting for `notBefore`.
    var retry: Batch?
    var overflowing = false
    /// `queuedBytes` of the held (live) and queued events.
    var bytes = 0

    init(policy: WebhookPolicy) { self.policy = policy }

    var heldCount: Int { heldIndex.count }
    var queuedCount: Int { queued.count - queuedHead }
    /// Events not yet delivered nor given up, the batch in flight included.
    var pendingCount: Int { heldCount + queuedCount + (inFlight?.events.count ?? 0) + (retry?.events.count ?? 0) }

    static func debounceKey(_ e: WebhookEvent) -> String? {
        switch e {
        case .channelVacated(let c), .channelOccupied(let c): return "c\u{0}" + c
        case .memberRemoved(let c, let u), .memberAdded(let c, let u): return "m\u{0}" + c + "\u{0}" + u
        case .clientEvent: return nil
        }
    }

    /// Takes an event emitted at `now`. A held event whose window had passed by then is
    /// released first, so it is not cancelled late.
    mutating func add(_ event: WebhookEvent, at now: Int64) -> Added {
        release(now: now)
        switch event {
        case .channelVacated, .memberRemoved:
            let key = Self.debounceKey(event)!
            heldIndex[key] = held.count
            held.append(Entry(event: event, at: now))
            bytes += event.queuedBytes
        case .channelOccupied, .memberAdded:
            if let i = heldIndex.removeValue(forKey: Self.debounceKey(event)!) {
                bytes -= held[i]!.event.queuedBytes
                held[i] = nil
                return .cancelled
            }
            enqueue(Entry(event: event, at: now))
            bytes += event.queuedBytes
        case .clientEvent:
            enqueue(Entry(event: event, at: now))
            bytes += event.queuedBytes
        }
        return trim()
    }

    /// Appends to the queue (`bytes` is the caller's: a released held event is counted already).
    mutating func enqueue(_ e: Entry) {
        queued.append(e)
        queuedSince = min(queuedSince ?? e.at, e.at)
    }

    /// Drops the oldest queued (else held) events past `maxQueued` or `maxQueuedBytes`.
    mutating func trim() -> Added {
        var dropped = 0
        while heldCount + queuedCount > policy.maxQueued
            || (bytes > policy.maxQueuedBytes && heldCount + queuedCount > 0)
        {
            if queuedCount > 0 {
                bytes -= queued[queuedHead].event.queuedBytes
                queuedHead += 1
            } else {
                while held[heldHead] == nil { heldHead += 1 }
                bytes -= held[heldHead]!.event.queuedBytes
                heldIndex.removeValue(forKey: Self.debounceKey(held[heldHead]!.event)!)
                heldHead += 1
            }
            dropped += 1
        }
        compact()
        guard dropped > 0 else { return .queued }
        let first = !overflowing
        overflowing = true
        return .overflow(dropped: dropped, firstOfEpisode: first)
    }

    mutating func compact() {
        if queuedHead > 1024 && queuedHead * 2 > queued.count {
            queued.removeFirst(queuedHead)
            queuedHead = 0
        }
        if heldHead > 1024 && heldHead * 2 > held.count {
            held.removeFirst(heldHead)
            for (k, i) in heldIndex { heldIndex[k] = i - heldHead }
            heldHead = 0
        }
    }

    /// Moves held events whose debounce time has passed to the queue, in emission order
    /// (their batch window counts from their emission, so they go at once).
    mutating func release(now: Int64) {
        while heldHead < held.count {
            guard let e = held[heldHead] else { heldHead += 1; continue }
            guard e.at + policy.debounceMillis <= now else { break }
            heldIndex.removeValue(forKey: Self.debounceKey(e.event)!)
            enqueue(e)
            heldHead += 1
        }
        if heldHead == held.count {
            held.removeAll(keepingCapacity: true)
            heldHead = 0
        }
        compact()
    }

    /// The batch to send now, if any: a due retry first, else queued events once the window
    /// has passed or a batch is full. One request at a time, so events arrive in order.
    mutating func next(now: Int64, wallMillis: Int64) -> Batch? {
        release(now: now)
        guard inFlight == nil else { return nil }
        if let r = retry {
            guard r.notBefore <= now else { return nil }
            retry = nil
            inFlight = r
            inFlight!.attempts += 1
            return inFlight
        }
        guard let since = queuedSince, queuedCount > 0,
            queuedCount >= policy.maxBatch || since + policy.batchMillis <= now
        else { return nil }
        let n = min(policy.maxBatch, queuedCount)
        let events = queued[queuedHead..<(queuedHead + n)].map(\.event)
        for e in events { bytes -= e.queuedBytes }
        queuedHead += n
        if queuedCount == 0 {
            queued.removeAll(keepingCapacity: true)
            queuedHead = 0
            queuedSince = nil
        } else {
            queuedSince = queued[queuedHead...].lazy.map(\.at).min()
        }
        compact()
        inFlight = Batch(events: events, timeMillis: wallMillis, firstAttempt: now, attempts: 1)
        return inFlight
    }

    /// The batch in flight was answered with a 2xx (`ok`) or failed.
    mutating func completed(ok: Bool, now: Int64) -> Outcome {
        guard var b = inFlight else { preconditionFailure("completed without a batch in flight") }
        inFlight = nil
        if ok {
            overflowing = false
            return .delivered(events: b.events.count)
        }
        let shift = min(b.attempts - 1, 30)
        let delay = min(policy.firstBackoffMillis << Int64(shift), policy.maxBackoffMillis)
        if now + delay - b.firstAttempt > policy.giveUpMillis {
            return .gaveUp(events: b.events.count, attempts: b.attempts, afterMillis: now - b.firstAttempt)
        }
        b.notBefore = now + delay
        retry = b
        return .retry(inMillis: delay, attempt: b.attempts + 1)
    }

    /// When `next` may next have something to send (for the driver's timer), or nil.
    var nextDeadline: Int64? {
        var d: Int64?
        func earlier(_ t: Int64) { d = min(d ?? t, t) }
        var i = heldHead
        while i < held.count {
            if let e = held[i] { earlier(e.at + policy.debounceMillis); break }
            i += 1
        }
        guard inFlight == nil else { return d }
        if let r = retry {
            earlier(r.notBefore)
        } else if let since = queuedSince {
            earlier(queuedCount >= policy.maxBatch ? since : since + policy.batchMillis)
        }
        return d
    }
}
