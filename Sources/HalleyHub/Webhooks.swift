#if canImport(Glibc)
import Glibc
#endif
import HalleyCore
import HalleyHTTP
import HalleyLoop
import HalleyServer
import Synchronization

/// Webhook delivery (Pusher "Webhooks"): the hub reports events with `emit` from any thread;
/// one loop gathers them, debounces, batches and POSTs them to each app's URLs with its own
/// HTTP client, one request in flight per URL so events arrive in order.
///
/// A request: `POST` with `Content-Type: application/json`, `X-Pusher-Key: <app key>`,
/// `X-Pusher-Signature: hex(HMAC-SHA256(secret, body))` and the body
/// `{"time_ms":…,"events":[{"name":"channel_occupied","channel":"…"},…]}`. A 2xx answer
/// delivers the batch; anything else (connect failure, timeout, other status) is retried with
/// back-off, the same body each time (`WebhookPolicy` has the timings). Events still waiting
/// when the process stops are lost.
public final class Webhooks: Sendable {
    struct Pending {
        var app: App
        var event: WebhookEvent
        var at: Int64
    }

    /// Events emitted and not yet taken by the loop (it takes them once a second). Bounds
    /// 100,000 events and 8 MiB (`WebhookEvent.queuedBytes`): past either `emit` drops the
    /// event (counted as overflow) rather than grow.
    static let maxInbox = 100_000
    static let maxInboxBytes = 8 << 20

    struct Inbox {
        var events: [Pending] = []
        var bytes = 0
        /// When the last drop was logged (monotonic ms): a warning at most every 10 s.
        var warnedAt: Int64 = .min / 2
    }

    let loop: EventLoop
    let inbox = Locked(Inbox())
    let counters = WebhookCounters()
    let driver: UncheckedBox<WebhookDriver>

    /// `loop`: the loop that sends (the hub passes loop 0). Safe from any thread.
    public init(
        loop: EventLoop, policy: WebhookPolicy = WebhookPolicy(), client: HTTPClient.Options = HTTPClient.Options()
    ) {
        self.loop = loop
        let d = WebhookDriver(loop: loop, policy: policy, client: client, counters: counters)
        driver = UncheckedBox(d)
        let box = driver
        // The loop's tick list is loop-confined: register from its own thread.
        loop.execute { [self] in
            box.value.start {
                self.inbox.withLock { q in
                    let taken = q.events
                    q.events.removeAll(keepingCapacity: true)
                    q.bytes = 0
                    return taken
                }
            }
        }
    }

    /// Any thread; cheap (a locked append, no syscall): the hub calls it while holding a shard's
    /// lock. A no-op when none of the app's webhooks wants the event.
    public func emit(_ app: App, _ event: WebhookEvent) {
        guard !app.webhooks.isEmpty else { return }
        let name = event.name
        guard app.webhooks.contains(where: { $0.wants(name) }) else { return }
        let p = Pending(app: app, event: event, at: Clock.monotonicMillis())
        let size = event.queuedBytes
        let (kept, firstDrop) = inbox.withLock { q -> (Bool, Bool) in
            guard q.events.count < Self.maxInbox, q.bytes + size <= Self.maxInboxBytes else {
                guard p.at - q.warnedAt >= 10_000 else { return (false, false) }
                q.warnedAt = p.at
                return (false, true)
            }
            q.events.append(p)
            q.bytes += size
            return (true, false)
        }
        if !kept {
            counters.add(\.droppedOverflow, 1)
            if firstDrop {
                Log.warning(
                    "webhooks: more than \(Self.maxInbox) events or \(Self.maxInboxBytes) bytes waiting to be queued: dropping new ones (logged at most every 10 s; halley_webhook_events_dropped_total counts them)"
                )
            }
        }
    }

    /// Prometheus text for `/metrics` (the hub adds it with `Metrics.addSource`).
    public func metricsText() -> String {
        func family(_ name: String, _ help: String, _ samples: [(String, Int)]) -> String {
            Metrics.family(name, "counter", help, samples)
        }
        let c = counters
        return family(
            "halley_webhook_events_sent_total", "Webhook events delivered (answered 2xx).", [("", c.get(\.sent))])
            + family(
                "halley_webhook_requests_failed_total", "Webhook requests that failed (connect, timeout, non-2xx).",
                [("", c.get(\.failed))])
            + family("halley_webhook_retries_total", "Webhook requests that were retries.", [("", c.get(\.retried))])
            + family(
                "halley_webhook_events_dropped_total", "Webhook events dropped: queue overflow, or retries given up.",
                [
                    ("{reason=\"overflow\"}", c.get(\.droppedOverflow)),
                    ("{reason=\"gave_up\"}", c.get(\.droppedGaveUp)),
                ])
    }
}

/// Webhook counters: written by the sending loop (and `emit` for inbox overflow), read by
/// `/metrics` from any loop. A lock, not atomics: they change about once a request.
final class WebhookCounters: Sendable {
    struct Counts {
        var sent = 0
        var failed = 0
        var retried = 0
        var droppedOverflow = 0
        var droppedGaveUp = 0
    }

    let counts = Locked(Counts())

    func add(_ c: WritableKeyPath<Counts, Int>, _ n: Int) {
        counts.withLock { $0[keyPath: c] += n }
    }

    func get(_ c: KeyPath<Counts, Int>) -> Int { counts.withLock { $0[keyPath: c] } }
}

/// The sending loop's side: one `WebhookQueue` per app and URL, a timer for the earliest
/// deadline, and the requests in flight. Loop-confined.
final class WebhookDriver {
    struct Target {
        let appID: String
        let key: String
        let secret: String
        let url: HTTPURL
        var queue: WebhookQueue
    }

    let loop: EventLoop
    let policy: WebhookPolicy
    let client: HTTPClient.Options
    let counters: WebhookCounters
    var take: () -> [Webhooks.Pending] = { [] }
    var targets: [Target] = []
    var targetIndex: [String: Int] = [:]
    /// Events waiting in every target's queue (for `/stats`).
    var queuedEvents: Int { targets.reduce(0) { $0 + $1.queue.waiting } }
    var timer: (id: UInt64, at: Int64)?

    init(loop: EventLoop, policy: WebhookPolicy, client: HTTPClient.Options, counters: WebhookCounters) {
        self.loop = loop
        self.policy = policy
        self.client = client
        self.counters = counters
    }

    func start(take: @escaping () -> [Webhooks.Pending]) {
        self.take = take
        loop.onTick { [self] in
            drain()
            pump()
        }
    }

    func drain() {
        for p in take() {
            let name = p.event.name
            for w in p.app.webhooks where w.wants(name) {
                guard let i = target(p.app, w) else { continue }
                let r = targets[i].queue.add(p.event, at: p.at)
                if case .overflow(let n, let first) = r {
                    counters.add(\.droppedOverflow, n)
                    if first {
                        Log.warning(
                            "webhook \(targets[i].url) (app \(p.app.id)): more than \(policy.maxQueued) events or \(policy.maxQueuedBytes) bytes waiting: dropping the oldest"
                        )
                    }
                }
            }
        }
    }

    func target(_ app: App, _ w: Webhook) -> Int? {
        // The secret too: after a rotation, events are signed with the new one.
        let k = app.id + "\u{0}" + w.url + "\u{0}" + app.secret
        if let i = targetIndex[k] { return i }
        guard let url = try? HTTPURL(w.url) else {
            // The configuration file checks URLs; an app built in code may not have.
            Log.error("webhook URL of app \(app.id) is not usable: \(w.url)")
            return nil
        }
        targets.append(
            Target(appID: app.id, key: app.key, secret: app.secret, url: url, queue: WebhookQueue(policy: policy)))
        targetIndex[k] = targets.count - 1
        return targets.count - 1
    }

    /// Starts every request that is due, then arms the timer for the next deadline.
    func pump() {
        let now = loop.now
        let wall = wallMillis()
        for i in targets.indices {
            if let b = targets[i].queue.next(now: now, wallMillis: wall) { send(i, b) }
        }
        var next: Int64?
        for t in targets { if let d = t.queue.nextDeadline { next = min(next ?? d, d) } }
        guard let at = next else { return }
        if let t = timer {
            if t.at <= at { return }
            loop.cancel(t.id)
        }
        let id = loop.schedule(afterMillis: max(0, at - now)) { [self] in
            timer = nil
            // Take what was emitted meanwhile first: a channel_occupied inside the debounce
            // window must cancel the held channel_vacated, not follow it.
            drain()
            pump()
        }
        timer = (id, at)
    }

    func send(_ i: Int, _ b: WebhookQueue.Batch) {
        let t = targets[i]
        let body = WebhookEvent.body(b.events, timeMillis: b.timeMillis)
        let request = t.url.request(
            method: "POST",
            fields: [
                ("Content-Type", "application/json"),
                ("X-Pusher-Key", t.key),
                ("X-Pusher-Signature", WebhookEvent.signature(body: body, secret: t.secret)),
                ("User-Agent", "halley"),
            ], body: body)
        if b.attempts > 1 { counters.add(\.retried, 1) }
        HTTPClient.send(on: loop, url: t.url, request: request, options: client) { [self] r in
            completed(i, r)
        }
    }

    func completed(_ i: Int, _ r: Result<HTTPClientResponse, HTTPClientError>) {
        var why = ""
        switch r {
        case .success(let resp) where (200..<300).contains(resp.status): break
        case .success(let resp): why = "answered \(resp.status)"
        case .failure(let e): why = "\(e)"
        }
        let attempt = targets[i].queue.inFlight?.attempts ?? 0
        let outcome = targets[i].queue.completed(ok: why.isEmpty, now: loop.now)
        let t = targets[i]
        switch outcome {
        case .delivered(let n):
            counters.add(\.sent, n)
            if attempt > 1 { Log.info("webhook \(t.url) (app \(t.appID)): delivered on attempt \(attempt)") }
        case .retry(let ms, _):
            counters.add(\.failed, 1)
            let line = "webhook \(t.url) (app \(t.appID)): attempt \(attempt) \(why); retrying in \(ms) ms"
            if attempt == 1 { Log.warning(line) } else { Log.debug(line) }
        case .gaveUp(let n, let attempts, let ms):
            counters.add(\.failed, 1)
            counters.add(\.droppedGaveUp, n)
            Log.warning(
                "webhook \(t.url) (app \(t.appID)): gave up on \(n) events after \(attempts) attempts in \(ms / 1000) s (last: \(why))"
            )
        }
        pump()
    }

    func wallMillis() -> Int64 {
        var ts = timespec()
        clock_gettime(CLOCK_REALTIME, &ts)
        return Int64(ts.tv_sec) * 1000 + Int64(ts.tv_nsec) / 1_000_000
    }
}
