import Testing
import HalleyCore
import HalleyLoop
import HalleyProtocol
@testable import HalleyHub

/// Sessions, resume, gaps, presence and fan-out through the hub without sockets
/// (`HubHarness`): the hub's decisions, checked message by message.
@Suite struct SessionTests {
    /// (Plain values in expectations: a failed one reflects its operands, and a session holds
    /// atomics, which cannot be copied.)
    func ended(_ s: Session) -> Bool { s.ended }

    @Test func fanOutReachesEverySubscriberOnEveryLoopOnceInOrder() throws {
        let h = try HubHarness(loops: 2)
        let subs = [h.open(loop: 0), h.open(loop: 1), h.open(loop: 1, resumable: false)]
        let other = h.open(loop: 0)
        for (s, _) in subs { h.subscribe(s, "news") }
        h.subscribe(other.0, "sport")
        for i in 1...5 { h.publish("news", "tick", "\(i)") }
        let r = h.publish("news", "tick", "6")
        #expect(r.sessions == 3 && r.channels.map(\.offset) == [6])
        for (k, (s, t)) in subs.enumerated() {
            let got = t.events("news")
            #expect(got.map(\.data) == ["1", "2", "3", "4", "5", "6"], "subscriber \(k)")
            #expect(got.map(\.offset) == [1, 2, 3, 4, 5, 6])
            let resumable = s.resumable
            if resumable {
                // After the subscription answer (seq 1): one seq per message, no gap.
                #expect(got.map(\.seq) == [2, 3, 4, 5, 6, 7])
            } else {
                #expect(got.allSatisfy { $0.seq == 0 })
            }
        }
        #expect(other.1.events("news").isEmpty)
    }

    @Test func aResumeResendsWhatWasNotAcknowledgedThenLiveMessages() throws {
        let h = try HubHarness()
        let (s, a) = h.open()
        h.subscribe(s, "news")
        h.publish("news", "e", "1")
        h.publish("news", "e", "2")
        let seqs = a.events("news").map(\.seq)
        #expect(seqs == [2, 3])
        h.send(s, #"{"event":"halley:ack","data":{"seq":2}}"#)
        s.transportGone(a)
        h.publish("news", "e", "3")  // while no transport is attached
        h.step(seconds: 5)  // within the linger (30 s)
        #expect(ended(s) == false)
        let b = MemoryTransport()
        s.attach(b, lastSeen: 2)
        #expect(b.events("news").map(\.data) == ["2", "3"] && b.events("news").map(\.seq) == [3, 4])
        h.publish("news", "e", "4")
        #expect(b.events("news").map(\.seq) == [3, 4, 5])
        #expect(a.detached == nil)  // it went by itself: nobody to tell
        // A second transport replaces the first: the old one is told, the new one resent.
        let c = MemoryTransport()
        s.attach(c, lastSeen: 4)
        #expect(b.detachment == .replaced && b.detached?.code == 1000 && c.events("news").map(\.seq) == [5])
    }

    @Test func aSessionWithoutATransportEndsAfterItsLinger() throws {
        let h = try HubHarness { $0.sessionLinger = 10 }
        let (s, t) = h.open()
        h.send(s, #"{"event":"pusher:ping","data":{}}"#)  // its client came back: confirmed
        #expect(t.controls.last?["event"]?.string == "pusher:pong")
        s.transportGone(t)
        h.step(seconds: 9)
        #expect(ended(s) == false)
        h.step(seconds: 2)
        #expect(ended(s) == true)
        guard case .gone(let why) = h.hub.loops[0].lookup(s.id, token: s.token!.description) else {
            Issue.record("an expired session was found")
            return
        }
        #expect(why == .expired)
    }

    @Test func underGapTheNoticeFollowsWhatFittedOnceThereIsRoom() throws {
        let h = try HubHarness {
            $0.sessionBufferBytes = 2048; $0.slowConsumer = .gap
        }
        let (s, t) = h.open()
        h.subscribe(s, "g")
        let pad = String(repeating: "x", count: 200)
        for _ in 1...30 { h.publish("g", "e", pad) }
        let fitted = t.events("g")
        #expect(fitted.count >= 3 && fitted.count < 30)
        #expect(t.sentEvents("halley:gap").isEmpty)  // no room yet
        h.send(s, #"{"event":"halley:ack","data":{"seq":\#(fitted.last!.seq)}}"#)
        let gap = try #require(t.sentEvents("halley:gap").first)
        #expect(gap.seq == fitted.last!.seq + 1)
        let range = try JSONParser.parse(Array(gap.data!.utf8))
        #expect(range["from"]?.uint64 == UInt64(fitted.count + 1) && range["to"]?.uint64 == 30)
        h.publish("g", "e", "after")
        #expect(t.events("g").last?.offset == 31 && t.events("g").last?.seq == gap.seq + 1)
        #expect(ended(s) == false)
    }

    /// A resume whose acknowledgement makes room resends what waited first; the pending notice
    /// comes after it, numbered next.
    @Test func aResumeResendsBeforeThePendingGapNotice() throws {
        let h = try HubHarness {
            $0.sessionBufferBytes = 2048; $0.slowConsumer = .gap
        }
        let (s, a) = h.open()
        h.subscribe(s, "g")
        for _ in 1...30 { h.publish("g", "e", String(repeating: "x", count: 200)) }
        let fitted = a.events("g")
        s.transportGone(a)
        let b = MemoryTransport()
        s.attach(b, lastSeen: fitted[1].seq)
        let seqs = b.sent.map(\.seq)
        #expect(seqs == Array((fitted[1].seq + 1)...(fitted.last!.seq + 1)))
        #expect(b.sent.last?.event == "halley:gap" && b.events("g").map(\.offset) == fitted[2...].map(\.offset))
    }

    /// A session whose client never came back after opening it lingers 5 s, not 30.
    @Test func anUnconfirmedSessionLingersBriefly() throws {
        let h = try HubHarness()
        let (s, t) = h.open()
        s.transportGone(t)
        h.step(seconds: 4)
        #expect(ended(s) == false)
        h.step(seconds: 2)
        #expect(ended(s) == true)
    }

    /// Its client's lingering count goes up when a session loses its transport and down when
    /// it gets one back, expires or is ended, and never twice.
    @Test func theLingeringCountBalances() throws {
        let h = try HubHarness { $0.sessionLinger = 10 }
        let limits = h.hub.clientLimits
        let client = IPAddress(v4: 0x7F00_0001)
        func lingering() -> Int { limits.lingeringCount(of: client) }
        let (s, a) = h.open()
        let (s2, t2) = h.open()
        h.send(s, #"{"event":"pusher:ping","data":{}}"#)
        #expect(lingering() == 0)
        s.transportGone(a)
        s.transportGone(a)  // twice: counted once
        #expect(lingering() == 1)
        let b = MemoryTransport()
        s.attach(b, lastSeen: 0)
        #expect(lingering() == 0)
        s.transportGone(b)
        s2.transportGone(t2)
        #expect(lingering() == 2)
        h.hub.loops[0].end(s2, .terminated)  // ended while lingering
        #expect(lingering() == 1)
        h.step(seconds: 11)  // expired
        #expect(ended(s) == true && lingering() == 0)
        let (s3, c) = h.open()
        h.hub.loops[0].end(s3, .terminated)  // ended while attached: never counted
        #expect(lingering() == 0 && c.detached?.code == PusherErrorCode.connectionUnauthorized)
    }

    /// A resumable session's bound is its unacknowledged bytes, whatever the socket holds.
    @Test func aResumableSessionPastItsBoundEndsWith4100() throws {
        let h = try HubHarness { $0.sessionBufferBytes = 2048 }
        let (s, t) = h.open()
        h.subscribe(s, "c")
        for _ in 1...5 { h.publish("c", "e", String(repeating: "x", count: 300)) }
        #expect(ended(s) == false)  // about 1,800 bytes unacknowledged
        h.send(s, #"{"event":"halley:ack","data":{"seq":\#(t.events("c").last!.seq)}}"#)
        for _ in 1...5 { h.publish("c", "e", String(repeating: "x", count: 300)) }
        #expect(ended(s) == false)  // the acknowledgement made room
        h.publish("c", "e", String(repeating: "x", count: 300))
        #expect(
            ended(s) == true && t.detachment == .ended(.bufferOverflow)
                && t.detached?.code == PusherErrorCode.overCapacity)
        #expect(t.events("c").count == 10)
    }

    @Test func underCloseAFullBufferEndsTheSessionWith4100() throws {
        let h = try HubHarness { $0.sessionBufferBytes = 2048 }
        let (s, t) = h.open(resumable: false)
        h.subscribe(s, "c")
        t.bufferedBytes = 2000  // the socket takes nothing
        h.publish("c", "e", String(repeating: "x", count: 100))
        #expect(ended(s) == true)
        #expect(t.detached?.code == PusherErrorCode.overCapacity)
        #expect(t.controls.last?["data"]?["code"]?.uint64 == UInt64(PusherErrorCode.overCapacity))
        #expect(t.events("c").isEmpty)
    }

    /// A client event refused for its name uses none of the second's rate budget (10).
    @Test func aRefusedClientEventNameCostsNoRateBudget() throws {
        let h = try HubHarness()
        let (a, ta) = h.open()
        let (b, tb) = h.open()
        h.subscribe(a, "private-x")
        h.subscribe(b, "private-x")
        let long = "client-" + String(repeating: "n", count: 194)  // 201 bytes
        for _ in 0..<20 { h.send(a, #"{"event":"\#(long)","channel":"private-x","data":"d"}"#) }
        for i in 0..<10 { h.send(a, #"{"event":"client-ok","channel":"private-x","data":"\#(i)"}"#) }
        let refusals = ta.controls.filter { $0["event"]?.string == "pusher:error" }
            .compactMap { $0["data"]?["message"]?.string }
        #expect(refusals == Array(repeating: "event name is longer than 200 bytes", count: 20))
        #expect(tb.events("private-x").map(\.data) == (0..<10).map { "\($0)" })
    }

    @Test func presenceRosterAndMemberEventsOncePerUser() throws {
        let h = try HubHarness(loops: 2)
        let (ann, a) = h.open(loop: 0)
        let (ben, b) = h.open(loop: 1)
        let (ben2, b2) = h.open(loop: 0)  // the same user again, on another loop
        h.subscribe(ann, "presence-room", channelData: #"{"user_id":"ann"}"#)
        h.subscribe(ben, "presence-room", channelData: #"{"user_id":"ben","user_info":{"n":1}}"#)
        h.subscribe(ben2, "presence-room", channelData: #"{"user_id":"ben"}"#)
        let roster = try JSONParser.parse(
            Array(b.sentEvents("pusher_internal:subscription_succeeded").last!.data!.utf8))
        #expect(roster["presence"]?["count"]?.uint64 == 2)
        #expect(Set(roster["presence"]?["ids"]?.array?.compactMap(\.string) ?? []) == ["ann", "ben"])
        // ann is told of ben once, not once per connection.
        #expect(
            a.sentEvents("pusher_internal:member_added").map {
                try? JSONParser.parse(Array($0.data!.utf8))["user_id"]?.string
            } == ["ben"])
        #expect(b2.sentEvents("pusher_internal:member_added").isEmpty)
        // ben's first connection goes: ben is still there. The second: ben left.
        h.hub.loops[1].end(ben, .closed)
        h.step()
        #expect(a.sentEvents("pusher_internal:member_removed").isEmpty)
        h.hub.loops[0].end(ben2, .closed)
        h.step()
        #expect(
            a.sentEvents("pusher_internal:member_removed").map {
                try? JSONParser.parse(Array($0.data!.utf8))["user_id"]?.string
            } == ["ben"])
    }
}
