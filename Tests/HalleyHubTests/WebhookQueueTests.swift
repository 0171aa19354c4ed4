import Testing
import HalleyLoop
@testable import HalleyHub

@Suite struct WebhookQueueTests {
    typealias Q = WebhookQueue

    func queue(_ tweak: (inout WebhookPolicy) -> Void = { _ in }) -> Q {
        var p = WebhookPolicy()
        tweak(&p)
        return Q(policy: p)
    }

    func client(_ n: Int) -> WebhookEvent {
        .clientEvent(channel: "private-c", event: "client-\(n)", data: "\(n)", socketID: "1.1", userID: nil)
    }

    @Test func eventsGatherForTheBatchWindow() {
        var q = queue()
        #expect(q.add(.channelOccupied(channel: "a"), at: 0) == .queued)
        #expect(q.add(.channelOccupied(channel: "b"), at: 400) == .queued)
        #expect(q.nextDeadline == 1000)
        #expect(q.next(now: 999, wallMillis: 5) == nil)
        let b = q.next(now: 1000, wallMillis: 5)
        #expect(b?.events == [.channelOccupied(channel: "a"), .channelOccupied(channel: "b")])
        #expect(b?.timeMillis == 5 && b?.attempts == 1)
        #expect(q.nextDeadline == nil)
    }

    @Test func aFullBatchGoesAtOnceAndTheRestWaits() {
        var q = queue { $0.maxBatch = 3 }
        for i in 0..<4 { _ = q.add(client(i), at: 0) }
        #expect(q.nextDeadline == 0)
        #expect(q.next(now: 0, wallMillis: 0)?.events == [client(0), client(1), client(2)])
        // One request at a time: the fourth waits for the answer.
        #expect(q.next(now: 5000, wallMillis: 0) == nil)
        #expect(q.completed(ok: true, now: 5000) == .delivered(events: 3))
        #expect(q.next(now: 5000, wallMillis: 0)?.events == [client(3)])
    }

    @Test func vacatedIsHeldThenSent() {
        var q = queue()
        _ = q.add(.channelVacated(channel: "a"), at: 100)
        #expect(q.heldCount == 1 && q.nextDeadline == 3100)
        #expect(q.next(now: 3099, wallMillis: 0) == nil)
        // Its window counts from its emission: it goes as soon as it is released.
        #expect(q.next(now: 3100, wallMillis: 0)?.events == [.channelVacated(channel: "a")])
    }

    @Test func occupiedWithinTheWindowCancelsVacated() {
        var q = queue()
        _ = q.add(.channelOccupied(channel: "a"), at: 0)
        _ = q.next(now: 1000, wallMillis: 0)
        _ = q.completed(ok: true, now: 1100)
        #expect(q.add(.channelVacated(channel: "a"), at: 2000) == .queued)
        #expect(q.add(.channelOccupied(channel: "a"), at: 4999) == .cancelled)
        #expect(q.pendingCount == 0 && q.nextDeadline == nil)
        #expect(q.next(now: 100_000, wallMillis: 0) == nil)
        // After the window the vacated stands, and a later occupied is sent after it.
        _ = q.add(.channelVacated(channel: "a"), at: 200_000)
        _ = q.add(.channelOccupied(channel: "b"), at: 200_001)
        #expect(
            q.next(now: 203_000, wallMillis: 0)?.events == [
                .channelOccupied(channel: "b"), .channelVacated(channel: "a"),
            ])
        _ = q.completed(ok: true, now: 203_000)
        #expect(q.add(.channelOccupied(channel: "a"), at: 203_001) == .queued)
    }

    @Test func memberAddedCancelsTheSameUsersRemoval() {
        var q = queue()
        _ = q.add(.memberRemoved(channel: "presence-r", userID: "u1"), at: 0)
        _ = q.add(.memberRemoved(channel: "presence-r", userID: "u2"), at: 0)
        _ = q.add(.channelVacated(channel: "presence-r"), at: 0)
        #expect(q.add(.channelOccupied(channel: "presence-r"), at: 10) == .cancelled)
        #expect(q.add(.memberAdded(channel: "presence-r", userID: "u1"), at: 20) == .cancelled)
        #expect(q.add(.memberAdded(channel: "presence-x", userID: "u2"), at: 30) == .queued)
        #expect(
            q.next(now: 3000, wallMillis: 0)?.events == [
                .memberAdded(channel: "presence-x", userID: "u2"), .memberRemoved(channel: "presence-r", userID: "u2"),
            ])
    }

    @Test func aFailedBatchIsRetriedWithTheSameEventsAndTime() {
        var q = queue()
        _ = q.add(client(1), at: 0)
        let first = q.next(now: 1000, wallMillis: 777)!
        _ = q.add(client(2), at: 1200)
        #expect(q.completed(ok: false, now: 1500) == .retry(inMillis: 1000, attempt: 2))
        #expect(q.nextDeadline == 2500)
        #expect(q.next(now: 2499, wallMillis: 999) == nil)
        let again = q.next(now: 2500, wallMillis: 999)!
        #expect(again.events == first.events && again.timeMillis == 777 && again.attempts == 2)
        #expect(q.completed(ok: true, now: 2600) == .delivered(events: 1))
        #expect(q.next(now: 2600, wallMillis: 999)?.events == [client(2)])
    }

    @Test func backOffDoublesToItsCapThenGivesUp() {
        var q = queue()
        _ = q.add(client(1), at: 0)
        var now: Int64 = 1000
        var delays: [Int64] = []
        while true {
            let b = q.next(now: now, wallMillis: 0)!
            switch q.completed(ok: false, now: now) {
            case .retry(let ms, let attempt):
                #expect(attempt == b.attempts + 1)
                delays.append(ms)
                now += ms
            case .gaveUp(let events, let attempts, let after):
                #expect(events == 1 && attempts == 10 && after == 243_000)
                #expect(delays == [1000, 2000, 4000, 8000, 16000, 32000, 60000, 60000, 60000])
                #expect(q.pendingCount == 0 && q.next(now: now + 100_000, wallMillis: 0) == nil)
                return
            case .delivered:
                Issue.record("delivered")
                return
            }
        }
    }

    @Test func overflowDropsTheOldestAndLogsOncePerEpisode() {
        var q = queue { $0.maxQueued = 3 }
        for i in 0..<3 { #expect(q.add(client(i), at: 0) == .queued) }
        #expect(q.add(client(3), at: 0) == .overflow(dropped: 1, firstOfEpisode: true))
        #expect(q.add(client(4), at: 0) == .overflow(dropped: 1, firstOfEpisode: false))
        let b = q.next(now: 1000, wallMillis: 0)!
        #expect(b.events == [client(2), client(3), client(4)])
        _ = q.completed(ok: true, now: 1000)
        for i in 5..<8 { _ = q.add(client(i), at: 2000) }
        #expect(q.add(client(8), at: 2000) == .overflow(dropped: 1, firstOfEpisode: true))
    }

    /// Issue 18: 10,000 events of 10 KiB were 100 MB per URL. The byte bound drops the oldest
    /// first, whatever the count, and the accounting returns to zero as batches leave.
    @Test func byteBoundDropsTheOldestLargeEvents() {
        var q = queue { $0.maxQueuedBytes = 50_000 }
        func big(_ n: Int) -> WebhookEvent {
            .clientEvent(
                channel: "private-c", event: "client-\(n)", data: String(repeating: "x", count: 10_240),
                socketID: "1.1", userID: nil)
        }
        let size = big(0).queuedBytes
        #expect(size > 10_240 && size < 10_500)
        for i in 0..<4 { #expect(q.add(big(i), at: 0) == .queued) }
        #expect(q.add(big(4), at: 0) == .overflow(dropped: 1, firstOfEpisode: true))
        #expect(q.bytes == 4 * size && q.queuedCount == 4)
        // Small events still fit beside them; a held one counts too.
        #expect(q.add(.channelVacated(channel: "v"), at: 0) == .queued)
        #expect(q.bytes == 4 * size + WebhookEvent.channelVacated(channel: "v").queuedBytes)
        // A cancelled held event gives its bytes back.
        #expect(q.add(.channelOccupied(channel: "v"), at: 1) == .cancelled)
        #expect(q.bytes == 4 * size)
        let b = q.next(now: 1000, wallMillis: 0)!
        #expect(b.events == [big(1), big(2), big(3), big(4)])
        #expect(q.bytes == 0)
    }

    @Test func overflowDropsHeldEventsWhenNothingIsQueued() {
        var q = queue { $0.maxQueued = 2 }
        _ = q.add(.channelVacated(channel: "a"), at: 0)
        _ = q.add(.channelVacated(channel: "b"), at: 0)
        #expect(q.add(.channelVacated(channel: "c"), at: 0) == .overflow(dropped: 1, firstOfEpisode: true))
        // "a" was dropped, so this occupied cancels nothing; queued, it is the oldest queued: dropped.
        #expect(q.add(.channelOccupied(channel: "a"), at: 1) == .overflow(dropped: 1, firstOfEpisode: false))
        #expect(
            q.next(now: 3000, wallMillis: 0)?.events == [.channelVacated(channel: "b"), .channelVacated(channel: "c")])
    }

    @Test func bodyAndSignatureBytes() {
        let body = WebhookEvent.body(
            [
                .channelOccupied(channel: "c"),
                .memberRemoved(channel: "presence-r", userID: "u1"),
                .clientEvent(channel: "private-p", event: "client-x", data: #"{"a":1}"#, socketID: "1.2", userID: nil),
            ], timeMillis: 1_700_000_000_123)
        #expect(
            String(decoding: body, as: UTF8.self)
                == #"{"time_ms":1700000000123,"events":[{"name":"channel_occupied","channel":"c"},{"name":"member_removed","channel":"presence-r","user_id":"u1"},{"name":"client_event","channel":"private-p","event":"client-x","data":"{\"a\":1}","socket_id":"1.2"}]}"#
        )
        // Python: hmac.new(b"app-secret", body, hashlib.sha256).hexdigest()
        #expect(
            WebhookEvent.signature(body: body, secret: "app-secret")
                == "0b1e7577215c027687a783f32114fe0d0adbb3f59a9030c2df37b72cbb82b5c0")
        let presence = WebhookEvent.body(
            [.clientEvent(channel: "presence-p", event: "client-y", data: "d", socketID: "3.4", userID: "u")],
            timeMillis: 1)
        #expect(
            String(decoding: presence, as: UTF8.self)
                == #"{"time_ms":1,"events":[{"name":"client_event","channel":"presence-p","event":"client-y","data":"d","socket_id":"3.4","user_id":"u"}]}"#
        )
    }
}

/// The inbox between the threads that emit webhook events and the sending loop: bounded in
/// events and bytes (issue 18), past that events are dropped and counted, never queued.
@Suite struct WebhookInboxTests {
    @Test func theInboxIsBoundedInBytes() throws {
        // A loop that never runs: nothing drains the inbox.
        let loop = try EventLoop(index: 0, maxDescriptors: 64)
        let w = Webhooks(loop: loop)
        var app = App.development
        app.webhooks = [Webhook(url: "http://127.0.0.1:9/hook")]
        let data = String(repeating: "x", count: 10_240)
        let fits =
            Webhooks.maxInboxBytes
            / WebhookEvent.clientEvent(
                channel: "private-c", event: "client-e", data: data,
                socketID: "1.1", userID: nil
            ).queuedBytes
        for i in 0..<(fits + 50) {
            w.emit(
                app,
                .clientEvent(channel: "private-c", event: "client-e", data: data, socketID: "1.\(i % 10)", userID: nil))
        }
        #expect(w.counters.get(\.droppedOverflow) == 50)
        #expect(w.inbox.withLock { $0.bytes } <= Webhooks.maxInboxBytes)
        // The bound is in bytes: a small event still fits in what is left.
        let before = w.inbox.withLock { $0.events.count }
        w.emit(app, .channelOccupied(channel: "c"))
        #expect(w.counters.get(\.droppedOverflow) == 50 && w.inbox.withLock { $0.events.count } == before + 1)
    }
}
