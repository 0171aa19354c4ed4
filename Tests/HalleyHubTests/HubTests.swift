import HalleyCore
import HalleyProtocol
import Testing
@testable import HalleyHub

@Suite struct ChannelHistoryTests {
    func pub(_ off: UInt64, at t: Int64) -> Publication {
        Publication(
            message: OutMessage(prefix: Array("{\"o\":\(off)".utf8), channel: "c", offset: off), offset: off, time: t,
            exclude: nil)
    }

    func filled(_ n: UInt64, keep: Int) -> ChannelState {
        let ch = ChannelState(name: "c", loops: 1)
        for i in 1...n {
            ch.lastOffset = i
            ch.append(pub(i, at: Int64(i) * 1000), keep: keep)
        }
        return ch
    }

    func offsets(_ r: ChannelState.Recovery) -> [UInt64]? {
        if case .recovered(let p) = r { return p.map(\.offset) }
        return nil
    }

    @Test func recoversWhatFollowsAnOffsetStillInHistory() {
        let ch = filled(10, keep: 4)
        #expect(ch.historyCount == 4)
        #expect(offsets(ch.recover(epoch: ch.epoch, after: 6)) == [7, 8, 9, 10])
        #expect(offsets(ch.recover(epoch: ch.epoch, after: 9)) == [10])
        #expect(offsets(ch.recover(epoch: ch.epoch, after: 10)) == [])
        #expect(offsets(ch.recover(epoch: ch.epoch, after: 99)) == [])
    }

    /// A quiet channel trimmed by age (one message a second, 60 s kept) holds no more evicted
    /// messages than live ones.
    @Test func evictedMessagesAreLetGoOf() {
        let ch = ChannelState(name: "c", loops: 1)
        for i in UInt64(1)...600 {
            ch.lastOffset = i
            ch.append(pub(i, at: Int64(i) * 1000), keep: 100)
            ch.trim(olderThan: Int64(i) * 1000 - 60_000)
            #expect(ch.history.count - ch.historyCount <= ch.historyCount + 1)
        }
        #expect(ch.historyCount == 61)
        #expect(offsets(ch.recover(epoch: ch.epoch, after: 539)) == Array(540...600))
    }

    @Test func saysWhyItCannot() {
        let ch = filled(10, keep: 4)
        guard case .notRecovered(let why) = ch.recover(epoch: ch.epoch, after: 5) else {
            Issue.record("recovered"); return
        }
        #expect(why == .historyExpired && why.rawValue == "history_expired")
        guard case .notRecovered(let why2) = ch.recover(epoch: "other", after: 9) else {
            Issue.record("recovered"); return
        }
        #expect(why2 == .epochChanged && why2.rawValue == "epoch_changed")
    }

    @Test func offsetsOfMessagesNeverKeptDoNotBreakRecovery() {
        // Presence member events take offsets but stay out of the history.
        let ch = filled(3, keep: 3)
        ch.lastOffset = 5
        ch.lastOffset = 6
        ch.append(pub(6, at: 6000), keep: 3)  // evicts 1
        #expect(ch.droppedThrough == 1)
        #expect(offsets(ch.recover(epoch: ch.epoch, after: 5)) == [6])
        #expect(offsets(ch.recover(epoch: ch.epoch, after: 4)) == [6])
        #expect(offsets(ch.recover(epoch: ch.epoch, after: 1)) == [2, 3, 6])
        guard case .notRecovered = ch.recover(epoch: ch.epoch, after: 0) else {
            Issue.record("recovered past an evicted message"); return
        }
    }

    @Test func trimsByAgeAndCompactsWithoutLosingOrder() {
        let ch = filled(300, keep: 1000)
        ch.trim(olderThan: 200 * 1000)
        #expect(ch.historyCount == 101)
        #expect(offsets(ch.recover(epoch: ch.epoch, after: 199)) == Array(200...300))
        ch.trim(olderThan: 301 * 1000)
        #expect(ch.historyCount == 0)
        #expect(ch.isIdle)
    }

    @Test func epochsDiffer() {
        #expect(ChannelState(name: "a", loops: 1).epoch != ChannelState(name: "a", loops: 1).epoch)
    }
}

@Suite struct SessionIDTests {
    @Test func parsesAndNamesItsOwnerLoop() {
        for loop in 0..<4 {
            let id = SessionID.random(loop: loop, loops: 4)
            #expect(id.owner(loops: 4) == loop)
            #expect(SessionID(id.description) == id)
        }
        #expect(SessionID("12.34") == SessionID(a: 12, b: 34))
        #expect(SessionID("12") == nil)
        #expect(SessionID("1.2.3") == nil)
        #expect(SessionID("a.2") == nil)
        #expect(SessionID("99999999999.1") == nil)
        #expect(SessionID("4294967295.4294967295") == SessionID(a: .max, b: .max))
        for bad in ["", ".", ".1", "1.", "4294967296.1", "1.4294967296", "1 .2", "1.2 ", "+1.2", "１.2", "1..2"] {
            #expect(SessionID(bad) == nil, "\(bad)")
        }
    }

    @Test func tokensRoundTripAndRefuseGarbage() {
        let t = SessionToken.random()
        #expect(t.description.count == 32)
        #expect(SessionToken(t.description) == t)
        #expect(SessionToken("abc") == nil)
        #expect(SessionToken(String(repeating: "g", count: 32)) == nil)
        #expect(SessionToken(t.description.uppercased()) == t)
        #expect(SessionToken(String(repeating: "f", count: 32)) == SessionToken(hi: .max, lo: .max))
        for bad in [
            String(repeating: "a", count: 31), String(repeating: "a", count: 33),
            "é" + String(repeating: "a", count: 30),
        ] {
            #expect(SessionToken(bad) == nil, "\(bad)")
        }
    }
}

@Suite struct OffsetFieldTests {
    @Test func writesTheOffsetInDecimalAfterWhatIsThere() {
        for off: UInt64 in [0, 1, 9, 10, 99, 100, 12_345, 1 << 32, UInt64.max] {
            let m = OutMessage(
                publishedPrefix: Array("{\"a\":1".utf8), channel: "c", offset: off,
                binaryHeader: Array("{\"b\":2".utf8),
                binaryPayload: [0, 255])
            let field = ",\"halley:offset\":\(off)"
            #expect(String(decoding: m.prefix.buffer, as: UTF8.self) == "{\"a\":1" + field)
            #expect(String(decoding: m.binaryHeader!.buffer, as: UTF8.self) == "{\"b\":2" + field)
            #expect(Array(m.binaryPayload!.buffer) == [0, 255])
            #expect(m.offset == off && m.channel == "c" && m.size == m.prefix.count + 24)
            #expect(field.utf8.count <= Wire.offsetFieldMax)
        }
        // An empty prefix (the buffer holds the field alone) and no binary part.
        let m = OutMessage(publishedPrefix: [], channel: "c", offset: 7, binaryHeader: nil, binaryPayload: nil)
        #expect(String(decoding: m.prefix.buffer, as: UTF8.self) == ",\"halley:offset\":7")
        #expect(m.binaryHeader == nil && m.binaryPayload == nil)
    }

    @Test func aSharedBufferTakesItsTailInPlace() {
        let b = SharedBytes([1, 2, 3], maxTail: 4) { p in
            p.storeBytes(of: 9, as: UInt8.self)
            return 1
        }
        #expect(Array(b.buffer) == [1, 2, 3, 9])
        let none = SharedBytes([], maxTail: 0) { _ in 0 }
        #expect(none.count == 0)
    }
}
